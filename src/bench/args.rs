//! The arguments of `bench`, and the combinations it refuses.

use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

use crate::client::args::{secret, KindArg, TlsArgs};
use crate::client::hold::KeyKind;
use crate::tls::client::ClientTls;
use crate::wire::Mode;

/// What `bench` does in its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchOp {
    /// acquire then release (the time of both, not counting --hold).
    Cycle,
    /// acquire (timed), hold, release (untimed).
    Acquire,
    /// renew locks each client took before the clock started.
    Renew,
    /// read a lock's status.
    Status,
    /// hand-off latency: pairs of clients, one holding for --hold ms while the other is blocked
    /// on `wait`; times the waiter's grant from the holder's release answer (service only).
    Handoff,
    /// every client blocks once on `wait` for --duration on a held lock (for measuring a server
    /// with many blocked waiters; service only).
    Wait,
}

impl BenchOp {
    pub fn name(self) -> &'static str {
        match self {
            BenchOp::Cycle => "cycle",
            BenchOp::Acquire => "acquire",
            BenchOp::Renew => "renew",
            BenchOp::Status => "status",
            BenchOp::Handoff => "handoff",
            BenchOp::Wait => "wait",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Server(s) to load, comma-separated; client i talks to server i mod n.
    #[arg(
        long,
        env = "S3LOCK_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: Vec<String>,
    /// Concurrent clients (each one loop, one request at a time).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Distinct keys; with fewer keys than clients, clients contend.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// Bearer credential for servers that require one.
    #[arg(long, env = "S3LOCK_AUTH_TOKEN", hide_env_values = true, value_parser = secret)]
    pub auth_token: Option<SecretString>,
    /// How long to run, e.g. 30s, 500ms, 2m.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[arg(long, value_enum, default_value = "cycle")]
    pub op: BenchOp,
    /// What the keys are: locks, semaphores (give --limit), or read-write locks (taken shared,
    /// as readers). Semaphores and read-write locks: --op cycle, acquire, renew or status,
    /// through the service.
    #[arg(long, value_enum, default_value = "lock")]
    pub kind: KindArg,
    /// --kind semaphore: the semaphores' limit (with fewer keys than clients, up to this many
    /// clients hold one key at once).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Milliseconds to hold each lock between acquire and release (not timed).
    #[arg(long, default_value_t = 0)]
    pub hold: u64,
    /// Lease of each acquire, in seconds.
    #[arg(long, default_value_t = 30)]
    pub ttl: u64,
    /// Seconds an acquire may wait for a held lock (service only; default: refuse at once).
    #[arg(long)]
    pub wait: Option<f64>,
    /// Names of the keys: PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,
    /// Skip the untimed warm-up pass over every key (then the first touch of each is cold).
    #[arg(long = "no-warmup", action = clap::ArgAction::SetFalse)]
    pub warmup: bool,
    /// handoff: the waiter talks to the next server, not the holder's.
    #[arg(long)]
    pub cross_replica: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Make the raw S3 requests a lock operation needs against the bucket, with no server.
    #[arg(long)]
    pub direct_s3: bool,
    /// --direct-s3: the bucket.
    #[arg(long, env = "S3LOCK_BUCKET")]
    pub bucket: Option<String>,
    /// --direct-s3: put before every key, as the server does.
    #[arg(long, env = "S3LOCK_PREFIX", default_value = "locks/")]
    pub prefix: String,
    /// --direct-s3: S3 endpoint URL (AWS_ENDPOINT_URL is honoured too).
    #[arg(long, env = "S3LOCK_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// --direct-s3: path-style addressing.
    #[arg(long, env = "S3LOCK_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// --direct-s3: seconds one S3 call may take, the SDK's retries included.
    #[arg(long, env = "S3LOCK_S3_TIMEOUT", default_value_t = 10)]
    pub s3_timeout: u64,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// What --ca-cert, --client-cert and --client-key make, read once by `bench::run`.
    #[arg(skip)]
    pub client_tls: ClientTls,
}

impl BenchArgs {
    /// What each acquire takes: a lock, one of a semaphore's permits, or a read-write lock
    /// shared.
    pub fn key_kind(&self) -> KeyKind {
        match (self.kind, self.limit) {
            (KindArg::Semaphore, Some(limit)) => KeyKind::Permit { limit },
            (KindArg::Rwlock, _) => KeyKind::ReadWrite(Mode::Shared),
            // A semaphore without a limit is refused by `check`.
            _ => KeyKind::Lock,
        }
    }

