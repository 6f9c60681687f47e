"""Findings: what an analysis noticed, in words, with the evidence behind it.

Phases 2-4 return findings beside their figures; the go/no-go phase lists them
and treats ``severity == "blocking"`` ones as reasons not to go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

__all__ = ["Finding", "findings_frame"]

Severity = Literal["blocking", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    """One observation.

    Attributes
    ----------
    phase:
        Phase key that raised it (``"drift_analysis"``, ``"incident_drill_review"``...).
    code:
        Stable machine name, e.g. ``"key_feature_drift"``, ``"approval_timeout_approved"``.
    severity:
        ``"blocking"`` stops a GO; ``"warning"`` needs a look; ``"info"`` is context.
    message:
        One or two plain sentences a board member can read.
    evidence:
        The numbers and ids behind the message (JSON-serializable).
    """

    phase: str
    code: str
    severity: Severity
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(
            d["phase"], d["code"], d["severity"], d["message"], dict(d.get("evidence") or {})
        )


def findings_frame(findings: list[Finding]) -> pd.DataFrame:
    """A table of findings, blocking first, for display."""
    order = {"blocking": 0, "warning": 1, "info": 2}
    rows = sorted(findings, key=lambda f: (order[f.severity], f.phase, f.code))
    return pd.DataFrame(
        [{"severity": f.severity, "phase": f.phase, "finding": f.message} for f in rows],
        columns=["severity", "phase", "finding"],
    )
