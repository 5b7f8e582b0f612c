"""The exported model against PyTorch: speed on one thread, and what int8 costs in accuracy.

    python benchmarks/export.py [--model FILE_OR_URI] [--librispeech-dir DIR] [--subset NAME]
                                [--limit N] [--out FILE]

Exports ``--model`` (a bundle file or a ``models:/`` URI; default data/06_models/acoustic_model.pt)
with ``asr_pipeline.export`` into a temporary folder, then runs the same utterances of a
LibriSpeech subset (default dev-clean-2, ``--limit`` of them spread over it) through PyTorch
(``Recognizer.log_probs``), ONNX Runtime fp32 and ONNX Runtime int8, each on one thread, one
engine after the other on each utterance so that load on the machine falls on all three alike.
Timed: features and network, from a decoded signal to log-probabilities (file decoding and CTC
decoding are the same for all three and are left out). Real-time factor = processing seconds per
audio second; ratios are PyTorch's RTF over each ONNX one.

Accuracy: CER against the transcripts of greedy decoding and, when the bundle carries one, of
its own beam search (LM and tuned settings: ``Recognizer.decoder``), on PyTorch's log-probs and
on int8's, and how far the ONNX log-probs are from PyTorch's. Writes
data/08_reporting/benchmarks/export.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROJECT_ROOT, REPORT_DIR, librispeech_dir, write_report  # noqa: E402

sys.path.insert(0, str(PROJECT_ROOT / "src"))

DEFAULT_BUNDLE = PROJECT_ROOT / "data" / "06_models" / "acoustic_model.pt"
ENGINES = ("pytorch", "onnx_fp32", "onnx_int8")
AUDIO_SUFFIXES = ("flac", "wav", "mp3")


def pick_utterances(root: Path, subset: str, limit: int) -> list[Path]:
    """``limit`` audio files (FLAC, WAV or MP3, as the loader reads them) spread evenly over
    ``subset`` (the same choice on every run)."""
    files = sorted(f for ext in AUDIO_SUFFIXES for f in (root / subset).glob(f"*/*/*.{ext}"))
    if not files:
        sys.exit(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {root / subset}")
    step = max(len(files) / limit, 1.0)
    return [files[int(k * step)] for k in range(min(limit, len(files)))]


def load_model(model: str, tracking_uri: str | None) -> dict:
    """The bundle of a file or a registry URI, as ``asr-export`` and ``asr-transcribe`` load it."""
    from asr_pipeline.serving.registry import default_cache_dir, load_bundle

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    elif model.startswith("models:/"):
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}")
    if not model.startswith("models:/") and not Path(model).is_file():
        sys.exit(f"{model} does not exist: train a model (make run) or pass --model")
    return load_bundle(model, default_cache_dir())


def run(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from asr_pipeline.audio.loading import load_audio
    from asr_pipeline.corpus.librispeech import find_transcript
    from asr_pipeline.decoding.metrics import error_rates
    from asr_pipeline.export.runner import OnnxRecognizer
    from asr_pipeline.export.writer import export_bundle
    from asr_pipeline.model.recognizer import Recognizer
    from asr_pipeline.units.characters import normalise

    torch.set_num_threads(1)
    bundle = load_model(args.model, args.tracking_uri)
    recognizer = Recognizer(bundle)
    with tempfile.TemporaryDirectory(prefix="asr-export-") as folder:
        start = time.perf_counter()
        exported = export_bundle(bundle, folder)
        export_seconds = time.perf_counter() - start
        sizes = {name: path.stat().st_size for name, path in exported.files.items()}
        runners = {v: OnnxRecognizer(folder, v, threads=1) for v in ("fp32", "int8")}

        def log_probs(engine: str, signal: torch.Tensor) -> np.ndarray:
            if engine == "pytorch":
                return recognizer.log_probs([signal])[0][0].numpy()
            return runners[engine.removeprefix("onnx_")].log_probs(signal.numpy())

        files = pick_utterances(args.librispeech_dir, args.subset, args.limit)
        signals = [load_audio(f, recognizer.sample_rate) for f in files]
        for engine in ENGINES:  # warm-up: first-call allocations are not the steady state
            log_probs(engine, signals[0])
        seconds = dict.fromkeys(ENGINES, 0.0)
        outputs: dict[str, list[np.ndarray]] = {engine: [] for engine in ENGINES}
        for i, signal in enumerate(signals):
            order = ENGINES if i % 2 == 0 else ENGINES[::-1]  # neither always first nor last
            for engine in order:
                start = time.perf_counter()
                outputs[engine].append(log_probs(engine, signal))
                seconds[engine] += time.perf_counter() - start

    audio_seconds = sum(len(s) for s in signals) / recognizer.sample_rate
    rtf = {engine: seconds[engine] / audio_seconds for engine in ENGINES}
    references = [normalise(find_transcript(f) or "")[0] for f in files]
    decoders = ["greedy"] if recognizer.gives_words("greedy") else []
    decoders += ["beam"] if recognizer.beam_search else []
    accuracy = {}
    for name in decoders:
        decode = recognizer.decoder(name)
        accuracy[name] = {}
        for engine in ("pytorch", "onnx_int8"):
            texts = [
                decode(torch.from_numpy(lp[None]), torch.tensor([len(lp)]))[0]
                for lp in outputs[engine]
            ]
            rates = error_rates(references, texts)
            accuracy[name][engine] = {"cer": rates.cer, "wer": rates.wer, "texts": texts}
        same = [
            a == b
            for a, b in zip(
                accuracy[name]["pytorch"]["texts"],
                accuracy[name]["onnx_int8"]["texts"],
                strict=True,
            )
        ]
        accuracy[name]["identical_texts"] = sum(same) / len(same)
    differences = {}
    for engine in ("onnx_fp32", "onnx_int8"):
        pairs = list(zip(outputs["pytorch"], outputs[engine], strict=True))
        differences[engine] = {
            "max_abs": max(float(np.abs(a - b).max()) for a, b in pairs),
            "argmax_agreement": float(
                np.mean(np.concatenate([a.argmax(-1) == b.argmax(-1) for a, b in pairs]))
            ),
        }
    return {
        "model": args.model,
        "architecture": recognizer.model.config.ARCHITECTURE,
        "subset": args.subset,
        "utterances": [f.stem for f in files],
        "audio_seconds": audio_seconds,
        "threads": 1,
        "export": {"seconds": export_seconds, "exporter": exported.exporter, "bytes": sizes},
        "processing_seconds": seconds,
        "rtf": rtf,
        "speedup_over_pytorch": {e: rtf["pytorch"] / rtf[e] for e in ENGINES[1:]},
        "log_prob_difference": differences,
        "accuracy": {
            name: {
                k: ({kk: vv for kk, vv in v.items() if kk != "texts"} if isinstance(v, dict) else v)
                for k, v in per.items()
            }
            for name, per in accuracy.items()
        },
        "references": references,
        "texts": {
            name: {e: accuracy[name][e]["texts"] for e in ("pytorch", "onnx_int8")}
            for name in accuracy
        },
    }


def report(result: dict) -> None:
    print(
        f"{result['architecture']} model {result['model']}: {len(result['utterances'])} "
        f"utterances of {result['subset']}, {result['audio_seconds']:.1f} s of audio, 1 thread"
    )
    sizes = result["export"]["bytes"]
    print(
        f"export: {result['export']['seconds']:.1f} s ({result['export']['exporter']}); "
        f"model.onnx {sizes['model.onnx'] / 1e6:.1f} MB, "
        f"model.int8.onnx {sizes['model.int8.onnx'] / 1e6:.1f} MB"
    )
    print(f"{'engine':<10} {'RTF':>8} {'x PyTorch':>10} {'max |dlogp|':>12} {'argmax ==':>10}")
    for engine in ENGINES:
        speedup = result["speedup_over_pytorch"].get(engine, 1.0)
        diff = result["log_prob_difference"].get(engine, {"max_abs": 0.0, "argmax_agreement": 1})
        print(
            f"{engine:<10} {result['rtf'][engine]:>8.4f} {speedup:>10.2f} "
            f"{diff['max_abs']:>12.2e} {diff['argmax_agreement']:>10.3f}"
        )
    for name, per in result["accuracy"].items():
        torch_rates, int8_rates = per["pytorch"], per["onnx_int8"]
        print(
            f"CER {name:<6}: PyTorch {torch_rates['cer']:.4f}, int8 {int8_rates['cer']:.4f} "
            f"(WER {torch_rates['wer']:.4f} / {int8_rates['wer']:.4f}); "
            f"identical texts {per['identical_texts']:.0%}"
        )
    if not result["accuracy"]:
        print("no CER: greedy decoding of this model gives phones and it carries no beam search")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_BUNDLE), help="bundle file or models:/")
    parser.add_argument("--tracking-uri", default=None, help="for a models:/ URI")
    parser.add_argument("--librispeech-dir", default=None)
    parser.add_argument("--subset", default="dev-clean-2")
    parser.add_argument("--limit", type=int, default=50, help="utterances (spread over the subset)")
    parser.add_argument("--out", type=Path, default=REPORT_DIR / "export.json")
    args = parser.parse_args()
    if args.limit < 1:
        parser.error("--limit must be at least 1")
    args.librispeech_dir = librispeech_dir(args.librispeech_dir)
    result = run(args)
    report(result)
    write_report(result, args.out)


if __name__ == "__main__":
    main()
