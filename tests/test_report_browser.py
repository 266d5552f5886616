"""The report in a real browser: the system's headless Chromium (reports/browser.py)
shows every implementation and clause of the run, logs no console error, and
its screenshot is saved under the test's tmp dir (.ci/run installs Chromium)."""
from __future__ import annotations

import pytest

from convlstm_conformance.reports import browser
from convlstm_conformance.reports.html import build

from .test_report_summary import hard_sigmoid_case, known
from .test_reports import make_run, rec, write_results

ADAPTERS = ["oracle", "tf-keras", "keras3-jax"]
CLAUSES = [{"id": c, "kind": "semantics", "title": f"{c} title"}
           for c in ("SEM-STEP", "SEM-ACTIVATIONS", "SEM-MASK", "ARG-FILTERS")]


@pytest.fixture
def report(tmp_path):
    out = tmp_path / "out"
    (out / "cases").mkdir(parents=True)
    hard_sigmoid_case().save(out / "cases" / "numerics-SEM-ACTIVATIONS-tf-keras.npz")
    adapters = {n: {"status": "available", "versions": {"pkg": "1.0"}} for n in ADAPTERS}
    adapters["mlx-port"] = {"status": "unavailable", "detail": "not installed"}
    recs = [rec(c["id"], "oracle", "passed", worst_ratio=0.1) for c in CLAUSES]
    recs += [rec("SEM-STEP", "tf-keras", "passed", worst_ratio=0.4),
             rec("SEM-ACTIVATIONS", "tf-keras", "failed", worst_ratio=40.0,
                 message="[SEM-ACTIVATIONS] tf-keras: diverges from the oracle",
                 config={"filters": 1, "recurrent_activation": "hard_sigmoid"},
                 errors={"output": {"max_abs": 4e-3, "budget": 1e-4, "ratio": 40.0}},
                 repro="python -m convlstm_conformance repro "
                       "out/cases/numerics-SEM-ACTIVATIONS-tf-keras.npz --adapter tf-keras"),
             rec("ARG-FILTERS", "tf-keras", "skipped", reason="not claimed")]
    recs += [known("keras3-jax", c["id"], "float64 computed in float32 "
                   "(https://github.com/jax-ml/jax/issues/1333)") for c in CLAUSES]
    write_results(out, make_run(adapters=adapters, clauses=CLAUSES, selected=ADAPTERS), recs)
    return build(out)[0]


def test_report_renders_in_headless_chromium(report, tmp_path):
    why = browser.missing()
    if why:
        pytest.skip(f"cannot drive the system Chromium: {why}")
    from selenium.webdriver.common.by import By

    drv = browser.open_report(report)
    try:
        lines = drv.find_elements(By.CSS_SELECTOR, "#summary tr.impl")
        assert [e.get_attribute("data-adapter") for e in lines] == ADAPTERS
        assert all(e.is_displayed() for e in lines)
        assert "does not conform" in lines[1].text and "25.0% (1 / 4)" in lines[1].text
        heads = drv.find_elements(By.CSS_SELECTOR, "table.matrix th.adapter")
        assert [e.text for e in heads] == ADAPTERS          # no mlx-port column
        shown = [e.text for e in drv.find_elements(By.CSS_SELECTOR, "table.matrix td.clause .mono")]
        assert shown == [c["id"] for c in CLAUSES]
        # The snippet is collapsed until asked for.
        snippet = drv.find_element(By.CSS_SELECTOR, "pre.snippet")
        assert not snippet.is_displayed()
        drv.find_element(By.CSS_SELECTOR, "details.snippet > summary").click()
        assert snippet.is_displayed() and "import tf_keras" in snippet.text
        # A matrix cell opens its details (the page's one script).
        drv.find_element(By.CSS_SELECTOR, "table.matrix td.cell a").click()
        drv.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000
        assert browser.console_errors(drv) == []
    finally:
        drv.quit()


def test_console_errors_are_seen(tmp_path):
    """The console check itself can fail: a page with a broken script."""
    why = browser.missing()
    if why:
        pytest.skip(f"cannot drive the system Chromium: {why}")
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><title>x</title><script>undefinedFunction();</script>")
    drv = browser.open_report(page)
    try:
        assert any("undefinedFunction" in e for e in browser.console_errors(drv))
    finally:
        drv.quit()
