"""Run the sqlsynth.runbooks collection's runbooks through ansible-runner (API and CLI)."""
from .api import Collection, RunbookInfo, RunHandle, RunResult, find_root
from .errors import (CollectionNotFound, InvalidExtravar, InvalidInventory, RunbookError, RunnerError, SpecError,
                     UnknownRunbook)
from .events import PlayStarted, RunFinished, TaskResult, TaskStarted
from .scrub import MASK
from .spec import Option, RunbookSpec

__all__ = [
    "Collection", "RunbookInfo", "RunHandle", "RunResult", "find_root", "CollectionNotFound", "InvalidExtravar",
    "InvalidInventory", "RunbookError", "RunnerError", "SpecError", "UnknownRunbook", "PlayStarted", "RunFinished",
    "TaskResult", "TaskStarted", "MASK", "Option", "RunbookSpec",
]
