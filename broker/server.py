"""The broker's network shell: an asyncio server speaking Kafka's framing.

Each connection handles its requests one at a time, in arrival order, as Kafka does
(so responses come back in request order). A connection that sends an unreadable or
oversized frame is closed; nothing it sent can disturb other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import struct
import time
from collections import deque
from typing import Any

from kio.schema.errors import ErrorCode as E

from broker._apis import HANDLERS, SUPPORTED, api_versions_body
from broker._codec import (
    API_VERSIONS_KEY,
    Buffers,
    ProtocolError,
    UnsupportedVersion,
    decode_request,
    encode_response,
)
from broker._config import BrokerConfig
from broker._coordinator import Coordinator
from broker._group_apis import GROUP_HANDLERS, GroupContext
from broker._group_store import LogGroupStore, load_groups
from broker._node import Node

__all__ = ["BrokerConfig", "BrokerServer", "run"]

log = logging.getLogger("vigil.broker")

_SIZE = struct.Struct(">i")
_MAX_QUEUED = 64  # requests buffered per connection before we stop reading from it
_RECV_BUFFER = 256 * 1024
_BIG_FRAME = 64 * 1024  # frames above this are received into a buffer of their own
_MAX_PIPELINED_PRODUCE = 16


def _is_produce(frame: bytearray) -> bool:
    return frame[0] == 0 and frame[1] == 0  # API key 0 (int16, big-endian)


class KafkaConnection(asyncio.BufferedProtocol):
    """One client connection.

    Bytes are received straight into buffers we own (a BufferedProtocol): small frames
    are cut out of a shared receive buffer, and a large frame (a produce request of a
    megabyte) is received directly into a buffer of its own, which then travels, uncopied,
    through decoding and into the log.
    """

    def __init__(self, server: BrokerServer) -> None:
        self.server = server
        self.node = server.node
        self.max_request = server.node.config.setting_int("socket.request.max.bytes")
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray(_RECV_BUFFER)
        self.start = 0  # unparsed bytes are buffer[start:end]
        self.end = 0
        self.big: bytearray | None = None  # a large frame being received in place
        self.big_filled = 0
        self.frames: deque[bytearray] = deque()
        self.wakeup = asyncio.Event()
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.closed = False
        self.reading_paused = False
        self.peer = "?"
        self.peer_host = ""
        self.worker: asyncio.Task[None] | None = None

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.peer_host = peer[0] if peer else ""
        self.server.connections.add(self)
        self.worker = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self.wakeup.set()
        self.can_write.set()
        if self.worker is not None:
            self.worker.cancel()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.big is not None:
            return memoryview(self.big)[self.big_filled:]
        if self.end == len(self.buffer):
            pending = self.end - self.start
            if self.start:  # move the partial frame to the front
                self.buffer[:pending] = self.buffer[self.start:self.end]
            else:  # a small frame bigger than the buffer: grow (never past _BIG_FRAME)
                self.buffer.extend(bytes(len(self.buffer)))
            self.start, self.end = 0, pending
        return memoryview(self.buffer)[self.end:]

    def buffer_updated(self, nbytes: int) -> None:
        if self.big is not None:
            self.big_filled += nbytes
            if self.big_filled == len(self.big):
                self._frame_ready(self.big)
                self.big = None
            return
        self.end += nbytes
        buf = self.buffer
        while self.end - self.start >= 4:
            size = _SIZE.unpack_from(buf, self.start)[0]
            if size < 8 or size > self.max_request:
                log.warning("closing %s: frame of %d bytes (allowed 8..%d)", self.peer, size, self.max_request)
                self.close()
                return
            available = self.end - self.start - 4
            if available >= size:
                self._frame_ready(buf[self.start + 4:self.start + 4 + size])
                self.start += 4 + size
                continue
            if size > _BIG_FRAME:  # receive the rest straight into the frame's own buffer
                self.big = bytearray(size)
                self.big[:available] = buf[self.start + 4:self.end]
                self.big_filled = available
                self.start = self.end
            break
        if self.start == self.end:
            self.start = self.end = 0

    def _frame_ready(self, frame: bytearray) -> None:
        self.frames.append(frame)
        self.wakeup.set()
        if len(self.frames) >= _MAX_QUEUED and self.transport is not None and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- request loop ---------------------------------------------------------------------

    async def _serve(self) -> None:
        try:
            while not self.closed:
                if not self.frames:
                    self.wakeup.clear()
                    await self.wakeup.wait()
                    continue
                batch = [self.frames.popleft()]
                # Pipelined produce requests (librdkafka keeps up to 5 in flight) are
                # appended in order in one loop turn and share one group-commit fsync;
                # their responses still go out one by one, in request order. Any other
                # request is handled alone, as Kafka does.
                while _is_produce(batch[0]) and self.frames and _is_produce(self.frames[0]) \
                        and len(batch) < _MAX_PIPELINED_PRODUCE:
                    batch.append(self.frames.popleft())
                if self.reading_paused and len(self.frames) < _MAX_QUEUED // 2 and self.transport:
                    self.transport.resume_reading()
                    self.reading_paused = False
                if len(batch) == 1:
                    await self._respond(await self._handle(batch[0]))
                    continue
                loop = asyncio.get_running_loop()
                handling = [loop.create_task(self._handle(frame)) for frame in batch]
                for task in handling:
                    await self._respond(await task)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("connection %s failed", self.peer)
            self.close()

    async def _respond(self, response: Buffers | None) -> None:
        if response is None or self.closed:
            return
        if not self.can_write.is_set():
            await self.can_write.wait()
        assert self.transport is not None
        self.transport.writelines(response)

    async def _handle(self, frame: bytearray) -> Buffers | None:
        try:
            request = decode_request(frame, SUPPORTED, self.peer_host)
        except UnsupportedVersion as exc:
            if exc.api_key == API_VERSIONS_KEY:
                # Answer in v0, which every client reads, listing what we do support.
                return encode_response(API_VERSIONS_KEY, 0, exc.correlation_id,
                                       api_versions_body(E.unsupported_version))
            log.warning("closing %s: %s", self.peer, exc)
            self.close()
            return None
        except ProtocolError as exc:
            log.warning("closing %s: %s", self.peer, exc)
            self.close()
            return None
        try:
            handler = HANDLERS.get(request.api_key)
            if handler is not None:
                body = await handler(self.node, request)
            else:
                body = await GROUP_HANDLERS[request.api_key](self.server.groups, request)
        except Exception:
            log.exception("API %d v%d from %s failed", request.api_key, request.api_version, self.peer)
            self.close()
            return None
        if body is None:
            return None
        try:
            return encode_response(request.api_key, request.api_version, request.correlation_id, body)
        except Exception:
            log.exception("cannot encode API %d v%d response for %s", request.api_key,
                          request.api_version, self.peer)
            self.close()
            return None


class BrokerServer:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.node = Node(config)
        store = LogGroupStore(self.node, config.setting_int("offsets.topic.num.partitions"))
        self.coordinator = Coordinator(
            store,
            initial_rebalance_delay_ms=config.setting_int("group.initial.rebalance.delay.ms"),
            offsets_retention_ms=config.setting_int("offsets.retention.minutes") * 60_000,
        )
        self.coordinator.groups = load_groups(self.node)
        self.groups = GroupContext(self.node, self.coordinator)
        self.connections: set[KafkaConnection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: KafkaConnection(self), self.config.host, self.config.port, reuse_address=True,
        )
        self._tasks.append(loop.create_task(self._flush_timer()))
        self._tasks.append(loop.create_task(self._retention_timer()))
        self._tasks.append(loop.create_task(self._group_timer()))
        self._tasks.append(loop.create_task(self._cleaner_timer()))
        log.info("broker %d listening on %s:%d (advertised %s:%d), data in %s",
                 self.config.node_id, self.config.host, self.config.port,
                 self.config.advertised_host, self.config.advertised_port, self.config.data_dir)

    async def _flush_timer(self) -> None:
        interval = self.config.setting_int("log.flush.scheduler.interval.ms") / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                self.node.flush_due(time.monotonic())
            except Exception:
                log.exception("scheduled flush failed")

    async def _retention_timer(self) -> None:
        interval = self.config.setting_int("log.retention.check.interval.ms") / 1000
        while True:
            await asyncio.sleep(interval)
            self.node.enforce_retention()

    async def _cleaner_timer(self) -> None:
        interval = self.config.setting_int("log.cleaner.backoff.ms") / 1000
        while True:
            await asyncio.sleep(interval)
            await self.node.compact_due()

    async def _group_timer(self) -> None:
        last_offsets_check = time.monotonic()
        while True:
            await asyncio.sleep(0.2)
            try:
                self.coordinator.expire_members()
                if time.monotonic() - last_offsets_check > 60:
                    last_offsets_check = time.monotonic()
                    await self.coordinator.expire_offsets(int(time.time() * 1000))
            except Exception:
                log.exception("group maintenance failed")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.coordinator.close()
        self.node.close()
        log.info("broker %d stopped", self.config.node_id)


async def serve(config: BrokerConfig, ready: asyncio.Event | None = None) -> None:
    server = BrokerServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(config: BrokerConfig) -> None:
    """Run a broker node until SIGTERM or SIGINT."""
    runner: Any
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(serve(config))
