//! The client subcommands (`acquire`, `renew`, `release`, `status`, `list`, `break`): one HTTP
//! call each, a line for a person or JSON for a program, and an exit code a script can branch on.

use secrecy::ExposeSecret;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use super::args::{ClientArgs, ClientCommand as Command, HealthcheckArgs, WatchArgs};
use super::{ClientError, LockClient};
use crate::wire::format_seed_time;
use crate::wire::HolderToken;
use crate::wire::LockView;

/// Exit codes, the same for every client subcommand (and for `run` before its command starts).
pub mod exit {
    /// Done: acquired, renewed, released, shown.
    pub const OK: u8 = 0;
    /// Any other failure: the server is unreachable, answered 5xx, or refused the input.
    pub const ERROR: u8 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: u8 = 2;
    /// Another owner holds the lock, or no permit of the semaphore is left (acquire, and `run`
    /// before starting its command).
    pub const HELD: u8 = 3;
    /// The holder token does not hold the lock (renew, release), or the lock never existed.
    pub const NOT_HOLDER: u8 = 4;
    /// The server refused the auth token: missing or unknown (401) or not allowed (403).
    pub const AUTH: u8 = 5;
    /// `run` only: the lease could not be renewed and the command was stopped before it ran out.
    pub const LEASE_LOST: u8 = 6;
}

/// The client the flags describe. TLS files that cannot be used end the process here, with the
/// setting named: every subcommand needs its client before it can do anything else.
pub fn client(args: &ClientArgs) -> LockClient {
    match args.tls.load() {
        Ok(tls) => LockClient::with_tls(&args.url, args.auth_token.clone(), &tls),
        Err(e) => {
            eprintln!("s3lock: {e}");
            std::process::exit(exit::ERROR.into());
        }
    }
}

/// The exit code for a refusal or failure.
pub fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::Held { .. }
        | ClientError::Delayed { .. }
        | ClientError::SemaphoreFull { .. }
        | ClientError::TooManyHolders { .. } => exit::HELD,
        ClientError::NotHolder { .. }
        | ClientError::NotFound
        | ClientError::WriteUnconfirmed { .. } => exit::NOT_HOLDER,
        ClientError::Problem {
            status: 401 | 403, ..
        } => exit::AUTH,
        // The processes disagree on the limit: a mistake to fix, not a wait to sit out.
        ClientError::LimitMismatch { .. }
        | ClientError::Problem { .. }
        | ClientError::Transport(_)
        | ClientError::Unreachable(_) => exit::ERROR,
    }
}

/// Runs one client subcommand (not `serve`, not `run`).
pub async fn main(command: Command) -> ExitCode {
    let code = match command {
        Command::Acquire(a) => {
            let token = a.token.as_ref().map(|t| t.expose_secret());
            let r = client(&a.client)
                .acquire_holding(&a.key, a.owner.as_deref(), token, a.ttl, a.wait)
                .await;
            report(&a.client, r, |v| {
                eprintln!(
                    "acquired {} as {} (fencing token {}) until {}",
                    v.key,
                    v.owner.as_deref().unwrap_or_default(),
                    v.fencing_token,
                    until(v)
                );
                // The holder token alone on stdout, so `TOKEN=$(s3lock acquire KEY)` works.
                println!(
                    "{}",
                    v.token
                        .as_ref()
                        .map(HolderToken::expose)
                        .unwrap_or_default()
                );
            })
        }
        Command::Renew(a) => {
            let r = client(&a.client)
                .renew(&a.key, a.token.expose_secret(), a.ttl)
                .await;
            report(&a.client, r, |v| {
                println!("renewed {} until {}", v.key, until(v))
            })
        }
        Command::Release(a) => {
            let r = client(&a.client)
                .release(&a.key, a.token.expose_secret())
                .await;
            if let Err(ClientError::WriteUnconfirmed { .. }) = r {
                // The token no longer holds the lock either way: the release is done.
                eprintln!(
                    "released {}, or lost: the lock changed before the release could be \
                     confirmed; nothing to do",
                    a.key
                );
                exit::OK
            } else {
                report(&a.client, r, |v| println!("released {}", v.key))
            }
        }
        Command::Status(a) => {
            let r = client(&a.client).status(&a.key, a.owner.as_deref()).await;
            report(&a.client, r, |v| println!("{}", describe(v)))
        }
        Command::Watch(a) => watch(&a).await,
        Command::List(a) => {
            let r = client(&a.client)
                .list(&a.prefix)
                .await
                .map(|locks| List { locks });
            report(&a.client, r, |l| {
                for v in &l.locks {
                    println!("{}", describe(v));
                }
            })
        }
        Command::Break(a) => {
            let r = client(&a.client)
                .break_lock(&a.key, a.reason.as_deref())
                .await;
            report(&a.client, r, |v| {
                println!("broke {} (fencing token now {})", v.key, v.fencing_token)
            })
        }
        Command::Healthcheck(a) => healthcheck(&a).await,
    };
    ExitCode::from(code)
}

