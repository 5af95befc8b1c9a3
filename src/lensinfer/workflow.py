"""Helpers for the thin Snakemake script adapters (``workflow/scripts``): logging into the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Iterator

__all__ = ["logged", "peak_rss_mb", "fix_mmap_threshold"]

#: glibc mallopt parameter number of M_MMAP_THRESHOLD
_M_MMAP_THRESHOLD = -3


def fix_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """Fix glibc's mmap threshold (``mallopt(M_MMAP_THRESHOLD)``): allocations of ``nbytes`` or more (numpy blocks,
    decoded chunks) get their own mapping, returned to the system when freed.

    By default glibc raises the threshold each time such a block is freed, after which large blocks come from the
    heap, where the freed ones fragment it: a job's peak then grows with the number of blocks it has processed
    (+20 MB over 20 000 small images in ``merge`` and ``mask``, bench/memory.py) although it holds one block at a
    time. Returns False where there is no glibc (nothing changes).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(nbytes)))
    except (OSError, AttributeError):
        return False


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB: ``VmHWM`` of /proc/self/status on Linux.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the high-water mark from before ``exec`` into it, so a
    script started by Snakemake (fork + exec of a ~200 MB parent) would report at least its parent's RSS.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB elsewhere on Unix


@contextlib.contextmanager
def logged(log_path: str | Path | None) -> Iterator[logging.Logger]:
    """Send stdout, stderr (progress bars, warnings) and ``logging`` of the block to ``log_path``.

    Exceptions are logged with their traceback and re-raised, so the rule fails and its log says why. The last line
    gives the block's wall time and the process's peak resident memory (what a ``benchmark:`` file would record;
    rules with thousands of jobs, such as ``simulate_shard``, rely on it to keep the DAG cheap).
    """
    fix_mmap_threshold()  # memory that does not grow with the number of blocks processed
    if log_path is None:
        yield logging.getLogger("lensinfer")
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logger = logging.getLogger("lensinfer")
        start = time.perf_counter()
        with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            try:
                yield logger
            except BaseException:
                logger.exception("failed")
                raise
            finally:
                peak_mb = peak_rss_mb()
                logger.info("wall time %.2f s, peak RSS %.0f MB", time.perf_counter() - start, peak_mb)
                root.removeHandler(handler)
                sys.stderr.flush()
