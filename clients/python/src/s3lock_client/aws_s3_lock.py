"""A drop-in for ``aws_ops_alpha.vendor.aws_s3_lock``: the same API, decided by s3lock.

Change only the import::

    from s3lock_client.aws_s3_lock import Lock, Vault, get_utc_now, AlreadyLockedError

The server is ``S3LOCK_URL`` (and ``S3LOCK_AUTH_TOKEN``), or a :class:`~s3lock_client.Client`
passed as ``Vault(..., client=...)``. ``s3_client`` is accepted and ignored: no AWS credentials
are needed. ``bucket`` and ``key`` are the service's bucket and key; a server run with
``S3LOCK_PREFIX=''`` uses the very same S3 objects the old module did.

What changed, and why (see the package README):

- ``wait``: the old ``acquire`` wrote, slept ``wait`` seconds, and read back to learn whether it
  had really won. s3lock knows at once (a conditional write), so that sleep is gone; the same time
  budget is spent waiting for a *held* lock to come free instead. ``acquire`` returns as soon as
  it holds the lock, and raises :class:`AlreadyLockedError` if it is still held after ``wait``
  seconds: never longer than the old ``acquire`` took. ``wait=0`` answers at once, as before.
- the same owner acquiring again refreshes the lease, as before, but only through the holder token
  this process was given when it acquired: another process naming the same owner is refused
  (:class:`AlreadyLockedError`). Owner names are no longer credentials.
- ``release`` needs that token too: nobody can release someone else's lock. Releasing a lock
  whose lease has since passed to someone else does not touch the new holder's lock.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import threading
import uuid
from typing import Any, Dict, Optional, Tuple

from ._time import format_time, parse_time
from .client import DEFAULT_URL, Client
from .errors import LockDelayed, LockHeld, NotHolder, WriteUnconfirmed
from .models import Lease, LockView

__all__ = ["AlreadyLockedError", "Lock", "Vault", "get_utc_now"]

log = logging.getLogger("s3lock_client.aws_s3_lock")


class AlreadyLockedError(Exception):
    """The lock is held by another owner."""


def get_utc_now() -> _dt.datetime:
    """The current time as an aware UTC datetime."""
    return _dt.datetime.now(_dt.timezone.utc)


@dataclasses.dataclass
class Lock:
    """The old module's lock document: these four fields, in this order, and nothing else (so
    ``Lock(**json)`` and ``dataclasses.asdict(lock)`` keep working)."""

    expire: int
    lock_time: str
    release_time: Optional[str]
    owner: Optional[str]

    def is_locked(self, utc_now: _dt.datetime, expect_owner: str) -> bool:
        """From ``expect_owner``'s point of view, is the lock locked?

        No owner: not locked. Owned by ``expect_owner``: not locked. Owned by someone else:
        locked until ``lock_time + expire``; at that instant it counts as expired.
        """
        if self.owner is None:
            return False
        if self.owner == expect_owner:
            return False
        elapsed = utc_now - parse_time(self.lock_time)
        return elapsed < _dt.timedelta(seconds=self.expire)


# Holder tokens this process was given, by (server URL, bucket, key, owner). Module-wide, so that
# the same owner acquiring again through another Vault object of the same lock refreshes too.
_tokens: Dict[Tuple[str, str, str, str], str] = {}
_tokens_lock = threading.Lock()

# One client per (URL, auth token, bucket), shared by Vaults, so connections are kept alive.
_clients: Dict[Tuple[str, Optional[str], str], Client] = {}
_clients_lock = threading.Lock()


def _client_for(bucket: str) -> Client:
    url = os.environ.get("S3LOCK_URL") or DEFAULT_URL
    auth = os.environ.get("S3LOCK_AUTH_TOKEN") or None
    with _clients_lock:
        client = _clients.get((url, auth, bucket))
        if client is None:
            client = _clients[(url, auth, bucket)] = Client(url, auth, bucket=bucket)
        return client


def _lock_of(view: LockView) -> Lock:
    return Lock(
        expire=view.expire,
        lock_time=format_time(view.lock_time),
        release_time=None if view.release_time is None else format_time(view.release_time),
        owner=view.owner,
    )


class Vault:
    """A vault is one lock: ``key`` in ``bucket``.

    :param bucket: the bucket (the server's default bucket, or one of its allowed buckets).
    :param key: the lock's key.
    :param expire: how long the lease lasts, in whole seconds.
    :param wait: how long ``acquire`` may wait for a held lock to come free, in seconds.
    :param client: the s3lock client to use (default: ``S3LOCK_URL``, ``S3LOCK_AUTH_TOKEN``).
    """

    def __init__(
        self,
        bucket: str,
        key: str,
        expire: int,
        wait: float = 1.0,
        *,
        client: Optional[Client] = None,
    ) -> None:
        self.bucket = bucket
        self.key = key
        self.expire = expire
        self.wait = wait
        self._client = client
        #: The latest lease this vault was granted (with its fencing token), if any.
        self.lease: Optional[Lease] = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = _client_for(self.bucket)
        elif self._client.bucket != self.bucket:
            self._client = Client(
                self._client.url,
                self._client._auth_token,
                self._client.timeout,
                bucket=self.bucket,
            )
        return self._client

    def _token_key(self, owner: str) -> Tuple[str, str, str, str]:
        return (self.client.url, self.bucket, self.key, owner)

    def acquire(self, s3_client: Any = None, owner: Optional[str] = None) -> Lock:
        """The owner tries to acquire the lock; raises :class:`AlreadyLockedError` if another
        owner holds it. If this process already holds it as ``owner``, refreshes ``lock_time``.

        :param s3_client: ignored (kept for the old signature).
        :param owner: the owner; a random ``uuid4().hex`` when ``None``.
        """
        if owner is None:
            owner = uuid.uuid4().hex
        slot = self._token_key(owner)
        with _tokens_lock:
            token = _tokens.get(slot)
        try:
            lease = self.client.acquire(
                self.key, owner=owner, ttl=self.expire, wait=self.wait, token=token
            )
        except LockHeld as e:
            raise AlreadyLockedError(
                f"{self.bucket}/{self.key} is locked by {e.owner} until {e.expires_at}"
            ) from None
        except LockDelayed as e:
            # Another client's lease ran out unreleased, with a lock-delay after it.
            raise AlreadyLockedError(
                f"{self.bucket}/{self.key} is kept until {e.available_at} (the lock-delay after "
                "a lease that ran out unreleased)"
            ) from None
        with _tokens_lock:
            _tokens[slot] = lease.token
        self.lease = lease
        return _lock_of(lease)

    def release(self, s3_client: Any, lock: Lock) -> Lock:
        """Releases the lock: returns it with ``owner=None`` and ``release_time`` set.

        Only a lock this process acquired can be released (the holder token is needed); any
        other raises :class:`~s3lock_client.NotHolder`. If its lease has meanwhile passed to
        another owner, nothing is written and the lock is returned as released by us.
        """
        if lock.owner is None:
            return lock
        slot = self._token_key(lock.owner)
        with _tokens_lock:
            token = _tokens.get(slot)
        if token is None:
            raise NotHolder(
                409,
                "not-holder",
                "The token does not hold this lock",
                f"this process holds no lease on {self.bucket}/{self.key} as {lock.owner!r}",
                {},
            )
        try:
            view = self.client.release(self.key, token)
        except WriteUnconfirmed:
            # Released, or lost: the lease is not ours any more either way.
            released = dataclasses.replace(lock, owner=None, release_time=format_time(get_utc_now()))
        except NotHolder:
            log.warning(
                "%s/%s: the lease of %r had already ended; nothing to release",
                self.bucket,
                self.key,
                lock.owner,
            )
            released = dataclasses.replace(lock, owner=None, release_time=format_time(get_utc_now()))
        else:
            released = _lock_of(view)
        with _tokens_lock:
            if _tokens.get(slot) == token:
                del _tokens[slot]
        return released
