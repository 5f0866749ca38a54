//! The server's settings: `serve`'s flags, each with an environment variable (clap), their
//! defaults, and their validation. A bad value fails at start with a message that names the setting.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

use crate::auth::AuthTokens;
use crate::lock::EngineConfig;
use crate::store::s3::S3Settings;
use crate::tls::client::{ClientTls, ClientTlsFiles};
use crate::tls::server::{ReloadingTls, ServerTlsFiles};
use crate::tls::SettingFile;
use crate::wire::parse_bucket;

/// A secret from the command line or the environment, kept in a type whose `Debug` hides it
/// (the client's arguments have the same three lines: the server never imports the client).
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
    /// Longest lock-delay a request may ask for, in seconds: how long a lock whose lease ran out
    /// unreleased is kept from everyone (0 turns lock-delays off).
    #[arg(long, env = "S3LOCK_MAX_LOCK_DELAY", default_value_t = 60)]
    pub max_lock_delay: u64,
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
    /// Seconds: the widest this replica's window on the S3 store's clock may be (its answers'
    /// `Date`s, about 2 s wide when the store's hosts agree) for it to take over expired leases.
    /// Wider, the store's hosts' clocks disagree, and acquires of expired leases get 503
    /// clock-uncertain until they agree again.
    #[arg(long, env = "S3LOCK_MAX_CLOCK_SPREAD", default_value_t = 10)]
    pub max_clock_spread: u64,
    /// Skip the start-up proof that the S3 store enforces conditional writes. Dangerous: on a
    /// store that ignores them, one lock can be granted to many holders.
    #[arg(long, env = "S3LOCK_SKIP_STORE_CHECK")]
    pub skip_store_check: bool,
    /// Client connections open at once at most; past it, a new connection is closed at once
    /// (and counted in s3lock_connections_refused_total). Each blocked waiter holds one.
    #[arg(long, env = "S3LOCK_MAX_CONNECTIONS", default_value_t = 8192)]
    pub max_connections: usize,
    /// Lock requests (waits and watches included) in flight at once at most; past it, a lock
    /// request is answered 503 overloaded at once. Health, readiness and metrics are never
    /// turned away. Default: half of --max-connections.
    #[arg(long, env = "S3LOCK_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Locks this replica watches at most at once (for blocked acquirers and watch clients);
    /// past it, a wait or watch on a lock not yet watched is answered 503
    /// too-many-watched-locks.
    #[arg(long, env = "S3LOCK_MAX_WATCHED_LOCKS", default_value_t = crate::lock::DEFAULT_MAX_WATCHED_LOCKS)]
    pub max_watched_locks: usize,
    /// Seconds a client may take to send a request's head (and a keep-alive connection may sit
    /// idle) before its connection is closed.
    #[arg(long, env = "S3LOCK_HEADER_TIMEOUT", default_value_t = 30)]
    pub header_timeout: u64,
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
    /// Serve https with this PEM certificate chain (leaf first). Needs --tls-key. Reloaded
    /// without a restart when the file changes, or on SIGHUP.
    #[arg(long, env = "S3LOCK_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "S3LOCK_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require every client to present a certificate issued by one of these PEM CA
    /// certificates (mTLS). Needs --tls-cert.
    #[arg(long, env = "S3LOCK_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// CA certificates (PEM) that https:// peers' certificates are checked against (default:
    /// the public roots). A replica presents its own --tls-cert to peers that ask for one.
    #[arg(long, env = "S3LOCK_PEER_CA_CERT")]
    pub peer_ca_cert: Option<PathBuf>,
}

