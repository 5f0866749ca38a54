//! The tests' fault proxy (`tests/support/proxy.rs`) as a process of its own, for `scripts/soak`:
//! it sits between one s3lock replica and the S3 server and injects the faults its flags ask for
//! until SIGTERM or Ctrl-C, then prints how many requests it saw and what it injected.
//!
//! ```sh
//! cargo run --example fault_proxy -- --listen 127.0.0.1:9000 --upstream http://127.0.0.1:8333 \
//!     --drop-response 0.01 --drop-response-method PUT --own-answer 0.02:503:30 --latency-up-to 20
//! ```
//!
//! The same source as the tests' proxy, so the soak exercises exactly the faults the tests do.

#[path = "../tests/support/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::time::Duration;

use clap::Parser;
use proxy::{Fault, FaultProxy, Latency};

#[derive(Debug, Parser)]
#[command(about = "A fault-injecting HTTP proxy in front of an S3 server (loopback only)")]
struct Args {
    /// Where to listen; a loopback address.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// The S3 server, e.g. http://127.0.0.1:8333.
    #[arg(long)]
    upstream: String,
    /// Share of requests forwarded to S3 whose answer is then dropped (the write landed, the
    /// caller never learns).
    #[arg(long, value_parser = probability)]
    drop_response: Option<f64>,
    /// Only requests of this method (PUT, GET...) lose their answer.
    #[arg(long, requires = "drop_response")]
    drop_response_method: Option<String>,
    /// P:STATUS:DATE_OFFSET_SECS: a share P of requests is answered by the proxy itself with
    /// STATUS and a Date moved by DATE_OFFSET_SECS (a load balancer with a wrong clock).
    /// Repeatable.
    #[arg(long, value_parser = own_answer)]
    own_answer: Vec<(f64, Fault)>,
    /// A share of requests answered 503 SlowDown without being forwarded.
    #[arg(long, value_parser = probability)]
    slow_down: Option<f64>,
    /// Each forwarded request is delayed by a random time up to this many milliseconds.
    #[arg(long)]
    latency_up_to: Option<u64>,
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{s} is not a probability between 0 and 1"))
    }
}

fn own_answer(s: &str) -> Result<(f64, Fault), String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [p, status, offset] = parts[..] else {
        return Err(format!("{s}: expected P:STATUS:DATE_OFFSET_SECS"));
    };
    let status: u16 = status.parse().map_err(|e| format!("{status}: {e}"))?;
    if !(100..=599).contains(&status) {
        return Err(format!("{status} is not an HTTP status"));
    }
    let date_offset_secs = offset.parse().map_err(|e| format!("{offset}: {e}"))?;
    Ok((
        probability(p)?,
        Fault::OwnAnswer {
            status,
            date_offset_secs,
        },
    ))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // The proxy forwards whatever reaches it to `upstream`: never offer that beyond this machine.
    assert!(
        args.listen.ip().is_loopback(),
        "--listen must be a loopback address"
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {}: {e}", args.listen));
    let proxy = FaultProxy::start_on(listener, &args.upstream);
    if let Some(p) = args.drop_response {
        let method = args.drop_response_method.as_deref();
        proxy.add_random_fault(p, method, Fault::DropResponse);
    }
    for (p, fault) in &args.own_answer {
        proxy.add_random_fault(*p, None, *fault);
    }
    if let Some(p) = args.slow_down {
        proxy.add_random_fault(p, None, Fault::SlowDown);
    }
    if let Some(ms) = args.latency_up_to {
        proxy.set_latency(Latency::UpTo(Duration::from_millis(ms)));
    }
    eprintln!(
        "fault proxy: {} -> {}",
        proxy.endpoint,
        args.upstream.trim_end_matches('/')
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let faults: Vec<String> = proxy
        .faults_injected()
        .into_iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    println!(
        "fault proxy {}: {} requests, faults injected: {}",
        proxy.endpoint,
        proxy.total(),
        if faults.is_empty() {
            "none".to_owned()
        } else {
            faults.join(", ")
        }
    );
}
