"""The conformance suite run as its users run it, in a subprocess.

Framework CI runs ``pytest conformance/``: it must pass on correct
implementations, fail on a wrong one with a message naming the clause, the
measured error against its budget and a command that reproduces it, and leave
JSON records plus an HTML report.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from convlstm_conformance import records, registry
from convlstm_conformance.spec import load_cached

ROOT = Path(__file__).resolve().parent.parent


def _pytest(results: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider",
           "--profile", "ci", "--results-dir", str(results), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _records(results: Path) -> list[dict]:
    out = []
    for path in results.glob("results-*.jsonl"):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def test_suite_passes_on_the_oracle_and_writes_records_and_report(tmp_path):
    proc = _pytest(tmp_path, "--adapters", "oracle")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    records = _records(tmp_path)
    spec = load_cached()
    tested = {r["clause"] for r in records if r["outcome"] == "passed"}
    # Every clause the oracle can be judged on (it computes in float64 only).
    numeric = {c.id for c in spec.of_kind("semantics", "structure", "shape", "layout")
               if not c.dtypes or "float64" in c.dtypes}
    assert numeric <= tested, f"clauses never passed on the oracle: {sorted(numeric - tested)}"
    # The judge is never judged against itself: its numbers meet the twin.
    numerics = [r for r in records if r.get("test") == "numerics"]
    assert numerics and {r["judge"] for r in numerics} == {"oracle_twin"}
    assert (tmp_path / "report.html").stat().st_size > 1000
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["finished"] and run["profile"] == "ci"


@pytest.mark.skipif(not registry.known("keras3-tensorflow").available()[0],
                    reason="Keras 3 / TensorFlow not installed")
def test_suite_passes_on_keras3_tensorflow(tmp_path):
    proc = _pytest(tmp_path, "--adapters", "keras3-tensorflow", "-n", "2")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    outcomes = {r["outcome"] for r in _records(tmp_path)}
    assert "failed" not in outcomes and "passed" in outcomes


def test_a_wrong_implementation_fails_with_clause_budget_and_reproduction(tmp_path):
    proc = _pytest(tmp_path, "conformance/test_numerics.py", "-k", "SEM-STEP", "--adapters", "",
                   "--adapter-object", "tests.mutants:forget_bias_mutant")
    out = proc.stdout
    assert proc.returncode == 1, out[-4000:]
    assert "[SEM-STEP] mutant-forget_bias_plus_0.01: diverges from the oracle" in out, out[-4000:]
    assert "error/budget" in out and "reproduce: python -m convlstm_conformance repro" in out
    failed = [r for r in _records(tmp_path) if r["outcome"] == "failed"]
    assert failed and failed[0]["worst_ratio"] > 1 and failed[0]["config"]
    repro = failed[0]["repro"].split()
    again = subprocess.run([sys.executable] + repro[1:], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 1 and "FAIL" in again.stdout, again.stdout + again.stderr


def test_the_correct_float32_implementation_passes_the_suite(tmp_path):
    proc = _pytest(tmp_path, "--adapters", "", "--adapter-object", "tests.mutants:correct")
    assert proc.returncode == 0, proc.stdout[-4000:]
    # One implementation, one name: every test (golden, capabilities and
    # dropout ones included) records it by its own name, not its command-line
    # spelling, and run.json says how it was selected.
    written = _records(tmp_path)
    assert {r["adapter"] for r in written} == {"float32-numpy"}, {r["adapter"] for r in written}
    assert {r["test"] for r in written} >= {"golden", "capabilities", "numerics", "structure"}
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["adapters"]["float32-numpy"]["selected_as"] == ["object:tests.mutants:correct"]


def test_every_record_of_a_run_follows_the_schema(tmp_path):
    proc = _pytest(tmp_path, "--adapters", "oracle", "-k", "SEM-STEP or STRUCT or ARG-FILTERS")
    assert proc.returncode == 0, proc.stdout[-4000:]
    written = _records(tmp_path)
    assert written
    for r in written:
        assert records.problems(r) == [], r
    assert records.problems(json.loads((tmp_path / "run.json").read_text()), "run") == []
