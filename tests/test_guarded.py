"""An in-process adapter that returns garbage (None, text arrays, a wrong
type, sys.exit) gets a verdict like any other failure: an adapter error
recorded for that case, its case saved with a reproduce line, and the run
goes on.  (Registry.Guarded; the same check as result files get.)"""
from __future__ import annotations

import re

import numpy as np
import pytest

from convlstm_conformance import harness, tolerance
from convlstm_conformance.model import ADAPTER_ERROR, OK, Outcome, outcome_problem
from convlstm_conformance.registry import Guarded
from convlstm_conformance.spec import load_cached
from convlstm_conformance.strategies import Drawn, make_case
from tests import faulty_adapters

NEEDLES = {
    "ReturnsNone": r"returned NoneType None instead of an Outcome",
    "ReturnsStringArrays": r"returned output 0 of dtype <U3; outputs are real numbers",
    "ReturnsNoneOutputs": r"returned output 0 as NoneType None, not a NumPy array",
    "ReturnsComplex": r"returned output 0 of dtype complex",
    "ReturnsObjectArrays": r"returned output 0 of dtype object",
    "ReturnsUnknownStatus": r"returned the unknown status str 'great'",
    "ReturnsOutputsAsTuple": r"returned outputs as tuple .*, not a list",
    "ReturnsRaisedWithoutError": r"returned status 'raised' without saying what was raised",
    "ReturnsNoneGradients": r"returned gradient 'kernel' as NoneType None",
    "ReturnsADict": r"returned dict .* instead of an Outcome",
    "CallsSysExit": r"run raised instead of returning an outcome:.*SystemExit",
    "RaisesRecursion": r"run raised instead of returning an outcome:.*RecursionError",
}


def _drawn() -> Drawn:
    return Drawn({"filters": 2, "kernel_size": [3, 3], "padding": "same", "return_state": True},
                 {"batch": 1, "timesteps": 2, "rows": 4, "cols": 4, "channels": 2}, 5)


@pytest.fixture(scope="module")
def spec():
    return load_cached()


def test_every_garbage_adapter_has_its_expected_message():
    assert {cls.__name__ for cls in faulty_adapters.GARBAGE} == set(NEEDLES)


@pytest.mark.parametrize("cls", faulty_adapters.GARBAGE, ids=lambda c: c.__name__)
def test_garbage_becomes_an_adapter_error_naming_what_is_wrong(spec, cls):
    case = make_case(spec, _drawn(), 0, dtype="float64")
    outcome = Guarded(cls()).run(case)
    assert isinstance(outcome, Outcome) and outcome.status == ADAPTER_ERROR, outcome
    assert re.search(NEEDLES[cls.__name__], outcome.detail, re.S), outcome.detail[-800:]
    verdict = tolerance.judge(case, outcome)
    assert not verdict.passed and "implementation did not return" in verdict.describe()


@pytest.mark.parametrize("cls", faulty_adapters.GARBAGE[:3], ids=lambda c: c.__name__)
def test_the_harness_fails_the_case_with_a_saved_case_and_a_repro_line(spec, cls, tmp_path):
    adapter = Guarded(cls())
    clause = spec.clause("SEM-STEP")
    record: dict = {}
    ctx = harness.Context(spec, adapter, clause, record, tmp_path,
                          key=f"object:tests.faulty_adapters:{cls.__name__}")
    drawn = _drawn()
    with pytest.raises(AssertionError) as info:
        ctx.judge_cases(drawn, [(0, 0.5)],
                        lambda seed, scale: make_case(spec, drawn, seed, dtype="float64"),
                        tolerance.judge, "diverges from the oracle", "nondeterministic")
    message = str(info.value)
    assert "implementation: adapter-error:" in message and "reproduce: python -m" in message
    assert list((tmp_path / "cases").glob("*.npz")), "no case file was saved"
    assert record["repro"].startswith("python -m convlstm_conformance repro ")


def test_a_good_outcome_passes_the_check(spec):
    outcome = faulty_adapters.NumpyOracle().run(make_case(spec, _drawn(), 0, dtype="float64"))
    assert outcome.status == OK and outcome_problem(outcome) == ""
    assert outcome_problem(Outcome(status="ok", outputs=[np.zeros(2, np.float32)])) == ""
