"""Leading an election: ``with client.campaign(name, value=...) as leader``.

A :class:`Leadership` campaigns on entering the block (waiting up to ``wait`` seconds while
another candidate leads), renews in the background as a :class:`~s3lock_client.ManagedLease`
does (leadership counts as lost *before* the leader's lease can end, never after), and resigns on
leaving the block. ``leader.lost`` is a :class:`threading.Event`, set the moment leadership is no
longer certain: the leader's work should stop then (``leader.lost.wait()`` in a watchdog thread,
or ``leader.check()`` between steps).
"""

from __future__ import annotations

import datetime as _dt
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from .errors import LeaseLost
from .lease import Renewed
from .models import Election, Lease

if TYPE_CHECKING:
    from .client import Client

#: Called once, from the renewal thread, when leadership is lost.
LostLeadershipCallback = Callable[["Leadership", LeaseLost], None]


class Leadership(Renewed):
    """What ``with client.campaign(...) as leader`` gives.

    - ``term``: grows with every new leader; pass it with every write to what the leader guards
      (as a lock's fencing token), so a deposed leader's late writes can be refused.
    - ``election``: the latest view the server answered (``leader``, ``value``, ``expires_at``).
    - ``lost``: a :class:`threading.Event`, set once leadership is no longer certain (a renewal
      was refused, or none was confirmed in time). ``check()`` raises :class:`LeaseLost` then.
    - ``proclaim(value)``: publishes a new value (and restarts the lease).

    Leaving the block stops the renewals and resigns (also on an exception), so the next
    candidate takes over at once. If leadership was lost while the block ran and the block
    raised nothing, leaving it raises :class:`LeaseLost`.
    """

    def __init__(
        self,
        client: "Client",
        name: str,
        *,
        value: Any = None,
        ttl: Optional[int] = None,
        wait: Optional[float] = None,
        candidate: Optional[str] = None,
        lock_delay: Optional[int] = None,
        on_lost: Optional[LostLeadershipCallback] = None,
    ) -> None:
        super().__init__(
            client,
            name,
            ttl=ttl,
            wait=wait,
            owner=candidate,
            value=value,
            lock_delay=lock_delay,
            on_lost=on_lost,
        )
        self.name = name
        #: Set once leadership is no longer certainly held; never cleared.
        self.lost = threading.Event()
        self._election: Optional[Election] = None

    @property
    def election(self) -> Election:
        """The latest view of the election this leader was answered with."""
        if self._election is None:
            raise RuntimeError("not campaigned yet: use it in a with statement")
        return self._election

    @property
    def term(self) -> int:
        return self.lease.fencing_token

    @property
    def value(self) -> Any:
        return self.election.value

    def __repr__(self) -> str:
        if self._lease is None:
            return f"Leadership(name={self.name!r}, not campaigned)"
        return (
            f"Leadership(name={self.name!r}, leader={self.owner!r}, term={self.term}, "
            f"lost={self.lost.is_set()})"
        )

    def __enter__(self) -> "Leadership":
        self._enter()
        return self

    def proclaim(self, value: Any) -> Election:
        """Publishes ``value`` as the leader's (``None`` clears it), restarting the lease.
        Raises :class:`NotHolder` if this candidate no longer leads."""
        self.check()
        sent = time.monotonic()
        election = self._client.proclaim(self.name, self.token, value, ttl=self._ttl)
        lease = _lease_of(election, sent, self._ttl)
        with self._state:
            if self._lost is None:
                self._election = election
                if lease.valid_until > self.lease.valid_until:
                    self._lease = lease
        return election

    # -- the hooks of the renewal machinery -------------------------------------------------

    def _take(self) -> Lease:
        sent = time.monotonic()
        election = self._client._campaign(
            self.name, self._owner, self._value, self._ttl, self._wait, self._lock_delay
        )
        self._election = election
        return _lease_of(election, sent, self._ttl)

    def _renew_once(self, token: str, ttl: int, timeout: float) -> Lease:
        sent = time.monotonic()
        # Without a ttl of its own, the server's default each time (never a rounded remainder).
        election = self._client._renew_leadership(self.name, token, self._ttl, timeout)
        self._election = election
        return _lease_of(election, sent, self._ttl)

    def _give_up(self, token: str, timeout: float) -> None:
        self._client.resign(self.name, token, timeout=timeout)

    def _marked_lost(self) -> None:
        self.lost.set()


def _lease_of(election: Election, sent_at: float, ttl: Optional[int]) -> Lease:
    """The leader's lease in the form the renewal machinery keeps."""
    expire = ttl if ttl is not None else max(1, math.ceil(election.ttl_remaining_ms / 1000))
    expires_at = election.expires_at or _dt.datetime.now(_dt.timezone.utc)
    return Lease(
        bucket="",
        key=election.name,
        owner=election.leader,
        fencing_token=election.term,
        expire=expire,
        lock_time=expires_at - _dt.timedelta(seconds=expire),
        release_time=None,
        expires_at=election.expires_at,
        ttl_remaining_ms=election.ttl_remaining_ms,
        locked=election.leader is not None,
        index=election.index,
        value=election.value,
        available_at=election.available_at,
        token=election.token or "",
        sent_at=sent_at,
    )
