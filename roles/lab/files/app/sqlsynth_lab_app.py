"""Reference app for the sqlsynth lab.

A small stand-in for the SQL Query Synthesizer web app: the same HTTP interface, metric
names, cache key scheme, audit log format and configuration variables as the real service
(see the collection's CONTRIBUTING.md), with a deterministic rule-based "synthesizer"
instead of an LLM, and switchable faults read from a JSON file on every request.

error_burst and latency are held by the running process: faults.json records when each was
armed (``armed_at``, epoch seconds; the file's mtime when absent) and the app applies them only
when armed after its own start, so an app restart clears them. hang and pool_exhaustion follow
the file alone.

Runs on Debian 12's python3 with python3-flask, python3-psycopg, python3-psycopg-pool,
python3-redis and python3-prometheus-client, e.g.
``gunicorn --workers 1 --threads 8 --bind 127.0.0.1:5000 sqlsynth_lab_app:app``.

Configuration (environment):
    QUERY_AGENT_DATABASE_URL           postgresql://... (application_name=sql_synthesizer is added)
    QUERY_AGENT_DB_POOL_SIZE (10), QUERY_AGENT_DB_MAX_OVERFLOW (20)
                                       the pool holds at most their sum
    QUERY_AGENT_DB_POOL_TIMEOUT (5)    seconds to wait for a pool connection (lab addition)
    QUERY_AGENT_DB_POOL_RECYCLE (3600), QUERY_AGENT_DATABASE_TIMEOUT (30, statement timeout)
    QUERY_AGENT_CACHE_BACKEND (memory|redis), QUERY_AGENT_CACHE_TTL (3600),
    QUERY_AGENT_CACHE_MAX_SIZE (1000), QUERY_AGENT_REDIS_HOST/PORT/DB/PASSWORD
    QUERY_AGENT_API_KEY_REQUIRED (false), QUERY_AGENT_API_KEY
    QUERY_AGENT_RATE_LIMIT_PER_MINUTE (60), QUERY_AGENT_MAX_REQUEST_SIZE_MB (1)
    QUERY_AGENT_ENABLE_HSTS (false)    Strict-Transport-Security on every response
    QUERY_AGENT_CSRF_ENABLED (false)   POSTs without an API key need X-CSRF-Token equal to the
                                       csrf_token cookie; every response says X-CSRF-Protection
    QUERY_AGENT_AUDIT_LOG_FILE (/var/log/sql_synthesizer/audit.log)
    SQLSYNTH_LAB_FAULTS_FILE (/opt/sqlsynth-lab/faults.json)
    SQLSYNTH_LAB_OVERRIDES_FILE        KEY=VALUE lines merged over the environment at start
                                       (invalid lines are logged and ignored)
"""

import hmac
import ipaddress
import json
import logging
import os
import re
import select
import threading
import time
import uuid
from collections import OrderedDict, deque
from datetime import date, datetime, timezone
from decimal import Decimal

import psycopg
import redis
from flask import Flask, g, jsonify, request
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, GCCollector, Gauge,
                               Histogram, PlatformCollector, ProcessCollector, generate_latest)
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

import sqlsynth_lab_overrides

LOG = logging.getLogger("sqlsynth_lab_app")
APPLICATION_NAME = "sql_synthesizer"
QUERY_TYPE = "synthesized"
PAGE_SIZE = 10
MAX_QUESTION_LENGTH = 1000
ERROR_TYPES = ("sql_injection_attempt", "query_execution_failed", "schema_discovery_failed", "llm_api_failed")
TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TRUSTED_PROXIES = ("127.0.0.1", "::1")
HSTS_VALUE = "max-age=31536000; includeSubDomains"
# Faults held by the running process (armed_at key in faults.json -> key of the switch).
PROCESS_FAULTS = {"error_burst": "error_burst", "latency": "latency_ms"}


# --------------------------------------------------------------------------- configuration

def _env_bool(env, name, default):
    value = env.get(name)
    return default if value is None or value == "" else value.strip().lower() in ("1", "true", "yes", "on")


