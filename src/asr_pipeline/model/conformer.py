"""A Conformer CTC model: convolutional subsampling, ``torchaudio.models.Conformer``, CTC head.

    features (B, F, T)
      -> 2 x (Conv2d 3x3, stride 2, ReLU)                # 4x fewer frames (and features)
      -> Linear to d_model, Dropout
      -> N x ConformerLayer (FFN/2, self-attention, convolution module, FFN/2, LayerNorm)
      -> Dropout, Linear over the characters
    log-probabilities (B, T', n_classes) and output lengths T' = ceil(ceil(T / 2) / 2)

It has :class:`~asr_pipeline.model.acoustic.AcousticModel`'s interface, so the trainer, the
bundle and the recognizer run either network. As there, an utterance's output does not depend on
its batch-mates. ``torchaudio``'s Conformer masks padding only in self-attention: its
convolution module reads the frames past an utterance's end, which hold whatever the layers made
of padding, and its batch norm counts them in training. So the layers are run here, on
torchaudio's own modules and weights, with padded frames zeroed before each depthwise convolution
(the zeros it pads with when the utterance is alone) and batch norm computed on real frames only.
The subsampling convolutions zero padded frames as ``AcousticModel``'s front end does.

There is no positional encoding, as in torchaudio's Conformer recipes: the subsampling and the
depthwise convolutions tell the layers where they are (relative positions only, which is what
speech needs and keeps one utterance's output the same wherever it is cut).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torchaudio.models import Conformer
from torchaudio.models.conformer import ConformerLayer

from asr_pipeline.model.acoustic import conv_output_length, model_settings, zero_padding
from asr_pipeline.units.characters import VOCABULARY

SUBSAMPLING_KERNEL = 3
SUBSAMPLING_STRIDE = 2  # per convolution, in time and frequency; two convolutions: 4x


@dataclass(frozen=True, kw_only=True)
class ConformerConfig:
    """Sizes of the Conformer model: a preset with ``architecture: conformer`` in
    ``parameters_training.yml`` and the number of features of ``features``.

    No defaults but the vocabulary's size, as for ``ModelConfig``: the YAML is the one source of
    the sizes. :meth:`to_dict` names the architecture, so a bundle says which network it holds.
    """

    ARCHITECTURE: ClassVar[str] = "conformer"

    n_features: int
    n_classes: int = len(VOCABULARY)
    subsampling_channels: int
    d_model: int
    n_heads: int
    ffn_dim: int
    n_layers: int
    conv_kernel: int
    dropout: float

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ConformerConfig:
        """A checked config: unknown and missing settings are refused with their names."""
        config = cls(**model_settings(cls, values))
        if config.conv_kernel % 2 == 0:
            raise ValueError("conv_kernel must be odd so that padding keeps frames centred")
        if config.d_model % config.n_heads:
            raise ValueError(f"d_model ({config.d_model}) must be a multiple of n_heads")
        return config

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.ARCHITECTURE, **asdict(self)}


def subsampled_length(length: torch.Tensor | int) -> torch.Tensor | int:
    """Frames out of the two subsampling convolutions for ``length`` frames in."""
    for _ in range(2):
        length = conv_output_length(length, SUBSAMPLING_KERNEL, SUBSAMPLING_STRIDE)
    return length


class ConvSubsampling(nn.Module):
    """Two 3x3 stride-2 convolutions over (frequency, time) with ReLU, then a linear projection.

    Padded by one on each side (not "valid" as in ESPnet), so that every utterance of at least
    one frame gives at least one output frame, and lengths follow ``conv_output_length``.
    """

    def __init__(self, n_features: int, channels: int, d_model: int) -> None:
        super().__init__()
        kernel, stride, pad = SUBSAMPLING_KERNEL, SUBSAMPLING_STRIDE, SUBSAMPLING_KERNEL // 2
        self.conv1 = nn.Conv2d(1, channels, kernel, stride=stride, padding=pad)
        self.conv2 = nn.Conv2d(channels, channels, kernel, stride=stride, padding=pad)
        self.activation = nn.ReLU()
        self.projection = nn.Linear(channels * subsampled_length(n_features), d_model)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, F, T)`` features -> ``(B, T', d_model)``; ``lengths`` are the input lengths."""
        half = conv_output_length(lengths, SUBSAMPLING_KERNEL, SUBSAMPLING_STRIDE)
        # zeroed before the second convolution reads them, as when the utterance is alone
        x = zero_padding(self.activation(self.conv1(features.unsqueeze(1))), half)
        x = self.activation(self.conv2(x))  # (B, C, F', T')
        batch, channels, freq, time = x.shape
        return self.projection(x.permute(0, 3, 1, 2).reshape(batch, time, channels * freq))


