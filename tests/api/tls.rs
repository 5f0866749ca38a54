//! https and mTLS on real sockets: certificates made at run time (rcgen), a real server, our own
//! client and raw rustls. What must be refused is refused, changes nothing in the store, and
//! says nothing secret; a replaced certificate is served without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use s3lock::client::{ClientError, LockClient};
use s3lock::clock::SystemClock;
use s3lock::lock::watchers::PeerNotifier;
use s3lock::lock::Engine;
use s3lock::metrics::Metrics;
use s3lock::peers::{HintKey, Peers};
use s3lock::startup::Server;
use s3lock::store::memory::MemoryStore;
use s3lock::store::Store;
use s3lock::tls::client::{ClientTls, ClientTlsFiles};
use s3lock::tls::server::{ReloadingTls, ServerTlsFiles};
use s3lock::tls::SettingFile;
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{engine_config, PREFIX};

const AUTH_TOKEN: &str = "auth-token-that-must-stay-secret-0123";

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `localhost` and 127.0.0.1, valid now.
    fn leaf(&self, name: &str) -> Leaf {
        self.leaf_with(name, |_| {})
    }

    /// One whose validity ended in 2021.
    fn expired_leaf(&self, name: &str) -> Leaf {
        self.leaf_with(name, |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn leaf_with(&self, name: &str, change: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        change(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Files in a temporary directory, by name.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        // A write then a rename, as a certificate manager replaces a file: a reader sees the
        // old file or the new one, never half of one.
        let partial = self.dir.path().join(format!(".{name}.partial"));
        std::fs::write(&partial, content).unwrap();
        std::fs::rename(&partial, &path).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn setting(name: &'static str, path: &Path) -> SettingFile {
    SettingFile::new(name, path)
}

/// The server's TLS files written for `leaf`, requiring clients of `client_ca` when given.
fn server_tls(files: &Files, leaf: &Leaf, client_ca: Option<&Ca>) -> ServerTlsFiles {
    ServerTlsFiles {
        cert: setting("S3LOCK_TLS_CERT", &files.write("server.pem", &leaf.cert)),
        key: setting("S3LOCK_TLS_KEY", &files.write("server.key", &leaf.key)),
        client_ca: client_ca.map(|ca| {
            setting(
                "S3LOCK_TLS_CLIENT_CA",
                &files.write("client-ca.pem", &ca.pem()),
            )
        }),
    }
}

/// A client trusting `ca` and presenting `leaf`, if given.
fn client_tls(files: &Files, ca: &Ca, leaf: Option<&Leaf>) -> ClientTls {
    let stem = format!("client-{}", rand_suffix());
    ClientTls::load(&ClientTlsFiles {
        ca_cert: Some(setting(
            "S3LOCK_CA_CERT",
            &files.write(&format!("{stem}-ca.pem"), &ca.pem()),
        )),
        client_cert: leaf.map(|l| {
            setting(
                "S3LOCK_CLIENT_CERT",
                &files.write(&format!("{stem}.pem"), &l.cert),
            )
        }),
        client_key: leaf.map(|l| {
            setting(
                "S3LOCK_CLIENT_KEY",
                &files.write(&format!("{stem}.key"), &l.key),
            )
        }),
    })
    .unwrap()
}

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A TLS server on the memory store, with auth on.
struct TlsApp {
    addr: String,
    store: Arc<dyn Store>,
    metrics: Metrics,
    tls: Arc<ReloadingTls>,
}

impl TlsApp {
    async fn spawn(files: ServerTlsFiles) -> Self {
        Self::spawn_with(files, 8192, Duration::from_secs(30)).await
    }

    async fn spawn_with(files: ServerTlsFiles, max_connections: usize, header: Duration) -> Self {
        Self::spawn_full(files, max_connections, header, None).await
    }

    async fn spawn_full(
        files: ServerTlsFiles,
        max_connections: usize,
        header: Duration,
        hints: Option<HintKey>,
    ) -> Self {
        s3lock::telemetry::init_for_tests();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let metrics = Metrics::new();
        let engine = Engine::new(
            store.clone(),
            Arc::new(SystemClock),
            engine_config("default", &[]),
        )
        .with_metrics(metrics.clone());
        engine.mark_store_checked();
        let tokens =
            s3lock::auth::AuthTokens::parse(&format!("{AUTH_TOKEN} name=t admin\n")).unwrap();
        let tls = Arc::new(ReloadingTls::load(files).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = Server::new(Arc::new(engine), Duration::from_secs(90))
            .with_connection_limits(max_connections, header)
            .with_auth(Some(Arc::new(tokens)))
            .with_hints(hints)
            .with_tls(Some(tls.clone()), Duration::from_millis(50));
        tokio::spawn(server.serve(listener, std::future::pending()));
        Self {
            addr,
            store,
            metrics,
            tls,
        }
    }

    fn https(&self) -> String {
        format!(
            "https://localhost:{}",
            self.addr.rsplit_once(':').unwrap().1
        )
    }

    fn client(&self, tls: &ClientTls) -> LockClient {
        LockClient::with_tls(&self.https(), Some(SecretString::from(AUTH_TOKEN)), tls)
    }

    /// Every object in the store: nothing a refused client sent may be there.
    async fn objects(&self) -> Vec<String> {
        self.store.list("default", PREFIX).await.unwrap()
    }
}

/// What a refused call said, checked to hold no secret.
fn refusal(result: Result<impl std::fmt::Debug, ClientError>, secrets: &[&str]) -> String {
    let error = result.expect_err("the call is refused");
    let shown = format!("{error} {error:?}");
    for secret in secrets {
        assert!(!shown.contains(secret), "a secret in: {shown}");
    }
    // Refused in the handshake (our client's check of the server: never sent), or by the server
    // after it (TLS 1.3 tells a client of its missing certificate only then).
    assert!(
        matches!(
            error,
            ClientError::Transport(_) | ClientError::Unreachable(_)
        ),
        "{shown}"
    );
    shown
}

/// Lines of a PEM key: none may appear in anything shown.
fn key_lines(leaf: &Leaf) -> Vec<&str> {
    leaf.key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect()
}

#[tokio::test]
async fn a_client_trusting_the_servers_ca_takes_and_releases_a_lock_over_https() {
    let (ca, files) = (Ca::new("ca"), Files::new());
    let app = TlsApp::spawn(server_tls(&files, &ca.leaf("server"), None)).await;
    let client = app.client(&client_tls(&files, &ca, None));
    let view = client
        .acquire("k", Some("alice"), Some(30), None)
        .await
        .unwrap();
    let token = view.token.unwrap().into_exposed();
    client.release("k", &token).await.unwrap();
    assert_eq!(app.objects().await, [format!("{PREFIX}k")]);
}

#[tokio::test]
async fn tls_offers_h2_and_http1_by_alpn() {
    let (ca, files) = (Ca::new("ca"), Files::new());
    let app = TlsApp::spawn(server_tls(&files, &ca.leaf("server"), None)).await;
    for (offered, chosen) in [
        (vec![b"h2".to_vec(), b"http/1.1".to_vec()], b"h2".as_slice()),
        (vec![b"http/1.1".to_vec()], b"http/1.1".as_slice()),
    ] {
        let stream = raw_handshake(&app.addr, &ca, offered).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(chosen));
    }
}

/// A rustls handshake with the server trusting `ca`, offering `alpn`.
async fn raw_handshake(
    addr: &str,
    ca: &Ca,
    alpn: Vec<Vec<u8>>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(s3lock::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

#[tokio::test]
async fn a_plain_http_request_to_the_tls_port_is_refused_and_changes_nothing() {
    let (ca, files) = (Ca::new("ca"), Files::new());
    let app = TlsApp::spawn(server_tls(&files, &ca.leaf("server"), None)).await;
    let plain = LockClient::new(
        &format!("http://{}", app.addr),
        Some(SecretString::from(AUTH_TOKEN)),
    );
    refusal(
        plain.acquire("k", Some("alice"), None, None).await,
        &[AUTH_TOKEN],
    );
    // Byte by byte, as a client that does not speak TLS would send it: no HTTP answer.
    let mut tcp = TcpStream::connect(&app.addr).await.unwrap();
    let request = format!(
        "POST /locks/k/acquire HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {AUTH_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"));
    assert!(app.objects().await.is_empty());
    // An https client is still served.
    app.client(&client_tls(&files, &ca, None))
        .acquire("k", None, None, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_servers_ca_refuses_it_and_sends_nothing() {
    let (ca, other, files) = (Ca::new("ca"), Ca::new("other"), Files::new());
    let app = TlsApp::spawn(server_tls(&files, &ca.leaf("server"), None)).await;
    // Our own client with a private CA, and one with only the public roots.
    for client in [
        app.client(&client_tls(&files, &other, None)),
        app.client(&ClientTls::default()),
    ] {
        let shown = refusal(
            client.acquire("k", Some("alice"), None, None).await,
            &[AUTH_TOKEN],
        );
        assert!(
            shown.contains("certificate"),
            "the reason is named: {shown}"
        );
    }
    assert!(app.objects().await.is_empty());
}

#[tokio::test]
async fn a_server_certificate_that_has_expired_is_refused_by_our_client() {
    let (ca, files) = (Ca::new("ca"), Files::new());
    let app = TlsApp::spawn(server_tls(&files, &ca.expired_leaf("server"), None)).await;
    let client = app.client(&client_tls(&files, &ca, None));
    refusal(
        client.acquire("k", Some("alice"), None, None).await,
        &[AUTH_TOKEN],
    );
    assert!(app.objects().await.is_empty());
}

#[tokio::test]
async fn with_client_certificates_required_a_client_without_one_is_refused() {
    let (ca, clients, files) = (Ca::new("ca"), Ca::new("clients"), Files::new());
    let app = TlsApp::spawn(server_tls(&files, &ca.leaf("server"), Some(&clients))).await;
    let client = app.client(&client_tls(&files, &ca, None));
    refusal(
        client.acquire("k", Some("alice"), None, None).await,
        &[AUTH_TOKEN],
    );
    assert!(app.objects().await.is_empty());
}

#[tokio::test]
async fn with_client_certificates_required_one_from_another_ca_or_expired_is_refused() {
    let (ca, clients, other, files) = (
        Ca::new("ca"),
        Ca::new("clients"),
        Ca::new("other"),
        Files::new(),
    );
    let app = TlsApp::spawn(server_tls(&files, &ca.leaf("server"), Some(&clients))).await;
    for leaf in [other.leaf("stranger"), clients.expired_leaf("old-client")] {
        let client = app.client(&client_tls(&files, &ca, Some(&leaf)));
        let mut secrets = key_lines(&leaf);
        secrets.push(AUTH_TOKEN);
        refusal(
            client.acquire("k", Some("alice"), None, None).await,
            &secrets,
        );
    }
    assert!(app.objects().await.is_empty());
    let refused = app
        .metrics
        .render()
        .lines()
        .any(|l| l.starts_with("s3lock_tls_handshake_failures_total{reason=\"refused\"}"));
    assert!(refused, "{}", app.metrics.render());
}

#[tokio::test]
async fn with_client_certificates_required_a_client_with_a_good_one_is_served() {
    let (ca, clients, files) = (Ca::new("ca"), Ca::new("clients"), Files::new());
    let app = TlsApp::spawn(server_tls(&files, &ca.leaf("server"), Some(&clients))).await;
    let client = app.client(&client_tls(&files, &ca, Some(&clients.leaf("alice"))));
    let view = client
        .acquire("k", Some("alice"), None, None)
        .await
        .unwrap();
    assert_eq!(view.owner.as_deref(), Some("alice"));
}

/// The leaf certificate a new connection is shown.
async fn presented(addr: &str, ca: &Ca) -> Option<Vec<u8>> {
    let stream = raw_handshake(addr, ca, vec![]).await.ok()?;
    let certs = stream.get_ref().1.peer_certificates()?;
    Some(certs.first()?.to_vec())
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_replaced_certificate_is_shown_to_new_connections_without_a_restart() {
    let (ca, files) = (Ca::new("ca"), Files::new());
    let (old, new) = (ca.leaf("old"), ca.leaf("new"));
    let app = TlsApp::spawn(server_tls(&files, &old, None)).await;
    assert_eq!(presented(&app.addr, &ca).await, Some(der(&old.cert)));
    // A connection opened before the swap keeps working on the old certificate.
    let client = app.client(&client_tls(&files, &ca, None));
    client.acquire("before", None, None, None).await.unwrap();
    files.write("server.key", &new.key);
    files.write("server.pem", &new.cert);
    // The files are checked every 50 ms here; the bound only keeps a broken reload from
    // hanging the test.
    let mut seen = None;
    for _ in 0..400 {
        seen = presented(&app.addr, &ca).await;
        if seen.as_deref() == Some(der(&new.cert).as_slice()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen,
        Some(der(&new.cert)),
        "the new certificate was never shown"
    );
    client.acquire("after", None, None, None).await.unwrap();
}

#[tokio::test]
async fn a_replacement_that_does_not_make_a_certificate_keeps_the_old_one() {
    use s3lock::tls::server::Reload;
    let (ca, files) = (Ca::new("ca"), Files::new());
    let (old, new) = (ca.leaf("old"), ca.leaf("new"));
    let tls = ReloadingTls::load(server_tls(&files, &old, None)).unwrap();
    assert_eq!(tls.reload(), Reload::Unchanged);
    // The new certificate with the old key: a half-done rotation.
    files.write("server.pem", &new.cert);
    let Reload::Failed { error, repeated } = tls.reload() else {
        panic!("a mismatched key is taken")
    };
    assert!(!repeated);
    assert!(error.to_string().contains("S3LOCK_TLS_KEY"), "{error}");
    assert!(error.to_string().contains("does not match"), "{error}");
    for line in key_lines(&old) {
        assert!(
            !error.to_string().contains(line),
            "key material in: {error}"
        );
    }
    // Said once: the same files fail quietly until they change.
    assert!(matches!(
        tls.reload(),
        Reload::Failed { repeated: true, .. }
    ));
    // A key file that is not one, then a vanished file: the old configuration still serves.
    files.write(
        "server.key",
        "-----BEGIN PRIVATE KEY-----\nnot base64 at all!\n-----END PRIVATE KEY-----\n",
    );
    assert!(matches!(
        tls.reload(),
        Reload::Failed {
            repeated: false,
            ..
        }
    ));
    std::fs::remove_file(files.path("server.key")).unwrap();
    assert!(matches!(
        tls.reload(),
        Reload::Failed {
            repeated: false,
            ..
        }
    ));
    assert!(matches!(
        tls.reload(),
        Reload::Failed { repeated: true, .. }
    ));
    // The rotation completes.
    files.write("server.key", &new.key);
    assert_eq!(tls.reload(), Reload::Reloaded);
}

#[tokio::test]
async fn a_tls_handshake_that_stalls_is_closed_within_the_header_timeout_and_holds_a_place_under_the_cap(
) {
    let (ca, files) = (Ca::new("ca"), Files::new());
    let app = TlsApp::spawn_with(
        server_tls(&files, &ca.leaf("server"), None),
        1,
        Duration::from_secs(1),
    )
    .await;
    // The start of a TLS record (a handshake, TLS 1.0 framing, 512 bytes long), then nothing.
    let mut stalled = TcpStream::connect(&app.addr).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    // The cap is one connection: while the stalled one holds it, another is closed at once.
    let mut refused = false;
    for _ in 0..100 {
        if presented(&app.addr, &ca).await.is_none() {
            refused = true;
            break;
        }
        // The stalled connection may not have been accepted yet.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "a second connection was served past the cap");
    // The header timeout is 1 s; the bound only keeps a broken server from hanging the test.
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stalled handshake is still open");
    let rendered = app.metrics.render();
    assert!(
        rendered.contains("s3lock_tls_handshake_failures_total{reason=\"timeout\"} 1"),
        "{rendered}"
    );
    // Its place is free again.
    let mut served = false;
    for _ in 0..100 {
        if presented(&app.addr, &ca).await.is_some() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served);
    let _ = app.tls;
}

/// The `s3lock` binary serving https on the local store, its TLS files named in the
/// environment as a deployment would; with its port and its log so far.
struct BinaryServer {
    child: tokio::process::Child,
    port: u16,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

const BIN: &str = env!("CARGO_BIN_EXE_s3lock");

impl BinaryServer {
    async fn spawn(files: &Files, tls: &ServerTlsFiles, tokens: &Path) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(files.path("data"))
            .env("S3LOCK_TLS_CERT", &tls.cert.path)
            .env("S3LOCK_TLS_KEY", &tls.key.path)
            .env("S3LOCK_AUTH_TOKENS_FILE", tokens)
            .env("RUST_LOG", "debug")
            .env_remove("S3LOCK_LOG_FORMAT")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        match &tls.client_ca {
            Some(ca) => cmd.env("S3LOCK_TLS_CLIENT_CA", &ca.path),
            None => cmd.env_remove("S3LOCK_TLS_CLIENT_CA"),
        };
        let mut child = cmd.spawn().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let port = loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("a log line in time")
                .unwrap()
                .unwrap_or_else(|| panic!("the server stopped: {:?}", log.lock().unwrap()));
            log.lock().unwrap().push(line.clone());
            if let Some((_, rest)) = line.split_once("address=127.0.0.1:") {
                if line.contains("serving https") {
                    break rest.split(' ').next().unwrap().parse::<u16>().unwrap();
                }
            }
        };
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, port, log }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the server; its whole log, checked to hold none of `secrets`.
    async fn stop(mut self, secrets: &[&str]) -> Vec<String> {
        self.child.kill().await.unwrap();
        let log = self.log.lock().unwrap().clone();
        for line in &log {
            for secret in secrets {
                assert!(!line.contains(secret), "a secret in the log: {line}");
            }
        }
        log
    }
}

async fn cli(args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env("S3LOCK_AUTH_TOKEN", AUTH_TOKEN)
        .env_remove("S3LOCK_URL")
        .env_remove("S3LOCK_TLS_CERT")
        .env_remove("S3LOCK_CA_CERT")
        .env_remove("S3LOCK_CLIENT_CERT")
        .env_remove("S3LOCK_CLIENT_KEY")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI finishes")
        .unwrap()
}

#[tokio::test]
async fn the_cli_and_healthcheck_reach_an_mtls_server_with_their_ca_and_client_certificate() {
    let (ca, clients, files) = (Ca::new("ca"), Ca::new("clients"), Files::new());
    let tls = server_tls(&files, &ca.leaf("server"), Some(&clients));
    let tokens = files.write("tokens", &format!("{AUTH_TOKEN} name=t admin\n"));
    let server = BinaryServer::spawn(&files, &tls, &tokens).await;
    let url = format!("https://localhost:{}", server.port);
    let alice = clients.leaf("alice");
    let (ca_pem, cert, key) = (
        files.write("cli-ca.pem", &ca.pem()),
        files.write("alice.pem", &alice.cert),
        files.write("alice.key", &alice.key),
    );
    // Flags, then the same through the environment.
    let out = cli(
        &[
            "acquire",
            "k",
            "--owner",
            "alice",
            "--url",
            &url,
            "--ca-cert",
        ],
        &[],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "--ca-cert without its value is a usage error"
    );
    let args = [
        "acquire",
        "k",
        "--owner",
        "alice",
        "--json",
        "--url",
        &url,
        "--ca-cert",
        ca_pem.to_str().unwrap(),
        "--client-cert",
        cert.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
    ];
    let out = cli(&args, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let holder_token = view["token"].as_str().unwrap().to_owned();
    let env = [
        ("S3LOCK_CA_CERT", ca_pem.as_path()),
        ("S3LOCK_CLIENT_CERT", cert.as_path()),
        ("S3LOCK_CLIENT_KEY", key.as_path()),
    ];
    let out = cli(&["status", "k", "--url", &url], &env).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without a client certificate: refused, exit 1, and nothing secret said.
    let out = cli(
        &["release", "k", "--url", &url, "--token", &holder_token],
        &env[..1],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("cannot talk to the lock server"), "{said}");
    assert!(
        !said.contains(&holder_token) && !said.contains(AUTH_TOKEN),
        "{said}"
    );
    // A client key that is not one names its setting, and quotes nothing of the file.
    let bad_key = files.write("bad.key", &alice.key.replacen("-----END", "", 1));
    let out = cli(
        &["status", "k", "--url", &url],
        &[env[0], env[1], ("S3LOCK_CLIENT_KEY", bad_key.as_path())],
    )
    .await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("S3LOCK_CLIENT_KEY"), "{said}");
    for line in key_lines(&alice) {
        assert!(!said.contains(line), "key material in: {said}");
    }
    // The healthcheck asks over https when the server's variable says TLS is on.
    let listen = server.addr();
    let out = cli(
        &["healthcheck", "--listen", &listen],
        &[("S3LOCK_TLS_CERT", tls.cert.path.as_path()), env[1], env[2]],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["healthcheck", "--listen", &listen], &[env[1], env[2]]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "plain HTTP to a TLS port is not healthy"
    );
    let mut secrets = key_lines(&alice);
    secrets.push(AUTH_TOKEN);
    secrets.push(&holder_token);
    server.stop(&secrets).await;
}

#[tokio::test]
async fn a_sighup_has_the_binary_show_a_replaced_certificate_to_new_connections() {
    let (ca, files) = (Ca::new("ca"), Files::new());
    let (old, new) = (ca.leaf("old"), ca.leaf("new"));
    let tls = server_tls(&files, &old, None);
    let tokens = files.write("tokens", &format!("{AUTH_TOKEN} name=t admin\n"));
    let server = BinaryServer::spawn(&files, &tls, &tokens).await;
    assert_eq!(presented(&server.addr(), &ca).await, Some(der(&old.cert)));
    files.write("server.key", &new.key);
    files.write("server.pem", &new.cert);
    let pid = nix::unistd::Pid::from_raw(server.child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    // The bound only keeps a broken reload from hanging the test.
    let mut seen = None;
    for _ in 0..400 {
        seen = presented(&server.addr(), &ca).await;
        if seen.as_deref() == Some(der(&new.cert).as_slice()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, Some(der(&new.cert)));
    let mut secrets = key_lines(&old);
    secrets.extend(key_lines(&new));
    let log = server.stop(&secrets).await;
    // Reloaded by the signal, not by the periodic check (every 5 s in the binary).
    let reloaded = log.iter().find(|l| l.contains("TLS files reloaded"));
    assert!(
        reloaded.is_some_and(|l| l.contains("on=\"SIGHUP\"")),
        "{log:?}"
    );
}

/// The count of `line` (a metric with its labels) once it is at least 1; `None` if it never is.
async fn counted(metrics: &Metrics, line: &str) -> Option<f64> {
    // The bound only keeps a hint that never arrives from hanging the test.
    for _ in 0..200 {
        let rendered = metrics.render();
        let value = rendered
            .lines()
            .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse::<f64>().ok());
        if value.is_some_and(|v| v >= 1.0) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn hints_reach_an_https_peer_that_requires_a_client_certificate_only_with_one() {
    let (ca, files) = (Ca::new("ca"), Files::new());
    let key = HintKey::new(SecretString::from("peer-secret-for-tls-tests-0123"));
    // Replicas share one CA for both sides, as a deployment's internal CA would.
    let peer = TlsApp::spawn_full(
        server_tls(&files, &ca.leaf("peer"), Some(&ca)),
        8192,
        Duration::from_secs(30),
        Some(key.clone()),
    )
    .await;
    // By address: "localhost" may also resolve to ::1, where nobody listens.
    let url = vec![format!("https://{}", peer.addr)];
    let sender = |tls: ClientTls| {
        let metrics = Metrics::new();
        let peers = Peers::new(&url, key.clone(), &tls, metrics.clone()).unwrap();
        (peers, metrics)
    };
    let (with_cert, sent) = sender(client_tls(&files, &ca, Some(&ca.leaf("replica-a"))));
    with_cert.lock_freed("default", "locks/k");
    let accepted = "s3lock_peer_hints_received_total{outcome=\"accepted\"}";
    assert!(
        counted(&peer.metrics, accepted).await.is_some(),
        "{}",
        peer.metrics.render()
    );
    assert!(counted(&sent, "s3lock_peer_hints_total{outcome=\"sent\"}")
        .await
        .is_some());
    let (without, failed) = sender(client_tls(&files, &ca, None));
    without.lock_freed("default", "locks/k");
    let line = "s3lock_peer_hints_total{outcome=\"failed\"}";
    assert!(
        counted(&failed, line).await.is_some(),
        "{}",
        failed.render()
    );
}

#[tokio::test]
async fn bench_and_check_run_over_mtls_with_their_certificate_flags() {
    let (ca, files) = (Ca::new("ca"), Files::new());
    let app = TlsApp::spawn(server_tls(&files, &ca.leaf("server"), Some(&ca))).await;
    let client = ca.leaf("bench");
    let (ca_pem, cert, key) = (
        files.write("bench-ca.pem", &ca.pem()),
        files.write("bench.pem", &client.cert),
        files.write("bench.key", &client.key),
    );
    let env = [
        ("S3LOCK_CA_CERT", ca_pem.as_path()),
        ("S3LOCK_CLIENT_CERT", cert.as_path()),
        ("S3LOCK_CLIENT_KEY", key.as_path()),
    ];
    let url = app.https();
    let out = cli(
        &[
            "bench",
            "--url",
            &url,
            "--clients",
            "2",
            "--keys",
            "4",
            "--duration",
            "300ms",
            "--json",
        ],
        &env,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["ok"].as_u64().unwrap() > 0, "{report}");
    let out = cli(
        &[
            "check",
            "--url",
            &url,
            "--clients",
            "2",
            "--duration",
            "300ms",
            "--json",
        ],
        &env,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], 0, "{report}");
    // Without the client certificate both fail, saying so.
    let out = cli(
        &[
            "bench",
            "--url",
            &url,
            "--clients",
            "1",
            "--duration",
            "100ms",
            "--json",
        ],
        &env[..1],
    )
    .await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() || said.contains("\"errors\""),
        "{said}"
    );
    assert!(!said.contains(AUTH_TOKEN), "{said}");
}
