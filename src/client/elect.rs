//! `s3lock elect NAME --value V -- CMD ARGS…`: run a command while leading an election, with
//! `run`'s machinery ([`run::run`]: renewed in the background, resigned when the command exits,
//! the command stopped before leadership can run out). The command finds `S3LOCK_ELECTION`,
//! `S3LOCK_LEADER` and `S3LOCK_TERM` (also as `S3LOCK_FENCING_TOKEN`) in its environment.
//!
//! `s3lock elect NAME --observe`: print who leads, then one line per change of leader or value,
//! "no leader" included (a resignation, a lease that ran out, a break), reconnecting with the
//! last event's id whenever the stream ends (a replica draining) or breaks.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use super::args::ElectArgs;
use super::cli::{client, exit, exit_code};
use super::hold::Hold;
use super::run::{self, RunOptions};
use super::{ClientError, LockClient, ServerEvent};
use crate::backoff::Backoff;
use crate::wire::ElectionView;

pub async fn main(args: ElectArgs) -> ExitCode {
    let client = client(&args.client);
    if args.observe {
        return ExitCode::from(observe(&client, &args.name, args.client.json).await);
    }
    let hold = Hold::Election {
        name: args.name,
        value: args.value.as_deref().map(parse_value),
    };
    let options = RunOptions {
        owner: args.candidate,
        ttl: args.ttl,
        wait: args.wait,
        kill_grace: args.kill_grace,
        command: args.command,
    };
    ExitCode::from(run::run(&client, &hold, &options).await)
}

/// `--value`: JSON when it parses as JSON (`'{"port": 80}'`, `42`), else the text itself.
fn parse_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// Follows the election until interrupted (or refused: a 4xx ends it with that exit code).
async fn observe(client: &LockClient, name: &str, json_lines: bool) -> u8 {
    let mut last_id = None;
    // The last leader shown, to say who stepped down.
    let mut leader: Option<String> = None;
    let mut retry = Backoff::constant(Duration::from_secs(1));
    loop {
        match client.observe(name, last_id).await {
            Ok(mut stream) => loop {
                match stream.next_event().await {
                    Ok(Some(event)) if event.kind == "unreadable" => {
                        eprintln!("s3lock elect: the election's document is unreadable");
                        return exit::ERROR;
                    }
                    Ok(Some(event)) => {
                        last_id = event.id.or(last_id);
                        match show(&event, &mut leader, json_lines) {
                            Some(line) => println!("{line}"),
                            None if json_lines => {}
                            None => continue,
                        }
                    }
                    Ok(None) => break, // the replica drains: resume, here or on another
                    Err(e) => {
                        eprintln!("s3lock elect: the stream broke ({e}); resuming");
                        break;
                    }
                }
            },
            Err(e @ (ClientError::Transport(_) | ClientError::Unreachable(_))) => {
                eprintln!("s3lock elect: {e}; trying again");
            }
            Err(e @ ClientError::Problem { status: 503, .. }) => {
                eprintln!("s3lock elect: {e}; trying again");
            }
            Err(e) => {
                eprintln!("s3lock elect: {e}");
                return exit_code(&e);
            }
        }
        retry.wait().await;
    }
}

/// The line for one event: `None` for a renewal (the same leader restarting its lease) in text
/// mode. Updates `leader` to the one the event leaves.
fn show(event: &ServerEvent, leader: &mut Option<String>, json_lines: bool) -> Option<String> {
    let view: ElectionView = match serde_json::from_str(&event.data) {
        Ok(v) => v,
        Err(e) => return Some(format!("(an event that is not an election view: {e})")),
    };
    let before = std::mem::replace(leader, view.leader.clone());
    if json_lines {
        return Some(json!({"event": event.kind, "id": event.id, "election": view}).to_string());
    }
    let line = match (view.leader.as_deref(), event.kind.as_str()) {
        (_, "renewed") => return None,
        (Some(now), "value") => format!(
            "leader {now} (term {}) proclaimed {}",
            view.term,
            value_text(&view.value)
        ),
        (Some(now), _) => {
            let mut line = format!("leader {now} (term {})", view.term);
            if !view.value.is_null() {
                line.push_str(&format!(" value {}", value_text(&view.value)));
            }
            line
        }
        (None, kind) => {
            let who = before.as_deref().unwrap_or("the leader");
            match kind {
                "released" => format!("no leader: {who} resigned"),
                "expired" => format!("no leader: {who}'s lease ran out"),
                "broken" => "no leader: broken by an admin".to_owned(),
                _ => "no leader".to_owned(),
            }
        }
    };
    Some(line)
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, leader: Option<&str>, value: Value) -> ServerEvent {
        let view = json!({
            "name": "e", "leader": leader, "value": value, "term": 3,
            "expires_at": null, "ttl_remaining_ms": 0, "available_at": null, "index": 7,
        });
        ServerEvent {
            kind: kind.into(),
            id: Some(7),
            data: view.to_string(),
        }
    }

    #[test]
    fn a_value_is_json_when_it_parses_and_text_otherwise() {
        assert_eq!(parse_value("10.0.0.1:80"), json!("10.0.0.1:80"));
        assert_eq!(parse_value(r#"{"port": 80}"#), json!({"port": 80}));
        assert_eq!(parse_value("42"), json!(42));
    }

    #[test]
    fn each_change_of_leader_is_a_line_and_no_leader_says_why() {
        let mut leader = None;
        let mut line = |e: ServerEvent| show(&e, &mut leader, false);
        assert_eq!(line(event("free", None, Value::Null)).unwrap(), "no leader");
        assert_eq!(
            line(event("acquired", Some("alice"), json!("a:80"))).unwrap(),
            "leader alice (term 3) value a:80"
        );
        assert_eq!(line(event("renewed", Some("alice"), json!("a:80"))), None);
        assert_eq!(
            line(event("value", Some("alice"), json!("a:81"))).unwrap(),
            "leader alice (term 3) proclaimed a:81"
        );
        assert_eq!(
            line(event("expired", None, Value::Null)).unwrap(),
            "no leader: alice's lease ran out"
        );
        assert_eq!(
            line(event("acquired", Some("bob"), Value::Null)).unwrap(),
            "leader bob (term 3)"
        );
        assert_eq!(
            line(event("released", None, Value::Null)).unwrap(),
            "no leader: bob resigned"
        );
    }
}
