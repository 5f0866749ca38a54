"""Python client for s3lock: typed calls, self-renewing leases, and a drop-in for ``aws_s3_lock``.

- :class:`Client`: one method per route (acquire, renew, release, status, watch, list,
  break_lock), and ``client.events(key)``, a lock's change stream as an iterator.
- ``with client.lock(key, ttl=60) as lease``: a :class:`ManagedLease`, renewed in the background,
  marked lost before it can end.
- ``with client.semaphore(key, limit).acquire() as permit``, ``with client.rwlock(key).shared()``
  (or ``.exclusive()``): a :class:`SharedHolding`, renewed and marked lost alike.
- ``with client.campaign(name, value=addr) as leader``: a :class:`Leadership` of an election,
  renewed likewise, ``leader.lost`` set before it can end; ``client.observe(name)`` follows who
  leads, "no leader" included.
- :mod:`s3lock_client.aws_s3_lock`: the old ``aws_s3_lock`` module's API over the service.
- :mod:`s3lock_client.errors`: one exception class per problem type.
"""

from .client import DEFAULT_URL, Client
from .errors import (
    BodyTooLarge,
    BucketNotAllowed,
    ClockUncertain,
    ConnectionFailed,
    Contended,
    Forbidden,
    InvalidInput,
    LeaseLost,
    LimitMismatch,
    LockDelayed,
    LockHeld,
    LockNotFound,
    LockUnreadable,
    MalformedBody,
    MethodNotAllowed,
    NotHolder,
    NotReady,
    Overloaded,
    ShuttingDown,
    ProblemError,
    RouteNotFound,
    S3LockError,
    SemaphoreFull,
    ServerTimeout,
    ServiceUnavailable,
    StoreError,
    StoreUnavailable,
    TooManyHolders,
    TooManyWatchedLocks,
    Unauthorized,
    UnexpectedResponse,
    UnsupportedMediaType,
    WriteUnconfirmed,
)
from .election import Leadership
from .lease import LostSignal, ManagedLease
from .models import (
    KEEP,
    Election,
    ElectionEvent,
    HolderView,
    Lease,
    LockEvent,
    LockView,
    SharedEvent,
    SharedLease,
    SharedView,
    WaitingView,
)
from .shared import RWLock, Semaphore, SharedHolding

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "KEEP",
    "BodyTooLarge",
    "BucketNotAllowed",
    "Client",
    "ClockUncertain",
    "ConnectionFailed",
    "Contended",
    "Election",
    "ElectionEvent",
    "Forbidden",
    "HolderView",
    "InvalidInput",
    "Lease",
    "Leadership",
    "LeaseLost",
    "LimitMismatch",
    "LockDelayed",
    "LockEvent",
    "LockHeld",
    "LockNotFound",
    "LockUnreadable",
    "LockView",
    "LostSignal",
    "MalformedBody",
    "ManagedLease",
    "MethodNotAllowed",
    "NotHolder",
    "NotReady",
    "Overloaded",
    "ShuttingDown",
    "ProblemError",
    "RWLock",
    "RouteNotFound",
    "S3LockError",
    "Semaphore",
    "SemaphoreFull",
    "ServerTimeout",
    "ServiceUnavailable",
    "StoreError",
    "StoreUnavailable",
    "SharedEvent",
    "SharedHolding",
    "SharedLease",
    "SharedView",
    "TooManyHolders",
    "TooManyWatchedLocks",
    "Unauthorized",
    "UnexpectedResponse",
    "WaitingView",
    "WriteUnconfirmed",
    "UnsupportedMediaType",
]
