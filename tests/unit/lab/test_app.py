"""The lab's reference app, through Flask's test client, with no database reachable."""
import socket
import threading
import time

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

import sqlsynth_lab_app as lab

AUDIT_FIELDS = {"event_type", "severity", "message", "timestamp", "client_ip", "user_agent", "trace_id",
                "request_path", "request_method", "additional_data"}
REAL_METRICS = {
    "queries_total", "query_errors_total", "query_duration_seconds_bucket", "database_connections_total",
    "database_query_duration_seconds_bucket", "cache_hits_total", "cache_misses_total",
    "cache_evictions_total", "cache_size", "cache_hit_rate", "openai_requests_total",
    "openai_request_duration_seconds_bucket", "process_cpu_seconds_total", "python_info",
}


# --------------------------------------------------------------------------- health

def test_health_without_database_is_503_with_database_false(make_app):
    lab_app = make_app()
    resp = lab_app.client.get("/health")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["status"] == "unhealthy"
    assert body["components"] == {"database": False, "cache": True, "openai_api": True}
    assert abs(body["timestamp"] - time.time()) < 60
    assert lab_app.sample("database_connections_total", status="failed") >= 1


def test_detailed_health_is_not_served_and_openapi_is(make_app):
    lab_app = make_app()
    assert lab_app.client.get("/health/detailed").status_code == 404
    doc = lab_app.client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert "post" in doc["paths"]["/api/query"]


def test_database_unavailable_query_is_503(make_app):
    lab_app = make_app()
    resp = lab_app.query("how many users")
    assert resp.status_code == 503
    assert "error" in resp.get_json()
    assert lab_app.sample("query_errors_total", error_type="schema_discovery_failed") == 1
    assert lab_app.sample("queries_total", type="synthesized") == 1


# --------------------------------------------------------------------------- metrics

def test_metrics_parse_and_carry_the_real_names_without_api_key(make_app):
    lab_app = make_app(QUERY_AGENT_API_KEY_REQUIRED="true", QUERY_AGENT_API_KEY="k")
    resp = lab_app.client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    families = list(text_string_to_metric_families(resp.get_data(as_text=True)))
    samples = {s.name: s for f in families for s in f.samples}
    assert REAL_METRICS <= set(samples)
    types = {f.name: f.type for f in families}
    assert types["query_duration_seconds"] == "histogram"
    assert types["cache_size"] == "gauge"
    assert not any(name.startswith(("sql_synthesizer_", "api_requests", "http_requests")) for name in samples)


# --------------------------------------------------------------------------- security

@pytest.mark.parametrize("question", [
    "users' OR 1=1 --",
    "x'; DROP TABLE users; --",
    "1 UNION SELECT password FROM pg_shadow",
    "list users where name = 'a' or 'a'='a'",
    "show orders; delete from orders",
])
def test_injection_attempt_is_refused_audited_and_counted(make_app, question):
    lab_app = make_app()
    resp = lab_app.query(question, **{"User-Agent": "pytest-agent", "X-Real-IP": "203.0.113.9"})
    assert resp.status_code == 400
    assert "injection" in resp.get_json()["error"]
    assert lab_app.sample("query_errors_total", error_type="sql_injection_attempt") == 1
    (event,) = lab_app.audit_events()
    assert AUDIT_FIELDS <= set(event)
    assert event["event_type"] == "sql_injection_attempt"
    assert event["severity"] == "high"
    assert event["client_ip"] == "203.0.113.9"
    assert event["user_agent"] == "pytest-agent"
    assert event["request_path"] == "/api/query" and event["request_method"] == "POST"
    assert event["timestamp"].endswith("+00:00")


@pytest.mark.parametrize("question", ["how many users", "list orders", "what's the revenue?",
                                      "top selling products", "users by country"])
def test_ordinary_questions_are_not_taken_for_injection(question):
    assert lab.INJECTION.search(question) is None


@pytest.mark.parametrize("question, expected", [
    ("How many users are there?", "SELECT count(*) AS user_count FROM users"),
    ("list orders", "FROM orders ORDER BY created_at DESC, id DESC LIMIT 10"),
    ("recent orders", "FROM orders ORDER BY created_at DESC, id DESC LIMIT 10"),
    ("what is the meaning of life", lab.DEFAULT_SQL),
])
def test_synthesizer_is_deterministic(question, expected):
    assert expected in lab.synthesize(question)


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}])
def test_missing_or_wrong_api_key_is_401_and_audited(make_app, headers):
    lab_app = make_app(QUERY_AGENT_API_KEY_REQUIRED="true", QUERY_AGENT_API_KEY="s3cret")
    resp = lab_app.query("how many users", **headers)
    assert resp.status_code == 401
    assert [e["event_type"] for e in lab_app.audit_events()] == ["api_key_auth_failed"]
    assert "s3cret" not in lab_app.audit_file.read_text()


