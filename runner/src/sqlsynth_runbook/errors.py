"""Exceptions raised by sqlsynth_runbook. Catch RunbookError for all of them."""


class RunbookError(Exception):
    """Base class: a problem the caller can fix (bad name, bad input, missing files)."""


class CollectionNotFound(RunbookError):
    """No collection root with runbooks could be found."""


class UnknownRunbook(RunbookError):
    """The runbook name has no playbooks/<name>.yml with a spec."""


class SpecError(RunbookError):
    """A runbook spec file is missing or malformed."""


class InvalidExtravar(RunbookError):
    """An extra variable is unknown to the runbook's spec or has the wrong type."""


class InvalidInventory(RunbookError):
    """The inventory path does not exist."""


class RunnerError(RunbookError):
    """ansible-runner itself could not run the playbook (not a runbook failure)."""