/// `s3lock healthcheck`: 0 when /healthz answers 2xx within the timeout, 1 otherwise (Docker
/// reads any other code as unhealthy too, and reserves 2).
async fn healthcheck(args: &HealthcheckArgs) -> u8 {
    let url = args.url();
    let timeout = Duration::try_from_secs_f64(args.timeout).unwrap_or(Duration::from_secs(2));
    let tls = match args.tls.load() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("s3lock healthcheck: {e}");
            return exit::ERROR;
        }
    };
    let mut builder = tls.apply(reqwest::Client::builder().timeout(timeout));
    if args.server_tls_cert.is_some() {
        // Loopback is asked by address, which the server's certificate was not issued for; and
        // without --ca-cert nothing says which CA issued it. Nothing secret is sent, and only
        // the status is read: see HealthcheckArgs.
        builder = match args.tls.ca_cert {
            Some(_) => builder.danger_accept_invalid_hostnames(true),
            None => builder.danger_accept_invalid_certs(true),
        };
    }
    let answer = match builder.build() {
        Ok(http) => http.get(&url).send().await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(r) if r.status().is_success() => exit::OK,
        Ok(r) => {
            eprintln!("s3lock healthcheck: {url} answered {}", r.status());
            exit::ERROR
        }
        Err(e) => {
            eprintln!("s3lock healthcheck: {url}: {e}");
            exit::ERROR
        }
    }
}

#[derive(Serialize)]
struct List {
    locks: Vec<LockView>,
}

/// Prints the lock's state, then each change, until `--changes` of them or an error.
async fn watch(a: &WatchArgs) -> u8 {
    let client = client(&a.client);
    let mut view = match client.status(&a.key, None).await {
        Ok(v) => v,
        Err(e) => return report(&a.client, Err::<LockView, _>(e), |_| {}),
    };
    report(&a.client, Ok::<_, ClientError>(&view), |v| {
        println!("{}", describe(v))
    });
    let mut seen = 0;
    while a.changes.is_none_or(|n| seen < n) {
        match client.watch(&a.key, view.index, a.wait).await {
            Ok(next) if next.index != view.index => {
                seen += 1;
                report(&a.client, Ok::<_, ClientError>(&next), |v| {
                    println!("{}", describe(v))
                });
                view = next;
            }
            Ok(_) => {} // no change within the wait: ask again
            Err(e) => return report(&a.client, Err::<LockView, _>(e), |_| {}),
        }
    }
    exit::OK
}

fn report<T: Serialize>(
    args: &ClientArgs,
    result: Result<T, ClientError>,
    human: impl FnOnce(&T),
) -> u8 {
    match result {
        Ok(v) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(&v).expect("a lock view serialises")
                );
            } else {
                human(&v);
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("s3lock: {e}");
            exit_code(&e)
        }
    }
}

fn until(v: &LockView) -> String {
    v.expires_at
        .as_ref()
        .map(format_seed_time)
        .unwrap_or_else(|| "-".into())
}

fn describe(v: &LockView) -> String {
    match (&v.owner, v.locked) {
        (Some(owner), true) => format!(
            "{}: held by {owner} until {} (fencing token {})",
            v.key,
            until(v),
            v.fencing_token
        ),
        (Some(owner), false) if v.ttl_remaining_ms > 0 => format!(
            "{}: held by {owner} (you) until {} (fencing token {})",
            v.key,
            until(v),
            v.fencing_token
        ),
        _ => format!("{}: free (fencing token {})", v.key, v.fencing_token),
    }
}
