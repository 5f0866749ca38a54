//! `s3lock run KEY -- CMD ARGS…`: run a command while holding a lock, or one of a semaphore's
//! permits (`--semaphore N`), or a read-write lock (`--shared`, `--exclusive`); and the machinery
//! of `s3lock elect NAME -- CMD ARGS…`, which runs one while leading an election. Whatever is
//! held, the same runner below drives it through [`Hold`].
//!
//! It acquires (waiting if asked, saying for whom), starts the command in its own process group
//! with `S3LOCK_KEY`, `S3LOCK_OWNER` and `S3LOCK_FENCING_TOKEN` in its environment, renews every
//! third of the lease in the background, releases when the command exits, and exits with the
//! command's status.
//!
//! The holder token is *not* given to the command: the runner alone renews and releases, and a
//! command that could release the lock under the runner would break the promise below.
//!
//! The promise: the command never runs past the lease. After every successful renewal the runner
//! knows a lower bound of the lease's end (the time it *sent* the renewal plus the
//! `ttl_remaining_ms` the server answered, which the server already counts conservatively). If
//! renewals keep failing, the whole process group gets SIGTERM at `end - margin - grace` and
//! SIGKILL at `end - margin`, so it is gone before anyone else can be granted the lock. The runner
//! then exits with [`exit::LEASE_LOST`]. A refused renewal (the lock was broken or taken) stops the
//! command at once.
//!
//! SIGINT, SIGTERM and SIGHUP sent to the runner are forwarded to the command's process group;
//! the runner keeps renewing until the command exits, then still releases.

use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::time::Instant;

use super::args::RunArgs;
use super::cli::{client, exit, exit_code};
use super::hold::{in_the_way, Grant, Hold};
use super::{ClientError, LockClient};
use crate::backoff::Backoff;

/// The longest single server-side wait asked for while waiting for the lock, so progress can be
/// shown and a server with a small `S3LOCK_MAX_WAIT` is not asked for more than it allows.
const WAIT_CHUNK: f64 = 5.0;

/// What the renewer knows about the lease.
#[derive(Debug, Clone, Copy)]
enum Lease {
    /// Held at least until this instant.
    Until(Instant),
    /// The server refused a renewal: the lock is no longer ours.
    Lost,
}

/// How to run the command, for `run` and `elect` alike.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub owner: Option<String>,
    pub ttl: u64,
    pub wait: f64,
    pub kill_grace: f64,
    pub command: Vec<String>,
}

pub async fn main(args: RunArgs) -> ExitCode {
    let client = client(&args.client);
    let hold = args.hold();
    let options = RunOptions {
        owner: args.owner,
        ttl: args.ttl,
        wait: args.wait,
        kill_grace: args.kill_grace,
        command: args.command,
    };
    ExitCode::from(run(&client, &hold, &options).await)
}

