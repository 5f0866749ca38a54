//! The arguments of the client subcommands (acquire, renew, release, status, list, break, run,
//! elect) and of `check`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use secrecy::SecretString;

use crate::tls::client::{ClientTls, ClientTlsFiles};
use crate::tls::{SettingFile, TlsError};

/// The subcommands that make one call to a lock server.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
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
    /// Exit 0 when the server on this machine answers /healthz, 1 otherwise: a container health
    /// check that needs no other program in the image.
    Healthcheck(HealthcheckArgs),
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
pub struct HealthcheckArgs {
    /// The server's listen address, as `serve --listen` takes it (same variable); an unspecified
    /// address (0.0.0.0, [::]) is asked on loopback.
    #[arg(long, env = "S3LOCK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 2.0)]
    pub timeout: f64,
    /// Ask over https: set (to anything) when the server serves TLS, as `serve` reads the same
    /// variable. The server's certificate is then checked against --ca-cert if given (its chain
    /// only: loopback is asked by address, not by the name it was issued for), else accepted
    /// as it is: the question is only whether this machine's server answers, and nothing
    /// secret is sent.
    #[arg(long = "tls-cert", env = "S3LOCK_TLS_CERT", value_name = "SERVER_CERT")]
    pub server_tls_cert: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// How a client trusts an https:// server, and the certificate it presents when asked (mTLS).
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// CA certificates (PEM) to trust for an https:// server, instead of the public roots.
    #[arg(long, env = "S3LOCK_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// A client certificate chain (PEM) for a server that requires one (mTLS). Needs
    /// --client-key.
    #[arg(long, env = "S3LOCK_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, env = "S3LOCK_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
}

impl TlsArgs {
    /// Reads and checks the files; an error names the setting.
    pub fn load(&self) -> Result<ClientTls, TlsError> {
        let file =
            |setting, path: &Option<PathBuf>| path.as_ref().map(|p| SettingFile::new(setting, p));
        ClientTls::load(&ClientTlsFiles {
            ca_cert: file("S3LOCK_CA_CERT (--ca-cert)", &self.ca_cert),
            client_cert: file("S3LOCK_CLIENT_CERT (--client-cert)", &self.client_cert),
            client_key: file("S3LOCK_CLIENT_KEY (--client-key)", &self.client_key),
        })
    }
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
        let scheme = match self.server_tls_cert {
            Some(_) => "https",
            None => "http",
        };
        format!("{scheme}://{addr}/healthz")
    }
}

/// What `check` and `bench` contend for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    Lock,
    /// Semaphores (give --limit).
    Semaphore,
    /// Read-write locks (check: a quarter of the acquires exclusive, the rest shared; bench:
    /// all shared).
    Rwlock,
}