def _env_num(env, name, default, kind=int):
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except ValueError:
        LOG.warning("ignoring invalid %s=%r, using %s", name, value, default)
        return default


def load_config(env):
    """Read the service's QUERY_AGENT_* variables (and the lab's own) from ``env``.

    The overrides file named by SQLSYNTH_LAB_OVERRIDES_FILE is merged over ``env`` first.
    """
    overrides_file = env.get(sqlsynth_lab_overrides.PATH_VARIABLE) or ""
    overrides = sqlsynth_lab_overrides.read(overrides_file, log=LOG)
    env = dict(env, **overrides)
    return {
        "database_url": env.get("QUERY_AGENT_DATABASE_URL")
        or env.get("DATABASE_URL") or "postgresql://sql_user@127.0.0.1:5432/sql_synthesizer",
        "pool_size": _env_num(env, "QUERY_AGENT_DB_POOL_SIZE", 10),
        "max_overflow": _env_num(env, "QUERY_AGENT_DB_MAX_OVERFLOW", 20),
        "pool_timeout": _env_num(env, "QUERY_AGENT_DB_POOL_TIMEOUT", 5.0, float),
        "pool_recycle": _env_num(env, "QUERY_AGENT_DB_POOL_RECYCLE", 3600.0, float),
        "statement_timeout": _env_num(env, "QUERY_AGENT_DATABASE_TIMEOUT", 30.0, float),
        "cache_backend": (env.get("QUERY_AGENT_CACHE_BACKEND") or "memory").strip().lower(),
        "cache_ttl": _env_num(env, "QUERY_AGENT_CACHE_TTL", 3600),
        "cache_max_size": _env_num(env, "QUERY_AGENT_CACHE_MAX_SIZE", 1000),
        "redis_host": env.get("QUERY_AGENT_REDIS_HOST") or "localhost",
        "redis_port": _env_num(env, "QUERY_AGENT_REDIS_PORT", 6379),
        "redis_db": _env_num(env, "QUERY_AGENT_REDIS_DB", 0),
        "redis_password": env.get("QUERY_AGENT_REDIS_PASSWORD") or None,
        "api_key_required": _env_bool(env, "QUERY_AGENT_API_KEY_REQUIRED", False),
        "api_key": env.get("QUERY_AGENT_API_KEY") or "",
        "rate_limit": _env_num(env, "QUERY_AGENT_RATE_LIMIT_PER_MINUTE", 60),
        "max_request_mb": _env_num(env, "QUERY_AGENT_MAX_REQUEST_SIZE_MB", 1.0, float),
        "hsts": _env_bool(env, "QUERY_AGENT_ENABLE_HSTS", False),
        "csrf_enabled": _env_bool(env, "QUERY_AGENT_CSRF_ENABLED", False),
        "audit_log_file": env.get("QUERY_AGENT_AUDIT_LOG_FILE") or "/var/log/sql_synthesizer/audit.log",
        "faults_file": env.get("SQLSYNTH_LAB_FAULTS_FILE") or "/opt/sqlsynth-lab/faults.json",
        "overrides_file": overrides_file,
        "overrides": sorted(overrides),
    }


# --------------------------------------------------------------------------- metrics

