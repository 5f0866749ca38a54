"""Lists of semaphores and read-write locks (``client.semaphores(prefix)``,
``client.rwlocks(prefix)``) and their change streams (``client.events(key, kind=...)``)
against a live server, on the local store and on S3."""

from __future__ import annotations

import threading
from typing import Iterator, List

import pytest

from s3lock_client import Client, SharedEvent, SharedView


def _keys(views: Iterator[SharedView]) -> List[str]:
    return [v.key for v in views]


def test_semaphores_and_rwlocks_are_listed_page_after_page_without_tokens(
    client: Client, key: str
) -> None:
    for name in ("a", "b", "c"):
        client.semaphore_acquire(f"{key}/{name}", 2, owner="w", ttl=30)
    client.rwlock_acquire(f"{key}/r", "shared", owner="reader", ttl=30)
    client.acquire(f"{key}/lock", owner="m", ttl=30)
    views = list(client.semaphores(key + "/", page_size=1))
    assert [v.key for v in views] == [f"{key}/a", f"{key}/b", f"{key}/c"]
    assert all(v.kind == "semaphore" and v.limit == 2 and v.permits_left == 1 for v in views)
    assert all(v.lease is None for v in views), "no caller's holding in a list"
    rwlocks = list(client.rwlocks(key + "/"))
    assert _keys(iter(rwlocks)) == [f"{key}/r"]
    assert rwlocks[0].holders[0].mode == "shared"


def test_a_semaphores_events_show_the_state_then_two_holders_in_order(
    client: Client, key: str
) -> None:
    events = client.events(key, kind="semaphore")
    first = next(events)
    assert (first.kind, first.id, first.view.holders) == ("state", 0, ())
    one = client.semaphore_acquire(key, 2, owner="w1", ttl=30)
    acquired = next(events)
    assert acquired.kind == "acquired" and acquired.id == acquired.view.index == one.index
    assert [h.owner for h in acquired.view.holders] == ["w1"]
    two = client.semaphore_acquire(key, 2, owner="w2", ttl=30)
    assert [h.owner for h in next(events).view.holders] == ["w1", "w2"]
    client.shared_release("semaphore", key, one.token)
    released = next(events)
    assert released.kind == "released"
    assert [h.owner for h in released.view.holders] == ["w2"]
    client.shared_release("semaphore", key, two.token)
    last = next(events)
    assert last.kind == "released" and last.view.permits_left == 2


def test_a_writers_waiting_entry_shows_in_a_read_write_locks_events(
    client: Client, key: str
) -> None:
    reader = client.rwlock_acquire(key, "shared", owner="reader", ttl=30)
    events = client.events(key, kind="rwlock")
    assert next(events).kind == "state"
    writer = threading.Thread(
        target=lambda: client.rwlock_acquire(key, "exclusive", owner="writer", ttl=30, wait=10)
    )
    writer.start()
    waiting: SharedEvent = next(events)
    assert waiting.kind == "waiting"
    assert [w.owner for w in waiting.view.waiting] == ["writer"]
    client.shared_release("rwlock", key, reader.token)
    kinds = []
    while True:
        event = next(events)
        kinds.append(event.kind)
        if event.kind == "acquired":
            break
    writer.join()
    assert set(kinds) <= {"released", "waiting", "acquired"}, kinds
    assert [h.owner for h in event.view.holders] == ["writer"]


def test_events_of_an_unknown_kind_are_refused_before_any_call(client: Client, key: str) -> None:
    with pytest.raises(ValueError):
        client.events(key, kind="mutex")  # type: ignore[call-overload]
