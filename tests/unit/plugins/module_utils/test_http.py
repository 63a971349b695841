"""The pieces of _http that decide what a probe failure says."""
import datetime
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _http

HEALTH = {"status": "healthy", "components": {"database": True, "cache": False, "openai_api": 1},
          "replicas": [{"id": "a", "up": True}, {"id": "b", "up": False}]}


def test_json_expectations_name_the_failing_path_and_both_values():
    assert _http.json_failures(HEALTH, {"status": "healthy", "components.database": True}) == []
    assert _http.json_failures(HEALTH, {"status": "unhealthy"}) == ['status is "healthy", expected "unhealthy"']
    assert _http.json_failures(HEALTH, {"components.*": True}) == [
        "components.cache is false, expected true",
        "components.openai_api is 1, expected true",  # 1 is not true
    ]
    assert _http.json_failures(HEALTH, {"replicas.1.up": True, "replicas.0.id": "a"}) == [
        "replicas.1.up is false, expected true"]
    assert _http.json_failures(HEALTH, {"components.redis": True, "error": None}) == [
        "components.redis is missing, expected true", "error is missing, expected null"]


def test_wildcard_on_something_that_is_not_a_container_or_empty():
    assert _http.json_failures({"components": "n/a"}, {"components.*": True}) == [
        'components is "n/a", expected an object whose values are all true']
    assert _http.json_failures({"components": {}}, {"components.*": True}) == [
        "components is empty, expected values true"]
    assert _http.json_failures({"error": "db down"}, {"components.*": True}) == [
        "components is missing, expected an object whose values are all true"]


@pytest.mark.parametrize("url, parsed", [
    ("http://127.0.0.1:5000/health", ("http", "127.0.0.1", 5000, "/health")),
    ("https://sqlsynth.lab/api/query?x=1", ("https", "sqlsynth.lab", 443, "/api/query?x=1")),
    ("http://[::1]", ("http", "::1", 80, "/")),
])
def test_parse_url(url, parsed):
    assert _http.parse_url(url) == parsed


@pytest.mark.parametrize("url, reason", [
    ("127.0.0.1:5000/health", "must start with http:// or https://"),
    ("http:///health", "has no host"),
    ("http://host:port/", "is not valid"),
])
def test_parse_url_rejects(url, reason):
    with pytest.raises(ValueError, match=reason):
        _http.parse_url(url)


def _der(not_after, sans):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sqlsynth.lab")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(not_after - datetime.timedelta(days=90)).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.timezone.utc)


def test_describe_cert_and_expiry_lines():
    der = _der(NOW + datetime.timedelta(days=5, hours=3),
               [x509.DNSName("sqlsynth.lab"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = _http.describe_cert(der, now=NOW)
    assert cert["subject_cn"] == "sqlsynth.lab" and cert["self_signed"] is True
    assert cert["sans"] == ["sqlsynth.lab", "127.0.0.1"]
    assert cert["days_left"] == 5 and cert["expired"] is False
    assert cert["not_after"] == "2026-12-04T15:00:00+00:00"
    assert _http.expiry_failure(cert) is None
    assert _http.expiry_failure(cert, 5) is None
    assert _http.expiry_failure(cert, 14) == (
        "certificate expires in 5 days (not_after 2026-12-04T15:00:00+00:00), fewer than min_cert_days 14")
    expired = _http.describe_cert(_der(NOW - datetime.timedelta(hours=30), [x509.DNSName("x")]), now=NOW)
    assert expired["days_left"] == -1 and expired["expired"] is True
    assert _http.expiry_failure(expired).startswith("certificate expired 1 day ago")
    fresh = _http.describe_cert(_der(NOW - datetime.timedelta(hours=2), [x509.DNSName("x")]), now=NOW)
    assert _http.expiry_failure(fresh).startswith("certificate expired less than a day ago")


def _verify_error(code, message):
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code, exc.verify_message = code, message
    return exc


def test_verify_failures_say_why():
    cert = {"sans": ["other.example"], "subject_cn": "other.example", "issuer": "CN=Evil CA",
            "days_left": -3, "expired": True, "not_after": "2026-11-26T00:00:00+00:00"}
    assert _http.verify_failure(_verify_error(10, "certificate has expired"), cert, "sqlsynth.lab") == (
        "certificate expired 3 days ago (not_after 2026-11-26T00:00:00+00:00)")
    assert _http.verify_failure(_verify_error(62, "Hostname mismatch"), cert, "sqlsynth.lab") == (
        "certificate name mismatch: sqlsynth.lab is not in ['other.example']")
    assert _http.verify_failure(_verify_error(20, "unable to get local issuer certificate"), cert, "x") == (
        "certificate not trusted: unknown CA (issuer CN=Evil CA; unable to get local issuer certificate)")
    assert _http.verify_failure(_verify_error(99, "odd"), None, "x") == "certificate verification failed: odd"


def test_network_errors_read_as_one_line():
    import socket
    assert _http.describe_error(socket.timeout("timed out"), 2) == "timed out after 2.0 s"
    assert _http.describe_error(ConnectionRefusedError(111, "Connection refused"), 5, "h:1") == (
        "connection refused (h:1)")
    assert _http.describe_error(socket.gaierror(-2, "Name or service not known"), 5, "nowhere:80") == (
        "cannot resolve host (nowhere:80): Name or service not known")
