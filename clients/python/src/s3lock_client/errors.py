"""Typed exceptions: one class per problem type the server answers (``urn:s3lock:problem:<kind>``).

Every class derives from :class:`S3LockError`. Answers with a problem+json body raise a subclass of
:class:`ProblemError`; a server that cannot be reached raises :class:`ConnectionFailed`. No
exception ever carries a holder token or an auth token.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Dict, Mapping, Optional, Type

from ._time import parse_time

PROBLEM_PREFIX = "urn:s3lock:problem:"


class S3LockError(Exception):
    """Base class of every error this package raises."""


class ConnectionFailed(S3LockError):
    """The server could not be reached, or the connection broke before an answer arrived."""


class UnexpectedResponse(S3LockError):
    """The server answered something that is neither a lock view nor a problem document."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"unexpected answer (HTTP {status}): {message}")
        self.status = status


class LeaseLost(S3LockError):
    """A lease held through :meth:`Client.lock` is no longer known to be held.

    Raised by ``lease.check()`` (and by leaving the ``with`` block) once a renewal was refused,
    or could not be confirmed before the lease would end. ``cause`` is the error that made it so
    (``None`` when the lease simply ran out of time between renewals).
    """

    def __init__(self, message: str, cause: Optional[BaseException] = None) -> None:
        super().__init__(message)
        self.cause = cause


class ProblemError(S3LockError):
    """An RFC 9457 problem answer. ``kind`` is the part after ``urn:s3lock:problem:``."""

    #: The problem kind this class stands for (``None`` for the base class).
    KIND: Optional[str] = None

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        body: Mapping[str, Any],
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(f"{status} {kind}: {detail or title}")
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.body: Dict[str, Any] = dict(body)
        #: Seconds the server asked us to wait before trying again (``Retry-After``), if any.
        self.retry_after = retry_after


class LockHeld(ProblemError):
    """409 ``lock-held``: another owner holds the lock (until ``expires_at``). For a read-write
    lock, ``owner`` is the holder or the waiting writer in the way."""

    KIND = "lock-held"

    @property
    def owner(self) -> Optional[str]:
        value = self.body.get("owner")
        return value if isinstance(value, str) else None

    @property
    def expires_at(self) -> Optional[_dt.datetime]:
        value = self.body.get("expires_at")
        return parse_time(value) if isinstance(value, str) else None


class LockDelayed(ProblemError):
    """409 ``lock-delayed``: the last holder's lease ran out without a release, and its
    lock-delay keeps the lock from everyone until ``available_at`` (so that writes the vanished
    holder still had in flight land first). ``retry_after`` is the seconds until then."""

    KIND = "lock-delayed"

    @property
    def available_at(self) -> Optional[_dt.datetime]:
        value = self.body.get("available_at")
        return parse_time(value) if isinstance(value, str) else None


class SemaphoreFull(ProblemError):
    """409 ``semaphore-full``: every permit of the semaphore is held (still, after ``wait``). The
    first of their leases ends at ``expires_at`` (a release may free a permit sooner);
    ``retry_after`` is the seconds until then."""

    KIND = "semaphore-full"

    @property
    def expires_at(self) -> Optional[_dt.datetime]:
        return _time_field(self.body, "expires_at")


class LimitMismatch(ProblemError):
    """409 ``limit-mismatch``: the acquire's ``limit`` is not the semaphore's, and holders that
    asked with the stored one remain. Every process must use the same limit; once no holder
    remains, the next acquire's limit replaces the stored one. Waiting does not help."""

    KIND = "limit-mismatch"


class TooManyHolders(ProblemError):
    """409 ``too-many-holders``: the lock (a read-write lock's readers) already has as many holders
    as one document holds; the first of their leases ends at ``expires_at``."""

    KIND = "too-many-holders"

    @property
    def expires_at(self) -> Optional[_dt.datetime]:
        return _time_field(self.body, "expires_at")


class NotHolder(ProblemError):
    """409 ``not-holder``: the holder token does not hold the lock (any more)."""

    KIND = "not-holder"


class WriteUnconfirmed(ProblemError):
    """409 ``write-unconfirmed``: a renew, release or break whose write may have landed, but the
    lock changed before the server could confirm it. Either way the token no longer holds the
    lock: after a release there is nothing left to do; after a renew the lease is lost."""

    KIND = "write-unconfirmed"


class LockUnreadable(ProblemError):
    """409 ``lock-unreadable``: the stored object is not a lock document."""

    KIND = "lock-unreadable"


class LockNotFound(ProblemError):
    """404 ``lock-not-found``: renew or release of a key that was never locked."""

    KIND = "lock-not-found"


class RouteNotFound(ProblemError):
    """404 ``not-found``: no such route."""

    KIND = "not-found"


