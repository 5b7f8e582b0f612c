"""The acoustic networks' one-utterance forward pass, as graphs that ONNX exporters can trace.

The training modules take a padded batch with its lengths and keep every utterance independent
of its batch-mates: padded frames are zeroed before each convolution, the backward GRU reads each
utterance reversed *within its length* (a gather over computed indices), and the Conformer's
batch norm sees real frames only (boolean-mask indexing). With one utterance every frame is real,
so all of that is the identity, and the masks are what exporters trace badly (boolean index
assignment, shape arithmetic baked in as constants). The graphs here run the same submodules and
weights without it: features ``(1, F, T)`` -> log-probabilities ``(1, T', C)`` for any ``T``.
Nothing is packed (the models never pack sequences), so the GRUs export as plain ONNX GRUs.

``tests/test_export.py`` checks each graph against the model's own ``forward`` and the exported
files against :meth:`Recognizer.log_probs`, so a change to a model that these paths miss fails.
"""

from __future__ import annotations

import torch
from torch import nn

from asr_pipeline.model.acoustic import AcousticModel, BiGRUBlock, ResidualBlock
from asr_pipeline.model.conformer import ConformerModel


def _residual(block: ResidualBlock, x: torch.Tensor) -> torch.Tensor:
    """:class:`ResidualBlock` without padding to zero (one utterance has none)."""
    y = block.conv1(block.dropout(block.activation(block.norm1(x))))
    y = block.conv2(block.dropout(block.activation(block.norm2(y))))
    return y + x


def _bigru(block: BiGRUBlock, x: torch.Tensor) -> torch.Tensor:
    """:class:`BiGRUBlock` on one utterance: reversing within its length is reversing in time."""
    x = block.activation(block.norm(x))
    forward, _ = block.forward_gru(x)
    backward, _ = block.backward_gru(torch.flip(x, dims=[1]))
    return block.dropout(torch.cat([forward, torch.flip(backward, dims=[1])], dim=-1))


class DeepSpeech2Graph(nn.Module):
    """:class:`AcousticModel` (architecture ``deepspeech2``) on one utterance."""

    def __init__(self, model: AcousticModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.frontend(features.unsqueeze(1))  # (1, C, F', T')
        for block in m.residual_blocks:
            x = _residual(block, x)
        batch, channels, freq, time = x.shape
        x = m.projection(x.permute(0, 3, 1, 2).reshape(batch, time, channels * freq))
        for block in m.gru_blocks:
            x = _bigru(block, x)
        return m.classifier(x).log_softmax(dim=-1)


class ConformerGraph(nn.Module):
    """:class:`ConformerModel` (architecture ``conformer``) on one utterance.

    torchaudio's own ``ConformerLayer.forward`` without a padding mask is the model's masked
    layer when every frame is real: batch norm in evaluation is per frame, so normalising all
    frames equals normalising the real ones.
    """

    def __init__(self, model: ConformerModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        m = self.model
        sub = m.subsampling
        x = sub.activation(sub.conv2(sub.activation(sub.conv1(features.unsqueeze(1)))))
        batch, channels, freq, time = x.shape
        x = sub.projection(x.permute(0, 3, 1, 2).reshape(batch, time, channels * freq))
        y = m.input_dropout(x).transpose(0, 1)  # torchaudio's layers take (T, B, D)
        for layer in m.conformer.conformer_layers:
            y = layer(y, None)
        return m.classifier(m.output_dropout(y.transpose(0, 1))).log_softmax(dim=-1)


def inference_graph(model: nn.Module) -> nn.Module:
    """The one-utterance graph of a built acoustic model, in evaluation mode."""
    if isinstance(model, AcousticModel):
        return DeepSpeech2Graph(model).eval()
    if isinstance(model, ConformerModel):
        return ConformerGraph(model).eval()
    raise TypeError(f"no ONNX export for {type(model).__name__}")
