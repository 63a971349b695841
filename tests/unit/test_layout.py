"""The collection's conventions hold for every role and runbook, so a reader finds the same shape everywhere."""
import glob
import os

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "roles", "*")) if os.path.isdir(p))
PLAYBOOKS = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(ROOT, "playbooks", "*.yml")))


def load(*parts):
    with open(os.path.join(ROOT, *parts)) as handle:
        return yaml.safe_load(handle)


def test_there_are_roles_and_runbooks():
    assert "verify" in ROLES and "preflight" in ROLES
    assert "health_check" in PLAYBOOKS


@pytest.mark.parametrize("role", ROLES)
def test_role_argument_specs_match_defaults(role):
    entry_points = load("roles", role, "meta", "argument_specs.yml")["argument_specs"]
    assert "main" in entry_points
    spec = {"options": {}}
    for entry in entry_points.values():
        spec["options"].update(entry.get("options") or {})
    options = set(spec["options"])
    defaults_path = os.path.join(ROOT, "roles", role, "defaults", "main.yml")
    defaults = set((load("roles", role, "defaults", "main.yml") or {}).keys()) if os.path.exists(defaults_path) else set()
    assert defaults <= options, "defaults without an argument spec: %s" % sorted(defaults - options)
    undocumented_defaults = {k for k in options - defaults if not spec["options"][k].get("required")}
    assert not undocumented_defaults, "optional options without a default in defaults/main.yml: %s" % sorted(
        undocumented_defaults)
    bad_prefix = [k for k in options if not k.startswith(role + "_")]
    assert not bad_prefix, "role variables must be prefixed with %s_: %s" % (role, bad_prefix)


@pytest.mark.parametrize("runbook", PLAYBOOKS)
def test_runbook_has_a_spec_with_the_seed_sections(runbook):
    spec = load("playbooks", "vars", runbook + ".spec.yml")
    assert spec["name"] == runbook
    for key in ("short_description", "description", "prerequisites", "verification", "rollback", "troubleshooting"):
        assert spec.get(key), "%s.spec.yml lacks %s" % (runbook, key)
    for name, option in (spec.get("options") or {}).items():
        assert option.get("description"), "option %s of %s has no description" % (name, runbook)
        assert option.get("type"), "option %s of %s has no type" % (name, runbook)
