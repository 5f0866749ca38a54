"""A lock's change stream (``client.events``) and blocking queries (``client.watch``) against a
live server, on the local store and on S3."""

from __future__ import annotations

import threading
import time
import urllib.parse
from typing import Iterator, List

import pytest

from s3lock_client import Client, LockEvent, LockUnreadable

from conftest import ADMIN_TOKEN, USER_TOKEN, Server
from relay import Relay


def _next(events: Iterator[LockEvent]) -> LockEvent:
    return next(events)


def test_events_show_the_state_then_each_change_in_order(
    server: Server, client: Client, key: str
) -> None:
    events = client.events(key)
    first = _next(events)
    assert (first.kind, first.id, first.lock.locked) == ("free", 0, False)
    lease = client.acquire(key, owner="alice", ttl=30)
    acquired = _next(events)
    assert acquired.kind == "acquired" and acquired.lock.owner == "alice"
    assert acquired.id == acquired.lock.index == lease.index
    client.renew(key, lease.token, ttl=60)
    renewed = _next(events)
    assert renewed.kind == "renewed" and renewed.id > acquired.id
    client.release(key, lease.token)
    released = _next(events)
    assert released.kind == "released" and released.lock.owner is None
    bob = client.acquire(key, owner="bob", ttl=30)
    assert _next(events).kind == "acquired"
    with server.client(ADMIN_TOKEN) as admin:
        admin.break_lock(key)
    broken = _next(events)
    assert broken.kind == "broken" and broken.lock.fencing_token == bob.fencing_token + 1


def test_an_expired_event_comes_when_a_lease_runs_out(client: Client, key: str) -> None:
    events = client.events(key)
    assert _next(events).kind == "free"
    client.acquire(key, owner="alice", ttl=1)
    acquired = _next(events)
    expired = _next(events)
    assert expired.kind == "expired" and expired.id == acquired.id
    assert expired.lock.owner == "alice" and not expired.lock.locked


def test_resuming_at_an_old_id_gives_the_state_at_once_and_at_the_current_id_nothing(
    client: Client, key: str
) -> None:
    lease = client.acquire(key, owner="alice", ttl=30)
    current = client.renew(key, lease.token).index
    behind = client.events(key, last_event_id=lease.index)
    now = _next(behind)
    assert (now.kind, now.id) == ("held", current)
    up_to_date = client.events(key, last_event_id=current)
    client.release(key, lease.token)
    assert _next(up_to_date).kind == "released"


def test_a_dropped_stream_is_reconnected_with_the_last_event_id(
    server: Server, key: str
) -> None:
    parsed = urllib.parse.urlsplit(server.url)
    relay = Relay((str(parsed.hostname), int(parsed.port or 80)))
    try:
        via_relay = Client(relay.url, USER_TOKEN, 10.0)
        direct = server.client()
        events = via_relay.events(key)
        assert _next(events).kind == "free"
        lease = direct.acquire(key, owner="alice", ttl=30)
        assert _next(events).kind == "acquired"
        relay.cut()
        # Changes while the stream is down: the reconnected stream sends the state at once.
        current = direct.renew(key, lease.token).index
        relay.restore()
        back = _next(events)
        assert (back.kind, back.id, back.lock.owner) == ("held", current, "alice")
        direct.release(key, lease.token)
        assert _next(events).kind == "released"
    finally:
        relay.close()


def test_an_unreadable_document_raises(server: Server, client: Client, key: str) -> None:
    server.put_raw(key, b"not a lock")
    with pytest.raises(LockUnreadable):
        _next(client.events(key))


def test_watch_answers_on_the_next_change_or_after_the_wait(client: Client, key: str) -> None:
    lease = client.acquire(key, owner="alice", ttl=30)
    # An old index: at once.
    assert client.watch(key, lease.index - 1, wait=5).index == lease.index
    # No change within the wait: the same view.
    assert client.watch(key, lease.index, wait=0.2).index == lease.index
    changed: List[int] = []
    t = threading.Thread(target=lambda: changed.append(client.watch(key, lease.index, 8).index))
    t.start()
    time.sleep(0.3)
    client.release(key, lease.token)
    t.join(30)
    assert changed and changed[0] > lease.index
