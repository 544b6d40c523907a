//! The `billstack` binary: parse the command line, set up logging, run it, report errors on
//! stderr.

use billstack_host::cli::{Cli, LogFormat};
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("BILLSTACK_LOG")
        .unwrap_or_else(|_| "info".into());
    // Colours only for a person at a terminal, never in a file or a collector's pipe.
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    match cli.log_format() {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    match billstack_host::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
