"""Resumable streams: the SDK's ``EventStore``, in memory or in Redis, one session's events per view.

MCP 2025-11-25, Streamable HTTP, Resumability and Redelivery: "Servers MAY attach
an id field to their SSE events ... If the client wishes to resume after a
disconnected connection, it SHOULD issue an HTTP GET to the MCP endpoint, and
include the Last-Event-ID header"; the server "MAY use this header to replay
messages that would have been sent after the last event ID, on the stream that
was disconnected, and to resume the stream from that point", and it "MUST NOT
replay messages that would have been delivered on a different stream". The
``Last-Event-ID`` header itself is the HTML standard's (Server-sent events,
9.2.4).

The SDK stores every message of a stateful session through one ``EventStore``
shared by all sessions, keyed by stream ids that are unique only within one
session (the JSON-RPC request id of a POST, ``_GET_stream`` for the standalone
stream): two sessions' request ``1`` would share a stream, and a client could
replay another session's events by presenting their id. So the stores here are
never handed to the SDK directly: every session transport gets a
:class:`SessionEventStore`, a view that gives each of its streams a name nobody
else's can have and replays only events of streams it named itself.

Bounds, so that no client can make the store grow without limit: at most
``max_events`` events per stream (the oldest go first), none older than
``max_age`` seconds, and in memory at most :data:`MAX_TOTAL_EVENTS` in all (the
least recently written streams go first). A client that comes back later than
that gets what is left after its last event, or nothing.

Redis (``MCP_EVENT_STORE=redis://...``) keeps one Redis stream per MCP stream,
trimmed to ``max_events`` and expiring ``max_age`` after its last event, written
behind the live events so that Redis never delays one; until Redis has an
event, the process holds it. A slow or failing Redis never fails a session nor
delays an event: the store degrades to memory, with the memory store's bounds,
and logs it; Redis is not tried again for :data:`RETRY_AFTER` seconds.

A replay that cannot send every event after the client's (the bounds took
some, or Redis lost them) sends what is left and logs how many are missing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from abc import abstractmethod
from collections import OrderedDict
from collections import deque
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mcp_types as types
from mcp.server.streamable_http import EventCallback
from mcp.server.streamable_http import EventId
from mcp.server.streamable_http import EventMessage
from mcp.server.streamable_http import EventStore
from mcp.server.streamable_http import StreamId

if TYPE_CHECKING:
    from mcp_types import JSONRPCMessage
    from redis.asyncio import Redis
    from redis.typing import EncodableT
    from redis.typing import FieldT

logger = logging.getLogger(__name__)

# An event id is "<stream>:<position>"; a position is a number counted per stream, from 1.
SEPARATOR = ":"
MAX_TOTAL_EVENTS = 100_000
REDIS_KEY_PREFIX = "flask-mcp:events:"
REDIS_TIMEOUT = 2.0
RETRY_AFTER = 5.0
# Events waiting for Redis at most (beyond it newer ones are not stored), and how many go in one pipeline.
MAX_PENDING = 10_000
WRITE_BATCH = 256
Clock = Callable[[], float]


def split_event_id(event_id: str) -> tuple[str, str] | None:
    stream, separator, position = event_id.rpartition(SEPARATOR)
    return (stream, position) if separator and stream and position else None


def event_position(event_id: str) -> tuple[str, int] | None:
    """The stream and position an event id names; None for one no store here could have made."""
    parts = split_event_id(event_id)
    if parts is None or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _encoded(message: JSONRPCMessage | None) -> bytes:
    """A message as Redis keeps it; a priming event (no message) is empty."""
    return b"" if message is None else message.model_dump_json(by_alias=True, exclude_unset=True).encode()


async def _send_fresh(
    stream_id: str, events: Iterable[tuple[int, float, JSONRPCMessage | None]], oldest: float, send: EventCallback
) -> int:
    """Send, in order, each event stored since ``oldest``; returns how many the store still had.

    A priming event (no message) counts as kept but is not sent: it only marks where the stream began.
    """
    kept = 0
    for number, stored, message in events:
        if message is None:
            kept += 1
        elif stored >= oldest:
            kept += 1
            await send(EventMessage(message, f"{stream_id}{SEPARATOR}{number}"))
    return kept


def _missing(stream_id: str, after: int, last: int, kept: int) -> None:
    """Log what a replay could not send: the events after ``after`` up to ``last`` that the store no longer has.

    The client is never told (the protocol has no way to say it), so the log
    says it: the bounds took them (MCP_EVENT_STORE_MAX_EVENTS, MCP_EVENT_STORE_MAX_AGE,
    the total in memory) or Redis failed while they were written.
    """
    missing = last - after - kept
    if missing > 0:
        logger.warning(
            "event store: a client resumed stream %s after event %d; %d of the %d events since are no longer kept "
            "(beyond the store's bounds, or not written while Redis failed)",
            stream_id,
            after,
            missing,
            last - after,
        )


@dataclass
class _Stream:
    events: deque[tuple[int, float, JSONRPCMessage | None]]
    last: int = 0


class PositionedEventStore(EventStore):
    """A store whose event ids are ``<stream>:<position>``: a replay starts by reading the two from the id."""

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        parts = event_position(last_event_id)
        if parts is None:
            return None
        return await self.replay_after(*parts, send_callback)

    @abstractmethod
    async def replay_after(self, stream_id: str, position: int, send_callback: EventCallback) -> StreamId | None:
        """Send the events of ``stream_id`` after ``position``; None when this store cannot have made that id."""


class MemoryEventStore(PositionedEventStore):
    """Events in this process's memory: one bounded deque per stream, streams in least recently written order.

    Runs on the stateful event loop only, so it needs no lock.
    """

    def __init__(
        self, *, max_events: int, max_age: float, max_total: int = MAX_TOTAL_EVENTS, clock: Clock = time.monotonic
    ) -> None:
        self.max_events = max_events
        self.max_age = max_age
        self.max_total = max_total
        self._clock = clock
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self._total = 0

    @property
    def total(self) -> int:
        """Events held, in all streams."""
        return self._total

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        now = self._clock()
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = _Stream(deque())
        else:
            self._streams.move_to_end(stream_id)
        stream.last += 1
        if len(stream.events) >= self.max_events:
            stream.events.popleft()
        else:
            self._total += 1
        stream.events.append((stream.last, now, message))
        self._expire(now)
        return f"{stream_id}{SEPARATOR}{stream.last}"

    def _expire(self, now: float) -> None:
        """Drop streams idle for longer than max_age, then the least recently written beyond the total bound."""
        while self._streams:
            stream_id, stream = next(iter(self._streams.items()))
            if now - stream.events[-1][1] <= self.max_age and self._total <= self.max_total:
                break
            del self._streams[stream_id]
            self._total -= len(stream.events)

    async def replay_after(self, stream_id: str, position: int, send_callback: EventCallback) -> StreamId | None:
        stream = self._streams.get(stream_id)
        if stream is None or position > stream.last:
            return None
        last = stream.last
        # A copy: events may be added while we send.
        after = [event for event in stream.events if position < event[0] <= last]
        kept = await _send_fresh(stream_id, after, self._clock() - self.max_age, send_callback)
        _missing(stream_id, position, last, kept)
        return stream_id


class _Held:
    """Events of the Redis store still in this process: on their way to Redis, or never written there.

    Per stream, position -> (time stored, message), in position order; streams in
    least recently written order. Bounded as the memory store is: ``max_events``
    per stream, streams idle for ``max_age`` dropped, at most ``max_total`` in all.
    """

    def __init__(self, *, max_events: int, max_age: float, max_total: int) -> None:
        self.max_events = max_events
        self.max_age = max_age
        self.max_total = max_total
        self.streams: OrderedDict[str, dict[int, tuple[float, JSONRPCMessage | None]]] = OrderedDict()
        self.total = 0

    def add(self, stream_id: str, position: int, now: float, message: JSONRPCMessage | None) -> int:
        """Hold an event; answers how many events of other streams the total bound dropped."""
        events = self.streams.get(stream_id)
        if events is None:
            events = self.streams[stream_id] = {}
        else:
            self.streams.move_to_end(stream_id)
        events[position] = (now, message)
        self.total += 1
        if len(events) > self.max_events:
            del events[next(iter(events))]
            self.total -= 1
        dropped = 0
        while self.streams:
            oldest, held = next(iter(self.streams.items()))
            newest = next(reversed(held.values()))[0]
            if now - newest <= self.max_age and self.total <= self.max_total:
                break
            del self.streams[oldest]
            self.total -= len(held)
            if now - newest <= self.max_age:
                dropped += len(held)
        return dropped

    def written(self, stream_id: str, position: int) -> None:
        """Redis has the event now: let go of it."""
        events = self.streams.get(stream_id)
        if events is not None and events.pop(position, None) is not None:
            self.total -= 1
            if not events:
                del self.streams[stream_id]

    def after(self, stream_id: str, position: int) -> dict[int, tuple[float, JSONRPCMessage | None]]:
        events = self.streams.get(stream_id, {})
        return {number: event for number, event in events.items() if number > position}


class RedisEventStore(PositionedEventStore):
    """Events in Redis: one Redis stream per MCP stream, written behind the live events.

    An event's id is handed out at once (``<stream>:<n>``, ``n`` counted in this
    process, where the stream's session lives) and the event goes out to the
    client without waiting for Redis. Until Redis has it, the event is held in
    this process (:class:`_Held`); a writer task on the same loop sends the held
    events to Redis in order, in pipelined batches (XADD with the explicit entry
    id ``0-<n>`` and an exact MAXLEN, then PEXPIRE for the age), and lets go of
    each once Redis has taken it. A replay sends what Redis has and what is
    still held, merged in order, so it never waits for the writer.

    A slow or failing Redis therefore degrades to the memory store, with its
    bounds, and says so in the log: a failed write leaves its events held (they
    are not written again, Redis takes only increasing entry ids), Redis is left
    alone for :data:`RETRY_AFTER` seconds (new events are only held meanwhile),
    at most :data:`MAX_PENDING` events wait for the writer, and the held events
    are bounded as in memory. What a replay cannot send any more is logged (see
    :func:`_missing`). Each Redis entry carries the message (empty for a priming
    event) and the time it was stored: a replay skips what is older than
    ``max_age`` even while the key lives on.
    """

    def __init__(
        self,
        client: Redis,
        *,
        max_events: int,
        max_age: float,
        max_total: int = MAX_TOTAL_EVENTS,
        clock: Clock = time.time,
    ) -> None:
        self.client = client
        self.max_events = max_events
        self.max_age = max_age
        self._clock = clock
        self._down_until = 0.0
        # Per stream, the last position handed out and when (monotonic); kept twice as long as the key lives,
        # so that a stream's positions never start over while Redis still has its entries.
        self._positions: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._held = _Held(max_events=max_events, max_age=max_age, max_total=max_total)
        self._pending: deque[tuple[str, int, JSONRPCMessage | None, float]] = deque()
        self._queued = 0  # events ever queued for Redis
        self._done = 0  # of those, written or given up on
        self._progress: asyncio.Condition | None = None
        self._writer: asyncio.Task[None] | None = None
        self._warned: dict[str, float] = {}

    @classmethod
    def from_url(cls, url: str, *, max_events: int, max_age: float) -> RedisEventStore:
        from redis.asyncio import Redis

        client = Redis.from_url(url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
        return cls(client, max_events=max_events, max_age=max_age)

    @property
    def held(self) -> int:
        """Events only this process has (on their way to Redis, or never written there)."""
        return self._held.total

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _warn(self, kind: str, message: str, *args: object) -> None:
        """Log a warning, at most once per RETRY_AFTER seconds for each kind."""
        now = time.monotonic()
        if now - self._warned.get(kind, -RETRY_AFTER) >= RETRY_AFTER:
            self._warned[kind] = now
            logger.warning(message, *args)

    def _failed(self, doing: str, error: Exception) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        logger.warning(
            "event store: Redis failed while %s (%s: %s); for %.0f s events are kept in this process's memory only",
            doing,
            type(error).__name__,
            error,
            RETRY_AFTER,
        )

    def _position(self, stream_id: str) -> int:
        now = time.monotonic()
        known = self._positions.pop(stream_id, None)
        position = (known[0] if known is not None else 0) + 1
        self._positions[stream_id] = (position, now)
        while self._positions:
            oldest, (_, used) = next(iter(self._positions.items()))
            if now - used <= 2 * self.max_age:
                break
            del self._positions[oldest]
        return position

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        position = self._position(stream_id)
        now = self._clock()
        dropped = self._held.add(stream_id, position, now, message)
        if dropped:
            self._warn(
                "dropped",
                "event store: Redis is behind or down and this process holds %d events; "
                "%d events of the least recently written streams were dropped",
                self._held.max_total,
                dropped,
            )
        if self._available():
            if len(self._pending) < MAX_PENDING:
                self._pending.append((stream_id, position, message, now))
                self._queued += 1
                self._start_writer()
            else:
                self._warn(
                    "pending",
                    "event store: %d events wait for Redis; newer ones are kept in this process's memory only",
                    MAX_PENDING,
                )
        return f"{stream_id}{SEPARATOR}{position}"

    def _start_writer(self) -> None:
        if self._progress is None:
            self._progress = asyncio.Condition()
        # A running writer takes what was queued meanwhile: it looks again after each batch.
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        """Write pending events to Redis, in order, until none is left."""
        assert self._progress is not None
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), WRITE_BATCH))]
            try:
                if self._available():
                    async with self.client.pipeline(transaction=False) as pipe:
                        for stream_id, position, message, stored in batch:
                            key = REDIS_KEY_PREFIX + stream_id
                            fields: dict[FieldT, EncodableT] = {"m": _encoded(message), "t": repr(stored)}
                            pipe.xadd(key, fields, id=f"0-{position}", maxlen=self.max_events, approximate=False)
                            pipe.pexpire(key, int(self.max_age * 1000))
                        await pipe.execute()
                    for stream_id, position, _, _ in batch:
                        self._held.written(stream_id, position)
            except Exception as error:  # any failure of Redis or of the way there: the batch stays held
                self._failed("writing events", error)
            finally:
                self._done += len(batch)
                async with self._progress:
                    self._progress.notify_all()

    async def flush(self) -> None:
        """Wait until every event queued so far has been written to Redis (or given up on)."""
        target = self._queued
        if self._done >= target or self._progress is None:
            return
        async with self._progress:
            await self._progress.wait_for(lambda: self._done >= target)

    async def replay_after(self, stream_id: str, position: int, send_callback: EventCallback) -> StreamId | None:
        known = self._positions.get(stream_id)
        if known is not None and position > known[0]:
            return None
        # What is held is read first: an event the writer lets go of meanwhile is in Redis before the XRANGE.
        events = self._held.after(stream_id, position)
        if self._available():
            try:
                entries = await self.client.xrange(
                    REDIS_KEY_PREFIX + stream_id, min=f"(0-{position}", max="+", count=self.max_events
                )
            except Exception as error:
                self._failed("replaying events", error)
            else:
                for entry, fields in entries:
                    number = int(entry.decode().partition("-")[2])
                    if number not in events:
                        data = fields.get(b"m")
                        message = types.jsonrpc_message_adapter.validate_json(data, by_name=False) if data else None
                        events[number] = (float(fields.get(b"t", b"0")), message)
        in_order = [(number, *events[number]) for number in sorted(events)]
        kept = await _send_fresh(stream_id, in_order, self._clock() - self.max_age, send_callback)
        if known is not None:
            _missing(stream_id, position, known[0], kept)
        return stream_id

    async def close(self) -> None:
        """Write what is pending (for at most the Redis timeout), then let go of the connections."""
        if self._writer is not None and not self._writer.done():
            try:
                await asyncio.wait_for(self.flush(), REDIS_TIMEOUT)
            except TimeoutError:
                self._writer.cancel()
                unwritten = self._queued - self._done
                logger.warning("event store: %d events were not written to Redis before it closed", unwritten)
        await self.client.aclose()


class SessionEventStore(EventStore):
    """One session transport's view of the shared store: its streams, under names only it hands out.

    Each SDK stream id (unique only within the session) is stored as
    ``<scope>-<n>``, with a random ``scope`` per view. A ``Last-Event-ID`` is
    replayed only if it names one of this view's own streams; anything else
    (another session's event, a forged or stale id) replays nothing, exactly as
    an unknown id. The names are forgotten ``max_age`` after their last use, as
    the events themselves are.
    """

    def __init__(self, store: EventStore, *, max_age: float, clock: Clock = time.monotonic) -> None:
        self.store = store
        self.max_age = max_age
        self.scope = secrets.token_hex(12)
        self._clock = clock
        self._names: OrderedDict[str, tuple[str, float]] = OrderedDict()  # SDK stream -> (name, last used)
        self._streams: dict[str, str] = {}  # name -> SDK stream
        self._counter = itertools.count()

    def _name(self, stream_id: StreamId) -> str:
        now = self._clock()
        known = self._names.pop(stream_id, None)
        name = known[0] if known is not None else f"{self.scope}-{next(self._counter)}"
        self._names[stream_id] = (name, now)
        self._streams[name] = stream_id
        while self._names:
            oldest_stream, (oldest_name, used) = next(iter(self._names.items()))
            if now - used <= self.max_age:
                break
            del self._names[oldest_stream]
            self._streams.pop(oldest_name, None)
        return name

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        return await self.store.store_event(self._name(stream_id), message)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        parts = split_event_id(last_event_id)
        stream_id = self._streams.get(parts[0]) if parts is not None else None
        if stream_id is None:
            return None
        self._name(stream_id)  # in use again: keep the name as long as its events
        await self.store.replay_events_after(last_event_id, send_callback)
        # The stream is this session's even when nothing is left to replay: the SDK then
        # attaches the reconnected client to it, and whatever the request still sends arrives.
        return stream_id


def create_event_store(url: str, *, max_events: int, max_age: float) -> EventStore:
    """The shared store MCP_EVENT_STORE names: ``memory://`` or a Redis URL."""
    if url == "memory://":
        return MemoryEventStore(max_events=max_events, max_age=max_age)
    return RedisEventStore.from_url(url, max_events=max_events, max_age=max_age)
