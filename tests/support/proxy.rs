//! A fault-injecting HTTP proxy between s3lock and the real S3 server, switchable at run time.
//! Each test starts its own on a loopback port and points an S3 store at it. It can:
//!
//! * pass requests through, with added latency (fixed, or random up to a bound);
//! * answer `503 SlowDown` or `500`, or reset the connection, instead of forwarding — for every
//!   request, for the next N (optionally only of one method), or at random;
//! * forward a request and then drop the response: the write happened, the client never learns;
//! * strip `If-None-Match` / `If-Match`, like a store that ignores conditional writes;
//! * strip the `Date` header from answers, like a proxy that drops it;
//! * reshape SeaweedFS's refusals of conditional writes into the answers AWS (and moto) give
//!   ([`AwsAnswers`]), keeping the store's own headers;
//! * answer a request itself with a chosen status and a `Date` from a wrong clock, like a load
//!   balancer in front of the store;
//! * pass on the store's answer with its `Date` moved, like a store host with a wrong clock;
//! * forward one request and hold its answer until the test lets it go ([`HeldAnswer`]): the
//!   store has acted, and the caller does not know it yet (a slow network, a late read); or
//!   hold one request before it reaches the store (a request slow on its way);
//! * count the requests that reach it, by method.
//!
//! Beside it, a [`Relay`]: a TCP relay that can be cut and restored, for a store that goes away
//! altogether.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy does to a request instead of (or after) forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `503 SlowDown`, not forwarded.
    SlowDown,
    /// `500 InternalError`, not forwarded.
    InternalError,
    /// The connection is closed without an answer, not forwarded.
    Reset,
    /// Forwarded to S3 (so a write takes effect), then the connection is closed without an
    /// answer: the ambiguous write.
    DropResponse,
    /// Not forwarded: answered by the proxy itself, with `status` (an S3-style error body) and
    /// a `Date` of its own clock moved by `date_offset_secs`, like a load balancer or a second
    /// gateway host whose clock is wrong. It carries no `x-amz-request-id`, as such an answer
    /// would not.
    OwnAnswer { status: u16, date_offset_secs: i64 },
    /// Forwarded to S3, and its answer (the store's own, request id and all) passed on with its
    /// `Date` moved by `date_offset_secs`, like one of the store's hosts whose clock is wrong.
    WrongClock { date_offset_secs: i64 },
}

/// Which of AWS's answers to a refused conditional PUT the proxy gives in place of SeaweedFS's
/// `412 Precondition Failed` (which SeaweedFS sends for all of them). The status and error body
/// change; the upstream's headers (`x-amz-request-id`, `Date`...) are kept, as the answer is
/// still the store's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsAnswers {
    /// As AWS answers one writer at a time: an `If-Match` PUT to a missing key gets
    /// `404 NoSuchKey`; every other refusal stays `412`.
    MissingKey,
    /// As AWS answers writers that race: every refused conditional PUT gets
    /// `409 ConditionalRequestConflict`, except an `If-Match` PUT to a missing key, which gets
    /// `404 NoSuchKey`.
    Conflicts,
}

#[derive(Debug, Clone, Copy, Default)]
pub enum Latency {
    #[default]
    None,
    Fixed(Duration),
    UpTo(Duration),
}

#[derive(Debug, Default)]
struct Behaviour {
    latency: Latency,
    /// When set, latency applies to requests of this method only.
    latency_only_for: Option<hyper::Method>,
    /// Applied to every request while set.
    always: Option<Fault>,
    /// Applied to the next `n` requests (of `method`, when given), after `skip` of them pass.
    next: Option<NextFaults>,
    /// Applied to a random share of requests.
    random: Option<(f64, Fault)>,
    /// More random faults, each with its own share and optionally one method, tried in order
    /// after `random`: one proxy can lose some writes' answers and also answer some calls itself.
    random_also: Vec<(f64, Option<hyper::Method>, Fault)>,
    strip_conditions: bool,
    strip_date: bool,
    aws: Option<AwsAnswers>,
    counts: BTreeMap<String, usize>,
    faults: BTreeMap<String, usize>,
    /// The next request of this method is held at this gate (before it is forwarded, or after,
    /// as the gate says).
    hold: Option<(hyper::Method, Arc<Gate>)>,
}

/// Where a held request or answer waits: `arrived` once it is held, `open` to let it go.
#[derive(Debug)]
struct Gate {
    /// Held before forwarding (else the store's answer is held).
    before: bool,
    arrived: tokio::sync::Semaphore,
    open: tokio::sync::Semaphore,
}