    /// Refuses combinations that cannot be measured.
    pub fn check(&self) -> Result<(), String> {
        if self.clients == 0 || self.keys == 0 {
            return Err("--clients and --keys must be at least 1".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be more than 0".into());
        }
        if self.url.is_empty() && !self.direct_s3 {
            return Err("--url names no server".into());
        }
        let service_only = matches!(self.op, BenchOp::Handoff | BenchOp::Wait);
        if self.direct_s3 && (service_only || self.wait.is_some()) {
            return Err(format!(
                "--direct-s3 has no server to wait in: --op {} and --wait need the service",
                self.op.name()
            ));
        }
        match (self.kind, self.limit) {
            (KindArg::Semaphore, None) => return Err("--kind semaphore needs --limit N".into()),
            (KindArg::Lock | KindArg::Rwlock, Some(_)) => {
                return Err("--limit is for --kind semaphore only".into())
            }
            _ => {}
        }
        if self.kind != KindArg::Lock && (service_only || self.direct_s3) {
            return Err(format!(
                "--kind semaphore and rwlock are measured through the service, with --op \
                 cycle, acquire, renew or status (not --op {}{})",
                self.op.name(),
                if self.direct_s3 {
                    ", not --direct-s3"
                } else {
                    ""
                }
            ));
        }
        // Every client holds its keys for the whole run: a lock has one holder, a semaphore's key
        // as many as its limit (so H clients can renew H permits of one document).
        let holders_per_key = match (self.kind, self.limit) {
            (KindArg::Semaphore, Some(limit)) => usize::try_from(limit).unwrap_or(usize::MAX),
            _ => 1,
        };
        if self.op == BenchOp::Renew && self.clients > self.keys.saturating_mul(holders_per_key) {
            return Err(
                "--op renew needs at least as many keys (times a semaphore's --limit) as clients"
                    .into(),
            );
        }
        if self.op == BenchOp::Handoff && self.clients % 2 == 1 {
            return Err("--op handoff pairs clients: give an even --clients".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `bench`'s arguments alone, as the top-level command line parses them.
    #[derive(Parser)]
    struct Bench {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn bench_refuses_what_direct_s3_cannot_measure() {
        let bench = |args: &[&str]| {
            let mut argv = vec!["s3lock bench"];
            argv.extend_from_slice(args);
            Bench::try_parse_from(argv).unwrap().args.check()
        };
        assert!(bench(&[]).is_ok());
        assert!(bench(&["--direct-s3", "--op", "handoff"]).is_err());
        assert!(bench(&["--direct-s3", "--wait", "1"]).is_err());
        assert!(bench(&["--op", "renew", "--clients", "4", "--keys", "2"]).is_err());
        assert!(bench(&["--op", "handoff", "--clients", "3"]).is_err());
        assert!(bench(&["--kind", "semaphore"]).is_err());
        assert!(bench(&["--kind", "semaphore", "--limit", "2", "--op", "handoff"]).is_err());
        assert!(bench(&["--kind", "semaphore", "--limit", "2", "--direct-s3"]).is_err());
        assert!(bench(&["--kind", "rwlock", "--op", "wait"]).is_err());
        assert!(bench(&["--limit", "2"]).is_err());
        assert!(bench(&["--kind", "semaphore", "--limit", "2"]).is_ok());
        // Two holders of one semaphore's two permits renew the one document; three cannot.
        let renew = |clients: &str| {
            bench(&[
                "--kind",
                "semaphore",
                "--limit",
                "2",
                "--op",
                "renew",
                "--keys",
                "1",
                "--clients",
                clients,
            ])
        };
        assert!(renew("2").is_ok());
        assert!(renew("3").is_err());
        assert!(bench(&["--kind", "rwlock", "--op", "renew"]).is_ok());
    }
}
