"""Helpers shared by the benchmark scripts: where the data is, and where results go.

The conf readers, the LibriSpeech lookup, free ports and project copies are the tests' own
(tests/support.py): the tests must stand alone, without importing benchmarks/, and one copy of
each helper serves both. The scripts run as ``python benchmarks/NAME.py``, so the project root is
put on the path to import it.
"""

from __future__ import annotations

import json
import resource
import sys
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


def peak_rss_mb(children: bool = False) -> float:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def write_report(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
