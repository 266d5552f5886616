"""The campaign's plan, state and command line (core/campaign.py) and the
regression corpus's index (core/corpus.py), without running a shard (the
shards run for real in tests/test_campaign_dask.py)."""
from __future__ import annotations

import json

import pytest

from convlstm_conformance import campaign, corpus
from convlstm_conformance.cli import main
from convlstm_conformance.expr import parse
from convlstm_conformance.model import Case


def plan(**kw) -> campaign.Plan:
    return campaign.Plan(**{"adapters": ["oracle"], "rounds": 2, **kw})


def test_shard_seeds_do_not_depend_on_order_or_place():
    a = campaign.shards_of_round(plan(adapters=["oracle", "ref-torch-cpu"]), 1)
    b = campaign.shards_of_round(plan(adapters=["ref-torch-cpu", "oracle"]), 1)
    assert {s.adapter: s.seed for s in a} == {s.adapter: s.seed for s in b}
    assert len({s.seed for s in a + campaign.shards_of_round(plan(), 0)}) == 3


def test_a_resumed_campaign_runs_only_what_is_left(tmp_path):
    p, state = campaign.start_or_resume(tmp_path, plan(adapters=["oracle", "ref-torch-cpu"]))
    first = list(campaign.pending(p, state))
    assert [s.name for s in first] == ["0000-oracle", "0000-ref-torch-cpu",
                                       "0001-oracle", "0001-ref-torch-cpu"]
    campaign.note(state, campaign.ShardResult(first[0], "shards/0000-oracle", 3.0, 1))
    # A shard stopped at the budget (exit None) is run again on resume.
    campaign.note(state, campaign.ShardResult(first[1], "shards/0000-ref-torch-cpu", 2.0, None))
    campaign.save_state(tmp_path, state)
    p2, state2 = campaign.start_or_resume(tmp_path, None)
    assert [s.name for s in campaign.pending(p2, state2)] == [s.name for s in first[1:]]
    assert state2["elapsed_s"] == 5.0
    # A budget given again replaces the old one; the rest of the plan is kept.
    p3, _ = campaign.start_or_resume(tmp_path, campaign.Plan(adapters=[], minutes=5))
    assert (p3.minutes, p3.rounds, p3.adapters) == (5, None, ["oracle", "ref-torch-cpu"])


@pytest.mark.parametrize("kw, message", [
    ({"rounds": None}, "give a budget"), ({"minutes": -1.0}, "--minutes must be positive"),
    ({"examples": 0}, "--examples must be"), ({"adapters": []}, "nothing to explore")])
def test_a_plan_that_cannot_run_is_refused(tmp_path, kw, message):
    with pytest.raises(campaign.CampaignError, match=message):
        campaign.start_or_resume(tmp_path / "c", plan(**kw))


def test_the_command_line_says_what_is_wrong(tmp_path, capsys):
    assert main(["campaign", str(tmp_path / "none")]) == 2
    assert "no campaign to resume" in capsys.readouterr().err
    assert main(["campaign", str(tmp_path / "x"), "--adapters", "no-such", "--rounds", "1"]) == 2
    assert "unknown adapter 'no-such'" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / campaign.STATE).write_text("{not json")
    assert main(["campaign", str(tmp_path / "bad")]) == 2
    assert "not a campaign state file" in capsys.readouterr().err


def test_clause_filter_selects_whole_clause_ids():
    expr = campaign.clause_filter(["SEM-MASK"])
    assert not expr.startswith("-")          # it would read as an option
    assert "(-SEM-MASK])" == expr            # so SEM-MASK-LEADING] is not selected


def test_every_corpus_entry_is_replayable():
    entries = corpus.load_index()
    assert entries, "the corpus holds the findings of docs/findings/"
    from convlstm_conformance.spec import load_cached
    spec = load_cached()
    for e in entries:
        case = Case.load(e.path)
        assert e.clause in spec.clauses
        if e.conditions:
            env = spec.environment(case.config, {})
            env["dtype"] = case.dtype
            assert parse(e.conditions)(env) is True, (e.finding, e.conditions)


@pytest.mark.parametrize("text, why", [
    ("{a: 1}", "expected a list"), ("- 3", "not a mapping"),
    ("- {finding: x, adapter: a, clause: C, test: numerics, case: ../x.npz}", "file name"),
    ("- {finding: x, adapter: a, clause: C, test: numerics, case: x.npz, extra: 1}", "extra")])
def test_a_malformed_corpus_index_is_refused(tmp_path, text, why):
    (tmp_path / corpus.INDEX).write_text(text)
    with pytest.raises(ValueError, match=why):
        corpus.load_index(tmp_path)


def test_a_concluded_campaign_renders_its_findings_page(tmp_path):
    """The campaign's last step: findings.json to findings.html through the
    registered ``findings`` reporter, every finding with its status."""
    doc = {"examples": 12, "findings": [
        {"id": "tf-keras-0a1fdb33", "adapter": "tf-keras", "status": "fixed",
         "clauses": ["SEM-ACTIVATIONS"], "triage": None, "failures": []},
        {"id": "keras3-tensorflow-dae8a064", "adapter": "keras3-tensorflow", "status": "known",
         "clauses": ["SEM-STEP", "SEM-MASK"], "triage": None, "failures": []}]}
    (tmp_path / "findings.json").write_text(json.dumps(doc))
    page = campaign.render_findings(tmp_path).read_text()
    assert "2 findings from 12 examples: 0 new, 1 known, 1 fixed" in page, page[:400]
    assert 'id="tf-keras-0a1fdb33"' in page and "SEM-MASK" in page
    (tmp_path / "findings.json").write_text("{}")
    with pytest.raises(ValueError, match="not a findings file"):
        campaign.render_findings(tmp_path)
