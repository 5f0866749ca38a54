//! Builds a running server from a validated configuration: opens the store, proves it enforces
//! conditional writes (S3), and serves on a listener it is handed until a shutdown future fires.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::AuthTokens;
use crate::clock::{Clock, SystemClock};
use crate::config::{ServeConfig, StoreConfig};
use crate::http::conn::{self, ConnLimits};
use crate::http::drain::{self, InFlight};
use crate::lock::{Engine, EngineConfig};
use crate::metrics::Metrics;
use crate::peers::{HintKey, Peers};
use crate::store::check::verify_conditional_writes;
use crate::store::local::LocalStore;
use crate::store::s3::S3Store;
use crate::store::Store;
use crate::tls::server::{keep_reloading, ReloadingTls, RELOAD_EVERY};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    LocalStore(#[from] crate::store::local::OpenError),
    #[error(
        "refusing to start: the S3 store check failed for bucket {bucket}: {cause}. \
             A lock service on such a store could grant one lock to several holders. \
             (--skip-store-check overrides this, at your own risk.)"
    )]
    StoreCheck {
        bucket: String,
        cause: crate::store::check::CheckError,
    },
    #[error(
        "refusing to start: the S3 store's answers carry no Date header, or no request id to \
         show they are the store's own (is a proxy removing them?). Leases are judged on the store's clock, read from that header; without it each \
         replica would judge them on its own clock, and one whose clock runs ahead would take \
         locks over before their leases end"
    )]
    NoStoreClock,
    #[error("cannot create bucket {bucket}: {cause}")]
    CreateBucket {
        bucket: String,
        cause: crate::store::StoreError,
    },
    /// The peers' addresses do not parse (the message says which).
    #[error("{0}")]
    Peers(String),
    /// A TLS file is unusable (the message names the setting).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot serve: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the configured store and returns it with the clock that judges expiry on it, counting
/// its S3 calls (if any) into `metrics`.
pub async fn open_store(
    config: &ServeConfig,
    metrics: Metrics,
) -> Result<(Arc<dyn Store>, Arc<dyn Clock>), StartupError> {
    match &config.store {
        StoreConfig::Local { data_dir } => {
            let store = LocalStore::open(data_dir)?;
            tracing::info!(data_dir = %data_dir.display(), "using the local store");
            Ok((Arc::new(store), Arc::new(SystemClock)))
        }
        StoreConfig::S3(settings) => {
            let store = S3Store::connect(settings).await.with_metrics(metrics);
            if config.create_buckets {
                for bucket in &config.engine.allowed_buckets {
                    store.create_bucket(bucket).await.map_err(|cause| {
                        StartupError::CreateBucket {
                            bucket: bucket.clone(),
                            cause,
                        }
                    })?;
                }
            }
            check_store(&store, &config.engine, config.skip_store_check).await?;
            let clock = store.clock();
            if !clock.has_store_time() {
                // The check's own answers had no Date (or the check was skipped): one read of
                // an object that need not exist asks once more.
                let probe = format!("{}.s3lock-probe/clock", config.engine.prefix);
                let _ = store.get(&config.engine.default_bucket, &probe).await;
            }
            if !clock.has_store_time() {
                return Err(StartupError::NoStoreClock);
            }
            Ok((Arc::new(store), clock))
        }
    }
}

/// The start-up proof of conditional writes, on every bucket the server may use.
async fn check_store(
    store: &dyn Store,
    engine: &EngineConfig,
    skip: bool,
) -> Result<(), StartupError> {
    if skip {
        tracing::warn!(
            "SKIPPING the store check: if this store does not enforce conditional writes, \
             one lock can be granted to several holders"
        );
        return Ok(());
    }
    for bucket in &engine.allowed_buckets {
        verify_conditional_writes(store, bucket, &engine.prefix)
            .await
            .map_err(|cause| StartupError::StoreCheck {
                bucket: bucket.clone(),
                cause,
            })?;
        tracing::info!(
            bucket,
            "store check passed: conditional writes are enforced"
        );
    }
    Ok(())
}

/// Runs the server of `config` on `listener` until `shutdown` completes: opens the store (with
/// its start-up check), builds the engine, serves, then drains in-flight requests.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    log_auth_mode(&config);
    let metrics = Metrics::new();
    let (store, clock) = open_store(&config, metrics.clone()).await?;
    Server::from_config(&config, store, clock, metrics)?
        .serve(listener, shutdown)
        .await
}

/// Lock requests in flight at once when nothing says otherwise: half of the default
/// `--max-connections`, as the configuration derives it.
const DEFAULT_MAX_IN_FLIGHT: usize = 4096;

/// A server whose store is open and checked, ready to serve: the engine and what the HTTP layer
/// needs besides. [`run`] builds it from the configuration; tests build it over a store of
/// their own with [`Server::new`].
pub struct Server {
    engine: Arc<Engine>,
    request_timeout: Duration,
    conn_limits: ConnLimits,
    /// Lock requests in flight at once at most (waits and watches included); past it, 503.
    max_in_flight: usize,
    /// The bearer credentials; `None` when auth is off.
    auth: Option<Arc<AuthTokens>>,
    /// Checks peers' wake-up hints on `POST /internal/wake`; `None`: that route is absent.
    hints: Option<HintKey>,
    /// Serve https with this; `None`: plain HTTP (and h2c with prior knowledge).
    tls: Option<Arc<ReloadingTls>>,
    /// How often the TLS files are checked for a change.
    tls_reload_every: Duration,
    /// Whether SIGHUP reloads the TLS files: the binary's server, not in-process test servers
    /// (a signal reaches the whole process).
    reload_on_sighup: bool,
}

