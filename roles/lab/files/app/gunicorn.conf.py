"""gunicorn settings for the lab's reference app (``gunicorn -c gunicorn.conf.py ...``).

Read at every app (re)start. Threads follow the lab's model of replicas from overrides.env
(SQLSYNTH_LAB_REPLICAS, default 1) times the threads per replica (SQLSYNTH_LAB_THREADS, default 8).
keepalive must exceed the idle time nginx keeps its upstream connections open: with
gunicorn's 2 s default nginx reused connections gunicorn had just closed, and POSTs got 502.
"""

import logging
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import sqlsynth_lab_overrides as _overrides  # noqa: E402  pylint: disable=wrong-import-position

_LOG = logging.getLogger("gunicorn.error")
_ENV = dict(os.environ)
_ENV.setdefault(_overrides.PATH_VARIABLE, _overrides.default_path(_HERE))
_ENV = _overrides.merged(_ENV, log=_LOG)

replicas = _overrides.positive_int(_ENV, "SQLSYNTH_LAB_REPLICAS", 1, log=_LOG)
threads_per_replica = _overrides.positive_int(_ENV, "SQLSYNTH_LAB_THREADS", 8, log=_LOG)

workers = 1
worker_class = "gthread"
threads = threads_per_replica * replicas
keepalive = 75
