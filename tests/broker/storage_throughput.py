"""Hand-run throughput check of PartitionLog (not a test).

    .venv/bin/python -m tests.broker.storage_throughput [count] [batch_bytes] [dir]

Appends `count` single-record batches of `batch_bytes` without fsync, then reads them
back from the tail cache and from disk, and reports MB/s.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from broker._storage import LogConfig, PartitionLog
from tests.broker.records import batch_of_size


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 100_000
    size = int(argv[1]) if len(argv) > 1 else 1024
    base = Path(argv[2]) if len(argv) > 2 else None
    batch = batch_of_size(size, timestamp=int(time.time() * 1000))
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        log = PartitionLog.open(Path(tmp) / "p0", LogConfig(segment_bytes=64 << 20))
        now = int(time.time() * 1000)
        t0 = time.perf_counter()
        for _ in range(count):
            log.append(batch, leader_epoch=0, now_ms=now)
        t1 = time.perf_counter()
        total = count * size
        _report("append", total, t1 - t0, count)
        log.high_watermark = log.log_end_offset
        # Consumer at the tail: read what was just appended (tail cache).
        start = log.log_end_offset - (4 << 20) // size
        t0 = time.perf_counter()
        offset, got = start, 0
        while offset < log.log_end_offset:
            res = log.read(offset, 1 << 20)
            got += res.size
            offset += res.size // size
        _report("tail read", got, time.perf_counter() - t0, 0)
        # Catch-up consumer from the beginning (disk via pread).
        t0 = time.perf_counter()
        offset, got = 0, 0
        while offset < log.log_end_offset:
            res = log.read(offset, 1 << 20)
            got += res.size
            offset += res.size // size
        _report("disk read", got, time.perf_counter() - t0, 0)
        t0 = time.perf_counter()
        log.close()
        print(f"close (fsync {total / 1e6:.0f} MB): {time.perf_counter() - t0:.2f}s")
        t0 = time.perf_counter()
        log = PartitionLog.open(Path(tmp) / "p0", LogConfig(segment_bytes=64 << 20))
        print(f"clean open: {time.perf_counter() - t0:.3f}s, LEO {log.log_end_offset}")
        log.close()
    return 0


def _report(what: str, nbytes: int, seconds: float, ops: int) -> None:
    rate = nbytes / seconds / 1e6
    per = f", {seconds / ops * 1e6:.1f} us/append" if ops else ""
    print(f"{what}: {nbytes / 1e6:.0f} MB in {seconds:.2f}s = {rate:.0f} MB/s{per}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
