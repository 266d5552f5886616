"""A third-party implementation in its own process, speaking only the
documented protocol (tests/external_impl.py imports nothing of ours)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from convlstm_conformance import registry
from convlstm_conformance.spec import load_cached
from convlstm_conformance.strategies import Chooser, draw_config, make_case
from convlstm_conformance import tolerance

ROOT = Path(__file__).resolve().parent.parent
IMPL = ROOT / "tests" / "external_impl.py"


def test_external_adapter_reports_capabilities_and_conforms():
    adapter = registry.from_command(f"external={sys.executable} {IMPL}")
    try:
        caps = adapter.capabilities()
        assert caps.padding == frozenset({"same", "valid"}) and not caps.strides
        spec = load_cached()
        rng = np.random.default_rng(0)
        for k in range(5):
            drawn = draw_config(Chooser(rng=rng), spec, caps=caps, focus={"return_state": [True]})
            case = make_case(spec, drawn, k)
            verdict = tolerance.judge(case, adapter.run(case))
            assert verdict.passed, (drawn.config, verdict.describe())
        assert adapter.versions()["external-impl"] == "1.0"
    finally:
        adapter.close()


def test_suite_runs_an_external_implementation_and_catches_its_bug(tmp_path):
    base = [sys.executable, "-m", "pytest", "conformance/test_numerics.py", "-q", "-p",
            "no:cacheprovider", "--profile", "ci", "--adapters", "", "-k", "SEM-STEP"]
    good = subprocess.run(base + ["--results-dir", str(tmp_path / "good"), "--adapter-command",
                                  f"external={sys.executable} {IMPL}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert good.returncode == 0, good.stdout[-3000:]
    bad = subprocess.run(base + ["--results-dir", str(tmp_path / "bad"), "--adapter-command",
                                 f"external={sys.executable} {IMPL} --wrong-forget-bias"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1 and "[SEM-STEP] external: diverges from the oracle" in bad.stdout, \
        bad.stdout[-3000:]
    record = [json.loads(line) for p in (tmp_path / "bad").glob("results-*.jsonl")
              for line in p.read_text().splitlines()][0]
    assert record["repro"].startswith("python -m convlstm_conformance repro ") and "command:" in record["repro"]


def test_external_implementation_refuses_what_it_does_not_claim(tmp_path):
    """The example authors start from: outside its claims it refuses (it does
    not compute a relu or a float64 case wrongly), and it refuses a case
    without weights rather than raising on it."""
    run = subprocess.run([sys.executable, "-m", "pytest", "conformance/test_capabilities.py",
                          "conformance/test_initialization.py", "-q", "-p", "no:cacheprovider",
                          "--profile", "ci", "--adapters", "", "--no-report", "--results-dir",
                          str(tmp_path), "--adapter-command", f"external={sys.executable} {IMPL}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    outcomes = {json.loads(line)["clause"]: json.loads(line)["outcome"]
                for p in tmp_path.glob("results-*.jsonl") for line in p.read_text().splitlines()}
    assert outcomes["CAPABILITY-CLAIMS"] == "passed", outcomes


def test_computing_unclaimed_features_wrongly_fails_capability_claims(tmp_path):
    """The same implementation without its refusals (as it was): relu, float64
    and masks computed wrongly fail CAPABILITY-CLAIMS, and the record says so
    rather than only that some unclaimed features happen to work."""
    run = subprocess.run([sys.executable, "-m", "pytest", "conformance/test_capabilities.py",
                          "-q", "-p", "no:cacheprovider", "--profile", "ci", "--adapters", "",
                          "--no-report", "--results-dir", str(tmp_path), "--adapter-command",
                          f"external={sys.executable} {IMPL} --no-refusals"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout[-3000:]
    record = [json.loads(line) for p in tmp_path.glob("results-*.jsonl")
              for line in p.read_text().splitlines()][0]
    assert record["outcome"] == "failed", record
    assert "outside its claims it must refuse" in record["message"], record["message"][:500]
    assert "activation=relu" in run.stdout, run.stdout[-3000:]
