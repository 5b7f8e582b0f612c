"""The README stays true: its pipeline picture is the registry's, its commands exist."""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
README = (PROJECT_ROOT / "README.md").read_text()


def test_pipeline_diagram_matches_the_registry():
    sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
    from pipeline_diagram import mermaid

    block = re.search(r"```mermaid\n(.*?)```", README, re.DOTALL)
    assert block, "the README has no mermaid diagram"
    assert block.group(1) == mermaid(), "regenerate it: python scripts/pipeline_diagram.py"


def test_the_two_commands_are_make_targets():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert "make run KEDRO_ENV=shared" in README and "make test" in README
    for target in ("run", "test", "setup"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
    assert "make test" in (PROJECT_ROOT / ".ci/run").read_text()


def test_documented_files_exist():
    for path in (
        "benchmarks/features.py",
        "benchmarks/training.py",
        "benchmarks/inference.py",
        "benchmarks/accuracy.py",
        "notebooks/exploration.ipynb",
        "docs/scaling.md",
        "scripts/tracking_server.py",
        "conf/shared",
        "conf/full",
    ):
        assert (PROJECT_ROOT / path).exists(), path
