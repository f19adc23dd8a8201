"""gunicorn's logger, with an access log built from only the atoms its format names.

``logger_class`` in gunicorn.conf.py. gunicorn's ``Logger.atoms()`` computes every
atom it knows for every request, whatever ``access_log_format`` uses: a formatted
timestamp, basic-auth parsing, and one dict entry per request header, per
response header and per environ key, about 20 microseconds a request with the
shipped format, which names eight. This subclass reads the format once and
computes those it names, with gunicorn's own definitions, and writes the line
through :func:`app.log_lines.write_line`; the lines, handlers, files, syslog and
every other log are gunicorn's.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from collections.abc import Callable
from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any

from gunicorn import glogging

from app.log_lines import keep_or_write
from app.log_lines import plain_handler

_ATOM = re.compile(r"%\(([^)]+)\)")
_PIECE = re.compile(r"%\(([^)]+)\)s")


def _pieces(access_format: str) -> list[tuple[str, str | None]] | None:
    """The format as (literal text, atom) pairs; None unless it is plain ``%(atom)s`` and ``%%``."""
    texts = _PIECE.split(access_format)
    literals, keys = texts[0::2], texts[1::2]
    if any("%" in literal.replace("%%", "") for literal in literals):
        return None  # another conversion: gunicorn's own formatting
    pieces: list[tuple[str, str | None]] = [
        (literal.replace("%%", "%"), key) for literal, key in zip(literals, keys, strict=False)
    ]
    pieces.append((literals[-1].replace("%%", "%"), None))
    return pieces


class AccessLogger(glogging.Logger):
    """``gunicorn.glogging.Logger`` whose ``atoms`` computes only what the access log format uses."""

    # Each atom the format names with its getter, chosen once; None for {header}i/o, {key}e and unknown atoms.
    _getters: tuple[tuple[str, _Getter | None], ...] = ()
    _pieces: list[tuple[str, str | None]] | None = None

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        access_format = cfg.access_log_format or ""
        wanted = dict.fromkeys(_ATOM.findall(access_format))
        self._getters = tuple((key, _ATOM_GETTERS.get(key)) for key in wanted)
        self._pieces = _pieces(access_format)

    def access(self, resp: Any, req: Any, environ: MutableMapping[str, Any], request_time: timedelta) -> None:
        """As gunicorn's, with the line written straight to its stream where that is all logging would do."""
        if not self.access_log_enabled:
            return
        atoms = self.atoms(resp, req, environ, request_time)
        handler = plain_handler(self.access_log, logging.INFO)
        try:
            if handler is not None and self._pieces is not None:
                keep_or_write(handler, self._render(atoms), lambda: self._log_through_logging(atoms))
            else:
                self.access_log.info(self.cfg.access_log_format, self.atoms_wrapper_class(atoms))
        except Exception:
            self.error(traceback.format_exc())

    def _log_through_logging(self, atoms: dict[str, Any]) -> None:
        try:
            self.access_log.info(self.cfg.access_log_format, self.atoms_wrapper_class(atoms))
        except Exception:
            self.error(traceback.format_exc())

    def _render(self, atoms: dict[str, Any]) -> str:
        """``access_log_format % SafeAtoms(atoms)``, from the format's pieces read once."""
        assert self._pieces is not None
        parts = []
        for literal, key in self._pieces:
            parts.append(literal)
            if key is not None:
                value = atoms.get(key.lower() if key.startswith("{") else key, "-")
                parts.append(value.replace('"', '\\"') if isinstance(value, str) else str(value))
        return "".join(parts)

    # The stub's TypedDict leaves out the {header}i/{header}o/{key}e atoms gunicorn's own atoms() has too.
    def atoms(  # type: ignore[override]  # the stub's TypedDict lacks some atoms
        self, resp: Any, req: Any, environ: MutableMapping[str, Any], request_time: timedelta
    ) -> dict[str, Any]:
        atoms: dict[str, Any] = {}
        for key, getter in self._getters:
            if getter is not None:
                atoms[key] = getter(self, resp, environ, request_time)
            elif key.startswith("{"):
                name, _, kind = key[1:].rpartition("}")
                value = self._variable(kind, name.lower(), resp, req, environ)
                if value is not None:
                    atoms[key.lower()] = value
        return atoms

    @staticmethod
    def _variable(kind: str, name: str, resp: Any, req: Any, environ: MutableMapping[str, Any]) -> Any:
        if kind == "i":
            headers = req.headers if hasattr(req, "headers") else req
            pairs = headers.items() if hasattr(headers, "items") else headers
        elif kind == "o":
            headers = resp.headers
            pairs = headers.items() if hasattr(headers, "items") else headers
        elif kind == "e":
            pairs = environ.items()
        else:
            return None
        found = None
        for key, value in pairs:
            if key.lower() == name:
                found = value  # gunicorn's dict keeps the last one
        return found


def _status(resp: Any) -> Any:
    status = resp.status
    return status.split(None, 1)[0] if isinstance(status, str) else status


class _ProcessId:
    """``<pid>`` as the ``p`` atom shows it, asked of the kernel once per process rather than once per line."""

    def __init__(self) -> None:
        self.atom = f"<{os.getpid()}>"
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.atom = f"<{os.getpid()}>"


_process_id = _ProcessId()
_Getter = Callable[[AccessLogger, Any, MutableMapping[str, Any], timedelta], Any]
# Private in gunicorn and not in its stub (u): tests/test_dependency_internals.py checks it is there.
_ATOM_GETTERS: dict[str, _Getter] = {
    "h": lambda log, resp, environ, took: environ.get("REMOTE_ADDR", "-"),
    "l": lambda log, resp, environ, took: "-",
    "u": lambda log, resp, environ, took: log._get_user(environ) or "-",  # type: ignore[attr-defined]  # private, tested
    "t": lambda log, resp, environ, took: log.now(),
    "r": lambda log, resp, environ, took: (
        f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}"
    ),
    "s": lambda log, resp, environ, took: _status(resp),
    "m": lambda log, resp, environ, took: environ.get("REQUEST_METHOD"),
    "U": lambda log, resp, environ, took: environ.get("PATH_INFO"),
    "q": lambda log, resp, environ, took: environ.get("QUERY_STRING"),
    "H": lambda log, resp, environ, took: environ.get("SERVER_PROTOCOL"),
    "b": lambda log, resp, environ, took: getattr(resp, "sent", None) is not None and str(resp.sent) or "-",
    "B": lambda log, resp, environ, took: getattr(resp, "sent", None),
    "f": lambda log, resp, environ, took: environ.get("HTTP_REFERER", "-"),
    "a": lambda log, resp, environ, took: environ.get("HTTP_USER_AGENT", "-"),
    "T": lambda log, resp, environ, took: took.seconds,
    "D": lambda log, resp, environ, took: (took.seconds * 1000000) + took.microseconds,
    "M": lambda log, resp, environ, took: (took.seconds * 1000) + int(took.microseconds / 1000),
    "L": lambda log, resp, environ, took: "%d.%06d" % (took.seconds, took.microseconds),  # noqa: UP031 (gunicorn's)
    "p": lambda log, resp, environ, took: _process_id.atom,
}
