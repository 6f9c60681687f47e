"""The README is the contract: CI (``.ci/run``) runs its quick-start lines byte for byte,
and installs nothing the README does not.

``.ci/run`` extracts the fenced block after "## Quick start" with awk and runs each line;
these tests run that same extraction (the script's own awk program, read out of it) and
check what the script does besides, so that a green CI cannot hide a step a new user lacks.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / ".ci" / "run"
README = ROOT / "README.md"


def _readme_block() -> list[str]:
    """The non-empty lines of the first ```bash block after '## Quick start', as written."""
    text = README.read_text(encoding="utf-8").splitlines()
    start = text.index("## Quick start")
    fence = next(i for i in range(start, len(text)) if text[i].startswith("```bash"))
    end = next(i for i in range(fence + 1, len(text)) if text[i].startswith("```"))
    return [line for line in text[fence + 1 : end] if line.strip()]


def _ci_extraction() -> list[str]:
    """The lines ``.ci/run`` would run: its own awk program applied to the README."""
    script = CI.read_text(encoding="utf-8")
    match = re.search(r"mapfile -t commands < <\(awk '(.*?)' README\.md\)", script, re.S)
    assert match, ".ci/run no longer extracts the quick start with awk"
    out = subprocess.run(
        ["awk", match.group(1), str(README)], capture_output=True, text=True, check=True
    ).stdout
    return out.splitlines()


def test_ci_runs_the_readme_quick_start_byte_for_byte() -> None:
    block = _readme_block()
    assert len(block) == 2, block
    assert _ci_extraction() == block
    # and runs each extracted line as it is, nothing appended or prepended
    script = CI.read_text(encoding="utf-8")
    assert 'for cmd in "${commands[@]}"; do' in script
    assert 'bash -euo pipefail -c "$cmd"' in script


def test_ci_installs_no_python_package_the_readme_lacks() -> None:
    """Every ``pip install`` in ``.ci/run`` outside the README's lines is pip itself."""
    for line in CI.read_text(encoding="utf-8").splitlines():
        code = line.split("#", 1)[0]
        if "pip install" in code:
            assert "--upgrade pip" in code, f".ci/run installs beyond the README: {line.strip()}"


def test_line_one_installs_an_extra_that_exists_and_line_two_runs_the_whole_suite() -> None:
    import tomllib

    install, tests = _readme_block()
    extras = re.findall(r'-e "\.\[([a-z,]+)\]"', install)
    assert extras, install
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for extra in extras[0].split(","):
        assert extra in project["optional-dependencies"], extra
    assert "pytest" in tests and " tests notebooks" in tests


def test_every_optional_part_the_suite_uses_is_named_in_the_readme() -> None:
    """The parts line 1 does not install (the spark extra, Java, Chromium) are named in the
    README with how to add them, and the tests that need them skip with a reason."""
    text = README.read_text(encoding="utf-8")
    for part in ('".[dev,spark]"', "Java", "chromium"):
        assert part in text, part
    spark_tests = (ROOT / "tests" / "test_spark.py").read_text(encoding="utf-8")
    assert "pytest.importorskip(" in spark_tests and "reason=" in spark_tests
