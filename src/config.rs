//! Every setting of the binary: flags, each with an environment variable (clap), their defaults,
//! and their validation. A bad value fails at start with a message that names the setting.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

use crate::auth::AuthTokens;
use crate::lock::key::parse_bucket;
use crate::lock::EngineConfig;
use crate::store::s3::S3Settings;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the lock server.
    Serve(ServeArgs),
    /// Hammer running servers with contending clients and report any violation of mutual
    /// exclusion (overlapping holds, fencing tokens out of order, lost releases). Exits 1 on a
    /// violation, 2 when the run proves nothing (no grants).
    Check(CheckArgs),
    /// Measure a running server (or, with --direct-s3, the bucket itself) under load.
    Bench(BenchArgs),
    /// Take a lock and print it with its token (exit 3 if another owner holds it).
    Acquire(AcquireArgs),
    /// Extend a lease you hold (exit 4 if the token does not hold the lock).
    Renew(RenewArgs),
    /// Release a lock you hold (exit 4 if the token does not hold the lock).
    Release(ReleaseArgs),
    /// Show a lock, without its token.
    Status(StatusArgs),
    /// Print a lock's state, then every change of it, as it happens (a blocking query per
    /// change; one line each, or JSON lines with --json).
    Watch(WatchArgs),
    /// List the locks whose key starts with a prefix.
    List(ListArgs),
    /// Break a lock, whoever holds it (needs an admin auth token).
    Break(BreakArgs),
    /// Run a command while holding a lock: renew it in the background, release it when the
    /// command exits, and kill the command before the lease can run out if renewal keeps failing.
    Run(RunArgs),
    /// Exit 0 when the server on this machine answers /healthz, 1 otherwise: a container health
    /// check that needs no other program in the image.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// A server to drive; repeat for several replicas (clients are spread across them).
    #[arg(
        long = "url",
        env = "S3LOCK_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    pub urls: Vec<String>,
    /// Bearer credential for servers that require one.
    #[arg(long, env = "S3LOCK_AUTH_TOKEN", hide_env_values = true, value_parser = secret)]
    pub auth_token: Option<SecretString>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub clients: u16,
    /// Keys to contend on.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub keys: u32,
    /// Prefix of the keys used (they are created and left released).
    #[arg(long, default_value = "s3lock-check/")]
    pub key_prefix: String,
    /// How long to run, e.g. 10s, 2m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Lease of each grant, seconds.
    #[arg(long, default_value_t = 30)]
    pub ttl: u64,
    /// Seconds each acquire waits for a held lock.
    #[arg(long, default_value_t = 1.0)]
    pub wait: f64,
    /// Longest hold, e.g. 5ms.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub max_hold: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How the client subcommands reach the server.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The lock server's base URL.
    #[arg(long, env = "S3LOCK_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The bearer credential for a server with auth (not a lock's holder token).
    #[arg(long, env = "S3LOCK_AUTH_TOKEN", hide_env_values = true, value_parser = secret)]
    pub auth_token: Option<SecretString>,
    /// Print machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl CheckArgs {
    pub fn to_config(&self) -> crate::client::check::CheckConfig {
        crate::client::check::CheckConfig {
            urls: self.urls.clone(),
            bearer: self.auth_token.clone(),
            clients: usize::from(self.clients),
            keys: self.keys as usize,
            key_prefix: self.key_prefix.clone(),
            duration: self.duration,
            ttl: self.ttl,
            wait: self.wait,
            max_hold: self.max_hold,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct AcquireArgs {
    pub key: String,
    /// Owner name (default: a random one chosen by the server).
    #[arg(long)]
    pub owner: Option<String>,
    /// Lease length in seconds (default: the server's).
    #[arg(long)]
    pub ttl: Option<u64>,
    /// The holder token of a lease this owner holds, to refresh it (without it a held lock is
    /// refused, to its own owner too).
    #[arg(long, env = "S3LOCK_HOLDER_TOKEN", hide_env_values = true, value_parser = secret)]
    pub token: Option<SecretString>,
    /// Seconds to wait if the lock is held (default 0: answer at once).
    #[arg(long)]
    pub wait: Option<f64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RenewArgs {
    pub key: String,
    /// The lock's holder token, from acquire.
    #[arg(long, env = "S3LOCK_HOLDER_TOKEN", hide_env_values = true, value_parser = secret)]
    pub token: SecretString,
    /// New lease length in seconds, from now (default: the server's).
    #[arg(long)]
    pub ttl: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    pub key: String,
    /// The lock's holder token, from acquire.
    #[arg(long, env = "S3LOCK_HOLDER_TOKEN", hide_env_values = true, value_parser = secret)]
    pub token: SecretString,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    pub key: String,
    /// Judge `locked` as this owner would (false when OWNER is the holder).
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    pub key: String,
    /// Seconds each blocking query may wait for a change before it is asked again.
    #[arg(long, default_value_t = 30.0)]
    pub wait: f64,
    /// Stop after this many changes (default: watch until interrupted).
    #[arg(long)]
    pub changes: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct BreakArgs {
    pub key: String,
    /// Why, for the server's log.
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    pub key: String,
    /// Owner name (default: a random one chosen by the server).
    #[arg(long)]
    pub owner: Option<String>,
    /// Lease length in seconds; renewed every third of it.
    #[arg(long, default_value_t = 60)]
    pub ttl: u64,
    /// Seconds to wait for the lock if it is held (default 0: give up at once, exit 3).
    #[arg(long, default_value_t = 0.0)]
    pub wait: f64,
    /// Seconds between SIGTERM and SIGKILL when the lease is about to be lost (at most a quarter
    /// of the lease).
    #[arg(long, default_value_t = 10.0)]
    pub kill_grace: f64,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The server's listen address, as `serve --listen` takes it (same variable); an unspecified
    /// address (0.0.0.0, [::]) is asked on loopback.
    #[arg(long, env = "S3LOCK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 2.0)]
    pub timeout: f64,
}

impl HealthcheckArgs {
    /// The URL asked: `/healthz` on the listen address, loopback for an unspecified one.
    pub fn url(&self) -> String {
        let mut addr = self.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        format!("http://{addr}/healthz")
    }
}

/// A secret from the command line or the environment, kept in a type whose `Debug` hides it.
/// (`hide_env_values` on the same argument keeps `--help` from showing the environment's value.)
fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// The embedded store: files in --data-dir, durable, one process per directory.
    Local,
    /// An S3 bucket (AWS or any S3-compatible store that enforces conditional writes).
    S3,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "S3LOCK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where lock state lives.
    #[arg(long, env = "S3LOCK_STORE", value_enum, default_value = "local")]
    pub store: StoreKind,
    /// Data directory of the local store.
    #[arg(long, env = "S3LOCK_DATA_DIR", default_value = "./s3lock-data")]
    pub data_dir: PathBuf,
    /// Default bucket (required with --store s3; "default" for the local store).
    #[arg(long, env = "S3LOCK_BUCKET")]
    pub bucket: Option<String>,
    /// Other buckets a request may name under /buckets/{bucket}/..., comma-separated.
    #[arg(long, env = "S3LOCK_ALLOWED_BUCKETS", value_delimiter = ',')]
    pub allowed_buckets: Vec<String>,
    /// Prefix of every lock's object key.
    #[arg(long, env = "S3LOCK_PREFIX", default_value = "locks/")]
    pub prefix: String,
    /// Lease length in seconds when a request names none.
    #[arg(long, env = "S3LOCK_DEFAULT_TTL", default_value_t = 60)]
    pub default_ttl: u64,
    /// Longest lease a request may ask for, in seconds.
    #[arg(long, env = "S3LOCK_MAX_TTL", default_value_t = 3600)]
    pub max_ttl: u64,
    /// Longest time an acquire may wait for a held lock, in seconds.
    #[arg(long, env = "S3LOCK_MAX_WAIT", default_value_t = 60)]
    pub max_wait: u64,
    /// Use path-style S3 addressing (most self-hosted S3 servers need it).
    #[arg(long, env = "S3LOCK_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// S3 endpoint URL (AWS_ENDPOINT_URL is honoured too).
    #[arg(long, env = "S3LOCK_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Seconds one S3 call may take, the SDK's retries included.
    #[arg(long, env = "S3LOCK_S3_TIMEOUT", default_value_t = 10)]
    pub s3_timeout: u64,
    /// Skip the start-up proof that the S3 store enforces conditional writes. Dangerous: on a
    /// store that ignores them, one lock can be granted to many holders.
    #[arg(long, env = "S3LOCK_SKIP_STORE_CHECK")]
    pub skip_store_check: bool,
    /// Extra seconds a request may take beyond the longest wait before it is cut off.
    #[arg(long, env = "S3LOCK_REQUEST_TIMEOUT_MARGIN", default_value_t = 30)]
    pub request_timeout_margin: u64,
    /// Create the default and allowed buckets on the S3 store if they are missing.
    #[arg(long, env = "S3LOCK_CREATE_BUCKETS")]
    pub create_buckets: bool,
    /// File of bearer auth tokens, one per line: `TOKEN [name=NAME] [prefix=P] [admin]`.
    /// Without it the lock routes need no authentication.
    #[arg(long, env = "S3LOCK_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,
    /// The other replicas over the same bucket, comma-separated: `http://HOST:PORT` or
    /// `HOST:PORT`, where a name may resolve to several replicas (a compose service, a
    /// Kubernetes headless service). A replica that frees a lock tells them, so their waiters
    /// look at once instead of at their next poll. Needs S3LOCK_PEER_SECRET.
    #[arg(long, env = "S3LOCK_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// The secret that signs wake-up hints between peers (at least 16 characters; the same on
    /// every replica). With it, this replica also takes hints on POST /internal/wake.
    #[arg(long, env = "S3LOCK_PEER_SECRET", hide_env_values = true, value_parser = secret)]
    pub peer_secret: Option<SecretString>,
}

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
}

impl BenchArgs {
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
        if self.op == BenchOp::Renew && self.clients > self.keys {
            return Err("--op renew needs at least as many keys as clients".into());
        }
        if self.op == BenchOp::Handoff && self.clients % 2 == 1 {
            return Err("--op handoff pairs clients: give an even --clients".into());
        }
        Ok(())
    }
}

/// The validated serve configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub engine: EngineConfig,
    pub skip_store_check: bool,
    pub create_buckets: bool,
    /// The longest a request may run: the longest wait plus a margin for the store's calls.
    pub request_timeout: Duration,
    /// The bearer credentials; `None` when auth is off.
    pub auth: Option<Arc<AuthTokens>>,
    /// Peers to send wake-up hints to (`HOST:PORT` or URLs); empty without peers.
    pub peers: Vec<String>,
    /// Signs hints sent and checks hints received; `None`: no hints either way.
    pub peer_secret: Option<SecretString>,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    Local { data_dir: PathBuf },
    S3(S3Settings),
}