impl Server {
    /// Serves `engine`, with no auth and no peers' hints.
    pub fn new(engine: Arc<Engine>, request_timeout: Duration) -> Self {
        Self {
            engine,
            request_timeout,
            conn_limits: ConnLimits {
                max_connections: 8192,
                header_timeout: Duration::from_secs(30),
                // Every request ends within its timeout: draining for longer waits for nothing.
                drain_timeout: request_timeout,
            },
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            auth: None,
            hints: None,
            tls: None,
            tls_reload_every: RELOAD_EVERY,
            reload_on_sighup: false,
        }
    }

    /// The server of `config` over a store that [`open_store`] returned.
    pub fn from_config(
        config: &ServeConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Result<Self, StartupError> {
        let mut engine =
            Engine::new(store, clock, config.engine.clone()).with_metrics(metrics.clone());
        let hints = config.peer_secret.clone().map(HintKey::new);
        if let (Some(key), false) = (&hints, config.peers.is_empty()) {
            let peers = Peers::new(&config.peers, key.clone(), &config.peer_tls, metrics)
                .map_err(StartupError::Peers)?;
            engine = engine.with_peers(Arc::new(peers));
        }
        // open_store returns only once the store check passed (or was skipped).
        engine.mark_store_checked();
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(ReloadingTls::load(files.clone())?)),
            None => None,
        };
        let mut server = Self::new(Arc::new(engine), config.request_timeout)
            .with_connection_limits(config.max_connections, config.header_timeout)
            .with_max_in_flight(config.max_in_flight)
            .with_auth(config.auth.clone())
            .with_hints(hints)
            .with_tls(tls, RELOAD_EVERY);
        server.reload_on_sighup = true;
        Ok(server)
    }

    /// Serves https with `tls` (`None`: plain HTTP), its files checked for a change `every`.
    pub fn with_tls(mut self, tls: Option<Arc<ReloadingTls>>, every: Duration) -> Self {
        self.tls = tls;
        self.tls_reload_every = every;
        self
    }

    /// At most `max_connections` client connections open at once, each closed when a request's
    /// head takes longer than `header_timeout` to arrive (or it idles that long between requests).
    pub fn with_connection_limits(
        mut self,
        max_connections: usize,
        header_timeout: Duration,
    ) -> Self {
        self.conn_limits.max_connections = max_connections;
        self.conn_limits.header_timeout = header_timeout;
        self
    }

    /// At most `max_in_flight` lock requests at once; past it, a lock request is answered 503
    /// `overloaded` at once.
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// Every lock route needs one of these auth tokens (`None`: auth is off).
    pub fn with_auth(mut self, auth: Option<Arc<AuthTokens>>) -> Self {
        self.auth = auth;
        self
    }

    /// Takes peers' wake-up hints signed with this key (`None`: no hints).
    pub fn with_hints(mut self, hints: Option<HintKey>) -> Self {
        self.hints = hints;
        self
    }

    /// Serves the API on `listener` until `shutdown` completes, then drains: acquires are
    /// refused (503 `shutting-down`, as `/readyz` is), blocked waiters and watches answered, and
    /// everything else still served until no request is in flight (for the drain time at most);
    /// then it stops accepting and closes its connections as their last answers are sent (for
    /// the drain time at most again).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let metrics = self.engine.metrics().clone();
        let in_flight = Arc::new(InFlight::default());
        let app = crate::http::app(
            self.engine.clone(),
            self.request_timeout,
            self.max_in_flight,
            self.auth,
            self.hints,
        );
        let app = drain::counted(app, in_flight.clone());
        let (engine, drain_timeout) = (self.engine, self.conn_limits.drain_timeout);
        let drained = async move {
            shutdown.await;
            engine.begin_drain();
            if tokio::time::timeout(drain_timeout, in_flight.idle())
                .await
                .is_err()
            {
                tracing::warn!("requests were still in flight when the drain time ran out");
            }
        };
        let reloading = self.tls.clone().map(|tls| {
            tokio::spawn(keep_reloading(
                tls,
                self.tls_reload_every,
                self.reload_on_sighup,
                metrics.clone(),
            ))
        });
        match &self.tls {
            Some(tls) => tracing::info!(
                address = %listener.local_addr()?,
                client_certificates = if tls.requires_client_certificates() { "required" } else { "not asked" },
                "s3lock is serving https"
            ),
            None => tracing::info!(address = %listener.local_addr()?, "s3lock is serving"),
        }
        let served = conn::serve(listener, app, self.conn_limits, self.tls, metrics, drained).await;
        if let Some(task) = reloading {
            task.abort();
        }
        served?;
        Ok(())
    }
}

/// Says at start whether the lock routes need an auth token, and warns loudly when anyone on the
/// network could use them.
pub fn log_auth_mode(config: &ServeConfig) {
    match &config.auth {
        Some(tokens) => tracing::info!(
            auth_tokens = tokens.len(),
            "auth is on: the lock routes need an auth token"
        ),
        None if !config.listen.ip().is_loopback() => tracing::warn!(
            listen = %config.listen,
            "AUTH IS OFF and the server listens beyond loopback: anyone who can reach it can \
             take, renew or release any lock. Set S3LOCK_AUTH_TOKENS_FILE"
        ),
        None => tracing::info!("auth is off (loopback only)"),
    }
}

/// Completes on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// the future is first polled: the server is polled only once it serves, and a SIGTERM in
/// between (a deploy that stops a replica just started) would otherwise take the default
/// action and kill it without a drain.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            async fn recv(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = recv(interrupt) => {}
                _ = recv(terminate) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down: draining");
    }
}
