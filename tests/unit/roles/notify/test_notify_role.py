"""The notify role, run by ansible-playbook against a local webhook receiver and a local SMTP server.

The HTTP receiver is the lab's own (roles/lab/files/app/receiver.py) on a kernel-chosen port; the SMTP
server is aiosmtpd with LOGIN/PLAIN authentication. Neither touches the shared lab or its ports.
"""
import email
import email.policy
import importlib.util
import json
import os
import socket
import subprocess
import threading

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# The test SMTP server takes a password without TLS on purpose (loopback only).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
COLLECTIONS = os.path.join(ROOT, ".build", "collections")
PLAYBOOK_BIN = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")

WEBHOOK_TOKEN = "CANARY-webhook-T0K3N-5f1c9a"
HEADER_TOKEN = "CANARY-header-T0K3N-77d2e0"
SMTP_PASSWORD = "CANARY-smtp-P4SS-0b8e41"
CANARIES = (WEBHOOK_TOKEN, HEADER_TOKEN, SMTP_PASSWORD)

# The lab inventory's policy shape (inventories/lab/group_vars/all/policy.yml), trimmed to what routing needs.
POLICY = {
    "P0": {"name": "Critical", "response_time": "15 minutes", "escalation": "Immediate to on-call engineer",
           "channels": ["incident", "status_page", "oncall_email"]},
    "P1": {"name": "High", "response_time": "1 hour", "escalation": "On-call engineer",
           "channels": ["incident", "oncall_email"]},
    "P2": {"name": "Medium", "channels": ["team"]},
    "P3": {"name": "Low", "channels": ["issue_tracker"]},
}