#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub reason: String,
}

fn bad(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        reason: reason.into(),
    }
}

impl ServeArgs {
    pub fn validate(&self) -> Result<ServeConfig, ConfigError> {
        let default_bucket = match (&self.bucket, self.store) {
            (Some(b), _) => b.clone(),
            (None, StoreKind::Local) => "default".to_owned(),
            (None, StoreKind::S3) => {
                return Err(bad(
                    "S3LOCK_BUCKET (--bucket)",
                    "a bucket is required with the s3 store",
                ))
            }
        };
        parse_bucket(&default_bucket).map_err(|r| bad("S3LOCK_BUCKET (--bucket)", r))?;
        let mut allowed_buckets = BTreeSet::from([default_bucket.clone()]);
        for b in self
            .allowed_buckets
            .iter()
            .map(|b| b.trim())
            .filter(|b| !b.is_empty())
        {
            parse_bucket(b).map_err(|r| bad("S3LOCK_ALLOWED_BUCKETS (--allowed-buckets)", r))?;
            allowed_buckets.insert(b.to_owned());
        }
        if self.prefix.chars().any(char::is_control) || self.prefix.starts_with('/') {
            return Err(bad(
                "S3LOCK_PREFIX (--prefix)",
                "must not start with '/' or contain control characters",
            ));
        }
        if self.prefix.len() > 256 {
            return Err(bad("S3LOCK_PREFIX (--prefix)", "must be at most 256 bytes"));
        }
        if self.max_ttl == 0 {
            return Err(bad(
                "S3LOCK_MAX_TTL (--max-ttl)",
                "must be at least 1 second",
            ));
        }
        if self.default_ttl == 0 || self.default_ttl > self.max_ttl {
            return Err(bad(
                "S3LOCK_DEFAULT_TTL (--default-ttl)",
                format!("must be between 1 and S3LOCK_MAX_TTL ({})", self.max_ttl),
            ));
        }
        if self.max_wait > 3600 {
            return Err(bad(
                "S3LOCK_MAX_WAIT (--max-wait)",
                "must be at most 3600 seconds",
            ));
        }
        if self.s3_timeout == 0 || self.s3_timeout > 300 {
            return Err(bad(
                "S3LOCK_S3_TIMEOUT (--s3-timeout)",
                "must be 1 to 300 seconds",
            ));
        }
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        match &self.peer_secret {
            None if !peers.is_empty() => {
                return Err(bad(
                    "S3LOCK_PEERS (--peers)",
                    "peers need S3LOCK_PEER_SECRET: hints are only sent signed",
                ))
            }
            Some(s) if s.expose_secret().len() < crate::peers::MIN_SECRET_LEN => {
                return Err(bad(
                    "S3LOCK_PEER_SECRET (--peer-secret)",
                    format!(
                        "must be at least {} characters",
                        crate::peers::MIN_SECRET_LEN
                    ),
                ))
            }
            _ => {}
        }
        let auth = match &self.auth_tokens_file {
            None => None,
            Some(path) => Some(Arc::new(
                AuthTokens::load(path).map_err(|r| bad("S3LOCK_AUTH_TOKENS_FILE", r))?,
            )),
        };
        let store = match self.store {
            StoreKind::Local => StoreConfig::Local {
                data_dir: self.data_dir.clone(),
            },
            StoreKind::S3 => {
                if let Some(endpoint) = &self.s3_endpoint {
                    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                        return Err(bad(
                            "S3LOCK_S3_ENDPOINT (--s3-endpoint)",
                            "must be an http:// or https:// URL",
                        ));
                    }
                }
                StoreConfig::S3(S3Settings {
                    endpoint: self.s3_endpoint.clone(),
                    path_style: self.s3_path_style,
                    operation_timeout: Duration::from_secs(self.s3_timeout),
                })
            }
        };
        Ok(ServeConfig {
            listen: self.listen,
            store,
            engine: EngineConfig {
                default_bucket,
                allowed_buckets,
                prefix: self.prefix.clone(),
                default_ttl: self.default_ttl,
                max_ttl: self.max_ttl,
                max_wait: Duration::from_secs(self.max_wait),
                first_poll: crate::lock::FIRST_POLL,
                max_poll: crate::lock::MAX_POLL,
            },
            skip_store_check: self.skip_store_check,
            create_buckets: self.create_buckets,
            request_timeout: Duration::from_secs(
                self.max_wait
                    .saturating_add(self.request_timeout_margin.max(1))
                    .saturating_add(self.s3_timeout),
            ),
            auth,
            peers,
            peer_secret: self.peer_secret.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<ServeConfig, ConfigError> {
        let mut argv = vec!["s3lock", "serve"];
        argv.extend_from_slice(args);
        let Command::Serve(a) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not serve")
        };
        a.validate()
    }

    #[test]
    fn no_configuration_gives_the_local_store_on_loopback() {
        let c = serve(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(matches!(c.store, StoreConfig::Local { .. }));
        assert_eq!(c.engine.default_bucket, "default");
        assert_eq!(c.engine.prefix, "locks/");
        assert_eq!((c.engine.default_ttl, c.engine.max_ttl), (60, 3600));
    }

    #[test]
    fn the_s3_store_requires_a_bucket_and_names_the_setting() {
        let err = serve(&["--store", "s3"]).unwrap_err();
        assert!(err.to_string().contains("S3LOCK_BUCKET"), "{err}");
    }

    #[test]
    fn bad_values_name_their_setting() {
        for (args, setting) in [
            (vec!["--max-ttl", "0"], "S3LOCK_MAX_TTL"),
            (vec!["--default-ttl", "4000"], "S3LOCK_DEFAULT_TTL"),
            (vec!["--bucket", "Bad_Bucket"], "S3LOCK_BUCKET"),
            (
                vec!["--allowed-buckets", "ok-one,x"],
                "S3LOCK_ALLOWED_BUCKETS",
            ),
        ] {
            let err = serve(&args).unwrap_err();
            assert!(err.to_string().contains(setting), "{args:?}: {err}");
        }
    }

    #[test]
    fn bench_refuses_what_direct_s3_cannot_measure() {
        let bench = |args: &[&str]| {
            let mut argv = vec!["s3lock", "bench"];
            argv.extend_from_slice(args);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Bench(b) => b.check(),
                _ => unreachable!("parsed a bench command line"),
            }
        };
        assert!(bench(&[]).is_ok());
        assert!(bench(&["--direct-s3", "--op", "handoff"]).is_err());
        assert!(bench(&["--direct-s3", "--wait", "1"]).is_err());
        assert!(bench(&["--op", "renew", "--clients", "4", "--keys", "2"]).is_err());
        assert!(bench(&["--op", "handoff", "--clients", "3"]).is_err());
    }

    #[test]
    fn an_unreadable_or_bad_auth_tokens_file_names_the_setting() {
        let err = serve(&["--auth-tokens-file", "/nonexistent/tokens"]).unwrap_err();
        assert!(err.to_string().contains("S3LOCK_AUTH_TOKENS_FILE"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "tooshort\n").unwrap();
        let err = serve(&["--auth-tokens-file", path.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        std::fs::write(&path, "0123456789abcdef0123 name=ci admin\n").unwrap();
        let ok = serve(&["--auth-tokens-file", path.to_str().unwrap()]).unwrap();
        assert_eq!(ok.auth.unwrap().len(), 1);
    }

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
    fn the_default_bucket_is_always_allowed() {
        let c = serve(&[
            "--bucket",
            "main-b",
            "--allowed-buckets",
            "other-b, third-b",
        ])
        .unwrap();
        let allowed: Vec<_> = c.engine.allowed_buckets.iter().cloned().collect();
        assert_eq!(allowed, ["main-b", "other-b", "third-b"]);
    }
}
