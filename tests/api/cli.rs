//! The `s3lock` binary's client subcommands and `run`, against the real app: exit codes, and
//! a command killed before its lease can run out when renewal is blocked.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use s3lock::clock::{Clock, SystemClock};
use s3lock::lock::LockDocument;
use serde_json::{json, Value};

use crate::auth::{tokens_file, ADMIN, CI};
use crate::helpers::{json_with, TestApp, PREFIX};

const BIN: &str = env!("CARGO_BIN_EXE_s3lock");

/// Runs the CLI against `url` with `args`; no auth token unless `env` gives one.
pub(crate) async fn cli(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env("S3LOCK_URL", url)
        .env_remove("S3LOCK_AUTH_TOKEN")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI finishes")
        .unwrap()
}

pub(crate) fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub(crate) fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn each_client_subcommand_exits_with_the_code_of_its_outcome() {
    let app = TestApp::memory().await;
    let url = app.base.as_str();
    let got = cli(
        url,
        &[
            "acquire", "jobs/x", "--owner", "alice", "--ttl", "60", "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(code(&got), 0, "{got:?}");
    let view = stdout_json(&got);
    let token = view["token"].as_str().unwrap().to_owned();

    let held = cli(url, &["acquire", "jobs/x", "--owner", "bob"], &[]).await;
    assert_eq!(code(&held), 3, "{held:?}");
    assert!(
        String::from_utf8_lossy(&held.stderr).contains("held by alice"),
        "{held:?}"
    );

    for action in ["renew", "release"] {
        let out = cli(url, &[action, "jobs/x", "--token", "not-the-token"], &[]).await;
        assert_eq!(code(&out), 4, "{action}: {out:?}");
    }
    let never = cli(url, &["release", "never", "--token", "t"], &[]).await;
    assert_eq!(code(&never), 4, "{never:?}");

    let renewed = cli(
        url,
        &[
            "renew", "jobs/x", "--token", &token, "--ttl", "90", "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(code(&renewed), 0, "{renewed:?}");
    assert_eq!(stdout_json(&renewed)["expire"], 90);
    let status = cli(url, &["status", "jobs/x", "--json"], &[]).await;
    assert_eq!(stdout_json(&status)["locked"], true);
    assert!(stdout_json(&status).get("token").is_none());
    let listed = cli(url, &["list", "--prefix", "jobs/", "--json"], &[]).await;
    assert_eq!(stdout_json(&listed)["locks"][0]["owner"], "alice");
    let released = cli(url, &["release", "jobs/x", "--token", &token], &[]).await;
    assert_eq!(code(&released), 0, "{released:?}");

    // Acquire prints the holder token alone on stdout, for `TOKEN=$(s3lock acquire KEY)`.
    let plain = cli(url, &["acquire", "jobs/y"], &[]).await;
    assert_eq!(code(&plain), 0);
    let printed = String::from_utf8(plain.stdout).unwrap();
    assert_eq!(printed.trim().len(), 36, "{printed:?}");

    let bad = cli(url, &["acquire", "jobs/z", "--ttl", "0"], &[]).await;
    assert_eq!(code(&bad), 1, "a refused input is an error: {bad:?}");
    let usage = cli(url, &["acquire"], &[]).await;
    assert_eq!(code(&usage), 2, "{usage:?}");

    let down = crate::helpers::support::closed_url();
    let unreachable = cli(&down, &["status", "k"], &[]).await;
    assert_eq!(code(&unreachable), 1, "{unreachable:?}");
}

#[tokio::test]
async fn healthcheck_exits_0_when_the_server_on_the_listen_address_answers_and_1_otherwise() {
    // /healthz stays open on a server with auth, so the check needs no token.
    let app = TestApp::memory_with_auth(&tokens_file()).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let port = addr.rsplit(':').next().unwrap();
    // The image sets S3LOCK_LISTEN=0.0.0.0:8080: the check asks loopback on that port.
    for listen in [addr.clone(), format!("0.0.0.0:{port}")] {
        let up = cli("", &["healthcheck"], &[("S3LOCK_LISTEN", &listen)]).await;
        assert_eq!(code(&up), 0, "{listen}: {up:?}");
    }

    let down = crate::helpers::support::closed_url();
    let down = down.trim_start_matches("http://");
    let refused = cli("", &["healthcheck", "--listen", down], &[]).await;
    assert_eq!(code(&refused), 1, "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("http://{down}/healthz")),
        "{stderr}"
    );

    // Something answers, but not 2xx.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sick = listener.local_addr().unwrap().to_string();
    let responder = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf).await.unwrap();
        conn.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    });
    let unhealthy = cli("", &["healthcheck", "--listen", &sick], &[]).await;
    assert_eq!(code(&unhealthy), 1, "{unhealthy:?}");
    assert!(
        String::from_utf8_lossy(&unhealthy.stderr).contains("503"),
        "{unhealthy:?}"
    );
    responder.await.unwrap();
}

#[tokio::test]
async fn the_cli_sends_the_auth_token_and_a_refused_one_exits_5() {
    let app = TestApp::memory_with_auth(&tokens_file()).await;
    let url = app.base.as_str();
    let none = cli(url, &["status", "jobs/x"], &[]).await;
    assert_eq!(code(&none), 5, "{none:?}");
    let outside = cli(url, &["status", "other/x"], &[("S3LOCK_AUTH_TOKEN", CI)]).await;
    assert_eq!(code(&outside), 5, "{outside:?}");
    let ok = cli(url, &["status", "jobs/x", "--auth-token", CI], &[]).await;
    assert_eq!(code(&ok), 0, "{ok:?}");
    let not_admin = cli(url, &["break", "jobs/x"], &[("S3LOCK_AUTH_TOKEN", CI)]).await;
    assert_eq!(code(&not_admin), 5, "{not_admin:?}");
}

#[tokio::test]
async fn run_gives_the_command_the_fencing_token_releases_and_exits_with_its_status() {
    let app = TestApp::memory().await;
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let script = format!(
        "echo \"$S3LOCK_KEY $S3LOCK_FENCING_TOKEN ${{S3LOCK_LOCK_TOKEN:-none}}\" > {}; exit 7",
        seen.display()
    );
    let out = cli(
        &app.base,
        &["run", "jobs/r", "--ttl", "30", "--", "sh", "-c", &script],
        &[],
    )
    .await;
    assert_eq!(code(&out), 7, "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap().trim(),
        "jobs/r 1 none"
    );
    let after = json_with(app.status("jobs/r").await, 200).await;
    assert_eq!(
        after["owner"],
        Value::Null,
        "released after the command exited: {after}"
    );

    // Held by someone else and no wait: the command never starts.
    json_with(app.acquire("jobs/r", json!({"owner": "alice"})).await, 200).await;
    std::fs::remove_file(&seen).unwrap();
    let held = cli(
        &app.base,
        &["run", "jobs/r", "--", "sh", "-c", &script],
        &[],
    )
    .await;
    assert_eq!(code(&held), 3, "{held:?}");
    assert!(!seen.exists(), "the command ran without the lock");
}

/// The state letter of a process in /proc, `None` once it is gone (reaped).
pub(crate) fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

pub(crate) async fn read_pid(path: &Path) -> u32 {
    for _ in 0..500 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the command never started");
}

#[tokio::test]
async fn run_kills_a_command_that_outlives_its_lease_before_the_lease_can_expire() {
    let app = TestApp::memory().await;
    let store = app.store.clone();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    // The command ignores SIGTERM (and so do its children), so only SIGKILL stops it.
    let script = format!(
        "trap '' TERM; echo $$ > {}; while :; do sleep 0.05; done",
        pid_file.display()
    );
    let runner = {
        let base = app.base.clone();
        let args: Vec<String> = [
            "run",
            "jobs/long",
            "--ttl",
            "3",
            "--kill-grace",
            "0.5",
            "--",
            "sh",
            "-c",
            &script,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        tokio::spawn(async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&base, &refs, &[]).await
        })
    };
    let pid = read_pid(&pid_file).await;
    // Block renewal: the server goes away, so every renewal fails with a transport error.
    app.stop().await;

    // Watch the command until it is gone (or a zombie, dead but not yet reaped).
    let mut died_at = None;
    for _ in 0..2_000 {
        if matches!(process_state(pid), None | Some('Z')) {
            died_at = Some(SystemClock.now().latest);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let died_at = died_at.expect("the command was never stopped");
    let out = runner.await.unwrap();
    assert_eq!(code(&out), 6, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SIGKILL"),
        "{out:?}"
    );

    // The lease as the store last recorded it (its last successful renewal).
    let stored = store
        .get("default", &format!("{PREFIX}jobs/long"))
        .await
        .unwrap()
        .unwrap();
    let doc = LockDocument::from_bytes(&stored.body).unwrap();
    assert_eq!(doc.owner.as_deref().map(|o| !o.is_empty()), Some(true));
    let expires_at = doc.expires_at();
    assert!(
        died_at < expires_at,
        "the command died at {died_at}, after its lease ended at {expires_at}"
    );
}

#[tokio::test]
async fn run_stops_the_command_at_once_when_an_admin_breaks_its_lock() {
    let app = TestApp::memory_with_auth(&tokens_file()).await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 600", pid_file.display());
    let runner = {
        let base = app.base.clone();
        let script = script.clone();
        tokio::spawn(async move {
            cli(
                &base,
                &["run", "jobs/b", "--ttl", "3", "--", "sh", "-c", &script],
                &[("S3LOCK_AUTH_TOKEN", CI)],
            )
            .await
        })
    };
    read_pid(&pid_file).await;
    let broken = app
        .http
        .post(format!("{}/locks/jobs/b/break", app.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 200);
    // The next renewal (a second later) is refused: the command is stopped and run exits 6.
    let out = runner.await.unwrap();
    assert_eq!(code(&out), 6, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was lost"),
        "{out:?}"
    );
}

#[tokio::test]
async fn ctrl_c_reaches_the_command_and_the_lock_is_still_released() {
    let app = TestApp::memory().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    // The command exits 42 on SIGINT, so its status shows the signal got there.
    let script = format!(
        "trap 'exit 42' INT; echo $$ > {}; while :; do sleep 0.05; done",
        pid_file.display()
    );
    let mut runner = tokio::process::Command::new(BIN)
        .args(["run", "jobs/c", "--ttl", "30", "--", "sh", "-c", &script])
        .env("S3LOCK_URL", &app.base)
        .kill_on_drop(true)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    read_pid(&pid_file).await;
    let held = json_with(app.status("jobs/c").await, 200).await;
    assert_eq!(held["locked"], true);
    let runner_pid = nix::unistd::Pid::from_raw(runner.id().unwrap() as i32);
    nix::sys::signal::kill(runner_pid, nix::sys::signal::Signal::SIGINT).unwrap();
    // Its stderr is read as it comes, so a runner that writes much is never blocked on the pipe.
    let mut stderr = runner.stderr.take().unwrap();
    let said = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
        text
    });
    let status = tokio::time::timeout(Duration::from_secs(30), runner.wait()).await;
    let status = match status {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = runner.start_kill();
            panic!("run did not exit after Ctrl-C: {}", said.await.unwrap());
        }
    };
    let said = said.await.unwrap();
    assert_eq!(status.code(), Some(42), "{said}");
    let after = json_with(app.status("jobs/c").await, 200).await;
    assert_eq!(after["owner"], Value::Null, "released: {after}");
}

