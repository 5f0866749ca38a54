//! Authentication of the lock routes: the middleware that turns an `Authorization: Bearer`
//! header into a [`Caller`], and the checks handlers make against it (key prefix, admin).
//! `/healthz`, `/readyz`, `/metrics` and `/openapi.json` never pass through here.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::auth::{AuthTokens, Principal};

/// Who is calling, as the handlers see it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The server has no auth configured: every key is open, and nobody is an admin.
    Open,
    /// A known credential.
    Known(Principal),
}

impl Caller {
    /// Refuses with 403 when the caller may not use `bucket` (`None`: the server's `default`).
    pub fn authorize_bucket(&self, bucket: Option<&str>, default: &str) -> Result<(), ApiError> {
        match self {
            Caller::Known(p) if !p.may_use_bucket(bucket.unwrap_or(default), default) => {
                Err(ApiError::Forbidden(format!(
                    "the auth token {:?} is not valid on bucket {:?}",
                    p.name,
                    bucket.unwrap_or(default)
                )))
            }
            _ => Ok(()),
        }
    }

    /// Refuses with 403 when the caller may not use `bucket` or its prefix does not cover `key`.
    pub fn authorize(
        &self,
        bucket: Option<&str>,
        default: &str,
        key: &str,
    ) -> Result<(), ApiError> {
        self.authorize_bucket(bucket, default)?;
        self.authorize_key(key)
    }

    /// Refuses with 403 when the caller's prefix does not cover `key`.
    fn authorize_key(&self, key: &str) -> Result<(), ApiError> {
        match self {
            Caller::Known(p) if !p.may_touch(key) => Err(ApiError::Forbidden(format!(
                "the auth token {:?} may only use keys starting with {:?}",
                p.name,
                p.prefix.as_deref().unwrap_or_default()
            ))),
            _ => Ok(()),
        }
    }

    /// The prefix a listing actually runs under: the asked prefix if it lies within the caller's,
    /// the caller's own if the asked one is wider (so a listing never shows a key the caller may
    /// not touch); 403 when the two cannot overlap.
    pub fn list_prefix(&self, asked: &str) -> Result<String, ApiError> {
        match self {
            Caller::Known(Principal {
                prefix: Some(own),
                name,
                ..
            }) => {
                if asked.starts_with(own.as_str()) {
                    Ok(asked.to_owned())
                } else if own.starts_with(asked) {
                    Ok(own.clone())
                } else {
                    Err(ApiError::Forbidden(format!(
                        "the auth token {name:?} may only list keys starting with {own:?}"
                    )))
                }
            }
            _ => Ok(asked.to_owned()),
        }
    }

    /// The admin's name, or 403. Without auth nobody may break a lock: anyone could otherwise
    /// take any lock from its holder, and the lock would be worth nothing.
    pub fn admin(&self) -> Result<&str, ApiError> {
        match self {
            Caller::Known(p) if p.admin => Ok(&p.name),
            Caller::Known(p) => Err(ApiError::Forbidden(format!(
                "the auth token {:?} is not an admin token",
                p.name
            ))),
            Caller::Open => Err(ApiError::Forbidden(
                "breaking a lock needs an admin auth token, and this server has no auth configured"
                    .into(),
            )),
        }
    }
}

/// Puts the [`Caller`] into the request, or answers 401.
pub async fn authenticate(
    State(tokens): State<Option<Arc<AuthTokens>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match &tokens {
        None => Caller::Open,
        Some(tokens) => {
            let presented = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, rest) = v.split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
                });
            match presented {
                None => return ApiError::Unauthorized { presented: false }.into_response(),
                Some(credential) => match tokens.find(credential) {
                    Some(p) => Caller::Known(p.clone()),
                    None => return ApiError::Unauthorized { presented: true }.into_response(),
                },
            }
        }
    };
    if let Caller::Known(p) = &caller {
        tracing::Span::current().record("caller", p.name.as_str());
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Buckets;

    fn known(prefix: Option<&str>, admin: bool) -> Caller {
        Caller::Known(Principal {
            name: "ci".into(),
            prefix: prefix.map(str::to_owned),
            buckets: Buckets::Default,
            admin,
        })
    }

    #[test]
    fn a_prefixed_caller_lists_only_within_its_prefix() {
        let c = known(Some("jobs/"), false);
        assert_eq!(c.list_prefix("jobs/etl").unwrap(), "jobs/etl");
        assert_eq!(c.list_prefix("").unwrap(), "jobs/");
        assert_eq!(c.list_prefix("jo").unwrap(), "jobs/");
        assert!(c.list_prefix("other/").is_err());
        assert_eq!(Caller::Open.list_prefix("x").unwrap(), "x");
    }

    #[test]
    fn only_an_admin_token_may_break() {
        assert!(Caller::Open.admin().is_err());
        assert!(known(None, false).admin().is_err());
        assert_eq!(known(None, true).admin().unwrap(), "ci");
    }
}
