"""The record schema (core/records.py): what the recorder writes is checked
before it is written, what the report reads is checked when it is read, and
everything a test measured reaches the page."""
from __future__ import annotations

import json

from convlstm_conformance import records
from convlstm_conformance.recorder import Recorder
from convlstm_conformance.reports import records as report_records
from convlstm_conformance.reports.html import build


def _write(tmp_path, *recs):
    recorder = Recorder(tmp_path, "main", controller=True)
    recorder.start({"profile": "ci", "command": "pytest", "selected": ["x"],
                    "adapters": {"x": {"status": "available", "detail": ""}},
                    "spec": {"path": "s.yaml", "sha256": "0", "clauses": [{"id": "SEM-STEP"}]}})
    for rec in recs:
        recorder.write(rec)
    recorder.finish()
    return [json.loads(line) for line in (tmp_path / "results-main.jsonl").read_text().splitlines()]


BASE = {"nodeid": "conformance/test_numerics.py::test[x-SEM-STEP]", "clause": "SEM-STEP",
        "adapter": "x", "outcome": "passed", "duration_s": 0.5, "test": "numerics"}


def test_a_valid_record_is_written_as_is_and_read_back_whole(tmp_path):
    rec = dict(BASE, examples=8, worst_ratio=0.25, excused_draws=3,
               not_judged={"count": 2, "reasons": ["the oracle's values reach 1e+05"]},
               unclaimed_but_working=["mask"], refused=["dtype=float16: refused"],
               expected=[{"reason": "known", "clause": "SEM-STEP", "line": 4, "failed": 1,
                          "passed": 2}])
    [written] = _write(tmp_path, rec)
    assert written == dict(rec, schema=records.SCHEMA_VERSION, run_id=written["run_id"])
    loaded = report_records.load(tmp_path)
    [r] = loaded.records
    assert not loaded.warnings, loaded.warnings
    assert (r.examples, r.excused_draws, r.not_judged, r.unclaimed_but_working) == (
        8, 3, 2, ["mask"])
    assert r.not_judged_reasons == ["the oracle's values reach 1e+05"]


def test_a_record_that_breaks_the_schema_becomes_an_error_saying_why(tmp_path):
    # not_judged as a bare count: what one writer used to write.
    [written] = _write(tmp_path, dict(BASE, not_judged=3))
    assert written["outcome"] == "error"
    assert "breaks the record schema: not_judged: 3 is not of type 'object'" in written["message"]
    assert (written["clause"], written["adapter"]) == ("SEM-STEP", "x")


def test_run_record_is_checked(tmp_path):
    _write(tmp_path, BASE)
    run = json.loads((tmp_path / "run.json").read_text())
    assert records.problems(run, "run") == [] and run["finished"]
    run["finished"] = 5
    assert records.problems(run, "run")


def test_the_report_shows_what_was_not_judged_excused_or_unclaimed(tmp_path):
    _write(tmp_path, dict(BASE, examples=5, excused_draws=4,
                          not_judged={"count": 2, "reasons": ["bound past float64's range"]}),
           dict(BASE, nodeid="conformance/test_capabilities.py::test[x]",
                clause="CAPABILITY-CLAIMS", test="capabilities",
                unclaimed_but_working=["padding=same"], refused=["mask: refused"]))
    path, _ = build(tmp_path)
    page = path.read_text()
    for text in ("bound past float64&#39;s range", "Works but not claimed", "padding=same",
                 "Refused outside the claims", "mask: refused"):
        assert text in page, text


def test_the_reader_rejects_another_schema_version(tmp_path):
    rec = dict(BASE, schema=records.SCHEMA_VERSION + 1, run_id="r")
    (tmp_path / "results-gw0.jsonl").write_text(json.dumps(rec) + "\n")
    loaded = report_records.load(tmp_path)
    assert not loaded.records
    assert any("written under record schema 2" in w for w in loaded.warnings), loaded.warnings


def test_the_documentation_names_every_field_of_the_schema():
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[1] / "docs" / "records.md").read_text()
    for schema in (records.TEST_RECORD, records.RUN_RECORD):
        for name in schema["properties"]:
            assert f"`{name}`" in doc, f"docs/records.md does not document {name!r}"
