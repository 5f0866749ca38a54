//! Secrets are never printed (issue 8): the real `s3lock serve`, at `RUST_LOG=debug`, on the local
//! store and on S3, runs a whole session with auth; then every auth token and holder token the
//! session used is looked for in everything the server and the CLI wrote. Also `--help` of every
//! subcommand with a secret in `S3LOCK_AUTH_TOKEN`, and the auth tokens file's errors.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use s3lock::auth::AuthTokens;
use s3lock::lock::LockDocument;
use s3lock::store::local::LocalStore;
use s3lock::store::s3::S3Store;
use s3lock::store::Store;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;

use crate::helpers::{support, PREFIX};

const BIN: &str = env!("CARGO_BIN_EXE_s3lock");

/// The session's auth tokens (each one run of the test makes its own, see `AuthSet`).
struct AuthSet {
    client: String,
    admin: String,
    scoped: String,
    /// Presented, but in no file: a 401.
    unknown: String,
    /// The peer secret that signs wake-up hints (the server sends them to a peer that is down).
    peer: String,
}

impl AuthSet {
    fn new() -> Self {
        let fresh = |what: &str| format!("{what}-{}", uuid::Uuid::new_v4().simple());
        Self {
            client: fresh("client"),
            admin: fresh("admin"),
            scoped: fresh("scoped"),
            unknown: fresh("unknown"),
            peer: fresh("peer"),
        }
    }

    fn file(&self) -> String {
        format!(
            "{} name=client\n{} name=ops admin\n{} name=scoped prefix=jobs/\n",
            self.client, self.admin, self.scoped
        )
    }

    fn all(&self) -> Vec<String> {
        vec![
            self.client.clone(),
            self.admin.clone(),
            self.scoped.clone(),
            self.unknown.clone(),
            self.peer.clone(),
        ]
    }
}

/// A running `s3lock serve` and everything it has written so far, stdout and stderr together.
struct Server {
    child: tokio::process::Child,
    url: String,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Server {
    async fn start(store_args: &[String], tokens_file: &Path, peer_secret: &str) -> Self {
        let mut child = tokio::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--auth-tokens-file"])
            .arg(tokens_file)
            .args(store_args)
            // A peer that is down: every freed lock sends it a signed hint that fails.
            .args(["--peers", &support::closed_url()])
            .env("S3LOCK_PEER_SECRET", peer_secret)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .env_remove("S3LOCK_AUTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        let mut tx = Some(tx);
        let stdout = child.stdout.take().unwrap();
        let out = output.clone();
        let stdout_reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("s3lock is serving") {
                    if let Some(address) = line.split("address=").nth(1) {
                        let address = address.split_whitespace().next().unwrap().to_owned();
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(address);
                        }
                    }
                }
                let mut all = out.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let stderr = child.stderr.take().unwrap();
        let out = output.clone();
        let stderr_reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut all = out.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let address = match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(address)) => address,
            _ => panic!(
                "the server did not start serving:\n{}",
                output.lock().unwrap()
            ),
        };
        Self {
            child,
            url: format!("http://{address}"),
            output,
            readers: vec![stdout_reader, stderr_reader],
        }
    }

    /// Stops the server with SIGTERM, as an operator would, and returns all it wrote.
    async fn stop(mut self) -> String {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server stops on SIGTERM")
            .unwrap();
        for r in self.readers.drain(..) {
            r.await.unwrap();
        }
        let all = self.output.lock().unwrap().clone();
        all
    }
}

/// What one session used: every secret, and what the CLI wrote where it must not show them.
struct Session {
    holder_tokens: Vec<String>,
    /// Keys whose stored token (read after the run) was used by a process of its own (`run`).
    run_keys: Vec<String>,
    /// The CLI's stdout and stderr of every call, except the holder token acquire prints.
    cli_output: String,
}

async fn call(
    http: &reqwest::Client,
    method: Method,
    url: String,
    bearer: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(bearer);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

async fn cli(url: &str, args: &[&str], auth: &str) -> Output {
    let cmd = tokio::process::Command::new(BIN)
        .args(args)
        .env("S3LOCK_URL", url)
        .env("S3LOCK_AUTH_TOKEN", auth)
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), cmd)
        .await
        .expect("the CLI finishes")
        .unwrap()
}

fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Acquire, refresh with the token, renew, refusals of every kind, a 401, a 403, an admin break,
/// release, and the CLI (`acquire`, `renew`, `release`, a refused release, a 401, `run`).
async fn drive(url: &str, auth: &AuthSet) -> Session {
    let http = reqwest::Client::new();
    let at = |path: &str| format!("{url}{path}");
    let mut holder_tokens = Vec::new();
    let mut token_of = |v: &Value| {
        let t = v["token"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_owned();
        holder_tokens.push(t.clone());
        t
    };
    let client = auth.client.as_str();

    let (s, alice) = call(
        &http,
        Method::POST,
        at("/locks/jobs/a/acquire"),
        client,
        Some(json!({"owner": "alice", "ttl": 30})),
    )
    .await;
    assert_eq!(s, 200, "{alice}");
    let t1 = token_of(&alice);
    let (s, again) = call(
        &http,
        Method::POST,
        at("/locks/jobs/a/acquire"),
        client,
        Some(json!({"owner": "alice", "token": t1, "ttl": 30})),
    )
    .await;
    assert_eq!(
        (s, again["token"].as_str()),
        (200, Some(t1.as_str())),
        "{again}"
    );
    let (s, v) = call(
        &http,
        Method::POST,
        at("/locks/jobs/a/renew"),
        client,
        Some(json!({"token": t1, "ttl": 60})),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // A second lock, whose token is then tried on the first.
    let (s, carol) = call(
        &http,
        Method::POST,
        at("/locks/jobs/b/acquire"),
        client,
        Some(json!({"owner": "carol"})),
    )
    .await;
    assert_eq!(s, 200, "{carol}");
    let t2 = token_of(&carol);
    let wrong: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    holder_tokens.extend(wrong.iter().cloned());
    for (path, body, want) in [
        ("/locks/jobs/a/acquire", json!({"owner": "bob"}), 409),
        ("/locks/jobs/a/acquire", json!({"owner": "alice"}), 409),
        (
            "/locks/jobs/a/acquire",
            json!({"owner": "alice", "token": wrong[0]}),
            409,
        ),
        ("/locks/jobs/a/renew", json!({"token": wrong[1]}), 409),
        ("/locks/jobs/a/release", json!({"token": t2}), 409),
        ("/locks/never/release", json!({"token": wrong[2]}), 404),
    ] {
        let (s, v) = call(&http, Method::POST, at(path), client, Some(body)).await;
        assert_eq!(s, want, "{path}: {v}");
    }
    let (s, v) = call(&http, Method::GET, at("/locks/jobs/a"), &auth.unknown, None).await;
    assert_eq!(s, 401, "{v}");
    let (s, v) = call(&http, Method::GET, at("/locks/other/x"), &auth.scoped, None).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = call(
        &http,
        Method::POST,
        at("/locks/jobs/b/break"),
        &auth.admin,
        Some(json!({"reason": "secrets test"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        &http,
        Method::POST,
        at("/locks/jobs/a/release"),
        client,
        Some(json!({"token": t1})),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // The CLI, with the auth token in S3LOCK_AUTH_TOKEN.
    let mut cli_output = String::new();
    let got = cli(
        url,
        &["acquire", "jobs/cli", "--owner", "dave", "--ttl", "30"],
        client,
    )
    .await;
    assert_eq!(got.status.code(), Some(0), "{got:?}");
    let t4 = String::from_utf8(got.stdout).unwrap().trim().to_owned();
    holder_tokens.push(t4.clone());
    cli_output.push_str(&String::from_utf8_lossy(&got.stderr));
    let cli_wrong = uuid::Uuid::new_v4().to_string();
    holder_tokens.push(cli_wrong.clone());
    for (args, auth_token, want) in [
        (
            vec!["renew", "jobs/cli", "--token", &t4, "--ttl", "30"],
            client,
            0,
        ),
        (
            vec!["release", "jobs/cli", "--token", &cli_wrong],
            client,
            4,
        ),
        (vec!["acquire", "jobs/cli", "--owner", "dave"], client, 3),
        (vec!["status", "jobs/cli"], auth.unknown.as_str(), 5),
        (vec!["release", "jobs/cli", "--token", &t4], client, 0),
        (
            vec!["run", "jobs/run", "--ttl", "3", "--", "sh", "-c", "exit 0"],
            client,
            0,
        ),
    ] {
        let out = cli(url, &args, auth_token).await;
        assert_eq!(out.status.code(), Some(want), "{args:?}: {out:?}");
        cli_output.push_str(&text_of(&out));
    }
    Session {
        holder_tokens,
        run_keys: vec!["jobs/run".into()],
        cli_output,
    }
}

/// Asserts none of `secrets` (nor a hyphen-less form of one) appears in `text`.
fn assert_absent(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        let simple = secret.replace('-', "");
        assert!(
            !text.contains(secret.as_str()) && !text.contains(&simple),
            "{what} shows the secret {secret}:\n{text}"
        );
    }
}

async fn run_session_and_grep(store_args: Vec<String>, kept: Kept) {
    let dir = tempfile::tempdir().unwrap();
    let auth = AuthSet::new();
    let tokens_file = dir.path().join("auth-tokens");
    std::fs::write(&tokens_file, auth.file()).unwrap();
    let server = Server::start(&store_args, &tokens_file, &auth.peer).await;
    let session = drive(&server.url, &auth).await;
    let log = server.stop().await;

    let mut secrets = auth.all();
    secrets.extend(session.holder_tokens.iter().cloned());
    for key in &session.run_keys {
        secrets.push(kept.token(key).await);
    }
    // The log is really at debug level and really saw the session.
    assert!(log.contains("DEBUG"), "not a debug log:\n{log}");
    assert!(log.contains("jobs/a") && log.contains("client"), "{log}");
    assert!(
        log.contains("hint"),
        "no wake-up hint was sent to the peer:\n{log}"
    );
    assert_absent("the server's output", &log, &secrets);
    assert_absent("the CLI's output", &session.cli_output, &secrets);
}

fn local_store_args(data: &Path) -> Vec<String> {
    vec![
        "--store".into(),
        "local".into(),
        "--data-dir".into(),
        data.display().to_string(),
    ]
}

#[tokio::test]
async fn a_whole_session_at_debug_level_on_the_local_store_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    run_session_and_grep(local_store_args(&data), Kept::Local(data)).await;
}

#[tokio::test]
async fn a_whole_session_at_debug_level_on_s3_prints_no_secret() {
    let (store, bucket) = support::s3_with_fresh_bucket().await;
    let args = vec![
        "--store".into(),
        "s3".into(),
        "--bucket".into(),
        bucket.clone(),
        "--s3-endpoint".into(),
        support::s3_endpoint(),
        "--s3-path-style".into(),
    ];
    run_session_and_grep(args, Kept::S3(store, bucket)).await;
}

/// Where the server kept its locks, read once it has stopped (the local store's directory is
/// locked by its one server while it runs).
enum Kept {
    Local(PathBuf),
    S3(S3Store, String),
}

impl Kept {
    /// The holder token stored for `key` (a released lock keeps its token).
    async fn token(&self, key: &str) -> String {
        let object = format!("{PREFIX}{key}");
        let stored = match self {
            Kept::Local(dir) => LocalStore::open(dir)
                .unwrap()
                .get("default", &object)
                .await
                .unwrap(),
            Kept::S3(store, bucket) => store.get(bucket, &object).await.unwrap(),
        };
        let doc = LockDocument::from_bytes(&stored.expect("the lock was taken").body).unwrap();
        doc.token
            .expect("a released lock keeps its token")
            .into_exposed()
    }
}

/// The subcommands `s3lock --help` lists (so a new one is checked without editing this test).
fn subcommands() -> Vec<String> {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let listed: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    assert!(listed.len() >= 10, "{text}");
    listed
}

#[test]
fn help_of_every_subcommand_hides_the_auth_token_and_peer_secret_from_the_environment() {
    let secret = format!("help-secret-{}", uuid::Uuid::new_v4().simple());
    let peer_secret = format!("peer-secret-{}", uuid::Uuid::new_v4().simple());
    let (mut shown_env, mut shown_peer) = (0, 0);
    let mut runs: Vec<Vec<String>> = vec![vec!["--help".into()], vec!["-h".into()]];
    for sub in subcommands() {
        runs.push(vec![sub.clone(), "--help".into()]);
        runs.push(vec![sub.clone(), "-h".into()]);
        runs.push(vec!["help".into(), sub]);
    }
    for args in runs {
        let out = std::process::Command::new(BIN)
            .args(&args)
            .env("S3LOCK_AUTH_TOKEN", &secret)
            .env("S3LOCK_PEER_SECRET", &peer_secret)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        let text = text_of(&out);
        assert!(
            !text.contains(&secret) && !text.contains(&peer_secret),
            "`s3lock {}` shows a secret from the environment:\n{text}",
            args.join(" ")
        );
        if text.contains("S3LOCK_PEER_SECRET") {
            shown_peer += 1;
        }
        if text.contains("S3LOCK_AUTH_TOKEN") {
            shown_env += 1;
        }
    }
    // The flag is there (and so was tested): the client subcommands, check and bench.
    assert!(
        shown_env >= 9,
        "only {shown_env} help texts name S3LOCK_AUTH_TOKEN"
    );
    assert!(shown_peer >= 1, "no help text names S3LOCK_PEER_SECRET");
}

#[test]
fn auth_tokens_file_errors_never_show_a_credential() {
    // Credentials as `openssl rand -base64 18` makes them (not valid bucket names either).
    let a = "Qm9vdHN0cmFwX0FfVG9rZW4x";
    let b = "U2Vjb25kX0JfVG9rZW5fMDAy";
    let mut shown = Vec::new();
    for text in [
        // Two credentials pasted on one line.
        format!("{a} {b}\n"),
        // A good line, then a line that repeats its credential as a word.
        format!("{a} name=x\n{b} {a}\n"),
        format!("{a}\n{b} name={a} colour=red\n"),
        format!("{a}\n{b} prefix\n{b}\n"),
        format!("{a}\n{a}\n"),
        // A credential pasted where a bucket name belongs.
        format!("{a}\n{b} bucket={a}\n"),
        format!("{a} bucket={b}\n"),
    ] {
        let err = AuthTokens::parse(&text).unwrap_err();
        assert!(err.contains("line"), "name the line: {err}");
        if err.contains(a) || err.contains(b) {
            shown.push(err);
        }
    }
    assert!(
        shown.is_empty(),
        "errors that show a credential: {shown:#?}"
    );
}
