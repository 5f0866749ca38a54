"""Typed views of locks, semaphores and read-write locks. Parsed leniently: fields a newer server
adds are kept in ``extra``."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Any, Dict, Mapping, Optional, Tuple

from ._time import parse_time
from .errors import UnexpectedResponse

_KNOWN = {
    "bucket",
    "key",
    "owner",
    "token",
    "fencing_token",
    "expire",
    "lock_time",
    "release_time",
    "expires_at",
    "ttl_remaining_ms",
    "locked",
    "index",
    "value",
    "available_at",
}


class _Keep:
    """The default of ``value=``: leave the stored value as it is (``None`` would clear it)."""

    def __repr__(self) -> str:
        return "KEEP"


#: ``value=KEEP`` (the default) sends no value: a renew or refresh keeps the stored one, a new
#: grant has none.
KEEP: Any = _Keep()


@dataclasses.dataclass(frozen=True)
class LockView:
    """What the server says about a lock (``GET /locks/{key}``, a release, a list entry)."""

    bucket: str
    key: str
    #: The holder's name; ``None`` once released. An expired lease keeps its owner.
    owner: Optional[str]
    #: Grows by one each time the lock passes to a new holder (and when it is broken).
    fencing_token: int
    #: The lease length in seconds.
    expire: int
    #: When the lease was granted or last renewed, on the store's clock.
    lock_time: _dt.datetime
    release_time: Optional[_dt.datetime]
    #: When the holder's lease ends; ``None`` when released.
    expires_at: Optional[_dt.datetime]
    #: What is left of the lease when the server answered, judged conservatively.
    ttl_remaining_ms: int
    #: Someone holds it now (from ``owner``'s point of view when ``status(key, owner)`` asked).
    locked: bool
    #: Changes with every write of the lock (0 for a lock never written): what :meth:`Client.watch`
    #: waits to see change, and the ``id`` of its events.
    index: int = 0
    #: What the holder published with its lease (any JSON); ``None`` when none. Public: everyone
    #: who may read the lock sees it.
    value: Any = None
    #: When someone other than the holder may next take the lock: the lease's end plus its
    #: lock-delay, while either runs; ``None`` when the lock is free to take now.
    available_at: Optional[_dt.datetime] = None
    #: Fields this version of the client does not know (``revision``, ...), as sent.
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, body: Any) -> "LockView":
        return cls(**_view_fields(body))


@dataclasses.dataclass(frozen=True)
class Lease(LockView):
    """A granted (or renewed) lease: a lock view with the holder token.

    ``token`` is the holder's secret; it is left out of ``repr`` so it is never logged by accident.
    ``valid_until`` is a ``time.monotonic()`` instant: the request's send time plus
    ``ttl_remaining_ms``, before which the lease is certainly still held.
    """

    token: str = dataclasses.field(default="", repr=False)
    #: ``time.monotonic()`` when the request that granted or renewed this lease was sent.
    sent_at: float = 0.0

    @property
    def valid_until(self) -> float:
        return self.sent_at + self.ttl_remaining_ms / 1000.0

    @classmethod
    def from_json_sent(cls, body: Any, sent_at: float) -> "Lease":
        fields = _view_fields(body)
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise UnexpectedResponse(200, "a granted lease without a holder token")
        return cls(**fields, token=token, sent_at=sent_at)


def _view_fields(body: Any) -> Dict[str, Any]:
    if not isinstance(body, dict):
        raise UnexpectedResponse(200, "a lock view must be a JSON object")
    try:
        owner = body.get("owner")
        release_time = body.get("release_time")
        expires_at = body.get("expires_at")
        available_at = body.get("available_at")
        return {
            "bucket": str(body["bucket"]),
            "key": str(body["key"]),
            "owner": None if owner is None else str(owner),
            "fencing_token": int(body["fencing_token"]),
            "expire": int(body["expire"]),
            "lock_time": parse_time(str(body["lock_time"])),
            "release_time": None if release_time is None else parse_time(str(release_time)),
            "expires_at": None if expires_at is None else parse_time(str(expires_at)),
            "ttl_remaining_ms": int(body.get("ttl_remaining_ms", 0)),
            "locked": bool(body["locked"]),
            "index": int(body.get("index", 0)),
            "value": body.get("value"),
            "available_at": None if available_at is None else parse_time(str(available_at)),
            "extra": {k: v for k, v in body.items() if k not in _KNOWN},
        }
    except (KeyError, TypeError, ValueError) as e:
        raise UnexpectedResponse(200, f"not a lock view ({e!r})") from None


@dataclasses.dataclass(frozen=True)
class LockEvent:
    """One event of a lock's change stream (:meth:`Client.events`)."""

    #: ``held``, ``free`` or ``expired`` for a snapshot; ``acquired``, ``renewed``, ``value``,
    #: ``released``, ``expired``, ``free`` or ``broken`` for a change.
    kind: str
    #: The lock's ``index`` at this event (what a resumed stream sends as ``Last-Event-ID``).
    id: int
    #: The lock as it was when the event was sent (never with a token).
    lock: LockView


