"""Were the thresholds written before the pilot started? Evidence from a seal and from git.

A pilot team *seals* its thresholds when the pilot starts
(``pilot-workbook seal PILOT``): ``thresholds.lock`` beside the pilot file records
the day and a SHA-256 fingerprint of the ``kpis`` section. The gate then checks:

- the lock, if present: the current thresholds must match its fingerprint, and
  it must be dated on or before the first day of the pilot window;
- the file's git history, if the pilot folder is in a git repository: any commit
  after the pilot window started that changed the ``kpis`` section is reported.

Only the ``kpis`` section is fingerprinted: fixing a typo in the scope text is
not moving the goalposts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path

import yaml

from pilot_lib.config import Pilot

__all__ = ["LOCK_NAME", "check_thresholds", "seal_thresholds", "thresholds_fingerprint"]

LOCK_NAME = "thresholds.lock"


def _fingerprint_kpis(kpis: object) -> str:
    canonical = json.dumps(kpis, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def thresholds_fingerprint(pilot: Pilot) -> str:
    """SHA-256 (hex) of the pilot's KPI thresholds in a canonical JSON form."""
    return _fingerprint_kpis([k.model_dump(mode="json") for k in pilot.kpis])


def seal_thresholds(pilot: Pilot, sealed_on: dt.date | None = None) -> Path:
    """Write ``thresholds.lock`` beside the pilot file: the day and the thresholds' fingerprint.

    ``sealed_on`` defaults to today (UTC). Returns the lock's path.
    """
    day = sealed_on or dt.datetime.now(dt.UTC).date()
    lock = pilot.folder / LOCK_NAME
    doc = {
        "pilot": pilot.name,
        "sealed_on": day.isoformat(),
        "kpis_sha256": thresholds_fingerprint(pilot),
        "note": "Written when the thresholds were agreed; the go/no-go gate checks them against it.",
    }
    lock.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return lock


def _check_lock(pilot: Pilot) -> tuple[list[str], list[str]]:
    lock = pilot.folder / LOCK_NAME
    if not lock.is_file():
        return [], []
    try:
        doc = json.loads(lock.read_text(encoding="utf-8"))
        sealed_on = dt.date.fromisoformat(doc["sealed_on"])
        recorded = doc["kpis_sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{lock.name} is unreadable ({exc}); the seal cannot be checked"], []
    warnings, notes = [], []
    if recorded != thresholds_fingerprint(pilot):
        warnings.append(
            f"The KPI thresholds differ from those sealed on {sealed_on:%d %B %Y} "
            f"({lock.name}): they were changed after they were agreed."
        )
    elif sealed_on > pilot.pilot_window.start:
        warnings.append(
            f"The thresholds were sealed on {sealed_on:%d %B %Y}, after the pilot started on "
            f"{pilot.pilot_window.start:%d %B %Y}."
        )
    else:
        notes.append(
            f"The thresholds match the seal of {sealed_on:%d %B %Y}, before the pilot started."
        )
    return warnings, notes


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _check_git(pilot: Pilot) -> tuple[list[str], list[str]]:
    folder, name = pilot.folder, pilot.path.name
    log = _git(["log", "--format=%H %cs", "--", name], folder)
    if not log or not log.strip():
        return [], []
    start = pilot.pilot_window.start
    commits = [line.split() for line in log.strip().splitlines()]
    warnings = []
    for sha, day in commits:
        if dt.date.fromisoformat(day) <= start:
            continue
        now = _git(["show", f"{sha}:./{name}"], folder)
        before = _git(["show", f"{sha}~1:./{name}"], folder)
        if now is None:
            continue
        try:
            kpis_now = (yaml.safe_load(now) or {}).get("kpis")
            kpis_before = (yaml.safe_load(before) or {}).get("kpis") if before else None
        except yaml.YAMLError:
            continue
        if kpis_before is not None and _fingerprint_kpis(kpis_now) != _fingerprint_kpis(
            kpis_before
        ):
            warnings.append(
                f"git history: commit {sha[:10]} on {day} changed the KPI thresholds after the "
                f"pilot started on {start:%d %B %Y}."
            )
    notes = []
    first_day = dt.date.fromisoformat(commits[-1][1])
    if not warnings:
        if first_day <= start:
            notes.append(
                f"git history: the thresholds are unchanged since the pilot started "
                f"({len(commits)} commit(s) to the pilot file, the first on {first_day:%d %B %Y})."
            )
        else:
            notes.append(
                f"git history of the pilot file begins on {first_day:%d %B %Y}, after the pilot "
                "started; it shows no change to the thresholds since, but cannot show when they "
                "were agreed."
            )
    return warnings, notes


def check_thresholds(pilot: Pilot) -> tuple[list[str], list[str]]:
    """``(warnings, notes)`` about whether the thresholds were fixed before the pilot started.

    Warnings go on the go/no-go page beside the decision; notes record the
    evidence that the thresholds held. Without a lock or git history both are empty.
    """
    warnings, notes = _check_lock(pilot)
    git_warnings, git_notes = _check_git(pilot)
    return warnings + git_warnings, notes + git_notes
