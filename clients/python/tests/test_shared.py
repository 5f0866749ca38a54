"""Semaphores and read-write locks: the raw calls, ``client.semaphore(...).acquire()`` and
``client.rwlock(...).shared()`` / ``.exclusive()`` held in ``with`` blocks (renewed, released on
leaving, the lost signal set by a break), and their typed refusals and views."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Dict, List, Optional

import pytest

from s3lock_client import (
    Client,
    LeaseLost,
    LimitMismatch,
    LockHeld,
    LostSignal,
    SemaphoreFull,
    SharedHolding,
    SharedLease,
    SharedView,
    TooManyHolders,
    UnexpectedResponse,
)
from s3lock_client.errors import problem_from_body

from conftest import Server

# -- without a server: the answers as the server writes them ---------------------------------

_HOLDER: Dict[str, Any] = {
    "owner": "w1",
    "mode": None,
    "fencing_token": 7,
    "expire": 30,
    "lock_time": "2026-11-26T05:48:36.081968+00:00",
    "expires_at": "2026-11-26T05:49:06.081968+00:00",
    "ttl_remaining_ms": 29000,
    "held_since": "2026-11-26T05:48:36.081968+00:00",
}


def _semaphore_answer(**extra: Any) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "bucket": "default",
        "key": "deploys",
        "kind": "semaphore",
        "limit": 3,
        "permits_left": 2,
        "holders": [_HOLDER],
        "waiting": [],
        "fencing_token": 7,
        "index": 4,
        "waiters_here": 0,
    }
    body.update(extra)
    return body


def test_a_full_semaphore_and_too_many_holders_name_the_first_lease_end() -> None:
    for cls, kind in ((SemaphoreFull, "semaphore-full"), (TooManyHolders, "too-many-holders")):
        err = problem_from_body(
            409,
            {
                "type": f"urn:s3lock:problem:{kind}",
                "title": "t",
                "detail": "d",
                "expires_at": "2026-11-26T05:49:06+00:00",
            },
            4.0,
        )
        assert type(err) is cls
        assert isinstance(err, (SemaphoreFull, TooManyHolders))
        assert err.expires_at is not None and err.expires_at.minute == 49
        assert err.retry_after == 4.0
    mismatch = problem_from_body(
        409, {"type": "urn:s3lock:problem:limit-mismatch", "detail": "limit is 3"}, None
    )
    assert type(mismatch) is LimitMismatch and "limit is 3" in str(mismatch)


def test_a_grant_is_parsed_with_the_callers_own_lease_and_its_token_is_never_shown() -> None:
    secret = "f3b1c0de-0000-4000-8000-000000000000"
    body = _semaphore_answer(token=secret, lease=_HOLDER, newer_field=1)
    grant = SharedLease.from_json_sent(body, sent_at=100.0)
    assert grant.kind == "semaphore" and (grant.limit, grant.permits_left) == (3, 2)
    assert grant.holder.fencing_token == 7 and grant.holder.mode is None
    assert grant.expire == 30 and grant.valid_until == pytest.approx(129.0)
    assert grant.holders[0].owner == "w1" and grant.extra == {"newer_field": 1}
    assert secret not in repr(grant)
    view = SharedView.from_json(_semaphore_answer())
    assert view.lease is None and view.waiters_here == 0
    rw = SharedView.from_json(
        _semaphore_answer(
            kind="rwlock",
            limit=None,
            permits_left=None,
            waiting=[
                {"owner": "w2", "mode": "exclusive", "expires_at": "2026-11-26T05:49:00+00:00"}
            ],
        )
    )
    assert rw.limit is None and rw.waiting[0].owner == "w2" and rw.waiting[0].mode == "exclusive"


def test_a_grant_without_a_token_or_without_the_callers_lease_is_not_the_api() -> None:
    with pytest.raises(UnexpectedResponse):
        SharedLease.from_json_sent(_semaphore_answer(lease=_HOLDER), 0.0)
    with pytest.raises(UnexpectedResponse):
        SharedLease.from_json_sent(_semaphore_answer(token="t"), 0.0)
    with pytest.raises(UnexpectedResponse):
        SharedView.from_json({"kind": "semaphore"})


def test_the_lost_signal_judges_the_clock_before_anyone_sets_it() -> None:
    # What SelfRenewing gives it: a judge that sets the signal once the time is up.
    time_up = threading.Event()
    signal: Optional[LostSignal] = None

    def judge() -> None:
        if time_up.is_set():
            assert signal is not None
            signal.set()

    signal = LostSignal(judge)
    assert not signal and not signal.is_set() and not signal.wait(0.01)
    time_up.set()
    assert signal.wait(0) and signal.is_set() and bool(signal)


# -- against a server -------------------------------------------------------------------------


def test_a_semaphore_grants_limit_holders_and_refuses_the_next_one(
    client: Client, key: str
) -> None:
    grants = [client.semaphore_acquire(key, 3, owner=f"w{i}", ttl=30) for i in range(3)]
    tokens = [g.holder.fencing_token for g in grants]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    assert grants[-1].permits_left == 0
    with pytest.raises(SemaphoreFull) as full:
        client.semaphore_acquire(key, 3, owner="w3", wait=0)
    assert full.value.expires_at is not None
    view = client.shared_status("semaphore", key)
    assert [h.owner for h in view.holders] == ["w0", "w1", "w2"]
    assert (view.limit, view.permits_left) == (3, 0)
    raw = json.dumps(client.request("GET", f"/semaphores/{key}"))
    assert all(g.token not in raw for g in grants), "a status shows no holder token"
    client.shared_release("semaphore", key, grants[0].token)
    again = client.semaphore_acquire(key, 3, owner="w3")
    assert again.holder.fencing_token > max(tokens)
    for g in (*grants[1:], again):
        client.shared_release("semaphore", key, g.token)


def test_a_limit_other_than_the_holders_is_refused_while_they_hold(
    client: Client, key: str
) -> None:
    held = client.semaphore_acquire(key, 2, ttl=30)
    with pytest.raises(LimitMismatch):
        client.semaphore_acquire(key, 3)
    client.shared_release("semaphore", key, held.token)
    # Nobody holds it now: the next limit replaces the stored one.
    assert client.semaphore_acquire(key, 3).limit == 3


def test_a_permit_held_in_a_with_block_is_renewed_and_released_on_leaving_it(
    client: Client, key: str
) -> None:
    semaphore = client.semaphore(key, 1, owner="worker", ttl=3)
    with semaphore.acquire() as permit:
        assert isinstance(permit, SharedHolding) and permit.owner == "worker"
        first_end = permit.expires_at
        deadline = time.monotonic() + 10
        while permit.renewals < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert permit.renewals >= 2 and not permit.lost, permit.lost_reason
        assert permit.expires_at is not None and first_end is not None
        assert permit.expires_at > first_end
        with pytest.raises(SemaphoreFull):
            semaphore.acquire(owner="other", wait=0)
    assert semaphore.status().permits_left == 1
    # Released by hand as well as by leaving a block; a second release does nothing.
    second = semaphore.acquire()
    second.release()
    second.release()
    assert semaphore.status().holders == ()


def test_a_broken_semaphore_sets_the_lost_signal_and_leaving_the_block_raises_lease_lost(
    client: Client, admin: Client, key: str
) -> None:
    told: List[LeaseLost] = []
    with pytest.raises(LeaseLost):
        with client.semaphore(key, 2, ttl=3).acquire(
            on_lost=lambda _h, e: told.append(e)
        ) as permit:
            assert not permit.lost
            admin.shared_break("semaphore", key)
            # The next renewal (a third of the lease on) is refused.
            assert permit.lost.wait(10), "no lost signal after a break"
            with pytest.raises(LeaseLost):
                permit.check()
    assert len(told) == 1


def test_readers_share_a_read_write_lock_and_a_writer_holds_it_alone(
    client: Client, key: str
) -> None:
    rwlock = client.rwlock(key, ttl=30)
    with rwlock.shared(owner="r1") as r1, rwlock.shared(owner="r2") as r2:
        assert r1.mode == r2.mode == "shared"
        assert r1.fencing_token != r2.fencing_token
        with pytest.raises(LockHeld):
            rwlock.exclusive(owner="w", wait=0)
        assert {h.owner for h in rwlock.status().holders} == {"r1", "r2"}
    with rwlock.exclusive(owner="w") as writer:
        assert writer.mode == "exclusive"
        with pytest.raises(LockHeld) as held:
            rwlock.shared(owner="r3", wait=0)
        assert held.value.owner == "w"
    assert rwlock.status().holders == ()


def test_a_waiting_writer_keeps_new_readers_out_until_it_has_had_its_turn(
    server: Server, client: Client, key: str
) -> None:
    rwlock = client.rwlock(key, ttl=30)
    reader = rwlock.shared(owner="r1")
    granted: List[SharedHolding] = []

    def write() -> None:
        granted.append(server.client().rwlock(key, ttl=30).exclusive(owner="w", wait=10))

    waiter = threading.Thread(target=write)
    waiter.start()
    deadline = time.monotonic() + 5
    while not rwlock.status().waiting and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [w.owner for w in rwlock.status().waiting] == ["w"]
    with pytest.raises(LockHeld) as held:
        rwlock.shared(owner="r2", wait=0)
    assert held.value.owner == "w"
    reader.release()
    waiter.join(15)
    assert len(granted) == 1 and granted[0].owner == "w"
    granted[0].release()
