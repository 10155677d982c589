//! `shoal`: run a node, or talk to one.

use std::process::ExitCode;

use clap::Parser;
use shoal_node::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A node logs at info; client commands only speak up on trouble. fjall and lsm-tree log
    // routine events at info through `log`: keep them to warnings unless RUST_LOG says more.
    let default = match cli.command {
        Command::Serve(_) => "info,fjall=warn,lsm_tree=warn",
        _ => "warn,fjall=warn,lsm_tree=warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("shoal: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(shoal_node::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("shoal: {err:#}");
            ExitCode::FAILURE
        }
    }
}
