"""16 threads through the drop-in on one key never hold it at once."""

from __future__ import annotations

import threading
import time
from typing import List, Tuple

from s3lock_client.aws_s3_lock import AlreadyLockedError, Vault

from conftest import Server

THREADS = 16
GRANTS_EACH = 3


def test_sixteen_threads_through_the_drop_in_never_hold_one_key_at_once(
    server: Server, key: str
) -> None:
    # Each grant as its holder saw it: (fencing token, monotonic start, monotonic end), where
    # start is taken after acquire returned and end before release was sent.
    grants: List[Tuple[int, float, float]] = []
    inside = [0]
    overlaps: List[int] = []
    guard = threading.Lock()
    errors: List[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker() -> None:
        try:
            v = Vault(server.bucket, key, 30, 1.0, client=server.client())
            start.wait()
            got = 0
            while got < GRANTS_EACH:
                try:
                    lock = v.acquire(None)
                except AlreadyLockedError:
                    continue
                began = time.monotonic()
                assert v.lease is not None
                fence = v.lease.fencing_token
                with guard:
                    inside[0] += 1
                    if inside[0] != 1:
                        overlaps.append(fence)
                time.sleep(0.002)
                with guard:
                    inside[0] -= 1
                ended = time.monotonic()
                v.release(None, lock)
                with guard:
                    grants.append((fence, began, ended))
                got += 1
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert overlaps == []
    assert len(grants) == THREADS * GRANTS_EACH
    grants.sort()
    fences = [g[0] for g in grants]
    # Every grant was a new holder with its own fencing token, and the holds, in fencing order,
    # follow one another without overlapping.
    assert len(set(fences)) == len(fences)
    for (f1, _, end1), (f2, start2, _) in zip(grants, grants[1:]):
        assert f2 > f1
        assert end1 <= start2, f"fencing token {f2}'s hold began before {f1}'s ended"
