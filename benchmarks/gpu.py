"""GPU check (one script, under 8 minutes on one H200): training speed in fp32 and bf16, the
share of step time spent waiting for data, and whether bf16 trains as fp32 does.

    python benchmarks/gpu.py [--corpus DIR] [--device cuda] [--steps 200] [--tiny]

``--corpus``: a LibriSpeech-layout folder (default: the shared sample); on a GPU machine, a few
dozen shared utterances copied into a git-ignored folder beside the checkout (``../shared`` does
not travel). ``--tiny`` shrinks every model to a few thousand parameters so that the script can be
checked on a CPU in a minute. For each of the ``default`` and ``large`` presets and each precision:
training audio-seconds per second over ``--timed-steps`` steps (after warm-up) fed by the
project's DataLoader with ``--workers`` workers, and the share of the step time spent waiting for
the next batch. Correctness: the bf16 loss of one batch against the fp32 loss of the same batch
and weights, and the fp32 and bf16 losses over ``--steps`` steps on the same utterances (both
must fall). Writes ``data/08_reporting/benchmarks/gpu.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import REPORT_DIR, librispeech_dir, project_params, write_report

TINY = {"cnn_channels": 4, "rnn_dim": 16, "n_rnn_layers": 1, "n_residual_blocks": 1}


def _corpus(root: Path, limit: int):
    """Features of up to ``limit`` utterances of every subset of ``root``, in memory."""
    import pandas as pd

    from asr_pipeline.audio.extraction import compute_features
    from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor, RunningStats
    from asr_pipeline.corpus.librispeech import scan
    from asr_pipeline.units.characters import normalise

    config = FeatureConfig.from_params(project_params("feature_engineering")["features"])
    subsets = sorted(p.name for p in root.iterdir() if p.is_dir())
    found = scan(root, subsets, ["flac", "wav"])
    items = [i for i in found if i.path is not None and not i.audio_error][:limit]
    extractor = FeatureExtractor(config)
    features = {i.utterance_id: compute_features(i.path, extractor) for i in items}
    index = pd.DataFrame(
        {"utterance_id": list(features), "feature_key": list(features),
         "text": [normalise(i.transcript)[0] for i in items],
         "num_frames": [features[i.utterance_id].shape[1] for i in items]}
    )  # fmt: skip
    stats = RunningStats(config.n_features)
    for tensor in features.values():
        stats.update(tensor.float())
    return index, features, stats.result(), config


def timed_steps(
    model, loader, optimizer, device, precision: str, steps: int, fps: float, warmup: int = 0
):
    """``steps`` training steps cycling over ``loader``, as the trainer takes them (clipped
    gradients): losses, audio-s per second after ``warmup`` steps, the share spent waiting."""
    import torch

    from asr_pipeline.trainer.batching import batch_loss, forward_precision

    model.train()
    losses, frames, waited = [], 0, 0.0
    iterator, start = iter(loader), None
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, frames, waited = time.perf_counter(), 0, 0.0
        asked = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        waited += time.perf_counter() - asked
        with forward_precision(device, precision):
            loss, _, _ = batch_loss(model, batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        losses.append(loss.detach())
        frames += int(batch.feature_lengths.sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return [float(x) for x in losses], frames / fps / wall, waited / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", help="LibriSpeech-layout folder (default: the shared sample)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--utterances", type=int, default=48)
    parser.add_argument("--steps", type=int, default=200, help="steps of the convergence check")
    parser.add_argument("--timed-steps", type=int, default=30)
    parser.add_argument("--batch-seconds", type=float, default=120.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--presets", default="default,large")
    parser.add_argument("--tiny", action="store_true", help="tiny models: a CPU check")
    parser.add_argument("--out", type=Path, default=REPORT_DIR / "gpu.json")
    args = parser.parse_args()

    import torch

    from asr_pipeline.corpus.buckets import bucket_batches
    from asr_pipeline.model.acoustic import count_parameters
    from asr_pipeline.model.factory import build_acoustic_model, model_config_from_dict
    from asr_pipeline.trainer.augment import SpecAugment
    from asr_pipeline.trainer.batching import (
        BatchLoader,
        UtteranceDataset,
        batch_loss,
        forward_precision,
    )
    from asr_pipeline.trainer.loader import LoaderSettings, batch_loader

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    root = Path(args.corpus) if args.corpus else librispeech_dir(None)
    index, features, stats, config = _corpus(root, args.utterances)
    fps = config.sample_rate / config.hop_length
    audio_s = index.num_frames.sum() / fps
    print(f"{len(index)} utterances, {audio_s:.0f} s of audio, device {device}", flush=True)
    training = project_params("training")["training"]
    augment = SpecAugment(**training["spec_augment"])
    batches = bucket_batches(index.num_frames.tolist(), int(args.batch_seconds * fps), seed=1)
    settings = LoaderSettings(args.workers, 2)
    dataset = UtteranceDataset(index, features, stats, augment, seed=1)
    result = {"device": str(device), "utterances": len(index), "audio_s": audio_s, "presets": {}}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)

    for preset in args.presets.split(","):
        values = {**training["presets"][preset], "n_features": config.n_features}
        model_config = model_config_from_dict({**values, **(TINY if args.tiny else {})})
        figures = {"parameters": count_parameters(build_acoustic_model(model_config))}
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            model = build_acoustic_model(model_config).to(device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            _, pace, waiting = timed_steps(
                model, batch_loader(dataset, batches, settings), optimizer, device, precision,
                args.timed_steps, fps, warmup=3,
            )  # fmt: skip
            figures[precision] = {"audio_s_per_s": pace, "waiting_share": waiting}
            print(f"{preset:8s} {precision}: {pace:9.0f} audio-s/s, waiting "
                  f"{100 * waiting:.1f}% of the step time", flush=True)  # fmt: skip
        figures["bf16_speedup"] = (
            figures["bf16"]["audio_s_per_s"] / figures["fp32"]["audio_s_per_s"]
        )
        result["presets"][preset] = figures

    # correctness on the default preset: one batch, then --steps steps in each precision
    values = {**training["presets"]["default"], "n_features": config.n_features}
    model_config = model_config_from_dict({**values, **(TINY if args.tiny else {})})
    batch = BatchLoader(index, features, stats).load(batches[0])
    torch.manual_seed(0)
    model = build_acoustic_model(model_config).to(device).eval()
    with torch.no_grad():
        fp32 = batch_loss(model, batch, device)[0].item()
        with forward_precision(device, "bf16"):
            bf16 = batch_loss(model, batch, device)[0].item()
    curves = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_acoustic_model(model_config).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
        loader = batch_loader(dataset, batches, settings)
        losses, _, _ = timed_steps(model, loader, optimizer, device, precision, args.steps, fps)
        tenth = max(1, len(losses) // 10)
        curves[precision] = {
            "first": sum(losses[:tenth]) / tenth,
            "last": sum(losses[-tenth:]) / tenth,
        }
    result["correctness"] = {
        "one_batch_loss_fp32": fp32,
        "one_batch_loss_bf16": bf16,
        "bf16_relative_difference": abs(bf16 - fp32) / fp32,
        "steps": args.steps,
        "loss_first_and_last_tenth": curves,
        "loss_falls": all(c["last"] < 0.9 * c["first"] for c in curves.values()),
    }
    falls = ", ".join(f"{p} {c['first']:.3f} -> {c['last']:.3f}" for p, c in curves.items())
    print(f"one batch: fp32 {fp32:.4f}, bf16 {bf16:.4f}; over {args.steps} steps: {falls}")
    write_report(result, args.out)
    return 0 if result["correctness"]["loss_falls"] else 1


if __name__ == "__main__":
    sys.exit(main())
