"""A lease that renews itself in a background thread and knows when it may have been lost.

The rule it keeps: the lease is marked lost *before* it can end, never after. After each
confirmed renewal the lease is certainly held until the time that renewal was **sent** plus the
``ttl_remaining_ms`` the server answered (``Lease.valid_until``). The lease counts as lost at
``valid_until - margin``, unless a later renewal has been confirmed by then; ``lost`` and
``check()`` compute this from the clock on every call, so they are right even if the renewal
thread is late to run.
"""

from __future__ import annotations

import collections
import datetime as _dt
import logging
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Deque, Optional, Type

from .errors import (
    ConnectionFailed,
    LeaseLost,
    ProblemError,
    ServiceUnavailable,
    UnexpectedResponse,
    WriteUnconfirmed,
)
from .models import KEEP, Lease

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("s3lock_client")

#: Called once, from the renewal thread, when the lease is lost.
LostCallback = Callable[["ManagedLease", LeaseLost], None]


def safety_margin(lease_seconds: float, guaranteed: float) -> float:
    """How long before the lease's end it is given up: a tenth of the lease, 0.2 s to 2 s (as
    ``s3lock run`` does), but at most a third of what the server guaranteed. It covers the
    renewal thread waking late and the gap between this machine's monotonic clock and the
    store's."""
    return min(2.0, max(0.2, lease_seconds / 10.0), guaranteed / 3.0)


def renewal_interval(lease: Lease) -> float:
    """A third of the lease, counted from when the request that granted it was sent; a third of
    what the server said remains of it when that is less (on S3 the store clock's uncertainty
    can take up to about a second off a renewal's ``ttl_remaining_ms``)."""
    return _guaranteed(lease) / 3.0


def _guaranteed(lease: Lease) -> float:
    return min(float(lease.expire), lease.ttl_remaining_ms / 1000.0)


class LostSignal(threading.Event):
    """A ``threading.Event`` set once a holding is no longer certainly held. ``is_set()`` (and
    ``bool()``, so ``if holding.lost:`` reads right) also judge the clock, so they are right even
    while the renewal thread is late to set it; ``wait()`` returns once it is set."""

    def __init__(self, judge: Callable[[], object]) -> None:
        super().__init__()
        # Sets this signal when the holding's time is up (Renewed.lost_reason does).
        self._judge = judge

    def is_set(self) -> bool:
        if not super().is_set():
            self._judge()
        return super().is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        # Judged again after a wait that timed out: the time may have run out meanwhile.
        return self.is_set() or super().wait(timeout) or self.is_set()

    def __bool__(self) -> bool:
        return self.is_set()


