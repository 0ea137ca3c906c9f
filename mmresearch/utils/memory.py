"""Peak host memory of a section of code (Linux), for benchmarks: reset the peak RSS, run, read it.

    base = start_peak_rss()
    ...                                  # the measured code
    increase_mb = peak_rss_mb() - base

Where ``/proc/self/clear_refs`` cannot be written, the increase of the process's high-water mark
is returned instead (a lower bound).
"""

from __future__ import annotations

import ctypes
import resource


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``...) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def start_peak_rss(trim: bool = True) -> float:
    """Reset the peak RSS (``VmHWM``) to the current RSS; returns that RSS in MiB.

    Args:
        trim: first hand memory glibc keeps after earlier frees back to the OS (``malloc_trim``),
            so that it cannot be reused unseen by the measured code.
    """
    if trim:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        return status_mb("VmRSS")
    except OSError:
        return _maxrss_mb()


def peak_rss_mb() -> float:
    """The peak RSS (``VmHWM``) in MiB since the last :func:`start_peak_rss`."""
    try:
        return status_mb("VmHWM")
    except (OSError, KeyError):
        return _maxrss_mb()
