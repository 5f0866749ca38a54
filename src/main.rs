use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use s3lock::config::{Cli, Command};
use s3lock::lock::Engine;
use s3lock::{startup, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    match cli.command {
        Command::Serve(args) => {
            let result = async {
                let config = args.validate()?;
                let (store, clock) = startup::open_store(&config).await?;
                let engine = Arc::new(Engine::new(store, clock, config.engine.clone()));
                let listener = tokio::net::TcpListener::bind(config.listen).await?;
                startup::serve(
                    listener,
                    engine,
                    config.request_timeout,
                    startup::shutdown_signal(),
                )
                .await?;
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
    }
}
