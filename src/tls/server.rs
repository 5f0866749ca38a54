//! The server's TLS: certificate, key and optional client CA, reloaded without a restart.
//!
//! The whole rustls `ServerConfig` is rebuilt from the files and swapped, rather than only the
//! certificate behind a `ResolvesServerCert`: a rotated client CA (mTLS) then takes effect the
//! same way as a rotated certificate. Connections already open keep the configuration they
//! were accepted with; each new one takes the current one.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use super::{certificates, private_key, provider, read, SettingFile, TlsError};
use crate::metrics::{self as m, Metrics};

/// How often the files are read to see whether they changed. They are a few KiB each, so
/// reading them every few seconds costs nothing, and comparing content rather than modification
/// times also catches a Kubernetes secret's symlink swap.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The PEM files the server's TLS is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The certificate chain, leaf first.
    pub cert: SettingFile,
    /// The leaf's private key.
    pub key: SettingFile,
    /// With it, every client must present a certificate issued by one of these CAs (mTLS).
    pub client_ca: Option<SettingFile>,
}

/// The files' bytes as read at one moment.
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Contents {
    fn read(files: &ServerTlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read(&files.cert)?,
            key: read(&files.key)?,
            client_ca: files.client_ca.as_ref().map(read).transpose()?,
        })
    }

    /// A digest of all three, to tell whether anything changed without keeping key bytes.
    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            let part = part.map(Vec::as_slice).unwrap_or_default();
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files are as they were: nothing to do.
    Unchanged,
    /// New connections get the new configuration.
    Reloaded,
    /// The files changed but do not make a configuration (half-written, a key that does not
    /// match): the previous one stays. `repeated` when these same contents failed last time.
    Failed { error: TlsError, repeated: bool },
}

/// The server's current TLS configuration, and the files it is rebuilt from.
pub struct ReloadingTls {
    files: ServerTlsFiles,
    state: RwLock<State>,
}

struct State {
    config: Arc<ServerConfig>,
    /// Digest of the contents `config` was built from: a reload of unchanged files is a no-op.
    loaded: [u8; 32],
    /// Digest of the contents that last failed: their warning is not repeated every interval.
    failed: Option<[u8; 32]>,
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingTls {
    /// Reads and checks the files; an error names the setting at fault.
    pub fn load(files: ServerTlsFiles) -> Result<Self, TlsError> {
        let contents = Contents::read(&files)?;
        let config = build(&files, &contents)?;
        Ok(Self {
            state: RwLock::new(State {
                config: Arc::new(config),
                loaded: contents.digest(),
                failed: None,
            }),
            files,
        })
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The acceptor for a connection accepted now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        TlsAcceptor::from(state.config.clone())
    }

    /// Reads the files again and, if they changed and make a good configuration, swaps it in.
    pub fn reload(&self) -> Reload {
        let contents = match Contents::read(&self.files) {
            Ok(c) => c,
            // Unreadable (a file renamed away and not yet back, say): tried again at the next
            // check; the same error is not warned about again while it lasts.
            Err(error) => {
                let digest = Sha256::digest(error.to_string().as_bytes()).into();
                return self.failed(error, digest);
            }
        };
        let digest = contents.digest();
        if digest == self.state.read().unwrap_or_else(|e| e.into_inner()).loaded {
            return Reload::Unchanged;
        }
        match build(&self.files, &contents) {
            Ok(config) => {
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                *state = State {
                    config: Arc::new(config),
                    loaded: digest,
                    failed: None,
                };
                Reload::Reloaded
            }
            Err(error) => self.failed(error, digest),
        }
    }

    /// A failure of the contents (or read error) `digest` stands for.
    fn failed(&self, error: TlsError, digest: [u8; 32]) -> Reload {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let repeated = state.failed == Some(digest);
        state.failed = Some(digest);
        Reload::Failed { error, repeated }
    }
}

/// Reloads `tls` every `every`, and at once on SIGHUP when `sighup` (the binary; in-process
/// test servers share one process and leave the signal alone), until the runtime stops. A
/// reload that fails keeps the previous configuration and says why at warn, once per content.
pub async fn keep_reloading(
    tls: Arc<ReloadingTls>,
    every: Duration,
    sighup: bool,
    metrics: Metrics,
) {
    let mut hangups = if sighup { hangup_signals() } else { None };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is now: the files were just loaded
    loop {
        let asked = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async {
                match hangups.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        // Reading files blocks; they are small, but a stalled network filesystem must not
        // stall a runtime thread.
        let reloading = tls.clone();
        let Ok(outcome) = tokio::task::spawn_blocking(move || reloading.reload()).await else {
            continue;
        };
        match outcome {
            Reload::Unchanged if asked => {
                tracing::info!("SIGHUP: the TLS files are unchanged, nothing to reload")
            }
            Reload::Unchanged => {}
            Reload::Reloaded => {
                metrics.count(m::TLS_RELOADS, &[("outcome", "reloaded")]);
                tracing::info!(
                    on = if asked { "SIGHUP" } else { "a change seen" },
                    "TLS files reloaded: new connections get the new certificate"
                );
            }
            Reload::Failed { error, repeated } => {
                if !repeated {
                    metrics.count(m::TLS_RELOADS, &[("outcome", "failed")]);
                }
                if asked || !repeated {
                    tracing::warn!(
                        error = %error,
                        "the TLS files changed but cannot be used; keeping the previous certificate"
                    );
                }
            }
        }
    }
}

fn hangup_signals() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

/// The rustls configuration the files make.
fn build(files: &ServerTlsFiles, contents: &Contents) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&files.cert, &contents.cert)?;
    let key = private_key(&files.key, &contents.key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::of(&files.cert, e))?;
    let builder = match (&files.client_ca, &contents.client_ca) {
        (Some(ca), Some(bytes)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, bytes)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::of(ca, format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::of(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::of(
            &files.key,
            format!("does not match the certificate in {}", files.cert.setting),
        ),
        other => TlsError::of(&files.key, format!("not a usable private key: {other}")),
    })?;
    // Both over TLS, chosen by the client; hyper-util's auto builder then reads which one the
    // client speaks from its first bytes, as on plain TCP.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