@pytest.mark.parametrize("headers", [{"X-API-Key": "s3cret"}, {"Authorization": "Bearer s3cret"},
                                     {"X-API-TOKEN": "s3cret"}])
def test_valid_api_key_answers_with_sql_data_and_cache_keys(make_app, fake_db, headers):
    lab_app = make_app(QUERY_AGENT_API_KEY_REQUIRED="true", QUERY_AGENT_API_KEY="s3cret")
    calls = fake_db(lab_app)
    resp = lab_app.query("how many users", **headers)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body == {"sql": "SELECT count(*) AS user_count FROM users", "data": [{"user_count": 200}],
                    "question": "how many users"}
    # the generated statement is paged with bound parameters, never with spliced values
    assert calls[-1][1] == (lab.PAGE_SIZE, 0)
    memory = lab_app.state.cache.memory
    assert memory.get("how many users") == body["sql"]
    assert memory.get(f"{body['sql']}|page=1|page_size={lab.PAGE_SIZE}") == '[{"user_count": 200}]'
    assert memory.get("tables") == '["orders", "products", "users"]'
    assert [e["event_type"] for e in lab_app.audit_events()] == ["query_execution"]
    # a second identical question is answered from the cache
    assert lab_app.query("how many users", **headers).status_code == 200
    assert len(calls) == 2
    assert lab_app.sample("cache_hits_total", cache_type="query") == 2
    assert lab_app.sample("queries_total", type="synthesized") == 2
    assert lab_app.sample("query_duration_seconds_count") == 2


def test_rate_limit_per_client_is_429_and_audited(make_app):
    lab_app = make_app(QUERY_AGENT_RATE_LIMIT_PER_MINUTE=3)
    codes = [lab_app.query("how many users", **{"X-Forwarded-For": "198.51.100.7, 10.0.0.1"}).status_code
             for _attempt in range(4)]
    assert codes[:3] == [503, 503, 503] and codes[3] == 429
    assert lab_app.query("how many users", **{"X-Real-IP": "198.51.100.8"}).status_code == 503
    limited = [e for e in lab_app.audit_events() if e["event_type"] == "rate_limit_exceeded"]
    assert len(limited) == 1 and limited[0]["client_ip"] == "198.51.100.7"


def test_bad_input_is_400(make_app):
    lab_app = make_app()
    assert lab_app.client.post("/api/query", json={"q": "x"}).status_code == 400
    assert lab_app.client.post("/api/query", data="not json").status_code == 400
    assert lab_app.query("x" * (lab.MAX_QUESTION_LENGTH + 1)).status_code == 400


# --------------------------------------------------------------------------- faults

def test_error_burst_fails_everything_but_metrics_until_cleared(make_app):
    lab_app = make_app()
    lab_app.faults(error_burst=True)
    assert lab_app.client.get("/health").status_code == 500
    resp = lab_app.query("how many users")
    assert resp.status_code == 500 and resp.get_json() == {"error": "injected error burst"}
    assert lab_app.client.get("/metrics").status_code == 200
    assert lab_app.sample("query_errors_total", error_type="query_execution_failed") == 1
    assert lab_app.sample("queries_total", type="synthesized") == 1
    lab_app.faults(error_burst=False)
    assert lab_app.client.get("/health").status_code == 503  # back to the real answer (no database)


def test_latency_is_added_to_health_and_queries(make_app):
    lab_app = make_app()
    lab_app.faults(latency_ms=300)
    started = time.monotonic()
    lab_app.client.get("/health")
    assert time.monotonic() - started >= 0.3
    lab_app.query("how many users")
    assert lab_app.sample("query_duration_seconds_sum") >= 0.3
    started = time.monotonic()
    lab_app.client.get("/metrics")
    assert time.monotonic() - started < 0.3


def test_hang_blocks_for_hang_seconds_and_ends_when_switched_off(make_app):
    lab_app = make_app()
    lab_app.faults(hang=True, hang_seconds=1)
    started = time.monotonic()
    lab_app.client.get("/health")
    assert time.monotonic() - started >= 1.0
    lab_app.faults(hang=True, hang_seconds=60)
    threading.Timer(0.5, lab_app.faults).start()  # switch every fault off
    started = time.monotonic()
    lab_app.client.get("/health")
    assert time.monotonic() - started < 10


def test_unreadable_faults_file_means_no_faults(make_app):
    lab_app = make_app()
    lab_app.faults_file.write_text("{not json")
    assert lab_app.client.get("/health").status_code == 503
    assert lab_app.state.faults.get() == lab.Faults.DEFAULTS


class FakeConn:
    """A pooled connection stand-in with a real socket, so a server-side close is observable."""

    def __init__(self):
        self.sock, self.peer = socket.socketpair()
        self.statements = []
        self.closed = False

    def fileno(self):
        return self.sock.fileno()

    def execute(self, statement):
        self.statements.append(statement)

    def close(self):
        self.closed = True
        self.sock.close()


