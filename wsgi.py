"""The WSGI entry point: ``app`` for Flask and gunicorn, ``application`` for uWSGI-style hosts."""

from __future__ import annotations

import sys

from app import create_app
from app.settings import SettingsError

try:
    app = create_app()
except SettingsError as error:
    # One clear line instead of a stack trace. Exit status 4 is gunicorn's
    # "application failed to load", which stops the arbiter instead of
    # restarting the worker forever.
    print(f"configuration error: {error}", file=sys.stderr)
    raise SystemExit(4) from None

application = app
