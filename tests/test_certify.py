"""``convlstm-conformance certify`` (core/certify.py), its levels (core/levels.py),
waivers, progress and the certificate page (reports/certificate.py).

Two real certify runs, restricted to the core level with few examples: a
correct implementation (tests/correct_variants.py) gets the level, a mutant
whose same padding is on the wrong side (tests/mutant_zoo.py) fails it.
"""
from __future__ import annotations

import json
import subprocess
import types
import sys
from pathlib import Path

import pytest

from convlstm_conformance import certify, progress
from convlstm_conformance.spec import DEFAULT_SPEC, SpecError, load

REPO = Path(__file__).resolve().parents[1]
REAL_TEXT = DEFAULT_SPEC.read_text(encoding="utf-8")
MUTANT = "tests.mutant_zoo:make.same_pad_wrong_side"


def run_certify(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "convlstm_conformance", "certify",
                           "--results-dir", str(out), "-n", "1", "--progress-every", "2", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    path = out / "certificate.json"
    return proc, (json.loads(path.read_text()) if path.exists() else None)


def verdicts(cert: dict) -> dict[str, str]:
    return {c["id"]: c["verdict"] for c in cert["clauses"]}


def level(cert: dict, name: str) -> dict:
    return next(lv for lv in cert["levels"] if lv["id"] == name)


# --------------------------------------------------------------------------
# Real runs


def test_a_correct_implementation_gets_the_core_level(tmp_path):
    proc, cert = run_certify(tmp_path, "--adapter-object", "tests.correct_variants:make.concat",
                             "--level", "core", "--examples", "3", "--require-level", "core")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cert["level"] == "core" and level(cert, "core")["met"]
    spec = load()
    for cid in spec.levels["core"].clauses:
        assert verdicts(cert)[cid] == "met", cid
        assert next(c for c in cert["clauses"] if c["id"] == cid)["examples"] > 0
    # Restricted to the level: the rest is said to be not judged, never met.
    assert verdicts(cert)["SEM-MASK"] == "not judged"
    # It declares less than every probed feature: its refusals were judged.
    assert verdicts(cert)["CAPABILITY-CLAIMS"] == "met"
    assert not level(cert, "standard")["met"]
    assert cert["spec"]["sha256"] == spec.sha256 and cert["spec"]["version"] == 1
    assert cert["implementation"]["capabilities"]["padding"] == ["same", "valid"]
    # Progress went to stderr while the suite ran.
    assert "tests, 0 failing" in proc.stderr and "(finished)" in proc.stderr
    html = (tmp_path / "out" / "certificate.html").read_text()
    assert "variant-concat" in html and "level <span" in html


@pytest.fixture(scope="module")
def mutant_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mutant")
    waivers = tmp / "waivers.yaml"
    waivers.write_text(
        "waivers:\n"
        "  - clause: SEM-SAME-EVEN-KERNEL\n"
        "    match: diverges\n"
        "    reason: the extra row of same padding goes top/left, as in release 1\n"
        "    link: https://example.org/issue/1\n"
        "  - clause: SHAPE-VALID\n"
        "    reason: a waiver no failure matches\n")
    return run_certify(tmp, "--adapter-object", MUTANT, "--level", "core", "--examples", "3",
                       "--waivers", str(waivers))


def test_a_wrong_implementation_fails_the_clause_and_the_level(mutant_run):
    proc, cert = mutant_run
    assert proc.returncode == certify.EXIT_FAILED, proc.stdout + proc.stderr
    v = verdicts(cert)
    # The mutant pads same+even kernels on the wrong side: every clause that
    # draws such a kernel fails; the waiver covers only its own clause.
    assert v["SEM-SAME-EVEN-KERNEL"] == "waived"
    assert v["SEM-WEIGHT-LAYOUT"] == "failed"
    assert cert["level"] is None and not level(cert, "core")["met"]
    unmet = {u["clause"]: u["verdict"] for u in level(cert, "core")["unmet"]}
    assert unmet["SEM-SAME-EVEN-KERNEL"] == "waived" and unmet["SEM-WEIGHT-LAYOUT"] == "failed"
    failure = next(f for f in cert["failures"] if f["clause"] == "SEM-WEIGHT-LAYOUT")
    assert failure["repro"].startswith("python -m convlstm_conformance repro ")
    assert failure["config"] and failure["errors"]
    assert "FAILED [SEM-WEIGHT-LAYOUT]" in proc.stdout and "reproduce:" in proc.stdout


def test_waivers_apply_and_a_stale_one_is_reported(mutant_run):
    proc, cert = mutant_run
    rows = {w["clause"]: w for w in cert["waivers"]}
    assert rows["SEM-SAME-EVEN-KERNEL"]["failures"] == 1
    assert not rows["SEM-SAME-EVEN-KERNEL"]["stale"]
    assert rows["SHAPE-VALID"]["stale"] and cert["stale_waivers"] == 1
    assert verdicts(cert)["SHAPE-VALID"] == "met"
    waived = next(f for f in cert["failures"] if f["clause"] == "SEM-SAME-EVEN-KERNEL")
    assert waived["verdict"] == "waived" and "release 1" in waived["note"]
    assert "STALE waiver" in proc.stdout
    html = (Path(cert["waiver_file"]).parent / "out" / "certificate.html").read_text()
    assert "stale" in html and "https://example.org/issue/1" in html


# --------------------------------------------------------------------------
# Waiver files


@pytest.mark.parametrize("text, line, fragment", [
    ("waivers:\n  - clause: NO-SUCH-CLAUSE\n    reason: r\n", 2, "unknown clause"),
    ("waivers:\n  - clause: SEM-STEP\n", 2, "needs a reason"),
    ("waivers:\n  - clause: SEM-STEP\n    reason: r\n    when: \"fmt ==\"\n", 2, "bad 'when'"),
    ("waivers:\n  - clause: SEM-STEP\n    reason: r\n    match: \"(\"\n", 2, "bad 'match'"),
    ("waivers:\n  - clause: SEM-STEP\n    reason: r\n    link: javascript:x\n", 2, "http"),
    ("waivers:\n  - {clause: '*', reason: r}\n", 2, "needs a 'when'"),
    ("waivers:\n  - clause: SEM-STEP\n    reason: r\n    because: x\n", 2, "unknown key"),
    ("adapter: x\nwaiver: []\n", 1, "'waivers' list"),
    ("waivers: {clause: SEM-STEP}\n", 1, "must be a list"),
    ("adapter: x\nwaivers: []\nextra: 1\n", 3, "unknown key"),
    ("waivers:\n  - clause: [SEM-STEP\n", 3, "YAML"),
])
def test_a_malformed_waiver_file_is_a_clear_error(tmp_path, text, line, fragment):
    path = tmp_path / "waivers.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        certify.load_waivers(path, load())
    assert info.value.line == line and fragment in info.value.reason, str(info.value)


def test_certify_refuses_a_malformed_waiver_file_before_running(tmp_path):
    path = tmp_path / "waivers.yaml"
    path.write_text("waivers:\n  - clause: SEM-STEPP\n    reason: typo\n")
    proc, cert = run_certify(tmp_path, "--adapter", "oracle", "--waivers", str(path))
    assert proc.returncode == certify.EXIT_USAGE and cert is None
    assert f"{path}:2: unknown clause 'SEM-STEPP'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_a_waiver_condition_reads_the_failures_minimal_configuration(tmp_path):
    spec = load()
    path = tmp_path / "w.yaml"
    path.write_text("waivers:\n  - clause: SEM-STEP\n    when: \"fmt == 'channels_first'\"\n"
                    "    reason: r\n")
    _, waivers = certify.load_waivers(path, spec)
    rec = {"clause": "SEM-STEP", "outcome": "failed", "message": "diverges",
           "config": {"filters": 1, "kernel_size": 1, "data_format": "channels_first"},
           "dims": {"batch": 1, "timesteps": 1, "rows": 2, "cols": 2, "channels": 1}}
    assert certify.waiver_for(spec, waivers, rec) is waivers[0]
    rec["config"]["data_format"] = "channels_last"
    assert certify.waiver_for(spec, waivers, rec) is None
    assert certify.waiver_for(spec, waivers, dict(rec, config=None)) is None


# --------------------------------------------------------------------------
# Verdicts from records


def rec(outcome: str, **fields) -> dict:
    return {"clause": "SEM-STEP", "outcome": outcome, **fields}


@pytest.mark.parametrize("records, verdict", [
    ([rec("passed", examples=8)], "met"),
    ([rec("passed"), rec("skipped")], "met"),
    ([rec("passed"), rec("failed")], "failed"),
    ([rec("error")], "failed"),
    ([rec("crashed")], "failed"),
    ([rec("xfailed", reason="known")], "failed"),
    ([rec("xpassed", expected=[{"failed": 0, "passed": 3}])], "met"),
    ([rec("xpassed", expected=[{"failed": 2, "passed": 3}])], "failed"),
    ([rec("skipped", reason="does not claim mask")], "not claimed"),
    ([], "not judged"),
])
def test_clause_verdicts(records, verdict):
    assert certify.clause_verdict(records, {})[0] == verdict


def test_a_waiver_does_not_hide_a_known_divergence_or_an_unwaived_failure():
    failing, other, known = rec("failed"), rec("failed"), rec("xfailed")
    w = types.SimpleNamespace(reason="waived")
    assert certify.clause_verdict([failing], {id(failing): w})[0] == "waived"
    assert certify.clause_verdict([failing, other], {id(failing): w})[0] == "failed"
    assert certify.clause_verdict([failing, known], {id(failing): w})[0] == "failed"


# --------------------------------------------------------------------------
# The page and the progress line


def test_the_certificate_page_escapes_what_the_implementation_wrote(tmp_path):
    from convlstm_conformance.reports.certificate import render
    cert = json.loads((REPO / "tests" / "data" / "certificate.json").read_text())
    evil = "<script>alert(1)</script>"
    cert["implementation"]["name"] = evil
    cert["implementation"]["versions"] = {evil: evil}
    cert["failures"][0]["message"] = evil
    cert["failures"][0]["config"] = {"activation": evil}
    cert["clauses"][0]["why"] = evil
    page = render(cert)
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_certificate_page_renders_through_the_reporters_entry_point(tmp_path):
    cert = json.loads((REPO / "tests" / "data" / "certificate.json").read_text())
    out = certify.render_html(cert, tmp_path / "c.html")
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_progress_counts_records_and_estimates_the_time_left(tmp_path):
    p = progress.Progress(tmp_path, started=0.0)
    assert p.line(now=5.0) == "0/? tests, 0 failing, 0:05 elapsed"
    (tmp_path / progress.COLLECTED).write_text('{"tests": 10}')
    (tmp_path / "results-gw0.jsonl").write_text(
        '{"outcome": "passed"}\n{"outcome": "failed"}\n{"outcome": "skipped"}\n{"outc')
    (tmp_path / "results-gw1.jsonl").write_text('{"outcome": "crashed"}\n')
    assert p.line(now=80.0) == "4/10 tests, 2 failing, 1:20 elapsed, about 2:00 left"


# --------------------------------------------------------------------------
# Levels in the spec


def test_the_spec_defines_core_standard_and_full():
    spec = load()
    assert list(spec.levels) == ["core", "standard", "full"]
    core, standard, full = spec.levels.values()
    assert set(core.clauses) < set(standard.clauses) < set(full.clauses)
    assert core.features["dtype"] == {"float32"} and core.features["padding"] == {"valid", "same"}
    assert {"strides", "dilation", "mask", "initial_state", "go_backwards",
            "gradients"} <= set(standard.features)
    judged = {c.id for c in spec.clauses.values() if c.kind != "erratum"}
    assert set(full.clauses) == judged


def broken_levels(tmp_path, levels: str) -> Path:
    text = REAL_TEXT[:REAL_TEXT.index("\nlevels:")] + "\nlevels:\n" + levels
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def line_of(path: Path, fragment: str) -> int:
    """The line of the levels section holding ``fragment``."""
    lines = path.read_text().splitlines()
    start = lines.index("levels:")
    return next(i for i, line in enumerate(lines[start:], start + 1) if fragment in line)


@pytest.mark.parametrize("levels, at, fragment", [
    ("  - id: core\n    title: t\n    clauses:\n      - SEM-STEP\n      - SEM-STEPP\n",
     "SEM-STEPP", "unknown clause 'SEM-STEPP'"),
    ("  - id: core\n    title: t\n    clauses: [SEM-STEP, DOC-UNROLL-ERRATUM]\n",
     "DOC-UNROLL", "erratum"),
    ("  - id: core\n    title: t\n    clauses: [SEM-STEP, SEM-STEP]\n", "SEM-STEP", "twice"),
    ("  - id: core\n    title: t\n    features: {masks: true}\n    clauses: [SEM-STEP]\n",
     "masks", "unknown feature 'masks'"),
    ("  - id: core\n    title: t\n    features: {mask: [on_call]}\n    clauses: [SEM-STEP]\n",
     "mask:", "takes true"),
    ("  - id: core\n    title: t\n    features: {padding: true}\n    clauses: [SEM-STEP]\n",
     "padding", "list of its values"),
    ("  - id: core\n    title: t\n    features: {padding: [vallid]}\n    clauses: [SEM-STEP]\n",
     "padding", "no value(s) ['vallid']"),
    ("  - id: core\n    title: t\n    features: {dtype: [float128]}\n    clauses: [SEM-STEP]\n",
     "float128", "no value(s)"),
    ("  - id: full\n    title: t\n    includes: core\n    clauses: all\n", "includes",
     "not a level defined above it"),
    ("  - id: core\n    title: t\n    clauses: [SEM-STEP]\n  - id: core\n    title: u\n"
     "    clauses: [SEM-STEP]\n", "u\n", "duplicate level id"),
    ("  - id: core\n    title: t\n    clauses: some\n", "clauses: some", "at levels/0/clauses"),
])
def test_a_malformed_level_is_refused_at_its_line(tmp_path, levels, at, fragment):
    path = broken_levels(tmp_path, levels)
    with pytest.raises(SpecError) as info:
        load(path)
    assert fragment in info.value.reason, str(info.value)
    # A duplicate level is pointed at by its entry, the line above its title.
    expected = line_of(path, "title: u") - 1 if "duplicate" in fragment else line_of(path, at)
    assert info.value.line == expected, str(info.value)
