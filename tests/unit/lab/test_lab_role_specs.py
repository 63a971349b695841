"""The lab role's argument specs, defaults and the lab runbook specs agree with each other."""
import pathlib
import re

import jinja2.nativetypes
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "lab"


def _load(path):
    return yaml.safe_load(path.read_text())


DEFAULTS = _load(ROLE / "defaults" / "main.yml")
SPECS = _load(ROLE / "meta" / "argument_specs.yml")["argument_specs"]
ROLE_VARS = _load(ROLE / "vars" / "main.yml")


def _rendered_default(value):
    """Defaults like "{{ sqlsynth_db_port | default(5432) }}" fall back to the literal when the inventory is silent."""
    if isinstance(value, str) and "{{" in value:
        return jinja2.nativetypes.NativeEnvironment().from_string(value).render()
    return value


def test_every_default_is_documented_in_an_entry_point():
    documented = {name for spec in SPECS.values() for name in spec["options"]}
    assert sorted(set(DEFAULTS) - documented) == []


@pytest.mark.parametrize("entry_point", sorted(SPECS))
def test_documented_defaults_match_defaults_file(entry_point):
    for name, option in SPECS[entry_point]["options"].items():
        assert name in DEFAULTS, f"{entry_point}: {name} has no default in defaults/main.yml"
        if option.get("required"):
            # Secrets come from the inventory (sqlsynth_db_password ...): no literal fallback.
            assert "default" not in option and "{{" in DEFAULTS[name]
            continue
        assert _rendered_default(DEFAULTS[name]) == option["default"], name


def test_role_uses_only_declared_variables():
    used = set()
    for path in list((ROLE / "tasks").glob("*.yml")) + list((ROLE / "templates").glob("*.j2")) + [
        ROLE / "handlers" / "main.yml",
        ROLE / "vars" / "main.yml",
    ]:
        code = re.sub(r"(?m)^\s*#.*$", "", path.read_text())  # comments may name the runbooks
        used |= set(re.findall(r"(?<![\w.-])lab_[a-z0-9_]+", code))
    assert sorted(used - set(DEFAULTS)) == []


def test_fault_names_agree_between_role_runbook_spec_and_role_vars():
    role_choices = SPECS["fault"]["options"]["lab_fault"]["choices"]
    runbook = _load(ROOT / "playbooks" / "vars" / "lab_fault.spec.yml")
    assert runbook["options"]["fault"]["choices"] == role_choices
    assert set(ROLE_VARS["_lab_file_faults"]) < set(role_choices)
    assert runbook["options"]["latency_ms"]["default"] == DEFAULTS["lab_fault_latency_ms"]


def test_lab_down_purge_default_matches_role():
    runbook = _load(ROOT / "playbooks" / "vars" / "lab_down.spec.yml")
    assert runbook["options"]["lab_purge"]["default"] is DEFAULTS["lab_purge"] is False


def test_faults_off_has_the_keys_the_app_reads():
    assert ROLE_VARS["_lab_faults_off"] == {
        "error_burst": False, "latency_ms": 0, "hang": False, "pool_exhaustion": False, "armed_at": {},
    }
