"""Tests of the report builder and results history, on small golden result sets."""
from __future__ import annotations

import json
import shutil
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from convlstm_conformance.reports import history, records
from convlstm_conformance.reports.__main__ import main
from convlstm_conformance.reports.html import build, link_segments, render

REPO = Path(__file__).resolve().parents[1]
HOSTILE = '<script>alert("x")</script>'


def make_run(run_id="run-1", started="2025-01-01T10:00:00+00:00", adapters=None, clauses=None,
             **extra):
    return {
        "run_id": run_id, "started": started, "finished": "2025-01-01T10:05:00+00:00",
        "profile": "ci", "command": "pytest conformance/ -n 2",
        "environment": {"python": "3.11.7", "platform": "Linux", "machine": "x86_64",
                        "cpu_count": 2},
        "adapters": adapters if adapters is not None else {
            "numpy-oracle": {"status": "available", "detail": "", "versions": {"numpy": "1.26.4"},
                             "capabilities": {"mask": True, "padding": ["same", "valid"]}},
            "torch-ref": {"status": "available", "detail": "", "versions": {"torch": "2.3.0"},
                          "capabilities": {"mask": False, "padding": ["same", "valid"]}},
            "mlx-port": {"status": "unavailable", "detail": "mlx not installed",
                         "versions": {}, "capabilities": {}},
        },
        "spec": {"path": "specs/convlstm2d.yaml", "sha256": "ab" * 32,
                 "clauses": clauses if clauses is not None else [
                     {"id": "SHAPE-SAME", "kind": "shape", "title": "same padding keeps H, W"},
                     {"id": "SEM-GO-BACKWARDS", "kind": "semantics", "title": "reverse time"},
                     {"id": "ARG-STRIDES-DILATION", "kind": "argument", "title": "not both"},
                 ]},
        **extra,
    }


def rec(clause, adapter, outcome, run_id="run-1", **extra):
    base = {"run_id": run_id, "nodeid": f"conformance/test_x.py::test[{clause}-{adapter}]",
            "clause": clause, "adapter": adapter, "outcome": outcome, "config": None,
            "dtype": "float32", "errors": {}, "worst_ratio": None, "message": "",
            "repro": None, "reason": None, "duration_s": 0.01, "examples": 1}
    base.update(extra)
    return base


