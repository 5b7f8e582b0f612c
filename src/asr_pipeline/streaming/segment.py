"""One segment of a stream: the frames since the last endpoint, its partial and final texts.

A segment ends at an *endpoint*: ``endpoint_silence_s`` of frames whose best token is the CTC
blank after something was said (the rule sherpa/icefall call "trailing silence"; blank frames
are what a CTC model emits in silence, so no separate voice-activity detector is needed), when
it reaches ``max_segment_s`` (which bounds the beam search's memory), or at the end of the
stream. Its partial text is the greedy best path so far (cheap: one argmax per frame); its final
text is the beam search's when the model carries one (fed as frames come, so ending it costs
only ``decode_end``), else the greedy text.
"""

from __future__ import annotations

import torch

from asr_pipeline.streaming.search import IncrementalSearch, StreamingBeamSearch
from asr_pipeline.units.base import Units


class Segment:
    """Frames ``start_frame ...`` of a stream, decoded greedily and (optionally) by a beam."""

    def __init__(self, units: Units, beam: StreamingBeamSearch | None, start_frame: int) -> None:
        self.units = units
        self.beam = beam
        self.search: IncrementalSearch | None = beam.new_search() if beam else None
        if self.search is not None:
            self.search.begin()
        self.start_frame = start_frame
        self.frames = 0
        self.path: list[int] = []  # best token per frame (collapsed lazily)
        self.last_token_frame = -1  # index (within the segment) of the last non-blank frame

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.frames

    @property
    def has_speech(self) -> bool:
        return self.last_token_frame >= 0

    def trailing_blanks(self) -> int:
        """Frames of blank since the last token (or since the start when nothing was said)."""
        return self.frames - 1 - self.last_token_frame

    def add(self, log_probs: torch.Tensor) -> None:
        """Feed ``(t, C)`` frames to the greedy path and the beam search."""
        if not len(log_probs):
            return
        best = log_probs.argmax(dim=-1).tolist()
        for offset, token in enumerate(best):
            if token != 0:  # tokens[0] is the CTC blank
                self.last_token_frame = self.frames + offset
        self.path.extend(best)
        self.frames += len(best)
        if self.search is not None:
            self.search.step(log_probs)

    def greedy_text(self) -> str:
        collapsed = torch.unique_consecutive(torch.tensor(self.path, dtype=torch.long))
        return self.units.greedy_text(collapsed.tolist()) if self.path else ""

    def final_text(self) -> str:
        """The segment's final text (ends its beam search)."""
        if self.search is None or self.beam is None:
            return self.greedy_text()
        self.search.step(self.beam.closing_frame())
        text = self.beam.text(self.search.end())
        self.search = None
        return text

    def abandon(self) -> None:
        """End the beam search without a result (a segment of silence only)."""
        if self.search is not None:
            self.search.end()
            self.search = None
