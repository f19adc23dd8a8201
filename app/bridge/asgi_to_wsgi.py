"""One HTTP exchange handed from a WSGI request to an ASGI application and back.

What is translated:

* the request: method, path, query string, headers (minus ``Authorization``:
  the token was verified already and tool code never sees it) and the body,
  read once by Flask, become an ASGI ``http`` scope and one ``http.request``;
* the response: ``http.response.start`` becomes the WSGI status and headers,
  untouched (no content type is added where the SDK sent none), and each
  ``http.response.body`` becomes one chunk of the WSGI iterable as soon as the
  application sends it, so Server-Sent Events stream live;
* the end: when the WSGI server closes the iterable early (the client went
  away), the application receives ``http.disconnect`` and its task is
  cancelled, which cancels the running tool.

A WSGI server notices a vanished client only when it next writes. Where the
server exposes the client's socket (gunicorn, Werkzeug), :meth:`watch_client`
notices the hang-up while the stream waits; elsewhere (uWSGI) cancellation
happens at the stream's next event (the SDK pings idle streams every 15 s).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Coroutine
from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol
from typing import cast

from app.bridge.event_loop import ServingLoop
from app.serving import run_slot

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment
    from starlette.types import ASGIApp
    from starlette.types import Message
    from starlette.types import Receive
    from starlette.types import Scope
    from starlette.types import Send

logger = logging.getLogger(__name__)

FINISH_TIMEOUT = 5.0
# A streamed answer's events that come without a wait in between leave in one write, up to this much.
MAX_JOINED_BYTES = 64 * 1024
CANCEL_TIMEOUT = 10.0
_HIDDEN_HEADERS = frozenset({"HTTP_AUTHORIZATION", "HTTP_PROXY"})


# Environ key -> ASGI header name (b"" for keys that are not request headers), learnt as they come.
_HEADER_NAMES: dict[str, bytes] = {}
_HEADER_NAMES_LIMIT = 1024  # clients choose header names: remember only so many


def _header_name(key: str) -> bytes:
    if key.startswith("HTTP_") and key not in _HIDDEN_HEADERS:
        name = key[5:].replace("_", "-").lower().encode("latin-1")
    elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        name = key.replace("_", "-").lower().encode("latin-1")
    else:
        name = b""
    if len(_HEADER_NAMES) < _HEADER_NAMES_LIMIT:
        _HEADER_NAMES[key] = name
    return name


def asgi_scope(environ: WSGIEnvironment, path: str, extra: dict[str, Any] | None = None) -> Scope:
    """The ASGI HTTP scope for a WSGI request."""
    headers = []
    names = _HEADER_NAMES
    for key, value in environ.items():
        name = names.get(key)
        if name is None:
            name = _header_name(key)
        if name and (value or key[0] != "C"):  # CONTENT_TYPE and CONTENT_LENGTH only when set
            headers.append((name, value.encode("latin-1")))
    server_port = environ.get("SERVER_PORT") or "0"
    protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": _ASGI_VERSION,
        "http_version": protocol.partition("/")[2] or "1.1",
        "method": environ["REQUEST_METHOD"],
        "scheme": environ.get("wsgi.url_scheme", "http"),
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "server": (environ.get("SERVER_NAME", ""), int(server_port) if server_port.isdigit() else 0),
        "client": (environ.get("REMOTE_ADDR", ""), int(environ.get("REMOTE_PORT") or 0)),
        "state": {},
    }
    if extra:
        scope.update(extra)
    return scope


_ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
WATCH_INTERVAL = 0.5


def _coroutine(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
    """The application's call, which create_task needs as a coroutine.

    ASGI applications are coroutine functions; starlette types them as returning any awaitable.
    """
    return cast("Coroutine[Any, Any, None]", app(scope, receive, send))


class _TimedOut:
    """What ``next_message(timeout=...)`` returns when nothing came in time."""


# Compared by identity only; typed as a message so that next_message keeps one return type.
TIMED_OUT: Message = cast("Message", _TimedOut())


def client_socket(environ: WSGIEnvironment) -> socket.socket | None:
    """The connection to the client, where the WSGI server exposes it (gunicorn, Werkzeug), unless TLS."""
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
        return None
    return sock


def client_state(sock: socket.socket) -> bool | None:
    """True once the client closed the connection, False while it is silent; None if it sent more
    (a pipelined request), which says nothing either way."""
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    return True if data == b"" else None


class Exchange(Protocol):
    """One request in flight, as the WSGI side sees it."""

    def next_message(self, timeout: float | None = None) -> Message | None: ...

    def queued_message(self) -> Message | None:
        """A message the application already sent, without waiting for one; None if there is none yet."""
        ...

    def watch_client(self, sock: socket.socket | None) -> None: ...

    def close(self) -> None: ...


class ASGIExchange:
    """Runs one ASGI request on a borrowed :class:`ServingLoop`, driven by the calling thread.

    The calling thread runs the loop until the exchange has something for it (a
    message, or the handler's end) and the exchange stops the loop then: one
    ``run_forever`` per wait, no futures in between.
    """

    def __init__(
        self,
        serving: ServingLoop,
        app: ASGIApp,
        scope: Scope,
        body: bytes,
        context: contextvars.Context,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self._serving = serving
        self._loop = serving.loop
        self._body: bytes | None = body
        self._messages: deque[Message] = deque()
        self._waiting = False
        self._disconnect = asyncio.Event()
        self._closed = False
        self._complete = False
        self._on_done = on_done
        self._watched: socket.socket | None = None
        self._watch_pending: socket.socket | None = None
        self._queued_bytes = 0
        self._task: asyncio.Task[None] = self._loop.create_task(
            _coroutine(app, scope, self._receive, self._send), context=context
        )
        self._task.add_done_callback(self._wake)

    def watch_client(self, sock: socket.socket | None) -> None:
        """While the loop waits for the next event of a stream, notice the client hanging up.

        A WSGI server learns of a vanished client only when it next writes; watching
        the socket cancels the tool at once instead of at its next event.
        """
        if sock is None:
            return
        # Only once the loop would wait: a stream sent in one go needs no watching (and no epoll calls).
        self._watch_pending = sock
        self._serving.selector.before_wait = self._start_watching

    def _start_watching(self) -> None:
        sock, self._watch_pending = self._watch_pending, None
        if sock is None or self._closed or self._loop.is_closed():
            return
        self._loop.add_reader(sock.fileno(), self._client_readable)
        self._watched = sock

    def _client_readable(self) -> None:
        assert self._watched is not None
        state = client_state(self._watched)
        if state is False:
            return
        self._unwatch()
        if state:
            self._disconnect.set()
            self._task.cancel()

    def _unwatch(self) -> None:
        self._watch_pending = None
        if self._serving.selector.before_wait == self._start_watching:
            self._serving.selector.before_wait = None
        if self._watched is not None:
            self._loop.remove_reader(self._watched.fileno())
            self._watched = None

    async def _receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._disconnect.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        # ASGI 2.3: a send after the client disconnected is a no-op, not an error.
        if self._closed:
            return
        self._messages.append(message)
        self._queued_bytes += len(message.get("body", b""))
        if self._queued_bytes >= MAX_JOINED_BYTES and self._serving.selector.stop_when_idle is not None:
            self._loop.stop()  # enough for one write: send it before producing more
        self._wake()

    def _wake(self, _: object = None) -> None:
        if self._waiting:
            self._waiting = False
            self._loop.stop()

    def _run(self, timeout: float | None) -> bool:
        """Drive the loop until the exchange wakes the caller; False if ``timeout`` passed first."""
        self._waiting = True
        self._serving.run_until_stopped(timeout)
        woken = not self._waiting
        self._waiting = False
        return woken

    def next_message(self, timeout: float | None = None) -> Message | None:
        """The application's next message, driving the loop until it comes; None once it is finished.

        With ``timeout``, :data:`TIMED_OUT` if nothing came within that many seconds.
        """
        while not self._messages:
            if self._task.done():
                return None
            if not self._run(timeout) and not self._messages and not self._task.done():
                return TIMED_OUT
        return self._take()

    def queued_message(self) -> Message | None:
        if not self._messages and not self._task.done() and self._queued_bytes < MAX_JOINED_BYTES:
            # What the handler produces without waiting goes out in the same write.
            self._serving.run_until_idle()
        return self._take() if self._messages else None

    def _take(self) -> Message:
        message = self._messages.popleft()
        self._queued_bytes -= len(message.get("body", b""))
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._complete = True
        return message

    def _finish(self, timeout: float) -> bool:
        """Drive the loop until the handler task has ended; False if it is still running after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self._task.done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._run(left)
        return True

    def _log_failure(self) -> None:
        if not self._task.cancelled() and self._task.exception() is not None:
            logger.error("the MCP handler failed", exc_info=self._task.exception())

    def close(self) -> None:
        """Finish the exchange: let a completed one wind down, cancel an abandoned one."""
        if self._closed:
            return
        self._closed = True
        self._unwatch()  # the socket goes back to the WSGI server
        try:
            if not self._complete:
                self._disconnect.set()
                self._task.cancel()
                if not self._finish(CANCEL_TIMEOUT):
                    logger.warning("the MCP handler did not stop within %.0f s of a disconnect", CANCEL_TIMEOUT)
            elif not self._finish(FINISH_TIMEOUT):
                self._task.cancel()
            if self._task.done() and not self._task.cancelled():
                self._log_failure()
        finally:
            if self._on_done is not None:
                self._on_done()


_END = object()


class ThreadedExchange:
    """Runs one ASGI request on the process's loop thread; the calling thread waits for its messages.

    Used in stateful mode, where the loop runs on its own (see :class:`LoopThread`).
    Messages cross over through a thread-safe queue; the disconnect and the
    cancellation go back with ``call_soon_threadsafe``.
    """

    def __init__(
        self, serving: ServingLoop, app: ASGIApp, scope: Scope, body: bytes, context: contextvars.Context
    ) -> None:
        self._loop = serving.loop
        self._body: bytes | None = body
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done = threading.Event()
        self._closed = False
        self._complete = False
        self._task: asyncio.Task[None] | None = None
        self._disconnect: asyncio.Event | None = None
        self._watched: socket.socket | None = None
        self._loop.call_soon_threadsafe(self._start, app, scope, context)

    def watch_client(self, sock: socket.socket | None) -> None:
        """Check the client's socket every half second while waiting: a closed one cancels the exchange.

        A stateful session's GET stream may stay silent for a long time; without this
        it would hold a worker thread until the SDK's next keep-alive ping fails.
        """
        self._watched = sock

    def _start(self, app: ASGIApp, scope: Scope, context: contextvars.Context) -> None:
        self._disconnect = asyncio.Event()
        self._task = self._loop.create_task(_coroutine(app, scope, self._receive, self._send), context=context)
        self._task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("the MCP handler failed", exc_info=task.exception())
        self._queue.put(_END)
        self._done.set()

    async def _receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        assert self._disconnect is not None
        await self._disconnect.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if not self._closed:
            self._queue.put(message)

    def _abort(self) -> None:
        if self._disconnect is not None:
            self._disconnect.set()
        if self._task is not None:
            self._task.cancel()

    def next_message(self, timeout: float | None = None) -> Message | None:
        if self._done.is_set() and self._queue.empty():
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = WATCH_INTERVAL if self._watched is not None else None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return TIMED_OUT
                wait = left if wait is None else min(wait, left)
            try:
                with run_slot.released():  # the loop thread does the work meanwhile
                    message = self._queue.get(timeout=wait)
                break
            except queue.Empty:
                if self._watched is None:
                    continue
                state = client_state(self._watched)
                if state is not False:
                    self._watched = None
                    if state:
                        self._loop.call_soon_threadsafe(self._abort)
        return self._received(message)

    def queued_message(self) -> Message | None:
        try:
            message = self._queue.get_nowait()
        except queue.Empty:
            return None
        if message is _END:
            self._queue.put(_END)  # next_message reports the end
            return None
        return self._received(message)

    def _received(self, message: Any) -> Message | None:
        if message is _END:
            return None
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._complete = True
        return message  # type: ignore[no-any-return]  # the queue holds the SDK's messages and _END

    def close(self) -> None:
        """Cancel an abandoned exchange; a completed one winds down on the loop thread by itself."""
        if self._closed:
            return
        self._closed = True
        if not self._complete:
            if self._loop.is_closed():  # the worker is exiting past its graceful timeout: nothing left to stop
                return
            self._loop.call_soon_threadsafe(self._abort)
            with run_slot.released():
                stopped = self._done.wait(CANCEL_TIMEOUT)
            if not stopped:
                logger.warning("the MCP handler did not stop within %.0f s of a disconnect", CANCEL_TIMEOUT)


class StreamingBody:
    """The WSGI response iterable of a streamed answer.

    Each chunk is what the application has sent so far: one ASGI body message, or
    several joined when they were already waiting (a tool reporting progress in a
    burst), so that they leave in one write instead of one each. Nothing is held
    back to wait for more. With a ``deadline`` (``time.monotonic()``), the stream
    ends then, as if the application had finished it: the client sees a complete
    response and may reconnect, and closing the body cancels the handler.
    """

    def __init__(self, exchange: Exchange, first_chunk: bytes | None = None, *, deadline: float | None = None) -> None:
        self._exchange = exchange
        self._pending = first_chunk
        self._finished = False
        self._deadline = deadline

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._pending is not None:
            # Returned even when empty: the WSGI server then sends the headers at once.
            chunk, self._pending = self._pending, None
            return chunk + self._queued() if chunk else chunk
        while not self._finished:
            if self._deadline is None:
                message = self._exchange.next_message()
            else:
                left = self._deadline - time.monotonic()
                message = self._exchange.next_message(timeout=left) if left > 0 else TIMED_OUT
            if message is None or message is TIMED_OUT or message["type"] != "http.response.body":
                self._finished = True
                break
            if not message.get("more_body", False):
                self._finished = True
            chunk = message.get("body", b"")
            if chunk:
                return bytes(chunk) + self._queued()
        raise StopIteration

    def _queued(self) -> bytes:
        """The bodies of the messages already waiting, joined."""
        parts = []
        while not self._finished:
            message = self._exchange.queued_message()
            if message is None:
                break
            if message["type"] != "http.response.body" or not message.get("more_body", False):
                self._finished = True
            if message["type"] == "http.response.body":
                parts.append(bytes(message.get("body", b"")))
        return b"".join(parts)

    def close(self) -> None:
        self._exchange.close()