impl KindArg {
    pub fn name(self) -> &'static str {
        match self {
            KindArg::Lock => "lock",
            KindArg::Semaphore => "semaphore",
            KindArg::Rwlock => "rwlock",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Contend for locks, semaphores or read-write locks.
    #[arg(long, value_enum, default_value = "lock")]
    pub kind: KindArg,
    /// --kind semaphore: the semaphores' limit, the most holders at once (every client asks
    /// with it).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
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
    #[command(flatten)]
    pub tls: TlsArgs,
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
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl CheckArgs {
    /// The check's configuration; an error names what cannot be checked as given.
    pub fn to_config(&self) -> Result<crate::client::check::CheckConfig, String> {
        use crate::client::check::CheckKind;
        let kind = match (self.kind, self.limit) {
            (KindArg::Semaphore, Some(limit)) => CheckKind::Semaphore { limit },
            (KindArg::Semaphore, None) => return Err("--kind semaphore needs --limit N".into()),
            (_, Some(_)) => return Err("--limit is for --kind semaphore only".into()),
            (KindArg::Lock, None) => CheckKind::Lock,
            (KindArg::Rwlock, None) => CheckKind::Rwlock,
        };
        Ok(crate::client::check::CheckConfig {
            kind,
            urls: self.urls.clone(),
            bearer: self.auth_token.clone(),
            clients: usize::from(self.clients),
            keys: self.keys as usize,
            key_prefix: self.key_prefix.clone(),
            duration: self.duration,
            ttl: self.ttl,
            wait: self.wait,
            max_hold: self.max_hold,
            tls: self.tls.load().map_err(|e| e.to_string())?,
        })
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
    /// The lock's key (or the semaphore's, or the read-write lock's).
    pub key: String,
    /// Hold one of N permits of the semaphore KEY instead of a lock: at most N commands run at
    /// once. Every process using KEY must give the same N.
    #[arg(
        long,
        value_name = "N",
        conflicts_with_all = ["shared", "exclusive"],
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub semaphore: Option<u32>,
    /// Hold the read-write lock KEY shared: beside other --shared runs, never beside an
    /// --exclusive one.
    #[arg(long, conflicts_with = "exclusive")]
    pub shared: bool,
    /// Hold the read-write lock KEY exclusive: alone. A waiting exclusive run stops new shared
    /// ones from starting, so a stream of readers cannot starve it.
    #[arg(long)]
    pub exclusive: bool,
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

impl RunArgs {
    /// What the flags say to hold: the lock KEY unless --semaphore, --shared or --exclusive.
    pub fn hold(&self) -> crate::client::hold::Hold {
        use crate::client::hold::Hold;
        use crate::wire::Mode;
        let key = self.key.clone();
        match (self.semaphore, self.shared, self.exclusive) {
            (Some(limit), _, _) => Hold::Permit { key, limit },
            (None, true, _) => Hold::ReadWrite {
                key,
                mode: Mode::Shared,
            },
            (None, false, true) => Hold::ReadWrite {
                key,
                mode: Mode::Exclusive,
            },
            (None, false, false) => Hold::Lock { key },
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ElectArgs {
    /// The election's name (as a lock key).
    pub name: String,
    /// Follow the election instead of campaigning: print who leads, then each change of leader
    /// or value, "no leader" included, one line each (with --json: every event, renewals too,
    /// as a JSON line), until interrupted.
    #[arg(long, conflicts_with_all = ["value", "candidate", "command"])]
    pub observe: bool,
    /// What to publish while leading (where to reach the leader, say): JSON if it parses as
    /// JSON, else a string.
    #[arg(long)]
    pub value: Option<String>,
    /// The candidate's name (default: a random one chosen by the server).
    #[arg(long)]
    pub candidate: Option<String>,
    /// The leader's lease in seconds; renewed every third of it.
    #[arg(long, default_value_t = 60)]
    pub ttl: u64,
    /// Seconds to wait to become leader while another leads (default 0: give up at once, exit
    /// 3).
    #[arg(long, default_value_t = 0.0)]
    pub wait: f64,
    /// Seconds between SIGTERM and SIGKILL when leadership is about to be lost (at most a
    /// quarter of the lease).
    #[arg(long, default_value_t = 10.0)]
    pub kill_grace: f64,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The command to run while leading, and its arguments, after `--`.
    #[arg(last = true, required_unless_present = "observe", num_args = 1..)]
    pub command: Vec<String>,
}

/// A secret from the command line or the environment, kept in a type whose `Debug` hides it.
/// (`hide_env_values` on the same argument keeps `--help` from showing the environment's value.)
pub(crate) fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::client::hold::Hold;
    use crate::wire::Mode;

    /// `run`'s arguments alone, as the top-level command line parses them.
    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }

    fn hold(flags: &[&str]) -> Result<Hold, clap::Error> {
        let mut argv = vec!["s3lock run", "k"];
        argv.extend_from_slice(flags);
        argv.extend_from_slice(&["--", "true"]);
        Run::try_parse_from(argv).map(|r| r.args.hold())
    }

    #[test]
    fn run_holds_a_permit_or_a_read_write_lock_when_asked_and_a_lock_otherwise() {
        let key = "k".to_owned();
        assert_eq!(hold(&[]).unwrap(), Hold::Lock { key: key.clone() });
        assert_eq!(
            hold(&["--semaphore", "3"]).unwrap(),
            Hold::Permit {
                key: key.clone(),
                limit: 3
            }
        );
        assert_eq!(
            hold(&["--shared"]).unwrap(),
            Hold::ReadWrite {
                key: key.clone(),
                mode: Mode::Shared
            }
        );
        assert_eq!(
            hold(&["--exclusive"]).unwrap(),
            Hold::ReadWrite {
                key,
                mode: Mode::Exclusive
            }
        );
    }

    #[test]
    fn run_refuses_a_semaphore_of_no_permits_and_two_kinds_at_once() {
        for refused in [
            &["--semaphore", "0"][..],
            &["--semaphore", "2", "--shared"],
            &["--semaphore", "2", "--exclusive"],
            &["--shared", "--exclusive"],
        ] {
            assert!(hold(refused).is_err(), "{refused:?} accepted");
        }
    }

    /// `check`'s arguments alone.
    #[derive(Parser)]
    struct Check {
        #[command(flatten)]
        args: CheckArgs,
    }

    fn check_kind(flags: &[&str]) -> Result<crate::client::check::CheckKind, String> {
        let mut argv = vec!["s3lock check"];
        argv.extend_from_slice(flags);
        let check = Check::try_parse_from(argv).map_err(|e| e.to_string())?;
        check.args.to_config().map(|c| c.kind)
    }

    #[test]
    fn check_contends_for_semaphores_of_the_limit_given_and_refuses_a_limit_elsewhere() {
        use crate::client::check::CheckKind;
        assert_eq!(check_kind(&[]).unwrap(), CheckKind::Lock);
        assert_eq!(
            check_kind(&["--kind", "semaphore", "--limit", "3"]).unwrap(),
            CheckKind::Semaphore { limit: 3 }
        );
        assert_eq!(
            check_kind(&["--kind", "rwlock"]).unwrap(),
            CheckKind::Rwlock
        );
        assert!(check_kind(&["--kind", "semaphore"]).is_err());
        assert!(check_kind(&["--kind", "semaphore", "--limit", "0"]).is_err());
        assert!(check_kind(&["--kind", "rwlock", "--limit", "2"]).is_err());
        assert!(check_kind(&["--limit", "2"]).is_err());
    }
}