/// The narrowest `--max-clock-spread` allowed: a `Date` has whole seconds and was stamped
/// somewhere in a round trip, so honest samples alone make a window of up to 2 s and a round trip.
const MIN_CLOCK_SPREAD: u64 = 3;

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
    /// Client connections open at once at most.
    pub max_connections: usize,
    /// Lock requests in flight at once at most; past it they are answered 503 overloaded.
    pub max_in_flight: usize,
    /// How long a client may take to send a request's head, or idle between requests.
    pub header_timeout: Duration,
    /// The bearer credentials; `None` when auth is off.
    pub auth: Option<Arc<AuthTokens>>,
    /// Peers to send wake-up hints to (`HOST:PORT` or URLs); empty without peers.
    pub peers: Vec<String>,
    /// Signs hints sent and checks hints received; `None`: no hints either way.
    pub peer_secret: Option<SecretString>,
    /// The server's TLS files; `None`: plain HTTP.
    pub tls: Option<ServerTlsFiles>,
    /// What hints to `https://` peers trust and present.
    pub peer_tls: ClientTls,
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
        if self.max_lock_delay > 3600 {
            return Err(bad(
                "S3LOCK_MAX_LOCK_DELAY (--max-lock-delay)",
                "must be at most 3600 seconds",
            ));
        }
        if self.max_wait > 3600 {
            return Err(bad(
                "S3LOCK_MAX_WAIT (--max-wait)",
                "must be at most 3600 seconds",
            ));
        }
        if self.max_connections == 0 {
            return Err(bad(
                "S3LOCK_MAX_CONNECTIONS (--max-connections)",
                "must be at least 1",
            ));
        }
        let max_in_flight = self
            .max_in_flight
            .unwrap_or(self.max_connections / 2)
            .max(1);
        if self.max_in_flight == Some(0) {
            return Err(bad(
                "S3LOCK_MAX_IN_FLIGHT (--max-in-flight)",
                "must be at least 1",
            ));
        }
        if self.max_watched_locks == 0 {
            return Err(bad(
                "S3LOCK_MAX_WATCHED_LOCKS (--max-watched-locks)",
                "must be at least 1",
            ));
        }
        if self.header_timeout == 0 || self.header_timeout > 3600 {
            return Err(bad(
                "S3LOCK_HEADER_TIMEOUT (--header-timeout)",
                "must be 1 to 3600 seconds",
            ));
        }
        if !(MIN_CLOCK_SPREAD..=3600).contains(&self.max_clock_spread) {
            return Err(bad(
                "S3LOCK_MAX_CLOCK_SPREAD (--max-clock-spread)",
                format!(
                    "must be {MIN_CLOCK_SPREAD} to 3600 seconds (a store's Date has whole \
                     seconds, so even agreeing hosts give a window near 2 s wide)"
                ),
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
        let tls = self.tls_files()?;
        if let Some(files) = &tls {
            // Read once here so that a bad file stops the start with its setting named; the
            // server reads them again when it starts serving.
            ReloadingTls::load(files.clone()).map_err(tls_error)?;
        }
        let peer_tls = if peers.is_empty() {
            ClientTls::default()
        } else {
            ClientTls::load(&ClientTlsFiles {
                ca_cert: self
                    .peer_ca_cert
                    .as_ref()
                    .map(|p| SettingFile::new(PEER_CA_CERT, p)),
                // A replica's own certificate is its identity towards peers that require one.
                client_cert: tls.as_ref().map(|t| t.cert.clone()),
                client_key: tls.as_ref().map(|t| t.key.clone()),
            })
            .map_err(tls_error)?
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
                    max_clock_spread: Some(Duration::from_secs(self.max_clock_spread)),
                })
            }
        };
        let request_timeout = Duration::from_secs(
            self.max_wait
                .saturating_add(self.request_timeout_margin.max(1))
                .saturating_add(self.s3_timeout),
        );
        Ok(ServeConfig {
            listen: self.listen,
            store,
            engine: EngineConfig {
                default_bucket,
                allowed_buckets,
                prefix: self.prefix.clone(),
                default_ttl: self.default_ttl,
                max_ttl: self.max_ttl,
                max_lock_delay: self.max_lock_delay,
                max_wait: Duration::from_secs(self.max_wait),
                first_poll: crate::lock::FIRST_POLL,
                max_poll: crate::lock::MAX_POLL,
                max_watched_locks: self.max_watched_locks,
            },
            skip_store_check: self.skip_store_check,
            create_buckets: self.create_buckets,
            request_timeout,
            max_connections: self.max_connections,
            max_in_flight,
            header_timeout: Duration::from_secs(self.header_timeout),
            auth,
            peers,
            peer_secret: self.peer_secret.clone(),
            tls,
            peer_tls,
        })
    }

    /// The TLS files, if TLS is on: a certificate and its key, and optionally a client CA.
    fn tls_files(&self) -> Result<Option<ServerTlsFiles>, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => match self.tls_client_ca {
                Some(_) => Err(bad(
                    TLS_CLIENT_CA,
                    "client certificates need TLS: set S3LOCK_TLS_CERT and S3LOCK_TLS_KEY too",
                )),
                None => Ok(None),
            },
            (Some(_), None) => Err(bad(TLS_KEY, "S3LOCK_TLS_CERT needs its key")),
            (None, Some(_)) => Err(bad(TLS_CERT, "S3LOCK_TLS_KEY needs its certificate")),
            (Some(cert), Some(key)) => Ok(Some(ServerTlsFiles {
                cert: SettingFile::new(TLS_CERT, cert),
                key: SettingFile::new(TLS_KEY, key),
                client_ca: self
                    .tls_client_ca
                    .as_ref()
                    .map(|p| SettingFile::new(TLS_CLIENT_CA, p)),
            })),
        }
    }
}

