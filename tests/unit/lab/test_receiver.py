"""The lab's webhook receiver: a real server on a free loopback port."""
import json
import smtplib
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

import receiver
from conftest import free_port as pick_port

PASSWORD = "CANARY-smtp-pw-7c1d"


def call(base, method, path, body=None, headers=None):
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def server(tmp_path):
    store = tmp_path / "receiver" / "messages.jsonl"
    srv = receiver.make_server("127.0.0.1", 0, str(store))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", store
    srv.shutdown()
    srv.server_close()


def test_post_is_stored_without_authorization_and_listed(server):
    base, store = server
    alert = {"status": "firing", "alerts": [{"labels": {"alertname": "HighErrorRate"}}]}
    assert call(base, "POST", "/alertmanager", alert,
                {"Content-Type": "application/json", "Authorization": "Bearer hush", "X-Test": "1"}) == \
        (200, {"status": "stored"})
    assert call(base, "POST", "/slack/hook", b"plain text body", {"Content-Type": "text/plain"})[0] == 200

    status, messages = call(base, "GET", "/messages")
    assert status == 200 and len(messages) == 2
    first, second = messages
    assert first["path"] == "/alertmanager" and first["body"] == alert
    assert first["headers"]["X-Test"] == "1"
    assert not any(k.lower() == "authorization" for k in first["headers"])
    assert second["path"] == "/slack/hook" and second["body"] == "plain text body"
    assert first["received_at"].endswith("+00:00")
    lines = store.read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == ["/alertmanager", "/slack/hook"]
    assert "hush" not in store.read_text()


def test_delete_clears_and_health_answers(server):
    base = server[0]
    call(base, "POST", "/x", {"a": 1})
    assert call(base, "DELETE", "/messages")[0] == 200
    assert call(base, "GET", "/messages") == (200, [])
    assert call(base, "GET", "/health")[0] == 200
    assert call(base, "GET", "/nope")[0] == 404


def wait_health(base):
    deadline = time.monotonic() + 10
    while True:
        try:
            assert call(base, "GET", "/health")[0] == 200
            return
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def send_mail(port, subject, login=None):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        if login:
            smtp.login(login, PASSWORD)
        smtp.sendmail("runbooks@sqlsynth.lab", ["oncall@sqlsynth.lab"],
                      "Subject: %s\r\nFrom: runbooks@sqlsynth.lab\r\n\r\nbody of %s\r\n" % (subject, subject))


def test_command_line_serves_on_the_given_port_and_store(tmp_path, free_port):
    port, store = free_port, tmp_path / "m.jsonl"
    proc = subprocess.Popen([sys.executable, receiver.__file__, "--port", str(port),
                             "--store", str(store)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_health(base)
        call(base, "POST", "/hook", {"k": "v"})
        assert json.loads(store.read_text())["body"] == {"k": "v"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_smtp_sink_stores_each_mail_with_the_login_never_the_password(tmp_path):
    store = receiver.Store(str(tmp_path / "m.jsonl"))
    controller = receiver.start_smtp("127.0.0.1", pick_port(), store)
    try:
        send_mail(controller.port, "[P1] one", login="runbooks")
        send_mail(controller.port, "[P2] two")
    finally:
        controller.stop()
    first, second = store.read()
    assert first["path"] == "smtp" and first["login"] == "runbooks" and second["login"] is None
    assert first["mail_from"] == "runbooks@sqlsynth.lab" and first["rcpt_tos"] == ["oncall@sqlsynth.lab"]
    assert "Subject: [P1] one" in first["body"] and "body of [P2] two" in second["body"]
    assert PASSWORD not in (tmp_path / "m.jsonl").read_text()


def test_command_line_smtp_port_lists_mail_with_the_webhooks(tmp_path):
    port, smtp_port, store = pick_port(), pick_port(), tmp_path / "m.jsonl"
    log = tmp_path / "receiver.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, receiver.__file__, "--port", str(port), "--smtp-port", str(smtp_port),
                                 "--store", str(store)], stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_health(base)
        call(base, "POST", "/incident", {"text": "hook"})
        send_mail(smtp_port, "[P0] mail")
        status, messages = call(base, "GET", "/messages")
        assert status == 200 and [m["path"] for m in messages] == ["/incident", "smtp"], (messages, log.read_text())
        assert "Subject: [P0] mail" in messages[1]["body"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "SMTP on 127.0.0.1:%d" % smtp_port in log.read_text()


def test_smtp_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        smtp_port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, receiver.__file__, "--port", str(pick_port()), "--smtp-port", str(smtp_port),
                               "--store", str(tmp_path / "m.jsonl")], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert "cannot listen for SMTP on 127.0.0.1:%d" % smtp_port in proc.stderr
    assert "Traceback" not in proc.stderr
