"""Inference speed of the default preset against the original design (``seed``), and of the server.

    python benchmarks/inference.py [--librispeech-dir DIR] [--model FILE_OR_URI] [--out FILE]

Real-time factor (processing seconds per audio second) of one stream over real utterances
(dev-clean-2 and train-clean-100 FLAC files), counting file decoding, feature extraction, the
acoustic model and greedy decoding, with one torch thread and with all of them; for a model that
carries its beam search (a trained one), also with that beam search and its LM, which is how
``asr-transcribe`` and the server decode it. Each preset runs in
its own process so that its peak memory is its own. Speed does not depend on the weights: a preset
without a trained model gets random ones. The default preset uses ``--model`` (a bundle file or a
``models:/`` URI), else data/06_models/acoustic_model.pt when it exists.

Then the served model: the default bundle saved as an MLflow pyfunc, served by
``mlflow models serve --env-manager local`` (decoding as it is configured to: with its beam
search when it carries one) and hit by concurrent clients (requests/s, audio-s/s, latency).
Writes data/08_reporting/benchmarks/inference.json. Goal: RTF <= 0.02 on one thread for the
default preset.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PROJECT_ROOT,
    REPORT_DIR,
    librispeech_dir,
    peak_rss_mb,
    project_params,
    write_report,
)

sys.path.insert(0, str(PROJECT_ROOT / "src"))
from served_load import benchmark_server  # noqa: E402

GOAL_RTF = 0.02
SUBSETS = ("dev-clean-2", "train-clean-100")
DEFAULT_BUNDLE = PROJECT_ROOT / "data" / "06_models" / "acoustic_model.pt"


def pick_utterances(root: Path, count: int) -> list[Path]:
    """About ``count`` FLAC files spread evenly over the subsets (same choice on every run)."""
    per_subset = [sorted((root / s).glob("*/*/*.flac")) for s in SUBSETS if (root / s).is_dir()]
    per_subset = [files for files in per_subset if files]
    if not per_subset:
        sys.exit(f"no FLAC files in {', '.join(SUBSETS)} under {root}")
    chosen: list[Path] = []
    for i, files in enumerate(per_subset):
        want = (count - len(chosen)) // (len(per_subset) - i)
        step = max(len(files) / want, 1.0) if want else 1.0
        chosen += [files[int(k * step)] for k in range(min(want, len(files)))]
    return chosen


def feature_params(preset: str) -> dict:
    params = project_params("feature_engineering")["features"]
    # seed: the original design's 128 MFCC; n_fft 1024 gives every one of 128 mel filters support
    if preset == "seed":
        params = {**params, "kind": "mfcc", "n_mfcc": 128, "n_mels": 128, "n_fft": 1024}
    return params


def build_bundle(preset: str, model: str | None) -> tuple[dict, str]:
    """The bundle to time, and where it came from (a file/URI or ``random``)."""
    import torch

    from asr_pipeline.audio.features import FeatureConfig, NormalisationStats
    from asr_pipeline.model.bundle import make_bundle
    from asr_pipeline.model.factory import build_acoustic_model, model_config_from_dict

    if preset == "default" and model:
        import mlflow

        from asr_pipeline.serving.registry import load_bundle

        mlflow.set_tracking_uri(
            os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}")
        )
        return load_bundle(model), model
    torch.manual_seed(0)
    features = FeatureConfig.from_params(feature_params(preset))
    sizes = project_params("training")["training"]["presets"][preset]
    config = model_config_from_dict({**sizes, "n_features": features.n_features})
    n = features.n_features
    bundle = make_bundle(
        config,
        build_acoustic_model(config).state_dict(),
        features,
        NormalisationStats(mean=[0.0] * n, std=[1.0] * n, frames=1),
        {"preset": preset, "weights": "random"},
    )
    return bundle, "random"


def measure(preset: str, files: list[Path], model: str | None, bundle_out: str | None) -> dict:
    """RTF of ``preset`` over ``files`` with 1 thread and with all threads (runs in a worker)."""
    import soundfile as sf
    import torch

    from asr_pipeline.model.acoustic import count_parameters
    from asr_pipeline.model.recognizer import Recognizer

    bundle, source = build_bundle(preset, model)
    if bundle_out:
        torch.save(bundle, bundle_out)
    recognizer = Recognizer(bundle)
    audio_seconds = sum(sf.info(str(f)).duration for f in files)
    result = {
        "preset": preset,
        "weights": source,
        "parameters": count_parameters(recognizer.model),
        "n_features": recognizer.feature_config.n_features,
        "feature_kind": recognizer.feature_config.kind,
        "utterances": len(files),
        "audio_seconds": audio_seconds,
        "rtf": {},
    }
    all_threads = os.cpu_count() or 1
    decoders = {"rtf": "greedy", **({"rtf_beam": "beam"} if recognizer.beam_search else {})}
    for key, decoder in decoders.items():
        result[key] = {}
        for threads in dict.fromkeys([1, all_threads]):
            torch.set_num_threads(threads)
            recognizer.transcribe_file(files[0], decoder)  # warm-up (and the LM is loaded)
            per_file = []
            for path in files:
                start = time.perf_counter()
                recognizer.transcribe_file(path, decoder)
                per_file.append(time.perf_counter() - start)
            result[key][str(threads)] = {
                "threads": threads,
                "processing_seconds": sum(per_file),
                "rtf": sum(per_file) / audio_seconds,
                "max_utterance_seconds": max(per_file),
            }
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def serve_side_by_side(bundle_file: Path, files: list[Path], args, report: dict) -> dict:
    """The server with each worker count of ``--workers`` (one: every request through one
    process, as before), each loaded with every ``--clients`` count, printed side by side.

    ``served_share_of_cpu_limit``: served audio-s/s with the beam search at 10 clients (the best
    worker count) over what the cores could give at most, ``cores / single-thread beam RTF``.
    """
    clients = [int(c) for c in args.clients.split(",")]
    served = {}
    print(
        f"\n{'workers':>7} {'clients':>7} {'req/s':>7} {'audio-s/s':>9} {'p50 s':>6} "
        f"{'p95 s':>6} {'errors':>6}"
    )
    for workers in [int(w) for w in args.workers.split(",")]:
        result = benchmark_server(
            bundle_file, files, clients, args.requests, args.server_threads or None, workers
        )
        served[str(workers)] = result
        for load in result["by_clients"].values():
            print(
                f"{workers:>7} {load['clients']:>7} {load['requests_per_second']:7.2f} "
                f"{load['audio_seconds_per_second']:9.1f} {load['latency_p50_s']:6.2f} "
                f"{load['latency_p95_s']:6.2f} {load['errors']:>6}"
            )
    summary: dict = {"by_workers": served}
    default = report["presets"]["default"]
    if "rtf_beam" in default and "10" in next(iter(served.values()))["by_clients"]:
        limit = os.cpu_count() / default["rtf_beam"]["1"]["rtf"]
        best = max(r["by_clients"]["10"]["audio_seconds_per_second"] for r in served.values())
        summary["cpu_limit_audio_seconds_per_second"] = limit
        summary["served_share_of_cpu_limit"] = best / limit
        print(
            f"served with the beam search, 10 clients: {best:.1f} audio-s/s = "
            f"{best / limit:.2f} of the CPU's limit ({os.cpu_count()} cores / single-thread "
            f"beam RTF {default['rtf_beam']['1']['rtf']:.4f} = {limit:.1f} audio-s/s)"
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--librispeech-dir")
    parser.add_argument("--model", help="bundle file or models:/ URI for the default preset")
    parser.add_argument("--presets", default="default,seed")
    parser.add_argument("--utterances", type=int, default=20)
    parser.add_argument("--clients", default="1,10,50", help="concurrent clients, in turn")
    parser.add_argument("--requests", type=int, default=100, help="per number of clients")
    parser.add_argument(
        "--workers", default=f"1,{os.cpu_count()}", help="server processes to compare"
    )
    parser.add_argument(
        "--server-threads", type=int, default=1, help="torch threads per worker (0: default)"
    )
    parser.add_argument("--no-server", action="store_true")
    parser.add_argument("--out", type=Path, default=REPORT_DIR / "inference.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--bundle-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = librispeech_dir(args.librispeech_dir)
    files = pick_utterances(root, args.utterances)
    model = args.model or (str(DEFAULT_BUNDLE) if DEFAULT_BUNDLE.exists() else None)
    if args.worker:
        print(json.dumps(measure(args.worker, files, model, args.bundle_out)))
        return

    report: dict = {"load_average_at_start": os.getloadavg(), "presets": {}}
    tmp = Path(tempfile.mkdtemp(prefix="inference-bundle-"))
    print(f"{len(files)} utterances, load average {os.getloadavg()[0]:.1f}")
    print(f"{'preset':>8} {'weights':>8} {'params':>8} {'RTF 1 thr':>10} {'RTF all':>9} {'RSS':>8}")
    for preset in args.presets.split(","):
        command = [sys.executable, __file__, "--worker", preset, "--librispeech-dir", str(root)]
        command += ["--utterances", str(args.utterances)]
        if args.model:
            command += ["--model", args.model]
        if preset == "default":
            command += ["--bundle-out", str(tmp / "default.pt")]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        r = report["presets"][preset] = json.loads(output.strip().splitlines()[-1])
        rtfs = list(r["rtf"].values())
        weights = "trained" if r["weights"] != "random" else "random"
        print(
            f"{preset:>8} {weights:>8} {r['parameters'] / 1e6:7.2f}M "
            f"{rtfs[0]['rtf']:10.4f} {rtfs[-1]['rtf']:9.4f} {r['peak_rss_mb']:6.0f}MB"
            f"  ({rtfs[-1]['threads']} threads, greedy)"
        )
        if "rtf_beam" in r:
            beam = list(r["rtf_beam"].values())
            print(
                f"{'':>8} {'':>8} {'':>8} {beam[0]['rtf']:10.4f} {beam[-1]['rtf']:9.4f} "
                f"{'':>8}  (its beam search and LM)"
            )
    if "default" in report["presets"]:
        rtf = report["presets"]["default"]["rtf"]["1"]["rtf"]
        report["goal"] = {"default_rtf_1_thread_max": GOAL_RTF, "passed": rtf <= GOAL_RTF}
        print(
            f"default RTF on one thread {rtf:.4f} "
            f"(goal <= {GOAL_RTF}: {'PASS' if rtf <= GOAL_RTF else 'FAIL'})"
        )
        if not args.no_server:
            report["server"] = serve_side_by_side(tmp / "default.pt", files, args, report)
            report["served_share_of_cpu_limit"] = report["server"].get("served_share_of_cpu_limit")
    shutil.rmtree(tmp, ignore_errors=True)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