impl Gate {
    /// Says it holds, and waits to be let go.
    async fn pass(&self) {
        self.arrived.add_permits(1);
        self.open.acquire().await.unwrap().forget();
    }
}

/// One request held by the proxy: its answer once the store gave it (see
/// [`FaultProxy::hold_next_answer_of`]), or the request itself before the store sees it
/// ([`FaultProxy::hold_next_request_of`]).
#[derive(Debug, Clone)]
pub struct HeldAnswer(Arc<Gate>);

impl HeldAnswer {
    /// Completes once the request is held here: after the store answered it, for a held answer.
    pub async fn answered(&self) {
        self.0.arrived.acquire().await.unwrap().forget();
    }

    /// Lets the answer go on to the client (or the request on to the store).
    pub fn release(&self) {
        self.0.open.add_permits(1);
    }
}

#[derive(Debug, Clone)]
struct NextFaults {
    skip: usize,
    n: usize,
    method: Option<hyper::Method>,
    fault: Fault,
}

#[derive(Debug, Clone)]
pub struct FaultProxy {
    /// The URL to give the S3 client instead of the real endpoint.
    pub endpoint: String,
    state: Arc<Mutex<Behaviour>>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (e.g. `http://127.0.0.1:8333`); it runs until the
    /// test's runtime ends.
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, upstream)
    }

    /// Starts a proxy on a listener the caller bound (a fixed port, for a proxy run as its own
    /// process by `examples/fault_proxy.rs`).
    pub fn start_on(listener: TcpListener, upstream: &str) -> Self {
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(Behaviour::default()));
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (state, client, upstream) = (shared.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, state.clone(), client.clone(), upstream.clone())
                    });
                    // No Date of its own: the proxy passes on S3's, or none when told to strip it.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .auto_date_header(false)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { endpoint, state }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Behaviour) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn set_latency(&self, latency: Latency) {
        self.with(|b| {
            b.latency = latency;
            b.latency_only_for = None;
        });
    }

    /// Latency for requests of one method (`PUT`...) only.
    pub fn set_latency_of(&self, method: &str, latency: Latency) {
        let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        self.with(|b| {
            b.latency = latency;
            b.latency_only_for = Some(method);
        });
    }

    /// Every request meets `fault` (or none, to heal).
    pub fn fail_all(&self, fault: Option<Fault>) {
        self.with(|b| b.always = fault);
    }

    /// The next `n` requests meet `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.with(|b| {
            b.next = (n > 0).then_some(NextFaults {
                skip: 0,
                n,
                method: None,
                fault,
            })
        });
    }

    /// The next `n` requests with this method (`PUT`, `GET`...) meet `fault`.
    pub fn fail_next_of(&self, method: &str, n: usize, fault: Fault) {
        self.fail_nth_of(method, 1, n, fault);
    }

    /// From the `nth` next request with this method on (1 = the next one), `n` of them meet
    /// `fault`: the ones before it pass untouched.
    pub fn fail_nth_of(&self, method: &str, nth: usize, n: usize, fault: Fault) {
        let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        self.with(|b| {
            b.next = (n > 0).then_some(NextFaults {
                skip: nth.saturating_sub(1),
                n,
                method: Some(method),
                fault,
            })
        });
    }

    /// The next request with this method is forwarded to the store, and its answer held until
    /// the returned handle releases it.
    pub fn hold_next_answer_of(&self, method: &str) -> HeldAnswer {
        self.hold_next(method, false)
    }

    /// The next request with this method is held before it reaches the store, until the
    /// returned handle lets it go.
    pub fn hold_next_request_of(&self, method: &str) -> HeldAnswer {
        self.hold_next(method, true)
    }

    fn hold_next(&self, method: &str, before: bool) -> HeldAnswer {
        let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        let gate = Arc::new(Gate {
            before,
            arrived: tokio::sync::Semaphore::new(0),
            open: tokio::sync::Semaphore::new(0),
        });
        self.with(|b| b.hold = Some((method, gate.clone())));
        HeldAnswer(gate)
    }

    /// Each request meets `fault` with this probability.
    pub fn fail_randomly(&self, probability: f64, fault: Fault) {
        self.with(|b| b.random = Some((probability, fault)));
    }

    /// Besides any other random fault, each request (of `method`, when given) meets `fault`
    /// with this probability.
    pub fn add_random_fault(&self, probability: f64, method: Option<&str>, fault: Fault) {
        let method = method.map(|m| hyper::Method::from_bytes(m.as_bytes()).unwrap());
        self.with(|b| b.random_also.push((probability, method, fault)));
    }

    pub fn strip_conditions(&self, on: bool) {
        self.with(|b| b.strip_conditions = on);
    }

    /// Answers reach the client without a `Date` header.
    pub fn strip_date(&self, on: bool) {
        self.with(|b| b.strip_date = on);
    }

    /// Refusals of conditional PUTs are answered as AWS answers them (or as SeaweedFS does, for
    /// `None`).
    pub fn aws_answers(&self, shape: Option<AwsAnswers>) {
        self.with(|b| b.aws = shape);
    }

    /// Heals every fault and latency; keeps the counts.
    pub fn heal(&self) {
        self.with(|b| {
            b.latency = Latency::None;
            b.always = None;
            b.next = None;
            b.random = None;
            b.random_also.clear();
            b.strip_conditions = false;
            b.strip_date = false;
            b.aws = None;
        });
    }

    /// Requests that reached the proxy, by method, since the last reset.
    pub fn count(&self, method: &str) -> usize {
        self.with(|b| b.counts.get(method).copied().unwrap_or(0))
    }

    pub fn total(&self) -> usize {
        self.with(|b| b.counts.values().sum())
    }

    /// Faults injected, by kind, since the last reset; answers reshaped as AWS's count under
    /// their error code (`ConditionalRequestConflict`, `NoSuchKey`).
    pub fn faults_injected(&self) -> BTreeMap<String, usize> {
        self.with(|b| b.faults.clone())
    }

    pub fn reset_counts(&self) {
        self.with(|b| {
            b.counts.clear();
            b.faults.clear();
        });
    }
}

