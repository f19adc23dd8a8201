"""One client connection, served from start to end by one thread: HTTP/1.1 requests in, WSGI answers out.

gunicorn's own request loop builds a pure-Python request object and WSGI environ for
every request, about 70 microseconds of CPU, more than the whole HTTP layer of
gunicorn's asyncio worker. Here a plain request takes a short path:

* its head is parsed by ``gunicorn_h1c``, the C parser gunicorn itself uses, with
  gunicorn's limits (request line, number and size of header fields), which also
  validates the request line, the method, the version and every field name and value;
* its body, of a ``Content-Length`` already received or small enough to read at once,
  becomes ``wsgi.input``;
* the environ is built the way ``gunicorn.http.wsgi.create`` builds it, and the answer
  goes out through gunicorn's own :class:`~gunicorn.http.wsgi.Response` (status line,
  header validation, framing, keep-alive), except that the head leaves in the same
  write as the first body bytes.

Every other request takes gunicorn's full path, byte for byte: ``Transfer-Encoding``
(chunked bodies), ``Expect``, ``Upgrade``, a header name with an underscore, a repeated
``Host``, ``Content-Type`` or ``Content-Length``, a request target that is not a plain
absolute path, a large body, anything the C parser refuses (gunicorn then gives its
own 4xx answer), or a configuration the short path does not cover (PROXY protocol,
``SCRIPT_NAME``, obsolete line folding or header space stripping allowed, uWSGI
protocol). So every framing and policy decision the short path does not make itself is
gunicorn's.
"""

from __future__ import annotations

import enum
import errno
import io
import logging
import os
import socket
import ssl
import struct
import time
from collections.abc import MutableMapping
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any
from typing import cast

from gunicorn import http as gunicorn_http
from gunicorn import sock as gunicorn_sock
from gunicorn import util
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.http.errors import NoMoreData
from gunicorn.http.message import DEFAULT_MAX_HEADERFIELD_SIZE
from gunicorn.http.message import MAX_HEADERS
from gunicorn.http.message import MAX_REQUEST_LINE
from gunicorn.http.message import RFC9110_5_3_SINGLETON_FIELDS
from gunicorn.http.message import RFC9112_TARGET_INVALID  # type: ignore[attr-defined]  # types-gunicorn 26.2 lags gunicorn 27

try:
    import gunicorn_h1c
except ImportError:  # the short path is then off; gunicorn's parser serves everything
    gunicorn_h1c = None

if TYPE_CHECKING:
    from gunicorn.config import Config

    from app.serving.worker import ConnectionWorker

logger = logging.getLogger(__name__)

RECEIVE_SIZE = 65536
# Larger bodies are read by gunicorn's streaming body reader, never buffered whole here.
SHORT_PATH_BODY_LIMIT = 256 * 1024
# How long a stopping or closing connection may take to drain an unread request body (as gthread).
BODY_DRAIN_TIMEOUT = 5.0
# Headers whose semantics the short path leaves to gunicorn.
_GUNICORN_HEADERS = frozenset({"TRANSFER-ENCODING", "EXPECT", "UPGRADE", "HTTP2-SETTINGS", "TE"})
_INCOMPATIBLE_FLAGS = ("permit_obsolete_folding", "strip_header_spaces")
_make_early_hints_callback = getattr(gunicorn_wsgi, "_make_early_hints_callback", None)


class ConnectionClosed(Exception):
    """The client closed the connection, or went silent past the keep-alive timeout."""


class _Incomplete:
    """The request has not fully arrived yet (event-driven serving: wait for the next readiness)."""


INCOMPLETE: Any = _Incomplete()


class Outcome(enum.Enum):
    """What becomes of a connection once the requests it had ready are served."""

    KEEP = "keep"  # wait for its next request
    CLOSE = "close"  # the client went away, or an error was answered
    CLOSE_GRACEFULLY = "close gracefully"  # HTTP ends it: half-close, then drain what the client still sends


