"""A phase kernel of a Spark run connects to the run's one session (no JVM of its own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilot_lib.ingest.engine import SHARED_SPARK_ENV, shared_spark_url
from pilot_lib.runner import SPARK_URL_FILE


def test_a_kernel_of_a_spark_run_uses_the_runs_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url_file = tmp_path / SPARK_URL_FILE
    monkeypatch.delenv(SHARED_SPARK_ENV, raising=False)
    url_file.write_text("sc://127.0.0.1:41234\n")
    assert shared_spark_url("local[*]") is None  # a notebook opened alone: its own session
    monkeypatch.setenv(SHARED_SPARK_ENV, str(url_file))
    assert shared_spark_url("local[*]") == "sc://127.0.0.1:41234"
    assert shared_spark_url("spark://10.0.0.5:7077") == "sc://127.0.0.1:41234"
    # a Spark Connect master is used as it is
    assert shared_spark_url("sc://spark.example:15002") is None
    url_file.unlink()  # the run could not share its session: the kernel starts its own
    assert shared_spark_url("local[*]") is None
    url_file.write_text("not a url\n")
    assert shared_spark_url("local[*]") is None
