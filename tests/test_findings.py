"""Findings: one bug seen through several clauses is one finding, two bugs are
two, and triage states the conditions a planted bug needs (core/findings.py,
core/triage.py), on wrong implementations of the mutant zoo, in process."""
from __future__ import annotations

import dataclasses

import pytest

from convlstm_conformance import findings, triage
from convlstm_conformance.model import Adapter, Case
from convlstm_conformance.spec import load_cached
from convlstm_conformance.strategies import Drawn, make_case
from tests.mutant_zoo import make

SPEC = load_cached()
DIMS = dict(batch=2, timesteps=3, rows=5, cols=5, channels=2)
BASE = {"filters": 2, "kernel_size": (2, 3), "padding": "valid", "return_sequences": True,
        "return_state": True}


class TwoBugs(Adapter):
    """Two bugs in one implementation: the recurrent convolution takes the
    layer's 'valid' padding, and an odd 'same' padding goes top/left."""

    name = "two-bugs"

    def __init__(self):
        self.valid = make.recurrent_layer_padding()
        self.same = make.same_pad_wrong_side()

    def capabilities(self):
        return self.valid.capabilities()

    def run(self, case: Case):
        use = self.valid if case.config.get("padding", "valid") == "valid" else self.same
        return use.run(case)


def failure(tmp_path, adapter: Adapter, clause: str, config: dict, key: str,
            seed: int = 1) -> findings.Failure:
    """A failure as a campaign records it: the failing case saved, its record."""
    case = make_case(SPEC, Drawn(dict(BASE, **config), DIMS), seed, dtype="float64", scale=1.0)
    path = case.save(tmp_path / f"{clause}-{seed}-{len(list(tmp_path.iterdir()))}.npz")
    return findings.Failure(adapter=adapter.name, clause=clause, test="numerics",
                            outcome="failed", message=f"[{clause}] {adapter.name}: diverges "
                            "from the oracle", config=case.config, dims=DIMS, dtype="float64",
                            errors={}, case=str(path), key=key)


def triage_with(adapter: Adapter):
    t = triage.Triage(SPEC, adapter)

    def run(f: findings.Failure):
        return t.triage(Case.load(f.case), f.test, f.clause)
    return run


def test_one_bug_through_several_clauses_is_one_finding(tmp_path):
    adapter = make.forget_bias_plus_0_01()
    seen = [failure(tmp_path, adapter, "SEM-STEP", {}, "k"),
            failure(tmp_path, adapter, "SEM-DATA-FORMAT", {"data_format": "channels_first"}, "k"),
            failure(tmp_path, adapter, "SEM-GO-BACKWARDS", {"go_backwards": True,
                                                             "padding": "same"}, "k", seed=4)]
    found = findings.dedupe(seen, triage_with(adapter))
    assert len(found) == 1, [f.signature for f in found]
    assert found[0].clauses == ["SEM-DATA-FORMAT", "SEM-GO-BACKWARDS", "SEM-STEP"]
    # The forget gate multiplies the carried c: zero state hides the bug.
    assert found[0].signature["needs_state"] is True
    assert found[0].signature["necessary"] == []


def test_two_bugs_of_one_implementation_are_two_findings(tmp_path):
    adapter = TwoBugs()
    seen = [failure(tmp_path, adapter, "SEM-RECURRENT-CONV", {}, "k"),
            failure(tmp_path, adapter, "SEM-STEP", {"data_format": "channels_first"}, "k"),
            failure(tmp_path, adapter, "SEM-SAME-EVEN-KERNEL",
                    {"padding": "same", "kernel_size": (2, 2)}, "k"),
            failure(tmp_path, adapter, "SEM-DATA-FORMAT",
                    {"padding": "same", "kernel_size": (2, 2), "data_format": "channels_first"},
                    "k")]
    found = findings.dedupe(seen, triage_with(adapter))
    assert sorted(f.clauses for f in found) == [["SEM-DATA-FORMAT", "SEM-SAME-EVEN-KERNEL"],
                                                ["SEM-RECURRENT-CONV", "SEM-STEP"]], \
        [(f.clauses, f.signature) for f in found]


