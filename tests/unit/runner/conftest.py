"""A throwaway collection root with tiny localhost runbooks, shared by the runner tests."""
import os
import sys
import textwrap

import pytest

PLAY_HEAD = """\
- name: {title}
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
"""

RUNBOOKS = {
    "healthy": (
        """\
    - name: Write the marker file
      ansible.builtin.copy:
        content: "{{ greeting | default('hello') }}\\n"
        dest: "{{ marker_path }}"
        mode: "0600"
      when: marker_path | default('') | length > 0
    - name: Publish the verdict
      ansible.builtin.set_stats:
        data:
          sqlsynth_verdict:
            verdict: healthy
            broken: []
            signals:
              - {name: health_endpoint, component: app, ok: true, detail: "200 healthy"}
            disagreements: []
            check_mode: "{{ ansible_check_mode }}"
            retries: "{{ retries | default(3) }}"
""",
        """\
name: healthy
short_description: Always healthy (test fixture).
description: [A runbook that publishes a healthy verdict.]
prerequisites: [Nothing.]
verification: [The verdict is healthy.]
rollback: [Nothing to undo.]
troubleshooting:
  - symptom: It is not healthy
    hint: Look again.
options:
  marker_path: {type: path, default: "", description: [File to write (skipped when empty).]}
  greeting: {type: str, default: hello, description: Text written to the marker file.}
  retries: {type: int, default: 3, description: [How often to retry.]}
  dry: {type: bool, default: false, description: [A flag.]}
  mode: {type: str, default: fast, choices: [fast, slow], description: [Speed.]}
  hosts_list: {type: list, elements: str, default: [], description: [Some hosts.]}
""",
    ),
    "broken": (
        """\
    - name: Publish the verdict
      ansible.builtin.set_stats:
        data:
          sqlsynth_verdict:
            verdict: unhealthy
            broken: [database]
            signals:
              - {name: pg_isready, component: database, ok: false, detail: "no response"}
            disagreements: ["/health says healthy but PostgreSQL does not answer"]
    - name: Fail because the database is down
      ansible.builtin.fail:
        msg: database is down
""",
        """\
name: broken
short_description: Always unhealthy and fails (test fixture).
options: {}
""",
    ),
    "slow": (
        """\
    - name: Sleep for a long time
      ansible.builtin.command: sleep {{ seconds | default(120) }}
      changed_when: false
""",
        """\
name: slow
short_description: Sleeps (test fixture).
options:
  seconds: {type: int, default: 120, description: [How long.]}
""",
    ),
    "secret": (
        """\
    - name: Store a hash of the password
      ansible.builtin.copy:
        content: "{{ db_password | hash('sha256') }}"
        dest: "{{ hash_path }}"
        mode: "0600"
    - name: Show the connection settings
      ansible.builtin.debug:
        msg: "connecting as app with {{ db_password }} and {{ note | default('plain note') }}"
    - name: Keep them as a fact
      ansible.builtin.set_fact:
        conn_settings: {password: "{{ db_password }}", note: "{{ note | default('plain note') }}"}
        cacheable: true
""",
        """\
name: secret
short_description: Receives a password (test fixture).
options:
  db_password: {type: str, required: true, description: [Password.]}
  hash_path: {type: path, required: true, description: [Where the hash goes.]}
  note: {type: str, default: "plain note", description: [Not secret unless named.]}
""",
    ),
}


@pytest.fixture(scope="session")
def collection_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("collection")
    (root / "playbooks" / "vars").mkdir(parents=True)
    (root / "galaxy.yml").write_text("namespace: sqlsynth\nname: runbooks\nversion: 0.0.1\n")
    for name, (tasks, spec) in RUNBOOKS.items():
        (root / "playbooks" / f"{name}.yml").write_text("---\n" + PLAY_HEAD.format(title=name) + tasks)
        (root / "playbooks" / "vars" / f"{name}.spec.yml").write_text(spec)
    # a playbook without a spec is not a runbook
    (root / "playbooks" / "helper.yml").write_text("---\n" + PLAY_HEAD.format(title="helper") +
                                                   "    - name: Nothing\n      ansible.builtin.meta: noop\n")
    return root


@pytest.fixture(scope="session")
def inventory(tmp_path_factory):
    path = tmp_path_factory.mktemp("inventory") / "hosts.ini"
    path.write_text(textwrap.dedent(f"""\
        [local]
        localhost ansible_connection=local ansible_python_interpreter={sys.executable}
        """))
    return str(path)


@pytest.fixture
def collection(collection_root, tmp_path):
    from sqlsynth_runbook import Collection
    return Collection(str(collection_root), artifacts_root=str(tmp_path / "runs"))


@pytest.fixture(scope="session")
def files_containing():
    """files_containing(root, text) -> the files under root whose bytes contain text."""
    def find(root, text):
        return [os.path.join(d, f) for d, _dirs, files in os.walk(root) for f in files
                if text.encode() in open(os.path.join(d, f), "rb").read()]
    return find
