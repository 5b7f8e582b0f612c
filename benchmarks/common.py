"""Helpers shared by the benchmark scripts: where the data is, and where results go."""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REPORT_DIR = PROJECT_ROOT / "data" / "08_reporting" / "benchmarks"


def librispeech_dir(given: str | None) -> Path:
    """``given``, else $LIBRISPEECH_DIR, else ../shared/librispeech/LibriSpeech; exit if absent."""
    path = Path(
        given
        or os.environ.get("LIBRISPEECH_DIR")
        or PROJECT_ROOT.parent / "shared" / "librispeech" / "LibriSpeech"
    )
    if not path.is_dir():
        sys.exit(f"LibriSpeech not found at {path}: pass --librispeech-dir or set LIBRISPEECH_DIR")
    return path


def project_params(name: str, env: str = "base") -> dict:
    """One parameters file of ``conf/<env>`` (e.g. ``training``), without interpolation."""
    return yaml.safe_load((PROJECT_ROOT / "conf" / env / f"parameters_{name}.yml").read_text())


def project_dataset(name: str, env: str = "base"):
    """One entry of ``conf/<env>/catalog.yml`` (without interpolation), built as Kedro builds it."""
    from kedro.io import AbstractDataset

    config = yaml.safe_load((PROJECT_ROOT / "conf" / env / "catalog.yml").read_text())[name]
    return AbstractDataset.from_config(name, config)


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


def make_project_copy(target: Path) -> Path:
    """A throw-away copy of the project (pyproject, conf, package) with an empty data/ folder."""
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "pyproject.toml", target / "pyproject.toml")
    shutil.copytree(PROJECT_ROOT / "conf", target / "conf")
    shutil.copytree(
        PROJECT_ROOT / "src" / "asr_pipeline",
        target / "src" / "asr_pipeline",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return target
