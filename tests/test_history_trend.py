"""Comparing runs across releases: labels, scope, messages, drift, the trend.

Synthetic records only: each test writes small results directories, adds
them to a history and checks one rule of ``reports/history.py`` or
``reports/trend.py``.
"""
from __future__ import annotations

import sqlite3

import pytest

from convlstm_conformance.reports import history, trend
from convlstm_conformance.reports.__main__ import main
from tests.test_reports import HOSTILE, make_run, rec, write_results

ADAPTER = "torch-ref"
CLAUSES = ["SHAPE-SAME", "SEM-GO-BACKWARDS", "ARG-STRIDES-DILATION"]


def run_dir(tmp_path, name, outcomes, suite="0.2.0", spec="ab", clauses=CLAUSES, versions=None,
            started="2025-01-01T10:00:00+00:00"):
    """A results directory of run ``name`` where ADAPTER has ``outcomes``:
    {clause: outcome or (outcome, ratio, message)}."""
    adapters = make_run()["adapters"]
    adapters[ADAPTER]["versions"] = versions or {"torch": name}
    run = make_run(name, started, adapters, [{"id": c, "kind": "k", "title": c} for c in clauses],
                   suite_version=suite)
    run["spec"]["sha256"] = spec * 32
    lines = []
    for clause, value in outcomes.items():
        outcome, ratio, message = value if isinstance(value, tuple) else (value, None, "")
        lines.append(rec(clause, ADAPTER, outcome, run_id=name, worst_ratio=ratio,
                         message=message))
    return write_results(tmp_path / name, run, lines)


def store(tmp_path, *runs):
    """Add (label, outcomes, options) runs to a fresh history; return its path."""
    db = tmp_path / "h.sqlite"
    for label, outcomes, options in runs:
        history.add(run_dir(tmp_path, f"run-{label}", outcomes, **options), db, label=label)
    return db


def test_a_label_names_a_release_in_diff(tmp_path):
    db = store(tmp_path, ("2024-01", {"SHAPE-SAME": "passed"}, {}),
               ("2024-06", {"SHAPE-SAME": "failed"}, {}))
    d = history.diff(db, "2024-01", "2024-06")
    assert (d.run_a, d.run_b) == ("run-2024-01", "run-2024-06")
    assert [(c.clause, c.before, c.after) for c in d.newly_failing] == [
        ("SHAPE-SAME", "passed", "failed")]
    assert d.scope is None, "the same suite and spec need no note"


def test_different_suites_are_compared_on_the_clauses_both_have(tmp_path):
    # The later suite dropped ARG-STRIDES-DILATION and added SEM-NEW, which fails.
    db = store(tmp_path,
               ("a", {"SHAPE-SAME": "passed", "ARG-STRIDES-DILATION": "failed"}, {}),
               ("b", {"SHAPE-SAME": "failed", "SEM-NEW": "failed"},
                {"suite": "0.3.0", "spec": "cd",
                 "clauses": ["SHAPE-SAME", "SEM-GO-BACKWARDS", "SEM-NEW"]}))
    d = history.diff(db, "a", "b")
    assert d.scope.startswith("suite 0.2.0 -> 0.3.0, spec abababababab -> cdcdcdcdcdcd: "
                              "compared on the 2 clauses both have; left out 1 only in a, "
                              "1 only in b")
    assert (d.only_a, d.only_b) == (["ARG-STRIDES-DILATION"], ["SEM-NEW"])
    # SEM-NEW is a new clause of the suite, not a new failure of the framework,
    # and the dropped clause did not get fixed.
    assert [c.clause for c in d.newly_failing] == ["SHAPE-SAME"]
    assert not d.newly_fixed and not d.added and not d.removed