def _load_receiver():
    path = os.path.join(ROOT, "roles", "lab", "files", "app", "receiver.py")
    spec = importlib.util.spec_from_file_location("sqlsynth_notify_test_receiver", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    server = _load_receiver().make_server("127.0.0.1", 0, str(tmp_path_factory.mktemp("receiver") / "messages.jsonl"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class MailSink:
    """Keeps every message it receives with the login that sent it."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd naming)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.messages.append({"login": login,
                              "rcpt": list(envelope.rcpt_tos), "message": message})
        return "250 OK"


def _authenticate(server, session, envelope, mechanism, auth_data):  # pylint: disable=unused-argument
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"runbooks" \
        and auth_data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok, auth_data=auth_data)


@pytest.fixture(scope="module")
def smtp():
    sink = MailSink()
    controller = Controller(sink, hostname="127.0.0.1", port=_free_port(), authenticator=_authenticate,
                            auth_required=True, auth_require_tls=False)
    controller.start()
    yield controller, sink
    controller.stop()


@pytest.fixture
def sinks(receiver, smtp):
    receiver.RequestHandlerClass.store.clear()
    smtp[1].messages.clear()
    return receiver, smtp[0], smtp[1]


def channels(receiver, controller, token=WEBHOOK_TOKEN, password=SMTP_PASSWORD):
    base = "http://127.0.0.1:%d" % receiver.server_address[1]
    return {
        "incident": {"type": "slack", "channel": "#sqlsynth-incidents", "url": "%s/incident/%s" % (base, token)},
        "team": {"type": "slack", "url": "%s/team/%s" % (base, token)},
        "status_page": {"type": "webhook", "url": base + "/status_page",
                        "headers": {"Authorization": "Bearer " + HEADER_TOKEN}},
        "issue_tracker": {"type": "webhook", "url": base + "/issue_tracker"},
        "oncall_email": {"type": "email", "smtp_host": "127.0.0.1", "smtp_port": controller.port, "smtp_starttls": False,
                         "smtp_username": "runbooks", "smtp_password": password,
                         "from": "sqlsynth-runbooks@sqlsynth.lab", "to": ["oncall@sqlsynth.lab"]},
    }


def run(tmp_path, calls, notify_channels, *args, env=None):
    """Run one play that includes the role once per entry of `calls` and saves notify_sent to a file."""
    inventory = {"all": {"hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": PYTHON}},
                         "vars": {"sqlsynth_environment": "lab", "sqlsynth_severity_policy": POLICY,
                                  "sqlsynth_notify_channels": notify_channels,
                                  "sqlsynth_contacts": {"primary_oncall": "@team-lead"}}}}
    tasks = [{"name": "Notify %d" % i, "ansible.builtin.include_role": {"name": "sqlsynth.runbooks.notify"}, "vars": call}
             for i, call in enumerate(calls)]
    tasks.append({"name": "Save notify_sent", "ansible.builtin.copy": {
        "content": "{{ notify_sent | default([]) | to_json }}", "dest": str(tmp_path / "sent.json"), "mode": "0600"},
        "check_mode": False})
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    environ = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1",
                   ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), ANSIBLE_RETRY_FILES_ENABLED="0")
    environ.pop("ANSIBLE_CONFIG", None)
    environ.update(env or {})
    proc = subprocess.run([PLAYBOOK_BIN, "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml"), *args],
                          cwd=str(tmp_path), env=environ, capture_output=True, text=True, timeout=300, check=False)
    proc.output = proc.stdout + proc.stderr
    sent = tmp_path / "sent.json"
    proc.sent = json.loads(sent.read_text()) if sent.exists() else None
    return proc


def received(receiver):
    return receiver.RequestHandlerClass.store.read()


INCIDENT = {"notify_kind": "incident", "notify_severity": "P0", "notify_title": "Database unreachable",
            "notify_impact": "All queries fail with 503", "notify_eta": "30 minutes", "notify_update_interval_minutes": 15}
INCIDENT_TEXT = (
    "\U0001F6A8 INCIDENT: P0 (Critical) - Database unreachable\n\n"
    "Impact: All queries fail with 503\nStatus: INVESTIGATING\nETA: 30 minutes\nOwner: @team-lead\n\n"
    "Updates will be posted every 15 minutes."
)


def test_p0_incident_reaches_every_channel_of_its_policy(tmp_path, sinks):
    receiver, controller, mail = sinks
    result = run(tmp_path, [INCIDENT], channels(receiver, controller))
    assert result.returncode == 0, result.output

    by_path = {m["path"].split("/")[1]: m for m in received(receiver)}
    assert sorted(by_path) == ["incident", "status_page"]
    assert by_path["incident"]["body"] == {"text": INCIDENT_TEXT, "channel": "#sqlsynth-incidents"}
    hook = by_path["status_page"]["body"]
    assert {k: hook[k] for k in ("kind", "severity", "severity_name", "title", "impact", "status", "eta", "owner",
                                 "environment", "response_time")} == {
        "kind": "incident", "severity": "P0", "severity_name": "Critical", "title": "Database unreachable",
        "impact": "All queries fail with 503", "status": "INVESTIGATING", "eta": "30 minutes", "owner": "@team-lead",
        "environment": "lab", "response_time": "15 minutes"}
    assert hook["text"] == INCIDENT_TEXT

    assert len(mail.messages) == 1
    got = mail.messages[0]
    assert got["login"] == "runbooks" and got["rcpt"] == ["oncall@sqlsynth.lab"]
    assert got["message"]["Subject"] == "[P0] INCIDENT: Database unreachable (lab)"
    assert got["message"].get_body(("plain",)).get_content().strip() == INCIDENT_TEXT

    assert [(s["channel"], s["type"], s["kind"], s["severity"], s["ok"]) for s in result.sent] == [
        ("incident", "slack", "incident", "P0", True), ("status_page", "webhook", "incident", "P0", True),
        ("oncall_email", "email", "incident", "P0", True)]
    assert all(s["sent_at"].endswith("Z") for s in result.sent)
    assert "http" not in json.dumps(result.sent)


def test_p3_goes_only_to_the_issue_tracker(tmp_path, sinks):
    receiver, controller, mail = sinks
    result = run(tmp_path, [dict(INCIDENT, notify_severity="P3", notify_title="Typo in docs")],
                 channels(receiver, controller))
    assert result.returncode == 0, result.output
    messages = received(receiver)
    assert [m["path"] for m in messages] == ["/issue_tracker"]
    assert messages[0]["body"]["severity"] == "P3"
    assert messages[0]["body"]["text"].startswith("\U0001F6A8 INCIDENT: P3 (Low) - Typo in docs")
    assert mail.messages == []
    assert [s["channel"] for s in result.sent] == ["issue_tracker"]


def test_status_update_and_resolution_follow_the_seed_and_stats_append(tmp_path, sinks):
    receiver, controller, mail = sinks
    update = {"notify_kind": "status_update", "notify_severity": "P1", "notify_title": "High error rate",
              "notify_status": "FIXING", "notify_details": "pool exhausted by idle sessions",
              "notify_actions": ["terminated 12 idle-in-transaction sessions", "raised the pool to 20"],
              "notify_next_steps": "watch the error ratio for 5 minutes", "notify_eta": "10 minutes"}
    resolution = {"notify_kind": "resolution", "notify_severity": "P1", "notify_title": "High error rate",
                  "notify_resolution": "Idle sessions terminated, pool raised", "notify_root_cause": "Leaked transactions",
                  "notify_duration": "23 minutes", "notify_postmortem_link": "https://wiki.example/pm/42"}
    result = run(tmp_path, [update, resolution], channels(receiver, controller),
                 env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_SHOW_CUSTOM_STATS": "1"})
    assert result.returncode == 0, result.output

    texts = [m["body"]["text"] for m in received(receiver)]
    assert texts == [
        "\U0001F4CA UPDATE: High error rate\n\nCurrent Status: FIXING - pool exhausted by idle sessions\n"
        "Actions Taken: terminated 12 idle-in-transaction sessions; raised the pool to 20\n"
        "Next Steps: watch the error ratio for 5 minutes\nETA: 10 minutes",
        "\u2705 RESOLVED: High error rate\n\nResolution: Idle sessions terminated, pool raised\n"
        "Root Cause: Leaked transactions\nDuration: 23 minutes\nPost-Mortem: https://wiki.example/pm/42",
    ]
    assert [m["message"]["Subject"] for m in mail.messages] == [
        "[P1] UPDATE: High error rate (lab)", "[P1] RESOLVED: High error rate (lab)"]
    assert mail.messages[1]["message"].get_body(("plain",)).get_content().strip() == texts[1]

    stats = json.loads(result.stdout)["global_custom_stats"]["sqlsynth_notifications"]
    assert [(s["kind"], s["channel"]) for s in stats] == [
        ("status_update", "incident"), ("status_update", "oncall_email"),
        ("resolution", "incident"), ("resolution", "oncall_email")]
    assert result.sent == stats


def test_check_mode_renders_and_lists_channels_but_sends_nothing(tmp_path, sinks):
    receiver, controller, mail = sinks
    result = run(tmp_path, [INCIDENT], channels(receiver, controller), "--check")
    assert result.returncode == 0, result.output
    assert "P0 incident -> incident, status_page, oncall_email (check mode: nothing is sent)" in result.output
    assert "INCIDENT: P0 (Critical) - Database unreachable" in result.output
    assert received(receiver) == [] and mail.messages == []
    assert result.sent == []


def test_unknown_severity_fails_clearly_and_sends_nothing(tmp_path, sinks):
    receiver, controller, mail = sinks
    result = run(tmp_path, [dict(INCIDENT, notify_severity="P9")], channels(receiver, controller))
    assert result.returncode != 0
    assert "Unknown severity 'P9': valid severities are P0, P1, P2, P3" in result.output
    assert "Traceback" not in result.output
    assert received(receiver) == [] and mail.messages == []


@pytest.mark.parametrize("fail_on_error", [False, True])
def test_failed_channels_are_reported_and_no_secret_is_printed(tmp_path, sinks, fail_on_error):
    receiver, controller, mail = sinks
    chans = channels(receiver, controller)
    dead = "http://127.0.0.1:%d" % _free_port()  # nobody listens there
    chans["incident"]["url"] = "%s/incident/%s" % (dead, WEBHOOK_TOKEN)
    chans["status_page"]["url"] = dead + "/status_page"
    chans["backup_email"] = dict(chans["oncall_email"], smtp_password=SMTP_PASSWORD + "-wrong")
    policy_call = dict(INCIDENT, notify_fail_on_error=fail_on_error)
    inventory_policy = {"P0": dict(POLICY["P0"], channels=POLICY["P0"]["channels"] + ["backup_email"])}
    result = run(tmp_path, [dict(policy_call, notify_policy=inventory_policy)], chans, "-vvv")

    if fail_on_error:
        assert result.returncode != 0
        assert "Notification failed on: incident (slack, status -1" in result.output
    else:
        assert result.returncode == 0, result.output
        outcome = {s["channel"]: (s["ok"], s["status"]) for s in result.sent}
        assert outcome == {"incident": (False, -1), "status_page": (False, -1), "oncall_email": (True, 0),
                           "backup_email": (False, 1)}
        error = result.sent[-1]["error"]  # community.general.mail's words for a refused login
        assert "authentication" in error.lower() and "127.0.0.1:%d" % controller.port in error
    assert "incident FAILED -1" in result.output and "backup_email FAILED 1" in result.output
    assert [m["login"] for m in mail.messages] == ["runbooks"]
    for canary in CANARIES:
        assert canary not in result.output
        assert canary not in json.dumps(result.sent)
