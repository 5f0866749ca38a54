//! Lock paths. A key may contain `/`, so lock routes take the raw path after `/locks/` (or
//! `/semaphores/`, `/rwlocks/`) and split off the action (`acquire`, `renew`, `release`, `break`,
//! and `events`, the one read by GET; for a semaphore's or read-write lock's `GET`, `watch`)
//! *before* percent-decoding: an encoded slash in a key can then never be mistaken for the action
//! separator. So the status of a key whose last segment is `events` is asked for with that slash
//! encoded (`/locks/jobs%2Fevents`). The decoded key is checked by the engine (`LockKey::parse`).

use percent_encoding::percent_decode_str;

use super::error::ApiError;
use crate::lock::key::{in_elections, ELECTIONS};
use crate::wire::SharedKind;

/// Which kind of lock a path names: its first segment after the optional bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// `/locks/...`: a mutex.
    Lock,
    /// `/semaphores/...` or `/rwlocks/...`.
    Shared(SharedKind),
}

impl PathKind {
    /// The kinds, each with the segment that names it.
    const ALL: [(&'static str, PathKind); 3] = [
        ("locks/", PathKind::Lock),
        ("semaphores/", PathKind::Shared(SharedKind::Semaphore)),
        ("rwlocks/", PathKind::Shared(SharedKind::Rwlock)),
    ];

    /// The kind `rest` starts with, and what follows its segment.
    fn split(rest: &str) -> Option<(Self, &str)> {
        Self::ALL
            .iter()
            .find_map(|(segment, kind)| Some((*kind, rest.strip_prefix(segment)?)))
    }
}

/// What a lock path with an action asks for: the last segment of the path, parsed here once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Acquire,
    Renew,
    Release,
    Break,
    /// The lock's change stream, by `GET`; every other action is a `POST`.
    Events,
}

impl Action {
    /// The action a (raw) path segment names, if it names one.
    pub fn parse(segment: &str) -> Option<Self> {
        match segment {
            "acquire" => Some(Self::Acquire),
            "renew" => Some(Self::Renew),
            "release" => Some(Self::Release),
            "break" => Some(Self::Break),
            "events" => Some(Self::Events),
            _ => None,
        }
    }

    /// The word in the path (and in the metrics' route label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acquire => "acquire",
            Self::Renew => "renew",
            Self::Release => "release",
            Self::Break => "break",
            Self::Events => "events",
        }
    }

    /// Whether this action is asked for by `POST` (else by `GET`).
    pub fn is_post(self) -> bool {
        self != Self::Events
    }
}

/// A parsed `/locks/{key}[/{action}]` or `/buckets/{bucket}/locks/{key}[/{action}]` (or the
/// same under `semaphores` or `rwlocks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockPath {
    pub bucket: Option<String>,
    pub kind: PathKind,
    /// Percent-decoded, not yet validated.
    pub key: String,
    /// `None` on a path without an action.
    pub action: Option<Action>,
}

impl LockPath {
    /// Parses a raw (still percent-encoded) request path; `with_action` when the last segment
    /// names the action (a segment that names none is a route not found, once the key decodes).
    pub fn parse(path: &str, with_action: bool) -> Result<Self, ApiError> {
        let (bucket, tail) = match path.strip_prefix("/buckets/") {
            Some(after) => {
                let (bucket, tail) = after.split_once('/').ok_or(ApiError::RouteNotFound)?;
                (Some(decode("bucket", bucket)?), tail)
            }
            None => (None, path.strip_prefix('/').ok_or(ApiError::RouteNotFound)?),
        };
        let (kind, rest) = PathKind::split(tail).ok_or(ApiError::RouteNotFound)?;
        let (raw_key, action) = if with_action {
            let (k, a) = rest.rsplit_once('/').ok_or(ApiError::RouteNotFound)?;
            (k, Some(a))
        } else {
            (rest, None)
        };
        let key = decode("key", raw_key)?;
        if in_elections(&key) {
            return Err(ApiError::InvalidInput {
                field: "key",
                reason: format!(
                    "keys whose first segment is {ELECTIONS:?} are elections' locks: use \
                     /elections/{{name}}"
                ),
            });
        }
        let action = match action {
            Some(word) => Some(Action::parse(word).ok_or(ApiError::RouteNotFound)?),
            None => None,
        };
        Ok(Self {
            bucket,
            kind,
            key,
            action,
        })
    }

