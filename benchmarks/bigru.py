"""The model's BiGRU block against one bidirectional GRU over packed sequences, side by side.

    python benchmarks/bigru.py [--threads 2] [--batch-seconds 60] [--repeats 5]

Both compute the same thing: neither reads padding before a real frame, so an utterance's output
does not depend on its batch-mates (checked here on the same weights before timing). The packed
form was the model's until packed sequences turned out to miss the CPU's fused GRU kernels. Times a
training step (forward, backward) of the block alone at the default preset's sizes, for a batch of
``--batch-seconds`` of audio in utterances of 8-16 s, and of the whole default model with either
block (without the optimizer and the CTC loss). Writes
data/08_reporting/benchmarks/bigru.json.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPORT_DIR, project_params, write_report  # noqa: E402

from asr_pipeline.model.acoustic import AcousticModel, BiGRUBlock, ModelConfig  # noqa: E402


class PackedBiGRUBlock(nn.Module):
    """The former block: LayerNorm, GELU, one bidirectional GRU over packed sequences."""

    def __init__(self, block: BiGRUBlock) -> None:
        super().__init__()
        self.norm, self.activation, self.dropout = block.norm, block.activation, block.dropout
        hidden = block.forward_gru.hidden_size
        self.gru = nn.GRU(
            block.forward_gru.input_size, hidden, batch_first=True, bidirectional=True
        )
        state = dict(block.forward_gru.state_dict())
        state |= {f"{k}_reverse": v for k, v in block.backward_gru.state_dict().items()}
        self.gru.load_state_dict(state)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm(x))
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        output, _ = self.gru(packed)
        output = pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])[0]
        return self.dropout(output)


def seconds_per_step(step: Callable[[], torch.Tensor], repeats: int) -> float:
    """Median wall seconds of ``step().sum().backward()`` after one warm-up."""
    step().sum().backward()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step().sum().backward()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch-seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPORT_DIR / "bigru.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    features = project_params("feature_engineering")["features"]
    config = ModelConfig.from_dict(
        {
            **project_params("training")["training"]["presets"]["default"],
            "n_features": features["n_mels"],
        }
    )
    durations, total = [], 0.0  # utterances of 8-16 s filling the batch, as the bucketing does
    while total + 8 <= args.batch_seconds:
        durations.append(min(16.0, 8.0 + 2.0 * len(durations), args.batch_seconds - total))
        total += durations[-1]
    frames = torch.tensor([int(d * 100) for d in durations])  # 10 ms hop
    steps = AcousticModel(config).output_lengths(frames)
    # with a gradient, as for every block after the first
    x = torch.randn(len(steps), int(steps.max()), config.rnn_dim, requires_grad=True)

    block = BiGRUBlock(config.rnn_dim, config.rnn_dim, dropout=0.0)
    packed = PackedBiGRUBlock(block)
    with torch.inference_mode():
        padded_out, packed_out = block(x, steps), packed(x, steps)
    for i, n in enumerate(steps.tolist()):
        torch.testing.assert_close(padded_out[i, :n], packed_out[i, :n], atol=1e-5, rtol=0)

    padded_s = seconds_per_step(lambda: block(x, steps), args.repeats)
    packed_s = seconds_per_step(lambda: packed(x, steps), args.repeats)
    model = AcousticModel(config)
    packed_model = copy.deepcopy(model)
    packed_model.gru_blocks = nn.ModuleList(PackedBiGRUBlock(b) for b in packed_model.gru_blocks)
    features = torch.randn(len(frames), config.n_features, int(frames.max()))
    model_s = seconds_per_step(lambda: model(features, frames)[0], args.repeats)
    packed_model_s = seconds_per_step(lambda: packed_model(features, frames)[0], args.repeats)
    result = {
        "threads": args.threads,
        "batch_audio_seconds": total,
        "utterances": len(durations),
        "gru_steps": steps.tolist(),
        "block_padded_seconds": padded_s,
        "block_packed_seconds": packed_s,
        "block_speedup": packed_s / padded_s,
        "model_step_seconds": model_s,
        "packed_model_step_seconds": packed_model_s,
        "model_speedup": packed_model_s / model_s,
        "model_audio_seconds_per_second": total / model_s,
        "packed_model_audio_seconds_per_second": total / packed_model_s,
        "model_gru_layers": config.n_rnn_layers,
    }
    print(
        f"BiGRU block ({config.rnn_dim}, {len(durations)} utterances, {total:.0f} s of audio, "
        f"{args.threads} threads), forward + backward:\n"
        f"  packed bidirectional GRU  {packed_s * 1000:7.1f} ms\n"
        f"  two padded GRUs (model)   {padded_s * 1000:7.1f} ms   "
        f"{packed_s / padded_s:.2f}x faster\n"
        f"whole default model ({config.n_rnn_layers} blocks), forward + backward:\n"
        f"  with packed blocks        {packed_model_s * 1000:7.1f} ms   "
        f"{total / packed_model_s:5.0f} audio-s/s\n"
        f"  as it is                  {model_s * 1000:7.1f} ms   {total / model_s:5.0f} audio-s/s"
        f"   {packed_model_s / model_s:.2f}x faster"
    )
    write_report(result, args.out)


if __name__ == "__main__":
    main()
