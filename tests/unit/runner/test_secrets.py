"""Secrets: extravars reach the playbook through env/extravars and are scrubbed from every file afterwards."""
import hashlib
import json
import os
import stat
import uuid

from sqlsynth_runbook import MASK, TaskResult
from sqlsynth_runbook.scrub import Scrubber, secret_values


def test_canary_password_reaches_the_playbook_but_no_file(collection, inventory, tmp_path, files_containing):
    canary = f"CANARY-{uuid.uuid4()}"
    note = f"NOTE-{uuid.uuid4()}"
    hash_path = tmp_path / "hash"
    seen = []
    result = collection.run("secret", inventory, on_event=seen.append, secrets=[note],
                            extravars={"db_password": canary, "hash_path": str(hash_path), "note": note})
    assert result.status == "successful", result.stdout
    assert hash_path.read_text() == hashlib.sha256(canary.encode()).hexdigest()  # the playbook got it

    pdd = result.private_data_dir
    assert files_containing(pdd, canary) == []
    assert files_containing(pdd, note) == []  # named in secrets=[...]
    # the values were written (debug output, job events, fact cache, env/extravars) and then masked
    masked = {os.path.relpath(p, pdd).split(os.sep)[0] for p in files_containing(pdd, MASK)}
    assert {"env", "artifacts"} <= masked
    assert files_containing(os.path.join(result.artifacts_dir, "job_events"), MASK)
    assert files_containing(os.path.join(result.artifacts_dir, "fact_cache"), MASK)
    assert f"connecting as app with {MASK} and {MASK}" in result.stdout
    # never on the command line: ansible-runner passes the file
    command = json.load(open(os.path.join(result.artifacts_dir, "command")))["command"]
    assert "-e" in command and f"@{pdd}/env/extravars" in command
    assert stat.S_IMODE(os.stat(os.path.join(pdd, "env", "extravars")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pdd).st_mode) == 0o700
    # events handed to the caller are scrubbed too
    debug = [e for e in seen if isinstance(e, TaskResult) and e.task == "Show the connection settings"]
    assert debug[0].msg == f"connecting as app with {MASK} and {MASK}"
    assert canary not in repr(seen)


def test_secret_values_by_key_and_explicit():
    extravars = {"db_password": "pw-1234", "api_token": {"a": ["tok-5678"]}, "slack_webhook": "https://hook/x",
                 "ssh_key": "abc", "retries": "12345", "note": "visible", "enabled": True}
    masked, short = secret_values(extravars, ["visible"])
    assert sorted(masked) == ["https://hook/x", "pw-1234", "tok-5678", "visible"]
    assert short == ["abc"]  # too short to mask without wrecking the artifacts; the CLI warns


def test_scrubber_masks_json_escaped_forms(tmp_path):
    secret = 'pa"ss\\wörd'
    scrub = Scrubber([secret])
    (tmp_path / "a.json").write_text(json.dumps({"x": f"pre {secret} post"}))
    (tmp_path / "b.json").write_text(json.dumps({"x": secret}, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "c.txt").write_text(f"raw {secret}\n", encoding="utf-8")
    (tmp_path / "d.txt").write_text("nothing here\n")
    assert scrub.tree(str(tmp_path)) == 3
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": f"pre {MASK} post"}
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": MASK}
    assert (tmp_path / "c.txt").read_text() == f"raw {MASK}\n"
    assert scrub.text(f"a {secret} b") == f"a {MASK} b"


def test_nested_secrets_and_notification_endpoints_are_masked():
    channels = {"incident": {"type": "slack", "url": "https://hooks.example/T0/B0/CANARYurl", "channel": "#inc"},
                "status_page": {"type": "webhook", "url": "https://status.example/api",
                                "headers": {"Authorization": "Bearer CANARYheader"}},
                "oncall_email": {"type": "email", "smtp_host": "smtp.example", "smtp_password": "CANARYsmtp"}}
    masked, dummy = secret_values({"sqlsynth_notify_channels": channels, "sqlsynth_app_url": "https://app.example",
                                   "settings": {"db": {"password": "CANARYdb"}}})
    for secret in ("https://hooks.example/T0/B0/CANARYurl", "Bearer CANARYheader", "CANARYsmtp", "CANARYdb",
                   "https://status.example/api"):
        assert secret in masked
    # what is not secret stays readable in the artifacts
    for plain in ("slack", "#inc", "smtp.example", "https://app.example", "webhook"):
        assert plain not in masked
