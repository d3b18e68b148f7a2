//! `stratus`: the server (`stratus up`) and the CLI that talks to its API.

mod api_tls;
mod cli;
mod commands;
mod config;
mod connect;
mod directory;
mod operator;
mod output;
mod up;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    if !matches!(args.command, cli::Command::Up(_)) {
        quiet_on_closed_stdout();
    }
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
            cli::Command::Operator(cli::OperatorCommand::Run(run)) => operator::run(run).await,
            cli::Command::Operator(cli::OperatorCommand::Agent(agent)) => {
                operator::agent(agent).await
            }
            cli::Command::Operator(cli::OperatorCommand::BackupRecord(args)) => {
                operator::backup_record(args)
            }
            cli::Command::Operator(cli::OperatorCommand::Proxy(proxy)) => {
                operator::proxy(proxy).await
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

/// A verb whose output is piped into `head` ends quietly when the reader goes, as Unix tools do,
/// instead of panicking in `println!` (Rust ignores SIGPIPE, so a write to a closed pipe is an
/// error `println!` cannot return). Sockets are not affected: they write with `MSG_NOSIGNAL`.
/// Not for `up`, which must outlive whatever reads its log.
fn quiet_on_closed_stdout() {
    #[allow(unsafe_code)]
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