def test_triage_states_the_necessary_conditions():
    case = make_case(SPEC, Drawn(dict(BASE, activation="relu"), DIMS), 1, dtype="float64",
                     scale=1.0)
    t = triage.Triage(SPEC, make.recurrent_layer_padding()).triage(case, "numerics",
                                                                  "SEM-RECURRENT-CONV")
    by_arg = {c["argument"]: c for c in t["conditions"]}
    assert set(by_arg) == {"padding", "kernel_size"}, t["conditions"]
    assert by_arg["padding"]["fails"] == ["valid"] and by_arg["padding"]["passes"] == ["same"]
    assert (1, 1) in by_arg["kernel_size"]["passes"]
    assert t["when"] == "kernel_size not in ((1, 1),) and padding in ('valid',)"
    # The recurrent convolution is the broken piece: it fails alone, the input
    # convolution alone does not, and a first step from zero state hides it.
    assert t["pieces"]["recurrent convolution (input kernel zero)"] == "fails"
    assert t["pieces"]["input convolution (recurrent kernel zero)"] == "passes"
    assert t["character"]["needs_state"] is True
    text = triage.describe(t)
    assert "only when padding in ('valid',), never when padding in ('same',)" in text
    # The condition is a spec expression, usable as an expectation's ``when``.
    from convlstm_conformance.expr import parse
    env = SPEC.environment(case.config, DIMS)
    assert parse(t["when"])(env) is True
    assert parse(t["when"])(SPEC.environment(dict(case.config, padding="same"), DIMS)) is False


def test_a_correct_implementation_is_not_triaged_into_a_finding(tmp_path):
    adapter = make.base()
    seen = [failure(tmp_path, adapter, "SEM-STEP", {}, "k")]
    t = triage_with(adapter)(seen[0])
    assert t["reproduced"] is False and "passes" in t["notes"][0]


def test_failures_without_a_case_keep_their_clause():
    """Nothing shows that two failures triage could not re-run are one bug."""
    seen = [findings.Failure("x", c, "arguments", "failed", f"[{c}] x: did not raise", None,
                             None, None, {}, None) for c in ("ARG-FILTERS", "ARG-STRIDES")]
    assert len(findings.dedupe(seen, lambda f: None)) == 2
    assert len(findings.dedupe(seen)) == 1          # the campaign's running count


@pytest.mark.parametrize("line", ["", "{not json", "[1, 2]"])
def test_unreadable_record_lines_are_skipped(tmp_path, line):
    (tmp_path / "results-main.jsonl").write_text(
        line + "\n" + '{"adapter": "a", "clause": "SEM-STEP", "outcome": "failed", '
        '"examples": 3, "message": "[SEM-STEP] a: diverges", "repro": null}\n')
    assert findings.summarize([tmp_path]) == findings.Summary(3, 1, 1)


def test_the_findings_section_escapes_what_implementations_wrote():
    from convlstm_conformance.reports.findings import section
    evil = "<script>alert(1)</script>"
    doc = {"examples": 5, "findings": [{
        "id": evil, "adapter": evil, "status": "new", "clauses": [evil],
        "triage": None, "versions": {evil: evil}, "snippet": evil}]}
    text = section(doc)
    assert "<script>" not in text and text.count("&lt;script&gt;") == 7
    assert "1 findings from 5 examples: 1 new, 0 known, 0 fixed" in text


def test_a_corpus_finding_whose_case_now_passes_is_fixed(tmp_path):
    """Status 'fixed' is measured, never assumed: the corpus case re-run on
    the implementation now.  The same finding keyed to the zoo's correct base
    (the bug fixed) is fixed; keyed to the mutant (still there) it is new."""
    from convlstm_conformance import corpus
    adapter = make.forget_bias_plus_0_01()
    seen = failure(tmp_path, adapter, "SEM-STEP", {}, "object:tests.mutant_zoo:make.forget_bias_plus_0_01")
    [finding] = findings.dedupe([seen])
    corpus_dir = tmp_path / "corpus"
    corpus.add(dict(finding.to_json(), case=seen.case), corpus_dir)
    cache = triage.Cache(SPEC)
    try:
        assert findings.status_of(finding, SPEC, cache.still_fails, corpus_dir) == "new"
        repaired = findings.Finding(finding.adapter, finding.signature,
                                    [dict(finding.failures[0], key="object:tests.mutant_zoo:make.base")])
        assert repaired.id == finding.id
        assert findings.status_of(repaired, SPEC, cache.still_fails, corpus_dir) == "fixed"
        # Outside the corpus nothing re-runs: not fixed, whatever the case does now.
        assert findings.status_of(repaired, SPEC, cache.still_fails, tmp_path / "empty") == "new"
    finally:
        cache.close()