class FakePool:
    def __init__(self):
        self.returned = []

    def putconn(self, conn):
        self.returned.append(conn)


class FakeDatabase:
    max_size = 3

    def __init__(self):
        self.pool = FakePool()
        self.handed_out = []

    def checkout(self, timeout=None, count=True):
        if len(self.handed_out) - len(self.pool.returned) >= self.max_size:
            raise lab.DatabaseUnavailable("pool exhausted")
        conn = FakeConn()
        self.handed_out.append(conn)
        return conn


def test_pool_exhaustion_holds_every_connection_idle_in_transaction(tmp_path):
    faults = lab.Faults(str(tmp_path / "faults.json"))
    db = FakeDatabase()
    holder = lab.PoolHolder(db, faults)
    (tmp_path / "faults.json").write_text('{"pool_exhaustion": true}')
    holder.step()
    assert len(holder.held) == db.max_size
    assert all(c.statements == ["BEGIN", "SELECT 1"] for c in holder.held)
    # pg_terminate_backend on one session: the holder gives it back and takes no replacement
    victim = holder.held[0]
    victim.peer.close()
    holder.step()
    assert victim.closed and db.pool.returned == [victim]
    assert len(holder.held) == db.max_size - 1 and len(db.handed_out) == db.max_size
    # switching the fault off rolls back and returns the rest
    (tmp_path / "faults.json").write_text('{"pool_exhaustion": false}')
    holder.step()
    assert holder.held == [] and len(db.pool.returned) == db.max_size
    assert all(c.statements[-1] == "ROLLBACK" for c in db.pool.returned[1:])


def test_pool_exhaustion_fault_is_picked_up_by_the_running_app(make_app):
    lab_app = make_app()
    lab_app.faults(pool_exhaustion=True)
    deadline = time.monotonic() + 5
    while not lab_app.state.holder.armed and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lab_app.state.holder.armed
    lab_app.faults(pool_exhaustion=False)
    deadline = time.monotonic() + 5
    while lab_app.state.holder.armed and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not lab_app.state.holder.armed


# --------------------------------------------------------------------------- cache

def test_memory_cache_evicts_least_recently_used_and_expires(make_app):
    lab_app = make_app(QUERY_AGENT_CACHE_MAX_SIZE=2)
    cache = lab_app.state.cache
    for key in ("a", "b", "c"):
        cache.set(key, key.upper())
    assert cache.get("a", "query") is None and cache.get("c", "query") == "C"
    assert lab_app.sample("cache_evictions_total") == 1
    assert lab_app.sample("cache_size") == 2
    assert lab_app.sample("cache_hit_rate") == 0.5
    cache.memory.setex("short", 0.05, "x")
    time.sleep(0.1)
    assert cache.memory.get("short") is None


def test_redis_cache_uses_the_real_key_scheme_and_falls_back(make_app, fake_db, redis_server):
    lab_app = make_app(QUERY_AGENT_CACHE_BACKEND="redis", QUERY_AGENT_REDIS_HOST="127.0.0.1",
                       QUERY_AGENT_REDIS_PORT=redis_server["port"],
                       QUERY_AGENT_REDIS_PASSWORD=redis_server["password"], QUERY_AGENT_CACHE_TTL=600)
    fake_db(lab_app)
    assert lab_app.state.cache.ping()
    resp = lab_app.query("list orders")
    assert resp.status_code == 200
    sql_text = resp.get_json()["sql"]
    client = redis.Redis(port=redis_server["port"], password=redis_server["password"], decode_responses=True)
    assert set(client.keys("*")) == {"tables", "list orders", f"{sql_text}|page=1|page_size={lab.PAGE_SIZE}"}
    assert client.get("list orders") == sql_text
    assert 0 < client.ttl("tables") <= 600
    redis_server["proc"].terminate()
    redis_server["proc"].wait(timeout=10)
    health = lab_app.client.get("/health").get_json()
    assert health["components"]["cache"] is False
    assert lab_app.query("how many users").status_code == 200  # served through the memory fallback
    assert lab_app.state.cache.memory.get("how many users") == "SELECT count(*) AS user_count FROM users"


def test_oversized_request_is_413_and_audited(make_app):
    lab_app = make_app(QUERY_AGENT_MAX_REQUEST_SIZE_MB="0.001")
    resp = lab_app.query("how many users " * 100)
    assert resp.status_code == 413
    assert [e["event_type"] for e in lab_app.audit_events()] == ["request_size_exceeded"]


def test_invalid_database_url_fails_without_echoing_the_password():
    with pytest.raises(ValueError) as err:
        lab.create_app({"QUERY_AGENT_DATABASE_URL": "host=x password=hunter2 bogus"})
    assert "hunter2" not in str(err.value)