    /// Parses a raw `GET` path of a semaphore or read-write lock: its status, or with a last
    /// segment `watch` (split off before decoding, as an action is), its blocking query.
    /// Whether it is the watch comes second.
    pub fn parse_get(path: &str) -> Result<(Self, bool), ApiError> {
        // `/semaphores/watch` is the status of the key "watch": a watch needs a key before it.
        let watched = path
            .strip_suffix("/watch")
            .filter(|status| !status.ends_with('/'))
            .and_then(|status| Self::parse(status, false).ok());
        match watched {
            Some(watched) => Ok((watched, true)),
            None => Ok((Self::parse(path, false)?, false)),
        }
    }
}

/// The methods a lock path really takes, for a 405's `Allow`. The router serves each kind's
/// `{key}` and `{key}/{action}` through one wildcard route that takes GET and POST, but POST
/// only means something when the path ends in an action after a key. `None`: not a lock path.
pub fn allowed_methods(path: &str) -> Option<&'static str> {
    if path.starts_with("/elections/") {
        return Some(ElectionPath::allow(path));
    }
    let tail = match path.strip_prefix("/buckets/") {
        Some(after) => after.split_once('/')?.1,
        None => path.strip_prefix('/')?,
    };
    let (_, rest) = PathKind::split(tail)?;
    match rest.rsplit_once('/') {
        Some((key, word))
            if !key.is_empty() && Action::parse(word).is_some_and(Action::is_post) =>
        {
            Some("GET,HEAD,POST")
        }
        _ => Some("GET,HEAD"),
    }
}

/// What a request on an election path asks for: the last segment, when it names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionAction {
    Campaign,
    Proclaim,
    Renew,
    Resign,
    /// `GET`: the election's view, as `GET /elections/{name}`.
    Leader,
    /// `GET`: the election's change stream.
    Observe,
}

impl ElectionAction {
    pub fn parse(segment: &str) -> Option<Self> {
        match segment {
            "campaign" => Some(Self::Campaign),
            "proclaim" => Some(Self::Proclaim),
            "renew" => Some(Self::Renew),
            "resign" => Some(Self::Resign),
            "leader" => Some(Self::Leader),
            "observe" => Some(Self::Observe),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Campaign => "campaign",
            Self::Proclaim => "proclaim",
            Self::Renew => "renew",
            Self::Resign => "resign",
            Self::Leader => "leader",
            Self::Observe => "observe",
        }
    }

    /// Whether this action is asked for by `POST` (else by `GET`).
    pub fn is_post(self) -> bool {
        !matches!(self, Self::Leader | Self::Observe)
    }
}

/// A parsed `/elections/{name}[/{action}]`. As with locks, the action is split off before
/// decoding, and a `GET` takes only a `GET` action (`GET /elections/a/campaign` is the view of
/// the election `a/campaign`), a `POST` only a `POST` one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionPath {
    /// Percent-decoded, not yet validated.
    pub name: String,
    pub action: Option<ElectionAction>,
}

impl ElectionPath {
    pub fn parse(path: &str, post: bool) -> Result<Self, ApiError> {
        let rest = path
            .strip_prefix("/elections/")
            .ok_or(ApiError::RouteNotFound)?;
        let split = rest
            .rsplit_once('/')
            .filter(|(name, _)| !name.is_empty())
            .and_then(|(name, word)| Some((name, ElectionAction::parse(word)?)));
        match split {
            Some((name, action)) if action.is_post() == post => Ok(Self {
                name: decode("name", name)?,
                action: Some(action),
            }),
            Some(_) if post => Err(ApiError::MethodNotAllowed),
            _ if post => Err(ApiError::RouteNotFound),
            _ => Ok(Self {
                name: decode("name", rest)?,
                action: None,
            }),
        }
    }

    /// The methods an election path takes, for a 405's `Allow`.
    pub fn allow(path: &str) -> &'static str {
        let word = path.rsplit_once('/').map(|(_, w)| w).unwrap_or_default();
        match ElectionAction::parse(word) {
            Some(a) if a.is_post() => "GET,HEAD,POST",
            _ => "GET,HEAD",
        }
    }
}

