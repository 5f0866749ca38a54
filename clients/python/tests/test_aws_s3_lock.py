"""The drop-in for ``aws_s3_lock``: the old module's API and documented behaviours, its usage
example run as a real program with only its import changed, and other processes refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from s3lock_client import Client, NotHolder
from s3lock_client.aws_s3_lock import AlreadyLockedError, Lock, Vault, get_utc_now

from conftest import EXAMPLE_BUCKET, OTHER_BUCKET, Server, python_env

# The usage example of the old module's documentation, verbatim (its import line names the
# module file, a typo of the original).
OLD_EXAMPLE = '''\
import boto3
from aws_s3_lock.py import Lock, Vault, get_utc_now, AlreadyLockedError

s3_client = boto3.client("s3")

# define a vault backend
vault = Vault(bucket="my-bucket", key="my-task.json", expire=900, wait=1.0)

# acquire the lock before doing any task
lock = vault.acquire(s3_client) # or vault.acquire(s3_client, owner="alice")

# do yor task that requires the distributed lock here
...

# release the lock after the task is done
vault.release(s3_client, lock)
'''
OLD_IMPORT = "from aws_s3_lock.py import Lock, Vault, get_utc_now, AlreadyLockedError"
NEW_IMPORT = "from s3lock_client.aws_s3_lock import Lock, Vault, get_utc_now, AlreadyLockedError"


def example_with_new_import() -> str:
    new = OLD_EXAMPLE.replace(OLD_IMPORT, NEW_IMPORT)
    changed = [
        (a, b) for a, b in zip(OLD_EXAMPLE.splitlines(), new.splitlines()) if a != b
    ]
    assert changed == [(OLD_IMPORT, NEW_IMPORT)]
    return new


def run_python(server: Server, code: str, tmp_path: Path, name: str) -> "subprocess.CompletedProcess[str]":
    script = tmp_path / name
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)],
        env=python_env(server),
        capture_output=True,
        text=True,
        timeout=60,
    )


def lock_time_of(lock: Lock) -> dt.datetime:
    return dt.datetime.fromisoformat(lock.lock_time)


@pytest.fixture
def vault_key(key: str) -> str:
    return key + ".json"


def vault(server: Server, key: str, expire: int = 30, wait: float = 0.0) -> Vault:
    return Vault(server.bucket, key, expire, wait, client=server.client())


# -- the API and behaviours from FACTS.md ----------------------------------------------------


def test_acquire_returns_the_old_lock_document_and_release_frees_it(
    server: Server, client: Client, vault_key: str
) -> None:
    v = vault(server, vault_key, expire=900)
    before = get_utc_now()
    lock = v.acquire(None, owner="alice")
    assert isinstance(lock, Lock)
    assert [f.name for f in dataclasses.fields(Lock)] == [
        "expire", "lock_time", "release_time", "owner"
    ]
    assert (lock.expire, lock.release_time, lock.owner) == (900, None, "alice")
    lock_time = dt.datetime.fromisoformat(lock.lock_time)
    assert lock_time.utcoffset() == dt.timedelta(0) and lock.lock_time.endswith("+00:00")
    assert lock_time >= before - dt.timedelta(seconds=2)
    # Lock(**json) still builds it, as the old module read its documents.
    assert Lock(**json.loads(json.dumps(dataclasses.asdict(lock)))) == lock
    assert client.status(vault_key).owner == "alice"

    released = v.release(None, lock)
    assert released.owner is None and released.release_time is not None
    assert released.expire == 900
    assert client.status(vault_key).owner is None


def test_owner_defaults_to_a_random_uuid4_hex(server: Server, vault_key: str) -> None:
    v = vault(server, vault_key)
    first = v.acquire(object())
    assert first.owner is not None and len(first.owner) == 32 and int(first.owner, 16) >= 0
    v.release(object(), first)
    second = v.acquire(object())
    assert second.owner != first.owner
    v.release(object(), second)


def test_another_owner_gets_already_locked_error(server: Server, vault_key: str) -> None:
    vault(server, vault_key).acquire(None, owner="alice")
    with pytest.raises(AlreadyLockedError):
        vault(server, vault_key).acquire(None, owner="bob")


def test_the_same_owner_acquiring_again_refreshes_the_lease(
    server: Server, client: Client, vault_key: str
) -> None:
    v = vault(server, vault_key, expire=30)
    first = v.acquire(None, owner="alice")
    assert v.lease is not None
    fence, token = v.lease.fencing_token, v.lease.token
    again = v.acquire(None, owner="alice")
    # On S3 the new stamp may equal the old one (the store's clock is known to a window).
    assert again.owner == "alice" and lock_time_of(again) >= lock_time_of(first)
    assert (v.lease.fencing_token, v.lease.token) == (fence, token)
    # A second Vault object of the same lock in this process refreshes too: here with another
    # lease length, which the stored lock then has.
    other = vault(server, vault_key, expire=60)
    third = other.acquire(None, owner="alice")
    assert third.expire == 60 and lock_time_of(third) >= lock_time_of(again)
    assert other.lease is not None and other.lease.fencing_token == fence
    assert client.status(vault_key).expire == 60
    # One release frees it (no count).
    other.release(None, third)
    assert client.status(vault_key).owner is None


def test_is_locked_is_judged_from_the_owners_point_of_view(
    server: Server, client: Client, vault_key: str
) -> None:
    lock = vault(server, vault_key, expire=60).acquire(None, owner="alice")
    now = get_utc_now()
    assert lock.is_locked(now, "alice") is False
    assert lock.is_locked(now, "bob") is True
    # The server agrees.
    assert client.status(vault_key, owner="alice").locked is False
    assert client.status(vault_key, owner="bob").locked is True
    # Nobody owns it: not locked for anyone.
    free = dataclasses.replace(lock, owner=None)
    assert free.is_locked(now, "bob") is False


def test_the_boundary_counts_as_expired() -> None:
    lock = Lock(
        expire=900, lock_time="2026-11-26T02:24:19.844224+00:00", release_time=None, owner="bob"
    )
    end = dt.datetime(2026, 11, 26, 2, 39, 19, 844224, tzinfo=dt.timezone.utc)
    assert lock.is_locked(end - dt.timedelta(microseconds=1), "alice") is True
    assert lock.is_locked(end, "alice") is False
    assert lock.is_locked(end + dt.timedelta(microseconds=1), "alice") is False
    # A lock_time written without a fraction (microsecond 0), as isoformat() does.
    whole = Lock(expire=1, lock_time="1970-01-01T00:00:00+00:00", release_time=None, owner="x")
    assert whole.is_locked(dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc), "y") is False


def test_an_expired_lock_is_taken_over_and_the_stale_release_leaves_the_new_holder_alone(
    server: Server, client: Client, vault_key: str
) -> None:
    old = vault(server, vault_key, expire=1)
    stale = old.acquire(None, owner="alice")
    while client.status(vault_key).locked:
        time.sleep(0.05)
    assert stale.is_locked(get_utc_now(), "bob") is False
    new = vault(server, vault_key, expire=30)
    bob = new.acquire(None, owner="bob")
    assert bob.owner == "bob"
    # The old module's release would have erased bob's lock here.
    released = old.release(None, stale)
    assert released.owner is None
    assert client.status(vault_key).owner == "bob"


def test_release_of_a_lock_this_process_never_acquired_is_refused(
    server: Server, client: Client, vault_key: str
) -> None:
    held = client.acquire(vault_key, owner="mallory", ttl=30)
    forged = Lock(expire=30, lock_time=held.lock_time.isoformat(), release_time=None, owner="mallory")
    with pytest.raises(NotHolder):
        vault(server, vault_key).release(None, forged)
    assert client.status(vault_key).owner == "mallory"


def test_wait_is_how_long_acquire_waits_for_a_held_lock_to_come_free(
    server: Server, client: Client, vault_key: str
) -> None:
    holder = client.acquire(vault_key, owner="alice", ttl=30)
    import threading

    def release_when_waited_on() -> None:
        while server.metric("s3lock_waiters") < 1:
            time.sleep(0.01)
        client.release(vault_key, holder.token)

    t = threading.Thread(target=release_when_waited_on, daemon=True)
    t.start()
    lock = vault(server, vault_key, wait=9).acquire(None, owner="bob")
    t.join()
    assert lock.owner == "bob"


def test_an_old_module_document_in_the_store_is_respected(
    server: Server, client: Client, vault_key: str
) -> None:
    now = get_utc_now().isoformat()
    doc = {"expire": 900, "lock_time": now, "release_time": None, "owner": "legacy"}
    server.put_raw(vault_key, json.dumps(doc).encode())
    with pytest.raises(AlreadyLockedError):
        vault(server, vault_key).acquire(None, owner="new-client")
    assert client.status(vault_key).owner == "legacy"


def test_the_vaults_bucket_is_the_services_bucket(server: Server, vault_key: str) -> None:
    v = Vault(OTHER_BUCKET, vault_key, 30, 0.0, client=server.client())
    lock = v.acquire(None)
    assert v.lease is not None and v.lease.bucket == OTHER_BUCKET
    assert server.client(bucket=OTHER_BUCKET).status(vault_key).owner == lock.owner
    assert server.client().status(vault_key).owner is None
    v.release(None, lock)


# -- real programs ------------------------------------------------------------------------


def test_the_old_usage_example_runs_with_only_its_import_changed(
    server: Server, tmp_path: Path
) -> None:
    example = server.client(bucket=EXAMPLE_BUCKET)
    before = example.status("my-task.json")
    done = run_python(server, example_with_new_import(), tmp_path, "example.py")
    assert done.returncode == 0, done.stderr
    after = example.status("my-task.json")
    # It acquired (a new holder: the fencing token grew) and released.
    assert after.fencing_token == before.fencing_token + 1
    assert after.owner is None and after.release_time is not None

    # While this process holds the vault, the example's acquire fails with AlreadyLockedError.
    v = Vault("my-bucket", "my-task.json", 900, 0.0, client=server.client())
    lock = v.acquire(None, owner="holder")
    refused = run_python(server, example_with_new_import(), tmp_path, "example.py")
    assert refused.returncode == 1
    assert "s3lock_client.aws_s3_lock.AlreadyLockedError" in refused.stderr
    v.release(None, lock)
    assert run_python(server, example_with_new_import(), tmp_path, "example.py").returncode == 0


HOLDER = textwrap.dedent(
    """\
    import sys
    from s3lock_client.aws_s3_lock import Vault
    vault = Vault(bucket=sys.argv[1], key=sys.argv[2], expire=60, wait=0)
    lock = vault.acquire(None, owner="alice")
    print("acquired", flush=True)
    sys.stdin.readline()
    # The same owner in this process refreshes; then one release frees it.
    lock = vault.acquire(None, owner="alice")
    vault.release(None, lock)
    print("released", flush=True)
    """
)

OTHER = textwrap.dedent(
    """\
    import sys
    from s3lock_client.aws_s3_lock import Vault, AlreadyLockedError
    vault = Vault(bucket=sys.argv[1], key=sys.argv[2], expire=60, wait=0)
    try:
        vault.acquire(None, owner=sys.argv[3])
    except AlreadyLockedError:
        print("AlreadyLockedError")
        sys.exit(3)
    print("acquired")
    """
)


def test_a_second_process_gets_already_locked_error_even_naming_the_same_owner(
    server: Server, client: Client, vault_key: str, tmp_path: Path
) -> None:
    (tmp_path / "holder.py").write_text(HOLDER)
    (tmp_path / "other.py").write_text(OTHER)
    env = python_env(server)
    holder = subprocess.Popen(
        [sys.executable, str(tmp_path / "holder.py"), server.bucket, vault_key],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "acquired", holder.stderr
        for owner in ("bob", "alice"):
            # "alice" too: an owner name is no longer a credential; only alice's process,
            # which holds the token, can refresh.
            other = subprocess.run(
                [sys.executable, str(tmp_path / "other.py"), server.bucket, vault_key, owner],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert (other.returncode, other.stdout.strip()) == (3, "AlreadyLockedError"), (
                owner,
                other.stderr,
            )
        assert client.status(vault_key).owner == "alice"
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        assert holder.wait(30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert client.status(vault_key).owner is None


def test_a_lock_kept_for_its_lock_delay_is_already_locked_for_the_old_api(
    server: Server, client: Client, vault_key: str
) -> None:
    # Another client's lease ran out unreleased, and asked for 30 s of lock-delay after it.
    client.acquire(vault_key, owner="crashed", ttl=1, lock_delay=30)
    for _ in range(100):
        if not client.status(vault_key).locked:
            break
        time.sleep(0.05)
    with pytest.raises(AlreadyLockedError) as kept:
        vault(server, vault_key).acquire(None, owner="alice")
    assert "lock-delay" in str(kept.value)