/// What the proxy does with one request.
struct Plan {
    latency: Latency,
    fault: Option<Fault>,
    strip: bool,
    strip_date: bool,
    aws: Option<AwsAnswers>,
    held: Option<Arc<Gate>>,
}

/// Picks this request's fault, and counts the request.
fn decide(state: &Mutex<Behaviour>, method: &hyper::Method) -> Plan {
    let mut b = state.lock().unwrap();
    *b.counts.entry(method.to_string()).or_default() += 1;
    let held = match &b.hold {
        Some((only, _)) if only == method => b.hold.take().map(|(_, gate)| gate),
        _ => None,
    };
    let mut fault = b.always;
    if fault.is_none() {
        if let Some(next) = b.next.as_mut() {
            if next.method.as_ref().is_none_or(|m| m == method) {
                if next.skip > 0 {
                    next.skip -= 1;
                } else {
                    fault = Some(next.fault);
                    next.n -= 1;
                    if next.n == 0 {
                        b.next = None;
                    }
                }
            }
        }
    }
    if fault.is_none() {
        if let Some((p, f)) = b.random {
            if rand::rng().random_bool(p) {
                fault = Some(f);
            }
        }
    }
    if fault.is_none() {
        fault = b
            .random_also
            .iter()
            .filter(|(_, only, _)| only.as_ref().is_none_or(|m| m == method))
            .find(|(p, _, _)| rand::rng().random_bool(*p))
            .map(|(_, _, f)| *f);
    }
    if let Some(f) = fault {
        let kind = match f {
            Fault::OwnAnswer { .. } => "OwnAnswer".to_owned(),
            Fault::WrongClock { .. } => "WrongClock".to_owned(),
            other => format!("{other:?}"),
        };
        *b.faults.entry(kind).or_default() += 1;
    }
    let latency = match &b.latency_only_for {
        Some(only) if only != method => Latency::None,
        _ => b.latency,
    };
    Plan {
        latency,
        fault,
        strip: b.strip_conditions,
        strip_date: b.strip_date,
        aws: b.aws,
        held,
    }
}