def short_path_available(cfg: Config) -> bool:
    """Whether this configuration lets plain requests take the short path."""
    return (
        gunicorn_h1c is not None
        and hasattr(gunicorn_h1c, "LimitRequestLine")
        and getattr(cfg, "http_parser", "auto") != "python"
        and getattr(cfg, "proxy_protocol", "off") == "off"
        and getattr(cfg, "protocol", "http") == "http"
        and not any(getattr(cfg, flag, False) for flag in _INCOMPATIBLE_FLAGS)
        and not os.environ.get("SCRIPT_NAME")
    )


class Limits:
    """gunicorn's request-head limits, computed once per worker as ``gunicorn.http.message`` computes them."""

    def __init__(self, cfg: Config) -> None:
        line = cfg.limit_request_line
        if line < 0 or line >= MAX_REQUEST_LINE:
            line = MAX_REQUEST_LINE
        self.request_line = 1024 * 1024 if line == 0 else line  # 0 means unlimited, the C parser needs a number
        fields = cfg.limit_request_fields
        self.fields = MAX_HEADERS if fields <= 0 or fields > MAX_HEADERS else fields
        size = cfg.limit_request_field_size
        self.field_size = DEFAULT_MAX_HEADERFIELD_SIZE if size <= 0 else size
        self.head = self.fields * (self.field_size + 2) + 4 + self.request_line


class ShortPathRequest:
    """What gunicorn's response, access log and request hooks read of a request."""

    __slots__ = ("method", "uri", "path", "query", "fragment", "version", "headers", "scheme", "body", "must_close")
    proxy_protocol_info = None
    _expected_100_continue = False

    def __init__(
        self,
        method: str,
        uri: str,
        path: str,
        query: str,
        version: tuple[int, int],
        headers: list[tuple[str, str]],
        scheme: str,
        body: io.BytesIO,
    ) -> None:
        self.method = method
        self.uri = uri
        self.path = path
        self.query = query
        self.fragment = ""
        self.version = version
        self.headers = headers
        self.scheme = scheme
        self.body = body
        self.must_close = False

    def force_close(self) -> None:
        self.must_close = True

    def should_close(self) -> bool:
        # As gunicorn.http.message.Message.should_close.
        if self.must_close:
            return True
        for name, value in self.headers:
            if name == "CONNECTION":
                value = value.lower().strip(" \t")
                if value == "close":
                    return True
                if value == "keep-alive":
                    return False
                break
        return self.version <= (1, 0)


class CoalescingResponse(gunicorn_wsgi.Response):
    """gunicorn's response, whose head leaves in the same write as the first body bytes.

    gunicorn writes the head as soon as it is complete and the body after it: two
    writes, and on loopback two wake-ups of the reader, for every JSON answer. An
    empty body chunk (a stream that has nothing to say yet) still sends the head
    at once, as gunicorn does.
    """

    _pending: bytes | None = None
    _coalesce = True

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        if not self._coalesce:
            super().send_headers()
            return
        lines = self.default_headers()
        lines.extend([f"{name}: {value}\r\n" for name, value in self.headers])
        self._pending = ("".join(lines) + "\r\n").encode("latin-1")
        self.headers_sent = True

    def _flush(self, data: bytes = b"") -> None:
        pending, self._pending = self._pending, None
        assert pending is not None
        self.sock.sendall(pending + data if data else pending)

    def _emit_body(self, data: bytes) -> None:
        if self._pending is None:
            util.write(self.sock, data, self.chunked)
            return
        if self.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        self._flush(data)

    def write(self, arg: bytes) -> None:
        super().write(arg)
        if self._pending is not None and not arg:
            self._flush()

    def write_file(self, respiter: Any) -> None:
        # sendfile writes straight to the socket: the head must already be there.
        if self._pending is not None:
            self._flush()
        self._coalesce = False
        super().write_file(respiter)

    def close(self) -> None:
        if not self.headers_sent:
            self.send_headers()
        if self._pending is not None:
            self._flush(b"0\r\n\r\n" if self.chunked else b"")
        elif self.chunked:
            util.write_chunk(self.sock, b"")


