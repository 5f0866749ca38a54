"""The client: one method per route (locks, semaphores, read-write locks), typed answers, typed
errors, 503 retries within a deadline."""

from __future__ import annotations

import email.utils
import json
import os
import ssl
import time
import urllib.parse
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Literal,
    Optional,
    Tuple,
    Union,
    overload,
)

from ._http import Response, Stream, Transport
from .errors import (
    ConnectionFailed,
    ProblemError,
    ServiceUnavailable,
    UnexpectedResponse,
    problem_from_body,
)
from .lease import LostCallback, ManagedLease
from .models import (
    KEEP,
    Election,
    ElectionEvent,
    Lease,
    LockEvent,
    LockView,
    SharedEvent,
    SharedLease,
    SharedView,
)
from .shared import RWLock, Semaphore

if TYPE_CHECKING:
    from .election import Leadership, LostLeadershipCallback

__all__ = ["Client", "DEFAULT_URL"]

#: What the CLI uses when neither ``url`` nor ``S3LOCK_URL`` is given.
DEFAULT_URL = "http://127.0.0.1:8080"
_USER_AGENT = "s3lock-client-python/0.1.0"
#: How long a change stream may stay silent before it is taken for dead and reconnected: the
#: server sends a keep-alive comment after 15 s without an event.
STREAM_SILENCE = 45.0


def _quote_key(key: str) -> str:
    # "/" separates a key's segments in the route; each segment is escaped on its own.
    return "/".join(urllib.parse.quote(segment, safe="") for segment in key.split("/"))


#: Where each shared kind's routes live.
_COLLECTIONS = {"semaphore": "semaphores", "rwlock": "rwlocks"}
_MODES = ("shared", "exclusive")


