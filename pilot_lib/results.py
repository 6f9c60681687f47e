"""Machine-readable phase results: one JSON file per phase.

Every phase notebook ends with :func:`write_phase_result`; the go/no-go phase and
batch runs read them back with :func:`read_phase_result` instead of recomputing.
A result file holds the figures, their intervals and sample sizes, and the
SHA-256 of the pilot file they were computed from. It carries no wall-clock
timestamp, so two runs on the same inputs write the same bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pilot_lib import __version__
from pilot_lib.config import Pilot
from pilot_lib.runs import atomic_write_text

__all__ = ["PHASES", "ResultFileError", "read_phase_result", "to_jsonable", "write_phase_result"]

#: Phase keys, in playbook order; result files are ``<output_dir>/<key>.json``.
PHASES = (
    "use_case_scoring",
    "kpi_baselining",
    "drift_analysis",
    "incident_drill_review",
    "go_no_go_summary",
)

SCHEMA_VERSION = 1


class ResultFileError(ValueError):
    """A phase result file that is unreadable or belongs to another pilot file."""


def to_jsonable(obj: Any) -> Any:
    """Convert results to plain JSON types.

    NaN and infinities become ``None`` (JSON has no NaN); floats keep 12
    significant digits; numpy scalars become Python numbers; DataFrames become lists of records; dates become ISO strings;
    dataclasses and pydantic models become dicts.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        # 12 significant digits: engines that sum on several threads differ in the last
        # bits from run to run; rounding keeps result files byte-identical.
        return float(f"{x:.12g}") if math.isfinite(x) else None
    if isinstance(obj, (dt.date, dt.datetime, pd.Timestamp)):
        return None if pd.isna(obj) else obj.isoformat()
    if isinstance(obj, pd.DataFrame):
        return [to_jsonable(r) for r in obj.to_dict(orient="records")]
    if isinstance(obj, pd.Series):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [to_jsonable(x) for x in obj.tolist()]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "model_dump"):
        return to_jsonable(obj.model_dump(mode="json"))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(x) for x in items]
    if isinstance(obj, Path):
        return obj.as_posix()
    try:
        if pd.isna(obj):
            return None
    except (TypeError, ValueError):
        pass
    return str(obj)


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {list(PHASES)}")


def write_phase_result(
    phase: str,
    pilot: Pilot,
    result: Mapping[str, Any],
    output_dir: str | Path | None,
) -> Path | None:
    """Write ``<output_dir>/<phase>.json`` atomically and return its path.

    ``output_dir=None`` writes nothing and returns ``None`` (an analyst exploring
    a notebook without a run folder). The file is written to a temporary name
    first and renamed, so a crash never leaves half a result behind.
    """
    _check_phase(phase)
    if output_dir is None:
        return None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "phase": phase,
        "pilot": pilot.name,
        "pilot_file_sha256": pilot.file_hash,
        "package_version": __version__,
        "result": to_jsonable(result),
    }
    text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n"
    # whole or not at all; an OSError (a full disk) names this file, not a temporary one
    return atomic_write_text(out / f"{phase}.json", text)


def read_phase_result(
    phase: str, output_dir: str | Path | None, pilot: Pilot | None = None
) -> dict[str, Any] | None:
    """The ``result`` part of ``<output_dir>/<phase>.json``, or ``None`` if there is none.

    With ``pilot`` given, a result computed from a different pilot file (another
    pilot, or thresholds edited since) raises :class:`ResultFileError` rather
    than being silently mixed in.
    """
    _check_phase(phase)
    if output_dir is None:
        return None
    path = Path(output_dir) / f"{phase}.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ResultFileError(
            f"{path}: not valid JSON ({exc}); delete it to recompute the phase"
        ) from None
    if pilot is not None and (
        doc.get("pilot") != pilot.name or doc.get("pilot_file_sha256") != pilot.file_hash
    ):
        raise ResultFileError(
            f"{path}: computed for pilot {doc.get('pilot')!r} with pilot file hash "
            f"{str(doc.get('pilot_file_sha256'))[:12]}..., not {pilot.name!r} "
            f"({pilot.file_hash[:12]}...); rerun the phase or point output_dir elsewhere"
        )
    return doc["result"]
