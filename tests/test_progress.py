"""Progress bars written to a file redraw rarely, and still end with the final count."""

from __future__ import annotations

import io
import time

from tqdm import tqdm

from asr_pipeline.common.progress import progress_bar


def _redraws(bar_factory) -> str:
    stream = io.StringIO()
    with bar_factory(total=50, file=stream, desc="work") as bar:
        for _ in range(50):
            time.sleep(0.02)  # 1 s in all: tqdm's own bar redraws every 0.1 s
            bar.set_postfix(loss=0.5, refresh=False)  # as the trainer does
            bar.update(1)
    return stream.getvalue()


def test_a_bar_written_to_a_file_redraws_rarely_and_ends_complete() -> None:
    logged = _redraws(progress_bar)
    plain = _redraws(tqdm)
    assert logged.count("\r") <= 3  # the empty bar, the final one, and the close
    assert plain.count("\r") >= 8  # what the project's bars avoid
    assert "50/50" in logged


def test_a_notebook_stream_keeps_tqdms_pace() -> None:
    class OutStream(io.StringIO):  # what a Jupyter kernel puts in place of stderr
        pass

    OutStream.__module__ = "ipykernel.iostream"
    stream = OutStream()
    with progress_bar(total=1, file=stream) as bar, tqdm(total=1, file=io.StringIO()) as plain:
        assert bar.mininterval == plain.mininterval
