"""The report's first screen (reports/summary.py): one line per implementation,
findings grouped, only the run's implementations under one name each, and a
standalone snippet for every failure with a saved case."""
from __future__ import annotations

import numpy as np

from convlstm_conformance.model import Case
from convlstm_conformance.reports import records, summary
from convlstm_conformance.reports.html import render

from .test_reports import make_run, rec, write_results

CLAUSES = [{"id": f"SEM-C{i}", "kind": "semantics", "title": f"clause {i}"} for i in range(20)]
LINK = "https://github.com/tensorflow/tensorflow/issues/48678"


def known(adapter: str, clause: str, reason: str) -> dict:
    return rec(clause, adapter, "xfailed", reason=reason,
               expected=[{"reason": reason, "clause": "*", "file": f"{adapter}.yaml", "line": 3,
                          "failed": 2, "passed": 0}])


def run_dir(tmp_path, records_, **run):
    adapters = {name: {"status": "available", "versions": {"pkg": "1.0"}}
                for name in ("oracle", "keras3-jax", "tf-keras")}
    adapters["mlx-port"] = {"status": "unavailable", "detail": "mlx not installed"}
    return write_results(tmp_path / "out", make_run(adapters=adapters, clauses=CLAUSES, **run),
                         records_)


def test_a_divergence_touching_twenty_clauses_is_one_finding(tmp_path):
    reason = "float64 computed in float32 (https://github.com/jax-ml/jax/issues/1333)"
    recs = [known("keras3-jax", f"SEM-C{i}", reason) for i in range(20)]
    # Two implementations, two wordings, one upstream issue: one finding.
    recs += [known("keras3-jax", "SEM-C3", f"Masking layer mask shape ({LINK})"),
             known("tf-keras", "SEM-C3", f"Masking: Inconsistent shapes ({LINK})")]
    res = summary.in_run(records.load(run_dir(tmp_path, recs, selected=["keras3-jax",
                                                                           "tf-keras"])))
    found = summary.findings(res)
    assert [f.kind for f in found] == ["expected", "expected"]
    wide, masking = found
    assert wide.clauses == [f"SEM-C{i}" for i in range(20)] and wide.adapters == ["keras3-jax"]
    assert wide.link == "https://github.com/jax-ml/jax/issues/1333"
    assert masking.adapters == ["keras3-jax", "tf-keras"] and len(masking.reasons) == 2
    html = render(records.load(run_dir(tmp_path, recs, selected=["keras3-jax", "tf-keras"])))
    section = html[html.index('id="xfails"'):html.index('id="changes"') if 'id="changes"' in html
                   else html.index('id="run"')]
    assert section.count('class="finding known"') == 2
    assert section.count("float64 computed in float32") == 1


def test_failures_group_by_message_without_numbers_and_stay_apart_otherwise(tmp_path):
    def fail(clause, first, adapter="tf-keras"):
        return rec(clause, adapter, "failed", message=f"[{clause}] {adapter}: {first}\n  x")
    recs = [fail("SEM-C1", "diverges from the oracle (ratio 3.5)"),
            fail("SEM-C2", "diverges from the oracle (ratio 120)"),
            fail("SEM-C3", "raised ValueError at call"),
            fail("SEM-C1", "diverges from the oracle (ratio 9)", adapter="keras3-jax")]
    found = summary.findings(summary.in_run(records.load(run_dir(tmp_path, recs))))
    groups = sorted((f.adapters[0], tuple(f.clauses)) for f in found)
    assert groups == [("keras3-jax", ("SEM-C1",)), ("tf-keras", ("SEM-C1", "SEM-C2")),
                      ("tf-keras", ("SEM-C3",))]


