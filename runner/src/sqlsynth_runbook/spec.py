"""Runbook specs (playbooks/vars/<name>.spec.yml) and validation of extra variables against them."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import yaml

from .errors import InvalidExtravar, SpecError

TYPES = ("str", "path", "int", "float", "bool", "list", "dict", "raw")
_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}


def _lines(value: Any) -> list:
    """Spec prose fields may be a string or a list; always hand back a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


@dataclasses.dataclass
class Option:
    name: str
    type: str = "str"
    default: Any = None
    required: bool = False
    description: list = dataclasses.field(default_factory=list)
    choices: list | None = None
    elements: str | None = None


@dataclasses.dataclass
class RunbookSpec:
    name: str
    short_description: str
    description: list
    options: dict  # name -> Option
    prerequisites: list
    verification: list
    rollback: list
    troubleshooting: list  # [{symptom, hint}]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _read_yaml(path: str, context: str, what: str):
    """The YAML document at path ({} when empty); SpecError '<context>: cannot read <what>' or '... is not valid YAML'."""
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh) or {}
    except OSError as exc:
        raise SpecError(f"{context}: cannot read {what}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{context}: {what} is not valid YAML: {exc}") from None


def role_options(spec_path: str, role: str) -> dict:
    """The options of roles/<role>/meta/argument_specs.yml (entry point main), for specs with options_from_role.

    A runbook that is a thin playbook over one role documents and validates the role's own variables
    instead of repeating them in its spec.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(spec_path)), os.pardir, os.pardir, "roles", role,
                        "meta", "argument_specs.yml")
    data = _read_yaml(path, f"spec {spec_path}: options_from_role {role!r}", path)
    options = ((data.get("argument_specs") or {}).get("main") or {}).get("options")
    if not isinstance(options, dict):
        raise SpecError(f"spec {spec_path}: options_from_role {role!r}: {path} has no argument_specs.main.options")
    return options


def load_spec(path: str, name: str) -> RunbookSpec:
    data = _read_yaml(path, f"runbook {name!r}", f"spec {path}")
    if not isinstance(data, dict):
        raise SpecError(f"runbook {name!r}: spec {path} must be a mapping")
    declared = dict(data.get("options") or {})
    if data.get("options_from_role"):
        declared = {**role_options(path, str(data["options_from_role"])), **declared}
    options = {}
    for opt_name, opt in declared.items():
        opt = opt or {}
        otype = opt.get("type", "str")
        if otype not in TYPES:
            raise SpecError(f"runbook {name!r}: option {opt_name!r} has unsupported type {otype!r}")
        options[opt_name] = Option(
            name=opt_name, type=otype, default=opt.get("default"), required=bool(opt.get("required", False)),
            description=_lines(opt.get("description")), choices=opt.get("choices"), elements=opt.get("elements"))
    return RunbookSpec(
        name=data.get("name", name), short_description=str(data.get("short_description", "")).strip(),
        description=_lines(data.get("description")), options=options,
        prerequisites=_lines(data.get("prerequisites")), verification=_lines(data.get("verification")),
        rollback=_lines(data.get("rollback")), troubleshooting=_lines(data.get("troubleshooting")))


def _coerce(value: Any, otype: str, where: str) -> Any:
    """Convert value (a native value or a command-line string) to otype, or raise InvalidExtravar."""
    def bad():
        return InvalidExtravar(f"{where}: expected {otype}, got {type(value).__name__} {value!r}")

    if otype == "raw":
        return value
    if otype in ("str", "path"):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad()
        return os.path.expanduser(str(value)) if otype == "path" else str(value)
    if otype == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad()
    if otype in ("int", "float"):
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int) or (otype == "float" and isinstance(value, float)):
            return float(value) if otype == "float" else value
        if isinstance(value, str):
            try:
                return int(value.strip()) if otype == "int" else float(value.strip())
            except ValueError:
                raise bad() from None
        raise bad()
    # list / dict: a command-line string is parsed as YAML (flow style), a bare list as comma separated
    if isinstance(value, str):
        text = value.strip()
        if otype == "list" and not text.startswith("["):
            value = [item.strip() for item in text.split(",") if item.strip()]
        else:
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                raise bad() from None
    if not isinstance(value, list if otype == "list" else dict):
        raise bad()
    return value


INVENTORY_PREFIXES = ("sqlsynth_", "vault_")


def validate_extravars(spec: RunbookSpec, extravars: dict | None) -> dict:
    """Check every extra variable against the spec's options and return them converted to their types.

    Required options are not enforced here: they may come from the inventory, and the runbook's
    preflight role checks them with the inventory in view. Inventory-level variables
    (``sqlsynth_*``, such as ``sqlsynth_confirm`` or an endpoint override, and ``vault_*``)
    are passed through unchecked: they belong to every runbook.
    """
    result = {}
    for key, value in (extravars or {}).items():
        opt = spec.options.get(key)
        if opt is None and key.startswith(INVENTORY_PREFIXES):
            result[key] = value
            continue
        if opt is None:
            known = ", ".join(sorted(spec.options)) or "none"
            raise InvalidExtravar(f"runbook {spec.name!r} has no option {key!r} (options: {known})")
        where = f"option {key!r}"
        value = _coerce(value, opt.type, where)
        if opt.type == "list" and opt.elements:
            value = [_coerce(item, opt.elements, f"{where} element") for item in value]
        if opt.choices is not None:
            for item in value if opt.type == "list" else [value]:
                if item not in opt.choices:
                    raise InvalidExtravar(f"{where}: {item!r} is not one of {opt.choices}")
        result[key] = value
    return result
