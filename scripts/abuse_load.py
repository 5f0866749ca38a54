#!/usr/bin/env python3
"""The abusive clients of scripts/abuse, one per mode, each bounded in time and count.

Loopback only: every mode refuses a host other than 127.0.0.1. Each prints one JSON object
(what it did, what the server answered) on stdout when its --duration is up, and closes every
socket it opened.

  slowloris  N connections that each send half a request line and never finish it; one the
             server closes is counted and opened again (as a real slowloris would)
  watch      N watches `GET /locks/<new key>?index=0&wait=60`, one per key, each on its own
             connection; an answered one is asked again after its Retry-After, else 1 s
  list       the whole list under a prefix, page after page, asked again at once, in a loop
  fill       N locks held (ttl 3600) under a prefix, for `list` to read
  h2wait     N blocked acquires (`wait`) as HTTP/2 streams (h2c, prior knowledge) over C
             connections; needs the `h2` package (pip install h2)
"""
import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HOST = "127.0.0.1"


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def slowloris(port, n, duration):
    deadline = time.monotonic() + duration
    stats = {"mode": "slowloris", "connections": n, "opened": 0, "connect_failed": 0,
             "closed_by_server": 0, "seconds_open_before_close": []}
    gate = asyncio.Semaphore(100)  # connects at once

    async def one():
        while time.monotonic() < deadline:
            async with gate:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(HOST, port), 5)
                except (OSError, asyncio.TimeoutError):
                    stats["connect_failed"] += 1
                    await asyncio.sleep(0.5)
                    continue
            stats["opened"] += 1
            opened = time.monotonic()
            try:
                writer.write(b"GET /healthz HTT")  # half a request line, never finished
                await writer.drain()
                left = deadline - time.monotonic()
                # Whatever comes back (a close, or a 408 then a close) ends this connection.
                await asyncio.wait_for(reader.read(4096), max(left, 0.01))
                stats["closed_by_server"] += 1
                stats["seconds_open_before_close"].append(time.monotonic() - opened)
            except asyncio.TimeoutError:
                pass  # still open at the deadline
            except OSError:
                stats["closed_by_server"] += 1
                stats["seconds_open_before_close"].append(time.monotonic() - opened)
            finally:
                writer.close()

    await asyncio.gather(*(one() for _ in range(n)))
    s = stats.pop("seconds_open_before_close")
    stats["median_s_open_before_close"] = round(statistics.median(s), 1) if s else None
    return stats


