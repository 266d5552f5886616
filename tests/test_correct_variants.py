"""Correct implementations written differently (tests/correct_variants.py)
are never flagged by the ``ci`` profile of ``pytest conformance``, and are
judged on every semantic clause they claim (not skipped through)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convlstm_conformance import tolerance
from convlstm_conformance.spec import load_cached
from convlstm_conformance.strategies import Chooser, draw_config, focus_for, make_case
from tests.correct_variants import VARIANTS, capabilities, object_path

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_cached()

#: Flags the suite raises on a correct variant: the suite is wrong there.
#: (variant, clause) the ci suite flags although the variant is correct: none.
FALSE_ALARMS: dict[tuple[str, str], str] = {}
NAMES = {cls.name: key for key, cls in VARIANTS.items()}


@pytest.fixture(scope="module")
def variant_records(tmp_path_factory):
    """The whole ci suite over every variant, in one run."""
    results = tmp_path_factory.mktemp("variants")
    cmd = [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider",
           "--profile", "ci", "--adapters", "", "--results-dir", str(results), "--no-report"]
    for key in VARIANTS:
        cmd += ["--adapter-object", object_path(key)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    records = [json.loads(line) for p in results.glob("results-*.jsonl")
               for line in p.read_text().splitlines()]
    assert records, proc.stdout[-3000:] + proc.stderr[-3000:]
    return records


def _semantic_clauses():
    """Semantic clauses a variant's claims let the suite judge."""
    caps = capabilities()
    return {c.id for c in SPEC.of_kind("semantics")
            if not (c.dtypes and not set(c.dtypes) & caps.dtype)
            and not c.call.get("roundtrip") and not c.call.get("symbolic")}


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_variant_is_never_flagged_in_ci(variant_records, key):
    name = VARIANTS[key].name
    mine = [r for r in variant_records if r["adapter"] == name]
    flagged = [f"{r['clause']} ({r['test']}): {(r.get('message') or '')[:400]}" for r in mine
               if r["outcome"] not in ("passed", "skipped")
               and (key, r["clause"]) not in FALSE_ALARMS]
    assert not flagged, f"{name} is correct but was flagged:\n" + "\n".join(flagged)
    judged = {r["clause"] for r in mine
              if r["test"] == "numerics" and r["outcome"] == "passed" and r.get("examples")}
    assert judged >= _semantic_clauses(), f"{name}: not judged on {_semantic_clauses() - judged}"


@pytest.mark.parametrize("key, clause", [
    pytest.param(k, c, marks=pytest.mark.xfail(strict=True, reason=why))
    for (k, c), why in FALSE_ALARMS.items()])
def test_no_false_alarm_on_a_correct_variant(variant_records, key, clause):
    [rec] = [r for r in variant_records
             if r["adapter"] == VARIANTS[key].name and r["clause"] == clause]
    assert rec["outcome"] == "passed", (rec.get("message") or "")[:2000]


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_variants_agree_with_the_oracle_on_drawn_cases(key):
    """In-process, without the suite's machinery: fixed draws across the
    semantic clauses, each judged by the tolerance model."""
    adapter = VARIANTS[key]()
    rng = np.random.default_rng(11)
    worst, judged = 0.0, 0
    for k, clause_id in enumerate(sorted(_semantic_clauses()) * 2):
        clause = SPEC.clause(clause_id)
        drawn = draw_config(Chooser(rng=rng), SPEC, focus=focus_for(SPEC, clause),
                            sizes=clause.sizes, caps=adapter.capabilities())
        case = make_case(SPEC, drawn, k, dtype="float32", **dict(clause.call))
        verdict = tolerance.judge(case, adapter.run(case))
        assert verdict.passed, f"[{clause_id}] {adapter.name} on {case.config}:\n" \
                               f"{verdict.describe()}"
        judged += not verdict.unjudged
        worst = max(worst, verdict.worst)
    assert judged >= 30 and worst > 0, (judged, worst)