const TLS_CERT: &str = "S3LOCK_TLS_CERT (--tls-cert)";
const TLS_KEY: &str = "S3LOCK_TLS_KEY (--tls-key)";
const TLS_CLIENT_CA: &str = "S3LOCK_TLS_CLIENT_CA (--tls-client-ca)";
const PEER_CA_CERT: &str = "S3LOCK_PEER_CA_CERT (--peer-ca-cert)";

fn tls_error(e: crate::tls::TlsError) -> ConfigError {
    ConfigError {
        setting: e.setting,
        reason: e.reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `serve`'s arguments alone, as the top-level command line parses them.
    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn serve(args: &[&str]) -> Result<ServeConfig, ConfigError> {
        let mut argv = vec!["s3lock serve"];
        argv.extend_from_slice(args);
        Serve::try_parse_from(argv).unwrap().args.validate()
    }

    #[test]
    fn no_configuration_gives_the_local_store_on_loopback() {
        let c = serve(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(matches!(c.store, StoreConfig::Local { .. }));
        assert_eq!(c.engine.default_bucket, "default");
        assert_eq!(c.engine.prefix, "locks/");
        assert_eq!((c.engine.default_ttl, c.engine.max_ttl), (60, 3600));
        assert_eq!((c.max_connections, c.max_in_flight), (8192, 4096));
        assert_eq!(c.engine.max_watched_locks, 512);
        assert_eq!(c.engine.max_lock_delay, 60);
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
            (vec!["--max-clock-spread", "1"], "S3LOCK_MAX_CLOCK_SPREAD"),
            (vec!["--max-in-flight", "0"], "S3LOCK_MAX_IN_FLIGHT"),
            (vec!["--max-watched-locks", "0"], "S3LOCK_MAX_WATCHED_LOCKS"),
            (vec!["--max-lock-delay", "3601"], "S3LOCK_MAX_LOCK_DELAY"),
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

    #[test]
    fn bad_tls_settings_stop_the_start_naming_the_setting_and_never_quoting_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let one = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = write("cert.pem", &one.cert.pem());
        let key_pem = one.signing_key.serialize_pem();
        let key = write("key.pem", &key_pem);
        let other_key = write("other.key", &other.signing_key.serialize_pem());
        // A key file cut short: its base64 must not show up in the message.
        let mangled = key_pem.replacen("-----END PRIVATE KEY-----", "", 1);
        let broken_key = write("broken.key", &mangled);
        let cert_as_key = write("cert-as-key.pem", &one.cert.pem());
        let empty = write("empty.pem", "");
        for (args, setting) in [
            (vec!["--tls-cert", &cert], "S3LOCK_TLS_KEY"),
            (vec!["--tls-key", &key], "S3LOCK_TLS_CERT"),
            (vec!["--tls-client-ca", &cert], "S3LOCK_TLS_CLIENT_CA"),
            (
                vec!["--tls-cert", "/nonexistent/cert.pem", "--tls-key", &key],
                "S3LOCK_TLS_CERT",
            ),
            (
                vec!["--tls-cert", &empty, "--tls-key", &key],
                "S3LOCK_TLS_CERT",
            ),
            (
                vec!["--tls-cert", &cert, "--tls-key", &other_key],
                "S3LOCK_TLS_KEY",
            ),
            (
                vec!["--tls-cert", &cert, "--tls-key", &broken_key],
                "S3LOCK_TLS_KEY",
            ),
            (
                vec!["--tls-cert", &cert, "--tls-key", &cert_as_key],
                "S3LOCK_TLS_KEY",
            ),
            (
                vec![
                    "--tls-cert",
                    &cert,
                    "--tls-key",
                    &key,
                    "--tls-client-ca",
                    &empty,
                ],
                "S3LOCK_TLS_CLIENT_CA",
            ),
            (
                vec![
                    "--tls-cert",
                    &cert,
                    "--tls-key",
                    &key,
                    "--peers",
                    "https://b:1",
                    "--peer-secret",
                    "peer-secret-0123456789",
                    "--peer-ca-cert",
                    &empty,
                ],
                "S3LOCK_PEER_CA_CERT",
            ),
        ] {
            let err = serve(&args).unwrap_err().to_string();
            assert!(err.contains(setting), "{args:?}: {err}");
            for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!err.contains(line), "key material in: {err}");
            }
        }
        let ok = serve(&[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &cert,
        ]);
        assert!(ok.unwrap().tls.unwrap().client_ca.is_some());
    }
}
