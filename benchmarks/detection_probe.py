"""A pytest plugin for benchmarks/detection_speed.py: how many Hypothesis
examples, and how many seconds, until a test of the suite first fails.

``pytest conformance ... -p benchmarks.detection_probe`` with
``CONVLSTM_PROBE_OUT`` naming a file: every test built on
``harness.Context`` counts its examples (``Context.steer`` runs once per
example, judged or not) and, at its first failure, appends one JSON line
{adapter, clause, test, examples, examples_in_test, seconds}.  A clause with
``each`` (SEM-ACTIVATIONS) runs one search per value (harness.searches), so
``examples`` counts those of the failing example's own search (its value of
that argument) and ``examples_in_test`` all of the test's so far.  It also drops the shrink and
reuse phases and the example database from the loaded profile: the first
failure is what is measured, and a failure found under one seed must not
be replayed under the next.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from convlstm_conformance import harness

_post_init = harness.Context.__post_init__
_steer, _fail = harness.Context.steer, harness.Context.fail


def _init(self):
    _post_init(self)
    self._probe = {"start": time.perf_counter(), "examples": 0, "reported": False,
                   "per_search": {}}


def _search(self, drawn):
    each = self.clause.each
    return repr(drawn.config.get(each)) if each else None


def _count(self, drawn, dtype=None):
    self._probe["examples"] += 1
    per, key = self._probe["per_search"], _search(self, drawn)
    per[key] = per.get(key, 0) + 1
    return _steer(self, drawn, dtype)


def _first_failure(self, drawn, case, problem, errors, outcome):
    probe = self._probe
    if not probe["reported"]:
        probe["reported"] = True
        line = {"adapter": self.adapter.name, "clause": self.clause.id, "test": self.test,
                "examples": probe["per_search"].get(_search(self, drawn), probe["examples"]),
                "examples_in_test": probe["examples"],
                "seconds": round(time.perf_counter() - probe["start"], 4)}
        with open(os.environ["CONVLSTM_PROBE_OUT"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
    return _fail(self, drawn, case, problem, errors, outcome)


harness.Context.__post_init__ = _init
harness.Context.steer = _count
harness.Context.fail = _first_failure


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    from hypothesis import Phase, settings
    current = settings.get_profile(settings.get_current_profile_name())
    settings.register_profile("detection-probe", settings(
        current, database=None, phases=[Phase.explicit, Phase.generate, Phase.target]))
    settings.load_profile("detection-probe")
