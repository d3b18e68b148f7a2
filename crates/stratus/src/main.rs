//! `stratus`: the server (`stratus up`) and the CLI that talks to its API.

mod api_tls;
mod cli;
mod commands;
mod config;
mod directory;
mod output;
mod up;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match args.command {
            cli::Command::Up(up) => up::run(up, &args.global).await,
            // Needs no API: what it prints is compiled in.
            cli::Command::Operator(cli::OperatorCommand::Crds) => {
                print!("{}", stratus_kube::crds_yaml());
                Ok(())
            }
            other => commands::run(&args.global, other).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
