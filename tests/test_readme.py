"""The README stays true: its pipeline picture is the registry's, its commands exist."""

from __future__ import annotations

import re
import sys

from tests.support import PROJECT_ROOT

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


def test_the_layout_section_names_every_package_and_module():
    """The README's layout is the tree: each package, and each module of the core, is named."""
    block = re.search(r"## Project layout\n.*?```\n(.*?)```", README, re.DOTALL)
    assert block, "the README has no layout section"
    layout = block.group(1)
    package = PROJECT_ROOT / "src" / "asr_pipeline"
    for folder in sorted(p for p in package.iterdir() if (p / "__init__.py").exists()):
        assert f"{folder.name}/" in layout, f"package {folder.name}/ missing from the layout"
        if folder.name in {"pipelines", "datasets"}:
            continue  # described as a whole
        for module in sorted(folder.glob("*.py")):
            if module.stem != "__init__":
                assert re.search(rf"\b{module.stem}\b", layout), f"{folder.name}/{module.name}"
    for module in sorted(package.glob("*.py")):
        if not module.stem.startswith("__"):
            assert module.name in layout, f"{module.name} missing from the layout"
