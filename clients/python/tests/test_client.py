"""Every method of Client against a live server, on the local store and on S3."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import List

import pytest

from s3lock_client import (
    Client,
    InvalidInput,
    Lease,
    LockDelayed,
    LockHeld,
    LockView,
    NotHolder,
)

from conftest import OTHER_BUCKET, Server


def test_acquire_grants_a_typed_lease_with_a_token_and_a_fencing_token(
    client: Client, key: str
) -> None:
    before = dt.datetime.now(dt.timezone.utc)
    lease = client.acquire(key, owner="alice", ttl=30)
    assert isinstance(lease, Lease)
    assert lease.key == key and lease.owner == "alice" and lease.locked
    assert lease.fencing_token == 1
    assert lease.expire == 30
    assert len(lease.token) >= 16
    assert lease.expires_at is not None and lease.expires_at.tzinfo is not None
    assert lease.expires_at - lease.lock_time == dt.timedelta(seconds=30)
    # The store's clock; the S3 store stamps at the latest its time can be, never earlier.
    assert lease.lock_time >= before - dt.timedelta(seconds=2)
    assert 0 < lease.ttl_remaining_ms <= 30_000
    assert lease.release_time is None
    # The holder token is a secret: repr must not show it.
    assert lease.token not in repr(lease)


def test_acquire_without_an_owner_gets_a_random_one(client: Client, key: str) -> None:
    lease = client.acquire(key)
    assert lease.owner is not None and len(lease.owner) == 32
    int(lease.owner, 16)


def test_renew_keeps_the_token_and_fencing_token_and_restarts_the_lease(
    client: Client, key: str
) -> None:
    lease = client.acquire(key, owner="alice", ttl=5)
    renewed = client.renew(key, lease.token, ttl=120)
    assert renewed.token == lease.token
    assert renewed.fencing_token == lease.fencing_token
    assert renewed.expire == 120
    assert renewed.expires_at is not None and lease.expires_at is not None
    assert renewed.expires_at > lease.expires_at
    assert renewed.sent_at >= lease.sent_at
    assert renewed.valid_until > lease.valid_until


def test_release_frees_the_lock_for_the_next_owner_with_a_higher_fencing_token(
    client: Client, key: str
) -> None:
    first = client.acquire(key, owner="alice", ttl=30)
    released = client.release(key, first.token)
    assert isinstance(released, LockView) and not isinstance(released, Lease)
    assert released.owner is None and not released.locked
    assert released.release_time is not None and released.expires_at is None
    # Releasing again with the same token is a no-op.
    again = client.release(key, first.token)
    assert again.owner is None
    second = client.acquire(key, owner="bob", ttl=30)
    assert second.fencing_token == first.fencing_token + 1
    client.release(key, second.token)


def test_second_owner_is_refused_while_the_lock_is_held_and_waits_for_it(
    server: Server, client: Client, key: str
) -> None:
    alice = client.acquire(key, owner="alice", ttl=30)
    with pytest.raises(LockHeld) as held:
        client.acquire(key, owner="bob")
    assert held.value.owner == "alice"
    assert held.value.expires_at == alice.expires_at
    assert held.value.status == 409 and held.value.retry_after is not None

    # bob waits; alice releases from another thread once the server counts bob as waiting.
    def release_when_bob_waits() -> None:
        while server.metric("s3lock_waiters") < 1:
            time.sleep(0.01)
        client.release(key, alice.token)

    t = threading.Thread(target=release_when_bob_waits, daemon=True)
    t.start()
    bob = client.acquire(key, owner="bob", ttl=30, wait=9)
    t.join()
    assert bob.owner == "bob" and bob.fencing_token == alice.fencing_token + 1


def test_status_answers_from_the_owners_point_of_view(client: Client, key: str) -> None:
    never = client.status(key)
    assert never.fencing_token == 0 and never.owner is None and not never.locked
    assert never.lock_time == dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    lease = client.acquire(key, owner="alice", ttl=30)
    seen = client.status(key)
    assert seen.owner == "alice" and seen.locked and seen.fencing_token == lease.fencing_token
    assert not isinstance(seen, Lease)
    assert client.status(key, owner="alice").locked is False
    assert client.status(key, owner="bob").locked is True


def test_list_shows_every_lock_under_a_prefix_without_tokens(client: Client, key: str) -> None:
    tokens = [client.acquire(f"{key}/{i}", ttl=30).token for i in range(3)]
    client.acquire(f"{key}-elsewhere", ttl=30)
    listed = client.list(f"{key}/")
    assert sorted(v.key for v in listed) == [f"{key}/{i}" for i in range(3)]
    assert all(type(v) is LockView and v.locked for v in listed)
    assert len(client.list(key)) == 4
    for i, token in enumerate(tokens):
        client.release(f"{key}/{i}", token)


def test_list_follows_the_servers_pages_to_every_lock_once(client: Client, key: str) -> None:
    tokens = [client.acquire(f"{key}/{i:02}", ttl=30).token for i in range(25)]
    expected = [f"{key}/{i:02}" for i in range(25)]
    assert [v.key for v in client.list(f"{key}/", page_size=10)] == expected
    lazily = client.iter_locks(f"{key}/", page_size=10)
    assert next(lazily).key == expected[0]
    assert [expected[0]] + [v.key for v in lazily] == expected
    assert [v.key for v in client.list(f"{key}/", page_size=1000)] == expected
    for i, token in enumerate(tokens):
        client.release(f"{key}/{i:02}", token)


def test_keys_with_slashes_and_odd_characters_round_trip(client: Client, key: str) -> None:
    odd = f"{key}/a b/ü%/x?y#z"
    lease = client.acquire(odd, ttl=30)
    assert lease.key == odd
    assert client.status(odd).locked
    client.release(odd, lease.token)


def test_admin_break_frees_the_lock_and_the_old_token_stops_working(
    server: Server, client: Client, admin: Client, key: str
) -> None:
    lease = client.acquire(key, owner="alice", ttl=30)
    broken = admin.break_lock(key, reason="python client test")
    assert broken.owner is None and broken.fencing_token == lease.fencing_token + 1
    with pytest.raises(NotHolder):
        client.renew(key, lease.token)
    nxt = client.acquire(key, owner="bob", ttl=30)
    assert nxt.fencing_token == lease.fencing_token + 2


def test_a_bucket_client_uses_that_bucket_only(server: Server, key: str) -> None:
    with server.client(bucket=OTHER_BUCKET) as other, server.client() as default:
        lease = other.acquire(key, ttl=30)
        assert lease.bucket == OTHER_BUCKET
        assert not default.status(key).locked
        assert other.status(key).locked
        assert [v.key for v in other.list(key)] == [key]
        other.release(key, lease.token)
        explicit = server.client(bucket=server.bucket)
        assert explicit.acquire(key, ttl=30).bucket == server.bucket


def test_health_and_readiness(client: Client) -> None:
    assert client.healthy()
    assert client.ready()


def test_url_and_auth_token_default_to_the_cli_environment(
    server: Server, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import USER_TOKEN

    monkeypatch.setenv("S3LOCK_URL", server.url)
    monkeypatch.setenv("S3LOCK_AUTH_TOKEN", USER_TOKEN)
    c = Client()
    assert c.url == server.url
    lease = c.acquire(key, ttl=30)
    c.release(key, lease.token)
    # The auth token is never shown.
    assert USER_TOKEN not in repr(c)


def test_one_client_is_safe_to_share_between_threads(client: Client, key: str) -> None:
    errors: List[BaseException] = []
    fences: List[int] = []
    guard = threading.Lock()

    def work(i: int) -> None:
        try:
            for j in range(5):
                lease = client.acquire(f"{key}/{i}/{j}", ttl=30)
                assert client.status(f"{key}/{i}/{j}").owner == lease.owner
                client.release(f"{key}/{i}/{j}", lease.token)
                with guard:
                    fences.append(lease.fencing_token)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert fences == [1] * 40


def test_connections_are_kept_alive(server: Server, key: str) -> None:
    with server.client() as c:
        for _ in range(5):
            c.status(key)
        assert len(c._transport._all) == 1


def test_a_value_is_published_with_the_lease_shown_to_others_and_kept_or_replaced(
    server: Server, client: Client, key: str
) -> None:
    leader = {"addr": "10.0.0.7:8080", "term": 3}
    lease = client.acquire(key, owner="alice", ttl=30, value=leader)
    assert lease.value == leader
    with server.client() as other:
        assert other.status(key).value == leader
        assert [v.value for v in other.list(key)] == [leader]
    kept = client.renew(key, lease.token, ttl=30)
    assert kept.value == leader
    replaced = client.renew(key, lease.token, value=["moved", 2])
    assert replaced.value == ["moved", 2]
    # None is JSON null: it clears the value (leaving value= out keeps it).
    cleared = client.renew(key, lease.token, value=None)
    assert cleared.value is None
    assert client.status(key).value is None
    with pytest.raises(InvalidInput) as big:
        client.renew(key, lease.token, value="x" * 5000)
    assert big.value.field == "value"
    client.release(key, lease.token)
    assert client.status(key).value is None


def test_a_managed_lease_publishes_its_value_and_renews_keep_it(
    client: Client, key: str
) -> None:
    with client.lock(key, ttl=3, value={"pid": 42}, lock_delay=5) as lease:
        assert lease.value == {"pid": 42}
        deadline = time.monotonic() + 30
        while lease.renewals < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lease.renewals >= 1, "the lease was never renewed"
        assert lease.lease.value == {"pid": 42}
        assert client.status(key).value == {"pid": 42}
    released = client.status(key)
    assert released.value is None and released.available_at is None


def test_a_crashed_holders_lock_raises_lock_delayed_until_a_release(
    client: Client, key: str
) -> None:
    # alice's lease (1 s) runs out without a release; 30 s of lock-delay follow.
    alice = client.acquire(key, owner="alice", ttl=1, lock_delay=30)
    assert alice.expires_at is not None
    assert alice.available_at == alice.expires_at + dt.timedelta(seconds=30)
    for _ in range(100):
        status = client.status(key)
        if not status.locked:
            break
        time.sleep(0.05)
    assert not status.locked and status.owner == "alice"
    assert status.available_at == alice.available_at
    with pytest.raises(LockDelayed) as delayed:
        client.acquire(key, owner="bob")
    assert delayed.value.available_at == alice.available_at
    assert delayed.value.status == 409 and delayed.value.retry_after is not None
    with pytest.raises(NotHolder):
        client.renew(key, alice.token)
    # alice comes back and lets go: the delay ends at once.
    client.release(key, alice.token)
    bob = client.acquire(key, owner="bob", ttl=30)
    assert bob.fencing_token == alice.fencing_token + 1 and bob.value is None
    client.release(key, bob.token)