/// Takes `hold`, runs the command while it is held, gives it up when the command exits, and
/// returns the exit code (the command's, or one of [`exit`]'s).
pub async fn run(client: &LockClient, hold: &Hold, args: &RunOptions) -> u8 {
    let (tool, what) = (hold.tool(), hold.what());
    let (view, sent) = match acquire(client, hold, args).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{tool}: {e}");
            return exit_code(&e);
        }
    };
    let token = view.token.clone();
    let ttl = Duration::from_secs(args.ttl);
    let grace = Duration::from_secs_f64(args.kill_grace.max(0.0)).min(ttl / 4);
    // Time for the process group to die after SIGKILL and for clocks to disagree a little.
    let margin = (ttl / 10).clamp(Duration::from_millis(200), Duration::from_secs(2));
    let (took, numbered) = match hold {
        Hold::Election { .. } => ("leading", "term"),
        _ => ("acquired", "fencing token"),
    };
    eprintln!(
        "{tool}: {took} {what} as {} ({numbered} {}) until {}; starting {:?}",
        view.holder,
        view.fencing_token,
        expires(&view),
        args.command.join(" "),
    );

    // Taken before the command starts: a signal that arrives once it runs is then always
    // forwarded to it, never left to its default action, which would kill this runner and leave
    // the lock held for its whole lease.
    let (mut sigint, mut sigterm, mut sighup) = (
        signal(SignalKind::interrupt()).expect("SIGINT handler"),
        signal(SignalKind::terminate()).expect("SIGTERM handler"),
        signal(SignalKind::hangup()).expect("SIGHUP handler"),
    );
    let mut child = match tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .envs(hold.env(&view))
        // Its own process group, so a stop reaches the command's own children too.
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{tool}: cannot start {:?}: {e}", args.command[0]);
            release(client, hold, &token).await;
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    let group = Pid::from_raw(child.id().expect("a just-spawned child has a pid") as i32);

    // The grant was computed after the request was sent, so `sent + ttl_remaining` is a lower
    // bound of the lease's end.
    let first_end = sent + Duration::from_millis(view.ttl_remaining_ms.max(0) as u64);
    let (tx, mut lease) = watch::channel(Lease::Until(first_end));
    let renewer = tokio::spawn(renew(
        client.clone(),
        hold.clone(),
        token.clone(),
        args.ttl,
        tx,
    ));

    let mut deadlines = Deadlines::from(*lease.borrow(), grace, margin);
    let mut lost = false;
    let mut termed = false;
    let mut killed = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = sigint.recv() => forward(group, Signal::SIGINT),
            _ = sigterm.recv() => forward(group, Signal::SIGTERM),
            _ = sighup.recv() => forward(group, Signal::SIGHUP),
            changed = lease.changed() => {
                if changed.is_ok() {
                    deadlines = Deadlines::from(*lease.borrow(), grace, margin);
                }
            }
            _ = tokio::time::sleep_until(deadlines.term), if !termed => {
                lost = true;
                termed = true;
                eprintln!(
                    "{tool}: the lease on {what} could not be renewed and ends in {:.1} s: \
                     sending SIGTERM to the command (SIGKILL in {:.1} s)",
                    deadlines.end.saturating_duration_since(Instant::now()).as_secs_f64(),
                    deadlines.kill.saturating_duration_since(Instant::now()).as_secs_f64(),
                );
                forward(group, Signal::SIGTERM);
            }
            _ = tokio::time::sleep_until(deadlines.kill), if !killed => {
                lost = true;
                killed = true;
                eprintln!("{tool}: the command is still running; sending SIGKILL");
                forward(group, Signal::SIGKILL);
            }
        }
    };
    renewer.abort();
    let code = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code()
                .map(|c| c as u8)
                .or_else(|| s.signal().map(|sig| 128 + sig as u8))
                .unwrap_or(exit::ERROR)
        }
        Err(e) => {
            eprintln!("{tool}: waiting for the command failed: {e}");
            exit::ERROR
        }
    };
    if lost {
        // The lease may still be ours for a moment: try once to hand the lock back early.
        let _ = tokio::time::timeout(Duration::from_secs(2), hold.give_up(client, &token)).await;
        eprintln!("{tool}: the command was stopped because the lease on {what} was lost");
        return exit::LEASE_LOST;
    }
    release(client, hold, &token).await;
    code
}

/// When to stop the command for a lease that ends at `end`.
struct Deadlines {
    end: Instant,
    term: Instant,
    kill: Instant,
}

impl Deadlines {
    fn from(lease: Lease, grace: Duration, margin: Duration) -> Self {
        let now = Instant::now();
        match lease {
            Lease::Until(end) => {
                let kill = end.checked_sub(margin).unwrap_or(now).max(now);
                let term = kill.checked_sub(grace).unwrap_or(now).max(now);
                Self { end, term, kill }
            }
            // Already gone: stop now, and do not wait long for a clean exit.
            Lease::Lost => Self {
                end: now,
                term: now,
                kill: now + grace,
            },
        }
    }
}

