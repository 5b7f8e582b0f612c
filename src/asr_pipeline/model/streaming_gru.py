"""A streaming CTC model: causal CNN front end, unidirectional GRUs, a lookahead convolution.

    features (B, F, T)
      -> CausalConv2d front end, stride (freq_stride, time_stride)    # subsamples time
      -> N x CausalResidualBlock (BatchNorm, GELU, causal Conv2d 3x3) x 2 + skip
      -> Linear to rnn_dim
      -> M x GRUBlock (LayerNorm, GELU, unidirectional GRU, Dropout) + skip
      -> Lookahead: a depthwise convolution over the next ``lookahead`` frames (DeepSpeech2's
         "lookahead convolution", Amodei et al. 2016, section 3.7)
      -> Classifier (Linear, GELU, Dropout, Linear over the units)
    log-probabilities (B, T', n_classes), T' = ceil(T / time_stride)

Every layer but the lookahead convolution is causal in time: output frame ``j`` depends on the
features up to frame ``(j + lookahead) * time_stride`` and no further. ``lookahead_ms`` (a
preset setting, stored in the bundle) is that right context in milliseconds; ``frame_ms`` is the
features' hop (``hop_length / sample_rate``), checked against the bundle's features when a
streaming recognizer loads it, since the model alone cannot know it.

:meth:`StreamingGRUModel.stream` runs the same layers on a chunk of frames with a carried
:class:`StreamState` (conv left context, GRU hidden states, frames awaiting their right context)
and gives exactly the log-probabilities of the whole-utterance :meth:`~StreamingGRUModel.forward`,
whatever the chunk sizes (tests/test_streaming_model.py). The full forward is the stream run from
a zero state on the whole input, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from asr_pipeline.model.acoustic import model_settings, zero_padding
from asr_pipeline.units.characters import VOCABULARY


@dataclass(frozen=True, kw_only=True)
class StreamingGRUConfig:
    """Sizes of the streaming model: a preset with ``architecture: streaming_gru``.

    No defaults but the vocabulary's size: the YAML is the one source of the sizes.
    """

    ARCHITECTURE: ClassVar[str] = "streaming_gru"

    n_features: int
    n_classes: int = len(VOCABULARY)
    cnn_channels: int
    n_residual_blocks: int
    frontend_kernel: int
    time_stride: int
    freq_stride: int
    rnn_dim: int
    n_rnn_layers: int
    lookahead_ms: int
    frame_ms: float
    dropout: float
    residual_rnn: bool  # skip connections around the GRU blocks

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StreamingGRUConfig:
        """A checked config: unknown and missing settings are refused with their names, and a
        look-ahead that is not a whole number of output frames is refused with the ones that are."""
        # Bundles saved before the GRU blocks had skip connections lack the key: they are read as
        # they were trained, without (the preset always names it).
        values = {"residual_rnn": False, **values}
        config = cls(**model_settings(cls, values))
        if config.frontend_kernel % 2 == 0:
            raise ValueError("frontend_kernel must be odd so that frequency padding is centred")
        step_ms = config.frame_ms * config.time_stride
        frames = config.lookahead_ms / step_ms
        if config.lookahead_ms < 0 or abs(frames - round(frames)) > 1e-6:
            raise ValueError(
                f"lookahead_ms ({config.lookahead_ms}) must be a multiple of one output frame "
                f"(frame_ms x time_stride = {step_ms:g} ms)"
            )
        return config

    @property
    def lookahead_frames(self) -> int:
        """Right context of the lookahead convolution, in output frames."""
        return round(self.lookahead_ms / (self.frame_ms * self.time_stride))

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.ARCHITECTURE, **asdict(self)}


class CausalConv2d(nn.Conv2d):
    """A Conv2d over (frequency, time), padded in frequency as usual and causal in time.

    Output frame ``j`` reads input frames ``j * stride - (kernel - 1) ... j * stride``: the
    ``kernel - 1`` frames before the first are the carried ``context`` (zeros at the start).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride=(1, 1)) -> None:
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=(kernel // 2, 0))

    def initial_context(self, channels: int, freq: int) -> torch.Tensor:
        return torch.zeros(1, channels, freq, self.kernel_size[1] - 1)

    def stream(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, C, F, t)`` after ``context`` -> the output frames complete now, and the input
        frames the next outputs start from (their left context and any stride remainder)."""
        x = torch.cat([context, x], dim=-1)
        kernel, stride = self.kernel_size[1], self.stride[1]
        n_out = max(0, (x.shape[-1] - kernel) // stride + 1)
        y = super().forward(x[..., : (n_out - 1) * stride + kernel]) if n_out else None
        return y, x[..., n_out * stride :]


class CausalResidualBlock(nn.Module):
    """Two causal 3x3 convolutions with batch norm and GELU, and a skip connection."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv1 = CausalConv2d(channels, channels, 3)
        self.norm2 = nn.BatchNorm2d(channels)
        self.conv2 = CausalConv2d(channels, channels, 3)
        self.dropout = nn.Dropout(dropout)
        self.activation = nn.GELU()

    def stream(
        self, x: torch.Tensor, lengths: torch.Tensor, context: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # Padding is zeroed before each convolution as in AcousticModel (it only changes batch
        # norm's training statistics: a causal convolution never reads past a real frame).
        residual = x
        y, c1 = self.conv1.stream(
            zero_padding(self.dropout(self.activation(self.norm1(x))), lengths), context[0]
        )
        y, c2 = self.conv2.stream(
            zero_padding(self.dropout(self.activation(self.norm2(y))), lengths), context[1]
        )
        return zero_padding(y + residual, lengths), [c1, c2]


class GRUBlock(nn.Module):
    """LayerNorm, GELU, a unidirectional GRU over time, dropout, and (``residual``) the block's
    input added back; the GRU's hidden state carries over between chunks.

    The skip connection is what lets a stack of unidirectional GRUs leave CTC's all-blank
    plateau on a few hours of speech (docs/accuracy.md, the streaming preset's probe).
    """

    def __init__(self, input_dim: int, hidden_dim: int, dropout: float, residual: bool) -> None:
        super().__init__()
        if residual and input_dim != hidden_dim:
            raise ValueError("a residual GRU block needs as many outputs as inputs")
        self.norm = nn.LayerNorm(input_dim)
        self.activation = nn.GELU()
        self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.residual = residual

    def forward(
        self, x: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        output, hidden = self.gru(self.activation(self.norm(x)), hidden)
        output = self.dropout(output)
        return (x + output if self.residual else output), hidden


@dataclass
class StreamState:
    """What one stream carries between chunks (batch of one; :meth:`StreamingGRUModel.stream`).

    ``pending_features``: the front end's input frames not consumed yet, with their left context;
    ``conv_context``: each residual convolution's last input frames; ``hidden``: each GRU's state;
    ``awaiting``: GRU outputs waiting for their lookahead frames; ``frames_out``: emitted so far.
    """

    pending_features: torch.Tensor
    conv_context: list[list[torch.Tensor]]
    hidden: list[torch.Tensor | None]
    awaiting: torch.Tensor
    frames_out: int = 0
    finished: bool = field(default=False)


class StreamingGRUModel(nn.Module):
    """Features ``(B, n_features, T)`` -> CTC log-probabilities ``(B, T', n_classes)``."""

    def __init__(self, config: StreamingGRUConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.frontend = CausalConv2d(
            1, c.cnn_channels, c.frontend_kernel, stride=(c.freq_stride, c.time_stride)
        )
        self.residual_blocks = nn.ModuleList(
            CausalResidualBlock(c.cnn_channels, c.dropout) for _ in range(c.n_residual_blocks)
        )
        self.freq_out = (c.n_features + 2 * (c.frontend_kernel // 2) - c.frontend_kernel) // (
            c.freq_stride
        ) + 1
        self.projection = nn.Linear(c.cnn_channels * self.freq_out, c.rnn_dim)
        self.gru_blocks = nn.ModuleList(
            GRUBlock(c.rnn_dim, c.rnn_dim, c.dropout, c.residual_rnn) for _ in range(c.n_rnn_layers)
        )
        kernel = c.lookahead_frames + 1
        self.lookahead = nn.Conv1d(c.rnn_dim, c.rnn_dim, kernel, groups=c.rnn_dim)
        self.classifier = nn.Sequential(
            nn.Linear(c.rnn_dim, c.rnn_dim),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.rnn_dim, c.n_classes),
        )

    def output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """``ceil(T / time_stride)`` frames out for ``T`` in (the causal front end's)."""
        return (input_lengths + self.config.time_stride - 1) // self.config.time_stride

    def initial_state(self, batch: int = 1) -> StreamState:
        """The state of a stream before its first frame: zeros, as the full forward pads with."""
        c = self.config
        pending = self.frontend.initial_context(1, c.n_features).expand(batch, -1, -1, -1)
        block_context = (
            self.residual_blocks[0].conv1.initial_context if self.residual_blocks else None
        )
        contexts = [
            [block_context(c.cnn_channels, self.freq_out).expand(batch, -1, -1, -1)] * 2
            for _ in self.residual_blocks
        ]
        return StreamState(
            pending_features=pending,
            conv_context=contexts,
            hidden=[None] * c.n_rnn_layers,
            awaiting=torch.zeros(batch, c.rnn_dim, 0),
        )

    def _encode(
        self, features: torch.Tensor, lengths: torch.Tensor, state: StreamState
    ) -> torch.Tensor | None:
        """Front end, residual blocks and GRUs on new frames; ``(B, rnn_dim, t')`` or None."""
        x, state.pending_features = self.frontend.stream(
            features.unsqueeze(1), state.pending_features
        )
        if x is None:
            return None
        for i, block in enumerate(self.residual_blocks):
            x, state.conv_context[i] = block.stream(x, lengths, state.conv_context[i])
        batch, channels, freq, time = x.shape
        x = self.projection(x.permute(0, 3, 1, 2).reshape(batch, time, channels * freq))
        for i, block in enumerate(self.gru_blocks):
            x, state.hidden[i] = block(x, state.hidden[i])
        return zero_padding(x.transpose(1, 2).unsqueeze(2), lengths).squeeze(2)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, rnn_dim, t' + lookahead)`` -> log-probabilities ``(B, t', n_classes)``."""
        return self.classifier(self.lookahead(x).transpose(1, 2)).log_softmax(dim=-1)

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out_lengths = self.output_lengths(lengths)
        x = self._encode(features, out_lengths, self.initial_state(len(features)))
        x = F.pad(x, (0, self.config.lookahead_frames))  # zeros after the end, as padding is
        return self._classify(x), out_lengths

    def stream(
        self, features: torch.Tensor, state: StreamState, final: bool = False
    ) -> torch.Tensor:
        """Log-probabilities ``(t', n_classes)`` of the frames that ``features (n_features, t)``
        completes, given what came before (``state``, updated in place).

        ``final`` ends the stream: the last frames get zeros as their look-ahead, as at the end
        of a whole utterance, so that all ``ceil(T / time_stride)`` frames have come out.
        Call it in ``eval()`` mode (batch norm's running statistics, no dropout).
        """
        if state.finished:
            raise RuntimeError("this stream has ended: start another with initial_state()")
        big = torch.tensor([torch.iinfo(torch.int64).max])  # no padding in a stream of one
        x = self._encode(features.unsqueeze(0), big, state) if features.shape[-1] else None
        if x is not None:
            state.awaiting = torch.cat([state.awaiting, x], dim=-1)
        if final:
            state.finished = True
            state.awaiting = F.pad(state.awaiting, (0, self.config.lookahead_frames))
        ready = state.awaiting.shape[-1] - self.config.lookahead_frames
        if ready <= 0:
            return torch.zeros(0, self.config.n_classes)
        log_probs = self._classify(state.awaiting)[0]
        state.awaiting = state.awaiting[..., ready:]
        state.frames_out += ready
        return log_probs
