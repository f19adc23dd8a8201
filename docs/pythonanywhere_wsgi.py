"""The WSGI configuration file for PythonAnywhere-style hosts: paste it over the host's own.

On PythonAnywhere: Web tab -> "WSGI configuration file" (/var/www/<you>_pythonanywhere_com_wsgi.py).
Change PROJECT to where you cloned this repository; the settings live in PROJECT/.env. The test
suite runs this very file under uWSGI (tests/deploy/test_uwsgi.py).
"""

from __future__ import annotations

import os
import sys

PROJECT = "/home/yourname/mcp-server"

if PROJECT not in sys.path:
    sys.path.insert(0, PROJECT)
# The app's instance folder and .env are found relative to the working directory.
os.chdir(PROJECT)

from dotenv import load_dotenv  # noqa: E402 (after sys.path)

# Into the process environment, before the app (and prometheus_client) is imported.
load_dotenv(os.path.join(PROJECT, ".env"))

from wsgi import application  # noqa: E402, F401 (the name the host's uWSGI looks for)
