"""Adapters that fail on purpose, to show the harness survives each failure.

Each wraps the oracle and misbehaves when the case's config carries the
trigger ``"fault": True``... except the ones that misbehave always.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from convlstm_conformance.features import Capabilities
from convlstm_conformance.model import Adapter, Case, Outcome
from convlstm_conformance.adapters.oracle import NumpyOracle


class _Faulty(Adapter):
    name = "faulty"

    def __init__(self):
        self.oracle = NumpyOracle()

    def capabilities(self) -> Capabilities:
        return self.oracle.capabilities()

    def run(self, case: Case) -> Outcome:
        if case.config.get("fault"):
            self.fault()
        return self.oracle.run(case)

    def fault(self) -> None:
        raise NotImplementedError


class Crashes(_Faulty):
    """Dies the way a segfaulting extension does."""
    name = "faulty-crash"

    def fault(self):
        sys.stderr.write("about to crash: simulated fault in native code\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSEGV)


class Hangs(_Faulty):
    name = "faulty-hang"

    def fault(self):
        sys.stderr.write("entering an endless loop\n")
        sys.stderr.flush()
        while True:
            time.sleep(1)


class EatsMemory(_Faulty):
    name = "faulty-oom"

    def fault(self):
        hog = []
        while True:
            hog.append(bytearray(64 * 1024 * 1024))
            for i in range(0, len(hog[-1]), 4096):   # touch the pages: resident, not virtual
                hog[-1][i] = 1


class Prints(_Faulty):
    """Writes junk on stdout from Python and from C; the protocol must survive."""
    name = "faulty-prints"

    def fault(self):
        print("noise on stdout")
        os.write(1, b"raw noise on fd 1\n")


class FailsToStart(Adapter):
    name = "faulty-start"

    def __init__(self):
        raise RuntimeError("cannot initialise: simulated missing library")

    def capabilities(self):  # pragma: no cover - never constructed
        return Capabilities()

    def run(self, case):  # pragma: no cover
        raise AssertionError
