"""Run folders: ``<out>/<pilot>/<run id>/`` and the ``latest`` pointer.

Shared by the runner (which makes run folders) and the exports (which read the
newest finished run of each pilot), so neither imports the other.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path

__all__ = ["LATEST", "latest_run_dir", "new_run_id", "point_latest"]

LATEST = "latest"


def new_run_id(now: dt.datetime | None = None) -> str:
    """``20261124T231500Z-3f9a``: sortable UTC time plus a random suffix (two runs in one second differ)."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def latest_run_dir(pilot_folder: Path) -> Path | None:
    """The run the ``latest`` pointer names, or None."""
    link = pilot_folder / LATEST
    if link.is_symlink() or link.is_dir():
        target = link.resolve()
        return target if target.is_dir() else None
    if link.is_file():  # fallback pointer on systems without symlinks
        target = pilot_folder / link.read_text(encoding="utf-8").strip()
        return target if target.is_dir() else None
    return None


def point_latest(pilot_folder: Path, run_dir: Path) -> None:
    """Point ``<pilot_folder>/latest`` at ``run_dir`` atomically (a symlink, else a text file)."""
    tmp = pilot_folder / f".{LATEST}.{secrets.token_hex(3)}"
    try:
        os.symlink(run_dir.name, tmp, target_is_directory=True)
    except (OSError, NotImplementedError):
        tmp.write_text(run_dir.name + "\n", encoding="utf-8")
    os.replace(tmp, pilot_folder / LATEST)