fn decode(field: &'static str, raw: &str) -> Result<String, ApiError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::InvalidInput {
            field,
            reason: "is not valid UTF-8 once percent-decoded".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_action_is_split_off_before_decoding() {
        let p = LockPath::parse("/locks/a%2Facquire/release", true).unwrap();
        assert_eq!(p.key, "a/acquire");
        assert_eq!(p.action, Some(Action::Release));
        assert_eq!(p.bucket, None);
    }

    #[test]
    fn events_is_an_action_unless_its_slash_is_encoded() {
        let p = LockPath::parse("/locks/jobs/events", true).unwrap();
        assert_eq!((p.key.as_str(), p.action), ("jobs", Some(Action::Events)));
        assert!(!Action::Events.is_post());
        assert!(LockPath::parse("/locks/jobs%2Fevents", true).is_err());
        let status = LockPath::parse("/locks/jobs%2Fevents", false).unwrap();
        assert_eq!(status.key, "jobs/events");
    }

    #[test]
    fn a_lock_key_in_the_elections_namespace_is_refused() {
        let err = LockPath::parse("/locks/.elections/leader", false).unwrap_err();
        assert!(matches!(err, ApiError::InvalidInput { field: "key", .. }));
        assert!(LockPath::parse("/locks/%2Eelections%2Fx/acquire", true).is_err());
        assert!(LockPath::parse("/locks/.elections2/x", false).is_ok());
    }

    #[test]
    fn an_election_path_names_its_action_by_method() {
        let p = ElectionPath::parse("/elections/jobs/etl/campaign", true).unwrap();
        assert_eq!(
            (p.name.as_str(), p.action),
            ("jobs/etl", Some(ElectionAction::Campaign))
        );
        let p = ElectionPath::parse("/elections/jobs%2Fetl/observe", false).unwrap();
        assert_eq!(
            (p.name.as_str(), p.action),
            ("jobs/etl", Some(ElectionAction::Observe))
        );
        let p = ElectionPath::parse("/elections/jobs/campaign", false).unwrap();
        assert_eq!((p.name.as_str(), p.action), ("jobs/campaign", None));
        let p = ElectionPath::parse("/elections/leader", false).unwrap();
        assert_eq!((p.name.as_str(), p.action), ("leader", None));
        assert!(matches!(
            ElectionPath::parse("/elections/a/observe", true),
            Err(ApiError::MethodNotAllowed)
        ));
        assert!(matches!(
            ElectionPath::parse("/elections/a", true),
            Err(ApiError::RouteNotFound)
        ));
    }

    #[test]
    fn semaphores_and_read_write_locks_have_paths_of_their_own() {
        let p = LockPath::parse("/semaphores/jobs/x/acquire", true).unwrap();
        assert_eq!(p.kind, PathKind::Shared(SharedKind::Semaphore));
        assert_eq!(
            (p.key.as_str(), p.action),
            ("jobs/x", Some(Action::Acquire))
        );
        let p = LockPath::parse("/buckets/b/rwlocks/r", false).unwrap();
        assert_eq!(p.kind, PathKind::Shared(SharedKind::Rwlock));
        assert_eq!((p.bucket.as_deref(), p.key.as_str()), (Some("b"), "r"));
        assert_eq!(
            LockPath::parse("/locks/k", false).unwrap().kind,
            PathKind::Lock
        );
        let (p, watch) = LockPath::parse_get("/semaphores/a/watch").unwrap();
        assert_eq!((p.key.as_str(), watch), ("a", true));
        let (p, watch) = LockPath::parse_get("/semaphores/a%2Fwatch").unwrap();
        assert_eq!((p.key.as_str(), watch), ("a/watch", false));
        let (p, watch) = LockPath::parse_get("/rwlocks/watch").unwrap();
        assert_eq!((p.key.as_str(), watch), ("watch", false));
        assert_eq!(allowed_methods("/rwlocks/a/release"), Some("GET,HEAD,POST"));
        assert_eq!(allowed_methods("/buckets/b/semaphores/a"), Some("GET,HEAD"));
        assert_eq!(allowed_methods("/elsewhere/a"), None);
        assert_eq!(allowed_methods("/locks/a/events"), Some("GET,HEAD"));
        assert_eq!(allowed_methods("/semaphores/a/events"), Some("GET,HEAD"));
        let p = LockPath::parse("/rwlocks/jobs/events", true).unwrap();
        assert_eq!(
            (p.kind, p.key.as_str(), p.action),
            (
                PathKind::Shared(SharedKind::Rwlock),
                "jobs",
                Some(Action::Events)
            )
        );
        let (p, watch) = LockPath::parse_get("/semaphores/jobs%2Fevents").unwrap();
        assert_eq!((p.key.as_str(), watch), ("jobs/events", false));
    }

    #[test]
    fn a_bucket_path_names_its_bucket() {
        let p = LockPath::parse("/buckets/b-1/locks/jobs/x", false).unwrap();
        assert_eq!(
            (p.bucket.as_deref(), p.key.as_str()),
            (Some("b-1"), "jobs/x")
        );
        assert!(LockPath::parse("/buckets/b-1/nope/x", false).is_err());
        assert!(LockPath::parse("/locks/%FF", false).is_err());
    }
}
