"""Spec loading, extravar validation and collection discovery (no ansible run)."""
import os

import pytest

from sqlsynth_runbook import Collection, CollectionNotFound, InvalidExtravar, SpecError, UnknownRunbook, find_root
from sqlsynth_runbook.spec import load_spec, validate_extravars


def test_list_shows_runbooks_with_specs_only(collection):
    listed = {info.name: info.short_description for info in collection.list()}
    assert listed == {
        "broken": "Always unhealthy and fails (test fixture).",
        "healthy": "Always healthy (test fixture).",
        "secret": "Receives a password (test fixture).",
        "slow": "Sleeps (test fixture).",
    }


def test_describe_returns_the_spec(collection):
    spec = collection.describe("healthy")
    assert spec.short_description == "Always healthy (test fixture)."
    assert spec.prerequisites == ["Nothing."]
    assert spec.verification == ["The verdict is healthy."]
    assert spec.rollback == ["Nothing to undo."]
    assert spec.troubleshooting == [{"symptom": "It is not healthy", "hint": "Look again."}]
    retries = spec.options["retries"]
    assert (retries.type, retries.default, retries.required) == ("int", 3, False)
    assert retries.description == ["How often to retry."]
    assert spec.options["greeting"].description == ["Text written to the marker file."]  # string -> list
    assert collection.describe("secret").options["db_password"].required is True


@pytest.mark.parametrize("name", ["nope", "helper", "../playbooks/healthy", ""])
def test_describe_unknown_runbook(collection, name):
    with pytest.raises(UnknownRunbook, match="unknown runbook .*runbooks: broken, healthy, secret, slow"):
        collection.describe(name)


def test_run_unknown_runbook_raises_before_starting(collection, inventory):
    with pytest.raises(UnknownRunbook):
        collection.start("nope", inventory)
    assert not os.path.exists(collection.artifacts_root)


@pytest.mark.parametrize("extravars, expected", [
    ({"retries": "7"}, {"retries": 7}),
    ({"retries": 7}, {"retries": 7}),
    ({"dry": "yes"}, {"dry": True}),
    ({"dry": "False"}, {"dry": False}),
    ({"mode": "slow"}, {"mode": "slow"}),
    ({"greeting": 12}, {"greeting": "12"}),
    ({"hosts_list": "a, b"}, {"hosts_list": ["a", "b"]}),
    ({"hosts_list": "[a, b]"}, {"hosts_list": ["a", "b"]}),
    ({"hosts_list": ["a"]}, {"hosts_list": ["a"]}),
    ({"marker_path": "~/x"}, {"marker_path": os.path.expanduser("~/x")}),
])
def test_extravars_are_converted_to_the_spec_types(collection, extravars, expected):
    assert validate_extravars(collection.describe("healthy"), extravars) == expected


@pytest.mark.parametrize("extravars, message", [
    ({"retries": "many"}, "option 'retries': expected int, got str 'many'"),
    ({"retries": True}, "expected int"),
    ({"retries": 2.5}, "expected int"),
    ({"dry": "maybe"}, "expected bool"),
    ({"mode": "medium"}, "'medium' is not one of"),
    ({"greeting": ["a"]}, "expected str"),
    ({"hosts_list": {"a": 1}}, "expected list"),
    ({"unknown_var": 1}, "runbook 'healthy' has no option 'unknown_var' "
                         r"\(options: dry, greeting, hosts_list, marker_path, mode, retries\)"),
])
def test_wrong_extravars_are_refused_before_the_run(collection, inventory, extravars, message):
    with pytest.raises(InvalidExtravar, match=message):
        collection.start("healthy", inventory, extravars=extravars)
    assert not os.path.exists(collection.artifacts_root)  # nothing started, nothing written


def test_bad_spec_files(tmp_path):
    (tmp_path / "bad.yml").write_text("options: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(str(tmp_path / "bad.yml"), "bad")
    (tmp_path / "type.yml").write_text("options:\n  x: {type: complex}\n")
    with pytest.raises(SpecError, match="option 'x' has unsupported type 'complex'"):
        load_spec(str(tmp_path / "type.yml"), "type")


def test_find_root_order(collection_root, tmp_path, monkeypatch):
    installed = tmp_path / "colls" / "ansible_collections" / "sqlsynth" / "runbooks"
    (installed / "playbooks" / "vars").mkdir(parents=True)
    monkeypatch.setenv("SQLSYNTH_COLLECTION_ROOT", str(collection_root))
    monkeypatch.setenv("ANSIBLE_COLLECTIONS_PATH", str(tmp_path / "colls"))
    assert find_root() == str(collection_root)
    monkeypatch.delenv("SQLSYNTH_COLLECTION_ROOT")
    assert find_root() == str(installed)
    monkeypatch.setenv("ANSIBLE_COLLECTIONS_PATH", str(tmp_path / "none"))
    monkeypatch.chdir(collection_root / "playbooks")  # a parent of the cwd is the checkout
    assert find_root() == str(collection_root)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CollectionNotFound, match="SQLSYNTH_COLLECTION_ROOT"):
        Collection()
    monkeypatch.setenv("SQLSYNTH_COLLECTION_ROOT", str(tmp_path))
    with pytest.raises(CollectionNotFound, match="no playbooks/vars"):
        find_root()


def test_collections_path_for_the_run(collection_root, tmp_path, monkeypatch):
    monkeypatch.setenv("ANSIBLE_COLLECTIONS_PATH", "/elsewhere")
    checkout = tmp_path / "checkout"
    (checkout / "playbooks" / "vars").mkdir(parents=True)
    (checkout / ".build" / "collections" / "ansible_collections" / "sqlsynth" / "runbooks").mkdir(parents=True)
    paths = Collection(str(checkout))._envvars("r1")["ANSIBLE_COLLECTIONS_PATH"].split(os.pathsep)
    assert paths == [str(checkout / ".build" / "collections"), "/elsewhere"]
    installed = tmp_path / "c" / "ansible_collections" / "sqlsynth" / "runbooks"
    (installed / "playbooks" / "vars").mkdir(parents=True)
    paths = Collection(str(installed))._envvars("r1")["ANSIBLE_COLLECTIONS_PATH"].split(os.pathsep)
    assert paths == [str(tmp_path / "c"), "/elsewhere"]


def test_inventory_level_variables_pass_through_unchecked(collection):
    from sqlsynth_runbook.spec import validate_extravars
    spec = collection.describe("healthy")
    out = validate_extravars(spec, {"sqlsynth_confirm": "true", "vault_sqlsynth_db_password": "x"})
    assert out == {"sqlsynth_confirm": "true", "vault_sqlsynth_db_password": "x"}
