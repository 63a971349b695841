"""Run the service_control role through ansible-playbook in a private directory and read service_control_result back."""
import json
import os
import subprocess

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
COLLECTIONS = os.path.join(ROOT, ".build", "collections")
PLAYBOOK_BIN = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")


def run_role(tmp_path, role_vars, inventory_vars=None, *args, timeout=300):
    """One play including sqlsynth.runbooks.service_control with `role_vars`; the result is saved to a file, not printed.

    Returns the CompletedProcess with .output (stdout+stderr) and .result (service_control_result or None).
    """
    inventory = {"all": {"hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": PYTHON}},
                         "vars": dict(inventory_vars or {})}}
    out = tmp_path / "result.json"
    if out.exists():
        out.unlink()
    tasks = [
        {"name": "Service control", "ansible.builtin.include_role": {"name": "sqlsynth.runbooks.service_control"},
         "vars": role_vars},
        {"name": "Save service_control_result", "ansible.builtin.copy": {
            "content": "{{ service_control_result | to_json }}", "dest": str(out), "mode": "0600"},
         "check_mode": False, "no_log": True},
    ]
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    environ = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                   ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), ANSIBLE_RETRY_FILES_ENABLED="0")
    environ.pop("ANSIBLE_CONFIG", None)
    proc = subprocess.run([PLAYBOOK_BIN, "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml"), *args],
                          cwd=str(tmp_path), env=environ, capture_output=True, text=True, timeout=timeout, check=False)
    proc.output = proc.stdout + proc.stderr
    proc.result = json.loads(out.read_text()) if out.exists() else None
    return proc
