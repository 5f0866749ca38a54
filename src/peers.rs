//! Wake-up hints between replicas over one bucket.
//!
//! A waiter learns that a lock was freed by reading the store. On the replica that freed it
//! that happens at once (local hand-off); a waiter on another replica would only see it at its
//! next poll. So a replica that frees a lock (a release, a break, an orphaned grant cleaned up)
//! tells its peers "look at this lock now", and their waiters read the store at once.
//!
//! A hint is only ever a reason to read: it is never taken as the lock's state, so a lost, late,
//! forged or replayed hint can at worst cost a store read, never a grant. Still, hints are
//! signed with a shared secret (HMAC-SHA-256) and carry their send time, so that nobody without
//! the secret can make every replica read the store on demand.
//!
//! Sending never blocks the release that caused it: hints go out from background tasks, at most
//! [`MAX_HINTS_IN_FLIGHT`] at once (more are dropped and counted), each with a short timeout. A
//! peer that is down costs a debug log line and a metric.
//!
//! A peer named `https://HOST:PORT` gets its hints over TLS: its certificate is checked for
//! HOST against `--peer-ca-cert` (or the public roots), and this replica presents its own
//! `--tls-cert` should the peer ask for a client certificate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::clock::{Clock, SystemClock};
use crate::lock::watchers::PeerNotifier;
use crate::metrics::{self as m, Metrics};
use crate::tls::client::ClientTls;

/// The route a peer's hint is sent to.
pub const WAKE_PATH: &str = "/internal/wake";
/// The header carrying the hint's signature (hex HMAC-SHA-256 of the body).
pub const SIGNATURE_HEADER: &str = "x-s3lock-peer-signature";
/// How far a hint's send time may be from the receiver's clock. Replicas' clocks are not trusted
/// for leases, but within a minute is enough to refuse an old hint replayed much later.
const MAX_HINT_AGE_MS: i64 = 60_000;
const HINT_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_HINTS_IN_FLIGHT: usize = 256;
/// The shortest peer secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// What a hint says: look at this lock now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Hint {
    pub bucket: String,
    /// The lock's object key (the configured prefix and the lock key).
    pub object: String,
    /// When it was sent, in milliseconds since the epoch on the sender's clock.
    pub sent_at_ms: i64,
}

/// Signs and checks hints with the shared peer secret.
#[derive(Clone)]
pub struct HintKey(Arc<SecretString>);

impl std::fmt::Debug for HintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HintKey(<redacted>)")
    }
}

/// Why a hint was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HintError {
    #[error("the hint's signature is missing or wrong")]
    BadSignature,
    #[error("the hint is not a JSON hint")]
    Malformed,
    #[error("the hint was sent too long ago (or too far in the future)")]
    Stale,
}

impl HintKey {
    pub fn new(secret: SecretString) -> Self {
        Self(Arc::new(secret))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(self.0.expose_secret().as_bytes())
            .expect("HMAC takes a key of any length")
    }

    /// The signature of `body`, as sent in [`SIGNATURE_HEADER`].
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(body);
        hex(&mac.finalize().into_bytes())
    }

    /// The hint in `body` if `signature` is its signature and it is fresh at `now_ms`.
    pub fn open(&self, body: &[u8], signature: &str, now_ms: i64) -> Result<Hint, HintError> {
        let presented = unhex(signature).ok_or(HintError::BadSignature)?;
        let mut mac = self.mac();
        mac.update(body);
        // Constant time: the comparison's duration says nothing about a guessed signature.
        mac.verify_slice(&presented)
            .map_err(|_| HintError::BadSignature)?;
        let hint: Hint = serde_json::from_slice(body).map_err(|_| HintError::Malformed)?;
        if now_ms.abs_diff(hint.sent_at_ms) > MAX_HINT_AGE_MS.unsigned_abs() {
            return Err(HintError::Stale);
        }
        Ok(hint)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Milliseconds since the epoch on this machine's clock: hints' freshness only, never leases.
pub fn wall_clock_ms() -> i64 {
    SystemClock.now().latest.timestamp_millis()
}

/// One peer: where it is, and whether it speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Peer {
    /// `host:port` (a name resolves to every address it has: a compose service or a
    /// Kubernetes headless service names all the replicas at once).
    address: String,
    /// `https://`: hints over TLS, the certificate checked for the host's name.
    https: bool,
}

