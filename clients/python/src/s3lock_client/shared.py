"""Semaphores and read-write locks held the way ``client.lock()`` holds a lock: renewed in the
background every third of the lease, marked lost before the lease can end, released at the end.

- ``client.semaphore(key, limit).acquire()`` takes one of ``limit`` permits.
- ``client.rwlock(key).shared()`` / ``.exclusive()`` take a read-write lock.

Each gives a :class:`SharedHolding`, already held, to use in a ``with`` block (released on
leaving it) or to :meth:`~SharedHolding.release` by hand.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Callable, Optional, Type

from .errors import LeaseLost
from .lease import LostSignal, Renewed
from .models import Lease, SharedLease, SharedView

if TYPE_CHECKING:
    from .client import Client

#: Called once, from the renewal thread, when a holding is lost.
SharedLostCallback = Callable[["SharedHolding", LeaseLost], None]


class SharedHolding(Renewed):
    """One held permit of a semaphore, or a read-write lock held shared or exclusive, renewed in
    the background until released.

    - ``fencing_token``, ``owner``, ``expires_at``: of this holding (its fencing token is its
      own, unique across the key); ``mode``, ``limit``; ``grant``: the latest
      :class:`SharedLease` (the whole view: the other holders, permits left).
    - ``lost``: a ``threading.Event`` (a :class:`~s3lock_client.lease.LostSignal`) set once the
      holding is no longer certainly held: a renewal was refused (a break), or none was
      confirmed in time. ``lost.wait(timeout)`` blocks until then; ``bool(lost)`` and
      ``lost.is_set()`` judge the clock too. ``check()`` raises :class:`LeaseLost` then.
    - ``on_lost(holding, error)``: called once, from the renewal thread, when that happens.

    Leaving the ``with`` block (or :meth:`release`) stops the renewals and releases the holding.
    If it was lost meanwhile and the block raised nothing, :class:`LeaseLost` is raised: the work
    did not run entirely under it.
    """

    def __init__(
        self,
        client: "Client",
        kind: str,
        key: str,
        *,
        limit: Optional[int] = None,
        mode: Optional[str] = None,
        owner: Optional[str] = None,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
        on_lost: Optional[SharedLostCallback] = None,
    ) -> None:
        super().__init__(client, key, ttl=ttl, wait=wait, owner=owner, on_lost=on_lost)
        self.kind = kind
        #: A semaphore's limit, as asked for; ``None`` for a read-write lock.
        self.limit = limit
        #: ``"shared"`` or ``"exclusive"`` for a read-write lock; ``None`` for a semaphore.
        self.mode = mode
        #: Set once the holding is no longer certainly held; never cleared.
        self.lost = LostSignal(lambda: self.lost_reason)
        self._grant: Optional[SharedLease] = None
        # Whether release() (or leaving a block) already gave it back.
        self._released = False

    @property
    def grant(self) -> SharedLease:
        """The latest grant or renewal, as the server answered it."""
        if self._grant is None:
            raise RuntimeError("not acquired yet")
        return self._grant

    def release(self) -> None:
        """Stops the renewals and releases the holding (once; again does nothing). Raises
        :class:`LeaseLost` if it was lost while held."""
        self.__exit__(None, None, None)

    def __repr__(self) -> str:
        what = f"limit={self.limit}" if self.kind == "semaphore" else f"mode={self.mode!r}"
        if self._lease is None:
            return f"SharedHolding({self.kind}, key={self.key!r}, {what}, not acquired)"
        return (
            f"SharedHolding({self.kind}, key={self.key!r}, {what}, owner={self.owner!r}, "
            f"fencing_token={self.fencing_token}, lost={bool(self.lost)})"
        )

    def __enter__(self) -> "SharedHolding":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._released:
            return
        self._released = True
        super().__exit__(exc_type, exc, tb)

    # -- the hooks of the renewal machinery -------------------------------------------------

    def _take(self) -> Lease:
        if self.kind == "semaphore":
            assert self.limit is not None, "a semaphore is made with its limit"
            grant = self._client.semaphore_acquire(
                self.key, self.limit, owner=self._owner, ttl=self._ttl, wait=self._wait
            )
        else:
            assert self.mode is not None, "a read-write lock is taken in a mode"
            grant = self._client.rwlock_acquire(
                self.key, self.mode, owner=self._owner, ttl=self._ttl, wait=self._wait
            )
        self._grant = grant
        return _lease_of(grant)

    def _renew_once(self, token: str, ttl: int, timeout: float) -> Lease:
        grant = self._client.shared_renew(self.kind, self.key, token, ttl, timeout=timeout)
        self._grant = grant
        return _lease_of(grant)

    def _give_up(self, token: str, timeout: float) -> None:
        self._client.shared_release(self.kind, self.key, token, timeout=timeout)

    def _marked_lost(self) -> None:
        self.lost.set()


def _lease_of(grant: SharedLease) -> Lease:
    """The caller's own holding in the form the renewal machinery keeps."""
    holder = grant.holder
    return Lease(
        bucket=grant.bucket,
        key=grant.key,
        owner=holder.owner,
        fencing_token=holder.fencing_token,
        expire=holder.expire,
        lock_time=holder.lock_time,
        release_time=None,
        expires_at=holder.expires_at,
        ttl_remaining_ms=holder.ttl_remaining_ms,
        locked=True,
        index=grant.index,
        token=grant.token,
        sent_at=grant.sent_at,
    )


