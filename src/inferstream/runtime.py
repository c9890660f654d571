"""The Python runtime of long-running processes: garbage collection set for streams of records, malloc arenas."""

from __future__ import annotations

import ctypes
import gc
import os
import sys

#: glibc malloc arenas a process (and the processes it starts) may use, unless MALLOC_ARENA_MAX says.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h

#: Allocations between two collections of the youngest generation (Python's default: 700).
GEN0_THRESHOLD = 50_000


def settle() -> None:
    """Call once a long-running process has loaded what it keeps (modules, models, app), before its loop.

    Collects once, then moves every object alive now out of the collector's reach
    (``gc.freeze``) and lets the youngest generation grow to ``GEN0_THRESHOLD``
    objects between collections. A process decoding tens of thousands of records a
    second otherwise spends much of its time in collections that walk the whole heap
    of modules and models: measured on the gateway's prediction stream, half its CPU
    (20 µs a record before, 10 µs after). Reference cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at :data:`MALLOC_ARENAS`, here and in every process started from here.

    glibc gives each thread that allocates its own arena, up to eight per core, and
    memory freed in one is not reused by another. A worker, a sink or the demo runs
    librdkafka's, ONNX Runtime's and the pipeline's threads: with two arenas the
    demo's own process peaks at 719 MB instead of 805 (``benchmarks/footprint.py``), at
    no measured cost in throughput (Python's small objects do not use malloc's arenas).
    A ``MALLOC_ARENA_MAX`` already set is left as it is. Call it first thing, before
    threads start; elsewhere than glibc it does nothing.
    """
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    os.environ["MALLOC_ARENA_MAX"] = str(MALLOC_ARENAS)  # read by the processes started from here
    try:
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library this interpreter runs on
    except OSError:
        return
    if mallopt is not None:  # glibc's; another C library may have none
        mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
