"""Progress bars that stay readable in log files.

In a terminal a bar redraws in place ten times a second. Written to a file (a scheduler's log,
``nohup``, CI) every redraw is kept, so an epoch leaves thousands of copies; there the bar redraws
once every ``LOG_INTERVAL_S`` seconds instead (``set_postfix`` must pass ``refresh=False`` not
to force a redraw). Notebooks and terminals keep tqdm's own pace.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """``tqdm.auto.tqdm(*args, **kwargs)``, redrawn every ``LOG_INTERVAL_S`` s into a file."""
    stream = kwargs.get("file") or sys.stderr
    # a notebook's output stream redraws in place, though it is not a terminal
    in_notebook = type(stream).__module__.startswith("ipykernel")
    if not in_notebook and not getattr(stream, "isatty", lambda: False)():
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", LOG_INTERVAL_S)
    return tqdm(*args, **kwargs)
