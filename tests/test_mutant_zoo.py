"""The suite tests itself: every mutant of tests/mutant_zoo.py is caught by
the ``ci`` profile of ``pytest conformance``, by the clause that describes
its deviation, and the base they are all made from passes the whole ci suite
(so a kill is the mutation's doing, not the base's).

The suite runs as users run it, in subprocesses: the base over everything,
the mutants in one batch, each on the one test of the suite judging its
clause.  The records say which clause failed and why.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from convlstm_conformance.spec import load_cached
from tests.mutant_zoo import MUTATIONS, ZOO, object_path, suite_node, suite_test

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_cached()

#: Mutants the ci profile does not catch by the clause that describes them,
#: each with what the suite lacks (strict xfails): none.
MISSED: dict[str, str] = {}
#: Where the ci profile catches a mutant of MISSED under another clause.
CAUGHT_ELSEWHERE: dict[str, str] = {}


def run_suite(results: Path, targets: list[str], objects: list[str]):
    cmd = [sys.executable, "-m", "pytest", *targets, "-q", "-p", "no:cacheprovider",
           "--profile", "ci", "--adapters", "", "--results-dir", str(results), "--no-report"]
    for path in objects:
        cmd += ["--adapter-object", path]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    records = {}
    for p in results.glob("results-*.jsonl"):
        for line in p.read_text().splitlines():
            r = json.loads(line)
            records[(r["adapter"], r["clause"], r["test"])] = r
    return proc, records


@pytest.fixture(scope="module")
def mutant_records(tmp_path_factory):
    """One ci run: each mutant on the suite's test of its clause (and of the
    clause that catches it instead, where the describing one cannot)."""
    wanted = [(m.name, m.clause) for m in MUTATIONS] + list(CAUGHT_ELSEWHERE.items())
    targets = [suite_node(SPEC, object_path(name), clause) for name, clause in wanted]
    proc, records = run_suite(tmp_path_factory.mktemp("zoo"), targets,
                              [object_path(m.name) for m in MUTATIONS])
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    missing = [(name, clause) for name, clause in wanted
               if (f"zoo-{name}", clause, suite_test(SPEC, clause)) not in records]
    assert not missing, f"no record for {missing}:\n{proc.stdout[-3000:]}"
    return records


def assert_killed(records, name: str, clause: str) -> None:
    rec = records[(f"zoo-{name}", clause, suite_test(SPEC, clause))]
    assert rec["outcome"] == "failed", (
        f"mutant {name} ({ZOO[name].doc}) survives {clause}: {rec['outcome']} after "
        f"{rec.get('examples')} examples")
    message = rec.get("message") or ""
    # Caught for its deviation: a divergence the clause names, not a crash.
    assert message.startswith(f"[{clause}] zoo-{name}:"), message[:600]
    assert not any(crash in message for crash in ("did not return", "did not run")), \
        message[:600]


def _marks(name: str):
    if name in MISSED:
        return [pytest.mark.xfail(strict=True, reason=MISSED[name])]
    return []


@pytest.mark.parametrize("name", [pytest.param(m.name, marks=_marks(m.name)) for m in MUTATIONS])
def test_mutant_is_killed_by_the_clause_describing_it(mutant_records, name):
    assert_killed(mutant_records, name, ZOO[name].clause)


@pytest.mark.parametrize("name", sorted(CAUGHT_ELSEWHERE))
def test_a_mutant_its_clause_misses_is_still_caught_in_ci(mutant_records, name):
    assert_killed(mutant_records, name, CAUGHT_ELSEWHERE[name])


def test_the_zoo_is_what_the_issue_asks_for():
    assert len(MUTATIONS) >= 30 and len(ZOO) == len(MUTATIONS)
    for m in MUTATIONS:
        SPEC.clause(m.clause)              # a clause the spec has
        assert m.doc


def test_the_base_passes_the_whole_ci_suite(tmp_path):
    proc, records = run_suite(tmp_path, ["conformance"], [object_path(None)])
    assert proc.returncode == 0, proc.stdout[-4000:]
    # Every clause a mutant is killed by was judged on the base, not skipped.
    for clause in {m.clause for m in MUTATIONS} | set(CAUGHT_ELSEWHERE.values()):
        rec = records[("zoo-base", clause, suite_test(SPEC, clause))]
        assert rec["outcome"] == "passed", rec
        assert rec.get("examples") or rec.get("measured"), f"{clause} judged nothing: {rec}"
