//! The `billstack` binary: parse the command line, set up logging, run it, report errors on
//! stderr.

use billstack_host::cli::{Cli, LogFormat};
use billstack_host::console::{self, Level};
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let json = cli.log_format() == LogFormat::Json;
    console::use_json(json);
    let filter = match billstack_host::config::log_filter(std::env::var("BILLSTACK_LOG").ok()) {
        Ok(filter) => filter,
        Err(e) => {
            console::say(Level::Error, &format!("error: {e:#}"), &[]);
            return std::process::ExitCode::FAILURE;
        }
    };
    // Colours only for a person at a terminal, never in a file or a collector's pipe.
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    if json {
        logs.json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        logs.init();
    }
    match billstack_host::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            console::say(Level::Error, &format!("error: {e:#}"), &[]);
            std::process::ExitCode::FAILURE
        }
    }
}
