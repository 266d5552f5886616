"""The harness's rules, each proved by running the suite with the bug it
guards against planted (tests/plants.py) or with the input it must refuse.
The rules are stated in docs/harness-rules.md."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def suite(tmp_path: Path, *args: str, plant: str | None = None, timeout: int = 600):
    env = dict(os.environ)
    env.pop("CONVLSTM_PLANT", None)
    if plant:
        env["CONVLSTM_PLANT"] = plant
    # The whole suite unless the arguments name a module of it.
    where = [] if any(a.startswith("conformance/") for a in args) else ["conformance"]
    cmd = [sys.executable, "-m", "pytest", *where, "-q", "-p", "no:cacheprovider",
           "-p", "tests.plants", "--profile", "ci", "--results-dir", str(tmp_path), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


def records(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for p in tmp_path.glob("results-*.jsonl")
            for line in p.read_text().splitlines()]


def test_a_test_that_judged_nothing_fails(tmp_path):
    proc = suite(tmp_path, "conformance/test_numerics.py", "--adapters", "ref-torch-cpu",
                 "-k", "SEM-STEP", plant="nothing_judgeable")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "nothing was judged, so nothing is shown to conform" in proc.stdout
    [rec] = records(tmp_path)
    assert rec["outcome"] == "failed" and rec["examples"] == 0
    assert rec["not_judged"]["reasons"] == ["planted: nothing is judgeable"]


def test_an_expectation_for_every_clause_needs_a_condition(tmp_path):
    import pytest
    from convlstm_conformance.expectations import load_file
    from convlstm_conformance.spec import SpecError, load_cached
    path = tmp_path / "catch-all.yaml"
    path.write_text("adapter: x\nexpected_failures:\n  - clause: \"*\"\n    reason: anything\n")
    with pytest.raises(SpecError, match=r"catch-all.yaml:3: an expectation for every clause "
                                         r"\('\*'\) needs a 'when' condition"):
        load_file(path, load_cached())


def test_a_wildcard_expectation_that_never_fails_is_stale_and_fails_the_run(tmp_path):
    proc = suite(tmp_path, "conformance/test_numerics.py", "--adapters", "oracle",
                 "-k", "SEM-STEP or SEM-NO-BIAS", plant="stale_wildcard")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "STALE expectation planted.yaml:1 (oracle, every clause)" in proc.stdout
    run = json.loads((tmp_path / "run.json").read_text())
    [stale] = run["stale_expectations"]
    assert stale["failed"] == 0 and stale["passed"] > 0
    # Steering ran every example of the region: the divergence was never seen.
    assert all(r["outcome"] == "passed" for r in records(tmp_path))


def test_an_empty_or_unavailable_selection_is_an_error(tmp_path):
    proc = suite(tmp_path, "--adapters", "")
    assert proc.returncode == 4 and "no implementation selected" in proc.stderr + proc.stdout
    proc = suite(tmp_path, "--adapters", "oracle,no-such-adapter")
    assert proc.returncode == 4 and "unknown adapter 'no-such-adapter'" in proc.stderr + proc.stdout
    proc = suite(tmp_path, "--adapters", "ref-torch-cuda")
    if "no NVIDIA GPU" in proc.stderr + proc.stdout:
        assert proc.returncode == 4


def test_a_half_precision_layer_computing_in_float32_is_caught(tmp_path):
    """Reported dtypes are read, not echoed; and DTYPE-RESULT checks the values."""
    proc = suite(tmp_path, "conformance/test_dtypes.py", "--adapters", "ref-torch-cpu",
                 plant="half_in_float32")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "cannot represent: the layer reports" in proc.stdout, proc.stdout[-3000:]
    clean = suite(tmp_path / "clean", "conformance/test_dtypes.py", "--adapters", "ref-torch-cpu")
    assert clean.returncode == 0, clean.stdout[-3000:]


def test_a_seeded_layer_that_drops_nothing_fails_the_seed_clause(tmp_path):
    proc = suite(tmp_path, "conformance/test_dropout.py", "--adapters", "",
                 "--adapter-object", "tests.wrong_adapters:NoDropWhenSeeded")
    assert proc.returncode == 1, proc.stdout[-3000:]
    outcomes = {r["clause"]: r["outcome"] for r in records(tmp_path)}
    assert outcomes == {"SEM-DROPOUT-STATISTICS": "passed", "SEM-DROPOUT-SEED": "failed"}, outcomes


def test_claims_that_leave_nothing_to_probe_fail_capability_claims(tmp_path):
    proc = suite(tmp_path, "conformance/test_capabilities.py", "--adapters", "",
                 "--adapter-object", "tests.wrong_adapters:ZerosWithDefaultClaims")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "no case can be drawn inside the claims" in proc.stdout


def test_a_crashed_pytest_worker_leaves_a_crashed_record_and_a_partial_run(tmp_path):
    proc = suite(tmp_path, "conformance/test_numerics.py", "-n", "2", "-k", "SEM-STEP",
                 "--adapters", "", "--adapter-object", "tests.wrong_adapters:KillsItsProcess")
    assert proc.returncode == 1, proc.stdout[-3000:]
    [rec] = [r for r in records(tmp_path) if r["outcome"] == "crashed"]
    assert (rec["clause"], rec["adapter"]) == ("SEM-STEP", "kills-its-process"), rec
    assert "worker process died" in rec["message"]
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["finished"] and "crashed pytest worker" in run["partial"]
    assert "This run is partial" in (tmp_path / "report.html").read_text()


def test_an_interrupted_run_says_it_is_partial(tmp_path):
    proc = suite(tmp_path, "conformance/test_numerics.py", "-k", "SEM-STEP",
                 "--adapters", "", "--adapter-object", "tests.wrong_adapters:InterruptsTheRun")
    assert proc.returncode == 2, proc.stdout[-3000:]
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["partial"] == "interrupted before every test ran"
    assert "This run is partial" in (tmp_path / "report.html").read_text()


def test_bad_input_to_the_run_is_a_usage_error_naming_it(tmp_path):
    bad = tmp_path / "spec.yaml"
    text = (ROOT / "specs" / "convlstm2d.yaml").read_text()
    bad.write_text(text.replace('forbids: "input_rank != 5"', 'forbids: "input_rank !="'))
    proc = suite(tmp_path / "a", "--adapters", "oracle", "--spec", str(bad))
    assert proc.returncode == 4 and f"{bad}:" in proc.stderr and "syntax error" in proc.stderr
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = suite(blocker / "out", "--adapters", "oracle")
    assert proc.returncode == 4 and "cannot write results to" in proc.stderr
    proc = suite(tmp_path / "b", "--adapters", "oracle", "--worker-timeout", "-1")
    assert proc.returncode == 4 and "--worker-timeout must be a positive number" in proc.stderr


def test_repro_of_a_case_the_judge_refuses_is_an_error_not_a_traceback(tmp_path):
    import numpy as np
    from convlstm_conformance.model import Case
    case = Case(config={"filters": 1, "kernel_size": 1}, inputs=np.zeros((1, 2, 3, 3)),
                kernel=np.zeros((1, 1, 3, 4)), recurrent_kernel=np.zeros((1, 1, 1, 4)),
                bias=np.zeros(4))
    path = case.save(tmp_path / "rank4.npz")
    proc = subprocess.run([sys.executable, "-m", "convlstm_conformance", "repro", str(path),
                           "--adapter", "object:tests.wrong_adapters:ZerosWithDefaultClaims",
                           "--clause", "SEM-STEP"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: case cannot be judged" in proc.stderr and "Traceback" not in proc.stderr
