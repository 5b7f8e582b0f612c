"""The acoustic network as an ONNX file (fp32), and its int8 dynamically quantised copy.

Which exporter: torch 2.14's ``torch.export``-based one (``dynamo=True``, needs ``onnxscript``)
cannot decompose ``aten.gru`` with a time axis left dynamic, and the legacy TorchScript exporter
traces torchaudio's multi-head attention with the traced length baked into its reshapes (the
file then fails on any other length). So each network gets the exporter that handles it: the
TorchScript one for the DeepSpeech2-like model (its GRUs become ONNX ``GRU`` ops), the
``torch.export`` one for the Conformer. Both export :mod:`~asr_pipeline.export.graph`'s
one-utterance graphs, with the number of frames as the one dynamic axis.

Dynamic quantisation stores weights as int8 and quantises activations at run time, so it needs
no calibration data. Only ``MatMul`` (every linear layer, attention's projections and the
feed-forward blocks) is quantised: ONNX Runtime's CPU kernel for int8 ``ConvInteger`` is
missing, and its quantiser has no dynamic GRU kernel, so convolutions and GRUs stay fp32.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asr_pipeline.export.graph import inference_graph
from asr_pipeline.model.conformer import ConformerModel

INPUT_NAME = "features"
OUTPUT_NAME = "log_probs"
OPSET = 18
EXAMPLE_FRAMES = 200  # the traced example's length; any length runs (the axis is dynamic)
QUANTISED_OPS = ["MatMul"]


def exporter_name(model: nn.Module) -> str:
    """``dynamo`` (torch.export) for the Conformer, ``torchscript`` for the GRU model."""
    return "dynamo" if isinstance(model, ConformerModel) else "torchscript"


def export_onnx(model: nn.Module, n_features: int, path: Path) -> str:
    """Write ``model``'s one-utterance graph ``features (1, n_features, frames)`` ->
    ``log_probs (1, out_frames, n_classes)`` to ``path``; the exporter's name."""
    graph = inference_graph(model)
    example = (torch.randn(1, n_features, EXAMPLE_FRAMES),)
    name = exporter_name(model)
    # the legacy exporter's deprecation and GRU batch notices, torch.export's "torchvision is
    # not installed" (none of its operators is used): noise to a user of asr-export
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == "dynamo":
                frames = torch.export.Dim("frames", min=1, max=1_000_000)
                program = torch.onnx.export(
                    graph,
                    example,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=({2: frames},),
                    opset_version=OPSET,
                    dynamo=True,
                    verbose=False,
                )
                program.save(str(path))
            else:
                torch.onnx.export(
                    graph,
                    example,
                    str(path),
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {2: "frames"}, OUTPUT_NAME: {1: "out_frames"}},
                    opset_version=OPSET,
                    dynamo=False,
                )
    finally:
        registration.setLevel(level)
    return name


def quantize_int8(source: Path, target: Path) -> None:
    """An int8 dynamically quantised copy of ``source`` (weights of :data:`QUANTISED_OPS`).

    ONNX Runtime's pre-processing (shape inference, graph optimisation) runs first, as its
    quantiser asks: fused graphs quantise into fewer, larger integer matrix products.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name(f".{target.stem}.prepared.onnx")
    try:
        quant_pre_process(str(source), str(prepared))
        quantize_dynamic(
            str(prepared),
            str(target),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=QUANTISED_OPS,
        )
    finally:
        prepared.unlink(missing_ok=True)


def max_difference(model: nn.Module, path: Path, n_features: int, frames: tuple[int, ...]) -> float:
    """Largest absolute difference between ``model``'s log-probabilities and ONNX Runtime's for
    the file at ``path``, over random features of each length in ``frames``.

    Run on every export: the one-utterance graphs are a second path through the networks, and a
    model change they miss must fail the export, not surface as bad transcripts.
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    for length in frames:
        features = torch.randn(1, n_features, length, generator=generator)
        with torch.inference_mode():
            expected, _ = model(features, torch.tensor([length]))
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: features.numpy()})
        if got.shape != tuple(expected.shape):
            return float("inf")
        worst = max(worst, float(np.abs(got - expected.numpy()).max()))
    return worst
