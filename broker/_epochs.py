"""The leader epoch cache of one partition, and atomic checkpoint files.

The cache maps each leader epoch to the first offset written in it, which is what
OffsetForLeaderEpoch answers and what a follower truncates by. It is stored in Kafka's
`leader-epoch-checkpoint` format: a version line "0", a count line, then one
"epoch start_offset" line per entry.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["LeaderEpochCache", "read_checkpoint", "write_checkpoint"]

log = logging.getLogger("vigil.broker")

UNDEFINED_EPOCH = -1
UNDEFINED_OFFSET = -1


def write_checkpoint(path: Path, text: str, *, durable: bool = True) -> None:
    """Replace `path` atomically: write a temp file, optionally fsync it, rename over.

    Without `durable`, a power loss may leave the old file or an empty one; callers
    use that only for checkpoints whose loss is safe (it only costs recovery work).
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> str | None:
    """The text of a checkpoint file, or None if it is missing or unreadable."""
    try:
        return path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None


class LeaderEpochCache:
    """Epoch -> start offset entries, strictly increasing in both, persisted on change."""

    def __init__(self, path: Path, entries: list[tuple[int, int]] | None = None) -> None:
        self.path = path
        self._entries: list[tuple[int, int]] = list(entries or [])

    @classmethod
    def load(cls, path: Path) -> LeaderEpochCache:
        """Read the checkpoint at `path`; a missing or malformed file gives an empty cache."""
        text = read_checkpoint(path)
        entries: list[tuple[int, int]] = []
        if text is not None:
            try:
                entries = _parse(text)
            except ValueError as exc:
                log.warning("ignoring malformed leader epoch checkpoint %s: %s", path, exc)
                entries = []
        return cls(path, entries)

    @property
    def entries(self) -> list[tuple[int, int]]:
        return list(self._entries)

    @property
    def latest_epoch(self) -> int:
        """The newest epoch, or -1 when nothing has been written."""
        return self._entries[-1][0] if self._entries else UNDEFINED_EPOCH

    def start_offset_of(self, epoch: int) -> int | None:
        for e, start in self._entries:
            if e == epoch:
                return start
        return None

    def assign(self, epoch: int, start_offset: int) -> None:
        """Record that `epoch` starts at `start_offset`; ignored unless epoch is new."""
        if epoch < 0 or (self._entries and epoch <= self._entries[-1][0]):
            return
        if self._entries and start_offset < self._entries[-1][1]:
            # A newer epoch cannot start before an older one: drop the stale tail.
            self._entries = [(e, s) for e, s in self._entries if s < start_offset]
        self._entries.append((epoch, start_offset))
        self._save()

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(epoch, end offset) for OffsetForLeaderEpoch, as Kafka computes it.

        The end offset of an epoch is the start offset of the next higher epoch, or the
        log end offset for the latest. For an epoch between two entries the answer is the
        largest epoch below it. Unknown (newer than latest, or no entries) -> (-1, -1).
        """
        if epoch == UNDEFINED_EPOCH or not self._entries:
            return UNDEFINED_EPOCH, UNDEFINED_OFFSET
        if epoch == self._entries[-1][0]:
            return epoch, log_end_offset
        floor: tuple[int, int] | None = None
        for entry in self._entries:
            if entry[0] > epoch:
                if floor is None:
                    return epoch, entry[1]
                return floor[0], entry[1]
            floor = entry
        return UNDEFINED_EPOCH, UNDEFINED_OFFSET

    def truncate_from_end(self, end_offset: int) -> None:
        """Drop entries starting at or after `end_offset` (the log was truncated there)."""
        kept = [(e, s) for e, s in self._entries if s < end_offset]
        if kept != self._entries:
            self._entries = kept
            self._save()

    def truncate_from_start(self, start_offset: int) -> None:
        """Drop entries wholly before `start_offset`; the one covering it moves up to it."""
        before = [(e, s) for e, s in self._entries if s <= start_offset]
        if not before:
            return
        covering = before[-1]
        kept = [(covering[0], start_offset)] + [
            (e, s) for e, s in self._entries if s > start_offset
        ]
        if kept != self._entries:
            self._entries = kept
            self._save()

    def clear(self) -> None:
        if self._entries:
            self._entries = []
            self._save()

    def _save(self) -> None:
        lines = ["0", str(len(self._entries))]
        lines += [f"{e} {s}" for e, s in self._entries]
        write_checkpoint(self.path, "\n".join(lines) + "\n")


def _parse(text: str) -> list[tuple[int, int]]:
    lines = text.split("\n")
    if not lines or lines[0].strip() != "0":
        raise ValueError(f"unsupported version line {lines[0]!r}")
    count = int(lines[1])
    entries: list[tuple[int, int]] = []
    for line in lines[2 : 2 + count]:
        epoch, start = line.split()
        entries.append((int(epoch), int(start)))
    if len(entries) != count:
        raise ValueError(f"expected {count} entries, found {len(entries)}")
    return entries
