"""A pytest plugin for benchmarks/coverage.py: keep every case the suite's
numeric tests judge.

``pytest conformance ... -p benchmarks.case_probe`` with ``CONVLSTM_CASES_OUT``
naming a directory: each case made inside ``harness.Context.judge_cases``
(numerics and gradients, one per example and data draw) is saved there as
``<clause>-<n>.npz`` before it runs, exactly as the suite drew it.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

from convlstm_conformance import harness

_judge_cases = harness.Context.judge_cases
_count = itertools.count()


def _recording(self, drawn, data, make, judge, diverges, nondeterministic):
    out = Path(os.environ["CONVLSTM_CASES_OUT"])
    out.mkdir(parents=True, exist_ok=True)

    def make_and_keep(seed, scale):
        case = make(seed, scale)
        case.save(out / f"{self.clause.id}-{next(_count)}.npz")
        return case
    return _judge_cases(self, drawn, data, make_and_keep, judge, diverges, nondeterministic)


harness.Context.judge_cases = _recording
