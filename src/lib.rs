//! s3lock: distributed locks over HTTP, whose state lives in an S3 bucket.
//!
//! A map of the crate, from the edge inwards. A module names only modules below it in this list
//! (`tests/layers.rs` holds the exact table and fails on an import that points up):
//!
//! * [`cli`]       — the top-level command line; each subcommand's arguments live with the
//!   module that runs it.
//! * [`bench`]     — `s3lock bench`: load on a server through [`client`], or the same requests
//!   made by the lock engine in-process, straight on the bucket (`--direct-s3`); HDR latency
//!   percentiles.
//! * [`startup`]   — opens the store, runs the start-up store check, serves a listener until a
//!   shutdown future fires.
//! * [`config`]    — the server's settings (clap + env), their defaults and their validation.
//! * [`http`]      — the axum router, request parsing, and the one error → status table; auth
//!   middleware, request metrics, the generated OpenAPI document, and the accept loop with its
//!   drain (`http::conn`, `http::drain`).
//! * [`peers`]     — wake-up hints between replicas: a replica that frees a lock tells the
//!   others, signed with a shared secret, so their waiters read the store at once.
//! * [`lock`]      — the lock protocol (acquire, renew, release, break, status, list, watch,
//!   a lock's change stream, and elections as locks), its rules as pure functions, one store
//!   watcher per waited-on lock, and the per-process cache of each lock's last known state; the
//!   same operations, lists and change streams for semaphores and read-write locks, on their
//!   one document and its rules (pure). Knows nothing of HTTP or S3.
//! * [`store`]     — the storage trait (get, put-if-absent, put-if-version, list) and its
//!   backends: `s3` (every S3 quirk lives there), `local` (embedded, durable), `memory` (tests);
//!   plus the start-up check that a store really enforces conditional writes, the store
//!   health that `/readyz` reads, and the call slots (`store::slots`) that serve lock decisions
//!   before background reads.
//! * [`client`]    — the HTTP client of the lock API (locks, elections, semaphores, read-write
//!   locks), and the CLI on it: `acquire`, `renew`, `release`, `status`, `watch`, `list`,
//!   `break`, `healthcheck`, `run` (a command under a lock, a semaphore's permit or a read-write
//!   lock) and `elect` (a command while leading an election, or an election observed);
//!   `client::hold` is what a command, `check` or `bench` holds.
//! * [`auth`]      — the bearer auth tokens file and constant-time lookup of a credential.
//! * [`tls`]       — rustls for the server (certificate files reloaded without a restart,
//!   optional client certificates) and for our clients (a private CA, a client certificate).
//! * [`wire`]      — what server and clients say to each other: the lock view (and the shared
//!   view of a semaphore or read-write lock), the election view, the holder token, the seed
//!   module's time format. Used by [`http`], [`lock`] and [`client`] alike.
//! * [`backoff`]   — the one retry policy: the pauses between retries of a failed call.
//! * [`clock`]     — injected time: the store's clock as a window of certainty, and the
//!   estimator that makes one from the `Date`s of the store's answers (`clock::samples`).
//! * [`metrics`]   — the Prometheus counters of one app (its own recorder, not a global one).
//! * [`telemetry`] — the tracing subscriber, shared by the binary and the tests.

pub mod auth;
pub mod backoff;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod http;
pub mod lock;
pub mod metrics;
pub mod peers;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod wire;
