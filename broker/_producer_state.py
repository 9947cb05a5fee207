"""Idempotent producer state of one partition (pure; snapshots are JSON text).

For every producer id the table keeps its epoch and the metadata of its last five
batches, which is what Kafka needs to spot a retried batch (a duplicate) and to reject
gaps in the sequence. The rules follow Kafka's ProducerStateManager:

* an epoch older than the current one is fenced (InvalidProducerEpochError);
* a newer epoch, or an unknown producer, must start at sequence 0;
* within an epoch, a batch whose (first_seq, last_seq) matches one of the cached five
  is a duplicate; otherwise it must continue right after the last sequence (int32
  wraparound: after 2147483647 comes 0), else OutOfOrderSequenceError.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from broker._batch import BatchHeader, StorageError

__all__ = [
    "BatchMetadata",
    "InvalidProducerEpochError",
    "OutOfOrderSequenceError",
    "ProducerEntry",
    "ProducerStateTable",
]

BATCHES_KEPT = 5
_INT32_MAX = 0x7FFFFFFF
NO_SEQUENCE = -1


class OutOfOrderSequenceError(StorageError):
    """A batch's sequence does not follow the producer's last one."""


class InvalidProducerEpochError(StorageError):
    """A batch comes from an older epoch of the producer (a fenced zombie)."""


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    max_timestamp: int


@dataclass(slots=True)
class ProducerEntry:
    producer_id: int
    epoch: int
    batches: list[BatchMetadata] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    @property
    def last_offset(self) -> int:
        return self.batches[-1].last_offset if self.batches else -1


def last_sequence(header: BatchHeader) -> int:
    return (header.base_sequence + header.last_offset_delta) & _INT32_MAX


def _next_sequence(seq: int) -> int:
    return 0 if seq == _INT32_MAX else seq + 1


@dataclass(frozen=True, slots=True)
class ProducerUpdate:
    """One accepted batch's effect on the table, applied once the batch is written."""

    producer_id: int
    epoch: int
    batch: BatchMetadata | None  # None: a control batch, which only bumps the epoch


class ProducerStateTable:
    def __init__(self) -> None:
        self._producers: dict[int, ProducerEntry] = {}

    def get(self, producer_id: int) -> ProducerEntry | None:
        return self._producers.get(producer_id)

    def __len__(self) -> int:
        return len(self._producers)

    def plan(
        self, headers: Sequence[BatchHeader], first_offsets: Sequence[int]
    ) -> tuple[BatchMetadata | None, list[ProducerUpdate]]:
        """Validate batches about to be appended at `first_offsets`.

        Returns (duplicate, updates): `duplicate` is the cached metadata of the original
        when a batch is a retry (then nothing must be appended); otherwise `updates` are
        to be passed to `apply` after the write. Raises on fencing or a sequence gap.
        Nothing in the table changes here.
        """
        updates: list[ProducerUpdate] = []
        pending: dict[int, tuple[int, list[BatchMetadata]]] = {}
        for header, first in zip(headers, first_offsets, strict=True):
            pid = header.producer_id
            if pid < 0:
                continue
            if pid in pending:
                epoch, batches = pending[pid]
            else:
                entry = self._producers.get(pid)
                epoch, batches = (entry.epoch, list(entry.batches)) if entry else (-1, [])
            known = pid in pending or pid in self._producers
            p_epoch = header.producer_epoch
            if known and p_epoch < epoch:
                raise InvalidProducerEpochError(
                    f"producer {pid}: epoch {p_epoch} is older than current epoch {epoch}"
                )
            new_epoch = not known or p_epoch > epoch
            if header.is_control or header.base_sequence == NO_SEQUENCE:
                pending[pid] = (p_epoch, [] if new_epoch else batches)
                updates.append(ProducerUpdate(pid, p_epoch, None))
                continue
            last_seq = last_sequence(header)
            if new_epoch:
                if header.base_sequence != 0:
                    raise OutOfOrderSequenceError(
                        f"producer {pid}: new epoch {p_epoch} must start at sequence 0, "
                        f"got {header.base_sequence}"
                    )
                batches = []
            else:
                for cached in batches:
                    if cached.first_seq == header.base_sequence and cached.last_seq == last_seq:
                        return cached, []
                expected = _next_sequence(batches[-1].last_seq if batches else NO_SEQUENCE)
                if header.base_sequence != expected:
                    raise OutOfOrderSequenceError(
                        f"producer {pid} epoch {p_epoch}: expected sequence {expected}, "
                        f"got {header.base_sequence}"
                    )
            meta = BatchMetadata(
                header.base_sequence, last_seq, first, first + header.last_offset_delta,
                header.max_timestamp,
            )
            batches = [*batches[-(BATCHES_KEPT - 1):], meta]
            pending[pid] = (p_epoch, batches)
            updates.append(ProducerUpdate(pid, p_epoch, meta))
        return None, updates

    def apply(self, updates: Iterable[ProducerUpdate]) -> None:
        for update in updates:
            entry = self._producers.get(update.producer_id)
            if entry is None or update.epoch > entry.epoch:
                entry = ProducerEntry(update.producer_id, update.epoch)
                self._producers[update.producer_id] = entry
            if update.batch is not None:
                entry.batches.append(update.batch)
                if len(entry.batches) > BATCHES_KEPT:
                    del entry.batches[0]

    def load_batch(self, header: BatchHeader) -> None:
        """Replay a stored batch without validation (recovery, replication)."""
        if header.producer_id < 0:
            return
        if header.is_control or header.base_sequence == NO_SEQUENCE:
            self.apply([ProducerUpdate(header.producer_id, header.producer_epoch, None)])
            return
        meta = BatchMetadata(
            header.base_sequence, last_sequence(header), header.base_offset,
            header.last_offset, header.max_timestamp,
        )
        self.apply([ProducerUpdate(header.producer_id, header.producer_epoch, meta)])

    def to_json(self, offset: int) -> str:
        producers = [
            [e.producer_id, e.epoch,
             [[b.first_seq, b.last_seq, b.first_offset, b.last_offset, b.max_timestamp]
              for b in e.batches]]
            for e in self._producers.values()
        ]
        return json.dumps({"version": 1, "offset": offset, "producers": producers})

    @classmethod
    def from_json(cls, text: str) -> ProducerStateTable:
        """Parse a snapshot; raises ValueError if it is not one."""
        try:
            data = json.loads(text)
            if data.get("version") != 1:
                raise ValueError(f"unsupported snapshot version {data.get('version')!r}")
            table = cls()
            for pid, epoch, batches in data["producers"]:
                table._producers[int(pid)] = ProducerEntry(
                    int(pid), int(epoch), [BatchMetadata(*map(int, b)) for b in batches]
                )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed producer snapshot: {exc}") from exc
        return table
