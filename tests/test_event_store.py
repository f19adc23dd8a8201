"""The event stores behind resumable streams: what they replay, what they bound, and whose events a view sees."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from collections.abc import Iterator
from pathlib import Path

import mcp_types as types
import pytest
from mcp.server.streamable_http import EventMessage
from mcp.server.streamable_http import EventStore
from redis.asyncio import Redis

from app.event_store import REDIS_KEY_PREFIX
from app.event_store import MemoryEventStore
from app.event_store import RedisEventStore
from app.event_store import SessionEventStore
from app.event_store import create_event_store
from tests.support.redis import running_redis
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def progress(step: int) -> types.JSONRPCNotification:
    return types.JSONRPCNotification(
        jsonrpc="2.0", method="notifications/progress", params={"progressToken": 7, "progress": step}
    )


def answer(request_id: int = 1) -> types.JSONRPCResponse:
    return types.JSONRPCResponse(jsonrpc="2.0", id=request_id, result={"content": [{"type": "text", "text": "done"}]})


async def replay(store: EventStore, last_event_id: str) -> tuple[str | None, list[tuple[str | None, object]]]:
    sent: list[EventMessage] = []

    async def collect(event: EventMessage) -> None:
        sent.append(event)

    stream = await store.replay_events_after(last_event_id, collect)
    return stream, [(event.event_id, event.message) for event in sent]


class TestMemoryEventStore:
    async def test_replays_what_came_after_an_event_in_order(self) -> None:
        store = MemoryEventStore(max_events=10, max_age=60)
        first = await store.store_event("s", progress(1))
        assert (await store.store_event("s", progress(2)), await store.store_event("s", answer())) == ("s:2", "s:3")
        assert first == "s:1"
        assert await replay(store, first) == ("s", [("s:2", progress(2)), ("s:3", answer())])
        assert await replay(store, "s:3") == ("s", [])

    async def test_a_priming_event_is_stored_but_never_replayed(self) -> None:
        store = MemoryEventStore(max_events=10, max_age=60)
        priming = await store.store_event("s", None)
        await store.store_event("s", progress(1))
        assert await replay(store, priming) == ("s", [("s:2", progress(1))])

    async def test_keeps_the_newest_events_of_a_stream(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger="app.event_store")
        store = MemoryEventStore(max_events=3, max_age=60)
        ids = [await store.store_event("s", progress(step)) for step in range(1, 6)]
        assert store.total == 3
        # The client's last event is gone: it gets what is left after it, and the log says what it missed.
        assert await replay(store, ids[0]) == ("s", [("s:3", progress(3)), ("s:4", progress(4)), ("s:5", progress(5))])
        assert [r.getMessage() for r in caplog.records if r.name == "app.event_store"] == [
            "event store: a client resumed stream s after event 1; 1 of the 4 events since are no longer kept "
            "(beyond the store's bounds, or not written while Redis failed)"
        ]
        # A complete replay logs nothing.
        assert await replay(store, ids[2]) == ("s", [("s:4", progress(4)), ("s:5", progress(5))])
        assert len(caplog.records) == 1

    async def test_events_older_than_max_age_are_not_replayed_and_idle_streams_go(self) -> None:
        clock = Clock()
        store = MemoryEventStore(max_events=10, max_age=10, clock=clock)
        priming = await store.store_event("s", None)
        await store.store_event("s", progress(1))
        clock.now += 6
        await store.store_event("s", progress(2))
        clock.now += 6
        assert await replay(store, priming) == ("s", [("s:3", progress(2))])
        # Another stream written 11 s after "s" was last: "s" is dropped whole.
        clock.now += 5
        await store.store_event("t", progress(9))
        assert await replay(store, priming) == (None, [])
        assert store.total == 1

    async def test_the_least_recently_written_streams_go_beyond_the_total_bound(self) -> None:
        store = MemoryEventStore(max_events=3, max_age=60, max_total=4)
        for step in range(3):
            await store.store_event("a", progress(step))
        await store.store_event("b", progress(1))
        assert store.total == 4
        await store.store_event("b", progress(2))
        assert store.total == 2
        assert await replay(store, "a:1") == (None, [])
        assert await replay(store, "b:1") == ("b", [("b:2", progress(2))])

    @pytest.mark.parametrize("last_event_id", ["", "s", "s:", ":1", "s:x", "s:-1", "s:99", "other:1"])
    async def test_an_id_it_did_not_hand_out_replays_nothing(self, last_event_id: str) -> None:
        store = MemoryEventStore(max_events=10, max_age=60)
        await store.store_event("s", progress(1))
        assert await replay(store, last_event_id) == (None, [])


class TestSessionEventStore:
    async def test_two_sessions_with_the_same_stream_ids_each_replay_only_their_own(self) -> None:
        shared = MemoryEventStore(max_events=10, max_age=60)
        alice = SessionEventStore(shared, max_age=60)
        bob = SessionEventStore(shared, max_age=60)
        alice_first = await alice.store_event("1", progress(1))
        bob_first = await bob.store_event("1", progress(100))
        await alice.store_event("1", answer())
        await bob.store_event("1", progress(101))
        assert alice_first.startswith(alice.scope + "-") and bob_first.startswith(bob.scope + "-")
        assert await replay(alice, alice_first) == ("1", [(alice_first[:-1] + "2", answer())])
        assert await replay(bob, bob_first) == ("1", [(bob_first[:-1] + "2", progress(101))])
        # Presenting another session's event id is the same as presenting a made-up one.
        assert await replay(bob, alice_first) == (None, [])
        assert await replay(alice, bob_first) == (None, [])

    async def test_the_get_stream_of_each_session_is_its_own(self) -> None:
        shared = MemoryEventStore(max_events=10, max_age=60)
        views = [SessionEventStore(shared, max_age=60) for _ in range(2)]
        ids = [await view.store_event("_GET_stream", progress(n)) for n, view in enumerate(views)]
        assert len({event_id.rpartition(":")[0] for event_id in ids}) == 2

    async def test_a_stream_of_its_own_is_resumed_even_when_its_events_are_gone(self) -> None:
        """The SDK then attaches the reconnected client to the stream: what the request still sends arrives."""
        clock = Clock()
        shared = MemoryEventStore(max_events=10, max_age=10, clock=clock)
        view = SessionEventStore(shared, max_age=60, clock=clock)
        first = await view.store_event("5", progress(1))
        clock.now += 30
        await view.store_event("6", progress(1))  # another stream: the first one's events expire
        assert await replay(view, first) == ("5", [])

    async def test_names_are_forgotten_once_their_events_are_too_old(self) -> None:
        clock = Clock()
        view = SessionEventStore(MemoryEventStore(max_events=10, max_age=10, clock=clock), max_age=10, clock=clock)
        first = await view.store_event("1", progress(1))
        clock.now += 11
        await view.store_event("2", progress(1))
        assert await replay(view, first) == (None, [])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis-events")) as url:
        yield url


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisEventStore]:
    store = RedisEventStore.from_url(redis_url, max_events=3, max_age=60)
    await store.client.flushdb()
    yield store
    await store.close()


class TestRedisEventStore:
    async def test_replays_what_came_after_an_event(self, redis_store: RedisEventStore) -> None:
        priming = await redis_store.store_event("s", None)
        assert (await redis_store.store_event("s", progress(1)), await redis_store.store_event("s", answer())) == (
            "s:2",
            "s:3",
        )
        assert priming == "s:1"
        assert await replay(redis_store, priming) == ("s", [("s:2", progress(1)), ("s:3", answer())])
        assert await replay(redis_store, "s:3") == ("s", [])

    async def test_each_stream_is_a_redis_stream_trimmed_to_max_events_and_expiring(
        self, redis_store: RedisEventStore
    ) -> None:
        ids = [await redis_store.store_event("t", progress(step)) for step in range(1, 6)]
        await redis_store.flush()
        key = REDIS_KEY_PREFIX + "t"
        assert [entry for entry, _ in await redis_store.client.xrange(key)] == [b"0-3", b"0-4", b"0-5"]
        assert 0 < await redis_store.client.pttl(key) <= 60_000
        assert await replay(redis_store, ids[0]) == (
            "t",
            [("t:3", progress(3)), ("t:4", progress(4)), ("t:5", progress(5))],
        )

    async def test_neither_an_event_nor_a_replay_waits_for_redis(
        self, redis_store: RedisEventStore, redis_url: str
    ) -> None:
        """While Redis holds every write back, ids come at once and a replay sends the held events."""
        admin = Redis.from_url(redis_url)
        try:
            await admin.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
            started = time.monotonic()
            first = await redis_store.store_event("u", progress(1))
            await redis_store.store_event("u", progress(2))
            replayed = await replay(redis_store, first)
            waited = time.monotonic() - started
            held_while_paused = redis_store.held
            await redis_store.flush()
            entries = await admin.xrange(REDIS_KEY_PREFIX + "u")
        finally:
            await admin.aclose()
        assert waited < 0.5, waited
        assert replayed == ("u", [("u:2", progress(2))])
        assert held_while_paused == 2
        # Once Redis has taken them, the process lets go of them.
        assert [entry for entry, _ in entries] == [b"0-1", b"0-2"]
        assert redis_store.held == 0

    async def test_events_keep_their_order_across_batches_and_streams(self, redis_url: str) -> None:
        store = RedisEventStore.from_url(redis_url, max_events=1000, max_age=60)
        try:
            for step in range(1, 301):  # 600 events: more than two pipelined batches
                await store.store_event("a", progress(step))
                await store.store_event("b", progress(1000 + step))
            await store.flush()
            entries = await store.client.xrange(REDIS_KEY_PREFIX + "a")
            replayed = await replay(store, "b:0")
        finally:
            await store.close()
        assert [entry for entry, _ in entries] == [f"0-{n}".encode() for n in range(1, 301)]
        assert replayed == ("b", [(f"b:{step}", progress(1000 + step)) for step in range(1, 301)])
        assert store.held == 0

    async def test_what_is_pending_is_written_when_the_store_closes(self, redis_url: str) -> None:
        store = RedisEventStore.from_url(redis_url, max_events=10, max_age=60)
        for step in range(1, 4):
            await store.store_event("c", progress(step))
        await store.close()
        admin = Redis.from_url(redis_url)
        try:
            entries = await admin.xrange(REDIS_KEY_PREFIX + "c")
        finally:
            await admin.aclose()
        assert [entry for entry, _ in entries] == [b"0-1", b"0-2", b"0-3"]

    async def test_a_redis_slower_than_its_timeout_loses_no_event(
        self, redis_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The writes time out: the events stay in this process, and a replay still sends every one."""
        caplog.set_level(logging.WARNING, logger="app.event_store")
        store = RedisEventStore(Redis.from_url(redis_url, socket_timeout=0.3), max_events=10, max_age=60)
        admin = Redis.from_url(redis_url)
        try:
            await admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
            priming = await store.store_event("slow", None)
            await store.store_event("slow", progress(1))
            await store.store_event("slow", answer())
            await store.flush()
            replayed = await replay(store, priming)
        finally:
            await admin.aclose()
            await store.close()
        assert replayed == ("slow", [("slow:2", progress(1)), ("slow:3", answer())])
        assert store.held == 3
        [record] = [r for r in caplog.records if r.name == "app.event_store"]
        assert record.getMessage().startswith("event store: Redis failed while writing events (TimeoutError: ")
        assert record.getMessage().endswith("for 5 s events are kept in this process's memory only")

    async def test_events_redis_had_are_missed_when_it_is_gone_and_the_log_says_so(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="app.event_store")
        with running_redis(tmp_path) as url:
            store = RedisEventStore.from_url(url, max_events=10, max_age=60)
            priming = await store.store_event("gone", None)
            await store.store_event("gone", progress(1))
            await store.store_event("gone", progress(2))
            await store.flush()
        try:
            replayed = await replay(store, priming)
        finally:
            await store.close()
        assert replayed == ("gone", [])
        failed, missing = [r.getMessage() for r in caplog.records if r.name == "app.event_store"]
        assert failed.startswith("event store: Redis failed while replaying events (ConnectionError: ")
        assert missing == (
            "event store: a client resumed stream gone after event 1; 2 of the 2 events since are no longer kept "
            "(beyond the store's bounds, or not written while Redis failed)"
        )

    async def test_events_older_than_max_age_are_not_replayed(self, redis_url: str) -> None:
        clock = Clock()
        store = RedisEventStore(Redis.from_url(redis_url), max_events=10, max_age=10, clock=clock)
        try:
            priming = await store.store_event("old", None)
            await store.store_event("old", progress(1))
            clock.now += 11
            await store.store_event("old", progress(2))
            stream, sent = await replay(store, priming)
        finally:
            await store.close()
        assert [message for _, message in sent] == [progress(2)]

    @pytest.mark.parametrize("last_event_id", ["s", "s:", "s:x", "s:1-0", "s:-1", "s:99"])
    async def test_an_id_it_did_not_hand_out_replays_nothing(
        self, redis_store: RedisEventStore, last_event_id: str
    ) -> None:
        await redis_store.store_event("s", progress(1))
        assert await replay(redis_store, last_event_id) == (None, [])

    async def test_a_redis_outage_fails_no_session_and_loses_no_event(self, caplog: pytest.LogCaptureFixture) -> None:
        store = RedisEventStore.from_url(f"redis://127.0.0.1:{free_port()}/0", max_events=3, max_age=60)
        caplog.set_level(logging.WARNING, logger="app.event_store")
        try:
            first = await store.store_event("s", progress(1))
            second = await store.store_event("s", progress(2))
            await store.flush()
            replayed = await replay(store, first)
            third = await store.store_event("s", progress(3))
            again = await replay(store, first)
        finally:
            await store.close()
        assert (first, second, third) == ("s:1", "s:2", "s:3")
        # Kept in the process while Redis is away, as the memory store would keep them.
        assert replayed == ("s", [("s:2", progress(2))])
        assert again == ("s", [("s:2", progress(2)), ("s:3", progress(3))])
        # One warning, then Redis is left alone for a while.
        [record] = [r for r in caplog.records if r.name == "app.event_store"]
        assert record.getMessage().startswith("event store: Redis failed while writing events (ConnectionError: ")
        assert record.getMessage().endswith("for 5 s events are kept in this process's memory only")

    async def test_what_the_process_holds_for_an_absent_redis_is_bounded(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = RedisEventStore.from_url(f"redis://127.0.0.1:{free_port()}/0", max_events=3, max_age=60)
        store = RedisEventStore(store.client, max_events=3, max_age=60, max_total=4)
        caplog.set_level(logging.WARNING, logger="app.event_store")
        try:
            await store.store_event("a", progress(1))
            await store.flush()  # Redis is found absent: from now on events are only held
            for step in range(2, 6):
                await store.store_event("a", progress(step))
            assert store.held == 3  # at most max_events of a stream
            await store.store_event("b", progress(1))
            await store.store_event("b", progress(2))
            replayed = await replay(store, "b:0")
        finally:
            await store.close()
        assert store.held == 2
        assert replayed == ("b", [("b:1", progress(1)), ("b:2", progress(2))])
        messages = [r.getMessage() for r in caplog.records if r.name == "app.event_store"]
        assert messages[1] == (
            "event store: Redis is behind or down and this process holds 4 events; "
            "3 events of the least recently written streams were dropped"
        )


def test_memory_or_redis_by_url() -> None:
    assert isinstance(create_event_store("memory://", max_events=5, max_age=5), MemoryEventStore)
    redis_store = create_event_store("redis://127.0.0.1:6379/1", max_events=5, max_age=5)
    assert isinstance(redis_store, RedisEventStore)
    assert (redis_store.max_events, redis_store.max_age) == (5, 5)
