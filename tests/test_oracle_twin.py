"""The oracle's own judge (core/oracle_twin.py): a second float64
formulation that agrees with the oracle on every semantic clause, and that
turns the suite red when the oracle is wrong, where judging the oracle
against itself stayed green."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convlstm_conformance import harness, oracle, oracle_twin, tolerance
from convlstm_conformance.adapters.oracle import NumpyOracle
from convlstm_conformance.spec import load_cached
from convlstm_conformance.strategies import Chooser, draw_config, focus_for, make_case
from tests import plants

SPEC = load_cached()
ROOT = Path(__file__).resolve().parents[1]
SEMANTIC = [c.id for c in SPEC.of_kind("semantics")
            if not c.call.get("roundtrip") and not c.call.get("symbolic")]


def _cases(clause_id: str, n: int, seed: int):
    clause = SPEC.clause(clause_id)
    rng = np.random.default_rng(seed)
    for k in range(n):
        drawn = draw_config(Chooser(rng=rng), SPEC, focus=focus_for(SPEC, clause),
                            sizes=clause.sizes)
        yield make_case(SPEC, drawn, k, dtype="float64", **dict(clause.call))


@pytest.mark.parametrize("clause_id", SEMANTIC)
def test_twin_agrees_with_the_oracle(clause_id):
    judged = 0
    for case in _cases(clause_id, 8, seed=len(clause_id)):
        out = NumpyOracle().run(case)
        assert out.status == "ok", out.summary()
        verdict = tolerance.judge(case, out, expected=oracle_twin.forward_calls)
        assert verdict.passed, f"[{clause_id}] oracle and twin disagree on {case.config}:\n" \
                               f"{verdict.describe()}"
        judged += not verdict.unjudged
    assert judged >= 6, f"[{clause_id}] only {judged} of 8 cases judged"


def test_twin_activations_are_the_spec_s():
    assert set(oracle_twin.ACTIVATIONS) == set(SPEC.values("activation"))
    z = np.linspace(-8, 8, 4001)
    for name, fn in oracle_twin.ACTIVATIONS.items():
        np.testing.assert_allclose(fn(z), oracle.activation(name)(z), rtol=1e-12, atol=1e-14,
                                   err_msg=name)


@pytest.mark.parametrize("plant, clause_id", [("forget_gate", "SEM-STEP"),
                                              ("masking_inverted", "SEM-MASKING-LAYER")])
def test_a_wrong_oracle_passes_against_itself_but_not_against_the_twin(
        monkeypatch, plant, clause_id):
    monkeypatch.setattr(oracle, "forward", oracle.forward)   # restored after the test
    plants.plant(plant)
    adapter = NumpyOracle()
    self_judged = twin_judged = 0
    for case in _cases(clause_id, 8, seed=3):
        out = adapter.run(case)
        self_judged += tolerance.judge(case, out).passed
        twin_judged += harness.judge_for(adapter)(case, out).passed
    assert self_judged == 8, "the planted oracle agrees with itself: the blind spot"
    assert twin_judged < 8, f"the twin did not notice the planted {plant}"


@pytest.mark.parametrize("plant, clause_id", [("forget_gate", "SEM-STEP"),
                                              ("masking_inverted", "SEM-MASKING-LAYER")])
def test_the_suite_goes_red_on_a_wrong_oracle(tmp_path, plant, clause_id):
    env = dict(os.environ, CONVLSTM_PLANT=plant)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance/test_numerics.py", "-q",
         "-p", "no:cacheprovider", "-p", "tests.plants", "--profile", "ci",
         "--adapters", "oracle", "--results-dir", str(tmp_path), "-k", clause_id],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert (f"[{clause_id}] oracle: diverges from the oracle's twin (core/oracle_twin.py)"
            in proc.stdout), proc.stdout[-3000:]
    records = [json.loads(line) for p in tmp_path.glob("results-*.jsonl")
               for line in p.read_text().splitlines()]
    assert {r["judge"] for r in records} == {"oracle_twin"}
