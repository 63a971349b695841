"""http_probe_info against real loopback HTTP and HTTPS servers started by the tests.

TLS: a throwaway CA signs a good certificate (sqlsynth.lab, 30 days), an expired one and
one for the wrong name; each is served by its own https server on 127.0.0.1, port 0.
"""
import contextlib
import datetime
import ipaddress
import json
import os
import ssl
import sys
import threading
import time

import pytest
from ansible.module_utils.testing import patch_module_args
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.sqlsynth.runbooks.plugins.modules import http_probe_info

sys.path.insert(0, os.path.dirname(__file__))
from http_fixture import FakeHandler, serve  # noqa: E402  pylint: disable=wrong-import-position

API_KEY = "s3cret-key-for-tests"
HEALTHY = {"status": "healthy", "timestamp": 1, "components": {"database": True, "cache": True, "openai_api": True}}
UNHEALTHY = {"status": "unhealthy", "timestamp": 1, "components": {"database": False, "cache": True, "openai_api": True}}
EXPECT_HEALTHY = {"status": "healthy", "components.*": True}
RELEASE = threading.Event()  # lets hanging handlers go at teardown


class Handler(FakeHandler):
    def do_GET(self):
        if self.path == "/health":
            self.send(200, HEALTHY)
        elif self.path == "/unhealthy":
            self.send(503, UNHEALTHY)
        elif self.path == "/hang":
            RELEASE.wait(20)
            self.send(200, HEALTHY)
        elif self.path == "/slow":
            time.sleep(0.3)
            self.send(200, HEALTHY)
        elif self.path == "/text":
            self.send(200, "all good\n", "text/plain")
        elif self.path == "/hardened":
            self.send(200, HEALTHY, headers={"Strict-Transport-Security": "max-age=31536000; includeSubDomains",
                                             "X-CSRF-Protection": "enabled"})
        elif self.path == "/peer":
            self.send(200, {"client": self.client_address[0]})
        elif self.path == "/denied-for-66":  # what nginx does for a client on its blocklist
            if self.client_address[0] == "127.0.0.66":
                self.send(403, "<html>403 Forbidden</html>", "text/html")
            else:
                self.send(200, HEALTHY)
        elif self.path == "/headers":  # names only: values may be secrets
            self.send(200, {"host": self.headers.get("Host"), "names": sorted(self.headers.keys())})
        else:
            self.send(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
        if self.headers.get("X-API-Key") != API_KEY:
            self.send(401, {"error": "invalid or missing API key"})
        else:
            self.send(200, {"question": body["question"], "sql": "SELECT count(*) FROM users", "data": [[3]],
                            "content_type": self.headers.get("Content-Type")})


serving = contextlib.contextmanager(serve)


@pytest.fixture(scope="module")
def http_url():
    with serving(Handler) as server:
        yield server.url
        RELEASE.set()


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer, key, signer, not_before, not_after, sans=None, ca=False):
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """CA file and https base URLs for the good, expired and wrong-name certificates."""
    tmp = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("sqlsynth test CA", "sqlsynth test CA", ca_key, ca_key, now - day, now + 365 * day, ca=True)
    (tmp / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    lab_names = [x509.DNSName("sqlsynth.lab"), x509.DNSName("localhost"),
                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    specs = {
        "good": (now - day, now + 30 * day + datetime.timedelta(hours=1), lab_names),
        "expired": (now - 40 * day, now - 2 * day - datetime.timedelta(hours=1), lab_names),
        "wrong_name": (now - day, now + 30 * day, [x509.DNSName("other.example")]),
    }
    urls, servers = {"ca": str(tmp / "ca.crt")}, contextlib.ExitStack()
    for kind, (start, end, sans) in specs.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(sans[0].value, "sqlsynth test CA", key, ca_key, start, end, sans)
        (tmp / (kind + ".pem")).write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tmp / (kind + ".pem")))
        urls[kind] = servers.enter_context(serving(Handler, context)).url
    with servers:
        yield urls