@dataclasses.dataclass(frozen=True)
class Election:
    """Who leads an election (``GET /elections/{name}``, a campaign's answer)."""

    name: str
    #: The leader's name while its lease runs; ``None`` when there is no leader.
    leader: Optional[str]
    #: What the leader published; ``None`` without a leader (or when it published nothing).
    value: Any
    #: Grows each time leadership passes to a new leader (the lock's fencing token).
    term: int
    #: When the leader's lease ends (past, once it ran out); ``None`` after a resignation.
    expires_at: Optional[_dt.datetime]
    #: What is left of the leader's lease when the server answered, judged conservatively.
    ttl_remaining_ms: int
    #: When a new leader can next be elected; ``None`` when a campaign can win now.
    available_at: Optional[_dt.datetime]
    #: Changes with every write of the election: the ``id`` of its events.
    index: int
    #: The leader's secret (only in the answers to the leader); left out of ``repr``.
    token: Optional[str] = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_json(cls, body: Any) -> "Election":
        if not isinstance(body, dict):
            raise UnexpectedResponse(200, "an election view must be a JSON object")
        try:
            expires_at = body.get("expires_at")
            available_at = body.get("available_at")
            leader = body.get("leader")
            token = body.get("token")
            return cls(
                name=str(body["name"]),
                leader=None if leader is None else str(leader),
                value=body.get("value"),
                term=int(body["term"]),
                expires_at=None if expires_at is None else parse_time(str(expires_at)),
                ttl_remaining_ms=int(body.get("ttl_remaining_ms", 0)),
                available_at=None if available_at is None else parse_time(str(available_at)),
                index=int(body.get("index", 0)),
                token=None if token is None else str(token),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UnexpectedResponse(200, f"not an election view ({e!r})") from None


@dataclasses.dataclass(frozen=True)
class ElectionEvent:
    """One event of an election's change stream (:meth:`Client.observe`)."""

    #: As :class:`LockEvent`'s: ``acquired`` is a new leader, ``released`` a resignation,
    #: ``expired`` a leader whose lease ran out; ``election.leader`` is ``None`` when nobody leads.
    kind: str
    id: int
    election: Election


_HOLDER_KNOWN = {
    "owner",
    "mode",
    "fencing_token",
    "expire",
    "lock_time",
    "expires_at",
    "ttl_remaining_ms",
    "held_since",
}
_WAITING_KNOWN = {"owner", "mode", "expires_at"}
_SHARED_KNOWN = {
    "bucket",
    "key",
    "kind",
    "limit",
    "permits_left",
    "holders",
    "waiting",
    "token",
    "lease",
    "fencing_token",
    "index",
    "waiters_here",
}


@dataclasses.dataclass(frozen=True)
class HolderView:
    """One holder of a semaphore or a read-write lock (never its holder token)."""

    owner: str
    #: ``"shared"`` or ``"exclusive"`` for a read-write lock; ``None`` for a semaphore's permit.
    mode: Optional[str]
    #: This holder's own fencing token, given at its grant and kept on renew.
    fencing_token: int
    #: The lease length in seconds.
    expire: int
    #: When the lease was granted or last renewed, on the store's clock.
    lock_time: _dt.datetime
    expires_at: _dt.datetime
    #: What was left of the lease when the server answered, judged conservatively.
    ttl_remaining_ms: int
    #: When this holder was granted (kept on renew).
    held_since: _dt.datetime
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, body: Any) -> "HolderView":
        if not isinstance(body, dict):
            raise TypeError("a holder must be a JSON object")
        mode = body.get("mode")
        return cls(
            owner=str(body["owner"]),
            mode=None if mode is None else str(mode),
            fencing_token=int(body["fencing_token"]),
            expire=int(body["expire"]),
            lock_time=parse_time(str(body["lock_time"])),
            expires_at=parse_time(str(body["expires_at"])),
            ttl_remaining_ms=int(body.get("ttl_remaining_ms", 0)),
            held_since=parse_time(str(body["held_since"])),
            extra={k: v for k, v in body.items() if k not in _HOLDER_KNOWN},
        )


@dataclasses.dataclass(frozen=True)
class WaitingView:
    """A writer waiting for a read-write lock, as recorded in its document (on any replica)."""

    owner: str
    mode: str
    #: When the entry lapses unless its waiter, still waiting, renews it.
    expires_at: _dt.datetime
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, body: Any) -> "WaitingView":
        if not isinstance(body, dict):
            raise TypeError("a waiting entry must be a JSON object")
        return cls(
            owner=str(body["owner"]),
            mode=str(body["mode"]),
            expires_at=parse_time(str(body["expires_at"])),
            extra={k: v for k, v in body.items() if k not in _WAITING_KNOWN},
        )


