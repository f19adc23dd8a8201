"""gunicorn's logger, with an access log built from only the atoms its format names.

``logger_class`` in gunicorn.conf.py. gunicorn's ``Logger.atoms()`` computes every
atom it knows for every request, whatever ``access_log_format`` uses: a formatted
timestamp, basic-auth parsing, and one dict entry per request header, per
response header and per environ key, about 20 microseconds a request with the
shipped format, which names eight. This subclass reads the format once and
computes those it names, with gunicorn's own definitions: a plain format is
compiled into a template (:class:`CompiledFormat`) and its line written through
:mod:`app.log_lines` when that is all logging would do; any other format or set-up
gets gunicorn's own path. The lines, handlers, files, syslog and every other log
are gunicorn's.
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

from app.log_lines import line_writer

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
    # The format compiled for writing lines straight to the stream, if it is plain ``%(atom)s`` pieces.
    _compiled: CompiledFormat | None = None

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        access_format = cfg.access_log_format or ""
        wanted = dict.fromkeys(_ATOM.findall(access_format))
        self._getters = tuple((key, _ATOM_GETTERS.get(key)) for key in wanted)
        pieces = _pieces(access_format)
        self._compiled = CompiledFormat(pieces) if pieces is not None else None

    def access(self, resp: Any, req: Any, environ: MutableMapping[str, Any], request_time: timedelta) -> None:
        """As gunicorn's, with the line written straight to its stream where that is all logging would do."""
        if not self.access_log_enabled:
            return
        compiled = self._compiled
        access_log = self.access_log
        try:
            add = line_writer(access_log, logging.INFO) if compiled is not None else None
            if add is not None:
                assert compiled is not None
                add(compiled.line(self, resp, req, environ, request_time))
            else:
                atoms = self.atoms(resp, req, environ, request_time)
                access_log.info(self.cfg.access_log_format, self.atoms_wrapper_class(atoms))
        except Exception:
            self.error(traceback.format_exc())

    # The stub's TypedDict leaves out the {header}i/{header}o/{key}e atoms gunicorn's own atoms() has too.
    def atoms(  # type: ignore[override]  # the stub's TypedDict lacks some atoms
        self, resp: Any, req: Any, environ: MutableMapping[str, Any], request_time: timedelta
    ) -> dict[str, Any]:
        atoms: dict[str, Any] = {}
        for key, getter in self._getters:
            if getter is not None:
                atoms[key] = getter(self, resp, req, environ, request_time)
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
_Getter = Callable[[AccessLogger, Any, Any, MutableMapping[str, Any], timedelta], Any]
# The atoms that are one environ value each, with gunicorn's default for a missing key.
_ENVIRON_ATOMS: dict[str, tuple[str, str | None]] = {
    "h": ("REMOTE_ADDR", "-"),
    "m": ("REQUEST_METHOD", None),
    "U": ("PATH_INFO", None),
    "q": ("QUERY_STRING", None),
    "H": ("SERVER_PROTOCOL", None),
    "f": ("HTTP_REFERER", "-"),
    "a": ("HTTP_USER_AGENT", "-"),
}


def _from_environ(key: str, default: str | None) -> _Getter:
    return lambda log, resp, req, environ, took: environ.get(key, default)


# Private in gunicorn and not in its stub (u): tests/test_dependency_internals.py checks it is there.
_ATOM_GETTERS: dict[str, _Getter] = {
    "l": lambda log, resp, req, environ, took: "-",
    "u": lambda log, resp, req, environ, took: log._get_user(environ) or "-",  # type: ignore[attr-defined]  # private, tested
    "t": lambda log, resp, req, environ, took: log.now(),
    "r": lambda log, resp, req, environ, took: (
        f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}"
    ),
    "s": lambda log, resp, req, environ, took: _status(resp),
    "b": lambda log, resp, req, environ, took: getattr(resp, "sent", None) is not None and str(resp.sent) or "-",
    "B": lambda log, resp, req, environ, took: getattr(resp, "sent", None),
    "T": lambda log, resp, req, environ, took: took.seconds,
    "D": lambda log, resp, req, environ, took: (took.seconds * 1000000) + took.microseconds,
    "M": lambda log, resp, req, environ, took: (took.seconds * 1000) + int(took.microseconds / 1000),
    "L": lambda log, resp, req, environ, took: "%d.%06d" % (took.seconds, took.microseconds),  # noqa: UP031 (gunicorn's)
    "p": lambda log, resp, req, environ, took: _process_id.atom,
    **{atom: _from_environ(key, default) for atom, (key, default) in _ENVIRON_ATOMS.items()},
}


class CompiledFormat:
    """An access log format of plain ``%(atom)s`` pieces, turned once into a ``str.format`` template.

    The line is ``access_format % SafeAtoms(atoms)``, built for every request: the
    atoms read from the environ are one ``map`` of ``environ.get`` over their keys,
    the others one call of their getter each, and the template numbers them so
    their order in the line does not matter. SafeAtoms' quoting (``"`` becomes
    ``\\"`` in string atoms) is needed only when a value holds a quote, which the
    finished line tells by holding more quotes than the format's own text.
    """

    def __init__(self, pieces: list[tuple[str, str | None]]) -> None:
        keys: list[str] = []
        defaults: list[str | None] = []
        getters: list[_Getter] = []
        numbered: list[tuple[str, bool, int]] = []  # each piece's atom: from the environ or not, its index there
        for _, key in pieces:
            if key is None:
                continue
            if key in _ENVIRON_ATOMS:
                environ_key, default = _ENVIRON_ATOMS[key]
                numbered.append((key, True, len(keys)))
                keys.append(environ_key)
                defaults.append(default)
            else:
                numbered.append((key, False, len(getters)))
                getters.append(_getter(key))
        template = []
        atoms = iter(numbered)
        for literal, key in pieces:
            template.append(literal.replace("{", "{{").replace("}", "}}"))
            if key is not None:
                _, from_environ, index = next(atoms)
                template.append("{%d}" % (index if from_environ else len(keys) + index))  # noqa: UP031
        self._template = "".join(template)
        self._keys = tuple(keys)
        self._defaults = tuple(defaults)
        self._getters = tuple(getters)
        self._own_quotes = sum(literal.count('"') for literal, _ in pieces)

    def line(self, log: AccessLogger, resp: Any, req: Any, environ: MutableMapping[str, Any], took: timedelta) -> str:
        values = [
            *map(environ.get, self._keys, self._defaults),
            *[g(log, resp, req, environ, took) for g in self._getters],
        ]
        line = self._template.format(*values)
        if line.count('"') != self._own_quotes:
            line = self._template.format(*[_quoted(value) for value in values])
        return line


def _quoted(value: Any) -> Any:
    return value.replace('"', '\\"') if isinstance(value, str) else value


def _getter(key: str) -> _Getter:
    """The getter of one atom that is not a plain environ value; what SafeAtoms shows for a missing one is "-"."""
    getter = _ATOM_GETTERS.get(key)
    if getter is not None:
        return getter
    if key.startswith("{"):
        name, _, kind = key[1:].rpartition("}")
        name = name.lower()

        def variable(log: AccessLogger, resp: Any, req: Any, environ: MutableMapping[str, Any], took: timedelta) -> Any:
            value = log._variable(kind, name, resp, req, environ)
            return "-" if value is None else value

        return variable
    return lambda log, resp, req, environ, took: "-"
