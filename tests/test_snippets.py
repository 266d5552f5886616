"""Standalone snippets (adapters/snippets.py): the script a maintainer pastes
into an upstream bug report fails on its own where the implementation really
diverges, passes where it conforms, and imports nothing of this project."""
from __future__ import annotations

import ast
import json
import subprocess
import sys

import numpy as np
import pytest

from convlstm_conformance import registry
from convlstm_conformance.adapters import snippets
from convlstm_conformance.model import Call, Case

# Runs snippets as __main__, one after the other in one process (a framework
# import costs seconds), and fails if one imported this project.
RUNNER = """
import contextlib, io, json, runpy, sys
results = []
for path in sys.argv[1:]:
    out = io.StringIO()
    sys.argv = [path]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code
    results.append([code, out.getvalue()])
leaked = sorted(m for m in sys.modules if m.startswith("convlstm_conformance"))
if leaked:
    print("the snippets imported", leaked)
    sys.exit(3)
print(json.dumps(results))
"""


def make_case(dtype: str = "float32", **config) -> Case:
    """A small case whose values are exact in float16, so in every dtype."""
    rng = np.random.default_rng(7)
    cfg = {"filters": 2, "kernel_size": [3, 3], "padding": "same", "return_state": True,
           "return_sequences": True, **config}
    cf = cfg.get("data_format") == "channels_first"

    def draw(*shape, scale=0.5):
        return np.round(rng.uniform(-scale, scale, shape) * 64) / 64

    x = draw(2, 3, 2, 4, 4) if cf else draw(2, 3, 4, 4, 2)
    return Case(config=cfg, inputs=x, kernel=draw(3, 3, 2, 8), recurrent_kernel=draw(3, 3, 2, 8),
                bias=draw(8), dtype=dtype)


def run_snippets(runs, tmp_path) -> list[tuple[int, str]]:
    """(exit status, printed text) of each (adapter, case)'s snippet."""
    paths = []
    for k, (adapter, case) in enumerate(runs):
        ok, why = registry.entry_for(adapter).available()
        if not ok:
            pytest.skip(f"{adapter}: {why}")
        text = snippets.snippet_for(adapter, case)
        assert text is not None
        # Not named like a module the snippet imports (flax.py would shadow flax).
        path = tmp_path / f"snippet_{k}_{adapter.replace('-', '_')}.py"
        path.write_text(text)
        paths.append(str(path))
    proc = subprocess.run([sys.executable, "-c", RUNNER, *paths], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [tuple(r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]


def assert_agrees(code: int, text: str) -> None:
    assert code == 0, text
    assert "agrees with the float64 reference" in text
    assert "python" in text and "numpy" in text      # the versions line


def assert_differs(code: int, text: str) -> None:
    assert code == 1, text
    assert "DIFFERS from the float64 reference" in text
    worst = next(line for line in text.splitlines() if line.endswith("DIFFERS"))
    got = float(worst.split("got ")[1].split(",")[0])
    want = float(worst.split("expected ")[1].split(",")[0])
    assert got != want      # both numbers, the wrong one and the right one


# Per framework: conforming cases (the snippet maps the weights as the adapter
# does, or the numbers would not agree) and real, known divergences
# (conformance/expectations/*.yaml), which the snippet must show on its own.
GROUPS = {
    "keras3-tensorflow": [("keras3-tensorflow", make_case(), True)],
    "keras3-jax": [("keras3-jax", make_case(go_backwards=True), True),
                   # Keras on JAX computes a float64 layer in float32.
                   ("keras3-jax", make_case("float64"), False)],
    "keras3-torch": [("keras3-torch", make_case(data_format="channels_first"), True)],
    "tf-keras": [
        # tf-keras's own default recurrent_activation is hard_sigmoid (a known divergence).
        ("tf-keras", make_case(recurrent_activation="sigmoid"), True),
        # Keras 2's hard_sigmoid is clip(0.2 x + 0.5), Keras 3's clip(x / 6 + 0.5).
        ("tf-keras", make_case(recurrent_activation="hard_sigmoid"), False)],
    "jax-cells-and-torch": [
        ("flax", make_case(go_backwards=True), True),
        ("haiku", make_case(data_format="channels_first", go_backwards=True), True),
        ("conv-lstm", make_case(go_backwards=True), True)],
}


@pytest.mark.parametrize("group", list(GROUPS))
def test_snippet_agrees_or_fails_on_its_own_as_the_implementation_does(group, tmp_path):
    runs = GROUPS[group]
    results = run_snippets([(a, c) for a, c, _ in runs], tmp_path)
    for (adapter, _, agrees), (code, text) in zip(runs, results):
        (assert_agrees if agrees else assert_differs)(code, f"{adapter}:\n{text}")


def test_cases_beyond_one_forward_call_get_no_snippet():
    case = make_case()
    case.followups = [Call(case.inputs)]
    assert snippets.snippet_for("keras3-tensorflow", case) is None
    assert snippets.snippet_for("oracle", make_case()) is None       # no snippet writer


def test_untrusted_config_stays_data():
    hostile = {"name": "x'); import os; os.system('boom') #\n\"", "n": float("nan"),
               "k": [1, 2], "b": None}
    source = snippets.literal(hostile)
    back = ast.literal_eval(source.replace("float('nan')", "0.5"))
    assert back["name"] == hostile["name"] and back["k"] == [1, 2]
    with pytest.raises(TypeError):
        snippets.literal(object())


def test_arrays_travel_exactly():
    a = np.random.default_rng(0).standard_normal((3, 5, 7))
    small = np.array([0.1, -2.5e-300, 3.0])
    ns = {"np": np}
    exec("import base64\n" + "def f64(data, shape):\n    return np.frombuffer("
         "base64.b64decode(data), dtype='<f8').reshape(shape).copy()", ns)
    assert np.array_equal(eval(snippets.array_literal(a), ns), a)
    assert np.array_equal(eval(snippets.array_literal(small), ns), small)
