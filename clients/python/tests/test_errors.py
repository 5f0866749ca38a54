"""Every problem type the server answers becomes its own exception class, and 503s are retried
within the caller's deadline."""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from pathlib import Path
from typing import List, Optional

import pytest

import s3lock_client
from s3lock_client import (
    BodyTooLarge,
    BucketNotAllowed,
    Client,
    ConnectionFailed,
    Forbidden,
    InvalidInput,
    LockHeld,
    LockNotFound,
    LockUnreadable,
    MalformedBody,
    MethodNotAllowed,
    NotHolder,
    NotReady,
    ProblemError,
    RouteNotFound,
    ServiceUnavailable,
    StoreError,
    StoreUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from s3lock_client.errors import PROBLEM_CLASSES, problem_from_body

from conftest import ADMIN_TOKEN, JOBS_TOKEN, OTHER_BUCKET, REPO, Server, s3_endpoint, s3_raw
from relay import Relay


def test_every_problem_type_of_the_server_has_its_own_exception_class() -> None:
    # The server's one table of problem types (src/http/error.rs) against this client's classes:
    # a type added there and not here fails this test.
    source = (REPO / "src" / "http" / "error.rs").read_text()
    table = re.findall(r"StatusCode::(\w+),\s*\"([a-z-]+)\"", source)
    assert len(table) >= 18, table
    for status_name, kind in table:
        cls = PROBLEM_CLASSES.get(kind)
        assert cls is not None, f"no exception class for problem type {kind!r}"
        assert cls.KIND == kind
        assert cls.__name__ in s3lock_client.__all__
        status = {"SERVICE_UNAVAILABLE": 503}.get(status_name, 400)
        err = problem_from_body(
            status, {"type": f"urn:s3lock:problem:{kind}", "title": "t", "detail": "d"}, 1.0
        )
        assert type(err) is cls
        assert issubclass(cls, ServiceUnavailable) == (status_name == "SERVICE_UNAVAILABLE")
    assert len({cls for cls in PROBLEM_CLASSES.values()}) == len(PROBLEM_CLASSES)


def test_an_unknown_problem_type_still_raises_a_problem_error() -> None:
    err = problem_from_body(409, {"type": "urn:s3lock:problem:brand-new", "detail": "x"}, None)
    assert type(err) is ProblemError and err.kind == "brand-new" and err.status == 409
    err = problem_from_body(503, {"type": "urn:s3lock:problem:brand-new"}, 1.0)
    assert type(err) is ServiceUnavailable


def test_lock_held_names_the_holder_and_the_end_of_its_lease(client: Client, key: str) -> None:
    alice = client.acquire(key, owner="alice", ttl=30)
    with pytest.raises(LockHeld) as e:
        client.acquire(key, owner="bob")
    assert (e.value.owner, e.value.expires_at) == ("alice", alice.expires_at)
    # Seconds until the lease ends, at least 1 (more than 30 on S3: judged on the store's clock).
    assert e.value.retry_after is not None and e.value.retry_after >= 1


def test_not_holder_for_a_token_that_does_not_hold_the_lock(client: Client, key: str) -> None:
    lease = client.acquire(key, ttl=30)
    with pytest.raises(NotHolder) as e:
        client.renew(key, "not-" + lease.token)
    assert e.value.status == 409
    with pytest.raises(NotHolder):
        client.release(key, "not-" + lease.token)
    client.release(key, lease.token)
    with pytest.raises(NotHolder):
        client.renew(key, lease.token)


def test_lock_not_found_for_a_key_never_locked(client: Client, key: str) -> None:
    with pytest.raises(LockNotFound) as e:
        client.renew(key, "whatever-token")
    assert e.value.status == 404


def test_lock_unreadable_for_an_object_that_is_not_a_lock(
    server: Server, client: Client, key: str
) -> None:
    server.put_raw(key, b"this is not a lock document")
    with pytest.raises(LockUnreadable) as e:
        client.acquire(key)
    assert e.value.status == 409


def test_route_not_found_and_method_not_allowed(client: Client) -> None:
    with pytest.raises(RouteNotFound) as e:
        client.request("POST", "/locks/a/frobnicate", {})
    assert e.value.status == 404
    with pytest.raises(MethodNotAllowed) as m:
        client.request("DELETE", "/locks/a")
    assert m.value.status == 405


def test_invalid_input_names_the_field(client: Client, key: str) -> None:
    with pytest.raises(InvalidInput) as e:
        client.acquire(key, ttl=0)
    assert e.value.field == "ttl"
    with pytest.raises(InvalidInput) as k:
        client.acquire("a//b")
    assert k.value.field == "key"
    with pytest.raises(InvalidInput) as w:
        client.acquire(key, wait=-1)
    assert w.value.field == "wait"
    # Keys and owners must be Unicode NFC, without format characters (bidi controls).
    with pytest.raises(InvalidInput) as nfc:
        client.acquire(key + "/e\u0301")
    assert nfc.value.field == "key"
    with pytest.raises(InvalidInput) as bidi:
        client.acquire(key, owner="alice\u202e")
    assert bidi.value.field == "owner"


def test_malformed_body_too_large_and_unsupported_media_type(client: Client, key: str) -> None:
    path = f"/locks/{key}/acquire"
    with pytest.raises(MalformedBody):
        client.request("POST", path, {"owner": "alice", "colour": "red"})
    with pytest.raises(MalformedBody):
        client.request("POST", f"/locks/{key}/renew", None)
    with pytest.raises(BodyTooLarge) as big:
        client.request("POST", path, {"owner": "x" * 20000})
    assert big.value.status == 413
    with pytest.raises(UnsupportedMediaType) as media:
        client.request("POST", path, raw_body=b"{}", content_type="text/plain")
    assert media.value.status == 415


def test_unauthorized_without_or_with_an_unknown_auth_token(server: Server, key: str) -> None:
    with pytest.raises(Unauthorized) as none:
        server.client(None).acquire(key)
    assert none.value.status == 401
    with pytest.raises(Unauthorized):
        server.client("an-unknown-auth-token-0123456789").status(key)


def test_forbidden_outside_the_auth_tokens_prefix_and_for_a_break_by_a_non_admin(
    server: Server, client: Client, key: str
) -> None:
    jobs = server.client(JOBS_TOKEN)
    lease = jobs.acquire("jobs/" + key, ttl=30)
    with pytest.raises(Forbidden) as e:
        jobs.acquire(key)
    assert e.value.status == 403 and type(e.value) is Forbidden
    with pytest.raises(Forbidden):
        client.break_lock("jobs/" + key)
    server.client(ADMIN_TOKEN).break_lock("jobs/" + key)
    with pytest.raises(NotHolder):
        jobs.release("jobs/" + key, lease.token)
    # An auth token without bucket= is valid on the default bucket only.
    with pytest.raises(Forbidden):
        server.client(JOBS_TOKEN, bucket=OTHER_BUCKET).acquire("jobs/" + key)


def test_bucket_not_allowed_is_a_forbidden(server: Server, key: str) -> None:
    with pytest.raises(BucketNotAllowed) as e:
        server.client(bucket="not-configured").acquire(key)
    assert isinstance(e.value, Forbidden) and e.value.status == 403


def test_connection_failed_when_nothing_listens() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectionFailed):
        Client(f"http://127.0.0.1:{port}").status("a")