/// How hints reach the peers: one plain client, and one TLS client per https peer address.
struct Transport {
    plain: reqwest::Client,
    tls: ClientTls,
    /// A client per address of an https peer, each resolving the peer's name to that address:
    /// the certificate is checked for the name while every replica behind it gets the hint.
    /// Rebuilt from scratch past [`MAX_TLS_CLIENTS`] (names whose addresses keep changing).
    https: Mutex<HashMap<(String, SocketAddr), reqwest::Client>>,
}

const MAX_TLS_CLIENTS: usize = 64;

impl Transport {
    /// The client and URL a hint to `addr`, one address of `peer`, goes by.
    fn route(&self, peer: &Peer, addr: SocketAddr) -> Result<(reqwest::Client, String), String> {
        if !peer.https {
            return Ok((self.plain.clone(), format!("http://{addr}{WAKE_PATH}")));
        }
        let host = peer
            .address
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or_default()
            .to_owned();
        let url = format!("https://{}{WAKE_PATH}", peer.address);
        let mut clients = self.https.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&(host.clone(), addr)) {
            return Ok((c.clone(), url));
        }
        if clients.len() >= MAX_TLS_CLIENTS {
            clients.clear();
        }
        let client = self
            .tls
            .apply(hint_client().resolve(&host, addr))
            .build()
            .map_err(|e| e.to_string())?;
        clients.insert((host, addr), client.clone());
        Ok((client, url))
    }
}

fn hint_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(HINT_TIMEOUT)
        .connect_timeout(HINT_TIMEOUT)
}

/// The peers of this replica, and the sending of hints to them.
pub struct Peers {
    peers: Vec<Peer>,
    key: HintKey,
    transport: Arc<Transport>,
    in_flight: Arc<Semaphore>,
    metrics: Metrics,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// `peers` are base URLs (`http://10.0.0.7:8080`, `https://s3lock-b:8443`) or `host:port`
    /// names (plain HTTP); `https://` ones are reached with `tls`.
    pub fn new(
        peers: &[String],
        key: HintKey,
        tls: &ClientTls,
        metrics: Metrics,
    ) -> Result<Self, String> {
        let peers = peers
            .iter()
            .map(|p| peer_address(p))
            .collect::<Result<Vec<_>, _>>()?;
        let plain = hint_client().build().map_err(|e| e.to_string())?;
        Ok(Self {
            peers,
            key,
            transport: Arc::new(Transport {
                plain,
                tls: tls.clone(),
                https: Mutex::default(),
            }),
            in_flight: Arc::new(Semaphore::new(MAX_HINTS_IN_FLIGHT)),
            metrics,
        })
    }

    async fn send(
        transport: Arc<Transport>,
        peers: Vec<Peer>,
        body: Vec<u8>,
        signature: String,
        metrics: Metrics,
    ) {
        // Every peer at once: one that hangs until its timeout delays nobody else's hint.
        let (transport, body, signature, metrics) = (&transport, &body, &signature, &metrics);
        let peers = peers.iter().map(|peer| async move {
            let addrs = match tokio::net::lookup_host(peer.address.as_str()).await {
                Ok(addrs) => addrs.collect::<Vec<_>>(),
                Err(e) => {
                    tracing::debug!(peer = %peer.address, error = %e, "cannot resolve a peer");
                    metrics.count(m::PEER_HINTS, &[("outcome", "unresolved")]);
                    return;
                }
            };
            join_all(addrs.into_iter().map(|addr| async move {
                let (http, url) = match transport.route(peer, addr) {
                    Ok(route) => route,
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "no TLS client for a peer");
                        metrics.count(m::PEER_HINTS, &[("outcome", "failed")]);
                        return;
                    }
                };
                let sent = http
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, signature)
                    .body(body.clone())
                    .send()
                    .await;
                let outcome = match sent {
                    Ok(r) if r.status().is_success() => "sent",
                    Ok(r) => {
                        tracing::debug!(%addr, status = %r.status(), "a peer refused a hint");
                        "refused"
                    }
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "a peer did not take a hint");
                        "failed"
                    }
                };
                metrics.count(m::PEER_HINTS, &[("outcome", outcome)]);
            }))
            .await;
        });
        join_all(peers).await;
    }
}

