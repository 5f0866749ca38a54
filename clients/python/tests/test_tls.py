"""The client over https against a real ``s3lock serve --tls-cert ...``: a CA file, an
``ssl.SSLContext`` with a client certificate (mTLS), and the refusals: an untrusted server, and a
server that requires a client certificate we do not have. Certificates are made at run time
with the ``openssl`` command."""

from __future__ import annotations

import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List

import pytest

from s3lock_client import Client, ConnectionFailed

from conftest import USER_TOKEN, Server


class Pki:
    """A CA, a server certificate for localhost and 127.0.0.1, and a client certificate, as PEM
    files in a temp dir; and a second CA that issued nothing we use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca, self.ca_key = self._ca("s3lock-test-ca")
        self.other_ca, _ = self._ca("s3lock-other-ca")
        self.server, self.server_key = self._leaf("localhost", "DNS:localhost,IP:127.0.0.1")
        self.client, self.client_key = self._leaf("py-client", "DNS:py-client")

    def _run(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=self.root)

    def _ca(self, name: str) -> "tuple[Path, Path]":
        cert, key = self.root / f"{name}.pem", self.root / f"{name}.key"
        self._run(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )
        return cert, key

    def _leaf(self, name: str, san: str) -> "tuple[Path, Path]":
        cert, key, csr = (self.root / f"{name}.{ext}" for ext in ("pem", "key", "csr"))
        ext = self.root / f"{name}.ext"
        ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
        self._run(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
        )
        self._run(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
        )
        return cert, key


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    with tempfile.TemporaryDirectory(prefix="s3lock-py-pki-") as root:
        yield Pki(Path(root))


def tls_server(pki: Pki, started: List[Server], *, mtls: bool) -> Server:
    args = ["--tls-cert", str(pki.server), "--tls-key", str(pki.server_key)]
    if mtls:
        args += ["--tls-client-ca", str(pki.ca)]
    srv = Server("local", args)
    started.append(srv)
    assert srv.url.startswith("https://localhost:")
    return srv


def test_a_ca_file_lets_the_client_take_and_release_a_lock_over_https(
    pki: Pki, own_servers: List[Server]
) -> None:
    srv = tls_server(pki, own_servers, mtls=False)
    with Client(srv.url, USER_TOKEN, ca_cert=str(pki.ca)) as c:
        lease = c.acquire("py/tls/a", owner="alice", ttl=30)
        c.release("py/tls/a", lease.token)
        assert c.status("py/tls/a").locked is False


def test_an_ssl_context_with_a_client_certificate_passes_mtls(
    pki: Pki, own_servers: List[Server]
) -> None:
    srv = tls_server(pki, own_servers, mtls=True)
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client), str(pki.client_key))
    with Client(srv.url, USER_TOKEN, ssl_context=context) as c:
        assert c.acquire("py/tls/b", owner="alice", ttl=30).owner == "alice"


def test_the_ca_and_client_certificate_come_from_the_environment_as_the_clis_do(
    pki: Pki, own_servers: List[Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = tls_server(pki, own_servers, mtls=True)
    monkeypatch.setenv("S3LOCK_CA_CERT", str(pki.ca))
    monkeypatch.setenv("S3LOCK_CLIENT_CERT", str(pki.client))
    monkeypatch.setenv("S3LOCK_CLIENT_KEY", str(pki.client_key))
    with Client(srv.url, USER_TOKEN) as c:
        assert c.acquire("py/tls/env", owner="alice", ttl=30).owner == "alice"


def test_a_server_of_an_untrusted_ca_is_refused_and_nothing_secret_is_said(
    pki: Pki, own_servers: List[Server]
) -> None:
    srv = tls_server(pki, own_servers, mtls=False)
    with Client(srv.url, USER_TOKEN, ca_cert=str(pki.other_ca)) as c:
        with pytest.raises(ConnectionFailed) as refused:
            c.acquire("py/tls/c", owner="alice", ttl=30)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    assert USER_TOKEN not in str(refused.value)
    with Client(srv.url, USER_TOKEN, ca_cert=str(pki.ca)) as c:
        assert c.status("py/tls/c").owner is None


def test_an_mtls_server_refuses_a_client_without_a_certificate(
    pki: Pki, own_servers: List[Server]
) -> None:
    srv = tls_server(pki, own_servers, mtls=True)
    with Client(srv.url, USER_TOKEN, ca_cert=str(pki.ca)) as c:
        with pytest.raises(ConnectionFailed) as refused:
            c.acquire("py/tls/d", owner="alice", ttl=30)
    assert USER_TOKEN not in str(refused.value)
    assert "BEGIN" not in str(refused.value)
    with Client(srv.url, USER_TOKEN, ca_cert=str(pki.ca), client_cert=str(pki.client),
                client_key=str(pki.client_key)) as c:
        assert c.status("py/tls/d").owner is None


def test_an_ssl_context_and_certificate_files_together_are_refused() -> None:
    with pytest.raises(ValueError):
        Client("https://localhost:1", ssl_context=ssl.create_default_context(), ca_cert="x")
    with pytest.raises(ValueError):
        Client("https://localhost:1", client_cert="only-the-cert.pem")
