"""cert_renewal against the real lab: nginx on 8443 serving a real certificate, the lab CA and Pebble (ACME).

Every test starts from the lab's own certificate and puts it back afterwards (files and the served certificate).
"""
import glob
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

import pytest
from cryptography import x509

from labtools import LAB_ROOT, assert_no_traceback, injected, recap, run_playbook

PLAYBOOK = "sqlsynth.runbooks.cert_renewal"
TLS = os.path.join(LAB_ROOT, "tls")
CERT, KEY = os.path.join(TLS, "server.crt"), os.path.join(TLS, "server.key")
LAB_CA = os.path.join(LAB_ROOT, "ca", "ca.crt")
SERVER_NAME = "sqlsynth.lab"
SUPERVISORCTL = ["/usr/bin/supervisorctl", "-c", os.path.join(LAB_ROOT, "supervisor", "supervisord.conf")]
CHALLTESTSRV = "http://127.0.0.1:8055"
# The lab's ACME webroot and where nginx answers Pebble's http-01 requests from it (roles/lab defaults).
WEBROOT, WEBROOT_ADDRESS = os.path.join(LAB_ROOT, "acme"), "127.0.0.2"


def lab_vars(tmp, cert=CERT, key=KEY, **extra):
    """What an inventory for the lab sets for this runbook (see the report: the lead adds it to inventories/lab)."""
    return dict({
        "cert_renewal_cert_path": cert, "cert_renewal_key_path": key,
        "cert_renewal_internal_ca_cert_path": LAB_CA,
        "cert_renewal_internal_ca_key_path": os.path.join(LAB_ROOT, "ca", "ca.key"),
        "cert_renewal_acme_directory": "https://127.0.0.1:14000/dir", "cert_renewal_acme_tls_ca_path": LAB_CA,
        "cert_renewal_acme_challenge": "challtestsrv",
        "cert_renewal_acme_account_key_path": os.path.join(str(tmp), "acme-account.key"),
        "cert_renewal_backup_dir": os.path.join(str(tmp), "backup"),
        "cert_renewal_nginx_test_cmd": ["/usr/sbin/nginx", "-t", "-q", "-c", os.path.join(LAB_ROOT, "nginx", "nginx.conf"),
                                        "-e", os.path.join(LAB_ROOT, "logs", "nginx_error.log")],
        "cert_renewal_nginx_reload_cmd": SUPERVISORCTL + ["signal", "HUP", "nginx"],
        # Pebble's roots change whenever Pebble restarts: trust the lab CA and the current Pebble root.
        "sqlsynth_ca_path": os.path.join(str(tmp), "bundle.pem"),
    }, **extra)


def renew(tmp, *args, check=False, **extra):
    """Run the runbook with the lab's variables; extra variables go in as one JSON document."""
    path = os.path.join(str(tmp), "vars-%s.json" % time.monotonic_ns())
    with open(path, "w") as handle:
        json.dump(lab_vars(tmp, **extra), handle)
    result = run_playbook(PLAYBOOK, "-e", "@" + path, *args, check=check)
    assert_no_traceback(result.stdout)
    return result


def served(server_name=SERVER_NAME):
    """The certificate nginx serves for the SNI name, parsed (no validation: the tests judge it)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", 8443), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname=server_name) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def cert_file(path):
    with open(path, "rb") as handle:
        return x509.load_pem_x509_certificate(handle.read())


def tls_fingerprint():
    """Names, sizes, mtimes and contents of every file in the lab's TLS directory, plus the served serial."""
    files = {}
    for path in sorted(glob.glob(os.path.join(TLS, "*"))):
        with open(path, "rb") as handle:
            files[os.path.basename(path)] = (os.stat(path).st_size, os.stat(path).st_mtime_ns, handle.read())
    return files, served().serial_number


def served_settled(check, in_a_row=5):
    """The served certificate once `in_a_row` fresh connections in a row pass `check`.

    Right after a reload nginx's old worker still accepts a connection or two (measured: 12 of 20 reloads gave
    the old certificate again after the first new one), so a single read proves nothing.
    """
    seen, cert = 0, None
    for _attempt in range(60):
        cert = served()
        seen = seen + 1 if check(cert) else 0
        if seen >= in_a_row:
            return cert
        time.sleep(0.2)
    raise AssertionError("nginx keeps serving serial %s" % cert.serial_number)


def reload_nginx_until(serial):
    subprocess.run(SUPERVISORCTL + ["signal", "HUP", "nginx"], check=True, capture_output=True)
    served_settled(lambda cert: cert.serial_number == serial)


def challtestsrv(path, body):
    """POST to pebble-challtestsrv's management API (the lab's DNS for Pebble)."""
    request = urllib.request.Request(CHALLTESTSRV + path, data=json.dumps(body).encode(), method="POST")
    urllib.request.urlopen(request, timeout=5).close()


@pytest.fixture(scope="module", autouse=True)
def challtestsrv_ipv4_only():
    """pebble-challtestsrv answers AAAA ::1 by default but listens on 127.0.0.1 only; Pebble would try ::1."""
    challtestsrv("/set-default-ipv6", {"ip": ""})
    yield
    challtestsrv("/set-default-ipv6", {"ip": "::1"})