class Renewed:
    """The machinery of a lease renewed in the background: :class:`ManagedLease` (a lock),
    :class:`~s3lock_client.election.Leadership` (an election's leader) and
    :class:`~s3lock_client.shared.SharedHolding` (a semaphore's permit, a read-write lock).
    Subclasses say how the lease is taken, renewed and given up."""

    def __init__(
        self,
        client: "Client",
        key: str,
        *,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
        owner: Optional[str] = None,
        value: Any = KEEP,
        lock_delay: Optional[int] = None,
        on_lost: Optional[Callable[[Any, LeaseLost], None]] = None,
    ) -> None:
        self._client = client
        self.key = key
        self._ttl = ttl
        self._wait = wait
        self._owner = owner
        # Sent with the acquire only: renewals name neither, so they keep both.
        self._value = value
        self._lock_delay = lock_delay
        self._on_lost = on_lost
        self._lease: Optional[Lease] = None
        self._state = threading.Lock()
        # Set once, by whoever notices first (the renewal thread, or a reader of `lost` past
        # `lost_at`), under `_state`; never cleared.
        self._lost: Optional[LeaseLost] = None
        # Whether on_lost was called (by the renewal thread, once).
        self._told = False
        # Whether the server refused a renewal (a break, a takeover): then the lock is not ours
        # to release. A lease that timed out may still be held, and is released on exit.
        self._refused = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        # The latest failed renewal's error, for the LeaseLost message if none succeeds in time.
        self._last_error: Optional[BaseException] = None
        #: Renewals the server confirmed.
        self.renewals = 0
        #: The granted lease and each confirmed renewal (the latest 64), oldest first.
        self.history: Deque[Lease] = collections.deque(maxlen=64)

    # -- what the holder reads ------------------------------------------------------------

    @property
    def lease(self) -> Lease:
        """The latest granted or renewed lease."""
        if self._lease is None:
            raise RuntimeError("the lock is not acquired yet: use it in a with statement")
        return self._lease

    @property
    def fencing_token(self) -> int:
        return self.lease.fencing_token

    @property
    def owner(self) -> Optional[str]:
        return self.lease.owner

    @property
    def expires_at(self) -> Optional[_dt.datetime]:
        """When the server says the current lease ends (store clock)."""
        return self.lease.expires_at

    @property
    def value(self) -> Any:
        """The value published with the current lease (``None`` when none)."""
        return self.lease.value

    @property
    def token(self) -> str:
        """The holder token (a secret: never log it)."""
        return self.lease.token

    @property
    def lost_at(self) -> float:
        """The ``time.monotonic()`` instant at which the lease counts as lost unless renewed."""
        lease = self.lease
        return lease.valid_until - safety_margin(lease.expire, _guaranteed(lease))

    @property
    def lost_reason(self) -> Optional[LeaseLost]:
        """Why the lease is lost, or ``None`` while it is certainly held. Once lost, always
        lost: a renewal confirmed after that moment is not taken back."""
        with self._state:
            if self._lost is None and self._lease is not None and time.monotonic() >= self.lost_at:
                self._lost = self._timed_out()
            lost = self._lost
        if lost is not None:
            self._marked_lost()
        return lost

    def check(self) -> None:
        """Raises :class:`LeaseLost` if the lease is no longer certainly held."""
        reason = self.lost_reason
        if reason is not None:
            raise reason

    # -- what a subclass says -------------------------------------------------------------

    def _take(self) -> Lease:
        """Takes the lease (waiting as asked), or raises."""
        raise NotImplementedError

    def _renew_once(self, token: str, ttl: int, timeout: float) -> Lease:
        raise NotImplementedError

    def _give_up(self, token: str, timeout: float) -> None:
        raise NotImplementedError

    def _marked_lost(self) -> None:
        """Called (possibly more than once) once the lease is known lost."""

    # -- with -----------------------------------------------------------------------------

    def _enter(self) -> None:
        if self._lease is not None:
            raise RuntimeError("a renewed lease can be entered once")
        self._lease = self._take()
        self.history.append(self._lease)
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"s3lock-renew:{self.key}", daemon=True
        )
        self._thread.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        lost = self.lost_reason
        if not self._refused:
            # A refused renewal means another holder or a break: nothing of ours to release.
            # Waiting past the lease's end is pointless: it has freed itself by then.
            timeout = min(self._client.timeout, max(1.0, self.lease.valid_until - time.monotonic()))
            try:
                self._give_up(self.lease.token, timeout)
            except WriteUnconfirmed:
                pass  # released, or lost: nothing of ours is left to release
            except Exception as e:  # the lease runs out on its own; the block's outcome matters more
                log.warning("releasing %r failed: %s", self.key, e)
        if lost is not None and exc_type is None:
            raise lost

    # -- the renewal thread ---------------------------------------------------------------

    def _renew_loop(self) -> None:
        lease = self.lease
        ttl = self._ttl if self._ttl is not None else lease.expire
        retry_every = min(1.0, lease.expire / 10.0)
        next_send = lease.sent_at + renewal_interval(lease)
        while True:
            now = time.monotonic()
            give_up = self.lost_at
            if now >= give_up or self._lost is not None:
                self._mark_lost(None)
                return
            if self._stop.wait(max(0.0, min(next_send, give_up) - now)):
                return
            now = time.monotonic()
            if now >= self.lost_at:
                continue  # marked lost at the top
            if now < next_send:
                continue
            try:
                renewed = self._renew_once(lease.token, ttl, self.lost_at - now)
            except (ConnectionFailed, ServiceUnavailable, UnexpectedResponse) as e:
                log.info("renewing %r failed (%s); trying again", self.key, e)
                self._last_error = e
                next_send = time.monotonic() + retry_every
                continue
            except ProblemError as e:
                self._mark_lost(e)
                return
            with self._state:
                # Too late: the lease was (or may have been) reported lost already.
                late = self._lost is not None or time.monotonic() >= self.lost_at
                if not late:
                    self._lease = lease = renewed
                    self.renewals += 1
                    self.history.append(renewed)
            if late:
                self._mark_lost(None)
                return
            next_send = renewed.sent_at + renewal_interval(renewed)

    def _timed_out(self) -> LeaseLost:
        message = f"lease on {self.key!r}: no renewal was confirmed in time"
        if self._last_error is not None:
            message += f" (last error: {self._last_error})"
        return LeaseLost(message, self._last_error)

    def _mark_lost(self, refusal: Optional[ProblemError]) -> None:
        """Marks the lease lost (refused, or timed out when ``refusal`` is None) unless it
        already is, and tells ``on_lost`` once."""
        with self._state:
            if self._lost is None:
                if refusal is None:
                    self._lost = self._timed_out()
                else:
                    self._lost = LeaseLost(
                        f"lease on {self.key!r}: the renewal was refused ({refusal})", refusal
                    )
                    self._refused = True
            lost = self._lost
            if self._told:
                return
            self._told = True
        self._marked_lost()
        log.warning("%s", lost)
        if self._on_lost is not None:
            try:
                self._on_lost(self, lost)
            except Exception:
                log.exception("the on_lost callback of %r raised", self.key)


