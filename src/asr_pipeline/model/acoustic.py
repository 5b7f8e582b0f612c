"""A DeepSpeech2-like acoustic model: strided conv front end, residual CNN blocks, BiGRUs, CTC head.

    features (B, F, T)
      -> Conv2d front end, stride (freq_stride, time_stride)        # subsamples time
      -> N x ResidualBlock (BatchNorm, GELU, Conv2d) x 2 + skip
      -> Linear to rnn_dim
      -> M x BiGRUBlock (LayerNorm, GELU, GRU over time, Dropout)
      -> Classifier (Linear, GELU, Dropout, Linear over the characters)
    log-probabilities (B, T', n_classes) and output lengths T'

An utterance's output does not depend on its batch-mates, so that training, batched evaluation and
one-at-a-time serving agree: every GRU runs over time, padded frames are kept at zero through
the convolutions and no GRU reads padding before a real frame. Output lengths come from the
convolution arithmetic, so the CTC loss and the decoders see exactly the frames the model made.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn

from asr_pipeline.common.settings import check_settings
from asr_pipeline.units.characters import VOCABULARY


def model_settings(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without its ``architecture`` key, once they are exactly the fields of ``cls``.

    Unknown and missing settings are refused with their names (:func:`check_settings`), so that a
    typo in a preset fails the run instead of silently training another network. ``architecture``
    may be there (presets and bundles name their network) but must be ``cls.ARCHITECTURE``. A
    preset's ``units`` (what it outputs, e.g. ``seed``'s characters) is not the network's: the
    training pipeline's units node reads it, the network only counts the classes.
    """
    values = {key: value for key, value in values.items() if key != "units"}
    architecture = values.pop("architecture", cls.ARCHITECTURE)
    if architecture != cls.ARCHITECTURE:
        raise ValueError(
            f"{cls.__name__} is the {cls.ARCHITECTURE!r} network, not {architecture!r}: "
            "read model settings with asr_pipeline.model.factory.model_config_from_dict"
        )
    check_settings(
        "model",
        values,
        known=(f.name for f in fields(cls)),
        required=(f.name for f in fields(cls) if f.default is MISSING),
    )
    return values


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Sizes of the DeepSpeech2-like model: a preset of ``training.presets`` in
    ``parameters_training.yml`` and the number of features of ``features``.

    No defaults but the vocabulary's size: the YAML is the one source of the sizes (a bundle
    stores every field). :meth:`to_dict` has no ``architecture`` key, as before there were other
    networks: a dict without one is this model (:mod:`asr_pipeline.model.factory`), so the
    bundles and checkpoint fingerprints of this model stay what they were.
    """

    ARCHITECTURE: ClassVar[str] = "deepspeech2"

    n_features: int
    n_classes: int = len(VOCABULARY)
    cnn_channels: int
    n_residual_blocks: int
    frontend_kernel: int
    time_stride: int
    freq_stride: int
    rnn_dim: int
    n_rnn_layers: int
    dropout: float

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """A checked config: unknown and missing settings are refused with their names."""
        config = cls(**model_settings(cls, values))
        if config.frontend_kernel % 2 == 0:
            raise ValueError("frontend_kernel must be odd so that padding keeps frames centred")
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def conv_output_length(length: torch.Tensor | int, kernel: int, stride: int) -> torch.Tensor | int:
    """Output length of a convolution with ``padding = kernel // 2`` (PyTorch's floor division)."""
    return (length + 2 * (kernel // 2) - kernel) // stride + 1


def zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero the frames of ``x (B, C, F, T)`` past each utterance's length."""
    frames = torch.arange(x.shape[-1], device=x.device)
    mask = frames.unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    return x * mask[:, None, None, :]


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and GELU, and a skip connection."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.norm2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Padding is zeroed right before each convolution: batch norm shifts it away from zero,
        # and a convolution must see the same zeros as when the utterance is alone.
        residual = x
        x = self.conv1(zero_padding(self.dropout(self.activation(self.norm1(x))), lengths))
        x = self.conv2(zero_padding(self.dropout(self.activation(self.norm2(x))), lengths))
        return zero_padding(x + residual, lengths)


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of ``x (B, T, D)`` within its own length; padding stays at the end.

    Applying it twice gives ``x`` back.
    """
    frames = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, T)
    source = lengths.to(x.device).unsqueeze(1) - 1 - frames  # (B, T)
    source = torch.where(source >= 0, source, frames)
    return x.gather(1, source.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class BiGRUBlock(nn.Module):
    """LayerNorm, GELU, a bidirectional GRU over time, dropout.

    The two directions are two GRUs over padded batches; the backward one reads each utterance
    reversed within its length. A GRU's output at a frame depends only on that frame and the
    ones before it, so real frames never see padding and an utterance's output does not depend on
    its batch-mates, as with packed sequences, which miss the fused kernels and run slower
    (``benchmarks/bigru.py``; figures in ``docs/accuracy.md``).
    """

    def __init__(self, input_dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(input_dim)
        self.activation = nn.GELU()
        self.forward_gru = nn.GRU(input_dim, hidden_dim, batch_first=True)
        self.backward_gru = nn.GRU(input_dim, hidden_dim, batch_first=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm(x))
        forward, _ = self.forward_gru(x)
        backward, _ = self.backward_gru(reverse_within_lengths(x, lengths))
        output = torch.cat([forward, reverse_within_lengths(backward, lengths)], dim=-1)
        return self.dropout(output)

    def _load_from_state_dict(
        self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # Registered models with one bidirectional ``gru`` (the packed-sequence layout) still
        # load: its weights are the two GRUs', renamed (tests/test_model.py).
        for key in [k for k in state_dict if k.startswith(prefix + "gru.")]:
            name = key[len(prefix + "gru.") :]
            direction = "backward_gru" if name.endswith("_reverse") else "forward_gru"
            state_dict[prefix + direction + "." + name.removesuffix("_reverse")] = state_dict.pop(
                key
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class AcousticModel(nn.Module):
    """Features ``(B, n_features, T)`` -> CTC log-probabilities ``(B, T', n_classes)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.frontend = nn.Conv2d(
            1,
            c.cnn_channels,
            kernel_size=c.frontend_kernel,
            stride=(c.freq_stride, c.time_stride),
            padding=c.frontend_kernel // 2,
        )
        self.residual_blocks = nn.ModuleList(
            ResidualBlock(c.cnn_channels, c.dropout) for _ in range(c.n_residual_blocks)
        )
        freq_out = conv_output_length(c.n_features, c.frontend_kernel, c.freq_stride)
        self.projection = nn.Linear(c.cnn_channels * freq_out, c.rnn_dim)
        self.gru_blocks = nn.ModuleList(
            BiGRUBlock(c.rnn_dim if i == 0 else 2 * c.rnn_dim, c.rnn_dim, c.dropout)
            for i in range(c.n_rnn_layers)
        )
        self.classifier = nn.Sequential(
            nn.Linear(2 * c.rnn_dim, c.rnn_dim),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.rnn_dim, c.n_classes),
        )

    def output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """Frames out of the model for ``input_lengths`` frames in (only the front end strides)."""
        return conv_output_length(
            input_lengths, self.config.frontend_kernel, self.config.time_stride
        )

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out_lengths = self.output_lengths(lengths)
        x = self.frontend(features.unsqueeze(1))  # (B, C, F', T')
        x = zero_padding(x, out_lengths)
        for block in self.residual_blocks:
            x = block(x, out_lengths)
        batch, channels, freq, time = x.shape
        x = x.permute(0, 3, 1, 2).reshape(batch, time, channels * freq)  # (B, T', C * F')
        x = self.projection(x)
        for block in self.gru_blocks:
            x = block(x, out_lengths)
        return self.classifier(x).log_softmax(dim=-1), out_lengths


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (what the training log and bundle info report)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