def test_one_line_per_implementation_counts_the_spec(tmp_path):
    recs = [rec("SEM-C0", "tf-keras", "passed"), rec("SEM-C1", "tf-keras", "passed"),
            rec("SEM-C1", "tf-keras", "skipped"),
            rec("SEM-C2", "tf-keras", "failed", message="[SEM-C2] tf-keras: diverges"),
            known("tf-keras", "SEM-C3", "hard_sigmoid differs"),
            rec("SEM-C3", "tf-keras", "passed"),
            rec("SEM-C4", "tf-keras", "skipped", reason="not claimed"),
            rec("SEM-C0", "oracle", "passed")]
    res = summary.in_run(records.load(run_dir(tmp_path, recs, selected=["oracle", "tf-keras"])))
    lines = {l.adapter.name: l for l in summary.implementation_lines(res, summary.findings(res))}
    tk = lines["tf-keras"]
    assert dict(tk.counts) == {"met": 2, "failed": 1, "expected": 1, "not claimed": 16}
    assert tk.total == 20 and tk.share == 0.1 and len(tk.findings) == 2 and not tk.conforms
    assert lines["oracle"].conforms and lines["oracle"].counts["met"] == 1
    html = render(records.load(run_dir(tmp_path, recs, selected=["oracle", "tf-keras"])))
    top = html[html.index('id="summary"'):html.index('id="findings"')]
    assert top.count('class="impl"') == 2 and "10.0% (2 / 20)" in top
    assert "does not conform" in top and "pkg 1.0" in top


def test_only_the_runs_implementations_under_one_name_each(tmp_path):
    key = "object:mypkg.conformance:MyAdapter"
    adapters = {"oracle": {"status": "available"},
                "mlx-port": {"status": "unavailable", "detail": "mlx not installed"},
                "mylstm": {"status": "available", "selected_as": [key]}}
    recs = [rec("SEM-C0", "oracle", "passed"), rec("SEM-C0", "mylstm", "passed"),
            # A crash record written before the adapter said its name.
            rec("SEM-C1", key, "crashed", message="the pytest worker process died")]
    d = write_results(tmp_path / "out", make_run(adapters=adapters, clauses=CLAUSES,
                                                 selected=["oracle", key]), recs)
    res = summary.in_run(records.load(d))
    assert [a.name for a in res.adapters] == ["oracle", "mylstm"]
    assert {r.adapter for r in res.records} == {"oracle", "mylstm"}
    html = render(records.load(d))
    matrix = html[html.index('id="matrix"'):html.index('id="plot"')]
    assert matrix.count('class="adapter"') == 2 and key not in matrix and "mlx-port" not in matrix
    assert "Registered but not in this run: mlx-port" in html


def hard_sigmoid_case() -> Case:
    rng = np.random.default_rng(3)
    q = lambda *s: np.round(rng.uniform(-0.5, 0.5, s) * 64) / 64   # noqa: E731
    return Case(config={"filters": 1, "kernel_size": [3, 3], "padding": "same",
                        "recurrent_activation": "hard_sigmoid"},
                inputs=q(1, 2, 3, 3, 1), kernel=q(3, 3, 1, 4), recurrent_kernel=q(3, 3, 1, 4),
                bias=q(4))


def test_every_failure_carries_its_standalone_snippet(tmp_path):
    out = tmp_path / "out"
    (out / "cases").mkdir(parents=True)
    hard_sigmoid_case().save(out / "cases" / "numerics-SEM-C0-tf-keras.npz")
    repro = ("python -m convlstm_conformance repro /elsewhere/cases/numerics-SEM-C0-tf-keras.npz "
             "--adapter tf-keras --clause SEM-C0")
    recs = [rec("SEM-C0", "tf-keras", "failed", message="[SEM-C0] tf-keras: diverges",
                repro=repro),
            # Records are untrusted: a path out of the results is not followed.
            rec("SEM-C1", "tf-keras", "failed", message="[SEM-C1] tf-keras: diverges",
                repro="python -m convlstm_conformance repro ../../../etc/passwd --adapter x")]
    html = render(records.load(run_dir(tmp_path, recs)))
    assert html.count('<details class="snippet">') == 1
    snippet = html[html.index('<pre class="snippet">'):]
    snippet = snippet[:snippet.index("</pre>")]
    assert "import tf_keras as keras" in snippet and "EXPECTED = {" in snippet
    assert "convlstm_conformance" not in snippet
    assert "&#34;recurrent_activation&#34;: &#34;hard_sigmoid&#34;" in snippet.replace(
        "&#39;", "&#34;")
    assert "No standalone snippet: no saved case." in html