def _masked_convolution(layer: ConformerLayer, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``layer``'s convolution module with its residual, on ``x (T, B, D)``, ``real (B, T)``.

    torchaudio's module is pointwise conv, GLU, depthwise conv, batch norm, SiLU, pointwise conv,
    dropout; the depthwise convolution gets zeros past each utterance's end and the batch norm
    only real frames (its statistics in training, its running averages for evaluation).
    """
    module = layer.conv_module
    pointwise, glu, depthwise, norm, *rest = module.sequential
    y = module.layer_norm(x).permute(1, 2, 0)  # (B, D, T)
    y = depthwise(glu(pointwise(y)) * real.unsqueeze(1))
    frames = y.transpose(1, 2)  # (B, T, D)
    normed = torch.zeros_like(frames)
    normed[real] = norm(frames[real])  # (frames, D): batch norm over real frames only
    y = normed.transpose(1, 2)
    for part in rest:
        y = part(y)
    return x + y.permute(2, 0, 1)


def _layer_forward(
    layer: ConformerLayer, x: torch.Tensor, padding: torch.Tensor, real: torch.Tensor
) -> torch.Tensor:
    """``ConformerLayer.forward`` on ``x (T, B, D)`` with :func:`_masked_convolution`.

    ``padding (B, T)`` is attention's key padding mask, ``real`` its complement.
    """
    x = x + 0.5 * layer.ffn1(x)
    if layer.convolution_first:
        x = _masked_convolution(layer, x, real)
    y = layer.self_attn_layer_norm(x)
    y, _ = layer.self_attn(y, y, y, key_padding_mask=padding, need_weights=False)
    x = x + layer.self_attn_dropout(y)
    if not layer.convolution_first:
        x = _masked_convolution(layer, x, real)
    x = x + 0.5 * layer.ffn2(x)
    return layer.final_layer_norm(x)


class ConformerModel(nn.Module):
    """Features ``(B, n_features, T)`` -> CTC log-probabilities ``(B, T', n_classes)``."""

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.subsampling = ConvSubsampling(c.n_features, c.subsampling_channels, c.d_model)
        self.input_dropout = nn.Dropout(c.dropout)
        self.conformer = Conformer(
            input_dim=c.d_model,
            num_heads=c.n_heads,
            ffn_dim=c.ffn_dim,
            num_layers=c.n_layers,
            depthwise_conv_kernel_size=c.conv_kernel,
            dropout=c.dropout,
        )
        self.output_dropout = nn.Dropout(c.dropout)
        self.classifier = nn.Linear(c.d_model, c.n_classes)

    def output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """Frames out of the model for ``input_lengths`` frames in (the subsampling's)."""
        return subsampled_length(input_lengths)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The Conformer layers on ``x (B, T', d_model)`` with ``lengths`` real frames each."""
        frames = torch.arange(x.shape[1], device=x.device)
        real = frames.unsqueeze(0) < lengths.to(x.device).unsqueeze(1)  # (B, T')
        y = x.transpose(0, 1)  # torchaudio's layers take (T, B, D)
        for layer in self.conformer.conformer_layers:
            y = _layer_forward(layer, y, ~real, real)
        return y.transpose(0, 1)

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out_lengths = self.output_lengths(lengths)
        x = self.input_dropout(self.subsampling(features, lengths))
        x = self.encode(x, out_lengths)
        return self.classifier(self.output_dropout(x)).log_softmax(dim=-1), out_lengths
