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


# -- adapters that return garbage instead of an Outcome ------------------------

import numpy as np  # noqa: E402


class _Garbage(_Faulty):
    """Runs the oracle, then spoils what it returns (always, not on a trigger)."""

    def run(self, case: Case):
        return self.spoil(self.oracle.run(case))

    def spoil(self, outcome: Outcome):
        raise NotImplementedError


class ReturnsNone(_Garbage):
    name = "garbage-none"

    def spoil(self, outcome):
        return None


class ReturnsStringArrays(_Garbage):
    name = "garbage-strings"

    def spoil(self, outcome):
        outcome.outputs = [np.array(["0.5"] * a.size).reshape(a.shape) for a in outcome.outputs]
        return outcome


class ReturnsNoneOutputs(_Garbage):
    name = "garbage-none-outputs"

    def spoil(self, outcome):
        outcome.outputs = [None] * len(outcome.outputs)
        return outcome


class ReturnsComplex(_Garbage):
    name = "garbage-complex"

    def spoil(self, outcome):
        outcome.outputs = [a + 1j for a in outcome.outputs]
        return outcome


class ReturnsObjectArrays(_Garbage):
    name = "garbage-objects"

    def spoil(self, outcome):
        outcome.outputs = [np.array([{"x": 1}], dtype=object)]
        return outcome


class ReturnsUnknownStatus(_Garbage):
    name = "garbage-status"

    def spoil(self, outcome):
        outcome.status = "great"
        return outcome


class ReturnsOutputsAsTuple(_Garbage):
    name = "garbage-tuple"

    def spoil(self, outcome):
        outcome.outputs = tuple(outcome.outputs)
        return outcome


class ReturnsRaisedWithoutError(_Garbage):
    name = "garbage-raised"

    def spoil(self, outcome):
        return Outcome(status="raised")


class ReturnsNoneGradients(_Garbage):
    name = "garbage-grads"

    def spoil(self, outcome):
        outcome.grads = {"kernel": None}
        return outcome


class ReturnsADict(_Garbage):
    name = "garbage-dict"

    def spoil(self, outcome):
        return {"status": "ok", "outputs": outcome.outputs}


class CallsSysExit(_Garbage):
    name = "garbage-exit"

    def spoil(self, outcome):
        sys.exit(0)


class RaisesRecursion(_Garbage):
    name = "garbage-recursion"

    def spoil(self, outcome):
        return self.spoil(outcome)


GARBAGE = (ReturnsNone, ReturnsStringArrays, ReturnsNoneOutputs, ReturnsComplex,
           ReturnsObjectArrays, ReturnsUnknownStatus, ReturnsOutputsAsTuple,
           ReturnsRaisedWithoutError, ReturnsNoneGradients, ReturnsADict, CallsSysExit,
           RaisesRecursion)
