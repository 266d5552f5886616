"""The regression corpus: every finding's minimal case, replayed in every profile.

Each case of ``corpus/index.yaml`` (core/corpus.py) runs on every selected
implementation that claims its features and is judged against the oracle
as the clause that found it judges.  A known divergence fails as expected
where an expectation entry (``expectations/<adapter>.yaml``, its condition
the triaged one) explains it; one that no longer fails is reported as fixed
("an expected failure no longer fails"), and a new failure of another
implementation on a corpus case fails the run.
"""
import pytest

from convlstm_conformance import corpus, harness, tolerance
from convlstm_conformance.features import required_features
from convlstm_conformance.model import Case
from convlstm_conformance.triage import drawn_of

ENTRIES = corpus.load_index()


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.finding for e in ENTRIES])
def test_corpus_case(adapter_name, entry, adapters, spec, record, results_dir):
    record["clause"] = entry.clause      # a skip's record names the clause too
    adapter = adapters.get(adapter_name)
    case = Case.load(entry.path)
    missing = adapter.capabilities().missing(required_features(case))
    if missing:
        pytest.skip(f"{adapter.name} does not claim {', '.join(missing)}, needed by "
                    f"{entry.finding}")
    clause = spec.clause(entry.clause)
    ctx = harness.Context(spec, adapter, clause, record, results_dir, test="corpus",
                          key=adapter_name)
    judge = tolerance.judge_gradients if entry.test == "gradients" else harness.judge_for(adapter)
    drawn = drawn_of(case)
    outcome = adapter.run(case)
    verdict = judge(case, outcome)
    if verdict.unjudged:
        ctx.not_judged(verdict.unjudged)
    else:
        problem = None
        if not verdict.passed:
            again = judge(case, adapter.run(case))
            kind = ("diverges from the oracle" if not again.passed else
                    "is nondeterministic: a second run of the same case passed")
            problem = (f"{kind} on corpus case {entry.finding} (found in {entry.adapter}, "
                       f"conditions: {entry.conditions})\n  "
                       + verdict.describe().replace("\n", "\n  "))
        ctx.conclude(drawn, case, problem, errors=verdict.errors, outcome=outcome)
    ctx.finish()
