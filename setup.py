"""Build hook: the phase notebooks travel inside the package.

The notebooks live at the top of the repository (``notebooks/``), where analysts
open them; a wheel has to carry them inside ``pilot_lib`` so that an installed
``pilot-workbook`` finds them (``pilot_lib.runner.notebooks_dir``). This copies
``notebooks/0*.ipynb`` into the build's ``pilot_lib/notebooks/`` when the wheel
is built, without their stored outputs (the sample run the repository shows;
papermill replaces them on every run). Everything else is in pyproject.toml.
"""

import json
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithNotebooks(build_py):
    def run(self) -> None:
        super().run()
        source = HERE / "notebooks"
        notebooks = sorted(source.glob("0*.ipynb"))
        if len(notebooks) != 5:
            raise SystemExit(f"expected the five phase notebooks in {source}, found {notebooks}")
        target = Path(self.build_lib) / "pilot_lib" / "notebooks"
        target.mkdir(parents=True, exist_ok=True)
        for nb in notebooks:
            doc = json.loads(nb.read_text(encoding="utf-8"))
            for cell in doc.get("cells", []):
                if cell.get("cell_type") == "code":
                    cell["outputs"] = []
                    cell["execution_count"] = None
            text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
            (target / nb.name).write_text(text, encoding="utf-8")


setup(cmdclass={"build_py": BuildWithNotebooks})