/// A hyper service error closes the connection without an answer: how a reset looks here.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fault proxy")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<Behaviour>>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let Plan {
        latency,
        fault,
        strip,
        strip_date,
        aws,
        held,
    } = decide(&state, req.method());
    match fault {
        Some(Fault::SlowDown) => return Ok(s3_error(StatusCode::SERVICE_UNAVAILABLE, "SlowDown")),
        Some(Fault::InternalError) => {
            return Ok(s3_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError"))
        }
        Some(Fault::Reset) => return Err(Dropped),
        Some(Fault::OwnAnswer {
            status,
            date_offset_secs,
        }) => {
            let status = StatusCode::from_u16(status).expect("a valid status");
            let mut response = s3_error(status, status.canonical_reason().unwrap_or("Error"));
            response
                .headers_mut()
                .insert(hyper::header::DATE, wrong_date(date_offset_secs));
            return Ok(response);
        }
        Some(Fault::DropResponse | Fault::WrongClock { .. }) | None => {}
    }
    let (mut parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = format!("{upstream}{path}").parse().unwrap();
    let object_url = format!("{upstream}{}", parts.uri.path());
    let conditional_put = (parts.method == hyper::Method::PUT)
        .then(|| {
            if parts.headers.contains_key(hyper::header::IF_MATCH) {
                Some(Condition::IfMatch)
            } else if parts.headers.contains_key(hyper::header::IF_NONE_MATCH) {
                Some(Condition::IfNoneMatch)
            } else {
                None
            }
        })
        .flatten();
    let probe = client.clone();
    // The body is re-sent whole, with its length.
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    if strip {
        parts.headers.remove(hyper::header::IF_NONE_MATCH);
        parts.headers.remove(hyper::header::IF_MATCH);
    }
    // Once sent, a request cannot be called back: it travels (and is delayed) in a task of its
    // own, so a client that gives up waiting does not stop it from reaching S3 late.
    let held_before = held.clone().filter(|g| g.before);
    let in_flight = tokio::spawn(async move {
        if let Some(gate) = held_before {
            gate.pass().await;
        }
        match latency {
            Latency::None => {}
            Latency::Fixed(d) => tokio::time::sleep(d).await,
            Latency::UpTo(d) => {
                let ms = rand::rng().random_range(0..=d.as_millis() as u64);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        let response = client
            .request(Request::from_parts(parts, Full::new(body)))
            .await
            .map_err(|_| Dropped)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
        Ok::<_, Dropped>(Response::from_parts(parts, Full::new(body)))
    });
    let mut response = in_flight.await.map_err(|_| Dropped)??;
    if let Some(gate) = held.filter(|g| !g.before) {
        gate.pass().await;
    }
    if fault == Some(Fault::DropResponse) {
        return Err(Dropped);
    }
    if strip_date {
        response.headers_mut().remove(hyper::header::DATE);
    }
    if let Some(Fault::WrongClock { date_offset_secs }) = fault {
        response
            .headers_mut()
            .insert(hyper::header::DATE, wrong_date(date_offset_secs));
    }
    if let (Some(shape), Some(condition)) = (aws, conditional_put) {
        if response.status() == StatusCode::PRECONDITION_FAILED {
            let missing = condition == Condition::IfMatch && !exists(&probe, &object_url).await?;
            let answer = match (missing, shape) {
                (true, _) => Some((StatusCode::NOT_FOUND, "NoSuchKey")),
                (false, AwsAnswers::Conflicts) => {
                    Some((StatusCode::CONFLICT, "ConditionalRequestConflict"))
                }
                (false, AwsAnswers::MissingKey) => None,
            };
            if let Some((status, code)) = answer {
                *state
                    .lock()
                    .unwrap()
                    .faults
                    .entry(code.to_owned())
                    .or_default() += 1;
                let (mut parts, _) = response.into_parts();
                let reshaped = s3_error(status, code);
                parts.status = status;
                // The body is new: its length is counted again.
                parts.headers.remove(hyper::header::CONTENT_LENGTH);
                response = Response::from_parts(parts, reshaped.into_body());
            }
        }
    }
    Ok(response)
}

/// A `Date` header from a clock `offset_secs` away from this machine's.
#[allow(clippy::disallowed_methods)] // the proxy stands for another host, with a clock of its own
fn wrong_date(offset_secs: i64) -> hyper::header::HeaderValue {
    let (now, by) = (
        std::time::SystemTime::now(),
        Duration::from_secs(offset_secs.unsigned_abs()),
    );
    let date = if offset_secs >= 0 { now + by } else { now - by };
    httpdate::fmt_http_date(date).parse().unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    IfMatch,
    IfNoneMatch,
}

/// Whether the object at `url` exists upstream now (SeaweedFS answers anonymous requests).
async fn exists(client: &Client<HttpConnector, Full<Bytes>>, url: &str) -> Result<bool, Dropped> {
    let head = Request::head(url).body(Full::new(Bytes::new())).unwrap();
    let status = client.request(head).await.map_err(|_| Dropped)?.status();
    Ok(status != StatusCode::NOT_FOUND)
}

fn s3_error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the fault proxy</Message></Error>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A plain TCP relay to the S3 server that a test can cut, to make the store go away (its port
/// closed, its connections dropped) and come back; below HTTP, where the [`FaultProxy`] works.
pub struct Relay {
    /// The loopback port to point the S3 client at.
    pub port: u16,
    target: String,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut relay = Self {
            port,
            target,
            task: None,
        };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when this task is aborted) cuts every open connection too.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        }));
    }

    /// Closes the port and drops every open connection.
    pub async fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Listens on the same port again.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}