@dataclasses.dataclass(frozen=True)
class SharedView:
    """A semaphore or a read-write lock as the server shows it: its live holders (never their
    tokens), the permits left, the writers waiting."""

    bucket: str
    key: str
    #: ``"semaphore"`` or ``"rwlock"``.
    kind: str
    #: A semaphore's limit; ``None`` for a read-write lock, and for a semaphore never acquired.
    limit: Optional[int]
    #: The permits an acquire could take now; ``None`` where ``limit`` is.
    permits_left: Optional[int]
    #: The holders whose leases run, in grant order.
    holders: Tuple[HolderView, ...]
    #: A read-write lock's waiting writers: no new reader is let in while one is listed.
    waiting: Tuple[WaitingView, ...]
    #: The highest fencing token granted under this key (each holder has its own).
    fencing_token: int
    #: Changes with every write (the document's revision).
    index: int
    #: Acquires blocked on this key on the replica that answered.
    waiters_here: int = 0
    #: The caller's own holding: only in acquire and renew answers.
    lease: Optional[HolderView] = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, body: Any) -> "SharedView":
        return cls(**_shared_fields(body))


@dataclasses.dataclass(frozen=True)
class SharedLease(SharedView):
    """A granted (or renewed) holding of a semaphore or a read-write lock: the view, with the
    caller's ``lease`` (also ``holder``) and ``token`` (its secret, left out of ``repr``).
    ``expire`` and ``ttl_remaining_ms`` are the caller's own lease's; its fencing token is
    ``holder.fencing_token`` (``fencing_token`` is the key's highest)."""

    token: str = dataclasses.field(default="", repr=False)
    #: ``time.monotonic()`` when the request that granted or renewed this holding was sent.
    sent_at: float = 0.0

    @property
    def holder(self) -> HolderView:
        """The caller's own holding (an acquire or renew answer always has it)."""
        assert self.lease is not None, "checked by from_json_sent"
        return self.lease

    @property
    def expire(self) -> int:
        return self.holder.expire

    @property
    def ttl_remaining_ms(self) -> int:
        return self.holder.ttl_remaining_ms

    @property
    def valid_until(self) -> float:
        """The ``time.monotonic()`` instant before which this holding is certainly held."""
        return self.sent_at + self.ttl_remaining_ms / 1000.0

    @classmethod
    def from_json_sent(cls, body: Any, sent_at: float) -> "SharedLease":
        fields = _shared_fields(body)
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise UnexpectedResponse(200, "a granted holding without a holder token")
        if fields["lease"] is None:
            raise UnexpectedResponse(200, "a granted holding without the caller's lease")
        return cls(**fields, token=token, sent_at=sent_at)


@dataclasses.dataclass(frozen=True)
class SharedEvent:
    """One event of a semaphore's or read-write lock's change stream
    (:meth:`Client.events` with ``kind="semaphore"`` or ``kind="rwlock"``)."""

    #: ``state`` first (and for a change nothing else names); then ``acquired``, ``released``,
    #: ``renewed``, ``broken``, ``expired`` (a holder's lease ran out) or ``waiting`` (a
    #: read-write lock's waiting writer recorded, renewed, withdrawn or lapsed).
    kind: str
    #: The ``index`` at this event (what a resumed stream sends as ``Last-Event-ID``).
    id: int
    #: The semaphore or read-write lock as it was when the event was sent (never a token).
    view: SharedView


def _shared_fields(body: Any) -> Dict[str, Any]:
    if not isinstance(body, dict):
        raise UnexpectedResponse(200, "a shared view must be a JSON object")
    try:
        limit = body.get("limit")
        permits_left = body.get("permits_left")
        lease = body.get("lease")
        return {
            "bucket": str(body["bucket"]),
            "key": str(body["key"]),
            "kind": str(body["kind"]),
            "limit": None if limit is None else int(limit),
            "permits_left": None if permits_left is None else int(permits_left),
            "holders": tuple(HolderView.from_json(h) for h in body["holders"]),
            "waiting": tuple(WaitingView.from_json(w) for w in body.get("waiting", [])),
            "fencing_token": int(body["fencing_token"]),
            "index": int(body["index"]),
            "waiters_here": int(body.get("waiters_here", 0)),
            "lease": None if lease is None else HolderView.from_json(lease),
            "extra": {k: v for k, v in body.items() if k not in _SHARED_KNOWN},
        }
    except (KeyError, TypeError, ValueError) as e:
        raise UnexpectedResponse(200, f"not a shared view ({e!r})") from None
