//! The `billstack` binary: parse the command line, run it, report errors on stderr.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BILLSTACK_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match billstack_host::cli::run(billstack_host::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
