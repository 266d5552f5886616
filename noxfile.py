"""One nox session per point of the release matrix (scripts/release_matrix.toml).

    nox -l                                   # the points
    nox -s "release(point='2024-07')"        # run the suite on one point's releases
    nox -s trend -- keras3-jax               # the trend of one implementation

nox rather than tox: the matrix is data in one TOML file, which nox reads as it
is, so no pin is written twice; and nox makes the environments with uv, whose
one cache (UV_CACHE_DIR, hard links) makes a second environment cost seconds.
Each session installs the checkout (editable), runs the ci profile into
reports/out/<point>/ and adds the run to reports/releases.sqlite under the
point's label.  scripts/release_matrix.py runs every point in a batch, from a
wheel of the committed HEAD, and measures time and disk per environment.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nox

_spec = importlib.util.spec_from_file_location(
    "release_matrix", Path(__file__).parent / "scripts" / "release_matrix.py")
matrix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(matrix)

_, POINTS = matrix.load_points()
DB = "reports/releases.sqlite"
nox.options.default_venv_backend = "uv"
os.environ.setdefault("UV_CACHE_DIR", str(matrix.HOME / "uv-cache"))
os.environ.setdefault("UV_LINK_MODE", "hardlink")
if os.environ.get("PIP_FIND_LINKS"):
    os.environ.setdefault("UV_FIND_LINKS", os.environ["PIP_FIND_LINKS"].replace(" ", ","))


@nox.session(python="3.11")
@nox.parametrize("point", [p["label"] for p in POINTS])
def release(session: nox.Session, point: str) -> None:
    spec = next(p for p in POINTS if p["label"] == point)
    session.install("-e", ".", matrix.torch_requirement(), *spec["pins"])
    out = f"reports/out/{point}"
    session.run("convlstm-conformance", "run", "--profile", "ci",
                "--adapters", ",".join(spec["adapters"]), "--results-dir", out, *session.posargs,
                success_codes=[0, 1])
    session.run("python", "-m", "convlstm_conformance.reports", "history", "add", out,
                "--db", DB, "--label", point)


@nox.session(python=False)
def trend(session: nox.Session) -> None:
    adapter = session.posargs[0] if session.posargs else "keras3-tensorflow"
    session.run("python", "-m", "convlstm_conformance.reports", "history", "trend",
                "--db", DB, "--adapter", adapter, "--html", f"reports/out/trend-{adapter}.html")