class Metrics:
    """The real app's metric names, in a private registry with the process/platform/gc collectors."""

    def __init__(self):
        self.registry = reg = CollectorRegistry()
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
        self.queries = Counter("queries_total", "Number of queries executed", ["type"], registry=reg)
        self.errors = Counter("query_errors_total", "Number of query errors", ["error_type"], registry=reg)
        self.duration = Histogram("query_duration_seconds", "Query request latency",
                                  buckets=TIME_BUCKETS, registry=reg)
        self.connections = Counter("database_connections_total", "Database connection checkouts",
                                   ["status"], registry=reg)
        self.db_duration = Histogram("database_query_duration_seconds", "Database statement latency",
                                     buckets=TIME_BUCKETS, registry=reg)
        self.cache_hits = Counter("cache_hits_total", "Number of cache hits", ["cache_type"], registry=reg)
        self.cache_misses = Counter("cache_misses_total", "Number of cache misses", ["cache_type"], registry=reg)
        self.cache_evictions = Counter("cache_evictions_total", "Number of cache evictions", registry=reg)
        self.cache_size = Gauge("cache_size", "Number of entries in the cache", registry=reg)
        self.cache_hit_rate = Gauge("cache_hit_rate", "Cache hit ratio since start", registry=reg)
        self.openai = Counter("openai_requests_total", "Number of OpenAI API requests", ["status"], registry=reg)
        self.openai_duration = Histogram("openai_request_duration_seconds", "OpenAI API request latency",
                                         buckets=TIME_BUCKETS, registry=reg)
        # Create the series up front so that rate() and ratios work from the first scrape.
        self.queries.labels(type=QUERY_TYPE)
        for error_type in ERROR_TYPES:
            self.errors.labels(error_type=error_type)
        for status in ("success", "failed"):
            self.connections.labels(status=status)
            self.openai.labels(status=status)
        for cache_type in ("schema", "query"):
            self.cache_hits.labels(cache_type=cache_type)
            self.cache_misses.labels(cache_type=cache_type)

    def error(self, error_type):
        self.errors.labels(error_type=error_type).inc()


# --------------------------------------------------------------------------- faults

class Faults:
    """The lab's fault switches, re-read when the file's stat changes.

    error_burst and latency count only when armed after ``started`` (this process's start):
    ``armed_at: {fault: epoch seconds}`` in the file, else the file's mtime (with MTIME_SLACK
    for coarse file system clocks).
    """

    DEFAULTS = {"error_burst": False, "latency_ms": 0, "hang": False, "hang_seconds": 120,
                "pool_exhaustion": False}
    MTIME_SLACK = 1.0

    def __init__(self, path, started=None):
        self.path = path
        self.started = time.time() if started is None else started
        self._lock = threading.Lock()
        self._stamp = None
        self._value = dict(self.DEFAULTS)

    def get(self):
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._value = self._read(stamp[0] / 1e9) if stamp else dict(self.DEFAULTS)
                self._stamp = stamp
            return self._value

    def armed_since_start(self, armed_at, mtime):
        """True when a fault armed at ``armed_at`` (or, unknown, by a file written at ``mtime``) is for this process."""
        if isinstance(armed_at, (int, float)) and not isinstance(armed_at, bool):
            return armed_at >= self.started
        return mtime >= self.started - self.MTIME_SLACK

    def _read(self, mtime):
        value = dict(self.DEFAULTS)
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            for key in ("error_burst", "hang", "pool_exhaustion"):
                value[key] = bool(data.get(key, False))
            for key in ("latency_ms", "hang_seconds"):
                value[key] = max(0, int(data.get(key, self.DEFAULTS[key]) or 0))
            armed = data.get("armed_at")
            armed = armed if isinstance(armed, dict) else {}
        except (OSError, ValueError, TypeError) as exc:
            LOG.warning("faults file %s unreadable (%s): no faults active", self.path, exc)
            return dict(self.DEFAULTS)
        for name, key in PROCESS_FAULTS.items():
            if value[key] and not self.armed_since_start(armed.get(name), mtime):
                LOG.warning("fault %s in %s was armed before this process started: not applied "
                            "(switch it on again to re-arm it)", name, self.path)
                value[key] = self.DEFAULTS[key]
        return value


# --------------------------------------------------------------------------- cache

