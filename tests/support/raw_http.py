"""Raw HTTP/1.1 on a socket: bytes exactly as a test writes them, answers read as a client would read them."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from dataclasses import field


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]  # lower-case names, in order
    body: bytes = b""
    informational: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)


class Reader:
    """Reads answers off one connection: 1xx, then a head, then a body by length, chunks or close."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.closed = False

    def _more(self) -> bool:
        if self.closed:
            return False
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            return False
        self.buffer += data
        return True

    def _line(self) -> bytes | None:
        while b"\r\n" not in self.buffer:
            if not self._more():
                return None
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _exactly(self, count: int) -> bytes | None:
        while len(self.buffer) < count:
            if not self._more():
                return None
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def answer(self, *, head_request: bool = False) -> Answer | None:
        """The next answer; None if the connection ended before a complete one."""
        informational: list[int] = []
        while True:
            status_line = self._line()
            if status_line is None:
                return None
            status = int(status_line.split(b" ")[1])
            headers = []
            while True:
                line = self._line()
                if line is None:
                    return None
                if not line:
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers.append((name.strip().lower(), value.strip()))
            if 100 <= status < 200:
                informational.append(status)
                continue
            break
        answer = Answer(status, headers, informational=informational)
        if head_request or status in (204, 304):
            return answer
        length = answer.header("content-length")
        if answer.header("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line = self._line()
                if size_line is None:
                    return None
                size = int(size_line.split(b";")[0], 16)
                chunk = self._exactly(size + 2)
                if chunk is None:
                    return None
                if size == 0:
                    break
                body += chunk[:-2]
            answer.body = body
        elif length is not None:
            body = self._exactly(int(length))
            if body is None:
                return None
            answer.body = body
        else:
            while self._more():
                pass
            answer.body, self.buffer = self.buffer, b""
        return answer


def exchange(port: int, data: bytes, *, answers: int = 1, timeout: float = 10) -> list[Answer] | str:
    """Send raw bytes on a new connection; the answers, or ``"closed"`` if none came complete."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        reader = Reader(sock)
        got: list[Answer] = []
        head = data.lstrip(b"\r\n").startswith(b"HEAD ")
        while len(got) < answers:
            answer = reader.answer(head_request=head)
            if answer is None:
                break
            got.append(answer)
            if answer.header("connection") == "close":
                break
    return got or "closed"
