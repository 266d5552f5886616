"""docs/certifying.md holds up: its worked weight mapping, run as printed,
computes what the oracle computes, and it documents every field of Case
and Outcome and every gradient key."""
import dataclasses
import re
from pathlib import Path

import numpy as np

from convlstm_conformance import oracle
from convlstm_conformance.model import GRAD_NAMES, Case, Outcome

DOC = Path(__file__).resolve().parent.parent / "docs" / "certifying.md"


def _example() -> dict:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- example: keras_to_torch -->\n```python\n(.*?)```\n"
                      r"<!-- end example -->", text, re.S)
    assert block, "docs/certifying.md lost its worked example"
    namespace: dict = {}
    exec(compile(block.group(1), str(DOC), "exec"), namespace)   # the doc's own code
    return namespace


def torch_style_convlstm(x, weight, bias, filters, activation=np.tanh):
    """The implementation the example maps into: one convolution (out, in,
    kh, kw) over cat([x, h]) with symmetric padding k // 2, output split
    i, f, o, g; x (B, T, H, W, C) channels_last."""
    B, T, H, W, _ = x.shape
    _, _, kh, kw = weight.shape
    sig = lambda z: 1 / (1 + np.exp(-z))
    h = c = np.zeros((B, H, W, filters))
    outs = []
    for t in range(T):
        xh = np.concatenate([x[:, t], h], axis=-1)
        xp = np.pad(xh, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
        z = np.zeros((B, H, W, 4 * filters)) + bias
        for a in range(kh):
            for b in range(kw):
                z += xp[:, a:a + H, b:b + W, :] @ weight[:, :, a, b].T
        i, f, o = (sig(z[..., k * filters:(k + 1) * filters]) for k in range(3))
        g = activation(z[..., 3 * filters:])
        c = f * c + i * g
        h = o * activation(c)
        outs.append(h)
    return np.stack(outs, axis=1)


def test_the_worked_mapping_computes_the_keras_layer():
    keras_to_torch = _example()["keras_to_torch"]
    rng = np.random.default_rng(7)
    F, C, kh, kw = 3, 2, 3, 5
    case = Case(config={"filters": F, "kernel_size": [kh, kw], "padding": "same",
                        "return_sequences": True},
                inputs=rng.normal(size=(2, 4, 5, 6, C)),
                kernel=rng.normal(size=(kh, kw, C, 4 * F)) * 0.3,
                recurrent_kernel=rng.normal(size=(kh, kw, F, 4 * F)) * 0.3,
                bias=rng.normal(size=4 * F), dtype="float64")
    weight, bias = keras_to_torch(case.kernel, case.recurrent_kernel, case.bias, F)
    assert weight.shape == (4 * F, C + F, kh, kw) and bias.shape == (4 * F,)
    got = torch_style_convlstm(case.inputs, weight, bias, F)
    want = oracle.forward(case).output
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_every_field_and_gradient_key_is_documented():
    text = DOC.read_text(encoding="utf-8")
    fields = ({f.name for f in dataclasses.fields(Case)}
              | {f.name for f in dataclasses.fields(Outcome)} | set(GRAD_NAMES))
    missing = sorted(name for name in fields if f"`{name}`" not in text)
    assert not missing, f"docs/certifying.md does not document {missing}"
