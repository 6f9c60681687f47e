"""Errors a user can fix. The CLI prints them without a traceback and exits 2."""

from __future__ import annotations

__all__ = ["ContractError", "DataSourceError", "EngineMemoryError", "WorkbookError"]


class WorkbookError(Exception):
    """Base class: a mistake in the user's pilot file or data, with a message that says the fix."""


class DataSourceError(WorkbookError):
    """A data set that cannot be opened: names the data set, the file or URI, and why."""


class ContractError(WorkbookError):
    """A data set that breaks its contract as a whole (e.g. a required column is missing)."""


class EngineMemoryError(WorkbookError):
    """A query that does not fit in the engine's memory limit (``engine.memory_limit``).

    One line naming the pilot file's setting, never the engine's own SQL advice.
    """
