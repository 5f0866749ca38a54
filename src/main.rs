use clap::Parser;
use s3lock::cli::{Cli, Command};
use s3lock::{bench, client, startup, telemetry};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(_) | Command::Check(_) => telemetry::init_with(cli.log_format),
        _ => telemetry::init_for_client(cli.log_format),
    }
    match cli.command {
        Command::Serve(args) => {
            let result = async {
                let config = args.validate()?;
                let listener = tokio::net::TcpListener::bind(config.listen).await?;
                startup::run(config, listener, startup::shutdown_signal()).await?;
                Ok::<_, Box<dyn std::error::Error>>(())
            }
            .await;
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("s3lock: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check(args) => {
            let config = match args.to_config() {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("s3lock check: {e}");
                    return ExitCode::from(2);
                }
            };
            let report = s3lock::client::check::run(config).await;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("a report serialises")
                );
            } else {
                println!(
                    "{} grants over {} keys, {} refusals after waiting, {} errors, {} unconfirmed \
                     releases, {} violations",
                    report.grants,
                    report.keys_granted,
                    report.refusals,
                    report.errors,
                    report.unconfirmed_releases,
                    report.violations.len()
                );
                for v in &report.violations {
                    println!(
                        "VIOLATION: {}",
                        serde_json::to_string(v).expect("serialises")
                    );
                }
            }
            if !report.violations.is_empty() {
                ExitCode::from(1)
            } else if report.grants == 0 {
                eprintln!("s3lock check: no lock was granted, so nothing was checked");
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Bench(args) => match bench::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("s3lock bench: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => client::run::main(args).await,
        Command::Elect(args) => client::elect::main(args).await,
        Command::Client(command) => client::cli::main(command).await,
    }
}
