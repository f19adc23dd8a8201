"""gunicorn entry point for the conformance fixture: ``tests.conformance.wsgi_fixture:app``.

The product's own factory and configuration (the environment, validated by
Settings) with the fixture's primitives in place of the example tools.
"""

from __future__ import annotations

import sys

from app import create_app
from app.settings import SettingsError
from tests.conformance.fixture import register_fixture

try:
    app = create_app(register_tools=register_fixture)
except SettingsError as error:
    print(f"configuration error: {error}", file=sys.stderr)
    raise SystemExit(4) from None