#[tokio::test]
async fn the_server_logs_one_json_object_per_line_with_log_format_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = tokio::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a log line in time")
        .unwrap()
        .expect("a log line");
    let line: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(line["message"].is_string(), "{line}");
    server.kill().await.unwrap();
}

#[tokio::test]
async fn the_server_writes_no_colour_codes_when_its_stdout_is_not_a_terminal() {
    // As under `docker compose logs` or `serve > file`: a pipe, not a terminal.
    let dir = tempfile::tempdir().unwrap();
    let mut server = tokio::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .env_remove("S3LOCK_LOG_FORMAT")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("s3lock is serving"))
    {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a log line in time")
            .unwrap()
            .unwrap_or_else(|| panic!("stdout closed before the serving line: {seen:?}"));
        seen.push(line);
    }
    server.kill().await.unwrap();
    for line in &seen {
        assert!(!line.contains('\u{1b}'), "an escape code in {line:?}");
    }
    assert!(
        seen.iter().any(|l| l.contains(" INFO s3lock is serving")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn run_waits_for_a_held_lock_saying_who_holds_it_until_when() {
    let app = TestApp::memory().await;
    let alice = json_with(
        app.acquire("jobs/w", json!({"owner": "alice", "ttl": 60}))
            .await,
        200,
    )
    .await;
    let runner = {
        let base = app.base.clone();
        tokio::spawn(async move {
            cli(
                &base,
                &["run", "jobs/w", "--wait", "30", "--", "sh", "-c", "exit 0"],
                &[],
            )
            .await
        })
    };
    // alice releases once the runner has been refused at least once (bounded poll on metrics).
    for _ in 0..500 {
        let text = app
            .request(reqwest::Method::GET, "/metrics", None)
            .await
            .text()
            .await
            .unwrap();
        if text.contains(r#"route="/locks/{key}/acquire",method="POST",status="409""#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    json_with(
        app.release("jobs/w", json!({"token": alice["token"]}))
            .await,
        200,
    )
    .await;
    let out = runner.await.unwrap();
    assert_eq!(code(&out), 0, "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("jobs/w is held by alice until")
            && stderr.contains(alice["expires_at"].as_str().unwrap()),
        "{stderr}"
    );
}
