"""Set-up the runner's notebook kernels run before the first cell (``exec_lines``).

Python warnings (a font missing a glyph, a library's deprecation notice) are
for the operator, not for the leadership page the notebook becomes: in a
kernel the runner started they are appended to ``warnings.log`` in the run
folder (the kernel's working folder) instead of being printed into the
notebook's output. An analyst's own JupyterLab session is not affected.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TextIO

#: The file, in the run folder, that collects the kernels' Python warnings.
WARNINGS_LOG = "warnings.log"


def setup(folder: str | Path = ".") -> None:
    """Route this process's Python warnings to ``<folder>/warnings.log`` (appended)."""
    log = Path(folder).resolve() / WARNINGS_LOG

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = warnings.formatwarning(message, category, filename, lineno, line)
        try:
            with log.open("a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError:
            pass  # a warning is never worth failing a phase

    warnings.showwarning = show


def exec_line() -> str:
    """The kernel argument that runs :func:`setup` at start, binding no name in the notebook."""
    return "--IPKernelApp.exec_lines=__import__('pilot_lib._kernel', fromlist=['setup']).setup()"


__all__ = ["WARNINGS_LOG", "exec_line", "setup"]