def _retry_after(value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _tls_context(
    ca_cert: Optional[str], client_cert: Optional[str], client_key: Optional[str]
) -> ssl.SSLContext:
    """The standard library's verifying context: the server's name and chain are checked."""
    if bool(client_cert) != bool(client_key):
        raise ValueError("client_cert and client_key go together (S3LOCK_CLIENT_CERT/_KEY)")
    context = ssl.create_default_context(cafile=ca_cert)
    if client_cert and client_key:
        context.load_cert_chain(client_cert, client_key)
    return context


class Client:
    """A client of one s3lock server. Thread-safe: each thread keeps its own keep-alive
    connection.

    ``url`` and ``auth_token`` default to ``S3LOCK_URL`` and ``S3LOCK_AUTH_TOKEN``, as the CLI's
    do. ``bucket`` selects ``/buckets/{bucket}/...`` (the server's default bucket when ``None``).
    ``timeout`` is the deadline of one call in seconds (an acquire's ``wait`` is added to it):
    within it, a 503 answer with ``Retry-After`` is tried again; past it, the error is raised.

    Over ``https://``, the server's certificate is checked against ``ca_cert`` (a PEM file of
    CA certificates; default ``S3LOCK_CA_CERT``, else the system's trusted CAs), and
    ``client_cert`` and ``client_key`` (PEM files; default ``S3LOCK_CLIENT_CERT`` and
    ``S3LOCK_CLIENT_KEY``) are presented to a server that requires client certificates, as the
    CLI does. Or pass an ``ssl.SSLContext`` of your own as ``ssl_context`` instead of those.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        auth_token: Optional[str] = None,
        timeout: float = 30.0,
        *,
        bucket: Optional[str] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        ca_cert: Optional[str] = None,
        client_cert: Optional[str] = None,
        client_key: Optional[str] = None,
    ) -> None:
        self.url = url or os.environ.get("S3LOCK_URL") or DEFAULT_URL
        token = auth_token if auth_token is not None else os.environ.get("S3LOCK_AUTH_TOKEN")
        # The bearer credential; kept out of repr and never put in an error message.
        self._auth_token = token or None
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = float(timeout)
        self.bucket = bucket
        if ssl_context is not None and (ca_cert or client_cert or client_key):
            raise ValueError("give ssl_context, or ca_cert/client_cert/client_key: not both")
        if ssl_context is None and self.url.startswith("https://"):
            ssl_context = _tls_context(
                ca_cert or os.environ.get("S3LOCK_CA_CERT") or None,
                client_cert or os.environ.get("S3LOCK_CLIENT_CERT") or None,
                client_key or os.environ.get("S3LOCK_CLIENT_KEY") or None,
            )
        self._transport = Transport(self.url, ssl_context)

    def __repr__(self) -> str:
        auth = ", auth_token=<set>" if self._auth_token else ""
        bucket = f", bucket={self.bucket!r}" if self.bucket else ""
        return f"Client(url={self.url!r}{bucket}{auth})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes every keep-alive connection (the client stays usable: it reconnects)."""
        self._transport.close()

    # -- routes ---------------------------------------------------------------------------

    def acquire(
        self,
        key: str,
        owner: Optional[str] = None,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
        *,
        token: Optional[str] = None,
        value: Any = KEEP,
        lock_delay: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Lease:
        """Takes the lock (or, given the current holder ``token``, refreshes it).

        ``owner`` defaults to a random name chosen by the server; ``ttl`` to the server's
        default lease; ``wait`` (seconds) is how long the server may wait for a held lock to come
        free (through a lock-delay too). Raises :class:`LockHeld` if another owner still holds
        it after ``wait``, :class:`LockDelayed` if the lock is kept for the lock-delay after a
        lease that ran out unreleased.

        ``value``: any JSON-serialisable value to publish with the lease (at most 4096 bytes of
        compact JSON), shown to everyone who may read the lock: never a secret. ``None`` clears
        it on a refresh; left out, a refresh keeps it. ``lock_delay``: seconds nobody may take
        the lock after this lease, should it run out without a release (0 to the server's
        maximum; the server's default is 0).
        """
        fields: Dict[str, Any] = {}
        if value is not KEEP:
            fields["value"] = value
        if lock_delay is not None:
            fields["lock_delay"] = lock_delay
        answer, sent_at = self._acquire_call(
            self._lock_path(key, "acquire"), owner, token, ttl, wait, fields, timeout
        )
        return Lease.from_json_sent(answer, sent_at)

    def renew(
        self,
        key: str,
        token: str,
        ttl: Optional[int] = None,
        *,
        value: Any = KEEP,
        lock_delay: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Lease:
        """Restarts the lease at ``ttl`` seconds from now (the server's default when ``None``,
        not the previous length), publishing ``value`` if given (``None`` clears it; left out,
        the stored value is kept) and setting ``lock_delay`` if given. Raises
        :class:`NotHolder` if ``token`` no longer holds it."""
        b: Dict[str, Any] = {"token": token}
        if ttl is not None:
            b["ttl"] = ttl
        if value is not KEEP:
            b["value"] = value
        if lock_delay is not None:
            b["lock_delay"] = lock_delay
        answer, sent_at = self._call("POST", self._lock_path(key, "renew"), lambda: b, timeout)
        return Lease.from_json_sent(answer, sent_at)

    def release(self, key: str, token: str, *, timeout: Optional[float] = None) -> LockView:
        """Releases the lock. Releasing again with the same token is a no-op. Raises
        :class:`WriteUnconfirmed` when the store's answer was lost and the lock changed before
        the release could be confirmed: released, or lost, the token holds nothing now, so
        there is nothing left to do."""
        answer, _ = self._call(
            "POST", self._lock_path(key, "release"), lambda: {"token": token}, timeout
        )
        return LockView.from_json(answer)

    def status(
        self, key: str, owner: Optional[str] = None, *, timeout: Optional[float] = None
    ) -> LockView:
        """The lock as it is now. With ``owner``, ``locked`` is from that owner's point of view
        (``False`` when ``owner`` is the holder), as the old module's ``is_locked``."""
        query = "" if owner is None else "?" + urllib.parse.urlencode({"owner": owner})
        answer, _ = self._call("GET", self._lock_path(key) + query, None, timeout)
        return LockView.from_json(answer)

    def watch(
        self,
        key: str,
        index: int,
        wait: Optional[float] = None,
        *,
        timeout: Optional[float] = None,
    ) -> LockView:
        """A blocking query: the lock as soon as its ``index`` is no longer ``index`` (at once if
        it already differs), or after ``wait`` seconds (the server's default, 30, when ``None``)
        with the unchanged view. Pass the answer's ``index`` back to wait for the next change."""
        query: Dict[str, str] = {"index": str(index)}
        if wait is not None:
            query["wait"] = str(wait)
        path = self._lock_path(key) + "?" + urllib.parse.urlencode(query)
        extra = 30.0 if wait is None else max(0.0, float(wait))
        answer, _ = self._call("GET", path, None, timeout, extra=extra)
        return LockView.from_json(answer)

    @overload
    def events(
        self, key: str, last_event_id: Optional[int] = None, *, kind: Literal["lock"] = "lock"
    ) -> Iterator[LockEvent]: ...

    @overload
    def events(
        self,
        key: str,
        last_event_id: Optional[int] = None,
        *,
        kind: Literal["semaphore", "rwlock"],
    ) -> Iterator[SharedEvent]: ...

    def events(
        self, key: str, last_event_id: Optional[int] = None, *, kind: str = "lock"
    ) -> Union[Iterator[LockEvent], Iterator[SharedEvent]]:
        """The change stream of the lock ``key`` (or, with ``kind="semaphore"`` or
        ``kind="rwlock"``, of that semaphore or read-write lock): its state first (unless
        ``last_event_id`` is the current index), then one event per change, for as long as the
        caller iterates::

            for event in client.events("jobs/etl"):
                if event.kind in ("released", "expired", "broken", "free"):
                    ...  # nobody holds it now

            for event in client.events("deploys", kind="semaphore"):
                print(event.kind, event.view.permits_left)

        A lock's events are :class:`LockEvent`\ s, the others' :class:`SharedEvent`\ s. A dropped
        connection (or a server that drains) is reconnected with the last event's id as
        ``Last-Event-ID``; the server then sends the state at once if it changed meanwhile
        (the changes missed folded into one event). Raises :class:`ConnectionFailed` when no
        server answers for the client's ``timeout``, and :class:`LockUnreadable` if the stored
        document turns unreadable. The stream is opened before this returns (so a refusal,
        such as :class:`TooManyWatchedLocks` past its retries, is raised here); leaving the loop
        closes the connection."""
        if kind == "lock":
            stream = self._follow(self._lock_path(key, "events"), last_event_id)
            return (
                LockEvent(kind=k, id=event_id, lock=LockView.from_json(data))
                for k, event_id, data in stream
            )
        shared = self._follow(self._shared_path(kind, key, "events"), last_event_id)
        return (
            SharedEvent(kind=k, id=event_id, view=SharedView.from_json(data))
            for k, event_id, data in shared
        )

    def list(
        self,
        prefix: str = "",
        *,
        page_size: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> List[LockView]:
        """Every lock whose key starts with ``prefix``, in key order: all of the server's pages
        (``page_size`` locks each at most; the server's default when ``None``). ``timeout`` is
        the deadline of each page's call. For a prefix with very many locks,
        :meth:`iter_locks` holds one page at a time."""
        return [*self.iter_locks(prefix, page_size=page_size, timeout=timeout)]

    def iter_locks(
        self,
        prefix: str = "",
        *,
        page_size: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[LockView]:
        """The locks whose key starts with ``prefix``, in key order, asking the server for the
        next page only once the one before has been gone through."""
        for v in self._pages("locks", prefix, page_size, timeout):
            yield LockView.from_json(v)

    def semaphores(
        self,
        prefix: str = "",
        *,
        page_size: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[SharedView]:
        """The semaphores whose key starts with ``prefix``, in key order (never their holders'
        tokens), a page at a time as :meth:`iter_locks`."""
        for v in self._pages("semaphores", prefix, page_size, timeout):
            yield SharedView.from_json(v)

    def rwlocks(
        self,
        prefix: str = "",
        *,
        page_size: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[SharedView]:
        """The read-write locks whose key starts with ``prefix``, in key order, a page at a
        time as :meth:`iter_locks`."""
        for v in self._pages("rwlocks", prefix, page_size, timeout):
            yield SharedView.from_json(v)

    def _pages(
        self,
        collection: str,
        prefix: str,
        page_size: Optional[int],
        timeout: Optional[float],
    ) -> Iterator[Any]:
        """The entries of ``GET /{collection}``, page after page: each page is asked for only
        once the one before has been gone through (its array is named as the collection)."""
        cursor: Optional[str] = None
        while True:
            query: Dict[str, str] = {}
            if prefix:
                query["prefix"] = prefix
            if page_size is not None:
                query["limit"] = str(page_size)
            if cursor is not None:
                query["cursor"] = cursor
            path = f"{self._bucket_path()}/{collection}"
            if query:
                path += "?" + urllib.parse.urlencode(query)
            answer, _ = self._call("GET", path, None, timeout)
            entries = answer.get(collection) if isinstance(answer, dict) else None
            if not isinstance(entries, list):
                raise UnexpectedResponse(200, f"a listing without a '{collection}' array")
            yield from entries
            nxt = answer.get("next")
            # A server that does not page sends no "next"; one that sent back the cursor it was
            # given would never end the loop.
            if not isinstance(nxt, str) or nxt == cursor:
                return
            cursor = nxt

    def break_lock(
        self, key: str, reason: Optional[str] = None, *, timeout: Optional[float] = None
    ) -> LockView:
        """Takes the lock away from its holder (admin auth tokens only)."""
        b: Dict[str, Any] = {} if reason is None else {"reason": reason}
        answer, _ = self._call("POST", self._lock_path(key, "break"), lambda: b, timeout)
        return LockView.from_json(answer)

    def healthy(self, *, timeout: Optional[float] = None) -> bool:
        """``GET /healthz``: the server process answers."""
        answer, _ = self._call("GET", "/healthz", None, timeout)
        return isinstance(answer, dict) and answer.get("status") == "ok"

    def ready(self, *, timeout: Optional[float] = None) -> bool:
        """``GET /readyz``: True when the store answers; raises :class:`NotReady` otherwise (after
        retrying within the deadline)."""
        answer, _ = self._call("GET", "/readyz", None, timeout)
        return isinstance(answer, dict) and answer.get("status") == "ready"

    def lock(
        self,
        key: str,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
        *,
        owner: Optional[str] = None,
        value: Any = KEEP,
        lock_delay: Optional[int] = None,
        on_lost: Optional[LostCallback] = None,
    ) -> ManagedLease:
        """A lease that renews itself, for ``with``::

            with client.lock("jobs/nightly-etl", ttl=60, wait=10) as lease:
                write(data, fence=lease.fencing_token)
                lease.check()  # raises LeaseLost once the lease is no longer certainly held

        The lock is acquired on entering the block, renewed in the background every third of
        the lease (counted from when each renewal was sent), and released on leaving it (also
        on an exception). ``value`` and ``lock_delay`` are sent with the acquire (see
        :meth:`acquire`); the renewals keep them. See :class:`ManagedLease`.
        """
        return ManagedLease(
            self,
            key,
            ttl=ttl,
            wait=wait,
            owner=owner,
            value=value,
            lock_delay=lock_delay,
            on_lost=on_lost,
        )

    # -- semaphores and read-write locks ---------------------------------------------------

    def semaphore_acquire(
        self,
        key: str,
        limit: int,
        owner: Optional[str] = None,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
        *,
        token: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> SharedLease:
        """Takes one of the ``limit`` permits of the semaphore ``key`` (at most ``limit`` holders
        at once; every process must ask with the same ``limit``), waiting up to ``wait`` seconds
        for one to come free. Raises :class:`SemaphoreFull` if none did, :class:`LimitMismatch`
        if holders that asked with another limit remain. Given the ``token`` of a permit this
        owner holds, refreshes it."""
        answer, sent_at = self._acquire_call(
            self._shared_path("semaphore", key, "acquire"),
            owner,
            token,
            ttl,
            wait,
            {"limit": limit},
            timeout,
        )
        return SharedLease.from_json_sent(answer, sent_at)

    def rwlock_acquire(
        self,
        key: str,
        mode: str,
        owner: Optional[str] = None,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
        *,
        token: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> SharedLease:
        """Takes the read-write lock ``key`` in ``mode``: ``"shared"`` beside other readers, or
        ``"exclusive"`` alone, waiting up to ``wait`` seconds. A waiting writer stops new readers
        from being let in (so readers cannot starve it). Raises :class:`LockHeld` (``owner``:
        the holder or waiting writer in the way) if it is still taken after ``wait``."""
        if mode not in _MODES:
            raise ValueError(f"mode is 'shared' or 'exclusive', not {mode!r}")
        answer, sent_at = self._acquire_call(
            self._shared_path("rwlock", key, "acquire"),
            owner,
            token,
            ttl,
            wait,
            {"mode": mode},
            timeout,
        )
        return SharedLease.from_json_sent(answer, sent_at)

    def shared_renew(
        self,
        kind: str,
        key: str,
        token: str,
        ttl: Optional[int] = None,
        *,
        timeout: Optional[float] = None,
    ) -> SharedLease:
        """Restarts the lease of the holding ``token`` names (``kind``: ``"semaphore"`` or
        ``"rwlock"``) at ``ttl`` seconds from now. Raises :class:`NotHolder` if ``token`` no
        longer holds it."""
        b: Dict[str, Any] = {"token": token}
        if ttl is not None:
            b["ttl"] = ttl
        path = self._shared_path(kind, key, "renew")
        answer, sent_at = self._call("POST", path, lambda: b, timeout)
        return SharedLease.from_json_sent(answer, sent_at)

    def shared_release(
        self, kind: str, key: str, token: str, *, timeout: Optional[float] = None
    ) -> SharedView:
        """Gives back the holding ``token`` names; the other holders keep theirs."""
        path = self._shared_path(kind, key, "release")
        answer, _ = self._call("POST", path, lambda: {"token": token}, timeout)
        return SharedView.from_json(answer)

    def shared_break(self, kind: str, key: str, *, timeout: Optional[float] = None) -> SharedView:
        """Ends every holding of the semaphore or read-write lock (admin auth tokens only)."""
        path = self._shared_path(kind, key, "break")
        answer, _ = self._call("POST", path, lambda: {}, timeout)
        return SharedView.from_json(answer)

    def shared_status(self, kind: str, key: str, *, timeout: Optional[float] = None) -> SharedView:
        """The semaphore or read-write lock as it is now: its holders (never their tokens), the
        permits left, the writers waiting."""
        answer, _ = self._call("GET", self._shared_path(kind, key), None, timeout)
        return SharedView.from_json(answer)

    def semaphore(
        self,
        key: str,
        limit: int,
        *,
        owner: Optional[str] = None,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
    ) -> Semaphore:
        """The semaphore ``key`` of ``limit`` permits; ``acquire()`` takes one, renewed in the
        background until released::

            with client.semaphore("deploys", 4, ttl=60, wait=600).acquire() as permit:
                deploy(fence=permit.fencing_token)
                permit.check()  # raises LeaseLost once the permit is not certainly held

        See :class:`Semaphore` and :class:`SharedHolding`."""
        return Semaphore(self, key, limit, owner=owner, ttl=ttl, wait=wait)

    def rwlock(
        self,
        key: str,
        *,
        owner: Optional[str] = None,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
    ) -> RWLock:
        """The read-write lock ``key``; ``shared()`` and ``exclusive()`` take it, renewed in the
        background until released::

            with client.rwlock("catalog").shared(wait=10) as reading:
                read(fence=reading.fencing_token)

        See :class:`RWLock` and :class:`SharedHolding`."""
        return RWLock(self, key, owner=owner, ttl=ttl, wait=wait)

    # -- elections --------------------------------------------------------------------------

    def campaign(
        self,
        name: str,
        value: Any = None,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
        *,
        candidate: Optional[str] = None,
        lock_delay: Optional[int] = None,
        on_lost: Optional["LostLeadershipCallback"] = None,
    ) -> "Leadership":
        """Leadership of the election ``name``, for ``with``::

            with client.campaign("scheduler", value="10.0.0.7:8080", ttl=30, wait=300) as leader:
                while not leader.lost.is_set():
                    run_one_step(term=leader.term)

        Campaigns on entering the block (raising :class:`LockHeld`, which names the leader, if
        another still leads after ``wait`` seconds), renews in the background, sets
        ``leader.lost`` before leadership can end, and resigns on leaving the block. See
        :class:`~s3lock_client.election.Leadership`."""
        from .election import Leadership

        return Leadership(
            self,
            name,
            value=value,
            ttl=ttl,
            wait=wait,
            candidate=candidate,
            lock_delay=lock_delay,
            on_lost=on_lost,
        )

    def election(self, name: str, *, timeout: Optional[float] = None) -> Election:
        """Who leads ``name`` now (``leader`` is ``None`` when nobody does)."""
        answer, _ = self._call("GET", self._election_path(name), None, timeout)
        return Election.from_json(answer)

    def proclaim(
        self,
        name: str,
        token: str,
        value: Any,
        *,
        ttl: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Election:
        """The leader (``token``) publishes ``value`` and restarts its lease."""
        b: Dict[str, Any] = {"token": token, "value": value}
        if ttl is not None:
            b["ttl"] = ttl
        answer, _ = self._call("POST", self._election_path(name, "proclaim"), lambda: b, timeout)
        return Election.from_json(answer)

    def resign(self, name: str, token: str, *, timeout: Optional[float] = None) -> Election:
        """The leader (``token``) steps down; resigning again is a no-op."""
        answer, _ = self._call(
            "POST", self._election_path(name, "resign"), lambda: {"token": token}, timeout
        )
        return Election.from_json(answer)

    def observe(self, name: str, last_event_id: Optional[int] = None) -> Iterator[ElectionEvent]:
        """The election's change stream: who leads first, then one :class:`ElectionEvent` per
        change, "no leader" included (``event.election.leader is None`` after a resignation,
        a lease that ran out, a break). Reconnects as :meth:`events` does."""
        stream = self._follow(self._election_path(name, "observe"), last_event_id)
        return (
            ElectionEvent(kind=kind, id=event_id, election=Election.from_json(data))
            for kind, event_id, data in stream
        )

    def _campaign(
        self,
        name: str,
        candidate: Optional[str],
        value: Any,
        ttl: Optional[int],
        wait: Optional[float],
        lock_delay: Optional[int],
    ) -> Election:
        b: Dict[str, Any] = {}
        if candidate is not None:
            b["candidate"] = candidate
        if value is not None:
            b["value"] = value
        if ttl is not None:
            b["ttl"] = ttl
        if wait is not None:
            b["wait"] = wait
        if lock_delay is not None:
            b["lock_delay"] = lock_delay
        answer, _ = self._call(
            "POST",
            self._election_path(name, "campaign"),
            lambda: b,
            None,
            extra=max(0.0, float(wait or 0.0)),
        )
        return Election.from_json(answer)

    def _renew_leadership(
        self, name: str, token: str, ttl: Optional[int], timeout: Optional[float]
    ) -> Election:
        b: Dict[str, Any] = {"token": token}
        if ttl is not None:
            b["ttl"] = ttl
        answer, _ = self._call("POST", self._election_path(name, "renew"), lambda: b, timeout)
        return Election.from_json(answer)

    def _election_path(self, name: str, action: Optional[str] = None) -> str:
        path = f"/elections/{_quote_key(name)}"
        return f"{path}/{action}" if action else path

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw_body: Optional[bytes] = None,
        content_type: Optional[str] = "application/json",
        timeout: Optional[float] = None,
    ) -> Any:
        """A raw call to any route (``path`` from the server's root, query included): the parsed
        JSON answer, or the typed exception. For routes this client has no method for yet."""
        payload = raw_body if raw_body is not None else (
            None if body is None else json.dumps(body).encode()
        )
        answer, _ = self._send_with_retries(method, path, lambda: payload, content_type, timeout, 0.0)
        return answer

    # -- plumbing -------------------------------------------------------------------------

    def _bucket_path(self) -> str:
        if self.bucket is None:
            return ""
        return "/buckets/" + urllib.parse.quote(self.bucket, safe="")

    def _lock_path(self, key: str, action: Optional[str] = None) -> str:
        path = f"{self._bucket_path()}/locks/{_quote_key(key)}"
        return f"{path}/{action}" if action else path

    def _shared_path(self, kind: str, key: str, action: Optional[str] = None) -> str:
        collection = _COLLECTIONS.get(kind)
        if collection is None:
            raise ValueError(f"kind is 'semaphore' or 'rwlock', not {kind!r}")
        path = f"{self._bucket_path()}/{collection}/{_quote_key(key)}"
        return f"{path}/{action}" if action else path

    def _acquire_call(
        self,
        path: str,
        owner: Optional[str],
        token: Optional[str],
        ttl: Optional[int],
        wait: Optional[float],
        fields: Dict[str, Any],
        timeout: Optional[float],
    ) -> "tuple[Any, float]":
        """An acquire of any kind: the fields every acquire has, and ``fields`` of its own. The
        deadline is the call's timeout plus ``wait``."""
        wait_s = float(wait) if wait is not None else 0.0
        start = time.monotonic()

        def body() -> Dict[str, Any]:
            b: Dict[str, Any] = {}
            if owner is not None:
                b["owner"] = owner
            if token is not None:
                b["token"] = token
            if ttl is not None:
                b["ttl"] = ttl
            b.update(fields)
            if wait is not None:
                # After a retried 503, only what is left of the wait (the server judges the rest).
                left = start + wait_s - time.monotonic()
                b["wait"] = wait if wait_s <= 0 or left >= wait_s else round(max(0.0, left), 3)
            return b

        return self._call("POST", path, body, timeout, extra=max(0.0, wait_s))

    def _follow(
        self, path: str, last_event_id: Optional[int]
    ) -> Iterator[Tuple[str, int, Any]]:
        """Reads the server-sent events at ``path`` as (kind, id, data), reconnecting with
        ``Last-Event-ID`` whenever the stream ends or breaks. The first stream is opened before
        this returns, so a refusal (a 409, a 403) is raised by the call itself; a stream that
        cannot be opened again for ``self.timeout`` seconds raises the last error."""
        first = self._open_events(path, last_event_id, time.monotonic())
        return self._read_following(path, last_event_id, first)

    def _read_following(
        self, path: str, last: Optional[int], stream: Stream
    ) -> Iterator[Tuple[str, int, Any]]:
        while True:
            try:
                for kind, event_id, data in _read_events(stream):
                    if kind == "unreadable":
                        raise problem_from_body(409, data, None)
                    last = event_id
                    yield kind, event_id, data
            except ConnectionFailed:
                pass  # dropped: reconnect
            finally:
                stream.close()
            # The stream ended (the server drains) or broke: open another where it left off.
            stream = self._open_events(path, last, time.monotonic())

    def _open_events(self, path: str, last: Optional[int], lost_at: float) -> Stream:
        """A 200 event stream at ``path``, resuming after ``last``: tried again on a failed
        connection and on a 503 with ``Retry-After``, until ``self.timeout`` after ``lost_at``."""
        pause = 0.1
        while True:
            headers = {"Accept": "text/event-stream", "User-Agent": _USER_AGENT}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            if self._auth_token:
                headers["Authorization"] = f"Bearer {self._auth_token}"
            try:
                stream = self._transport.open_stream(path, headers, STREAM_SILENCE)
            except ConnectionFailed:
                if time.monotonic() + pause - lost_at > self.timeout:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            if stream.status == 200:
                return stream
            try:
                body = stream.read_all()
            finally:
                stream.close()
            error = _problem(Response(stream.status, stream.headers, body))
            if not isinstance(error, ServiceUnavailable) or error.retry_after is None:
                raise error
            if time.monotonic() + error.retry_after - lost_at > self.timeout:
                raise error
            time.sleep(error.retry_after)

    def _call(
        self,
        method: str,
        path: str,
        body: Optional[Callable[[], Dict[str, Any]]],
        timeout: Optional[float],
        extra: float = 0.0,
    ) -> "tuple[Any, float]":
        if body is None:
            payload: Callable[[], Optional[bytes]] = lambda: None
        else:
            make = body
            payload = lambda: json.dumps(make()).encode()
        return self._send_with_retries(method, path, payload, "application/json", timeout, extra)

    def _send_with_retries(
        self,
        method: str,
        path: str,
        payload: Callable[[], Optional[bytes]],
        content_type: Optional[str],
        timeout: Optional[float],
        extra: float,
    ) -> "tuple[Any, float]":
        """Sends until an answer that is not a retryable 503, or the deadline. Returns the parsed
        answer and the ``time.monotonic()`` at which the successful attempt was sent."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout) + extra
        # The 503 being retried, if any: raised instead if the retry cannot finish in time.
        previous: Optional[ServiceUnavailable] = None
        while True:
            sent_at = time.monotonic()
            remaining = max(deadline - sent_at, 0.001)
            data = payload()
            headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
            if data is not None and content_type is not None:
                headers["Content-Type"] = content_type
            if self._auth_token:
                headers["Authorization"] = f"Bearer {self._auth_token}"
            try:
                resp = self._transport.request(method, path, data, headers, remaining)
            except ConnectionFailed:
                if previous is not None:
                    raise previous
                raise
            if 200 <= resp.status < 300:
                return _json(resp), sent_at
            error = _problem(resp)
            if isinstance(error, ServiceUnavailable) and error.retry_after is not None:
                if time.monotonic() + error.retry_after < deadline:
                    previous = error
                    time.sleep(error.retry_after)
                    continue
            raise error


def _read_events(stream: Stream) -> Iterator[Tuple[str, int, Any]]:
    """The events of a server-sent event stream as (kind, id, parsed data), until it ends.
    Comments (keep-alives) are skipped; an event without an id (``unreadable``) has id -1."""
    kind, event_id = "message", -1
    data: List[str] = []
    while True:
        line = stream.readline()
        if not line:
            return
        text = line.decode("utf-8").rstrip("\r\n")
        if not text:
            if data:
                try:
                    parsed = json.loads("\n".join(data))
                except ValueError:
                    raise UnexpectedResponse(200, "an event whose data is not JSON") from None
                yield kind, event_id, parsed
            kind, event_id, data = "message", -1, []
            continue
        field, _, value = text.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            kind = value
        elif field == "id":
            try:
                event_id = int(value)
            except ValueError:
                raise UnexpectedResponse(200, f"an event id that is not a number: {value!r}") from None
        elif field == "data":
            data.append(value)


def _json(resp: Response) -> Any:
    try:
        return json.loads(resp.body)
    except ValueError:
        raise UnexpectedResponse(resp.status, "the body is not JSON") from None


def _problem(resp: Response) -> ProblemError:
    retry_after = _retry_after(resp.headers.get("retry-after"))
    try:
        body = json.loads(resp.body)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {
            "type": "",
            "title": f"HTTP {resp.status}",
            "detail": resp.body[:200].decode("utf-8", "replace"),
        }
    return problem_from_body(resp.status, body, retry_after)
