"""Run folders: ``<out>/<pilot>/<run id>/``, the ``latest`` pointer, and safe writes.

Shared by the runner (which makes run folders) and the exports (which read the
newest finished run of each pilot), so neither imports the other.

Every file a run leaves is written whole or not at all
(:func:`atomic_write_text`, :func:`atomic_write_bytes`: a temporary file in the
same folder, flushed, then renamed over the target), so a full disk or a killed
process never leaves a zero-byte or truncated file looking like a result.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import secrets
import tempfile
from pathlib import Path

from pilot_lib.errors import WorkbookError

__all__ = [
    "LATEST",
    "RESERVE",
    "WorkingFolderError",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable",
    "latest_run_dir",
    "new_run_id",
    "overwrite_in_place",
    "point_latest",
    "release_reserve",
    "reserve_space",
]

LATEST = "latest"

#: A file of :data:`RESERVE_BYTES` the runner keeps in a run folder while the run
#: runs, and deletes to free room for the last ``run.json`` when the disk fills up.
RESERVE = ".run.reserve"
RESERVE_BYTES = 256 * 1024


class WorkingFolderError(WorkbookError):
    """A folder the workbook writes to (run folders, quarantine, spill) cannot be written."""


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
        atomic_write_text(tmp, run_dir.name + "\n")
    os.replace(tmp, pilot_folder / LATEST)


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` whole or not at all; returns ``path``.

    The bytes go to a temporary file beside ``path`` (same folder, so the rename
    cannot cross file systems), are flushed to disk, and the file is renamed over
    ``path``. On any error (a full disk: ``ENOSPC``; a read-only folder) the
    temporary file is removed and the ``OSError`` is raised with ``path`` as its
    ``filename``, so the message names the file that could not be written; an
    earlier ``path`` is left as it was. ``mode``: the file's permissions
    (``mkstemp`` would leave 0600).
    """
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _naming(exc, target) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(exc, target) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write_bytes` for text (UTF-8 by default)."""
    return atomic_write_bytes(path, text.encode(encoding))


def overwrite_in_place(path: str | Path, data: bytes) -> bool:
    """Last resort on a full disk: write ``data`` over ``path``'s own blocks.

    Only when ``path`` exists and the blocks it already holds fit ``data`` (so no
    new block is needed); the file is overwritten from its start, then cut to
    ``len(data)``. Not atomic: for the final ``run.json`` of a run the disk
    filled up under, which would otherwise keep saying ``running``. Returns
    whether it was written.
    """
    target = Path(path)
    try:
        allocated = target.stat().st_blocks * 512
    except OSError:
        return False
    if allocated < len(data):
        return False
    try:
        fd = os.open(target, os.O_WRONLY)
    except OSError:
        return False
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _naming(exc: OSError, target: Path) -> OSError:
    """``exc`` with ``target`` as the file it names (not the temporary file)."""
    return type(exc)(exc.errno, exc.strerror or str(exc), str(target))


def check_writable(folder: str | Path, what: str, how: str, create: bool = True) -> Path:
    """Make ``folder`` (and its parents) and prove a file can be written in it.

    ``what`` names the folder for the reader ("the run folder root"), ``how``
    says how to choose another ("pass --out DIR"). Raises
    :class:`WorkingFolderError` naming the folder, the reason and ``how``; the
    probe file is removed. ``create=False``: a folder made only when needed (a
    quarantine) is not made; the probe goes to its nearest existing parent.
    Returns the folder, resolved.
    """
    path = Path(folder).expanduser()
    try:
        probe_dir = path
        if create:
            path.mkdir(parents=True, exist_ok=True)
        else:
            while not probe_dir.exists() and probe_dir != probe_dir.parent:
                probe_dir = probe_dir.parent
            if not probe_dir.is_dir():
                raise FileExistsError(errno.EEXIST, "a file of that name is in the way")
        fd, probe = tempfile.mkstemp(prefix=".pilot-workbook-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EEXIST or (path.exists() and not path.is_dir()):
            reason = "a file of that name is in the way"
        raise WorkingFolderError(
            f"cannot write to {what} {path.resolve()}: {reason}; {how}"
        ) from None
    return path.resolve()


def reserve_space(run_dir: Path) -> None:
    """Keep :data:`RESERVE_BYTES` in ``run_dir`` for the last ``run.json`` (best effort)."""
    with contextlib.suppress(OSError):
        atomic_write_bytes(run_dir / RESERVE, b"\0" * RESERVE_BYTES)


def release_reserve(run_dir: Path) -> bool:
    """Delete the reserve file; True if there was one (room was freed)."""
    try:
        (run_dir / RESERVE).unlink()
    except OSError:
        return False
    return True