# -- store errors: S3 servers of the test's own ----------------------------------------------


def test_store_error_for_a_bucket_missing_from_the_store(own_servers: List[Server]) -> None:
    missing = f"py-missing-{int(time.time() * 1000)}"
    srv = Server(
        "s3", ["--allowed-buckets", missing, "--skip-store-check"], create_buckets=False
    )
    own_servers.append(srv)
    with pytest.raises(StoreError) as e:
        srv.client(bucket=missing).acquire("a")
    assert e.value.status == 502
    assert "see the server log" in e.value.detail  # the cause stays in the log


def test_store_unavailable_is_retried_within_the_deadline_then_raised(
    own_servers: List[Server],
) -> None:
    relay = Relay(_endpoint_address())
    try:
        srv = Server("s3", SKIP_CHECK, endpoint=relay.url, s3_timeout=1)
        own_servers.append(srv)
        relay.cut()
        client = srv.client(timeout=5)
        with pytest.raises(StoreUnavailable) as e:
            client.acquire("a")
        assert e.value.status == 503 and e.value.retry_after == 1
        # More than one attempt reached the server: the first 503 was retried.
        answered_503 = srv.metric(
            "s3lock_http_requests_total", route="/locks/{key}/acquire", status="503"
        )
        assert answered_503 >= 2
        with pytest.raises(NotReady):
            client.ready(timeout=2.5)
    finally:
        relay.close()


def test_a_503_is_retried_until_the_store_is_back(own_servers: List[Server]) -> None:
    relay = Relay(_endpoint_address())
    try:
        srv = Server("s3", SKIP_CHECK, endpoint=relay.url, s3_timeout=1)
        own_servers.append(srv)
        client = srv.client(timeout=30)
        relay.cut()
        result: List[Optional[str]] = []

        def acquire() -> None:
            result.append(client.acquire("back", owner="alice", ttl=30).owner)

        t = threading.Thread(target=acquire)
        t.start()
        route = "/locks/{key}/acquire"
        while srv.metric("s3lock_http_requests_total", route=route, status="503") < 1:
            time.sleep(0.05)
        relay.restore()
        t.join(30)
        assert result == ["alice"]
        assert srv.metric("s3lock_http_requests_total", route=route, status="200") == 1
    finally:
        relay.close()


# Servers behind the relay skip the start-up store check: it is slow through the relay with a 1 s
# S3 timeout, and the shared servers have already proven this SeaweedFS.
SKIP_CHECK = ["--skip-store-check"]


def _endpoint_address() -> "tuple[str, int]":
    parsed = urllib.parse.urlsplit(s3_endpoint())
    assert parsed.hostname is not None and parsed.port is not None
    return (parsed.hostname, parsed.port)


def test_the_missing_bucket_really_is_missing() -> None:
    # Guards the store-error test above: SeaweedFS answers 404 for a bucket nobody created.
    assert s3_raw("GET", "/py-never-created-bucket/x") == 404


def test_nothing_here_is_left_unexported() -> None:
    exported = {n for n in s3lock_client.__all__ if n[0].isupper()}
    classes = {c.__name__ for c in PROBLEM_CLASSES.values()}
    assert classes <= exported
    assert Path(s3lock_client.__file__).with_name("py.typed").exists()
