"""The terminal reads like the report: one block per failure (clause, adapter,
minimal configuration, error against budget, reproduction), golden cases
included, the traceback only with pytest's own --tb; and a budget of zero or
an expected exact zero is said as such, never as an astronomical ratio."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convlstm_conformance import terminal
from convlstm_conformance.tolerance import Verdict, compare_tensor

ROOT = Path(__file__).resolve().parent.parent
HEADER = re.compile(r"^_{3,} (test_\S+) _{3,}$")
#: Lines a failure block may take: the problem, one per tensor (output, h,
#: c), clause, config, input dims, implementation, reproduce.
MAX_BLOCK_LINES = 10


def blocks(stdout: str) -> dict[str, list[str]]:
    """The FAILURES section's blocks, by test name."""
    out: dict[str, list[str]] = {}
    current = None
    for line in stdout.splitlines():
        m = HEADER.match(line)
        if m:
            current = out.setdefault(m.group(1), [])
        elif line.startswith("=" * 10):
            current = None
        elif current is not None:
            current.append(line)
    return out


def run_wrong(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "conformance/test_numerics.py",
         "conformance/test_golden.py", "-q", "-p", "no:cacheprovider", "--profile", "ci",
         "--adapters", "", "--adapter-object", "tests.mutants:forget_bias_mutant",
         "-k", "SEM-STEP or return-state", "--no-report", "--results-dir", str(tmp_path), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_each_failure_is_one_block_without_traceback(tmp_path):
    run = run_wrong(tmp_path)
    assert run.returncode == 1, run.stdout[-3000:]
    found = blocks(run.stdout)
    assert any("SEM-STEP" in name for name in found), run.stdout[-3000:]
    assert any("test_golden" in name for name in found), run.stdout[-3000:]
    for name, lines in found.items():
        text = "\n".join(lines)
        assert len(lines) <= MAX_BLOCK_LINES, f"{name}: {len(lines)} lines\n{text}"
        assert lines[0].startswith("[") and "mutant-forget_bias_plus_0.01:" in lines[0], text
        for needed in ("  clause: ", "  config: {", "budget", "  reproduce: python -m "
                       "convlstm_conformance repro "):
            assert needed in text, f"{name}: no {needed!r}\n{text}"
        for traceback in ("Traceback", "core/harness.py:", "Falsifying", "def ", "^^^^"):
            assert traceback not in text, f"{name}: traceback shown\n{text}"


def test_a_traceback_is_shown_when_asked_for(tmp_path):
    run = run_wrong(tmp_path, "--tb=short", "-k", "SEM-STEP")
    assert run.returncode == 1, run.stdout[-3000:]
    assert "core/harness.py:" in run.stdout and "reproduce: " in run.stdout


def test_zero_budget_reads_as_an_exact_expectation():
    got, want = np.array([3e-5, 1.0]), np.array([0.0, 1.0])
    for budget in (np.array([0.0, 1e-6]), np.array([3e-44, 1e-6])):
        line = Verdict(False, errors={"h": compare_tensor("h", got, want, budget)}).describe()
        assert line.startswith("h: expected exactly 0, got 3e-05 at (0,)"), line
        assert "error/budget" not in line and "e+" not in line, line
    # A nonzero value allowed no error at all says both values in full.
    exact = compare_tensor("c", np.array([0.25]), np.array([0.25000001]), np.array([0.0]))
    assert exact.describe() == "c: expected exactly 0.25000001, got 0.25 at (0,) [FAIL]"
    # An ordinary budget keeps its ratio.
    plain = compare_tensor("c", np.array([0.3]), np.array([0.25]), np.array([1e-3]))
    assert plain.describe() == ("c: max |error| 0.05, budget 0.001 at (0,), error/budget 50 "
                                "[FAIL]")


def test_messages_of_assertions_only():
    try:
        assert 1 == 2, "[SEM-STEP] x: diverges"
    except AssertionError as exc:
        assert terminal._message(exc) == "[SEM-STEP] x: diverges"
    group = ExceptionGroup("two", [AssertionError("first"), AssertionError("second")])
    assert terminal._message(group) == "2 distinct failures:\n\nfirst\n\nsecond"
    assert terminal._message(pytest.fail.Exception("nothing judged")) == "nothing judged"
    # A bug is not a finding: its traceback stays.
    assert terminal._message(TypeError("bad")) is None
    assert terminal._message(ExceptionGroup("mixed", [AssertionError("a"), KeyError("b")])) \
        is None
