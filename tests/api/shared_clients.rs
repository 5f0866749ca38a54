//! The clients of semaphores and read-write locks against the real app: `s3lock run
//! --semaphore N` lets at most N commands run at once (seen through files the commands write),
//! `run --shared` / `--exclusive` and their exit codes, a broken semaphore stops `run`'s command,
//! `s3lock check --kind semaphore` and `--kind rwlock` over two replicas on SeaweedFS find no
//! violation, and `bench --kind semaphore` measures a cycle.

use std::path::Path;

use s3lock::client::LockClient;
use s3lock::wire::{Mode, SharedKind};

use crate::auth::{tokens_file, ADMIN, OTHER};
use crate::bench_cli::bench_json;
use crate::check_cli::{run_check, two_replicas};
use crate::cli::{cli, code, read_pid};
use crate::helpers::{support, TestApp};

/// A command for `run` that marks itself running in `dir` (by its fencing token), notes how
/// many commands it sees running each time it looks, and ends once it has seen a second one
/// running or two that are done (or after 15 s): so with two permits, the first two meet.
fn meeting_command(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"me="$S3LOCK_FENCING_TOKEN"; touch "{d}/running.$me"; i=0
while :; do
  n=$(ls "{d}" | grep -c '^running\.'); echo "$n" >> "{d}/seen"
  done=$(ls "{d}" | grep -c '^done\.')
  if [ "$n" -ge 2 ] || [ "$done" -ge 2 ] || [ "$i" -ge 300 ]; then break; fi
  i=$((i+1)); sleep 0.05
done
rm "{d}/running.$me"; touch "{d}/done.$me""#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_semaphore_2_lets_two_of_three_commands_run_at_once_and_never_three() {
    let app = TestApp::memory().await;
    let dir = tempfile::tempdir().unwrap();
    let command = meeting_command(dir.path());
    let runs: Vec<_> = (0..3)
        .map(|i| {
            let (base, command) = (app.base.clone(), command.clone());
            tokio::spawn(async move {
                let owner = format!("worker-{i}");
                cli(
                    &base,
                    &[
                        "run",
                        "--semaphore",
                        "2",
                        "deploys",
                        "--owner",
                        &owner,
                        "--ttl",
                        "10",
                        "--wait",
                        "40",
                        "--",
                        "sh",
                        "-c",
                        &command,
                    ],
                    &[],
                )
                .await
            })
        })
        .collect();
    for run in runs {
        let out = run.await.unwrap();
        assert_eq!(code(&out), 0, "{out:?}");
    }
    let seen: Vec<u32> = std::fs::read_to_string(dir.path().join("seen"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert!(seen.iter().all(|&n| n <= 2), "three ran at once: {seen:?}");
    assert_eq!(seen.iter().max(), Some(&2), "never two at once: {seen:?}");
    let done = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("done.")
        })
        .count();
    assert_eq!(done, 3, "each command ran under a fencing token of its own");
    let after = LockClient::new(&app.base, None)
        .shared_status(SharedKind::Semaphore, "deploys")
        .await
        .unwrap();
    assert!(after.holders.is_empty(), "every permit released: {after:?}");
}

#[tokio::test]
async fn run_exclusive_is_refused_beside_a_reader_and_a_limit_the_holders_did_not_ask_for_exits_1()
{
    let app = TestApp::memory().await;
    let client = LockClient::new(&app.base, None);
    let reader = client
        .rwlock_acquire("catalog", Some("reader"), Some(30), None, Mode::Shared)
        .await
        .unwrap();
    let writer = cli(
        &app.base,
        &["run", "--exclusive", "catalog", "--", "true"],
        &[],
    )
    .await;
    assert_eq!(code(&writer), 3, "{writer:?}");
    assert!(
        String::from_utf8_lossy(&writer.stderr).contains("reader"),
        "{writer:?}"
    );
    let another_reader = cli(
        &app.base,
        &["run", "--shared", "catalog", "--", "true"],
        &[],
    )
    .await;
    assert_eq!(code(&another_reader), 0, "{another_reader:?}");
    client
        .shared_release(
            SharedKind::Rwlock,
            "catalog",
            reader.holder_token().unwrap(),
        )
        .await
        .unwrap();

    let permit = client
        .semaphore_acquire("pool", Some("p"), Some(30), None, 2)
        .await
        .unwrap();
    assert!(permit.lease.is_some() && permit.holder_token().is_some());
    let other_limit = cli(
        &app.base,
        &[
            "run",
            "--semaphore",
            "3",
            "pool",
            "--wait",
            "5",
            "--",
            "true",
        ],
        &[],
    )
    .await;
    assert_eq!(code(&other_limit), 1, "not waited for: {other_limit:?}");
    let same_limit = cli(
        &app.base,
        &["run", "--semaphore", "2", "pool", "--", "true"],
        &[],
    )
    .await;
    assert_eq!(code(&same_limit), 0, "{same_limit:?}");
}

#[tokio::test]
async fn run_stops_the_command_at_once_when_an_admin_breaks_its_semaphore() {
    let app = TestApp::memory_with_auth(&tokens_file()).await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 600", pid_file.display());
    let runner = {
        let base = app.base.clone();
        tokio::spawn(async move {
            cli(
                &base,
                &[
                    "run",
                    "--semaphore",
                    "2",
                    "pool/b",
                    "--ttl",
                    "3",
                    "--",
                    "sh",
                    "-c",
                    &script,
                ],
                &[("S3LOCK_AUTH_TOKEN", OTHER)],
            )
            .await
        })
    };
    read_pid(&pid_file).await;
    LockClient::new(&app.base, Some(ADMIN.to_owned().into()))
        .shared_break(SharedKind::Semaphore, "pool/b")
        .await
        .unwrap();
    // The next renewal (a second later) is refused: the command is stopped and run exits 6.
    let out = runner.await.unwrap();
    assert_eq!(code(&out), 6, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was lost"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_finds_no_violation_of_a_semaphore_over_two_replicas_on_seaweedfs() {
    let replicas = two_replicas(&support::s3_endpoint()).await;
    let urls: Vec<_> = replicas.iter().map(|r| r.base.clone()).collect();
    let (code, stdout) = run_check(
        &urls,
        &[
            "--kind",
            "semaphore",
            "--limit",
            "3",
            "--max-hold",
            "20ms",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(report["grants"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_finds_no_violation_of_a_read_write_lock_over_two_replicas_on_seaweedfs() {
    let replicas = two_replicas(&support::s3_endpoint()).await;
    let urls: Vec<_> = replicas.iter().map(|r| r.base.clone()).collect();
    let (code, stdout) =
        run_check(&urls, &["--kind", "rwlock", "--max-hold", "20ms", "--json"]).await;
    assert_eq!(code, 0, "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(report["grants"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_measures_a_semaphore_cycle_with_clients_sharing_its_permits() {
    let app = TestApp::memory().await;
    let report = bench_json(&[
        "--url",
        &app.base,
        "--kind",
        "semaphore",
        "--limit",
        "2",
        "--clients",
        "4",
        "--keys",
        "1",
        "--duration",
        "300ms",
        "--op",
        "cycle",
        "--json",
    ])
    .await;
    assert_eq!(
        (report["kind"].as_str(), report["limit"].as_u64()),
        (Some("semaphore"), Some(2))
    );
}
