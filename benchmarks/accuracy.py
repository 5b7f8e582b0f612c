"""Accuracy under a CPU budget: train presets with the project's pipelines, score new speakers.

    python benchmarks/accuracy.py --train-dir DIR --train-subsets a,b --eval-dir DIR \
        --eval-subsets x --budget-minutes N --presets default,seed --out FILE \
        [--params "training.model.dropout=0.2"]       # an ablation: any Kedro --params
        [--overrides ablation.yml]                     # or a YAML of parameters (lists too)
        [--keep-dir DIR]                               # keep the trained project copies

Each preset trains for the same wall-clock budget on the same data (threads = cores), through
``kedro run --pipelines data_engineering,feature_engineering,language_model,training`` in a
throw-away copy of the project (tracked in this project's MLflow store, experiment
``accuracy-benchmark``), which also tunes the model's beam search on the run's validation
speakers; then the best checkpoint is scored on the evaluation speakers with greedy decoding and
with its own beam search.
Speakers of the evaluation set never train: with the same folder and subset on both sides the
project's speaker split holds them out; otherwise they are excluded (and counted).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PROJECT_ROOT,
    REPORT_DIR,
    make_project_copy,
    project_params,
    write_report,
)
from training import measure  # noqa: E402

from asr_pipeline.pipelines.data_engineering.nodes import (  # noqa: E402
    scan_librispeech,
    split_by_speaker,
    validate_utterances,
)
from asr_pipeline.pipelines.evaluation.nodes import (  # noqa: E402
    score_transcripts,
    transcribe_split,
)

EXPERIMENT = "accuracy-benchmark"


def _manifest(root: Path, subsets: list[str], base: dict) -> pd.DataFrame:
    params = {**base, "train_subsets": subsets, "test_subsets": []}
    manifest, _ = validate_utterances(scan_librispeech(str(root), params), params)
    return manifest


def plan_data(args, base: dict) -> tuple[pd.DataFrame, dict, int]:
    """Evaluation rows, the data_engineering settings for training, and how many were excluded."""
    same_root = args.train_dir.resolve() == args.eval_dir.resolve()
    shared_subsets = sorted(set(args.train_subsets) & set(args.eval_subsets)) if same_root else []
    if shared_subsets:
        # One folder, one subset on both sides: the project's own speaker split holds speakers out.
        settings = {**base, "train_subsets": args.train_subsets, "test_subsets": args.eval_subsets}
        every = _manifest(args.train_dir, sorted(set(args.train_subsets + args.eval_subsets)), base)
        split = split_by_speaker(every, settings)
        evaluation = split[split.split == "test"]
        in_train = set(every[every.subset.isin(args.train_subsets)].speaker_id)
        excluded = len(set(evaluation.speaker_id) & in_train)
        return evaluation.reset_index(drop=True), settings, excluded
    evaluation = _manifest(args.eval_dir, args.eval_subsets, base).assign(split="test")
    training = _manifest(args.train_dir, args.train_subsets, base)
    overlap = sorted(set(evaluation.speaker_id) & set(training.speaker_id))
    settings = {
        **base,
        "train_subsets": args.train_subsets,
        "test_subsets": [],
        "exclude_speakers": [int(s) for s in overlap],
    }
    return evaluation, settings, len(overlap)


def epochs_for_budget(
    preset: str,
    train_dir: Path,
    train_subsets: list[str],
    train_hours: float,
    budget_minutes: float,
    threads: int,
    model_overrides: dict,
) -> tuple[int, float]:
    """Epochs that fit the budget, from a short throughput probe on the training audio."""
    probe = measure(
        preset,
        train_dir,
        audio_seconds=300.0,
        threads=threads,
        warmup_batches=1,
        original_features=False,
        subsets=train_subsets,
        spread=True,
        model_overrides=model_overrides,
    )
    speed = probe["audio_seconds_per_wall_second"]
    epoch_seconds = train_hours * 3600 / speed * 1.15  # + validation and bookkeeping
    return max(1, int(budget_minutes * 60 / epoch_seconds)), speed


def max_epochs(planned: int) -> int:
    """An epoch cap well above the plan: the probe is rough, and the time budget is the limit."""
    return 2 * planned + 2


def read_overrides(path: str) -> dict:
    """``--overrides``: a YAML mapping of parameters, read once."""
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {error}") from error
    if not isinstance(values, dict):
        raise argparse.ArgumentTypeError(f"{path} must hold a mapping of parameters")
    return values


def model_overrides(kedro_params: str, overrides: dict) -> dict:
    """The ``training.model`` settings of ``--overrides`` and ``--params``: the probe times them."""
    return {
        **(overrides.get("training") or {}).get("model", {}),
        **{
            key: yaml.safe_load(value)
            for key, value in re.findall(r"training\.model\.(\w+)=([^,]+)", kedro_params)
        },
    }


def train_preset(preset: str, args, settings: dict, epochs: int, workdir: Path) -> dict:
    project = make_project_copy(workdir / preset)
    env_dir = project / "conf" / "benchmark"
    env_dir.mkdir()
    (env_dir / "parameters_data_engineering.yml").write_text(
        yaml.safe_dump({"data_engineering": settings})
    )
    if args.overrides:  # soft-merged over conf/base like any environment's parameters
        (env_dir / "parameters_overrides.yml").write_text(yaml.safe_dump(args.overrides))
    (env_dir / "parameters.yml").write_text(
        yaml.safe_dump(
            {
                "librispeech": {
                    "root": str(args.train_dir.resolve()),
                    "download": False,
                    "base_url": "https://www.openslr.org/resources",
                }
            }
        )
    )
    overrides = ",".join(
        [
            f"training.preset={preset}",
            f"training.epochs={max_epochs(epochs)}",
            f"training.max_minutes={args.budget_minutes}",
            f"training.threads={args.threads}",
            "training.resume=false",
            *([args.params] if args.params else []),
        ]
    )
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "1",
        "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
        "ASR_MODEL_NAME": f"asr-accuracy-{preset}",
        "MLFLOW_TRACKING_URI": os.environ.get(
            "MLFLOW_TRACKING_URI", f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
        ),
    }
    command = [
        str(Path(sys.executable).parent / "kedro"),
        "run",
        "--env",
        "benchmark",
        "--pipelines",
        "data_engineering,feature_engineering,language_model,training",
        "--params",
        overrides,
    ]
    start = time.perf_counter()
    subprocess.run(command, cwd=project, env=env, check=True)
    wall = time.perf_counter() - start
    bundle = torch.load(project / "data/06_models/acoustic_model.pt", weights_only=True)
    bundle["source"] = str(project / "data/06_models/acoustic_model.pt")
    manifest = pd.read_parquet(project / "data/03_primary/manifest_splits.parquet")
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(
        experiment_names=[EXPERIMENT], order_by=["start_time DESC"], max_results=1
    )
    return {
        "bundle": bundle,
        "manifest": manifest,
        "pipeline_wall_seconds": wall,
        "run_id": runs.run_id.iloc[0] if len(runs) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-dir", type=Path, required=True)
    parser.add_argument("--train-subsets", required=True)
    parser.add_argument("--eval-dir", type=Path, required=True)
    parser.add_argument("--eval-subsets", required=True)
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument("--presets", default="default,seed")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=REPORT_DIR / "accuracy.json")
    parser.add_argument(
        "--overrides",
        type=read_overrides,
        default={},
        help="YAML of parameters merged over the project's (for lists, which --params cannot take)",
    )
    parser.add_argument(
        "--params", default="", help="extra Kedro --params for training, e.g. for an ablation"
    )
    parser.add_argument(
        "--keep-dir",
        type=Path,
        help="keep each preset's trained project copy here (default: a temporary folder)",
    )
    args = parser.parse_args()
    args.train_subsets = args.train_subsets.split(",")
    args.eval_subsets = args.eval_subsets.split(",")
    base = project_params("data_engineering")["data_engineering"]
    evaluation_params = {**project_params("evaluation")["evaluation"], "split": "test"}

    evaluation, settings, excluded = plan_data(args, base)
    print(
        f"Evaluation: {len(evaluation)} utterances, {evaluation.speaker_id.nunique()} speakers, "
        f"{evaluation.duration_s.sum() / 3600:.2f} h; {excluded} of its speakers also appear in "
        f"the training data and are excluded from training"
    )
    training_rows = _manifest(args.train_dir, args.train_subsets, base)
    training_rows = training_rows[~training_rows.speaker_id.isin(evaluation.speaker_id)]
    train_hours = training_rows.duration_s.sum() / 3600
    results = {}
    with (
        contextlib.nullcontext(args.keep_dir)
        if args.keep_dir
        else tempfile.TemporaryDirectory(prefix="asr-accuracy-")
    ) as workdir:
        for preset in args.presets.split(","):
            epochs, speed = epochs_for_budget(
                preset,
                args.train_dir,
                args.train_subsets,
                train_hours,
                args.budget_minutes,
                args.threads,
                model_overrides(args.params, args.overrides),
            )
            print(
                f"[{preset}] ~{speed:.0f} audio-s/s: about {epochs} epochs of {train_hours:.2f} h "
                f"in {args.budget_minutes:g} min; the budget ends the run and its learning-rate "
                f"cycle (at most {max_epochs(epochs)} epochs)"
            )
            trained = train_preset(preset, args, settings, epochs, Path(workdir))
            bundle, info = trained["bundle"], trained["bundle"]["info"]
            # the beam search was tuned by the training pipeline on the run's validation
            # speakers, never on the evaluation speakers
            beam = bundle["decoder"]["beam"]
            test = evaluation.assign(split="test")
            transcripts = transcribe_split(bundle, test, evaluation_params)
            decoders = score_transcripts(transcripts, bundle, evaluation_params)[0]["decoders"]
            results[preset] = {
                "parameters": info["parameters"],
                "epochs_planned": epochs,
                "epochs_trained": info.get("epochs_trained"),
                "best_epoch": info["best_epoch"],
                "audio_hours_seen": info["audio_seconds_seen"] / 3600,
                "train_wall_seconds": info["train_seconds"],
                "train_cpu_seconds": info["train_cpu_seconds"],
                "pipeline_wall_seconds": trained["pipeline_wall_seconds"],
                "greedy": decoders["greedy"],
                "beam": decoders.get("beam"),
                "beam_settings": {k: beam[k] for k in ("lm_weight", "word_score")},
                "mlflow_run_id": trained["run_id"],
            }
    write_report(
        {
            "train_dir": str(args.train_dir),
            "train_subsets": args.train_subsets,
            "eval_dir": str(args.eval_dir),
            "eval_subsets": args.eval_subsets,
            "budget_minutes": args.budget_minutes,
            "threads": args.threads,
            "extra_params": args.params,
            "overrides": args.overrides or None,
            "evaluation_utterances": len(evaluation),
            "evaluation_speakers": int(evaluation.speaker_id.nunique()),
            "excluded_speakers": excluded,
            "presets": results,
        },
        args.out,
    )
    print_table(results)


def print_table(results: dict) -> None:
    """One row per preset; a rate a decoder does not give (greedy CER/WER of a phone model,
    which gives phones: PER) is shown as -."""

    def rate(scores: dict | None, key: str) -> str:
        value = (scores or {}).get(key)
        return f"{100 * value:8.1f}%" if value is not None else f"{'-':>9}"

    print(
        f"\n{'preset':>8} {'params':>8} {'best ep':>7} {'hours':>6} {'greedy CER':>9} "
        f"{'WER':>9} {'PER':>9} {'beam CER':>9} {'WER':>9}"
    )
    for preset, r in results.items():
        greedy, beam = r["greedy"], r["beam"]
        print(
            f"{preset:>8} {r['parameters'] / 1e6:7.2f}M {r['best_epoch']:>7} "
            f"{r['audio_hours_seen']:6.2f} {rate(greedy, 'cer')} {rate(greedy, 'wer')} "
            f"{rate(greedy, 'per')} {rate(beam, 'cer')} {rate(beam, 'wer')}"
        )


if __name__ == "__main__":
    main()
