"""Run a reader on hostile input under a time and a memory bound."""
from __future__ import annotations

import signal
import threading
import time
import tracemalloc
from typing import Any, Callable


class Overtime(Exception):
    """The reader ran past its time bound (raised inside it by SIGALRM)."""


def run_bounded(fn: Callable[[], Any], time_limit_s: int,
                memory_limit_bytes: int) -> Any:
    """``fn()``, interrupted past ``time_limit_s`` (on the main thread, where
    a signal can interrupt it; elsewhere the time is checked after), failing
    when its Python and NumPy allocations peaked past ``memory_limit_bytes``."""
    main = threading.current_thread() is threading.main_thread()
    if main:
        def overtime(signum, frame):
            raise Overtime(f"ran past {time_limit_s} s")
        old = signal.signal(signal.SIGALRM, overtime)
        signal.alarm(time_limit_s)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = fn()
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if main:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
    assert elapsed < time_limit_s, f"took {elapsed:.1f} s (bound {time_limit_s} s)"
    assert peak < memory_limit_bytes, \
        f"allocated {peak >> 20} MiB at its peak (bound {memory_limit_bytes >> 20} MiB)"
    return result