impl PeerNotifier for Peers {
    fn lock_freed(&self, bucket: &str, object: &str) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.metrics.count(m::PEER_HINTS, &[("outcome", "dropped")]);
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let hint = Hint {
            bucket: bucket.to_owned(),
            object: object.to_owned(),
            sent_at_ms: wall_clock_ms(),
        };
        let body = serde_json::to_vec(&hint).expect("a hint serialises");
        let signature = self.key.sign(&body);
        let (transport, peers, metrics) = (
            self.transport.clone(),
            self.peers.clone(),
            self.metrics.clone(),
        );
        runtime.spawn(async move {
            Self::send(transport, peers, body, signature, metrics).await;
            drop(permit);
        });
    }
}

/// `http://host:port[/]`, `https://host:port[/]` or `host:port` (plain HTTP).
fn peer_address(raw: &str) -> Result<Peer, String> {
    let trimmed = raw.trim();
    let (https, rest) = match trimmed.strip_prefix("https://") {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix("http://").unwrap_or(trimmed)),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains("://") {
        return Err(format!(
            "peer {raw:?}: give http://HOST:PORT, https://HOST:PORT or HOST:PORT"
        ));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(Peer {
            address: rest.to_owned(),
            https,
        }),
        _ => Err(format!("peer {raw:?} has no HOST:PORT")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> HintKey {
        HintKey::new(SecretString::from(s))
    }

    fn hint_body(sent_at_ms: i64) -> Vec<u8> {
        serde_json::to_vec(&Hint {
            bucket: "b".into(),
            object: "locks/k".into(),
            sent_at_ms,
        })
        .unwrap()
    }

    #[test]
    fn a_signed_fresh_hint_opens_and_nothing_else_does() {
        let k = key("peer-secret-0123456789");
        let body = hint_body(1_000_000);
        let sig = k.sign(&body);
        assert_eq!(k.open(&body, &sig, 1_000_500).unwrap().object, "locks/k");
        // Another secret, a changed body, a mangled or empty signature.
        let other = key("another-secret-0123456789").sign(&body);
        assert_eq!(
            k.open(&body, &other, 1_000_500),
            Err(HintError::BadSignature)
        );
        let mut changed = body.clone();
        changed[3] ^= 1;
        assert_eq!(
            k.open(&changed, &sig, 1_000_500),
            Err(HintError::BadSignature)
        );
        assert_eq!(k.open(&body, "", 1_000_500), Err(HintError::BadSignature));
        assert_eq!(k.open(&body, "zz", 1_000_500), Err(HintError::BadSignature));
        // Replayed much later, or from far ahead.
        assert_eq!(
            k.open(&body, &sig, 1_000_000 + 61_000),
            Err(HintError::Stale)
        );
        assert_eq!(
            k.open(&body, &sig, 1_000_000 - 61_000),
            Err(HintError::Stale)
        );
    }

    #[test]
    fn a_hint_from_the_far_ends_of_time_is_stale_not_a_panic() {
        // Review of issue 10: the age check subtracted the send time from now, which overflows
        // (a panic in a debug build) for a send time near i64::MIN or i64::MAX.
        let k = key("peer-secret-0123456789");
        for sent_at_ms in [i64::MIN, i64::MAX, i64::MIN + 1] {
            let body = hint_body(sent_at_ms);
            let opened = std::panic::catch_unwind(|| k.open(&body, &k.sign(&body), 1_000_000));
            assert_eq!(
                opened.ok(),
                Some(Err(HintError::Stale)),
                "sent at {sent_at_ms}"
            );
        }
    }

    #[test]
    fn peers_are_host_port_or_http_or_https_urls() {
        let peer = |address: &str, https| Peer {
            address: address.into(),
            https,
        };
        assert_eq!(
            peer_address("http://s3lock-b:8080/").unwrap(),
            peer("s3lock-b:8080", false)
        );
        assert_eq!(
            peer_address("127.0.0.1:9").unwrap(),
            peer("127.0.0.1:9", false)
        );
        assert_eq!(
            peer_address("https://s3lock-b:8443").unwrap(),
            peer("s3lock-b:8443", true)
        );
        assert!(peer_address("ftp://x:1").is_err());
        assert!(peer_address("http://x:1/path").is_err());
        assert!(peer_address("nohost").is_err());
        assert!(peer_address("x:notaport").is_err());
    }

    #[test]
    fn a_debug_print_never_shows_the_secret() {
        let shown = format!("{:?}", key("peer-secret-0123456789"));
        assert!(!shown.contains("peer-secret"), "{shown}");
    }
}
