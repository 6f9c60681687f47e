"""What the phases read: the checked data of one pilot (no dependency on the contracts).

:class:`PilotData` is the valid rows of each data set as lazy Ibis tables, with
the quarantined rows and the counts per rule beside them. It comes from the
checked evidence store (:func:`pilot_lib.ingest.store.open_store`) or from an
in-memory check (:func:`pilot_lib.ingest.contracts.load_pilot_data`). This
module imports neither pandera nor the contracts, so a phase notebook that only
opens the store starts faster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd
from ibis.backends import BaseBackend

from pilot_lib.config import DATASET_NAMES, Pilot

__all__ = ["QUARANTINE_RULE_COLUMN", "DatasetCheck", "PilotData"]

#: Column that names the first rule a quarantined row broke.
QUARANTINE_RULE_COLUMN = "_quarantine_rule"


@dataclass
class DatasetCheck:
    """What checking one data set found. Counts are rows."""

    name: str
    source: str
    rows: int
    valid: int
    quarantined: int
    by_rule: pd.DataFrame  # columns: rule, rows (most rows first)
    quarantine_path: Path | None = None
    #: Rows of the valid ones each flag rule marks (kept and used; counted and shown).
    flags: dict[str, int] = field(default_factory=dict)


_REPORT_COLUMNS = ["data set", "source", "rows", "valid", "quarantined"]
_SUMMARY_COLUMNS = ["data set", "rule", "rows"]


@dataclass
class PilotData:
    """The data of one pilot after its contracts ran: valid rows per data set.

    ``table(name)`` is the valid rows in contract types (extra columns kept);
    ``quarantined(name)`` the rows set aside with ``_quarantine_rule``. On DuckDB
    both are temporary tables on ``con``; on Spark they read the checked rows cached
    in the session. Tables from another backend stay on it (lazy expressions).
    """

    pilot: Pilot
    con: BaseBackend
    checks: dict[str, DatasetCheck] = field(default_factory=dict)
    _valid: dict[str, ir.Table] = field(default_factory=dict, repr=False)
    _quarantined: dict[str, ir.Table] = field(default_factory=dict, repr=False)
    #: The evidence store's manifest when the data came from one (pilot_lib.ingest.store).
    manifest: dict[str, Any] | None = field(default=None, repr=False)
    #: The store's folder when the data came from one (its shared aggregates live there).
    store_dir: Path | None = field(default=None, repr=False)

    def table(self, name: str) -> ir.Table | None:
        """Valid rows of data set ``name``; None if the pilot file names no such data set.

        ``decisions`` is the live decisions only: a shadow decision (``shadow`` true,
        made silently while a human did the work) never counts toward a live KPI, the
        control chart or drift; :meth:`shadow_decisions` gives those.
        """
        if name not in DATASET_NAMES:
            raise KeyError(f"unknown data set {name!r}; known: {list(DATASET_NAMES)}")
        valid = self._valid.get(name)
        if name == "decisions" and valid is not None and "shadow" in valid.columns:
            return valid.filter(~valid.shadow.fill_null(False))
        return valid

    def shadow_decisions(self) -> ir.Table | None:
        """Valid shadow decisions (``shadow`` true); None without a decision log.

        Empty (not None) when the log has no shadow rows or no ``shadow`` column.
        """
        valid = self._valid.get("decisions")
        if valid is None:
            return None
        if "shadow" not in valid.columns:
            return valid.filter(ibis.literal(False))
        return valid.filter(valid.shadow.fill_null(False))

    def quarantined(self, name: str) -> ir.Table | None:
        """Quarantined rows of data set ``name`` (raw values + rule); None if not named."""
        return self._quarantined.get(name)

    @property
    def decisions(self) -> ir.Table | None:
        return self.table("decisions")

    @property
    def cases(self) -> ir.Table | None:
        return self.table("cases")

    @property
    def adoption(self) -> ir.Table | None:
        return self.table("adoption")

    @property
    def drill_events(self) -> ir.Table | None:
        return self.table("drill_events")

    @property
    def approvals(self) -> ir.Table | None:
        return self.table("approvals")

    @property
    def candidates(self) -> ir.Table | None:
        return self.table("candidates")

    def report(self) -> pd.DataFrame:
        """One row per data set the pilot names: data set, source, rows, valid, quarantined."""
        rows = [
            [c.name, c.source, c.rows, c.valid, c.quarantined]
            for n in DATASET_NAMES
            if (c := self.checks.get(n)) is not None
        ]
        return pd.DataFrame(rows, columns=_REPORT_COLUMNS)

    def quarantine_summary(self) -> pd.DataFrame:
        """Quarantined rows per data set and rule (data sets in standard order, most rows first)."""
        parts = [
            [c.name, r.rule, int(r.rows)]
            for n in DATASET_NAMES
            if (c := self.checks.get(n)) is not None
            for r in c.by_rule.itertuples(index=False)
        ]
        return pd.DataFrame(parts, columns=_SUMMARY_COLUMNS)

    def flag_summary(self) -> pd.DataFrame:
        """Flagged rows (kept and used) per data set and flag, only flags that marked a row."""
        parts = [
            [c.name, flag, int(n)]
            for name in DATASET_NAMES
            if (c := self.checks.get(name)) is not None
            for flag, n in c.flags.items()
            if n
        ]
        return pd.DataFrame(parts, columns=["data set", "flag", "rows"])