async def watch(port, n, duration, prefix):
    deadline = time.monotonic() + duration
    stats = {"mode": "watch", "watches": n, "asked": 0, "connect_failed": 0, "answers": {},
             "open_at_end": 0}
    gate = asyncio.Semaphore(100)

    async def one(i):
        req = (f"GET /locks/{prefix}{i}?index=0&wait=60 HTTP/1.1\r\nHost: {HOST}\r\n"
               "Connection: close\r\n\r\n").encode()
        while time.monotonic() < deadline:
            async with gate:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(HOST, port), 5)
                except (OSError, asyncio.TimeoutError):
                    stats["connect_failed"] += 1
                    await asyncio.sleep(1)
                    continue
            stats["asked"] += 1
            pause = 1.0  # asked again after Retry-After (if any), else 1 s
            try:
                writer.write(req)
                await writer.drain()
                left = deadline - time.monotonic()
                line = await asyncio.wait_for(reader.readline(), max(left, 0.01))
                parts = line.split()
                status = parts[1].decode() if len(parts) > 1 else "closed"
                stats["answers"][status] = stats["answers"].get(status, 0) + 1
                while True:
                    h = await asyncio.wait_for(reader.readline(), 5)
                    if h in (b"\r\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    if k.strip().lower() == "retry-after" and v.strip().isdigit():
                        pause = float(v.strip())
            except asyncio.TimeoutError:
                stats["open_at_end"] += 1
                return
            except OSError:
                stats["answers"]["reset"] = stats["answers"].get("reset", 0) + 1
            finally:
                writer.close()
            await asyncio.sleep(pause)

    await asyncio.gather(*(one(i) for i in range(n)))
    return stats


def get_json(url):
    with urllib.request.urlopen(url, timeout=120) as r:
        return json.load(r)


def list_loop(port, duration, prefix):
    deadline = time.monotonic() + duration
    stats = {"mode": "list", "rounds": 0, "pages": 0, "locks_last_round": 0, "errors": {},
             "round_s": []}
    paged = True  # ask for pages of 1,000; a server without pages refuses `limit` (400)
    while time.monotonic() < deadline:
        started = time.monotonic()
        cursor, count = None, 0
        try:
            while True:
                url = f"http://{HOST}:{port}/locks?prefix={prefix}"
                if paged:
                    url += "&limit=1000"
                if cursor:
                    url += f"&cursor={cursor}"
                page = get_json(url)
                stats["pages"] += 1
                count += len(page["locks"])
                cursor = page.get("next")
                if not cursor:
                    break
        except urllib.error.HTTPError as e:
            if e.code == 400 and paged and stats["rounds"] == 0:
                paged = False
                continue
            stats["errors"][str(e.code)] = stats["errors"].get(str(e.code), 0) + 1
            time.sleep(0.1)
            continue
        except OSError as e:
            stats["errors"][type(e).__name__] = stats["errors"].get(type(e).__name__, 0) + 1
            time.sleep(0.1)
            continue
        stats["rounds"] += 1
        stats["locks_last_round"] = count
        stats["round_s"].append(time.monotonic() - started)
    r = stats.pop("round_s")
    stats["paged"] = paged
    stats["median_round_s"] = round(statistics.median(r), 3) if r else None
    return stats


def fill(port, n, prefix):
    body = json.dumps({"owner": "fill", "ttl": 3600}).encode()

    def one(i):
        req = urllib.request.Request(f"http://{HOST}:{port}/locks/{prefix}{i}/acquire",
                                     data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(one, range(n)))
    return {"mode": "fill", "locks": n,
            "answers": {str(c): codes.count(c) for c in sorted(set(codes))}}


async def h2wait(port, n, conns, duration, prefix, keys):
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    deadline = time.monotonic() + duration
    stats = {"mode": "h2wait", "waiters": n, "connections": conns, "server_max_streams": [],
             "streams_opened": 0, "not_opened_over_limit": 0, "answers": {}, "reset": 0,
             "open_at_end": 0}
    body = json.dumps({"owner": "h2", "ttl": 60, "wait": 60}).encode()
    per_conn = [n // conns + (1 if c < n % conns else 0) for c in range(conns)]

    async def one(c, count):
        reader, writer = await asyncio.open_connection(HOST, port)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        open_streams = set()
        settings_seen = False
        try:
            while time.monotonic() < deadline:
                if not settings_seen:
                    data = await asyncio.wait_for(reader.read(65536), 5)
                else:
                    left = deadline - time.monotonic()
                    try:
                        data = await asyncio.wait_for(reader.read(65536), max(left, 0.01))
                    except asyncio.TimeoutError:
                        break
                if not data:
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RemoteSettingsChanged) and not settings_seen:
                        settings_seen = True
                        limit = conn.remote_settings.max_concurrent_streams
                        stats["server_max_streams"].append(limit)
                        for j in range(count):
                            k = (c * 100003 + j) % keys
                            sid = conn.get_next_available_stream_id()
                            try:
                                conn.send_headers(sid, [
                                    (":method", "POST"), (":scheme", "http"),
                                    (":authority", f"{HOST}:{port}"),
                                    (":path", f"/locks/{prefix}{k}/acquire"),
                                    ("content-type", "application/json"),
                                    ("content-length", str(len(body)))])
                            except h2.exceptions.TooManyStreamsError:
                                stats["not_opened_over_limit"] += count - j
                                break
                            conn.send_data(sid, body, end_stream=True)
                            open_streams.add(sid)
                            stats["streams_opened"] += 1
                    elif isinstance(ev, h2.events.ResponseReceived):
                        status = dict(ev.headers).get(b":status", b"?").decode()
                        stats["answers"][status] = stats["answers"].get(status, 0) + 1
                    elif isinstance(ev, h2.events.StreamReset):
                        stats["reset"] += 1
                        open_streams.discard(ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        open_streams.discard(ev.stream_id)
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                writer.write(conn.data_to_send())
                await writer.drain()
        finally:
            stats["open_at_end"] += len(open_streams)
            writer.close()

    await asyncio.gather(*(one(c, per_conn[c]) for c in range(conns)))
    return stats


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["slowloris", "watch", "list", "fill", "h2wait"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--keys", type=int, default=1)
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--prefix", default="abuse/")
    a = p.parse_args()
    if not 1 <= a.count <= 20000 or not 0 < a.duration <= 600 or not 1 <= a.connections <= 64:
        sys.exit("count 1..20000, duration 0..600 s, connections 1..64")
    raise_fd_limit()
    if a.mode == "slowloris":
        r = asyncio.run(slowloris(a.port, a.count, a.duration))
    elif a.mode == "watch":
        r = asyncio.run(watch(a.port, a.count, a.duration, a.prefix))
    elif a.mode == "list":
        r = list_loop(a.port, a.duration, a.prefix)
    elif a.mode == "fill":
        r = fill(a.port, a.count, a.prefix)
    else:
        r = asyncio.run(h2wait(a.port, a.count, a.connections, a.duration, a.prefix, a.keys))
    print(json.dumps(r))


if __name__ == "__main__":
    main()
