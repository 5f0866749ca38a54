//! Lock paths. A key may contain `/`, so lock routes take the raw path after `/locks/` and split
//! off the action (`acquire`, `renew`, `release`, `break`, and `events`, the one read by GET)
//! *before* percent-decoding: an encoded slash in a key can then never be mistaken for the action
//! separator. So the status of a key whose last segment is `events` is asked for with that slash
//! encoded (`/locks/jobs%2Fevents`). The decoded key is checked by the engine (`LockKey::parse`).

use percent_encoding::percent_decode_str;

use super::error::ApiError;

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

/// A parsed `/locks/{key}[/{action}]` or `/buckets/{bucket}/locks/{key}[/{action}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockPath {
    pub bucket: Option<String>,
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
        let rest = tail.strip_prefix("locks/").ok_or(ApiError::RouteNotFound)?;
        let (raw_key, action) = if with_action {
            let (k, a) = rest.rsplit_once('/').ok_or(ApiError::RouteNotFound)?;
            (k, Some(a))
        } else {
            (rest, None)
        };
        let key = decode("key", raw_key)?;
        let action = match action {
            Some(word) => Some(Action::parse(word).ok_or(ApiError::RouteNotFound)?),
            None => None,
        };
        Ok(Self {
            bucket,
            key,
            action,
        })
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
