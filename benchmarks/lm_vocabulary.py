"""How many common English words the beam search's LM should know, measured on a trained model.

    python benchmarks/lm_vocabulary.py [--model data/06_models/trained_acoustic_model.pt]
        [--manifest data/03_primary/manifest_splits.parquet] [--sizes 0,20000,50000,100000]

For each size of the background vocabulary (``beam_search.background_words``; 0: the
transcripts' words only) it builds the LM and tunes the LM weight and word score on the manifest's
validation speakers as the training pipeline does, attaches that beam search to the model, then
decodes the test split; the acoustic model is the same throughout, so only the LM differs. It
prints, side by side, the share of test words the LM cannot spell, the tuned validation WER, test
beam CER / WER and the decoding time, and writes data/08_reporting/benchmarks/lm_vocabulary.json.
Defaults: the model and split of the last
``kedro run`` in this project. ``--model`` also takes a registered model (``models:/NAME/VERSION``,
from ``MLFLOW_TRACKING_URI``, default this project's ``mlflow.db``), such as one that
``benchmarks/accuracy.py`` trained (``asr-accuracy-default``).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PROJECT_ROOT,
    REPORT_DIR,
    project_dataset,
    project_params,
    write_report,
)

from asr_pipeline.datasets import ModelBundleDataset  # noqa: E402
from asr_pipeline.decoding.language_model import arpa_vocabulary  # noqa: E402
from asr_pipeline.pipelines.evaluation.nodes import (  # noqa: E402
    score_transcripts,
    transcribe_split,
)
from asr_pipeline.pipelines.language_model.nodes import build_transcript_lm  # noqa: E402
from asr_pipeline.pipelines.training.decoder_nodes import (  # noqa: E402
    attach_beam_search,
    tune_beam_search,
)
from asr_pipeline.units.characters import words  # noqa: E402


def measure(
    bundle: dict,
    manifest: pd.DataFrame,
    word_frequencies: pd.DataFrame,
    size: int,
    base: dict,
    evaluation: dict,
) -> dict:
    """Build the LM with ``size`` background words, tune it on validation, score the test split."""
    params = {**copy.deepcopy(base), "background_words": size}
    start = time.perf_counter()
    lm = build_transcript_lm(manifest, word_frequencies, params)
    known = set(arpa_vocabulary(lm))
    test_words = words(manifest.loc[manifest.split == "test", "text"].tolist())
    settings = tune_beam_search(bundle, manifest, lm, params, evaluation["split"])
    tuned = time.perf_counter()
    with_lm = attach_beam_search(bundle, lm, settings, params)
    transcripts = transcribe_split(with_lm, manifest, evaluation)
    beam = score_transcripts(transcripts, with_lm, evaluation)[0]["decoders"]["beam"]
    return {
        "background_words": size,
        "lm_words": len(known),
        "test_words_unknown_to_lm": sum(w not in known for w in test_words) / len(test_words),
        "lm_weight": settings["lm_weight"],
        "word_score": settings["word_score"],
        "validation_wer_tuned": min((g["wer"] for g in settings["grid"]), default=None),
        "test_beam_cer": beam["cer"],
        "test_beam_wer": beam["wer"],
        "tuning_seconds": tuned - start,
        "test_seconds": time.perf_counter() - tuned,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default=str(PROJECT_ROOT / "data/06_models/trained_acoustic_model.pt")
    )
    parser.add_argument(
        "--manifest", default=str(PROJECT_ROOT / "data/03_primary/manifest_splits.parquet")
    )
    parser.add_argument("--sizes", default="0,20000,50000,100000")
    parser.add_argument("--out", type=Path, default=REPORT_DIR / "lm_vocabulary.json")
    args = parser.parse_args()

    mlflow.set_tracking_uri(
        os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}")
    )
    bundle = ModelBundleDataset(filepath=args.model).load()
    manifest = pd.read_parquet(args.manifest)
    for split in ("validation", "test"):
        if not (manifest.split == split).any():
            sys.exit(f"{args.manifest} has no {split} split: run the data_engineering pipeline")
    base = project_params("beam_search")["beam_search"]
    evaluation = {**project_params("evaluation")["evaluation"], "decoders": ["beam"]}
    word_frequencies = project_dataset("word_frequencies").load()
    print(
        f"{'background':>10} {'LM words':>9} {'test OOV':>8} {'val WER':>8} {'beam CER':>8} "
        f"{'beam WER':>8} {'tune s':>6} {'test s':>6}"
    )
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(bundle, manifest, word_frequencies, size, base, evaluation)
        results.append(r)
        print(
            f"{size:>10,} {r['lm_words']:>9,} {100 * r['test_words_unknown_to_lm']:7.1f}% "
            f"{100 * (r['validation_wer_tuned'] or float('nan')):7.1f}% "
            f"{100 * r['test_beam_cer']:7.1f}% {100 * r['test_beam_wer']:7.1f}% "
            f"{r['tuning_seconds']:6.0f} {r['test_seconds']:6.0f}",
            flush=True,
        )
    write_report(
        {
            "model": args.model,
            "manifest": args.manifest,
            "model_info": bundle.get("info", {}),
            "beam": {k: v for k, v in base.items() if k != "background_words"},
            "results": results,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