@pytest.fixture(autouse=True)
def lab_certificate(tmp_path):
    """Keep the lab's key and certificate; write the CA bundle; restore both files and what nginx serves after."""
    saved = {path: open(path, "rb").read() for path in (CERT, KEY)}
    modes = {path: os.stat(path).st_mode for path in (CERT, KEY)}
    with urllib.request.urlopen("https://127.0.0.1:15000/roots/0", timeout=5,
                                context=ssl.create_default_context(cafile=LAB_CA)) as response:
        pebble_root = response.read().decode()
    with open(LAB_CA) as handle:
        (tmp_path / "bundle.pem").write_text(handle.read() + pebble_root)
    original = cert_file(CERT).serial_number
    yield original
    for path, content in saved.items():
        with open(path, "wb") as handle:
            handle.write(content)
        os.chmod(path, modes[path])
    for leftover in glob.glob(os.path.join(TLS, "*.new")):
        os.unlink(leftover)
    reload_nginx_until(original)


def backups(tmp_path):
    return sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "backup" / "*")))


def test_forced_renewal_via_internal_ca_deploys_backs_up_and_second_run_changes_nothing(tmp_path, lab_certificate):
    old_key = open(KEY, "rb").read()
    result = renew(tmp_path, cert_renewal_provider="internal_ca", cert_renewal_force=True)
    assert result.returncode == 0, result.stdout[-5000:]
    out = result.stdout
    assert "Will renew via the internal CA" in out and "forced (cert_renewal_force=true)" in out
    assert "nginx serves the new certificate" in out and "verdict: healthy" in out

    new = served()
    assert new.serial_number != lab_certificate, "nginx still serves the old certificate"
    assert new.serial_number == cert_file(CERT).serial_number, "nginx does not serve the file on disk"
    names = new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == [SERVER_NAME]
    assert open(KEY, "rb").read() != old_key, "a renewal makes a new key"
    assert not glob.glob(os.path.join(TLS, "*.new")), "temporary files left next to the certificate"
    # Timestamped backups of the old key and certificate, byte for byte.
    stamp_files = backups(tmp_path)
    assert len(stamp_files) == 2 and {f.split(".")[0] for f in stamp_files} == {"server"}
    backup_cert = [f for f in stamp_files if f.startswith("server.crt.")][0]
    assert cert_file(str(tmp_path / "backup" / backup_cert)).serial_number == lab_certificate
    assert open(str(tmp_path / "backup" / backup_cert.replace(".crt.", ".key.")), "rb").read() == old_key

    again = renew(tmp_path, cert_renewal_provider="internal_ca")
    assert again.returncode == 0, again.stdout[-5000:]
    assert "Nothing due" in again.stdout
    assert recap(again.stdout)["changed"] == 0
    assert served().serial_number == new.serial_number
    assert backups(tmp_path) == stamp_files


def test_check_mode_reports_days_left_and_action_and_changes_nothing(tmp_path):
    before = tls_fingerprint()
    result = renew(tmp_path, check=True, cert_renewal_provider="internal_ca", cert_renewal_days_threshold=400)
    assert result.returncode == 0, result.stdout[-5000:]
    out = result.stdout
    assert "days left" in out
    assert "Would renew via the internal CA" in out and "(threshold 400)" in out
    assert "Would then: new ECC key %s.new" % KEY in out
    assert tls_fingerprint() == before
    assert not os.path.exists(str(tmp_path / "backup"))


def test_production_guard_refuses_a_due_renewal_without_confirmation(tmp_path):
    before = tls_fingerprint()
    result = renew(tmp_path, cert_renewal_provider="internal_ca", cert_renewal_days_threshold=400,
                   sqlsynth_environment="production")
    assert result.returncode != 0
    assert "this is the production inventory" in result.stdout and "sqlsynth_confirm=true" in result.stdout
    assert tls_fingerprint() == before


def test_production_guard_refuses_a_forced_renewal_up_front(tmp_path):
    before = tls_fingerprint()
    result = renew(tmp_path, cert_renewal_provider="internal_ca", cert_renewal_force=True,
                   sqlsynth_environment="production")
    assert result.returncode != 0
    assert "cert_renewal takes destructive steps and this is the production inventory" in result.stdout
    assert tls_fingerprint() == before


def test_certificate_for_the_wrong_name_is_rolled_back(tmp_path, lab_certificate):
    old = {path: open(path, "rb").read() for path in (CERT, KEY)}
    result = renew(tmp_path, cert_renewal_provider="internal_ca", cert_renewal_force=True,
                   cert_renewal_dns_names=["wrong.sqlsynth.test"])
    assert result.returncode != 0, result.stdout[-5000:]
    out = result.stdout
    assert "names wrong.sqlsynth.test" in out and "sqlsynth.lab: False" in out
    assert "were restored from" in out
    assert served().serial_number == lab_certificate, "nginx does not serve the old certificate again"
    assert {path: open(path, "rb").read() for path in (CERT, KEY)} == old
    assert not glob.glob(os.path.join(TLS, "*.new"))
    assert len(backups(tmp_path)) == 2, "the replaced files were backed up before the deploy"