def write_results(directory: Path, run: dict | None, *workers: list, raw_lines=()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if run is not None:
        (directory / "run.json").write_text(json.dumps(run))
    for i, lines in enumerate(workers):
        text = "".join(json.dumps(obj) + "\n" for obj in lines)
        if i == 0:
            text += "".join(raw + "\n" for raw in raw_lines)
        (directory / f"results-gw{i}.jsonl").write_text(text)
    return directory


def failing(clause="SHAPE-SAME", adapter="torch-ref", ratio=3.5, **extra):
    return rec(clause, adapter, "failed", worst_ratio=ratio,
               errors={"output": {"max_abs": 3.5e-5, "budget": 1e-5, "ratio": ratio},
                       "h": {"max_abs": 1e-7, "budget": 1e-5, "ratio": 0.01}},
               config={"filters": 2, "kernel_size": [3, 3], "padding": "same"},
               message="output differs", repro="python -m convlstm_conformance repro --case abc", **extra)


STANDARD = [
    rec("SHAPE-SAME", "numpy-oracle", "passed", worst_ratio=0.02),
    rec("SHAPE-SAME", "torch-ref", "passed", worst_ratio=0.3),
    failing(),
    rec("SEM-GO-BACKWARDS", "torch-ref", "xfailed",
        reason="go_backwards ignores mask, see https://github.com/example/port/issues/7."),
    rec("SEM-GO-BACKWARDS", "torch-ref", "passed", worst_ratio=0.5),
    rec("SEM-GO-BACKWARDS", "numpy-oracle", "skipped", reason="mask not claimed"),
    rec("ARG-STRIDES-DILATION", "numpy-oracle", "xpassed", reason="strict xfail"),
    rec("ARG-STRIDES-DILATION", "numpy-oracle", "xfailed", reason="known"),
]


@pytest.fixture
def standard(tmp_path):
    return write_results(tmp_path / "out", make_run(), STANDARD[:4], STANDARD[4:])


# -- records -----------------------------------------------------------------

def test_matrix_cell_status_follows_priority(standard):
    res = records.load(standard)
    m = res.matrix()
    assert m[("SHAPE-SAME", "torch-ref")].status == "failed"
    assert m[("SHAPE-SAME", "torch-ref")].counts == {"passed": 1, "failed": 1}
    assert m[("SHAPE-SAME", "numpy-oracle")].status == "passed"
    assert m[("SEM-GO-BACKWARDS", "torch-ref")].status == "xfailed"
    assert m[("SEM-GO-BACKWARDS", "numpy-oracle")].status == "skipped"
    assert m[("ARG-STRIDES-DILATION", "numpy-oracle")].status == "xpassed"
    assert ("SHAPE-SAME", "mlx-port") not in m
    assert m[("SHAPE-SAME", "torch-ref")].worst_ratio == 3.5
    assert res.totals() == {"passed": 3, "failed": 1, "xfailed": 2, "xpassed": 1, "skipped": 1}


def test_error_outranks_xpassed_and_failed_outranks_passed(tmp_path):
    d = write_results(tmp_path, make_run(), [
        rec("SHAPE-SAME", "torch-ref", "xpassed"), rec("SHAPE-SAME", "torch-ref", "error"),
        rec("SHAPE-SAME", "torch-ref", "passed"),
        rec("SEM-GO-BACKWARDS", "torch-ref", "skipped"),
        rec("SEM-GO-BACKWARDS", "torch-ref", "passed"),
    ])
    m = records.load(d).matrix()
    assert m[("SHAPE-SAME", "torch-ref")].status == "error"
    assert m[("SEM-GO-BACKWARDS", "torch-ref")].status == "passed"


def test_clause_and_adapter_order_from_run_json_then_extras(tmp_path):
    d = write_results(tmp_path, make_run(), [
        rec("ZZ-NEW", "torch-ref", "passed"), rec("SHAPE-SAME", "jax-ref", "passed")])
    res = records.load(d)
    assert [c.id for c in res.clauses] == ["SHAPE-SAME", "SEM-GO-BACKWARDS",
                                           "ARG-STRIDES-DILATION", "ZZ-NEW"]
    assert res.clauses[-1].in_spec is False
    assert [a.name for a in res.adapters] == ["numpy-oracle", "torch-ref", "mlx-port", "jax-ref"]
    assert res.adapters[-1].declared is False


def test_corrupt_lines_are_counted_not_fatal(tmp_path):
    good = rec("SHAPE-SAME", "torch-ref", "passed")
    truncated = json.dumps(rec("SHAPE-SAME", "torch-ref", "failed"))[:57]
    d = write_results(tmp_path, make_run(), [good], raw_lines=[
        truncated, "not json at all", "[1, 2]", "", json.dumps({"clause": "X", "adapter": "y"}),
        json.dumps(rec("SHAPE-SAME", "torch-ref", "exploded")),
    ])
    res = records.load(d)
    assert len(res.records) == 1
    assert res.skipped_lines == 5  # the blank line is not a problem
    [warning] = [w for w in res.warnings if "results-gw0.jsonl" in w]
    assert "5 unreadable lines skipped" in warning
    assert "line 2: not valid JSON" in warning
    assert "unknown outcome 'exploded'" in warning
    html = render(res)
    assert "5 unreadable result lines skipped" in html


def test_deeply_nested_json_is_a_skipped_line_and_a_warning(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    root = write_results(tmp_path / "r", None, [rec("SHAPE-SAME", "torch-ref", "passed")],
                         raw_lines=[deep])
    (root / "run.json").write_text(deep)
    results = records.load(root)
    assert len(results.records) == 1 and results.skipped_lines == 1
    assert any("line 2: JSON nested too deeply to read" in w for w in results.warnings)
    assert any("run.json is nested too deeply to read" in w for w in results.warnings)


def test_malformed_optional_fields_fall_back(tmp_path):
    d = write_results(tmp_path, make_run(), [rec(
        "SHAPE-SAME", "torch-ref", "failed", worst_ratio="big", examples=True, message=None,
        errors={"output": {"max_abs": 2.0, "budget": 1.0, "ratio": 2.0}, "h": "oops"})])
    res = records.load(d)
    [r] = res.records
    assert r.worst_ratio == 2.0  # recovered from the errors table
    assert r.examples is None and r.message == ""
    assert list(r.errors) == ["output"]
    assert any("3 malformed optional fields" in w for w in res.warnings)


def test_nan_and_inf_ratios_are_worst_and_render(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    (d / "run.json").write_text(json.dumps(make_run()))
    # Python's json writes NaN / Infinity literals; the loader must accept them.
    lines = [rec("SHAPE-SAME", "torch-ref", "failed", worst_ratio=float("nan")),
             rec("SHAPE-SAME", "torch-ref", "passed", worst_ratio=0.0),
             rec("SHAPE-SAME", "torch-ref", "failed", worst_ratio=float("inf")),
             rec("SHAPE-SAME", "torch-ref", "passed", worst_ratio=1e-9)]
    (d / "results-gw0.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = records.load(d)
    assert str(res.matrix()[("SHAPE-SAME", "torch-ref")].worst_ratio) == "nan"
    html = render(res)
    assert "NaN/∞" in html and "max NaN" in html
    assert '>1e-9<' in html  # the axis reaches down to the smallest ratio


def test_missing_run_json_is_a_warning(tmp_path):
    d = write_results(tmp_path, None, [rec("SHAPE-SAME", "torch-ref", "passed", run_id="r-9")])
    res = records.load(d)
    assert res.run.found is False and res.run.run_id == "r-9"
    assert any("run.json is missing" in w for w in res.warnings)
    html = render(res)
    assert "run.json is missing" in html and "SHAPE-SAME" in html


def test_invalid_run_json_is_a_warning_with_position(tmp_path):
    d = write_results(tmp_path, None, [rec("SHAPE-SAME", "torch-ref", "passed")])
    (d / "run.json").write_text('{"run_id": "run-1", ')
    res = records.load(d)
    assert any("not valid JSON (line 1" in w for w in res.warnings)


def test_nothing_to_report_raises(tmp_path):
    with pytest.raises(records.InputError, match="no such results directory"):
        records.load(tmp_path / "absent")
    with pytest.raises(records.InputError, match="nothing to report"):
        records.load(tmp_path)


def test_records_of_another_run_are_dropped(tmp_path):
    d = write_results(tmp_path, make_run(), [rec("SHAPE-SAME", "torch-ref", "passed"),
                                             rec("SHAPE-SAME", "torch-ref", "failed",
                                                 run_id="old-run")])
    res = records.load(d)
    assert [r.outcome for r in res.records] == ["passed"]
    assert any("1 records belong to another run ('old-run')" in w for w in res.warnings)


def test_unfinished_run_is_flagged(tmp_path):
    run = make_run()
    run["finished"] = None
    res = records.load(write_results(tmp_path, run, [rec("SHAPE-SAME", "torch-ref", "passed")]))
    assert any("did not finish" in w for w in res.warnings)


# -- HTML ----------------------------------------------------------------------

def test_report_lists_failures_with_config_errors_and_repro(standard):
    html = render(records.load(standard))
    failures = html[html.index('id="failures"'):html.index('id="skips"')]
    assert failures.count('class="failure') == 2  # the failure and the xpass
    assert "python -m convlstm_conformance repro --case abc" in failures
    assert '{\n  &#34;filters&#34;: 2,\n  &#34;kernel_size&#34;: [3, 3],' in failures  # escaped JSON
    assert re.search(r'<td class="num over">3\.5</td>', failures)
    assert re.search(r'<td class="num ">0\.01</td>', failures)
    assert "3.500e-05" in failures
    # The matrix links each cell to its details.
    assert 'href="#cell-0-1"' in html and 'id="cell-0-1"' in html
    assert 'class="cell s-failed"' in html and "1F 1P" in html
    assert "unavailable" in html  # the mlx-port column
    assert "numpy 1.26.4" in html and "torch 2.3.0" in html


def test_xfail_reason_links_only_http_urls(standard):
    html = render(records.load(standard))
    assert ('<a href="https://github.com/example/port/issues/7" rel="noopener noreferrer">'
            'https://github.com/example/port/issues/7</a>.') in html
    assert link_segments("see javascript:alert(1) or ftp://x") == [
        ("see javascript:alert(1) or ftp://x", None)]
    assert link_segments("(https://a.org/b), done") == [
        ("(", None), ("https://a.org/b", "https://a.org/b"), ("), done", None)]


def test_hostile_strings_are_escaped(tmp_path):
    attr = '" onmouseover="alert(1)'
    run = make_run(adapters={HOSTILE: {
        "status": "available", "detail": HOSTILE, "versions": {HOSTILE: attr},
        "capabilities": {HOSTILE: [HOSTILE]}}}, clauses=[
        {"id": "SHAPE-SAME", "kind": HOSTILE, "title": attr}])
    run["command"] = HOSTILE
    d = write_results(tmp_path, run, [
        rec("SHAPE-SAME", HOSTILE, "failed", worst_ratio=2.0, message=HOSTILE + attr,
            config={HOSTILE: attr, "x": "</pre><script>alert(2)</script>"},
            repro="pytest '" + HOSTILE + "'", nodeid=HOSTILE,
            errors={HOSTILE: {"max_abs": 1.0, "budget": 0.5, "ratio": 2.0}}),
        rec("SHAPE-SAME", HOSTILE, "xfailed", reason="javascript:alert(3) " + HOSTILE),
        rec(HOSTILE, HOSTILE, "skipped", reason=attr),
    ])
    html = render(records.load(d))
    # Exactly one script element: the page's own.
    assert html.count("<script") == 1
    assert "alert(" not in html.split("<script>")[1].split("</script>")[0]
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert 'onmouseover="alert' not in html
    assert "&#34; onmouseover=&#34;alert(1)" in html
    assert 'href="javascript' not in html
    assert "</pre><script>alert(2)" not in html


def test_report_is_self_contained(standard):
    html = render(records.load(standard))
    assert "<link" not in html
    assert not re.search(r'\bsrc=', html)
    assert "url(" not in html
    assert "<svg" in html and 'stroke="#cf222e"' in html  # plot with its budget line


def test_plot_places_budget_line_between_passes_and_failures(standard):
    from convlstm_conformance.reports.plot import strip_plot

    plot = strip_plot(records.load(standard))
    torch = next(s for s in plot.strips if s.adapter == "torch-ref")
    failed = [d for d in torch.dots if d.outcome == "failed"]
    passed = [d for d in torch.dots if d.outcome == "passed"]
    assert failed and all(d.x > plot.budget_x for d in failed)
    assert passed and all(d.x < plot.budget_x for d in passed)
    assert torch.over_budget == 1 and torch.total == 3
    assert plot.unplotted == 4  # records without worst_ratio


def test_build_writes_file(standard):
    out, res = build(standard)
    assert out == standard / "report.html"
    assert "SHAPE-SAME" in out.read_text()


# -- history -----------------------------------------------------------------

def two_runs(tmp_path):
    a = write_results(tmp_path / "a", make_run("run-a", "2025-01-01T10:00:00+00:00"), [
        rec("SHAPE-SAME", "torch-ref", "passed", run_id="run-a"),
        failing("SEM-GO-BACKWARDS", run_id="run-a"),
        rec("ARG-STRIDES-DILATION", "torch-ref", "xfailed", run_id="run-a"),
        rec("ARG-STRIDES-DILATION", "numpy-oracle", "passed", run_id="run-a"),
    ])
    adapters = make_run()["adapters"]
    adapters["torch-ref"]["versions"] = {"torch": "2.4.0"}
    adapters["mlx-port"]["status"] = "available"
    b = write_results(tmp_path / "b", make_run("run-b", "2025-02-01T12:00:00+01:00", adapters), [
        failing("SHAPE-SAME", run_id="run-b"),
        rec("SEM-GO-BACKWARDS", "torch-ref", "passed", run_id="run-b"),
        rec("ARG-STRIDES-DILATION", "torch-ref", "xpassed", run_id="run-b"),
        rec("SHAPE-SAME", "mlx-port", "passed", run_id="run-b"),
    ])
    return a, b


def test_history_add_is_idempotent(tmp_path):
    a, b = two_runs(tmp_path)
    db = tmp_path / "h.sqlite"
    assert history.add(a, db) == ("run-a", True)
    assert history.add(a, db) == ("run-a", False)
    assert history.add(b, db) == ("run-b", True)
    rows = history.runs(db)
    assert [r.run_id for r in rows] == ["run-a", "run-b"]
    assert rows[0].totals == {"passed": 2, "failed": 1, "xfailed": 1}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM cells WHERE run_id='run-a'").fetchone() == (4,)


def test_history_diff_finds_newly_failing_fixed_and_versions(tmp_path):
    a, b = two_runs(tmp_path)
    db = tmp_path / "h.sqlite"
    history.add(a, db)
    history.add(b, db)
    d = history.diff(db, "run-a", "run-b")
    pairs = lambda items: [(c.clause, c.adapter, c.before, c.after) for c in items]
    assert pairs(d.newly_failing) == [("SHAPE-SAME", "torch-ref", "passed", "failed")]
    assert pairs(d.newly_fixed) == [("SEM-GO-BACKWARDS", "torch-ref", "failed", "passed")]
    assert pairs(d.other_changes) == [("ARG-STRIDES-DILATION", "torch-ref", "xfailed", "xpassed")]
    assert pairs(d.added) == [("SHAPE-SAME", "mlx-port", None, "passed")]
    assert pairs(d.removed) == [("ARG-STRIDES-DILATION", "numpy-oracle", "passed", None)]
    assert [(v.adapter, v.package, v.before, v.after) for v in d.version_changes] == [
        ("torch-ref", "torch", "2.3.0", "2.4.0")]
    assert [(c.adapter, c.before, c.after) for c in d.adapter_changes] == [
        ("mlx-port", "unavailable", "available")]
    assert history.diff(db, "run-a", "run-a").empty
    # Prefixes resolve when unique; an exact id wins over a longer one it prefixes.
    long_b = tmp_path / "long-b"
    shutil.copytree(b, long_b)
    for path in long_b.iterdir():
        if path.suffix in (".json", ".jsonl"):
            path.write_text(path.read_text().replace('"run-b"', '"run-b-20261205"'))
    assert history.add(long_b, db) == ("run-b-20261205", True)
    by_prefix = history.diff(db, "run-a", "run-b-2")
    assert by_prefix.run_b == "run-b-20261205"
    assert by_prefix == history.diff(db, "run-a", "run-b-20261205")
    assert history.diff(db, "run-a", "run-b").run_b == "run-b"
    with pytest.raises(history.HistoryError, match="ambiguous"):
        history.diff(db, "run-", "run-b")
    with pytest.raises(history.HistoryError, match="no run 'nope'"):
        history.diff(db, "nope", "run-b")


def test_report_shows_changes_since_previous_run(tmp_path):
    a, b = two_runs(tmp_path)
    db = tmp_path / "h.sqlite"
    history.add(a, db)
    out, _ = build(b, tmp_path / "r.html", history_db=db)
    html = out.read_text()
    changes = html[html.index('id="changes"'):html.index('id="run"')]
    assert "Compared with run <code>run-a</code>" in changes
    newly = changes[changes.index("<h3>Newly failing</h3>"):changes.index("<h3>Newly fixed</h3>")]
    assert "SHAPE-SAME" in newly and "SEM-GO-BACKWARDS" not in newly
    assert "2.3.0" in changes and "2.4.0" in changes
    # The earlier run compared with a history holding only the later one: nothing earlier.
    history.add(b, db)
    html = build(a, tmp_path / "r2.html", history_db=db)[0].read_text()
    assert "holds no earlier run" in html


def test_history_rejects_foreign_database(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(history.HistoryError, match="not a usable history database"):
        history.runs(junk)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(history.HistoryError, match="not a results history"):
        history.runs(other)


# -- a hostile history database: every failure a HistoryError naming the file ---

def stored(tmp_path):
    """A history holding both runs of two_runs, and its path."""
    a, b = two_runs(tmp_path)
    db = tmp_path / "h.sqlite"
    history.add(a, db)
    history.add(b, db)
    return db, a


def _expect(db, action, pattern):
    with pytest.raises(history.HistoryError) as info:
        action()
    message = str(info.value)
    assert message.startswith(f"{db}: "), message
    assert re.search(pattern, message), message


def test_corrupt_pages_are_a_history_error(tmp_path):
    db, a = stored(tmp_path)
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) >= 3 * page, "the history should span several pages"
    data[page:] = bytes([0xA5]) * (len(data) - page)     # every page but the header's
    db.write_bytes(bytes(data))
    for action in (lambda: history.runs(db), lambda: history.diff(db, "run-a", "run-b"),
                   lambda: history.add(a, db)):
        _expect(db, action, r"corrupt history database \(database disk image is malformed\)"
                            r"|not a usable history database")


def test_a_read_only_history_refuses_writes_and_still_reads(tmp_path, monkeypatch):
    db, a = stored(tmp_path)
    if os.geteuid() == 0:
        # Permissions do not bind root: open the file as SQLite's read-only mode does.
        real = sqlite3.connect
        monkeypatch.setattr(history.sqlite3, "connect", lambda path, **kw: real(
            f"file:{path}?mode=ro", uri=True, **kw))
    else:
        db.chmod(0o444)
    _expect(db, lambda: history.add(a, db), r"cannot write the history database: it is "
                                            r"read-only")
    assert [r.run_id for r in history.runs(db)] == ["run-a", "run-b"]


def _add_many(db, results_dir, barrier, rounds):
    barrier.wait()
    for _ in range(rounds):
        history.add(results_dir, db)


def test_processes_adding_the_same_run_at_once_take_turns(tmp_path):
    import multiprocessing
    a, b = two_runs(tmp_path)
    db = tmp_path / "h.sqlite"
    history.add(b, db)                 # the schema exists; the race is on run-a
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_add_many, args=(db, a, barrier, 15)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0], "a concurrent add failed"
    assert sorted(r.run_id for r in history.runs(db)) == ["run-a", "run-b"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM cells WHERE run_id='run-a'").fetchone() == (4,)


def test_a_lock_held_too_long_is_a_history_error(tmp_path, monkeypatch):
    db, a = stored(tmp_path)
    monkeypatch.setattr(history, "LOCK_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        _expect(db, lambda: history.add(a, db), r"stayed locked by another process for 0.2 s")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert history.add(a, db) == ("run-a", False)


@pytest.mark.parametrize("sql, pattern", [
    ("UPDATE adapters SET versions = '{not json' WHERE run_id = 'run-a'",
     r"corrupt history database: run run-a, adapter .*: versions is not JSON"),
    ("UPDATE adapters SET versions = '[1, 2]' WHERE run_id = 'run-a'",
     r"versions is not a JSON object"),
    ("PRAGMA user_version = -3", r"history schema version -3 is not one this tool knows"),
    ("DROP TABLE cells", r"not a usable history database \(no such table: cells\)"),
])
def test_edited_rows_are_a_history_error(tmp_path, sql, pattern):
    db, _ = stored(tmp_path)
    with sqlite3.connect(db) as conn:
        conn.execute(sql)
    _expect(db, lambda: history.diff(db, "run-a", "run-b"), pattern)


def test_edited_totals_are_a_history_error(tmp_path):
    db, _ = stored(tmp_path)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET totals = 'x' WHERE run_id = 'run-b'")
    _expect(db, lambda: history.runs(db), r"run run-b: totals is not JSON")


def test_a_directory_as_history_is_a_history_error(tmp_path):
    db = tmp_path / "dir.sqlite"
    db.mkdir()
    _expect(db, lambda: history.runs(db), r"not a usable history database")
    a, _ = two_runs(tmp_path)
    _expect(db, lambda: history.add(a, db), r"not a usable history database")


def test_cli_reports_a_corrupt_history_with_exit_2(tmp_path, capsys):
    db, _ = stored(tmp_path)
    data = bytearray(db.read_bytes())
    data[4096:] = bytes(len(data) - 4096)
    db.write_bytes(bytes(data))
    assert main(["history", "list", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {db}: ") and "Traceback" not in err


# -- CLI -----------------------------------------------------------------------

def test_cli_build_and_history(tmp_path, capsys):
    a, b = two_runs(tmp_path)
    db = tmp_path / "h.sqlite"
    out = tmp_path / "report.html"
    assert main(["build", str(b), "-o", str(out)]) == 0
    assert out.exists() and "run-b" in out.read_text()
    assert "report.html: 1 failed, 1 xpassed, 2 passed" in capsys.readouterr().out
    assert main(["history", "add", str(a), "--db", str(db)]) == 0
    assert main(["history", "add", str(a), "--db", str(db)]) == 0
    assert "updated run run-a" in capsys.readouterr().out
    assert main(["history", "add", str(b), "--db", str(db)]) == 0
    assert "added run run-b" in capsys.readouterr().out
    assert main(["history", "list", "--db", str(db)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listing[1:]] == ["run-a", "run-b"]
    assert listing[2].endswith("1 failed, 1 xpassed, 2 passed")
    assert main(["history", "diff", "run-a", "run-b", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "newly failing (1):\n  SHAPE-SAME / torch-ref: passed -> failed" in text
    assert "torch-ref torch: 2.3.0 -> 2.4.0" in text
    assert main(["history", "diff", "run-a", "run-b", "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["newly_fixed"][0]["clause"] == "SEM-GO-BACKWARDS"


def test_cli_exit_codes_on_bad_input(tmp_path, capsys):
    assert main(["build", str(tmp_path / "absent")]) == 2
    assert "no such results directory" in capsys.readouterr().err
    assert main(["history", "list", "--db", str(tmp_path / "none.db")]) == 2
    assert "no such history database" in capsys.readouterr().err
    a, _ = two_runs(tmp_path)
    db = tmp_path / "h.sqlite"
    assert main(["history", "add", str(a), "--db", str(db)]) == 0
    assert main(["history", "diff", "run-a", "missing", "--db", str(db)]) == 2
    assert "no run 'missing'" in capsys.readouterr().err
    assert main(["build", str(a), "-o", str(tmp_path / "no-dir" / "r.html")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["history"])
    assert exc.value.code == 2


def test_python_dash_m_reports_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "reports", "build", str(tmp_path / "absent")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "absent" in proc.stderr
