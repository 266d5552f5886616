"""The installed core, as an adapter author gets it, without the repository.

The wheel is built from the checkout and installed with ``--no-deps`` into a
fresh virtual environment holding only the core's dependencies (no
framework: ``benchmarks/core_install.py`` builds it).  From a temporary
directory holding nothing but an adapter file of the author's, the suite runs
against that adapter, a buggy variant fails with a saved case, and the case
reproduces.  Separately, in the development environment where every
framework is installed, importing the core and listing the implementations
must import none of them.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import core_install  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "numpy_convlstm.py"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, console script, an author's directory) of a fresh core install."""
    root = tmp_path_factory.mktemp("core")
    wheel = core_install.build_wheel(root / "dist")
    python, _ = core_install.make_env(root / "env", wheel)
    author = root / "author"
    author.mkdir()
    shutil.copy(EXAMPLE, author / EXAMPLE.name)
    return python, python.parent / "convlstm-conformance", author, wheel


def _run(cmd, cwd, timeout=600):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=core_install.clean_env())


def test_wheel_holds_one_distinctive_top_level_package(installed):
    *_, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.startswith("convlstm_conformance-")}
    assert tops == {"convlstm_conformance"}, f"the wheel installs top-level {sorted(tops)}"
    for data in ("convlstm_conformance/specs/convlstm2d.yaml",
                 "convlstm_conformance/suite/expectations/keras3-jax.yaml",
                 "convlstm_conformance/suite/golden/keras_tutorial.yaml",
                 "convlstm_conformance/reports/templates/report.html.j2",
                 "convlstm_conformance/reference/native/winograd.c"):
        assert data in names, f"{data} is missing from the wheel"
    assert not [n for n in names if "/tests/" in n], "the project's tests must not ship"


def test_core_environment_has_no_framework(installed):
    python, _, author, _ = installed
    seen = core_install.frameworks_seen(python, author)
    assert seen == {"importable": [], "imported": []}, seen


def test_installed_core_lists_implementations(installed):
    _, cli, author, _ = installed
    proc = _run([cli, "adapters"], author)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert "available" in lines["oracle"], proc.stdout
    assert "not installed: keras, tensorflow" in lines["keras3-tensorflow"], proc.stdout


def test_author_certifies_an_adapter_from_their_directory(installed):
    _, cli, author, _ = installed
    proc = _run([cli, "run", "--adapters", "", "--adapter-object",
                 "numpy_convlstm:NumpyConvLSTM", "--results-dir", "good", "-n", "1"], author)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert (author / "good" / "report.html").stat().st_size > 1000
    records = [json.loads(line) for p in (author / "good").glob("results-*.jsonl")
               for line in p.read_text().splitlines()]
    passed = {r["clause"] for r in records if r["outcome"] == "passed"}
    assert {"SEM-STEP", "SEM-GO-BACKWARDS", "STRUCT-LAST-STATE"} <= passed, sorted(passed)
    assert {r["adapter"] for r in records} == {"numpy-convlstm"}


def test_author_reproduces_a_failure_without_the_repository(installed):
    python, cli, author, _ = installed
    proc = _run([cli, "run", "--adapters", "", "--adapter-object",
                 "numpy_convlstm:BuggyNumpyConvLSTM", "--results-dir", "bad", "-n", "1",
                 "--", "-k", "test_numerics and SEM-STEP"], author)
    assert proc.returncode == 1, proc.stdout[-4000:]
    assert "[SEM-STEP] numpy-convlstm-buggy: diverges from the oracle" in proc.stdout
    [failed] = [json.loads(line) for p in (author / "bad").glob("results-*.jsonl")
                for line in p.read_text().splitlines() if '"failed"' in line]
    repro = failed["repro"].split()
    assert repro[:3] == ["python", "-m", "convlstm_conformance"], failed["repro"]
    again = _run([python] + repro[1:], author)
    assert again.returncode == 1 and "FAIL [SEM-STEP]" in again.stdout, again.stdout + again.stderr
    # The same case passes on the correct adapter: the failure is the bug's.
    fixed = [python] + repro[1:]
    fixed[fixed.index("object:numpy_convlstm:BuggyNumpyConvLSTM")] = \
        "object:numpy_convlstm:NumpyConvLSTM"
    assert _run(fixed, author).returncode == 0


def test_core_imports_no_framework_where_all_are_installed():
    """In this (development) environment every framework is importable; the
    core, its plugin and the listing of every adapter must import none."""
    seen = core_install.frameworks_seen(Path(sys.executable), REPO)
    assert seen["imported"] == [], f"importing the core imported {seen['imported']}"