class ClientConnection:
    """One accepted connection and the requests that come on it.

    Served two ways. :meth:`serve_ready` is event-driven: the worker calls it when
    the socket is readable, it reads what has arrived without waiting and serves
    every complete request, and a request not complete yet waits in the buffer for
    the next readiness. :meth:`serve` is the blocking loop of a thread that owns
    the connection for its whole life (TLS connections, whose readiness the
    socket does not show).
    """

    def __init__(self, worker: ConnectionWorker, sock: socket.socket, client: Any, server: Any) -> None:
        self.worker = worker
        self.cfg = worker.cfg
        self.sock = sock
        self.client = client
        self.server = server
        self.buffer = b""
        self.requests = 0
        # True while the connection waits for the first byte of its next request: a stopping worker
        # may then close it without cutting an answer short.
        self.idle = True
        self._closed_by_worker = False
        self._current: Any = None
        self._base_environ: dict[str, Any] = {}
        self._trusted = worker.is_trusted_forwarder(client)
        self.fd = sock.fileno()
        self.last_active = time.monotonic()
        self.armed = False  # waiting in the worker's poller for its next request
        self.closing_until = 0.0  # half-closed: draining what the client still sends until then
        # Who sent the last request (a hash of its Authorization header; 0 before the first): the worker's
        # ready queue takes turns between callers by it (app.serving.fair_queue).
        self.caller = 0

    # -- the connection's life

    def prepare(self) -> None:
        """Socket options and the environ keys of the connection; once, before its first request."""
        self._prepare_socket()

    def serve_ready(self) -> Outcome:
        """Serve what the client has sent so far; never waits for more, never raises."""
        self.last_active = time.monotonic()
        try:
            if not self._receive_ready():
                return Outcome.CLOSE
            while self.buffer:
                served = self._serve_short_path(blocking=False) if self.worker.short_path else None
                if served is INCOMPLETE:
                    return Outcome.KEEP
                if served is None:
                    # gunicorn's own path reads and writes as a blocking thread does: the worker lets the
                    # other connections be served meanwhile.
                    self.worker.step_aside()
                    served = self._serve_with_gunicorn()
                if not served:
                    return Outcome.CLOSE_GRACEFULLY
            return Outcome.KEEP
        except Exception as error:
            self._handle_failure(error)
            return Outcome.CLOSE
        finally:
            self.last_active = time.monotonic()

    def _receive_ready(self) -> bool:
        """Take what has arrived, without waiting; False when the client has closed the connection."""
        try:
            data = self.sock.recv(RECEIVE_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True  # nothing new: what is buffered is all there is
        if not data:
            return False
        self.buffer += data
        return True

    def _handle_failure(self, error: BaseException) -> None:
        if isinstance(error, ConnectionClosed):
            return
        if isinstance(error, NoMoreData):
            self.worker.log.debug("Ignored premature client disconnection. %s", error)
        elif isinstance(error, StopIteration):
            self.worker.log.debug("Closing connection. %s", error)
        elif isinstance(error, ssl.SSLError):
            if error.args[0] != ssl.SSL_ERROR_EOF:
                self.worker.log.debug("Error processing SSL request.")
                self._answer_error(error)
        elif isinstance(error, OSError):
            if error.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF):
                self.worker.log.exception("Socket error processing request.")
        else:
            self._answer_error(error)

    def close(self, outcome: Outcome) -> None:
        """Close now; gracefully (``util.close_graceful``, which may wait up to 2 s) from a thread of its own."""
        if outcome is Outcome.CLOSE_GRACEFULLY:
            util.close_graceful(self.sock)
        else:
            util.close(self.sock)

    def half_close(self, linger: float) -> bool:
        """RFC 9112 section 9.6 without waiting: send FIN now, drain and close later; False if it is closed now."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            util.close(self.sock)
            return False
        self.closing_until = time.monotonic() + linger
        return not self.drain()

    def drain(self, max_drain: int = 65536) -> bool:
        """Read and drop what the client still sends; True once the connection is closed (EOF or too much)."""
        drained = 0
        while drained < max_drain:
            try:
                data = self.sock.recv(RECEIVE_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                break
            if not data:
                break
            drained += len(data)
        util.close(self.sock)
        return True

    def serve(self) -> None:
        """Serve requests until the client or HTTP ends the connection; never raises."""
        graceful = False
        try:
            self._prepare_socket()
            while True:
                if not self.buffer and not self._receive(waiting=True):
                    break
                keep_alive = self._serve_short_path(blocking=True) if self.worker.short_path else None
                if keep_alive is None:
                    keep_alive = self._serve_with_gunicorn()
                if not keep_alive:
                    graceful = True
                    break
        except Exception as error:
            self._handle_failure(error)
        finally:
            if graceful and not self._closed_by_worker:
                util.close_graceful(self.sock)
            else:
                util.close(self.sock)

    def _answer_error(self, error: BaseException) -> None:
        """gunicorn's own answer to a request it could not parse, or to an app that failed before answering."""
        try:
            self.worker.handle_error(self._current, self.sock, self.client, error)
        except Exception:
            self.worker.log.exception("Could not answer an erroneous request")

    def interrupt(self) -> None:
        """Wake a connection that waits for its next request, so that it ends (a stopping worker)."""
        self._closed_by_worker = True
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def _prepare_socket(self) -> None:
        keepalive = self.cfg.keepalive
        if self.cfg.is_ssl:
            self.sock = gunicorn_sock.ssl_wrap_socket(self.sock, self.cfg)
            if not self.cfg.do_handshake_on_connect:
                self.sock.do_handshake()
            self.sock.settimeout(keepalive or None)
        elif keepalive:
            # The kernel bounds every wait for request bytes; the socket itself stays blocking, so a
            # non-blocking peek (the bridge watching for a hang-up) never waits, and no extra poll
            # precedes each receive as a Python-level timeout would add.
            seconds = int(keepalive)
            micros = int((keepalive - seconds) * 1_000_000)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, micros))
        self._base_environ = base_environ(self.cfg, self.client, self.server, self.sock)

    def _receive(self, *, waiting: bool = False) -> bool:
        """Append what the client sends next to the buffer; False when it closed the connection."""
        if waiting:
            self.idle = True
            if not self.worker.alive and self._closed_by_worker:
                return False
        try:
            data = self.sock.recv(RECEIVE_SIZE)
        except (BlockingIOError, TimeoutError):
            raise ConnectionClosed() from None
        finally:
            self.idle = False
        if not data:
            return False
        self.buffer += data
        return True

    # -- the short path

    def _serve_short_path(self, *, blocking: bool) -> Any:
        """Serve the next request if it is a plain one; None hands it, untouched, to gunicorn's path.

        Not ``blocking``, a request that has not fully arrived is :data:`INCOMPLETE`: it waits in the
        buffer. The result is otherwise whether the connection stays open.
        """
        head = self._parse_head(blocking)
        if head is None or head is INCOMPLETE:
            return head
        built = self._environ(head, blocking)
        if built is None or built is INCOMPLETE:
            return built
        req, environ, body_end = built
        self.caller = hash(environ.get("HTTP_AUTHORIZATION"))
        self.buffer = self.buffer[body_end:]
        self.requests += 1
        resp = CoalescingResponse(req, self.sock, self.cfg)
        if _make_early_hints_callback is not None:
            environ["wsgi.early_hints"] = _make_early_hints_callback(req, self.sock, resp)
        return self._respond(req, resp, environ)

    def _parse_head(self, blocking: bool) -> Any:
        limits = self.worker.limits
        cfg = self.cfg
        assert gunicorn_h1c is not None
        last = 0
        while True:
            try:
                return gunicorn_h1c.parse_request(
                    self.buffer,
                    last_len=last,
                    limit_request_line=limits.request_line,
                    limit_request_fields=limits.fields,
                    limit_request_field_size=limits.field_size,
                    permit_unconventional_http_method=cfg.permit_unconventional_http_method,
                    permit_unconventional_http_version=cfg.permit_unconventional_http_version,
                )
            except gunicorn_h1c.IncompleteError:
                if len(self.buffer) > limits.head:
                    return None  # gunicorn answers 431
                if not blocking:
                    return INCOMPLETE
                last = len(self.buffer)
                if not self._receive():
                    if self.buffer:
                        return None  # a truncated head: gunicorn's parser says what is wrong
                    raise ConnectionClosed() from None
            except gunicorn_h1c.ParseError:
                return None  # gunicorn's parser refuses it with its own 4xx answer

    def _environ(self, head: dict[str, Any], blocking: bool) -> Any:
        """The WSGI environ of a plain request, as ``gunicorn.http.wsgi.create`` builds it; None if not plain."""
        if self.buffer[:2] == b"\r\n":
            return None
        cfg = self.cfg
        uri = head["path"].decode("latin-1")
        # An absolute path without a fragment: what urlsplit would split, split the same way here.
        if not uri.startswith("/") or uri.startswith("//") or "#" in uri or RFC9112_TARGET_INVALID.search(uri):
            return None
        path, _, query = uri.partition("?")
        method = head["method"].decode("latin-1")
        if cfg.casefold_http_method:
            method = method.upper()
        minor = head["minor_version"]
        environ = self._base_environ.copy()
        scheme = environ["wsgi.url_scheme"]
        secure_scheme_headers = self.worker.secure_scheme_headers if self._trusted else {}
        scheme_set = False
        content_length: str | None = None
        singletons: set[str] = set()
        headers: list[tuple[str, str]] = []
        repeated: dict[str, list[str]] | None = None
        for raw_name, raw_value in head["headers"]:
            name = raw_name.decode("latin-1").upper()
            value = raw_value.decode("latin-1")
            if "_" in name or name in _GUNICORN_HEADERS:
                return None
            if name in RFC9110_5_3_SINGLETON_FIELDS:
                if name in singletons:
                    return None
                singletons.add(name)
            if name in secure_scheme_headers:
                secure = "https" if value == secure_scheme_headers[name] else "http"
                if scheme_set and secure != scheme:
                    return None
                scheme, scheme_set = secure, True
            headers.append((name, value))
            if name == "CONTENT-TYPE":
                environ["CONTENT_TYPE"] = value
                continue
            if name == "CONTENT-LENGTH":
                if content_length is not None or not (value.isascii() and value.isdigit()):
                    return None
                content_length = value
                environ["CONTENT_LENGTH"] = value
                continue
            key = "HTTP_" + name.replace("-", "_")
            if key in environ:
                if repeated is None:
                    repeated = {}
                repeated.setdefault(key, [environ[key]]).append(value)
            else:
                environ[key] = value
        if repeated:
            for key, values in repeated.items():
                environ[key] = ",".join(values)
        length = int(content_length) if content_length is not None else 0
        if length > SHORT_PATH_BODY_LIMIT:
            return None
        body_start = head["consumed"]
        body_end = body_start + length
        while len(self.buffer) < body_end:
            if not blocking:
                return INCOMPLETE
            if not self._receive():
                raise ConnectionClosed()
        body = io.BytesIO(self.buffer[body_start:body_end])
        environ["wsgi.input"] = body
        environ["wsgi.url_scheme"] = scheme
        environ["REQUEST_METHOD"] = method
        environ["QUERY_STRING"] = query
        environ["RAW_URI"] = uri
        environ["SERVER_PROTOCOL"] = f"HTTP/1.{minor}"
        environ["PATH_INFO"] = util.unquote_to_wsgi_str(path)
        if environ["SERVER_NAME"] is None:
            self._unix_socket_server(environ, scheme)
        req = ShortPathRequest(method, uri, path, query, (1, minor), headers, scheme, body)
        return req, environ, body_end

    def _unix_socket_server(self, environ: dict[str, Any], scheme: str) -> None:
        # As gunicorn.http.wsgi.create: on a unix socket, SERVER_NAME and SERVER_PORT come from Host.
        host = environ.get("HTTP_HOST")
        if host:
            server = host.split(":")
            if len(server) == 1:
                server.append({"http": "80", "https": "443"}.get(scheme, ""))
        else:
            server = [str(self.server), ""]
        environ["SERVER_NAME"] = server[0]
        environ["SERVER_PORT"] = str(server[1])

    # -- gunicorn's path

    def _serve_with_gunicorn(self) -> bool:
        """Serve the next request with gunicorn's own parser and environ, from the bytes already read."""
        parser = gunicorn_http.RequestParser(self.cfg, self.sock, self.client)
        parser.unreader.unread(self.buffer)
        parser.req_count = self.requests
        self.buffer = b""
        req = next(parser)
        self.requests += 1
        response, environ = gunicorn_wsgi.create(
            req, self.sock, self.client, self.server, self.cfg, response_class=CoalescingResponse
        )
        resp = cast(CoalescingResponse, response)  # the stubs type create's answer as the base Response
        environ["wsgi.multithread"] = True
        keep_alive = self._respond(req, resp, environ)
        if keep_alive:
            # types-gunicorn 26.2 lags gunicorn 27, whose finish_body says whether the body was drained.
            keep_alive = bool(parser.finish_body(deadline=time.monotonic() + BODY_DRAIN_TIMEOUT))  # type: ignore[func-returns-value]  # a bool in gunicorn 27
        if keep_alive:
            self.buffer = parser.unreader.take_buffered()
        return keep_alive

    # -- both paths

    def _respond(self, req: Any, resp: CoalescingResponse, environ: MutableMapping[str, Any]) -> bool:
        """Run the app for one request and send its answer; whether the connection stays open."""
        worker = self.worker
        cfg = self.cfg
        self._current = req
        try:
            cfg.pre_request(worker, req)
            request_start = datetime.now()
            worker.nr += 1
            if worker.nr >= worker.max_requests:
                if worker.alive:
                    worker.log.info("Autorestarting worker after current request.")
                    worker.alive = False
                resp.force_close()
            if not worker.alive or not cfg.keepalive:
                resp.force_close()
            # The stubs type a WSGI app's start_response without exc_info and without the write it returns.
            respiter = worker.wsgi(environ, resp.start_response)  # type: ignore[arg-type]  # a full start_response
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                worker.log.access(resp, req, environ, datetime.now() - request_start)
                if hasattr(respiter, "close"):
                    respiter.close()
        except OSError:
            raise
        except (Exception, SystemExit):
            if resp.headers_sent:
                # The answer has begun: a 500 now would corrupt it. End the connection instead.
                worker.log.exception("Error handling request")
                return False
            raise
        finally:
            try:
                cfg.post_request(worker, req, environ, resp)
            except Exception:
                worker.log.exception("Exception in post_request hook")
        self._current = None
        return not resp.should_close()


def base_environ(cfg: Config, client: Any, server: Any, sock: socket.socket) -> dict[str, Any]:
    """The keys of a WSGI environ that stay the same for every request of one connection."""
    environ = cast(dict[str, Any], gunicorn_wsgi.base_environ(cfg))  # a dict; the stub says MutableMapping
    environ["wsgi.multithread"] = True
    environ["gunicorn.socket"] = sock
    environ["SCRIPT_NAME"] = ""
    environ["wsgi.url_scheme"] = "https" if cfg.is_ssl else "http"
    if isinstance(client, str):
        environ["REMOTE_ADDR"] = client
    elif isinstance(client, bytes):
        environ["REMOTE_ADDR"] = client.decode()
    else:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    if isinstance(server, str | bytes):
        environ["SERVER_NAME"] = None  # a unix socket: from each request's Host header
        environ["SERVER_PORT"] = ""
    else:
        environ["SERVER_NAME"] = server[0]
        environ["SERVER_PORT"] = str(server[1])
    return environ


__all__ = ["ClientConnection", "CoalescingResponse", "Limits", "base_environ", "short_path_available"]
