//! The command line of the binary: the top-level `Cli` and its subcommands, each parsed into
//! the arguments of the module that runs it (`config` for serve, `client`, `bench`).

use clap::{Parser, Subcommand};

use crate::bench::args::BenchArgs;
use crate::client::args::{CheckArgs, ClientCommand, ElectArgs, RunArgs};
use crate::config::ServeArgs;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "s3lock",
    version,
    about = "Distributed locks over HTTP, kept in an S3 bucket"
)]
pub struct Cli {
    /// Log lines as human-readable text or as JSON objects (one per line). RUST_LOG filters them.
    #[arg(
        long,
        global = true,
        env = "S3LOCK_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the lock server.
    Serve(ServeArgs),
    /// Hammer running servers with contending clients and report any violation of mutual
    /// exclusion (overlapping holds, fencing tokens out of order, lost releases; with --kind,
    /// more holders of a semaphore than its limit, a reader beside a writer). Exits 1 on a
    /// violation, 2 when the run proves nothing (no grants).
    Check(CheckArgs),
    /// Measure a running server (or, with --direct-s3, the bucket itself) under load.
    Bench(BenchArgs),
    #[command(flatten)]
    Client(ClientCommand),
    /// Run a command while holding a lock: renew it in the background, release it when the
    /// command exits, and kill the command before the lease can run out if renewal keeps failing.
    Run(RunArgs),
    /// Run a command while leading an election (renewing, resigning when it exits, and stopping
    /// it before leadership can run out, as `run` does), or with --observe print who leads and
    /// every change, "no leader" included.
    Elect(ElectArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_takes_the_command_after_a_double_dash() {
        let cli = Cli::try_parse_from(["s3lock", "run", "k", "--ttl", "9", "--", "sh", "-c", "x"])
            .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!((r.key.as_str(), r.ttl), ("k", 9));
        assert_eq!(r.command, ["sh", "-c", "x"]);
        assert_eq!(r.client.url, "http://127.0.0.1:8080");
    }

    #[test]
    fn elect_runs_a_command_or_observes_but_not_both() {
        let cli =
            Cli::try_parse_from(["s3lock", "elect", "e", "--value", "a:80", "--", "sh"]).unwrap();
        let Command::Elect(e) = cli.command else {
            panic!("not elect")
        };
        assert_eq!((e.name.as_str(), e.value.as_deref()), ("e", Some("a:80")));
        assert_eq!(e.command, ["sh"]);
        assert!(Cli::try_parse_from(["s3lock", "elect", "e", "--observe"]).is_ok());
        assert!(
            Cli::try_parse_from(["s3lock", "elect", "e"]).is_err(),
            "no command"
        );
        assert!(Cli::try_parse_from(["s3lock", "elect", "e", "--observe", "--", "sh"]).is_err());
    }
}