def test_the_cli_diff_prints_the_scope(tmp_path, capsys):
    db = store(tmp_path, ("a", {"SHAPE-SAME": "passed"}, {}),
               ("b", {"SHAPE-SAME": "passed"}, {"suite": "0.3.0"}))
    assert main(["history", "diff", "a", "b", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("run-a (a) -> run-b (b)\n"), "the releases are named"
    assert "note: suite 0.2.0 -> 0.3.0" in out and "compared on the 3 clauses both have" in out


def test_a_new_message_under_the_same_verdict_is_a_change(tmp_path):
    db = store(tmp_path,
               ("a", {"SHAPE-SAME": ("error", None, "TypeError: bad padding 3\nat line 7"),
                      "SEM-GO-BACKWARDS": ("failed", 4.0, "diverges, max 0.0019")}, {}),
               ("b", {"SHAPE-SAME": ("error", None, "ValueError: no such argument"),
                      "SEM-GO-BACKWARDS": ("failed", 4.2, "diverges, max 0.0025")}, {}))
    d = history.diff(db, "a", "b")
    # Only the numbers of SEM-GO-BACKWARDS changed: drift, if anything, not a new message.
    assert [(c.clause, c.before, c.after) for c in d.message_changes] == [
        ("SHAPE-SAME", "TypeError: bad padding #", "ValueError: no such argument")]


@pytest.mark.parametrize("before, after, drift", [
    (0.1, 0.25, True),      # 2.5x, well inside the budget but moving
    (0.3, 0.5, False),      # under the factor
    (0.01, 0.04, False),    # under the floor on both sides
    (2.0, 0.5, True),       # shrinking counts too
    (0.0, 0.2, True),       # from exact to measurable
])
def test_error_budget_drift(tmp_path, before, after, drift):
    db = store(tmp_path, ("a", {"SHAPE-SAME": ("passed", before, "")}, {}),
               ("b", {"SHAPE-SAME": ("passed", after, "")}, {}))
    d = history.diff(db, "a", "b")
    assert [(c.clause, c.before, c.after) for c in d.drift] == (
        [("SHAPE-SAME", before, after)] if drift else [])


# The tables as version 1 wrote them, and one run of that time.
V1 = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, started TEXT, started_utc TEXT, finished TEXT,
    profile TEXT, command TEXT, environment TEXT, totals TEXT, source TEXT,
    added_at TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE adapters (run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    adapter TEXT NOT NULL, status TEXT, versions TEXT, PRIMARY KEY (run_id, adapter));
CREATE TABLE cells (run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    clause TEXT NOT NULL, adapter TEXT NOT NULL, status TEXT NOT NULL, counts TEXT NOT NULL,
    worst_ratio REAL, PRIMARY KEY (run_id, clause, adapter));
INSERT INTO runs VALUES ('run-a', '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00.000000',
    NULL, 'ci', '', '{}', '{"passed": 1}', '/x', '2024-01-01T00:00:00+00:00', 1);
INSERT INTO adapters VALUES ('run-a', 'torch-ref', 'available', '{"torch": "2.3.0"}');
INSERT INTO cells VALUES ('run-a', 'SHAPE-SAME', 'torch-ref', 'passed', '{"passed": 1}', 0.5);
PRAGMA user_version = 1;
"""


def test_a_version_1_history_is_upgraded_in_place(tmp_path):
    db = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(V1)
    conn.close()
    history.add(run_dir(tmp_path, "run-b", {"SHAPE-SAME": "failed"}), db, label="b")
    assert [r.run_id for r in history.runs(db)] == ["run-a", "run-b"]
    d = history.diff(db, "run-a", "b")
    # The old run's suite is unknown: it is compared on the clauses its cells name.
    assert [c.clause for c in d.newly_failing] == ["SHAPE-SAME"]
    assert "compared on the 1 clauses both have" in d.scope


SERIES = [
    ("2024-01", {"SHAPE-SAME": "passed", "SEM-GO-BACKWARDS": ("xfailed", None, "mask ignored")}),
    ("2024-06", {"SHAPE-SAME": "passed", "SEM-GO-BACKWARDS": ("xfailed", None, "mask ignored")}),
    ("2025-01", {"SHAPE-SAME": ("failed", 3.0, "diverges"),
                 "SEM-GO-BACKWARDS": ("xfailed", None, "mask ignored")}),
    ("2025-06", {"SHAPE-SAME": ("failed", 3.1, "diverges"),
                 "SEM-GO-BACKWARDS": ("xfailed", None, "TypeError: mask")}),
    ("2026-01", {"SHAPE-SAME": "passed", "SEM-GO-BACKWARDS": "passed"}),
]


def series_db(tmp_path, order=None):
    runs = [(label, outcomes, {}) for label, outcomes in SERIES]
    return store(tmp_path, *[runs[i] for i in (order or range(len(runs)))])


def test_the_trend_names_the_release_where_each_change_first_appeared(tmp_path):
    t = trend.build(series_db(tmp_path), ADAPTER)
    assert [c.release for c in t.columns] == [label for label, _ in SERIES]
    got = [(c.clause, c.release, c.kind) for c in t.changes]
    assert got == [
        ("SHAPE-SAME", "2025-01", "newly failing"),
        ("SEM-GO-BACKWARDS", "2025-06", "message"),
        ("SEM-GO-BACKWARDS", "2026-01", "verdict"),
        ("SHAPE-SAME", "2026-01", "newly passing"),
    ]
    assert t.cells[("SHAPE-SAME", "2025-06")] == "failed"
    text = trend.to_text(t)
    assert "2025-01 (since 2024-06) newly failing: passed -> failed" in text


def test_the_default_series_is_in_label_order_not_insertion_order(tmp_path):
    t = trend.build(series_db(tmp_path, order=[4, 2, 0, 3, 1]), ADAPTER)
    assert [c.release for c in t.columns] == [label for label, _ in SERIES]
    assert ("SHAPE-SAME", "2025-01", "newly failing") in [
        (c.clause, c.release, c.kind) for c in t.changes]


def test_an_explicit_series_keeps_its_order(tmp_path):
    t = trend.build(series_db(tmp_path), ADAPTER, ["2026-01", "2024-01"])
    assert [c.release for c in t.columns] == ["2026-01", "2024-01"]
    assert [(c.clause, c.kind) for c in t.changes] == [
        ("SEM-GO-BACKWARDS", "verdict")]


def test_the_trend_notes_a_changed_suite_and_skips_its_new_clauses(tmp_path):
    db = store(tmp_path, ("a", {"SHAPE-SAME": "passed"}, {}),
               ("b", {"SHAPE-SAME": "passed", "SEM-NEW": "failed"},
                {"suite": "0.3.0", "clauses": CLAUSES + ["SEM-NEW"]}))
    t = trend.build(db, ADAPTER)
    assert t.changes == []
    assert t.scope_notes == ["a -> b: suite 0.2.0 -> 0.3.0, spec abababababab -> "
                             "abababababab: compared on the 3 clauses both have; left out "
                             "0 only in a, 1 only in b"]
    assert "SEM-NEW" in t.clauses, "the table still shows the new clause"


def test_trend_html_is_self_contained_and_escaped(tmp_path):
    db = store(tmp_path, ("a", {"SHAPE-SAME": "passed"}, {"versions": {"torch": HOSTILE}}),
               ("b", {"SHAPE-SAME": ("failed", 2.0, HOSTILE)}, {}))
    page = trend.to_html(trend.build(db, ADAPTER))
    assert HOSTILE not in page and "&lt;script&gt;" in page
    assert "<script" not in page and "src=" not in page and "href=" not in page


def test_trend_cli_writes_text_and_html(tmp_path, capsys):
    db = series_db(tmp_path)
    out = tmp_path / "t.html"
    assert main(["history", "trend", "--db", str(db), "--adapter", ADAPTER,
                 "--html", str(out)]) == 0
    assert "changes (4)" in capsys.readouterr().out
    assert "<h1>Trend of torch-ref across 5 releases</h1>" in out.read_text()
    assert main(["history", "trend", "--db", str(db), "--adapter", "nope"]) == 2
    assert "no run in the series has the adapter 'nope'" in capsys.readouterr().err


def test_a_run_without_the_adapter_is_no_release_of_it(tmp_path):
    # 2023-12 ran other implementations only: the adapter's trend starts after it.
    db = store(tmp_path, ("2024-01", {"SHAPE-SAME": "passed"}, {}),
               ("2024-06", {"SHAPE-SAME": "passed"}, {}))
    other = make_run("run-other", "2023-12-01T00:00:00+00:00", clauses=[
        {"id": c, "kind": "k", "title": c} for c in CLAUSES], suite_version="0.2.0")
    other["spec"]["sha256"] = "ab" * 32
    history.add(write_results(tmp_path / "other", other,
                              [rec("SHAPE-SAME", "numpy-oracle", "passed", run_id="run-other")]),
                db, label="2023-12")
    t = trend.build(db, ADAPTER)
    assert [c.release for c in t.columns] == ["2024-01", "2024-06"]
    assert t.changes == [], "no clause 'appeared' for an adapter that simply was not run"


def test_failed_to_expected_failure_is_no_longer_failing_not_passing(tmp_path):
    db = store(tmp_path, ("a", {"SHAPE-SAME": ("failed", 3.0, "diverges")}, {}),
               ("b", {"SHAPE-SAME": ("xfailed", None, "known")}, {}))
    assert [(c.kind, c.before, c.after) for c in trend.build(db, ADAPTER).changes] == [
        ("no longer failing", "failed", "xfailed")]
