"""Runs real ``s3lock serve`` processes (``target/debug/s3lock``) for the tests: on the embedded
local store in a temp dir, and on the S3 store against the SeaweedFS whose endpoint
``S3LOCK_TEST_S3_ENDPOINT`` names (``scripts/test`` and ``scripts/test-python`` start one).
Without that variable the S3 tests fail, on purpose: they are never skipped."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from s3lock_client import Client

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("S3LOCK_BIN", REPO / "target" / "debug" / "s3lock"))

# Auth tokens of every test server: a user and an admin (may break) valid on every allowed
# bucket, and one limited to keys under "jobs/" in the default bucket.
USER_TOKEN = "py-user-" + secrets.token_hex(16)
ADMIN_TOKEN = "py-admin-" + secrets.token_hex(16)
JOBS_TOKEN = "py-jobs-" + secrets.token_hex(16)
OTHER_BUCKET = "other-bucket"
#: The bucket of the old module's usage example.
EXAMPLE_BUCKET = "my-bucket"

STORES = ["local", "s3"]


def s3_endpoint() -> str:
    endpoint = os.environ.get("S3LOCK_TEST_S3_ENDPOINT")
    if not endpoint:
        pytest.fail(
            "S3LOCK_TEST_S3_ENDPOINT is not set: run scripts/test-python (it starts SeaweedFS)"
        )
    return endpoint


class Server:
    """One ``s3lock serve`` process on a free loopback port."""

    def __init__(
        self,
        store: str,
        extra_args: Optional[List[str]] = None,
        *,
        endpoint: Optional[str] = None,
        s3_timeout: int = 5,
        create_buckets: bool = True,
    ) -> None:
        """``endpoint``: the S3 endpoint to use instead of SeaweedFS's own (a relay to it).
        ``create_buckets=False``: only the default bucket is made (by the test, not the server),
        so an allowed bucket can be missing from the store."""
        self.store = store
        self.dir = Path(tempfile.mkdtemp(prefix=f"s3lock-py-{store}-"))
        self.tokens_file = self.dir / "tokens"
        self.tokens_file.write_text(
            f"{USER_TOKEN} name=py-user bucket=*\n{ADMIN_TOKEN} name=py-admin admin bucket=*\n"
            f"{JOBS_TOKEN} name=py-jobs prefix=jobs/\n"
        )
        self.log_path = self.dir / "server.log"
        self.data_dir = self.dir / "data"
        run = uuid.uuid4().hex[:12]
        args = [
            str(BIN),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--auth-tokens-file",
            str(self.tokens_file),
            "--max-wait",
            "10",
        ]
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        if store == "local":
            self.bucket = "default"
            self.prefix = "locks/"
            args += ["--data-dir", str(self.data_dir)]
        else:
            self.endpoint = endpoint or s3_endpoint()
            # A bucket and a prefix of its own: runs sharing one SeaweedFS never meet.
            self.bucket = f"py-{run}"
            self.prefix = f"py-{run}/"
            args += [
                "--store",
                "s3",
                "--s3-endpoint",
                self.endpoint,
                "--s3-path-style",
                "--bucket",
                self.bucket,
                "--prefix",
                self.prefix,
                "--s3-timeout",
                str(s3_timeout),
            ]
            if create_buckets:
                args.append("--create-buckets")
            else:
                status = s3_raw("PUT", f"/{self.bucket}")
                assert status == 200, f"creating bucket {self.bucket}: {status}"
            for var, value in (
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_REGION", "us-east-1"),
            ):
                env.setdefault(var, value)
        self.allowed = [OTHER_BUCKET, EXAMPLE_BUCKET]
        if "--allowed-buckets" not in (extra_args or []):
            args += ["--allowed-buckets", ",".join(self.allowed)]
        args += extra_args or []
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        self.url = self._wait_for_address()

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"s3lock serve exited ({self.proc.returncode}):\n{self.log()}")
            for line in self.log_path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                message = entry.get("message")
                if message == "s3lock is serving" and "address" in entry:
                    return f"http://{entry['address']}"
                if message == "s3lock is serving https" and "address" in entry:
                    # By name: the test certificates are issued for localhost.
                    port = str(entry["address"]).rsplit(":", 1)[1]
                    return f"https://localhost:{port}"
            time.sleep(0.05)
        raise RuntimeError(f"s3lock serve did not start in 60 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def client(
        self, token: Optional[str] = USER_TOKEN, timeout: float = 30.0, bucket: Optional[str] = None
    ) -> Client:
        """A client of this server; ``token=None`` sends no auth token at all."""
        return Client(self.url, token or "", timeout, bucket=bucket)

    def kill(self) -> None:
        """Stops the server at once (SIGKILL): as a crash or a lost machine would."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def put_raw(self, key: str, body: bytes) -> None:
        """Writes ``body`` as the stored object of ``key``, behind the server's back (as another
        program writing the bucket would): for corrupt or old-module documents."""
        object_key = self.prefix + key
        if self.store == "local":
            digest = hashlib.sha256(object_key.encode()).hexdigest()
            path = self.data_dir / "buckets" / self.bucket / digest[:2] / digest
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(object_key.encode() + b"\n" + body)
        else:
            status = s3_raw("PUT", f"/{self.bucket}/{urllib.parse.quote(object_key)}", body)
            assert status == 200, f"PUT to SeaweedFS answered {status}"

    def metric(self, name: str, **labels: str) -> float:
        """The sum of one Prometheus metric's samples whose labels include ``labels``."""
        parsed = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(str(parsed.hostname), parsed.port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            if head != name and not head.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total


def s3_raw(method: str, path: str, body: Optional[bytes] = None) -> int:
    """An unsigned request straight to SeaweedFS (it runs without auth in the tests)."""
    parsed = urllib.parse.urlsplit(s3_endpoint())
    conn = http.client.HTTPConnection(str(parsed.hostname), parsed.port, timeout=10)
    conn.request(method, path, body=body)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


@pytest.fixture(scope="session", params=STORES)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A shared server per store, for tests that do not stop or reconfigure it."""
    srv = Server(request.param)
    yield srv
    srv.stop()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    """A store name, for tests that start servers of their own."""
    return str(request.param)


@pytest.fixture
def own_servers() -> Iterator[List[Server]]:
    """Servers a test starts itself (and may kill); stopped at the end of the test."""
    started: List[Server] = []
    yield started
    for srv in started:
        srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with server.client() as c:
        yield c


@pytest.fixture
def admin(server: Server) -> Iterator[Client]:
    with server.client(ADMIN_TOKEN) as c:
        yield c


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    """A key no other test uses."""
    name = request.node.name.split("[")[0].replace("test_", "")
    return f"py/{name}/{uuid.uuid4().hex[:8]}"


def python_env(server: Server, **extra: str) -> Dict[str, str]:
    """The environment for a Python subprocess using the drop-in: this server, the user auth
    token, and no AWS credentials at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["S3LOCK_URL"] = server.url
    env["S3LOCK_AUTH_TOKEN"] = USER_TOKEN
    env.update(extra)
    return env
