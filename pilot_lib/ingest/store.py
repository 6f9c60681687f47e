"""The checked evidence store: every data set read, typed and checked once per run.

The ingest stage (:func:`build_store`) opens each data set the pilot file
names, enforces its contract in the engine (:mod:`pilot_lib.ingest.contracts`)
and writes, into one folder:

- ``<data set>.parquet``: every row read, in contract types, with the
  ``_quarantine_rule`` column (null for a valid row). Phases read the valid
  rows (``_quarantine_rule IS NULL``); Parquet lets them read only the columns
  a query needs. On Spark it is a folder of part files written by Spark.
  A log-sized data set read from large Parquet files already in its contract
  types is held as a view instead (``storage: view`` in the manifest): the store
  keeps ``<data set>.excluded.parquet``, the row number (and file) of every
  quarantined row with its rule, and reads the input itself minus those rows;
  the input's fingerprint pins it (docs/architecture.md, "Copy or view").
- the quarantine: ``<quarantine_dir>/<data set>.parquet`` with the raw values
  of every row that broke a rule and the rule (only for data sets with such rows);
- ``manifest.json``: the store's format, the package version, the engine, the
  pilot file's SHA-256, the fingerprint (size, modification time, SHA-256) of
  every input file (the SHA-256 computed only when size or time changed since
  the earlier manifest: ``fingerprints``), rows / valid / quarantined per data
  set and rule, and the rows each flag rule marks (kept and used, but counted:
  ``flags``).

Parquet per data set (rather than one DuckDB database file) because both
engines read and write it natively, several phase processes can read it at
once without a lock, and a phase reads only the columns it needs.

Every phase opens the store read-only with :func:`open_store`; it never
re-validates. :func:`ensure_store` reuses a store whose manifest matches the
pilot file and the inputs' fingerprints, and rebuilds it otherwise, so an
analyst who opens one notebook alone gets the store built once and reused
after. A store is written into a temporary folder and renamed into place when
complete: an interrupted build leaves no half-written store behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.types as ir
import pandas as pd
from ibis.backends import BaseBackend

from pilot_lib import __version__
from pilot_lib.config import (
    AUXILIARY_DATASETS,
    DATASET_NAMES,
    TRACE_FORMATS,
    EngineSettings,
    Pilot,
    load_pilot,
)
from pilot_lib.errors import ContractError, DataSourceError, WorkbookError
from pilot_lib.ingest.engine import (
    connect_engine,
    duckdb_to_parquet,
    engine_label,
    error_text,
    remove_spill,
    spark_errors,
    write_failure,
)
from pilot_lib.ingest.evidence import QUARANTINE_RULE_COLUMN, DatasetCheck, PilotData
from pilot_lib.ingest.sources import describe_source, open_dataset, open_source
from pilot_lib.runs import WorkingFolderError, check_writable

if TYPE_CHECKING:  # the contracts (pandera) load only when a store is built
    from pilot_lib.ingest.contracts import ContractSplit, ValidationReport

__all__ = [
    "MANIFEST",
    "STORE_FORMAT",
    "StoreInfo",
    "build_store",
    "default_store_dir",
    "ensure_store",
    "input_fingerprints",
    "open_store",
    "store_is_current",
    "validate_pilot",
]

#: Version of the store's layout; a store of another format is rebuilt.
STORE_FORMAT = 2  # 2: data sets held as views beside copies (manifest "storage")
MANIFEST = "manifest.json"

_HASH_CHUNK = 1 << 20

#: Data sets that can hold millions of rows: written in whatever order the engine likes.
_LOG_SIZED = ("decisions", "cases", "tool_calls")


#: A log-sized Parquet input already in contract types at least this large (bytes, all
#: its files) is kept where it is: the store holds a view over it (the quarantined rows'
#: row numbers beside it, the input's fingerprint pinning it) instead of a checked copy.
#: Smaller inputs are copied (a copy costs little and keeps the store self-contained).
VIEW_MIN_BYTES = 4 * 2**20

#: The row identity of a view's input: the file (several files only) and the row in it.
_ROW_FILE = "filename"
_ROW_NUMBER = "file_row_number"


class StoreError(WorkbookError):
    """A checked evidence store that cannot be used (missing, incomplete, another pilot)."""


@dataclass
class StoreInfo:
    """Where a store is and whether this call built it or found it current."""

    path: Path
    manifest: dict[str, Any]
    action: str  # "built" | "reused"
    seconds: float = 0.0
    reason: str = ""  # why a store was (re)built

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    def note(self) -> str:
        """One sentence for a notebook's data-quality section (plus one per data set
        built from traces: its reconciliation and notes)."""
        engine = self.manifest.get("engine_label", self.manifest.get("engine", {}).get("name"))
        if self.action == "reused":
            text = (
                "The checked evidence store was reused: the pilot file and every input "
                f"file are unchanged since it was built (engine {engine}; fingerprint "
                f"{self.fingerprint[:12]})."
            )
        else:
            why = f" ({self.reason})" if self.reason else ""
            text = (
                f"The checked evidence store was built now{why}: every data set was read and "
                f"checked once (engine {engine}; fingerprint {self.fingerprint[:12]})."
            )
        for name, entry in (self.manifest.get("datasets") or {}).items():
            traces = entry.get("traces")
            if traces:
                notes = "".join(f" Note: {n}." for n in traces.get("notes") or [])
                text += f" The {name} log was built from {traces['format']} traces: {traces['summary']}.{notes}"
        return text


# ---- fingerprints --------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files_of(pilot: Pilot, name: str) -> list[Path] | None:
    """The local files behind data set ``name``; None for a URL (no fingerprint)."""
    import glob

    src = pilot.datasets[name]
    if src.path:
        target = pilot.resolve(src.path)
        if any(ch in src.path for ch in "*?["):
            return sorted(Path(p) for p in glob.glob(str(target), recursive=True))
        if target.is_dir():
            return sorted(p for p in target.rglob("*") if p.is_file())
        return [target]
    if src.database:
        return [pilot.resolve(src.database)]
    uri = src.uri or ""
    if uri.lower().startswith("duckdb://"):
        rest = uri[len("duckdb://") :].split("?", 1)[0]
        if rest and rest != ":memory:":
            return [pilot.resolve(rest)]
    return None


#: How the manifest states the fingerprint rule (``manifest["fingerprints"]["rule"]``).
FINGERPRINT_RULE = (
    "size and modification time (ns) of every input file; its SHA-256 is computed only "
    "when one of them differs from the earlier store's manifest, and taken from it otherwise"
)


def input_fingerprints(
    pilot: Pilot,
    known: dict[str, Any] | None = None,
    hashed: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per data set: the fingerprint of each input file, or ``{"uri": ...}`` for a URL.

    A file's fingerprint is its size, modification time (ns) and SHA-256. When a
    file's size and modification time equal those in ``known`` (an earlier
    manifest's ``inputs``), its SHA-256 is taken from there instead of re-read,
    as git does for its index. ``hashed``, when given, receives the path of every
    file whose SHA-256 was computed (read whole) by this call.
    """
    known = known or {}
    out: dict[str, dict[str, Any]] = {}
    for name in (*DATASET_NAMES, *AUXILIARY_DATASETS):
        if name not in pilot.datasets:
            continue
        files = _files_of(pilot, name)
        if files is None:
            out[name] = {"uri": describe_source(pilot.datasets[name]), "files": None}
            continue
        before = {f["path"]: f for f in (known.get(name, {}).get("files") or [])}
        entries = []
        for path in files:
            try:
                st = path.stat()
            except OSError:
                entries.append({"path": str(path), "missing": True})
                continue
            old = before.get(str(path))
            if old and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
                sha = old["sha256"]
            else:
                sha = _sha256(path)
                if hashed is not None:
                    hashed.append(str(path))
            entries.append(
                {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
            )
        out[name] = {"uri": None, "files": entries}
    return out


def _fingerprint_note(inputs: dict[str, Any], hashed: list[str]) -> dict[str, Any]:
    """The manifest's statement of how the inputs' fingerprints were taken."""
    files = [f for v in inputs.values() for f in (v["files"] or []) if "sha256" in f]
    return {
        "rule": FINGERPRINT_RULE,
        "sha256_computed": sorted(hashed),
        "sha256_reused": len(files) - len(hashed),
    }


def _fingerprint(pilot: Pilot, engine: EngineSettings, inputs: dict[str, Any]) -> str:
    """One SHA-256 over what decides the store's content."""
    key = {
        "format": STORE_FORMAT,
        "package_version": __version__,
        "pilot_file_sha256": pilot.file_hash,
        "engine": engine.name,
        "inputs": {
            n: [f.get("sha256") for f in (v["files"] or [])] or v["uri"] for n, v in inputs.items()
        },
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


# ---- building ------------------------------------------------------------------------


def _store_file(store_dir: Path, name: str) -> Path:
    return store_dir / f"{name}.parquet"


def _write(table: ir.Table, path: Path) -> None:
    """Write ``table`` as Parquet with the engine (DuckDB: one file; Spark: a folder)."""
    backend = table.get_backend()
    if backend.name == "duckdb":
        duckdb_to_parquet(table, path)
    elif backend.name == "pyspark":
        backend.to_parquet(table, path, mode="overwrite")
    else:  # another Ibis backend: stream record batches through pyarrow on this machine
        import pyarrow.parquet as pq

        with table.to_pyarrow_batches() as reader, pq.ParquetWriter(path, reader.schema) as w:
            for batch in reader:
                w.write_batch(batch)


def _read(con: BaseBackend, path: Path) -> ir.Table:
    if con.name == "duckdb" and path.is_dir():
        return con.read_parquet(str(path / "*.parquet"))
    return con.read_parquet(str(path))


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


@contextlib.contextmanager
def _staging(store_dir: Path) -> Iterator[Path]:
    """A fresh sibling folder renamed to ``store_dir`` on success, removed on failure."""
    store_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = store_dir.parent / f".{store_dir.name}.building-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_store(
    pilot: Pilot | str | Path,
    store_dir: str | Path,
    *,
    engine: EngineSettings | None = None,
    quarantine_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    reason: str = "",
    _inputs: tuple[dict[str, Any], list[str]] | None = None,
) -> StoreInfo:
    """Read, type and check every data set once and write the checked evidence store.

    Parameters
    ----------
    pilot:
        A loaded :class:`Pilot`, or a pilot folder / file.
    store_dir:
        The store's folder (``<run>/store`` in a batch run). An existing store
        there is replaced only once the new one is complete.
    engine:
        Engine settings (default: the pilot file's ``engine``).
    quarantine_dir:
        Folder for ``<data set>.parquet`` quarantine files (default
        ``<store_dir>/quarantine``).
    overrides:
        Data set name -> source used instead of the pilot file's entry (a
        DataFrame, an Ibis table or a path); for notebooks and tests. A store
        built with overrides is never reused.

    Returns
    -------
    StoreInfo
        The manifest and ``action="built"``.

    Raises
    ------
    PilotFileError, DataSourceError, ContractError
        A bad pilot file, an unreadable source, a missing required column.
    """
    from pilot_lib.ingest.contracts import contract_columns

    if not isinstance(pilot, Pilot):
        pilot = load_pilot(pilot)
    engine = engine or pilot.engine
    store_dir = Path(store_dir).resolve()
    outside = Path(quarantine_dir).resolve() if quarantine_dir else None
    # the folders it writes, proved writable before any data set is read
    check_writable(
        store_dir.parent,
        "the folder of the checked evidence store",
        "choose another: pilot-workbook run --out DIR, or run validate from a folder you "
        "can write (it writes runs/<pilot>/ under the current folder)",
    )
    if outside is not None:
        check_writable(
            outside,
            "the quarantine folder",
            "choose another with --quarantine-dir DIR",
            create=False,  # made only when a row is quarantined
        )
    overrides = overrides or {}
    started = time.perf_counter()
    if _inputs is not None:  # taken just now by ensure_store: not hashed twice
        inputs, hashed = _inputs
    else:
        earlier = read_manifest(store_dir)
        hashed = []
        inputs = input_fingerprints(
            pilot, known=(earlier or {}).get("inputs") if not overrides else None, hashed=hashed
        )
    with _staging(store_dir) as tmp:
        spill = tmp / "spill"
        # the default quarantine lives in the store and moves with it
        quarantine = outside or tmp / "quarantine"
        con = connect_engine(engine, spill_dir=spill)
        if con.name == "duckdb":
            # the decision log's order carries no meaning; letting DuckDB write in any
            # order halves the write time and the memory it needs
            con.raw_sql("SET preserve_insertion_order = false")
        datasets: dict[str, Any] = {}
        traced_calls = None  # tool_calls built from the decisions' spans, if any
        try:
            for name in DATASET_NAMES:
                if name in overrides:
                    src = overrides[name]
                    raw = open_source(
                        src,
                        con,
                        base_dir=pilot.folder,
                        label=name,
                        text_columns=contract_columns(name),
                    )
                    shown = describe_source(src)
                elif (
                    name == "tool_calls" and name not in pilot.datasets and traced_calls is not None
                ):
                    # no tool_calls data set named: the decisions' execute_tool spans
                    shown = f"execute_tool spans of {describe_source(pilot.datasets['decisions'])}"
                    datasets[name] = _ingest_one(
                        name, traced_calls, pilot, shown, con, tmp, store_dir, quarantine
                    )
                    datasets[name]["from_traces"] = True
                    continue
                elif name in pilot.datasets and pilot.datasets[name].format in TRACE_FORMATS:
                    traced = _open_traces(pilot, name, con, tmp, store_dir, quarantine)
                    raw = traced.pop("table")
                    traced_calls = traced.pop("tool_calls")
                    shown = describe_source(pilot.datasets[name])
                    datasets[name] = _ingest_one(
                        name, raw, pilot, shown, con, tmp, store_dir, quarantine
                    )
                    datasets[name]["traces"] = traced
                    continue
                elif name in pilot.datasets:
                    shown = describe_source(pilot.datasets[name])
                    files = _view_files(pilot, name, con)
                    if files is not None:
                        datasets[name] = _ingest_view(
                            name, files, pilot, shown, con, tmp, store_dir, quarantine
                        )
                        continue
                    raw = open_dataset(pilot, name, con, text_columns=contract_columns(name))
                else:
                    continue
                datasets[name] = _ingest_one(
                    name, raw, pilot, shown, con, tmp, store_dir, quarantine
                )
        finally:
            remove_spill(spill)
            _disconnect(con)
        manifest = {
            "format": STORE_FORMAT,
            "status": "complete",
            "package_version": __version__,
            "pilot": pilot.name,
            "pilot_file": str(pilot.path),
            "pilot_file_sha256": pilot.file_hash,
            "engine": engine.model_dump(),
            "engine_label": engine_label(engine),
            "inputs": inputs,
            "overrides": sorted(overrides),
            "fingerprint": _fingerprint(pilot, engine, inputs),
            "fingerprints": _fingerprint_note(inputs, hashed),
            "datasets": datasets,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        old = None
        if store_dir.exists():
            old = store_dir.parent / f".{store_dir.name}.old-{secrets.token_hex(4)}"
            os.replace(store_dir, old)
        os.replace(tmp, store_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return StoreInfo(store_dir, manifest, "built", round(time.perf_counter() - started, 3), reason)


def _open_traces(
    pilot: Pilot, name: str, con: BaseBackend, tmp: Path, store_dir: Path, quarantine: Path
) -> dict[str, Any]:
    """Build data set ``name`` from its trace files; write the span quarantine.

    Returns the manifest's ``traces`` entry (format, reconciliation counts, notes,
    the span quarantine file ``<quarantine>/<name>.spans.parquet`` or None) plus
    ``table``: the decision log the contract is to check.
    """
    from pilot_lib.ingest.contracts import engine_errors
    from pilot_lib.ingest.traces import open_trace_decisions

    shown = describe_source(pilot.datasets[name])
    try:
        built = open_trace_decisions(pilot, con, name)
        recon = built.reconciliation
        q_path = None
        if recon.spans_quarantined:
            quarantine.mkdir(parents=True, exist_ok=True)
            q_path = quarantine / f"{name}.spans.parquet"
            _write_quarantine(built.quarantine, q_path)
    except (*engine_errors(), *spark_errors()) as exc:
        _raise_write_failure(exc, name, quarantine)
        raise DataSourceError(
            f"data set {name!r} ({shown}, format {pilot.datasets[name].format}): building "
            f"the decision log from the spans failed: {error_text(exc)}. Check the trace "
            "files for malformed spans (docs/trace-sources.md)."
        ) from exc
    return {
        "table": built.decisions,
        "tool_calls": built.tool_calls,
        "format": pilot.datasets[name].format,
        "reconciliation": recon.as_dict(),
        "summary": recon.summary(),
        "notes": list(built.notes),
        "span_quarantine_file": (
            None
            if q_path is None
            else _relative(q_path, tmp if q_path.is_relative_to(tmp) else store_dir)
        ),
    }


def _disconnect(con: BaseBackend) -> None:
    if con.name == "duckdb":
        with contextlib.suppress(Exception):
            con.disconnect()


def _ordered(table: ir.Table, name: str) -> ir.Table:
    """Small data sets keep a stable row order, so what is built from them is the same
    from run to run; log-sized ones are written in whatever order the engine likes."""
    from pilot_lib.ingest.contracts import contract_columns

    if name in _LOG_SIZED:
        return table
    return table.order_by(
        [ibis.asc(c, nulls_first=False) for c in contract_columns(name) if c in table.columns]
    )


def _write_in_parts(split: ContractSplit, folder: Path) -> Path:
    """A log-sized data set with one unique key, on DuckDB: each row checked once.

    The keys that more than one row holds are found first (a GROUP BY over the key
    column alone; the result is small). Part 0 is every row whose key is not among
    them, checked and written in one pass; part 1 holds the rows of repeated keys,
    with the later ones of each key marked as duplicates. A clean log has no part 1.
    """
    from pilot_lib.ingest.contracts import small_table

    (key, _label), *_ = split.keys
    stage = split.checked
    repeated = small_table(
        stage.group_by(list(key)).aggregate(__n=ibis._.count()).filter(ibis._.__n > 1)
    ).select(*key)
    folder.mkdir()
    if not int(repeated.count().execute()):
        _write(stage, folder / "part-0.parquet")
        return folder
    _write(stage.anti_join(repeated, list(key)).select(*stage.columns), folder / "part-0.parquet")
    held = stage.semi_join(repeated, list(key)).select(*stage.columns)
    _write(split.mark_duplicates(held), folder / "part-1.parquet")
    return folder


def _write_in_two_passes(split: ContractSplit, name: str, con: BaseBackend, tmp: Path) -> Path:
    """Pass 1 evaluates the casts and the rules once and writes them; pass 2, only when
    some key repeats, marks the later rows of each repeated key in a rewrite."""
    target = _store_file(tmp, name)
    staged_path = tmp / f".staged_{name}.parquet"
    _write(_ordered(split.checked, name), staged_path)
    staged = _read(con, staged_path)
    if split.has_repeated_keys(staged):
        _write(_ordered(split.mark_duplicates(staged), name), target)
        _remove(staged_path)
    else:
        os.replace(staged_path, target)
    return target


def _raise_write_failure(exc: BaseException, name: str, quarantine: Path) -> None:
    """Raise :class:`WorkingFolderError` when ``exc`` is a failed write, blaming the folder
    (a full disk, a read-only folder), not the data set being read."""
    why = write_failure(exc)
    if why is None:
        return
    raise WorkingFolderError(
        f"data set {name!r} was read, but its checked rows or quarantine could not be "
        f"written (store or quarantine folder {quarantine.parent}): {why}. Free space there, "
        "or choose another folder: pilot-workbook run --out DIR, or validate --quarantine-dir "
        "DIR from a folder you can write"
    ) from exc


def _ingest_one(
    name: str,
    raw: ir.Table,
    pilot: Pilot,
    shown: str,
    con: BaseBackend,
    tmp: Path,
    store_dir: Path,
    quarantine: Path,
) -> dict[str, Any]:
    """Check one data set; write its checked rows and its quarantine. Returns its manifest entry."""
    from pilot_lib.errors import EngineMemoryError
    from pilot_lib.ingest.contracts import engine_errors, flag_counts, validate_dataset

    split = validate_dataset(name, raw, pilot, source=shown, dedupe=False)
    try:
        if con.name == "duckdb" and name in _LOG_SIZED and len(split.keys) == 1:
            target = _write_in_parts(split, tmp / name)
        else:
            target = _write_in_two_passes(split, name, con, tmp)
        checked = _read(con, target)
        counts = (
            checked.group_by(rule=checked[QUARANTINE_RULE_COLUMN])
            .aggregate(rows=checked.count())
            .execute()
        )
        bad = counts.loc[counts["rule"].notna()]
        n_bad = int(bad["rows"].sum())
        q_path = None
        if n_bad:
            quarantine.mkdir(parents=True, exist_ok=True)
            q_path = quarantine / f"{name}.parquet"
            if q_path.is_dir():
                shutil.rmtree(q_path)
            _write_quarantine(split.quarantined_from(checked), q_path)
        flags = flag_counts(name, split.valid_from(checked), pilot)
    except EngineMemoryError as exc:
        raise EngineMemoryError(f"data set {name!r} ({shown}): {exc}") from None
    except (*engine_errors(), *spark_errors()) as exc:
        _raise_write_failure(exc, name, quarantine)
        raise DataSourceError(
            f"data set {name!r} ({shown}): reading or checking it failed: "
            f"{error_text(exc)}. Check the file for malformed rows."
        ) from exc
    by_rule = (
        bad[["rule", "rows"]]
        .astype({"rows": "int64"})
        .sort_values(["rows", "rule"], ascending=[False, True], kind="stable")
    )
    n_rows = int(counts["rows"].sum())
    return {
        "source": shown,
        "storage": "copy",
        "file": target.name,
        "rows": n_rows,
        "valid": n_rows - n_bad,
        "quarantined": n_bad,
        "by_rule": [{"rule": r, "rows": int(n)} for r, n in by_rule.itertuples(index=False)],
        "flags": [{"flag": f, "rows": n} for f, n in flags.items()],
        "valid_columns": list(split.valid_columns),
        "quarantine_columns": dict(split.quarantine_columns),
        "quarantine_file": (
            None
            if q_path is None
            else _relative(q_path, tmp if q_path.is_relative_to(tmp) else store_dir)
        ),
    }


# ---- views over inputs already in contract types ----------------------------------------


def _view_files(pilot: Pilot, name: str, con: BaseBackend) -> list[Path] | None:
    """The input files the store can hold a view over instead of a copy, else None.

    A view needs: DuckDB; a log-sized data set (one single-column unique key) read
    from local Parquet files totalling at least :data:`VIEW_MIN_BYTES`; every
    contract column it holds already in its contract type; no column named like
    the row identity (``filename``, ``file_row_number``).
    """
    from pilot_lib.ingest.contracts import contract, in_contract_types
    from pilot_lib.ingest.sources import infer_format

    src = pilot.datasets[name]
    if con.name != "duckdb" or name not in _LOG_SIZED or not src.path:
        return None
    if (src.format or infer_format(src.path)) != "parquet":
        return None
    schema = contract(name)
    if schema.unique or sum(1 for c in schema.columns.values() if c.unique) != 1:
        return None
    files = _files_of(pilot, name)
    if not files or not all(f.is_file() for f in files):
        return None
    if sum(f.stat().st_size for f in files) < VIEW_MIN_BYTES:
        return None
    try:
        plain = con.read_parquet([str(f) for f in files])
    except Exception:  # unreadable: the copy path reports it with its own message
        return None
    if _ROW_FILE in plain.columns or _ROW_NUMBER in plain.columns:
        return None
    return files if in_contract_types(name, plain) else None


def _row_id(files: list[str] | list[Path]) -> list[str]:
    return [_ROW_FILE, _ROW_NUMBER] if len(files) > 1 else [_ROW_NUMBER]


def _open_rows(con: BaseBackend, files: list[str]) -> ir.Table:
    """The input files with each row's identity (its row number, and its file if several)."""
    return con.read_parquet(files, file_row_number=True, filename=len(files) > 1)


def _ingest_view(
    name: str,
    files: list[Path],
    pilot: Pilot,
    shown: str,
    con: BaseBackend,
    tmp: Path,
    store_dir: Path,
    quarantine: Path,
) -> dict[str, Any]:
    """Check one data set that stays where it is; write the identities of its quarantined
    rows (``<name>.excluded.parquet``: row id and rule) and its quarantine.

    Pass 1, over every row: the contract's rules are evaluated and, in the same
    aggregate, the rows are grouped by a 64-bit hash of the key; the hashes held by
    more than one row or by a row that broke a rule come out (small). Only when some
    did: the keys with those hashes are found (a scan of the key column), the rows
    holding them (and every row without a key) are read into a temporary table
    (:func:`_rows_of_marked_keys`), and the contract is checked there with its
    duplicate rule: the rules are row by row, and every row of a repeated key is in
    that table, so the result is exact (a hash collision only adds rows to it).
    """
    from pilot_lib.errors import EngineMemoryError
    from pilot_lib.ingest.contracts import engine_errors, flag_counts, small_table, validate_dataset
    from pilot_lib.ingest.engine import materialize

    paths = [str(f) for f in files]
    row_id = _row_id(paths)
    rule = QUARANTINE_RULE_COLUMN
    try:
        raw = _open_rows(con, paths)
        split = validate_dataset(name, raw, pilot, source=shown, dedupe=False)
        ((key,), _label), *_ = split.keys
        checked = split.checked.mutate(__key_hash=split.checked[key].hash())
        marks = small_table(
            checked.group_by("__key_hash")
            .aggregate(__n=ibis._.count(), __bad=ibis._[rule].count())
            .filter((ibis._.__n > 1) | (ibis._.__bad > 0))
            .select("__key_hash")
        )
        excluded_path = tmp / f"{name}.excluded.parquet"
        if int(marks.count().execute()):
            subset = materialize(_rows_of_marked_keys(raw, key, marks), f"flagged_{name}")
            # the rules are row by row, so a row breaks the same one here; every row of
            # a repeated key is in the subset, so its duplicates are marked exactly
            split = validate_dataset(name, subset, pilot, source=shown, dedupe=True)
            bad = materialize(split.checked.filter(split.checked[rule].notnull()), f"bad_{name}")
        else:
            bad = split.checked.filter(ibis.literal(False))
        _write(bad.select(*row_id, rule), excluded_path)
        excluded = _read(con, excluded_path)
        counts = excluded.group_by(rule=excluded[rule]).aggregate(rows=excluded.count()).execute()
        n_rows = int(raw.count().execute())
        n_bad = int(counts["rows"].sum()) if len(counts) else 0
        q_cols = {k: v for k, v in split.quarantine_columns.items() if k not in row_id}
        q_path = None
        if n_bad:
            quarantine.mkdir(parents=True, exist_ok=True)
            q_path = quarantine / f"{name}.parquet"
            if q_path.is_dir():
                shutil.rmtree(q_path)
            _write_quarantine(bad.select(**{out: bad[c] for out, c in q_cols.items()}), q_path)
        valid_columns = [c for c in split.valid_columns if c not in row_id]
        valid, _ = _view_tables(
            con, name, paths, excluded if n_bad else None, valid_columns, q_cols
        )
        flags = flag_counts(name, valid, pilot)
    except EngineMemoryError as exc:
        raise EngineMemoryError(f"data set {name!r} ({shown}): {exc}") from None
    except (*engine_errors(), *spark_errors()) as exc:
        _raise_write_failure(exc, name, quarantine)
        raise DataSourceError(
            f"data set {name!r} ({shown}): reading or checking it failed: "
            f"{error_text(exc)}. Check the file for malformed rows."
        ) from exc
    by_rule = counts[["rule", "rows"]].astype({"rows": "int64"}) if n_bad else counts
    by_rule = by_rule.sort_values(["rows", "rule"], ascending=[False, True], kind="stable")
    return {
        "source": shown,
        "storage": "view",
        "file": excluded_path.name,
        "view_of": paths,
        "row_id": row_id,
        "rows": n_rows,
        "valid": n_rows - n_bad,
        "quarantined": n_bad,
        "by_rule": [{"rule": r, "rows": int(n)} for r, n in by_rule.itertuples(index=False)],
        "flags": [{"flag": f, "rows": n} for f, n in flags.items()],
        "valid_columns": valid_columns,
        "quarantine_columns": q_cols,
        "quarantine_file": (
            None
            if q_path is None
            else _relative(q_path, tmp if q_path.is_relative_to(tmp) else store_dir)
        ),
    }


#: At most this many repeated or broken keys are looked up by value (a filter the Parquet
#: reader applies); more are found by a semi-join on their hashes (a scan of every column).
_KEYS_BY_VALUE = 10_000


def _rows_of_marked_keys(raw: ir.Table, key: str, marks: ir.Table) -> ir.Table:
    """The rows of ``raw`` whose ``key`` hashes to one of ``marks.__key_hash``, and every
    row without a key (small: the rows of repeated keys and of keys with a broken row).

    The keys themselves come from a scan of the key column alone; the rows holding them
    are then read with a filter on the key's values, which the Parquet reader applies
    before it reads the other columns.
    """
    hashed = raw.select(key).mutate(__key_hash=raw[key].hash())
    keys = hashed.semi_join(marks, "__key_hash").select(key).distinct()
    values = keys.limit(_KEYS_BY_VALUE + 1).execute()[key]
    if len(values) <= _KEYS_BY_VALUE:
        found = [v for v in values.tolist() if pd.notna(v)]
        wanted = raw[key].isnull()
        if found:
            wanted = wanted | raw[key].isin(found)
        return raw.filter(wanted)
    with_hash = raw.mutate(__key_hash=raw[key].hash())
    return with_hash.semi_join(marks, "__key_hash").drop("__key_hash")


def _view_tables(
    con: BaseBackend,
    name: str,
    files: list[str],
    excluded: ir.Table | None,
    valid_columns: list[str],
    quarantine_columns: dict[str, str],
) -> tuple[ir.Table, ir.Table]:
    """The valid and the quarantined rows of a view entry: the input typed by the contract,
    without (valid) or with (quarantined) the rows listed in ``excluded``."""
    from pilot_lib.ingest.contracts import typed_table

    rows = typed_table(name, _open_rows(con, files))
    rule = QUARANTINE_RULE_COLUMN
    if excluded is None:  # nothing quarantined: the input as it is
        valid = rows.select(*valid_columns)
        quarantined = rows.filter(ibis.literal(False)).select(
            **{
                out: (ibis.null("string") if c == rule else rows[c])
                for out, c in quarantine_columns.items()
            }
        )
        return valid, quarantined
    row_id = _row_id(files)
    valid = rows.anti_join(excluded, row_id).select(*valid_columns)
    joined = rows.inner_join(excluded.select(*row_id, __rule=excluded[rule]), row_id)
    quarantined = joined.select(
        **{
            out: (joined["__rule"] if c == rule else joined[c])
            for out, c in quarantine_columns.items()
        }
    )
    return valid, quarantined


def _check_pinned(store_dir: Path, manifest: dict[str, Any], name: str) -> None:
    """Raise :class:`StoreError` when a view entry's input changed since the store was
    built (size or modification time differ and so does the SHA-256)."""
    pinned = {f["path"]: f for f in (manifest.get("inputs", {}).get(name) or {}).get("files") or []}
    for path in manifest["datasets"][name]["view_of"]:
        old = pinned.get(path)
        try:
            st = Path(path).stat()
        except OSError:
            st = None
        same = (
            old is not None
            and st is not None
            and (
                old.get("size") == st.st_size
                and old.get("mtime_ns") == st.st_mtime_ns
                or old.get("size") == st.st_size
                and _sha256(Path(path)) == old.get("sha256")
            )
        )
        if not same:
            raise StoreError(
                f"the store at {store_dir} holds data set {name!r} as a view over {path}, "
                "which changed (or is gone) since the store was built; rebuild it "
                "(pilot-workbook validate, or pilot-workbook run builds a fresh one)"
            )


def _write_quarantine(table: ir.Table, path: Path) -> None:
    """The quarantined rows as one Parquet file (small: the bad rows only)."""
    backend = table.get_backend()
    if backend.name == "duckdb":
        duckdb_to_parquet(table, path)
        return
    if backend.name == "pyspark":
        # Spark writes it in one task (no row passes through this process) into a
        # folder; its one part file becomes the quarantine file
        folder = path.with_name(f".{path.name}.spark")
        frame = backend.raw_sql(backend.compile(table))
        frame.coalesce(1).write.mode("overwrite").parquet(str(folder))
        (part,) = folder.glob("part-*.parquet")
        os.replace(part, path)
        shutil.rmtree(folder)
        return
    import pyarrow.parquet as pq

    with table.to_pyarrow_batches() as reader, pq.ParquetWriter(path, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)


# ---- reuse ---------------------------------------------------------------------------


def read_manifest(store_dir: str | Path) -> dict[str, Any] | None:
    """The store's manifest, or None when there is no complete store there."""
    path = Path(store_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("status") == "complete" else None


def store_is_current(
    pilot: Pilot, store_dir: str | Path, engine: EngineSettings | None = None
) -> tuple[bool, str]:
    """Whether the store at ``store_dir`` holds this pilot file's data as it is now.

    Returns ``(current, reason)``; ``reason`` says what changed when it is not.
    An input file whose size and modification time are those of the manifest is
    not read; one whose size or time changed is hashed (its SHA-256 decides).
    """
    current, reason, _inputs, _hashed = _currency(pilot, store_dir, engine or pilot.engine)
    return current, reason


def _currency(
    pilot: Pilot, store_dir: str | Path, engine: EngineSettings
) -> tuple[bool, str, dict[str, Any] | None, list[str]]:
    """:func:`store_is_current` plus the inputs' fingerprints now and the files it hashed."""
    manifest = read_manifest(store_dir)
    if manifest is None:
        return False, "no store yet", None, []
    if manifest.get("format") != STORE_FORMAT or manifest.get("package_version") != __version__:
        return False, "built by another version of the workbook", None, []
    if manifest.get("overrides"):
        return False, "the earlier store was built from in-memory data", None, []
    if manifest.get("pilot_file_sha256") != pilot.file_hash:
        return False, "the pilot file changed", None, []
    if manifest.get("engine", {}).get("name") != engine.name:
        return False, f"the engine changed to {engine.name}", None, []
    hashed: list[str] = []
    inputs = input_fingerprints(pilot, known=manifest.get("inputs"), hashed=hashed)
    for name, entry in inputs.items():
        if entry["files"] is None:
            return (
                False,
                f"data set {name} is read from a URL, which has no fingerprint",
                inputs,
                hashed,
            )
    if _fingerprint(pilot, engine, inputs) != manifest.get("fingerprint"):
        before = manifest.get("inputs", {})
        changed = sorted(
            n
            for n in inputs
            if [f.get("sha256") for f in inputs[n]["files"] or []]
            != [f.get("sha256") for f in (before.get(n) or {}).get("files") or []]
        )
        return False, f"input files changed ({', '.join(changed) or 'data sets'})", inputs, hashed
    for name, entry in manifest.get("datasets", {}).items():
        if not (Path(store_dir) / entry["file"]).exists():
            return False, f"the store's file for {name} is missing", inputs, hashed
    return True, "", inputs, hashed


def _refresh_times(store_dir: Path, inputs: dict[str, Any], hashed: list[str]) -> dict[str, Any]:
    """Record the new modification times of input files that were touched but not changed
    (their SHA-256 was recomputed and matched), so the next check does not hash them again.

    The manifest is replaced atomically (a temporary file renamed over it).
    """
    manifest = read_manifest(store_dir)
    assert manifest is not None
    manifest["inputs"] = inputs
    manifest["fingerprints"] = _fingerprint_note(inputs, hashed)
    tmp = store_dir / f".{MANIFEST}.{secrets.token_hex(4)}"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, store_dir / MANIFEST)
    return manifest


def ensure_store(
    pilot: Pilot | str | Path,
    store_dir: str | Path,
    *,
    engine: EngineSettings | None = None,
    quarantine_dir: str | Path | None = None,
) -> StoreInfo:
    """The store at ``store_dir``, reused when current (:func:`store_is_current`), else built."""
    if not isinstance(pilot, Pilot):
        pilot = load_pilot(pilot)
    engine = engine or _engine_of_store(store_dir) or pilot.engine
    current, reason, inputs, hashed = _currency(pilot, store_dir, engine)
    if current:
        path = Path(store_dir).resolve()
        if hashed and inputs is not None:  # touched, same content: remember the new times
            manifest = _refresh_times(path, inputs, hashed)
        else:
            manifest = read_manifest(store_dir)
        assert manifest is not None
        return StoreInfo(path, manifest, "reused")
    return build_store(
        pilot,
        store_dir,
        engine=engine,
        quarantine_dir=quarantine_dir,
        reason=reason,
        _inputs=None if inputs is None else (inputs, hashed),
    )


def _engine_of_store(store_dir: str | Path) -> EngineSettings | None:
    """The engine an existing store was built with (a run's ``--engine`` choice)."""
    manifest = read_manifest(store_dir)
    if manifest is None or "engine" not in manifest:
        return None
    return EngineSettings.model_validate(manifest["engine"])


def default_store_dir(pilot: Pilot) -> Path:
    """Where an analyst's store goes when a notebook runs without a run folder.

    ``$PILOT_WORKBOOK_CACHE`` if set, else ``$XDG_CACHE_HOME`` or ``~/.cache``,
    under ``agentic-pilot-workbook/stores/<pilot>-<hash of the pilot file's path>``.
    """
    root = os.environ.get("PILOT_WORKBOOK_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        base = base / "agentic-pilot-workbook" / "stores"
    where = hashlib.sha256(str(pilot.path).encode()).hexdigest()[:12]
    return base / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', pilot.name)}-{where}"


# ---- opening -------------------------------------------------------------------------


def open_store(
    store_dir: str | Path,
    pilot: Pilot | str | Path,
    *,
    con: BaseBackend | None = None,
) -> PilotData:
    """Open a complete store read-only as :class:`PilotData` (nothing is re-checked).

    ``con`` defaults to a new connection on the engine the store was built with
    (its memory limit and spill folder included). The pilot file must be the one
    the store was built from.
    """
    if not isinstance(pilot, Pilot):
        pilot = load_pilot(pilot)
    store_dir = Path(store_dir).resolve()
    manifest = read_manifest(store_dir)
    if manifest is None:
        raise StoreError(
            f"no complete checked evidence store at {store_dir}; build it with "
            "pilot-workbook run (or validate), or open the notebook with output_dir unset"
        )
    if manifest.get("pilot_file_sha256") != pilot.file_hash:
        raise StoreError(
            f"the store at {store_dir} was built from another version of the pilot file "
            f"{pilot.path}; rebuild it (pilot-workbook run builds a fresh one)"
        )
    if con is None:
        engine = EngineSettings.model_validate(manifest["engine"])
        con = connect_engine(engine, spill_dir=store_dir.parent / f".spill-{os.getpid()}")
    data = PilotData(pilot=pilot, con=con)
    for name in DATASET_NAMES:
        entry = manifest["datasets"].get(name)
        if entry is None:
            continue
        q_cols = entry["quarantine_columns"]
        if entry.get("storage") == "view":
            _check_pinned(store_dir, manifest, name)
            excluded = _read(con, store_dir / entry["file"]) if entry["quarantined"] else None
            data._valid[name], data._quarantined[name] = _view_tables(
                con, name, entry["view_of"], excluded, entry["valid_columns"], q_cols
            )
        else:
            checked = _read(con, store_dir / entry["file"])
            rule = checked[QUARANTINE_RULE_COLUMN]
            data._valid[name] = checked.filter(rule.isnull()).select(*entry["valid_columns"])
            data._quarantined[name] = checked.filter(rule.notnull()).select(
                **{out: checked[src] for out, src in q_cols.items()}
            )
        q_file = entry.get("quarantine_file")
        data.checks[name] = DatasetCheck(
            name=name,
            source=entry["source"],
            rows=int(entry["rows"]),
            valid=int(entry["valid"]),
            quarantined=int(entry["quarantined"]),
            by_rule=pd.DataFrame(entry["by_rule"], columns=["rule", "rows"]).astype(
                {"rows": "int64"}
            ),
            quarantine_path=(store_dir / q_file).resolve() if q_file else None,
            flags={f["flag"]: int(f["rows"]) for f in entry.get("flags") or []},
        )
    data.manifest = manifest
    data.store_dir = store_dir
    return data


# ---- the validate command ------------------------------------------------------------


def validate_pilot(
    pilot_path: str | Path,
    quarantine_dir: str | Path | None = None,
    *,
    store_dir: str | Path | None = None,
    engine: EngineSettings | None = None,
) -> ValidationReport:
    """``pilot-workbook validate``: load a pilot file, check every data set once into a store.

    The checked evidence store goes to ``store_dir`` (default
    ``runs/<pilot name>/store`` under the current directory) and the quarantine to
    ``quarantine_dir`` (default ``runs/<pilot name>/quarantine``). The store is
    always rebuilt: validating means checking. Raises the errors of :func:`build_store`.
    """
    from pilot_lib.ingest.contracts import ValidationReport

    pilot = load_pilot(pilot_path)
    base = Path("runs") / pilot.name
    out_dir = Path(quarantine_dir) if quarantine_dir is not None else base / "quarantine"
    store = Path(store_dir) if store_dir is not None else base / "store"
    build_store(pilot, store, engine=engine or pilot.engine, quarantine_dir=out_dir)
    data = open_store(store, pilot)
    _check_drift_features(pilot, data.manifest or {})
    return ValidationReport(pilot.name, pilot.path, data, out_dir)


def _check_drift_features(pilot: Pilot, manifest: dict[str, Any]) -> None:
    """Raise when ``drift.features`` names a column the checked decision log lacks.

    Caught here, by ``validate``, rather than by a failed phase 3 in a run.
    """
    entry = manifest.get("datasets", {}).get("decisions")
    if not entry:
        return
    columns = list(entry.get("valid_columns", []))
    missing = [f for f in pilot.drift.features if f not in columns]
    if missing:
        raise ContractError(
            f"{pilot.path}: drift.features names {missing}, which the decision log "
            f"({describe_source(pilot.datasets['decisions'])}) does not have; its columns "
            f"are {columns}. Fix drift.features in the pilot file, or add the columns to "
            "the decision log"
        )
