"""GET a small document from a public address: resolved once, checked, pinned, bounded in time and size.

https://datatracker.ietf.org/doc/draft-ietf-oauth-client-id-metadata-document/ (Security Considerations: SSRF)
https://www.rfc-editor.org/rfc/rfc9700#section-4.15

A client ID metadata document is fetched from a URL the client chose, so the
fetch is a way into whatever this server can reach: a cloud's metadata
service (169.254.169.254), the private network, services on this machine.
Here a URL's host is resolved once, every address it resolves to is checked
(https: public addresses only, never private, loopback, link-local, shared or
reserved ones, IPv4-mapped IPv6 included; plain http, which only loopback URLs
may use: loopback addresses only), and the connection goes to the address that
was checked, so a DNS answer that changes between the check and the connection
(DNS rebinding) changes nothing. TLS still verifies the certificate against
the URL's host name. The whole fetch, DNS lookup included, has one deadline:
every connect, handshake step, write and read gets only the time left, so a
server that answers one byte at a time cannot hold a thread beyond it. No
redirect is followed and no proxy is used.

The resolver and the connector are parameters, so tests drive the address
checks with a stubbed resolver and never connect anywhere but loopback.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from app.serving import run_slot

Resolver = Callable[[str, int], list[str]]
Connector = Callable[[str, int, float], socket.socket]


class FetchRefused(Exception):
    """The document cannot be fetched; the message says why, for the client and the log."""


@dataclass(frozen=True)
class Fetched:
    status: int
    content_type: str
    body: bytes


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the order the system resolver gives them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def tcp_connector(address: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((address, port), timeout=timeout)


def address_problem(address: str, *, loopback: bool) -> str | None:
    """Why this server must not connect to ``address``, or None.

    ``loopback``: only loopback addresses are acceptable (a plain-http URL on this
    machine); otherwise only public ones.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if loopback:
        return None if ip.is_loopback else "not a loopback address"
    if not ip.is_global or ip.is_multicast:
        return "not a public address"
    return None


class _DeadlineReader(io.RawIOBase):
    """The response side of a socket, each read given only the time left until the deadline."""

    def __init__(self, owner: _DeadlineSocket) -> None:
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        sock = self._owner.arm()
        return sock.recv_into(buffer)


class _DeadlineSocket:
    """What http.client needs of a socket (sendall, makefile, close), bounded by one deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def arm(self) -> socket.socket:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("it took longer than the fetch may take")
        self._sock.settimeout(left)
        return self._sock

    def sendall(self, data: bytes) -> None:
        self.arm().sendall(data)

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:
        """Nothing: http.client closes its connection while the response is still being read (a real
        socket outlives that through its file's reference); the fetcher closes the socket when done."""


class _PinnedConnection(http.client.HTTPConnection):
    """http.client over a socket connected (and checked) beforehand: it never resolves or connects itself."""

    def __init__(self, host: str, port: int, sock: _DeadlineSocket) -> None:
        super().__init__(host, port)
        self._pinned = sock

    def connect(self) -> None:
        self.sock = self._pinned


class PublicFetcher:
    """One GET at a time to public addresses (or, for plain-http loopback URLs, to loopback ones)."""

    def __init__(
        self,
        *,
        timeout: float,
        max_bytes: int,
        resolver: Resolver = system_resolver,
        connector: Connector = tcp_connector,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._resolver = resolver
        self._connector = connector
        self._tls = tls or ssl.create_default_context()

    def get(self, url: str, accept: str = "application/json") -> Fetched:
        """The answer to ``GET url``: status, media type and at most ``max_bytes + 1`` bytes of body."""
        deadline = time.monotonic() + self.timeout
        parts = urlsplit(url)
        host, scheme = parts.hostname or "", parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        with run_slot.released():  # only waiting from here on: other requests run meanwhile
            addresses = self._resolve(host, port, deadline)
            for address in addresses:
                problem = address_problem(address, loopback=scheme == "http")
                if problem is not None:
                    raise FetchRefused(f"its host {host} resolves to {address}, which is {problem}")
            sock = self._connect(addresses, port, deadline)
            try:
                if scheme == "https":
                    sock = self._handshake(sock, host, deadline)
                return self._exchange(_DeadlineSocket(sock, deadline), host, port, parts, accept)
            finally:
                sock.close()

    def _resolve(self, host: str, port: int, deadline: float) -> list[str]:
        """The resolver's answer, waited for no longer than the deadline (the lookup runs in a thread)."""
        answer: list[list[str] | BaseException] = []

        def lookup() -> None:
            try:
                answer.append(self._resolver(host, port))
            except BaseException as error:  # handed to the waiting thread
                answer.append(error)

        thread = threading.Thread(target=lookup, name="client-metadata-dns", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        if not answer:
            raise FetchRefused(f"its host {host} could not be resolved in time")
        result = answer[0]
        if isinstance(result, BaseException):
            raise FetchRefused(f"its host {host} could not be resolved ({result})")
        if not result:
            raise FetchRefused(f"its host {host} resolves to no address")
        return result

    def _connect(self, addresses: list[str], port: int, deadline: float) -> socket.socket:
        problems = []
        for address in addresses:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                return self._connector(address, port, left)
            except OSError as error:
                problems.append(f"{address}: {error}")
        raise FetchRefused("it could not be fetched (" + ("; ".join(problems) or "no time left to connect") + ")")

    def _handshake(self, raw: socket.socket, host: str, deadline: float) -> socket.socket:
        """TLS with the URL's host name (SNI and certificate check), each step within the deadline."""
        tls = self._tls.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
        tls.setblocking(False)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                ready = select.select([tls], [], [], max(0.0, deadline - time.monotonic()))[0]
            except ssl.SSLWantWriteError:
                ready = select.select([], [tls], [], max(0.0, deadline - time.monotonic()))[1]
            except (ssl.SSLError, OSError) as error:
                tls.close()
                raise FetchRefused(f"it could not be fetched (TLS: {error})") from None
            if not ready:
                tls.close()
                raise FetchRefused("it could not be fetched (the TLS handshake took too long)")
        tls.setblocking(True)
        return tls

    def _exchange(self, sock: _DeadlineSocket, host: str, port: int, parts: Any, accept: str) -> Fetched:
        connection = _PinnedConnection(host, port, sock)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", path, headers={"Accept": accept, "Connection": "close"})
            response = connection.getresponse()
            body = response.read(self.max_bytes + 1)
            return Fetched(response.status, response.headers.get_content_type(), body)
        except TimeoutError:
            raise FetchRefused(f"it could not be fetched within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise FetchRefused(f"it could not be fetched ({error})") from None
        finally:
            connection.close()