/// Takes what `hold` says, waiting up to `--wait` seconds and saying what is in the way
/// meanwhile. Returns the grant with the instant its request was sent.
async fn acquire(
    client: &LockClient,
    hold: &Hold,
    args: &RunOptions,
) -> Result<(Grant, Instant), ClientError> {
    let (tool, what) = (hold.tool(), hold.what());
    let deadline = Instant::now() + Duration::from_secs_f64(args.wait.max(0.0));
    // What was in the way at the last refusal, said again only when it changes.
    let mut last_refusal: Option<String> = None;
    // Lowered to 0 (and polled from here instead) if the server allows only shorter waits.
    let mut chunk = WAIT_CHUNK;
    // Polled every second when the server does the waiting no longer.
    let mut poll = Backoff::constant(Duration::from_secs(1));
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        let wait = if last_refusal.is_none() {
            0.0
        } else {
            left.min(chunk)
        };
        let sent = Instant::now();
        let refused = match hold
            .take(client, args.owner.as_deref(), args.ttl, wait)
            .await
        {
            Ok(view) => return Ok((view, sent)),
            Err(ClientError::Problem {
                status: 400,
                ref detail,
                ..
            }) if wait > 0.0 && detail.starts_with("wait:") => {
                chunk = 0.0;
                continue;
            }
            Err(e) => e,
        };
        // Held, full, or kept for the lock-delay after a lease that ran out unreleased: waited
        // for alike. Anything else (a limit other processes disagree with) is not.
        let why = match in_the_way(&what, &refused) {
            Some(why) if left > 0.0 => why,
            _ => return Err(refused),
        };
        if last_refusal.as_ref() != Some(&why) {
            eprintln!("{tool}: {why}; waiting up to {left:.0} s more");
        }
        last_refusal = Some(why);
        if chunk == 0.0 {
            let pause = poll.next_pause().min(Duration::from_secs_f64(left));
            tokio::time::sleep(pause).await;
        }
    }
}

/// Renews every third of the lease; after a failure, retries every tenth of it (at most 1 s).
async fn renew(client: LockClient, hold: Hold, token: String, ttl: u64, tx: watch::Sender<Lease>) {
    let (tool, what) = (hold.tool(), hold.what());
    let period = Duration::from_secs(ttl) / 3;
    let mut retry = Backoff::constant((Duration::from_secs(ttl) / 10).min(Duration::from_secs(1)));
    let mut next = Instant::now() + period;
    // Failures in a row; only some are reported, so a long outage does not flood stderr.
    let mut failures = 0u32;
    loop {
        tokio::time::sleep_until(next).await;
        let sent = Instant::now();
        match tokio::time::timeout(period, hold.renew(&client, &token, ttl)).await {
            Ok(Ok(view)) => {
                let end = sent + Duration::from_millis(view.ttl_remaining_ms.max(0) as u64);
                let _ = tx.send(Lease::Until(end));
                if failures > 0 {
                    eprintln!("{tool}: renewed {what} again after {failures} failures");
                }
                failures = 0;
                next = Instant::now() + period;
            }
            Ok(Err(
                e @ (ClientError::NotHolder { .. }
                | ClientError::NotFound
                | ClientError::WriteUnconfirmed { .. }),
            )) => {
                eprintln!("{tool}: the lock on {what} was lost: {e}; stopping the command");
                let _ = tx.send(Lease::Lost);
                return;
            }
            Ok(Err(e)) => {
                failures += 1;
                if failures % 10 == 1 {
                    eprintln!("{tool}: renewing {what} failed ({failures}x): {e}; retrying");
                }
                next = Instant::now() + retry.next_pause();
            }
            Err(_) => {
                failures += 1;
                if failures % 10 == 1 {
                    eprintln!("{tool}: renewing {what} timed out ({failures}x); retrying");
                }
                next = Instant::now() + retry.next_pause();
            }
        }
    }
}

/// Releases, trying a few times; if it cannot, says when the lock frees itself.
async fn release(client: &LockClient, hold: &Hold, token: &str) {
    let (tool, what) = (hold.tool(), hold.what());
    let mut backoff = Backoff::constant(Duration::from_secs(1));
    for attempt in 0..3 {
        if attempt > 0 {
            backoff.wait().await;
        }
        match tokio::time::timeout(Duration::from_secs(10), hold.give_up(client, token)).await {
            // Released, or lost: either way nothing is left to do.
            Ok(Ok(_)) | Ok(Err(ClientError::WriteUnconfirmed { .. })) => return,
            Ok(Err(e @ (ClientError::NotHolder { .. } | ClientError::NotFound))) => {
                eprintln!("{tool}: releasing {what}: {e}");
                return;
            }
            Ok(Err(e)) => eprintln!("{tool}: releasing {what} failed: {e}"),
            Err(_) => eprintln!("{tool}: releasing {what} timed out"),
        }
    }
    eprintln!("{tool}: could not release {what}; it frees itself when its lease ends");
}

fn forward(group: Pid, sig: Signal) {
    // ESRCH: the group is already gone, which is what we wanted.
    let _ = killpg(group, sig);
}

fn expires(v: &Grant) -> String {
    v.expires_at
        .as_ref()
        .map(crate::wire::format_seed_time)
        .unwrap_or_else(|| "-".into())
}
