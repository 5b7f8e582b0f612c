"""Helpers shared by the benchmark scripts: where the data is, and where results go.

The conf readers, the LibriSpeech lookup, free ports and project copies are the tests' own
(tests/support.py): the tests must stand alone, without importing benchmarks/, and one copy of
each helper serves both. The scripts run as ``python benchmarks/NAME.py``, so the project root is
put on the path to import it.
"""

from __future__ import annotations

import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from tests.support import (  # noqa: E402
    free_port,
    librispeech_path,
    make_project_copy,
    project_dataset,
    project_params,
)

REPORT_DIR = PROJECT_ROOT / "data" / "08_reporting" / "benchmarks"
__all__ = [
    "PROJECT_ROOT",
    "REPORT_DIR",
    "cpu_seconds",
    "free_port",
    "librispeech_dir",
    "make_project_copy",
    "old_module",
    "peak_rss_mb",
    "project_dataset",
    "project_params",
    "write_report",
]


def librispeech_dir(given: str | None) -> Path:
    """``given``, else $LIBRISPEECH_DIR, else ../shared/librispeech/LibriSpeech; exit if absent."""
    path = Path(given) if given else librispeech_path()
    if not path.is_dir():
        sys.exit(f"LibriSpeech not found at {path}: pass --librispeech-dir or set LIBRISPEECH_DIR")
    return path


def old_module(ref: str, path: str, name: str):
    """``src/asr_pipeline/<path>`` of ``ref`` (read from git), imported as ``name``."""
    source = subprocess.run(
        ["git", "show", f"{ref}:src/asr_pipeline/{path}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


def peak_rss_mb(children: bool = False) -> float:
    """Peak RSS in MB of this process, or of its largest finished child.

    Not ``asr_pipeline.common.memory.peak_rss_mb``: benchmarks/trainer_versions.py runs this module
    in workers whose ``asr_pipeline`` is an older revision's, which lacks it.
    """
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    peak = resource.getrusage(who).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else KB


def cpu_seconds() -> float:
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def write_report(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
