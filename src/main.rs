use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use s3lock::cli::{Cli, Command};
use s3lock::lock::Engine;
use s3lock::metrics::Metrics;
use s3lock::peers::{HintKey, Peers};
use s3lock::{bench, client, http, startup, telemetry};

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
                startup::log_auth_mode(&config);
                let metrics = Metrics::new();
                let (store, clock) =
                    startup::open_store_with_metrics(&config, metrics.clone()).await?;
                let mut engine =
                    Engine::new(store, clock, config.engine.clone()).with_metrics(metrics.clone());
                let hints = config.peer_secret.clone().map(HintKey::new);
                if let (Some(key), false) = (&hints, config.peers.is_empty()) {
                    let peers = Peers::new(&config.peers, key.clone(), metrics)?;
                    engine = engine.with_peers(Arc::new(peers));
                }
                // open_store returns only once the store check passed (or was skipped).
                engine.mark_store_checked();
                let app = http::app_with_peers(
                    Arc::new(engine),
                    config.request_timeout,
                    config.auth.clone(),
                    hints,
                );
                let listener = tokio::net::TcpListener::bind(config.listen).await?;
                startup::serve_router(listener, app, startup::shutdown_signal()).await?;
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
            let report = s3lock::client::check::run(args.to_config()).await;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("a report serialises")
                );
            } else {
                println!(
                    "{} grants over {} keys, {} refusals after waiting, {} errors, {} violations",
                    report.grants,
                    report.keys_granted,
                    report.refusals,
                    report.errors,
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
        Command::Client(command) => client::cli::main(command).await,
    }
}
