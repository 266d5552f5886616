"""The C implementation of examples/c_worker/, built with the machine's C
compiler and judged by the whole conformance suite over the worker protocol:
every clause it claims is judged and met, and a planted bug is caught."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "examples" / "c_worker"
CC = shutil.which("cc") or shutil.which("gcc")

#: Clauses the worker's claims cover, each of which must be judged (not skipped).
CLAIMED = ("CAPABILITY-CLAIMS", "SEM-STEP", "SEM-WEIGHT-LAYOUT", "SEM-NO-BIAS", "SEM-ACTIVATIONS",
           "SEM-DATA-FORMAT", "SEM-DILATION", "SEM-SAME-EVEN-KERNEL", "SEM-GO-BACKWARDS",
           "SEM-MASK", "SEM-MASKING-LAYER", "SEM-INITIAL-STATE", "SEM-RECURRENT-CONV",
           "SHAPE-SAME", "SHAPE-VALID", "STRUCT-SEQUENCE-STATE", "DTYPE-RESULT", "SEM-GRADIENTS")

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc or gcc) on this machine")


@pytest.fixture(scope="module")
def worker(tmp_path_factory) -> Path:
    """The worker, compiled as its Makefile compiles it, into a scratch directory."""
    out = tmp_path_factory.mktemp("c_worker") / "convlstm-worker"
    build = subprocess.run([CC, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", str(out),
                            *sorted(str(p) for p in SOURCES.glob("*.c")), "-lm"],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    return out


def suite(results: Path, command: str, *args: str,
          target: str = "conformance/") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", target, "-q", "-p",
                           "no:cacheprovider", "--profile", "ci", "--adapters", "",
                           "--no-report", "--results-dir", str(results),
                           "--adapter-command", command, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)


def records(results: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(results.glob("results-*.jsonl"))
            for line in path.read_text().splitlines()]


def test_c_worker_meets_every_clause_it_claims(worker, tmp_path):
    run = suite(tmp_path, f"c-convlstm={worker}")
    assert run.returncode == 0, run.stdout[-4000:]
    recs = records(tmp_path)
    failed = [r for r in recs if r["outcome"] not in ("passed", "skipped")]
    assert not failed, [(r["clause"], r["outcome"], r.get("message", "")[:300]) for r in failed]
    passed = {r["clause"] for r in recs if r["outcome"] == "passed"}
    assert set(CLAIMED) <= passed, sorted(set(CLAIMED) - passed)
    judged = [r for r in recs if r["outcome"] == "passed" and r["clause"] in CLAIMED
              and r["clause"] != "CAPABILITY-CLAIMS"]
    assert all(r.get("examples") for r in judged), [r["clause"] for r in judged
                                                    if not r.get("examples")]
    skipped = {r["clause"]: r.get("reason", "") for r in recs if r["outcome"] == "skipped"}
    # Everything skipped is skipped for a claim the worker does not make.
    assert all("claim" in why or "refused" in why for why in skipped.values()), skipped


def test_suite_catches_a_bug_planted_in_the_c_worker(worker, tmp_path):
    run = suite(tmp_path, f"c-convlstm={worker} --wrong-forget-bias", "-k", "SEM-STEP or SEM-MASK",
                target="conformance/test_numerics.py")
    assert run.returncode == 1, run.stdout[-4000:]
    failed = {r["clause"] for r in records(tmp_path) if r["outcome"] == "failed"}
    assert {"SEM-STEP", "SEM-MASK"} <= failed, run.stdout[-4000:]


def test_c_worker_is_certified_at_the_standard_level(worker, tmp_path):
    """`convlstm-conformance certify`, as an author runs it: the standard level
    is met; full is not, only for clauses the worker does not claim."""
    run = subprocess.run([sys.executable, "-m", "convlstm_conformance", "certify",
                          "--adapter-command", f"c-convlstm={worker}", "--profile", "quick",
                          "--require-level", "standard", "--results-dir", str(tmp_path), "-n", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    cert = json.loads((tmp_path / "certificate.json").read_text())
    assert cert["level"] == "standard", cert["level"]
    levels = {lv["id"]: lv for lv in cert["levels"]}
    assert levels["core"]["met"] and levels["standard"]["met"]
    assert not levels["standard"]["unmet"], levels["standard"]["unmet"]
    assert {u["verdict"] for u in levels["full"]["unmet"]} == {"not claimed"}, levels["full"]
    assert not cert["failures"], cert["failures"]