class Semaphore:
    """The semaphore ``key``: at most ``limit`` holders at once. Every process using it must
    give the same ``limit`` (else :class:`LimitMismatch`, while holders that asked with another
    remain). Thread-safe: each :meth:`acquire` is a holding of its own."""

    def __init__(
        self,
        client: "Client",
        key: str,
        limit: int,
        *,
        owner: Optional[str] = None,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
    ) -> None:
        self._client = client
        self.key = key
        self.limit = limit
        self._owner = owner
        self._ttl = ttl
        self._wait = wait

    def acquire(
        self,
        *,
        owner: Optional[str] = None,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
        on_lost: Optional[SharedLostCallback] = None,
    ) -> SharedHolding:
        """Takes a permit (``owner``, ``ttl``, ``wait`` default to the semaphore's), waiting up to
        ``wait`` seconds for one to come free; raises :class:`SemaphoreFull` if none did. The
        permit is renewed in the background until released (leave a ``with`` block, or call
        ``release()``)."""
        holding = SharedHolding(
            self._client,
            "semaphore",
            self.key,
            limit=self.limit,
            owner=owner if owner is not None else self._owner,
            ttl=ttl if ttl is not None else self._ttl,
            wait=wait if wait is not None else self._wait,
            on_lost=on_lost,
        )
        holding._enter()
        return holding

    def status(self) -> SharedView:
        """The semaphore as it is now: holders, permits left."""
        return self._client.shared_status("semaphore", self.key)

    def __repr__(self) -> str:
        return f"Semaphore(key={self.key!r}, limit={self.limit})"


class RWLock:
    """The read-write lock ``key``: many shared holders, or one exclusive. A waiting writer
    stops new readers from being let in, so a stream of readers cannot starve it; readers wait
    behind it instead. Thread-safe: each :meth:`shared` or :meth:`exclusive` is a holding of its
    own."""

    def __init__(
        self,
        client: "Client",
        key: str,
        *,
        owner: Optional[str] = None,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
    ) -> None:
        self._client = client
        self.key = key
        self._owner = owner
        self._ttl = ttl
        self._wait = wait

    def shared(
        self,
        *,
        owner: Optional[str] = None,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
        on_lost: Optional[SharedLostCallback] = None,
    ) -> SharedHolding:
        """Takes it shared (beside other readers); raises :class:`LockHeld` if a writer holds or
        waits for it still after ``wait`` seconds."""
        return self._take("shared", owner, ttl, wait, on_lost)

    def exclusive(
        self,
        *,
        owner: Optional[str] = None,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
        on_lost: Optional[SharedLostCallback] = None,
    ) -> SharedHolding:
        """Takes it exclusive (alone); raises :class:`LockHeld` if anyone holds it still after
        ``wait`` seconds."""
        return self._take("exclusive", owner, ttl, wait, on_lost)

    def status(self) -> SharedView:
        """The read-write lock as it is now: holders and waiting writers."""
        return self._client.shared_status("rwlock", self.key)

    def _take(
        self,
        mode: str,
        owner: Optional[str],
        ttl: Optional[int],
        wait: Optional[float],
        on_lost: Optional[SharedLostCallback],
    ) -> SharedHolding:
        holding = SharedHolding(
            self._client,
            "rwlock",
            self.key,
            mode=mode,
            owner=owner if owner is not None else self._owner,
            ttl=ttl if ttl is not None else self._ttl,
            wait=wait if wait is not None else self._wait,
            on_lost=on_lost,
        )
        holding._enter()
        return holding

    def __repr__(self) -> str:
        return f"RWLock(key={self.key!r})"
