"""CTC decoding: greedy, and beam search with an optional n-gram language model (flashlight-text).

Both honour each utterance's output length, so padding frames are never decoded.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Sequence, Set
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from asr_pipeline.decoding.language_model import arpa_vocabulary
from asr_pipeline.units.characters import BLANK, BLANK_INDEX, VOCABULARY

# flashlight marks word boundaries with a silence token; ours is the space.
_WORD_SEPARATOR = "|"


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    """Best path of ``(B, T, C)`` log-probabilities: argmax, merge repeats, drop blanks."""
    best = log_probs.argmax(dim=-1)
    texts = []
    for path, length in zip(best, lengths.tolist(), strict=True):
        collapsed = torch.unique_consecutive(path[:length])
        texts.append("".join(VOCABULARY[i] for i in collapsed.tolist() if i != BLANK_INDEX))
    return [" ".join(text.split()) for text in texts]


# The tuning grid under ``beam_search.tune`` (null: no tuning), read by the training pipeline.
TUNE_SETTINGS = frozenset({"split", "lm_weight", "word_score", "batch_seconds"})


@dataclass(frozen=True)
class BeamSearchConfig:
    """The beam search: ``beam_search`` in ``conf/base/parameters_beam_search.yml``.

    No defaults: that YAML is their one source (a bundle stores every field).
    """

    beam_size: int
    lm_weight: float
    word_score: float
    lm_order: int
    # Common words of general text (``word_frequencies``) that the LM knows beside the transcripts'.
    background_words: int
    lexicon: bool

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> BeamSearchConfig:
        """The ``beam_search`` parameters, without the tuning grid (``tune``), which is checked.

        Unknown keys are refused, here and in ``tune``, so that a misspelt setting fails the run
        instead of being ignored.
        """
        names = {f.name for f in fields(cls)}
        _check_settings("beam_search", params, known=names | {"tune"}, required=names)
        if params.get("tune"):  # null or empty: no tuning
            _check_settings("beam_search.tune", params["tune"], TUNE_SETTINGS, TUNE_SETTINGS)
        return cls(**{k: v for k, v in params.items() if k != "tune"})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_settings(
    section: str, params: dict[str, Any], known: Set[str], required: Set[str]
) -> None:
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown {section} setting(s) {sorted(unknown)}; known: {sorted(known)}")
    missing = required - set(params)
    if missing:
        raise ValueError(f"missing {section} setting(s) {sorted(missing)}")


def write_lexicon(words: Sequence[str], path: Path) -> Path:
    """A flashlight lexicon: each word spelled in characters and ended by the word separator."""
    lines = [f"{w} {' '.join(w)} {_WORD_SEPARATOR}" for w in sorted(set(words)) if w]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class BeamSearchDecoder:
    """torchaudio's flashlight CTC beam search, with or without a lexicon, with a KenLM model."""

    def __init__(
        self,
        config: BeamSearchConfig,
        lm_path: str | Path | None = None,
        lexicon_path: str | Path | None = None,
    ) -> None:
        from torchaudio.models.decoder import ctc_decoder  # needs flashlight-text

        tokens = [_WORD_SEPARATOR if ch == " " else ch for ch in VOCABULARY]
        self._decoder = ctc_decoder(
            lexicon=str(lexicon_path) if lexicon_path else None,
            tokens=tokens,
            lm=str(lm_path) if lm_path else None,
            nbest=1,
            beam_size=config.beam_size,
            lm_weight=config.lm_weight if lm_path else 0.0,
            word_score=config.word_score,
            blank_token=BLANK,
            sil_token=_WORD_SEPARATOR,
        )
        # flashlight's decoder keeps its search state in itself: one decoding at a time (a
        # served model may be asked from several threads)
        self._lock = threading.Lock()

    @classmethod
    def from_arpa(cls, config: BeamSearchConfig, lm_arpa: str) -> BeamSearchDecoder:
        """A decoder over an ARPA LM given as text (with ``config.lexicon``, the LM's words).

        flashlight reads both files while it is built, so they live only that long.
        """
        with tempfile.TemporaryDirectory(prefix="asr-lm-") as folder:
            lm_path = Path(folder) / "lm.arpa"
            lm_path.write_text(lm_arpa, encoding="utf-8")
            lexicon_path = None
            if config.lexicon:
                lexicon_path = write_lexicon(arpa_vocabulary(lm_arpa), Path(folder) / "lexicon.txt")
            return cls(config, lm_path, lexicon_path)

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        with self._lock:
            hypotheses = self._decoder(log_probs.float().contiguous().cpu(), lengths.int().cpu())
        texts = []
        for nbest in hypotheses:
            if not nbest:
                texts.append("")
                continue
            tokens = self._decoder.idxs_to_tokens(nbest[0].tokens)
            text = "".join(" " if t == _WORD_SEPARATOR else t for t in tokens if t != BLANK)
            texts.append(" ".join(text.split()))
        return texts
