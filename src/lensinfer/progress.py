"""Progress where people wait: the time left of a training run, progress bars over many lenses.

Everything goes to stderr, which the workflow's script adapters send into the rule's log file
(:func:`lensinfer.workflow.logged`), so ``tail -f logs/<rule>/….log`` shows how far a long job is.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

__all__ = ["format_duration", "time_left", "progress"]

#: seconds between two progress-bar updates (a log file gets one line per update)
MIN_INTERVAL = 5.0


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 04 min`` (rounded down to the unit shown)."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def time_left(elapsed: float, done: int, total: int) -> float:
    """Seconds left for ``total − done`` more units at the mean rate of the ``done`` ones (0 when nothing is done)."""
    if done <= 0:
        return 0.0
    return elapsed / done * max(0, total - done)


def progress(total: int, desc: str, unit: str = "lens") -> tqdm:
    """A progress bar on stderr over ``total`` units (update it with ``bar.update(n)``); usable as a context manager.

    ``ascii`` characters and one update per :data:`MIN_INTERVAL` keep a log file readable.
    """
    return tqdm(total=int(total), desc=desc, unit=unit, file=sys.stderr, mininterval=MIN_INTERVAL, ascii=True,
                dynamic_ncols=False, ncols=100)