class ManagedLease(Renewed):
    """What ``with client.lock(...) as lease`` gives: the held lock, renewed in the background.

    - ``fencing_token``, ``key``, ``owner``, ``expires_at``: of the current lease.
    - ``lost``: True once the lease is no longer certainly held (a renewal was refused, or none
      was confirmed in time). ``check()`` raises :class:`LeaseLost` then.
    - ``on_lost(lease, error)``: called once, from the renewal thread, when that happens.

    Leaving the block stops the renewals and releases the lock (also on an exception). If the
    lease was lost while the block ran and the block itself raised nothing, leaving it raises
    :class:`LeaseLost`: the work in it did not run entirely under the lock.
    """

    def __init__(
        self,
        client: "Client",
        key: str,
        *,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
        owner: Optional[str] = None,
        value: Any = KEEP,
        lock_delay: Optional[int] = None,
        on_lost: Optional[LostCallback] = None,
    ) -> None:
        super().__init__(
            client,
            key,
            ttl=ttl,
            wait=wait,
            owner=owner,
            value=value,
            lock_delay=lock_delay,
            on_lost=on_lost,
        )

    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    def __repr__(self) -> str:
        if self._lease is None:
            return f"ManagedLease(key={self.key!r}, not acquired)"
        return (
            f"ManagedLease(key={self.key!r}, owner={self.owner!r}, "
            f"fencing_token={self.fencing_token}, lost={self.lost})"
        )

    def __enter__(self) -> "ManagedLease":
        self._enter()
        return self

    def _take(self) -> Lease:
        return self._client.acquire(
            self.key,
            owner=self._owner,
            ttl=self._ttl,
            wait=self._wait,
            value=self._value,
            lock_delay=self._lock_delay,
        )

    def _renew_once(self, token: str, ttl: int, timeout: float) -> Lease:
        return self._client.renew(self.key, token, ttl, timeout=timeout)

    def _give_up(self, token: str, timeout: float) -> None:
        self._client.release(self.key, token, timeout=timeout)