def test_unreachable_acme_server_fails_clearly_and_deploys_nothing(tmp_path, lab_certificate):
    before = tls_fingerprint()
    result = renew(tmp_path, cert_renewal_provider="acme", cert_renewal_force=True,
                   cert_renewal_acme_directory="https://127.0.0.1:14999/dir")
    assert result.returncode != 0
    out = result.stdout
    assert "127.0.0.1:14999" in out
    assert "Nothing was deployed; nginx still serves the previous certificate." in out
    assert tls_fingerprint() == before
    assert not glob.glob(os.path.join(TLS, "*.new"))
    assert not backups(tmp_path)


def test_renewal_via_acme_from_pebble(tmp_path, lab_certificate):
    result = renew(tmp_path, cert_renewal_provider="acme", cert_renewal_force=True)
    assert result.returncode == 0, result.stdout[-5000:]
    assert "Will renew via ACME (https://127.0.0.1:14000/dir" in result.stdout
    new = served()
    assert new.serial_number != lab_certificate
    assert "Pebble" in new.issuer.rfc4514_string(), new.issuer.rfc4514_string()
    assert new.serial_number == cert_file(CERT).serial_number
    # The file holds the full chain (leaf + Pebble intermediate).
    assert open(CERT).read().count("BEGIN CERTIFICATE") >= 2
    names = new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == [SERVER_NAME]


def test_renewal_via_acme_webroot_answers_served_by_nginx(tmp_path, lab_certificate):
    """Webroot mode, as in production: the http-01 answers are files nginx serves, and Pebble fetches them from nginx.

    The lab DNS points the name at 127.0.0.2, where only nginx listens on Pebble's http-01 port (challtestsrv, which
    the other ACME tests publish through, listens on 127.0.0.1), so a passing validation went through the webroot.
    """
    access_log = os.path.join(LAB_ROOT, "logs", "nginx_access.log")
    log_start = os.path.getsize(access_log)
    challtestsrv("/add-a", {"host": SERVER_NAME, "addresses": [WEBROOT_ADDRESS]})
    try:
        result = renew(tmp_path, cert_renewal_provider="acme", cert_renewal_force=True,
                       cert_renewal_acme_challenge="webroot", cert_renewal_acme_webroot=WEBROOT)
    finally:
        challtestsrv("/clear-a", {"host": SERVER_NAME})
    assert result.returncode == 0, result.stdout[-5000:]
    new = served()
    assert new.serial_number != lab_certificate
    assert "Pebble" in new.issuer.rfc4514_string(), new.issuer.rfc4514_string()
    assert new.serial_number == cert_file(CERT).serial_number
    with open(access_log) as handle:
        handle.seek(log_start)
        fetched = [json.loads(line) for line in handle if "/.well-known/acme-challenge/" in line]
    assert fetched and all(entry["status"] == 200 for entry in fetched), fetched
    tokens = {entry["request_uri"].rsplit("/", 1)[-1] for entry in fetched}
    # The answers are withdrawn after the validation: the directory is left empty.
    assert not os.listdir(os.path.join(WEBROOT, ".well-known", "acme-challenge")), tokens


def test_expired_served_certificate_is_renewed(tmp_path):
    """Fault: nginx serves a certificate that expired yesterday; the runbook renews it without being forced."""
    expired_cert, expired_key = os.path.join(TLS, "expired.crt"), os.path.join(TLS, "expired.key")
    with injected("expired_cert"):
        served_settled(lambda cert: cert.not_valid_after_utc.timestamp() < time.time())
        result = renew(tmp_path, cert=expired_cert, key=expired_key, cert_renewal_provider="internal_ca")
        assert result.returncode == 0, result.stdout[-5000:]
        assert "Will renew via the internal CA" in result.stdout and "days left (threshold 30)" in result.stdout
        now_served = served()
        assert now_served.not_valid_after_utc.timestamp() > time.time() + 80 * 86400
        assert now_served.serial_number == cert_file(expired_cert).serial_number


def test_two_concurrent_runs_do_not_overlap(tmp_path, lab_certificate):
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        renew(tmp_path, cert_renewal_provider="internal_ca", cert_renewal_force=True, cert_renewal_lock_timeout=900)))
        for dummy in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(1)
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0, 0], "\n".join(r.stdout[-3000:] for r in results)
    # Serialised runs chain: the second backed up what the first deployed; overlapping runs would both
    # have backed up the original certificate.
    certs = [f for f in backups(tmp_path) if f.startswith("server.crt.")]
    assert len(certs) == 2
    first, second = (cert_file(str(tmp_path / "backup" / f)).serial_number for f in certs)
    assert first == lab_certificate
    assert second != lab_certificate
    final = cert_file(CERT).serial_number
    assert served().serial_number == final
    assert final not in (first, second)
