"""Keep-alive HTTP/1.1 over the standard library: one connection per thread and client.

``http.client`` connections are not thread-safe, so each thread gets its own, kept in a
``threading.local``; every connection ever opened is also remembered so ``close()`` can shut
them all.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import urllib.parse
from typing import Dict, List, Optional, Tuple

from .errors import ConnectionFailed

# On a connection that has carried a request before, these mean the server closed it while it
# sat idle: worth one more try on a new connection. On a new connection they are real failures.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Dict[str, str], body: bytes) -> None:
        self.status = status
        # Lower-cased names.
        self.headers = headers
        self.body = body


class Stream:
    """A streaming answer (server-sent events) on a connection of its own, read line by line.

    ``readline`` raises :class:`ConnectionFailed` when the connection breaks or stays silent
    longer than its timeout; it returns ``b""`` when the server ended the stream.
    """

    def __init__(
        self,
        transport: "Transport",
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
    ) -> None:
        self._transport = transport
        self._conn = conn
        self._resp = resp
        self.status = resp.status
        # Lower-cased names.
        self.headers = {k.lower(): v for k, v in resp.getheaders()}

    def readline(self) -> bytes:
        try:
            return self._resp.readline()
        except socket.timeout:
            raise ConnectionFailed("the stream stayed silent past its timeout") from None
        except (OSError, http.client.HTTPException) as e:
            raise ConnectionFailed(f"the stream broke ({e})") from None

    def read_all(self) -> bytes:
        """The whole body (of an error answer)."""
        try:
            return self._resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise ConnectionFailed(f"the answer broke ({e})") from None

    def close(self) -> None:
        self._conn.close()
        self._transport._forget(self._conn)


class Transport:
    def __init__(self, url: str, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"the server URL must be http:// or https://, not {url!r}")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port
        #: A path the server is mounted under (behind a proxy), without the trailing slash.
        self.base_path = parsed.path.rstrip("/")
        #: Checks the server's certificate (and presents ours) over https; ``None``: the
        #: standard library's default context.
        self.ssl_context = ssl_context
        self._local = threading.local()
        self._all: List[http.client.HTTPConnection] = []
        self._all_lock = threading.Lock()

    def _connection(self) -> Tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it has carried a request before."""
        conn: Optional[http.client.HTTPConnection] = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port)
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        return conn, False

    def _drop(self) -> None:
        conn: Optional[http.client.HTTPConnection] = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()
            with self._all_lock:
                if conn in self._all:
                    self._all.remove(conn)

    def request(
        self,
        method: str,
        path: str,
        body: Optional[bytes],
        headers: Dict[str, str],
        timeout: float,
    ) -> Response:
        for _attempt in range(2):
            conn, reused = self._connection()
            conn.timeout = max(timeout, 0.001)
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(conn.timeout)
                conn.request(method, self.base_path + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except _STALE as e:
                self._drop()
                if reused:
                    continue
                raise ConnectionFailed(f"{method} {path}: the connection broke ({e})") from None
            except socket.timeout:
                self._drop()
                raise ConnectionFailed(f"{method} {path}: no answer within {timeout:.3g} s") from None
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                raise ConnectionFailed(f"{method} {path}: {e}") from None
            if resp.will_close:
                self._drop()
            return Response(
                resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            )
        raise ConnectionFailed(f"{method} {path}: the connection broke twice")

    def open_stream(
        self, path: str, headers: Dict[str, str], timeout: float
    ) -> Stream:
        """``GET path`` on a new connection that stays the stream's: ``timeout`` bounds the
        connect and every wait for the next bytes after it."""
        if self.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self.ssl_context
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        with self._all_lock:
            self._all.append(conn)
        try:
            conn.request("GET", self.base_path + path, headers=headers)
            resp = conn.getresponse()
        except socket.timeout:
            conn.close()
            self._forget(conn)
            raise ConnectionFailed(f"GET {path}: no answer within {timeout:.3g} s") from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self._forget(conn)
            raise ConnectionFailed(f"GET {path}: {e}") from None
        return Stream(self, conn, resp)

    def _forget(self, conn: http.client.HTTPConnection) -> None:
        with self._all_lock:
            if conn in self._all:
                self._all.remove(conn)

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
