"""Where requests come in: the gunicorn worker that serves this app (``worker_class`` in gunicorn.conf.py).

gunicorn's arbiter, configuration, hooks, signals and HTTP parsing stay gunicorn's;
:mod:`app.serving.worker` replaces only the worker loop, and
:mod:`app.serving.http11` the per-request glue between a client connection and the
WSGI app. Why a worker of our own, and what it measured, is in the README
(Performance).
"""

from __future__ import annotations
