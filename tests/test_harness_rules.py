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