class MethodNotAllowed(ProblemError):
    """405 ``method-not-allowed``."""

    KIND = "method-not-allowed"


class InvalidInput(ProblemError):
    """400 ``invalid-input``: a bad key, owner, ttl, wait, value, lock_delay, prefix or query;
    ``field`` names it."""

    KIND = "invalid-input"

    @property
    def field(self) -> Optional[str]:
        value = self.body.get("field")
        return value if isinstance(value, str) else None


class MalformedBody(ProblemError):
    """400 ``malformed-body``: not JSON, wrong types, unknown fields, or no token."""

    KIND = "malformed-body"


class Unauthorized(ProblemError):
    """401 ``unauthorized``: no auth token, or an unknown one."""

    KIND = "unauthorized"


class Forbidden(ProblemError):
    """403 ``forbidden``: the auth token may not touch this key (or may not break locks)."""

    KIND = "forbidden"


class BucketNotAllowed(Forbidden):
    """403 ``bucket-not-allowed``: the server was not configured for this bucket."""

    KIND = "bucket-not-allowed"


class BodyTooLarge(ProblemError):
    """413 ``body-too-large``."""

    KIND = "body-too-large"


class UnsupportedMediaType(ProblemError):
    """415 ``unsupported-media-type``."""

    KIND = "unsupported-media-type"


class StoreError(ProblemError):
    """502 ``store-error``: the store refused (missing bucket, bad credentials, no permission)."""

    KIND = "store-error"


class ServiceUnavailable(ProblemError):
    """A 503 answer: worth trying again after ``retry_after`` seconds.

    The client already retries these within the caller's deadline; this is raised once the
    deadline leaves no room for another attempt.
    """


class Contended(ServiceUnavailable):
    """503 ``contended``: writers kept racing on this lock."""

    KIND = "contended"


class StoreUnavailable(ServiceUnavailable):
    """503 ``store-unavailable``: the store could not be reached.

    If an acquire's write was in flight, it may have landed; see the server's README.
    """

    KIND = "store-unavailable"


class ServerTimeout(ServiceUnavailable):
    """503 ``timeout``: the request ran past the server's request timeout."""

    KIND = "timeout"


class ClockUncertain(ServiceUnavailable):
    """503 ``clock-uncertain``: the lease ran out, but the store's hosts' clocks disagree, so
    the server takes over no expired lease until they agree again."""

    KIND = "clock-uncertain"


class TooManyWatchedLocks(ServiceUnavailable):
    """503 ``too-many-watched-locks``: a watch, or an acquire that had to wait, on a lock the
    replica does not watch yet, while it already watches as many locks as it may."""

    KIND = "too-many-watched-locks"


class Overloaded(ServiceUnavailable):
    """503 ``overloaded``: the replica had as many lock requests in flight as it takes; nothing
    was read or written."""

    KIND = "overloaded"


class NotReady(ServiceUnavailable):
    """503 ``not-ready`` (``/readyz`` only)."""

    KIND = "not-ready"


class ShuttingDown(ServiceUnavailable):
    """503 ``shutting-down``: the server is draining before it exits. It takes no new acquire (an
    acquire that was waiting is answered so), and ``/readyz`` says so; renew and release are
    still served. Another replica, or this one once restarted, takes the acquire."""

    KIND = "shutting-down"


def _time_field(body: Mapping[str, Any], name: str) -> Optional[_dt.datetime]:
    value = body.get(name)
    return parse_time(value) if isinstance(value, str) else None


def _all_problem_classes() -> Dict[str, Type[ProblemError]]:
    found: Dict[str, Type[ProblemError]] = {}
    pending = list(ProblemError.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.KIND is not None:
            found[cls.KIND] = cls
    return found


#: Problem kind (after ``urn:s3lock:problem:``) -> exception class.
PROBLEM_CLASSES: Dict[str, Type[ProblemError]] = _all_problem_classes()


def problem_from_body(
    status: int, body: Mapping[str, Any], retry_after: Optional[float]
) -> ProblemError:
    """The typed exception for a problem+json body. Unknown kinds give the base class (or
    :class:`ServiceUnavailable` for a 503), so a newer server never breaks an older client."""
    raw_type = body.get("type")
    type_uri = raw_type if isinstance(raw_type, str) else ""
    kind = type_uri[len(PROBLEM_PREFIX) :] if type_uri.startswith(PROBLEM_PREFIX) else type_uri
    title = body.get("title")
    detail = body.get("detail")
    cls: Type[ProblemError] = PROBLEM_CLASSES.get(
        kind, ServiceUnavailable if status == 503 else ProblemError
    )
    return cls(
        status,
        kind,
        title if isinstance(title, str) else "",
        detail if isinstance(detail, str) else "",
        body,
        retry_after,
    )
