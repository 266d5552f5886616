"""Implementations wrong in ways only one check of the suite can see, to prove
that check (tests/test_harness_rules.py): each would pass a suite without it."""
from __future__ import annotations

import dataclasses

import numpy as np

from convlstm_conformance.adapters.ref_torch import TorchReferenceAdapter
from convlstm_conformance.features import Capabilities
from convlstm_conformance.model import OK, Adapter, Case, Outcome


class NoDropWhenSeeded(TorchReferenceAdapter):
    """Dropout as it should be, except that a layer given a seed drops nothing
    (two seeded layers then agree: on dropping nothing)."""

    def __init__(self):
        super().__init__("cpu")
        self.name = "no-drop-when-seeded"

    def run(self, case: Case) -> Outcome:
        if case.config.get("seed") is not None:
            config = dict(case.config, dropout=0.0, recurrent_dropout=0.0)
            case = dataclasses.replace(case, config=config)
        return super().run(case)


class ZerosWithDefaultClaims(Adapter):
    """Claims only the defaults of the feature table (no activation at all)
    and returns zeros of the right shapes for anything."""

    name = "zeros-default-claims"

    def capabilities(self) -> Capabilities:
        return Capabilities()

    def run(self, case: Case) -> Outcome:
        x = np.asarray(case.inputs)
        out = np.zeros(x.shape[:1] + (1, 1, int(case.config.get("filters", 1))))
        return Outcome(status=OK, outputs=[out], structure="tensor", dtypes=["float32"])


class KillsItsProcess(ZerosWithDefaultClaims):
    """Dies with SIGKILL inside run(), as an in-process native crash or the
    kernel's out-of-memory killer would end a pytest worker."""

    name = "kills-its-process"

    def capabilities(self) -> Capabilities:
        return Capabilities(activation=frozenset({"tanh"}),
                            recurrent_activation=frozenset({"sigmoid"}))

    def run(self, case: Case) -> Outcome:
        import os
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


class InterruptsTheRun(KillsItsProcess):
    """Raises KeyboardInterrupt, as Ctrl-C during a case does."""

    name = "interrupts-the-run"

    def run(self, case: Case) -> Outcome:
        raise KeyboardInterrupt