def run(capsys, **args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            http_probe_info.main()
    return json.loads(capsys.readouterr().out)


def by_name(result):
    return {p["name"]: p for p in result["probes"]}


def test_json_expectations_and_503_in_target_order(capsys, http_url):
    result = run(capsys, targets=[
        {"name": "bad", "url": http_url + "/unhealthy", "json_expect": EXPECT_HEALTHY},
        {"name": "good", "url": http_url + "/health", "json_expect": EXPECT_HEALTHY},
        {"name": "tolerated", "url": http_url + "/unhealthy", "status": [200, 503],
         "json_expect": {"status": "unhealthy", "components.database": False}},
    ])
    assert [p["name"] for p in result["probes"]] == ["bad", "good", "tolerated"]
    bad, good, tolerated = result["probes"]
    assert bad["ok"] is False and bad["status"] == 503
    assert bad["failures"] == ["status 503 not in [200]", "status is \"unhealthy\", expected \"healthy\"",
                               "components.database is false, expected true"]
    assert bad["json"] == UNHEALTHY
    assert good["ok"] is True and good["failures"] == [] and good["json"]["components"]["cache"] is True
    assert tolerated["ok"] is True
    assert result["summary"] == {"total": 3, "ok": 2, "failed": 1}
    assert result["ok"] is False and result["changed"] is False
    assert all(p["cert"] is None for p in result["probes"])


def test_hanging_endpoint_fails_alone_after_the_timeout(capsys, http_url):
    result = by_name(run(capsys, timeout=0.5, targets=[
        {"name": "hang", "url": http_url + "/hang"}, {"name": "health", "url": http_url + "/health"}]))
    assert result["hang"]["failures"] == ["timed out after 0.5 s"]
    assert result["hang"]["status"] is None and result["hang"]["ok"] is False
    assert result["health"]["ok"] is True


def test_refused_connection_and_non_json_body_are_probe_failures(capsys, http_url):
    result = by_name(run(capsys, targets=[
        {"name": "closed", "url": "http://127.0.0.1:1/health"},
        {"name": "text", "url": http_url + "/text", "json_expect": {"status": "healthy"}},
    ]))
    assert result["closed"]["failures"] == ["connection refused (127.0.0.1:1)"]
    assert result["text"]["status"] == 200 and result["text"]["json"] is None
    assert result["text"]["failures"] == ["body is not JSON, cannot check status"]


def test_latency_budget(capsys, http_url):
    result = by_name(run(capsys, targets=[{"name": "slow", "url": http_url + "/slow", "latency_budget_ms": 50},
                                          {"name": "roomy", "url": http_url + "/slow", "latency_budget_ms": 60000}]))
    assert result["slow"]["ok"] is False
    assert "over the latency budget of 50 ms" in result["slow"]["failures"][0]
    assert result["roomy"]["ok"] is True


def test_post_sends_json_and_the_api_key_only_where_asked(capsys, http_url):
    body = {"question": "how many users are there"}
    result = run(capsys, api_key=API_KEY, targets=[
        {"name": "with_key", "url": http_url + "/api/query", "method": "POST", "body": body, "use_api_key": True},
        {"name": "without_key", "url": http_url + "/api/query", "method": "POST", "body": body},
    ])
    probes = by_name(result)
    assert probes["with_key"]["ok"] is True
    assert probes["with_key"]["json"]["question"] == body["question"]
    assert probes["with_key"]["json"]["content_type"] == "application/json"
    assert probes["without_key"]["failures"] == ["status 401 not in [200]"]
    assert API_KEY not in json.dumps(result)


def test_custom_api_key_header_is_used(capsys, http_url):
    result = run(capsys, api_key=API_KEY, api_key_header="X-API-TOKEN", targets=[
        {"name": "key", "url": http_url + "/headers", "use_api_key": True},
        {"name": "no_key", "url": http_url + "/headers"}])
    probes = by_name(result)
    assert "X-API-TOKEN" in probes["key"]["json"]["names"] and "X-API-Key" not in probes["key"]["json"]["names"]
    assert "X-API-TOKEN" not in probes["no_key"]["json"]["names"]


def test_trusted_certificate_by_server_name(capsys, tls):
    port = tls["good"].rsplit(":", 1)[1]
    result = run(capsys, ca_path=tls["ca"], server_name="sqlsynth.lab",
                 targets=[{"url": tls["good"] + "/headers", "json_expect": {"host": "sqlsynth.lab:" + port}}])
    probe = result["probes"][0]
    assert probe["ok"] is True, probe["failures"]
    cert = probe["cert"]
    assert cert["subject_cn"] == "sqlsynth.lab" and cert["issuer_cn"] == "sqlsynth test CA"
    assert cert["sans"] == ["sqlsynth.lab", "localhost", "127.0.0.1"]
    assert cert["days_left"] == 30 and cert["expired"] is False


def test_min_cert_days(capsys, tls):
    result = run(capsys, ca_path=tls["ca"], server_name="sqlsynth.lab", min_cert_days=60,
                 targets=[{"url": tls["good"] + "/health"}])
    failures = result["probes"][0]["failures"]
    assert len(failures) == 1 and failures[0].startswith("certificate expires in 30 days")
    assert "min_cert_days 60" in failures[0]


def test_expired_certificate_is_reported_with_its_details(capsys, tls):
    result = run(capsys, ca_path=tls["ca"], server_name="sqlsynth.lab", targets=[{"url": tls["expired"] + "/health"}])
    probe = result["probes"][0]
    assert probe["status"] is None and probe["ok"] is False
    assert len(probe["failures"]) == 1 and probe["failures"][0].startswith("certificate expired 2 days ago")
    assert probe["cert"]["subject_cn"] == "sqlsynth.lab" and probe["cert"]["days_left"] == -2


def test_wrong_name_certificate(capsys, tls):
    result = run(capsys, ca_path=tls["ca"], server_name="sqlsynth.lab", targets=[{"url": tls["wrong_name"] + "/"}])
    probe = result["probes"][0]
    assert probe["failures"] == ["certificate name mismatch: sqlsynth.lab is not in ['other.example']"]
    assert probe["cert"]["sans"] == ["other.example"]


def test_unknown_ca(capsys, tls):
    result = run(capsys, server_name="sqlsynth.lab", targets=[{"url": tls["good"] + "/health"}])
    probe = result["probes"][0]
    assert probe["failures"][0].startswith("certificate not trusted: unknown CA (issuer CN=sqlsynth test CA")
    assert probe["cert"]["issuer_cn"] == "sqlsynth test CA"


def test_without_verification_names_pass_but_expiry_still_fails(capsys, tls):
    result = by_name(run(capsys, validate_certs=False, server_name="sqlsynth.lab", targets=[
        {"name": "wrong_name", "url": tls["wrong_name"] + "/health"},
        {"name": "expired", "url": tls["expired"] + "/health"}]))
    assert result["wrong_name"]["ok"] is True and result["wrong_name"]["cert"]["subject_cn"] == "other.example"
    assert result["expired"]["status"] == 200
    assert result["expired"]["failures"][0].startswith("certificate expired 2 days ago")


def test_check_mode_probes_the_same(capsys, http_url):
    result = run(capsys, _ansible_check_mode=True, targets=[{"url": http_url + "/health"}])
    assert result["changed"] is False and result["probes"][0]["ok"] is True


def test_header_expectations(capsys, http_url):
    result = by_name(run(capsys, targets=[
        {"name": "hardened", "url": http_url + "/hardened",
         "header_expect": {"strict-transport-security": "max-age=", "X-CSRF-Protection": "enabled"}},
        {"name": "plain", "url": http_url + "/health",
         "header_expect": {"Strict-Transport-Security": "", "Content-Type": "text/html"}},
    ]))
    assert result["hardened"]["ok"] is True
    assert result["plain"]["failures"] == ["header Content-Type does not contain 'text/html'",
                                           "header Strict-Transport-Security is missing"]


def test_source_address_is_the_client_address_the_server_sees(capsys, http_url):
    result = by_name(run(capsys, targets=[
        {"name": "from_66", "url": http_url + "/peer", "source_address": "127.0.0.66"},
        {"name": "default", "url": http_url + "/peer"},
    ]))
    assert result["from_66"]["json"] == {"client": "127.0.0.66"} and result["from_66"]["source_address"] == "127.0.0.66"
    assert result["default"]["json"] == {"client": "127.0.0.1"} and "source_address" not in result["default"]


def test_blocked_source_gets_403_while_localhost_gets_200(capsys, http_url):
    result = by_name(run(capsys, targets=[
        {"name": "blocked", "url": http_url + "/denied-for-66", "source_address": "127.0.0.66", "status": [403]},
        {"name": "blocked_expecting_200", "url": http_url + "/denied-for-66", "source_address": "127.0.0.66"},
        {"name": "local", "url": http_url + "/denied-for-66", "source_address": "127.0.0.1"},
    ]))
    assert result["blocked"]["ok"] is True and result["blocked"]["status"] == 403
    assert result["blocked_expecting_200"]["failures"] == ["status 403 not in [200]"]
    assert result["local"]["ok"] is True and result["local"]["status"] == 200


def test_source_address_the_host_does_not_have_is_a_probe_failure(capsys, http_url):
    result = by_name(run(capsys, targets=[
        {"name": "foreign", "url": http_url + "/peer", "source_address": "192.0.2.10"},
        {"name": "fine", "url": http_url + "/peer"},
    ]))
    assert result["foreign"]["ok"] is False and result["foreign"]["status"] is None
    assert result["foreign"]["failures"] == ["cannot bind source address 192.0.2.10: Cannot assign requested address"]
    assert result["fine"]["ok"] is True


def test_source_address_with_https_and_certificate_failure(capsys, tls):
    result = run(capsys, server_name="sqlsynth.lab", targets=[{"url": tls["good"] + "/health", "source_address": "127.0.0.66"}])
    probe = result["probes"][0]
    assert probe["failures"][0].startswith("certificate not trusted: unknown CA")
    assert probe["cert"]["subject_cn"] == "sqlsynth.lab"


@pytest.mark.parametrize("args, message", [
    ({"targets": [{"url": "ftp://example.org/"}]}, "targets[0]: url 'ftp://example.org/' must start with http"),
    ({"targets": [{"name": "p", "url": "http://127.0.0.1:99999/"}]}, "targets[0] (p): url"),
    ({"targets": [{"url": "http://127.0.0.1/", "use_api_key": True}]}, "use_api_key is true but api_key is not set"),
    ({"targets": [{"url": "http://127.0.0.1/", "method": "PUT"}]}, "method"),
    ({"targets": [{"url": "http://127.0.0.1/"}], "timeout": 0}, "timeout must be greater than 0"),
    ({"targets": [{"url": "http://127.0.0.1/"}], "concurrency": 0}, "concurrency must be at least 1"),
    ({"targets": [{"url": "http://127.0.0.1/"}], "ca_path": "/nonexistent/ca.crt"}, "cannot load ca_path"),
    ({"targets": [{"url": "http://127.0.0.1/", "header_expect": {"X-A": ["a"]}}]}, "targets[0]: header_expect[X-A] must be a string"),
    ({"targets": [{"name": "b", "url": "http://127.0.0.1/", "source_address": "not-an-ip"}]},
     "targets[0] (b): source_address 'not-an-ip' is not an IPv4 or IPv6 address"),
])
def test_bad_options_fail_with_a_clear_message(capsys, args, message):
    result = run(capsys, **args)
    assert result["failed"] is True
    assert message in result["msg"]
    assert "Traceback" not in json.dumps(result)