class MemoryCache:
    """LRU cache with per-entry TTL."""

    def __init__(self, max_size, on_evict):
        self.max_size = max(1, max_size)
        self._on_evict = on_evict
        self._data = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return entry[1]

    def setex(self, key, ttl, value):
        with self._lock:
            self._data[key] = (time.monotonic() + ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_size:
                self._data.popitem(last=False)
                self._on_evict()

    def size(self):
        with self._lock:
            return len(self._data)


class Cache:
    """Redis (keys without prefix, SETEX with the TTL) with the memory cache as fallback."""

    RETRY_AFTER = 5.0

    def __init__(self, cfg, metrics):
        self.ttl = cfg["cache_ttl"]
        self.metrics = metrics
        self.memory = MemoryCache(cfg["cache_max_size"], metrics.cache_evictions.inc)
        self.redis = None
        if cfg["cache_backend"] == "redis":
            self.redis = redis.Redis(host=cfg["redis_host"], port=cfg["redis_port"], db=cfg["redis_db"],
                                     password=cfg["redis_password"], socket_timeout=1,
                                     socket_connect_timeout=1, decode_responses=True)
        elif cfg["cache_backend"] != "memory":
            LOG.warning("cache backend %r not supported here, using memory", cfg["cache_backend"])
        self._redis_down_until = 0.0
        self._hits = self._misses = 0
        metrics.cache_size.set_function(self.size)
        metrics.cache_hit_rate.set_function(self.hit_rate)

    def _backend(self):
        if self.redis is not None and time.monotonic() >= self._redis_down_until:
            return self.redis
        return None

    def _redis_failed(self, exc):
        if time.monotonic() >= self._redis_down_until:
            LOG.warning("redis unavailable (%s): falling back to the memory cache", exc)
        self._redis_down_until = time.monotonic() + self.RETRY_AFTER

    def get(self, key, cache_type):
        value, client = None, self._backend()
        try:
            value = client.get(key) if client else self.memory.get(key)
        except redis.RedisError as exc:
            self._redis_failed(exc)
            value = self.memory.get(key)
        if value is None:
            self._misses += 1
            self.metrics.cache_misses.labels(cache_type=cache_type).inc()
        else:
            self._hits += 1
            self.metrics.cache_hits.labels(cache_type=cache_type).inc()
        return value

    def set(self, key, value):
        client = self._backend()
        try:
            if client:
                client.execute_command("SETEX", key, self.ttl, value)  # the real app's command
                return
        except redis.RedisError as exc:
            self._redis_failed(exc)
        self.memory.setex(key, self.ttl, value)

    def ping(self):
        """True when the configured backend answers (always for memory)."""
        if self.redis is None:
            return True
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return False
        self._redis_down_until = 0.0
        return True

    def size(self):
        client = self._backend()
        try:
            return client.dbsize() if client else self.memory.size()
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return self.memory.size()

    def hit_rate(self):
        total = self._hits + self._misses
        return self._hits / total if total else 0.0


# --------------------------------------------------------------------------- database

class DatabaseUnavailable(Exception):
    """No working connection could be obtained from the pool."""


class Database:
    """psycopg connection pool; connections are pinged on checkout and discarded when broken."""

    def __init__(self, cfg, metrics):
        self.metrics = metrics
        self.timeout = cfg["pool_timeout"]
        self.statement_timeout_ms = str(int(cfg["statement_timeout"] * 1000))
        kwargs = {"autocommit": True, "connect_timeout": 2}
        try:
            params = conninfo_to_dict(cfg["database_url"])
        except psycopg.ProgrammingError:
            # libpq's message quotes the URL, password included: do not pass it on
            raise ValueError("QUERY_AGENT_DATABASE_URL is not a valid PostgreSQL URL") from None
        if "application_name" not in params:
            kwargs["application_name"] = APPLICATION_NAME
        self.max_size = max(1, cfg["pool_size"] + cfg["max_overflow"])
        self.pool = ConnectionPool(cfg["database_url"], kwargs=kwargs, min_size=min(2, self.max_size),
                                   max_size=self.max_size, open=False, timeout=self.timeout,
                                   max_lifetime=cfg["pool_recycle"], reconnect_timeout=10,
                                   name=APPLICATION_NAME)
        self.pool.open(wait=False)

    def checkout(self, timeout=None, count=True):
        """A pinged connection from the pool; the caller returns it with ``pool.putconn``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        error = "no connection"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                conn = self.pool.getconn(timeout=remaining)
            except PoolTimeout as exc:
                error = str(exc)
                break
            try:
                conn.execute("SELECT 1")  # pre-ping, as the real app's pool does
            except psycopg.Error as exc:
                error = str(exc).strip()
                self.pool.putconn(conn)  # a broken connection is discarded by the pool
                continue
            if count:
                self.metrics.connections.labels(status="success").inc()
            return conn
        if count:
            self.metrics.connections.labels(status="failed").inc()
        raise DatabaseUnavailable(error)

    def ping(self, timeout):
        try:
            self.pool.putconn(self.checkout(timeout=timeout))
            return True
        except DatabaseUnavailable as exc:
            LOG.warning("database health check failed: %s", exc)
            return False

    def fetch(self, query, params=(), size=PAGE_SIZE):
        """Run ``query`` in a read-only transaction with a statement timeout; first ``size`` rows."""
        conn = self.checkout()
        try:
            started = time.monotonic()
            with conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                conn.execute("SELECT set_config('statement_timeout', %s, true)", (self.statement_timeout_ms,))
                cur = conn.cursor(row_factory=dict_row)
                cur.execute(query, params)
                rows = cur.fetchmany(size) if cur.description else []
            self.metrics.db_duration.observe(time.monotonic() - started)
            return rows
        except psycopg.OperationalError as exc:
            if conn.closed or conn.pgconn.status != psycopg.pq.ConnStatus.OK:
                raise DatabaseUnavailable(str(exc).strip()) from exc
            raise
        finally:
            self.pool.putconn(conn)

    def close(self):
        self.pool.close(timeout=1)


class PoolHolder(threading.Thread):
    """The pool_exhaustion fault: check out every connection and leave it idle in transaction.

    The connections are released when the fault is switched off. Connections terminated
    server-side (pg_terminate_backend) are noticed and handed back to the pool, which
    discards them; the holder does not take replacements until the fault is switched on again.
    """

    def __init__(self, db, faults):
        super().__init__(name="pool-exhaustion-holder", daemon=True)
        self.db, self.faults = db, faults
        self.held = []
        self.taken = 0
        self.armed = False
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.wait(0.5):
            try:
                self.step()
            except Exception:  # keep the holder alive whatever happens
                LOG.exception("pool exhaustion holder failed")

    def step(self):
        on = self.faults.get()["pool_exhaustion"]
        if on and not self.armed:
            self.armed, self.taken = True, 0
            LOG.warning("fault pool_exhaustion on: holding every pool connection")
        elif not on and self.armed:
            self.armed = False
            LOG.warning("fault pool_exhaustion off: releasing %d connections", len(self.held))
            self.release(list(self.held))
        self.release([conn for conn in self.held if self._broken(conn)])
        while self.armed and self.taken < self.db.max_size and not self.stopping.is_set():
            try:
                conn = self.db.checkout(timeout=0.5, count=False)
            except DatabaseUnavailable:
                return
            self.held.append(conn)
            self.taken += 1
            try:
                conn.execute("BEGIN")
                conn.execute("SELECT 1")
            except psycopg.Error as exc:
                LOG.warning("pool exhaustion holder lost a connection: %s", exc)
                self.release([conn])

    @staticmethod
    def _broken(conn):
        """Anything to read on an idle connection means the server ended it."""
        try:
            return conn.closed or bool(select.select([conn.fileno()], [], [], 0)[0])
        except (OSError, ValueError, psycopg.Error):
            return True

    def release(self, conns):
        for conn in conns:
            self.held.remove(conn)
            try:
                if self._broken(conn):
                    conn.close()
                else:
                    conn.execute("ROLLBACK")
            except psycopg.Error:
                conn.close()
            self.db.pool.putconn(conn)

    def stop(self):
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=2)
        self.release(list(self.held))


# --------------------------------------------------------------------------- synthesizer

INJECTION = re.compile(r"""
      '\s*(or|and)\b                           # ' OR ..., ' AND ...
    | \b(or|and)\s+'?(\w+)'?\s*=\s*'?\3\b'?     # OR 1=1, or 'a'='a'
    | \bunion\s+(all\s+)?select\b
    | ;\s*(select|drop|delete|insert|update|alter|truncate|create|grant|copy|exec)\b
    | \b(drop|truncate|alter)\s+(table|database|schema|user|role)\b
    | --|/\*|\*/
    | \b(pg_sleep|benchmark|xp_cmdshell)\b
""", re.IGNORECASE | re.VERBOSE)

RULES = [
    (r"\b(how many|count|number of)\b.*\busers?\b",
     "SELECT count(*) AS user_count FROM users"),
    (r"\b(how many|count|number of)\b.*\borders?\b",
     "SELECT count(*) AS order_count FROM orders"),
    (r"\b(how many|count|number of)\b.*\bproducts?\b",
     "SELECT count(*) AS product_count FROM products"),
    (r"\b(revenue|total sales|sales total)\b",
     "SELECT sum(total) AS revenue FROM orders WHERE status <> 'cancelled'"),
    (r"\b(top|best[- ]?selling)\b.*\bproducts?\b",
     "SELECT p.name, sum(o.quantity) AS units FROM orders AS o JOIN products AS p ON p.id = o.product_id "
     "GROUP BY p.name ORDER BY units DESC, p.name LIMIT 10"),
    (r"\busers?\b.*\b(by|per) country\b",
     "SELECT country, count(*) AS users FROM users GROUP BY country ORDER BY country"),
    (r"\borders?\b",
     "SELECT id, user_id, product_id, quantity, total, status, created_at FROM orders "
     "ORDER BY created_at DESC, id DESC LIMIT 10"),
    (r"\bproducts?\b",
     "SELECT id, name, category, price FROM products ORDER BY id LIMIT 10"),
    (r"\busers?\b",
     "SELECT id, name, email, country, created_at FROM users ORDER BY id LIMIT 10"),
]
RULES = [(re.compile(pattern, re.IGNORECASE), statement) for pattern, statement in RULES]
DEFAULT_SQL = ("SELECT table_name FROM information_schema.tables "
               "WHERE table_schema = 'public' ORDER BY table_name")
TABLES_SQL = ("SELECT table_name FROM information_schema.tables "
              "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name")


def synthesize(question):
    """Deterministic question -> SQL; unknown questions get a harmless catalogue query."""
    for pattern, statement in RULES:
        if pattern.search(question):
            return statement
    return DEFAULT_SQL


def _json_value(value):
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "SQL Query Synthesizer (sqlsynth lab reference app)", "version": "1.0.0"},
    "paths": {
        "/health": {"get": {"summary": "Component health", "responses": {
            "200": {"description": "healthy"}, "503": {"description": "unhealthy"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format"}}}},
        "/api/query": {"post": {
            "summary": "Turn a question into SQL and run it",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["question"],
                "properties": {"question": {"type": "string", "maxLength": MAX_QUESTION_LENGTH}}}}}},
            "responses": {code: {"description": text} for code, text in (
                ("200", "sql, data and question"), ("400", "bad input or injection attempt"),
                ("401", "missing or invalid API key"), ("408", "statement timeout"),
                ("429", "rate limited"), ("500", "internal error"), ("503", "database unavailable"))},
        }},
    },
    "components": {"securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
}


# --------------------------------------------------------------------------- security

class RateLimiter:
    """Sliding one-minute window per client."""

    def __init__(self, per_minute):
        self.per_minute = per_minute
        self._hits = {}
        self._lock = threading.Lock()

    def allow(self, client):
        if self.per_minute <= 0:
            return True
        now = time.monotonic()
        with self._lock:
            if len(self._hits) > 10000:  # forget idle clients
                self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - 60}
            window = self._hits.setdefault(client, deque())
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) >= self.per_minute:
                return False
            window.append(now)
            return True


class AuditLog:
    """Security audit events as JSON lines; the file is opened per write (copytruncate-friendly)."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()

    def write(self, event_type, severity, message, **additional):
        record = {
            "event_type": event_type, "severity": severity, "message": message,
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "client_ip": client_ip(), "user_agent": request.headers.get("User-Agent", ""),
            "trace_id": g.get("trace_id", ""), "request_path": request.path,
            "request_method": request.method, "additional_data": additional,
        }
        line = json.dumps(record, default=str) + "\n"
        with self._lock:
            try:
                os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(line)
            except OSError as exc:
                LOG.error("cannot write audit log %s: %s", self.path, exc)


def client_ip():
    """X-Real-IP / X-Forwarded-For when the request came through a local proxy, else the peer."""
    peer = request.remote_addr or ""
    if peer in TRUSTED_PROXIES:
        for candidate in (request.headers.get("X-Real-IP", ""),
                          request.headers.get("X-Forwarded-For", "").split(",")[0]):
            try:
                return str(ipaddress.ip_address(candidate.strip()))
            except ValueError:
                continue
    return peer


def presented_api_key():
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("X-API-Key") or request.headers.get("X-API-TOKEN") or ""


def csrf_token_valid():
    """Double-submit check for browser-style calls: X-CSRF-Token equals the csrf_token cookie."""
    header = request.headers.get("X-CSRF-Token", "")
    cookie = request.cookies.get("csrf_token", "")
    return bool(header and cookie) and hmac.compare_digest(header.encode(), cookie.encode())


# --------------------------------------------------------------------------- the app

class LabState:
    def __init__(self, cfg):
        self.cfg = cfg
        self.metrics = Metrics()
        self.started = time.time()
        self.faults = Faults(cfg["faults_file"], started=self.started)
        self.cache = Cache(cfg, self.metrics)
        self.db = Database(cfg, self.metrics)
        self.limiter = RateLimiter(cfg["rate_limit"])
        self.audit = AuditLog(cfg["audit_log_file"])
        self.holder = PoolHolder(self.db, self.faults)
        self.holder.start()

    def close(self):
        self.holder.stop()
        self.db.close()


def _error(status, message):
    return jsonify({"error": message}), status


def create_app(environ=None):
    cfg = load_config(os.environ if environ is None else environ)
    if cfg["overrides"]:
        LOG.info("settings from %s: %s", cfg["overrides_file"], ", ".join(cfg["overrides"]))
    state = LabState(cfg)
    metrics, faults, cache, db, audit = state.metrics, state.faults, state.cache, state.db, state.audit
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(cfg["max_request_mb"] * 1024 * 1024)
    app.json.sort_keys = False  # keep the column order of result rows
    app.extensions["sqlsynth_lab"] = state

    def wait_for_faults(active):
        """Sleep for a hang or latency fault; a hang ends early when the fault is switched off."""
        if active["hang"]:
            end = time.monotonic() + active["hang_seconds"]
            while time.monotonic() < end and faults.get()["hang"]:
                time.sleep(min(0.25, max(0.0, end - time.monotonic())))
        if active["latency_ms"]:
            time.sleep(active["latency_ms"] / 1000.0)

    @app.before_request
    def before():
        g.started = time.monotonic()
        trace = request.headers.get("X-Request-ID", "")
        g.trace_id = trace if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", trace) else uuid.uuid4().hex
        active = faults.get()
        if request.path == "/api/query":
            metrics.queries.labels(type=QUERY_TYPE).inc()
        if request.path in ("/health", "/api/query"):
            wait_for_faults(active)
        if (request.content_length or 0) > app.config["MAX_CONTENT_LENGTH"]:
            raise RequestEntityTooLarge()  # Flask 2.2's get_json(silent=True) would hide it
        if active["error_burst"] and request.path != "/metrics":
            if request.path == "/api/query":
                metrics.error("query_execution_failed")
            return _error(500, "injected error burst")
        return None

    @app.after_request
    def after(response):
        response.headers["X-Request-ID"] = g.get("trace_id", "")
        response.headers["X-CSRF-Protection"] = "enabled" if cfg["csrf_enabled"] else "disabled"
        if cfg["hsts"]:
            response.headers["Strict-Transport-Security"] = HSTS_VALUE
        return response

    @app.teardown_request
    def teardown(_exc):
        if request.path == "/api/query" and "started" in g:
            metrics.duration.observe(time.monotonic() - g.started)

    @app.errorhandler(HTTPException)
    def http_error(exc):
        if exc.code == 413:
            audit.write("request_size_exceeded", "medium", "request body too large",
                        max_bytes=app.config["MAX_CONTENT_LENGTH"])
        return _error(exc.code, exc.description)

    @app.errorhandler(Exception)
    def unexpected(exc):
        LOG.exception("unexpected error on %s %s", request.method, request.path)
        audit.write("unexpected_error", "medium", "unexpected error", error_class=type(exc).__name__)
        return _error(500, "internal error")

    @app.get("/health")
    def health():
        components = {"database": db.ping(timeout=min(2.0, db.timeout)), "cache": cache.ping(),
                      "openai_api": True}
        healthy = all(components.values())
        body = {"status": "healthy" if healthy else "unhealthy", "timestamp": time.time(),
                "components": components}
        return jsonify(body), 200 if healthy else 503

    @app.get("/metrics")
    def prometheus_metrics():
        return generate_latest(metrics.registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}

    @app.get("/openapi.json")
    def openapi():
        return jsonify(OPENAPI)

    @app.get("/docs")
    def docs():
        return ('<!doctype html><title>SQL Query Synthesizer API</title>'
                '<p>The API description is at <a href="/openapi.json">/openapi.json</a>.</p>')

    @app.post("/api/query")
    def api_query():
        if not state.limiter.allow(client_ip()):
            audit.write("rate_limit_exceeded", "medium", "rate limit exceeded",
                        limit_per_minute=state.limiter.per_minute)
            return _error(429, "rate limit exceeded")
        if cfg["api_key_required"]:
            key = presented_api_key()
            if not (cfg["api_key"] and key and hmac.compare_digest(key.encode(), cfg["api_key"].encode())):
                audit.write("api_key_auth_failed", "medium",
                            "invalid API key" if key else "missing API key")
                return _error(401, "invalid or missing API key")
        if cfg["csrf_enabled"] and not presented_api_key() and not csrf_token_valid():
            audit.write("csrf_validation_failed", "medium", "CSRF token missing or invalid")
            return _error(403, "CSRF token missing or invalid")
        body = request.get_json(silent=True)
        question = body.get("question") if isinstance(body, dict) else None
        if not isinstance(question, str) or not question.strip():
            return _error(400, "field 'question' (non-empty string) is required")
        question = question.strip()
        if len(question) > MAX_QUESTION_LENGTH:
            return _error(400, f"question longer than {MAX_QUESTION_LENGTH} characters")
        match = INJECTION.search(question)
        if match:
            metrics.error("sql_injection_attempt")
            audit.write("sql_injection_attempt", "high", "SQL injection attempt blocked",
                        pattern=match.group(0), question=question[:200])
            return _error(400, "question rejected: potential SQL injection")

        error_type = "schema_discovery_failed"
        try:
            if cache.get("tables", "schema") is None:
                tables = [row["table_name"] for row in db.fetch(TABLES_SQL, size=1000)]
                cache.set("tables", json.dumps(tables))
            error_type = "query_execution_failed"
            statement = cache.get(question, "query")
            if statement is None:
                statement = synthesize(question)
                cache.set(question, statement)
            data_key = f"{statement}|page=1|page_size={PAGE_SIZE}"
            cached = cache.get(data_key, "query")
            if cached is None:
                paged = sql.SQL("SELECT * FROM ({}) AS page LIMIT %s OFFSET %s").format(sql.SQL(statement))
                rows = db.fetch(paged, (PAGE_SIZE, 0))
                cached = json.dumps(rows, default=_json_value)
                cache.set(data_key, cached)
            data = json.loads(cached)
        except DatabaseUnavailable as exc:
            metrics.error(error_type)
            LOG.warning("database unavailable: %s", exc)
            return _error(503, "database unavailable")
        except psycopg.errors.QueryCanceled:
            metrics.error(error_type)
            return _error(408, "query timed out")
        except psycopg.Error as exc:
            metrics.error(error_type)
            LOG.warning("query failed: %s", exc)
            return _error(500, "query execution failed")
        audit.write("query_execution", "low", "query executed", sql=statement, rows=len(data),
                    duration_ms=round((time.monotonic() - g.started) * 1000, 1))
        return jsonify({"sql": statement, "data": data, "question": question})

    return app


if not logging.getLogger().handlers:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app()
