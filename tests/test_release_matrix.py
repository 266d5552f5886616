"""The release matrix file (scripts/release_matrix.toml) and its runner's summary."""
from __future__ import annotations

import importlib.util
import json
from datetime import date
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("release_matrix",
                                               REPO / "scripts" / "release_matrix.py")
matrix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(matrix)
ADAPTERS, POINTS = matrix.load_points()


def pins(point) -> dict[str, str]:
    return dict(pin.split("==") for pin in point["pins"])


def test_points_are_in_release_order_and_span_three_years():
    labels = [p["label"] for p in POINTS]
    assert labels == sorted(labels) and len(set(labels)) == len(labels)
    first, last = (date.fromisoformat(label + "-01") for label in (labels[0], labels[-1]))
    assert (last - first).days >= 3 * 365 - 31


@pytest.mark.parametrize("point", POINTS, ids=lambda p: p["label"])
def test_each_point_pins_exact_releases_and_never_torch(point):
    assert all(pin.count("==") == 1 for pin in point["pins"]), point["pins"]
    found = pins(point)
    assert "torch" not in found, "torch stays 2.13.0: other builds are multi-GB CUDA wheels"
    if "jax" in found:
        assert found["jaxlib"] == found["jax"]
    if "tf-keras" in found:
        # tf-keras X.Y pairs with TensorFlow X.Y.
        assert found["tf-keras"].split(".")[:2] == found["tensorflow"].split(".")[:2]
    assert set(point["adapters"]) <= set(ADAPTERS) and "oracle" in point["adapters"]
    keras3 = found.get("keras", "").startswith("3.")
    assert keras3 or not any(a.startswith("keras3-") for a in point["adapters"]), \
        "without Keras 3 the keras3-* adapters would run Keras 2"


def test_a_bad_matrix_is_refused(tmp_path):
    bad = tmp_path / "m.toml"
    bad.write_text('adapters = ["oracle"]\n[[point]]\nlabel = "a"\npins = []\n'
                   '[[point]]\nlabel = "a"\npins = []\n')
    with pytest.raises(SystemExit, match="distinct label"):
        matrix.load_points(bad)


def test_summary_says_what_installed_and_why_not(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"adapters": {
        "oracle": {"status": "available"},
        "keras3-torch": {"status": "broken", "detail": "ImportError: torch too new"}}}))
    table = matrix.summary_table({"points": {
        "2024-03": {"pins": ["keras==3.0.5"], "installs": True, "runs": True,
                    "results": str(run), "versions": {"keras": "3.0.5"}, "cold_s": 50.0},
        "2023-12": {"pins": ["tensorflow==2.15.1"], "installs": False,
                    "reason": "No solution found\nbecause x"}}})
    lines = table.splitlines()
    assert lines[2].startswith("| 2023-12 | tensorflow 2.15.1 | no: No solution found because x")
    assert "keras3-torch broken (ImportError: torch too new)" in lines[3]
