"""Golden examples from the Keras documentation (conformance/golden/*.yaml).

Shapes are exactly the ones the tutorial printed; identical tensors must be
bit-equal; each layer's numbers are judged against the oracle, and each
layer's input is the previous layer's oracle output, so one wrong layer does
not blame the next.
"""
from pathlib import Path

import numpy as np
import pytest

from convlstm_conformance import harness, tolerance
from convlstm_conformance.features import required_features
from convlstm_conformance.model import Case
from convlstm_conformance.spec import _load_yaml
from convlstm_conformance.strategies import round_to

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def _examples():
    out = []
    for path in sorted(GOLDEN_DIR.glob("*.yaml")):
        doc = _load_yaml(path)
        for ex in doc["examples"]:
            out.append(pytest.param(path.name, ex, id=ex["id"]))
    return out


@pytest.mark.parametrize("source, example", _examples())
def test_golden(adapter_name, source, example, adapters, spec, record):
    adapter = adapters.get(adapter_name)
    record.update({"clause": example["clause"], "config": example["layers"][0]["config"]})
    assert example["clause"] in spec.clauses, f"{source}: unknown clause {example['clause']}"
    rng = np.random.default_rng(20240101)
    x = round_to(rng.random(example["input_shape"]), "float32")   # as np.random.random
    worst = 0.0
    for i, layer in enumerate(example["layers"]):
        cfg = dict(layer["config"])
        F, C = cfg["filters"], x.shape[-1]
        kh, kw = cfg["kernel_size"]
        s = np.sqrt(6.0 / (kh * kw * (C + F)))
        case = Case(config=cfg, inputs=x,
                    kernel=round_to(rng.uniform(-s, s, (kh, kw, C, 4 * F)), "float32"),
                    recurrent_kernel=round_to(rng.uniform(-s, s, (kh, kw, F, 4 * F)), "float32"),
                    bias=round_to(rng.uniform(-0.5, 0.5, 4 * F), "float32"))
        missing = adapter.capabilities().missing(required_features(case))
        if missing:
            pytest.skip(f"{adapter_name} does not claim {', '.join(missing)}")
        outcome = adapter.run(case)
        where = f"[{example['clause']}] {source}:{example['id']} layer {i + 1} on {adapter_name}"
        assert outcome.status == "ok", f"{where}: did not run: {outcome.summary()}"
        names = list(layer["returns"])
        got = dict(zip(names, outcome.outputs))
        assert len(outcome.outputs) == len(names), (
            f"{where}: returned {len(outcome.outputs)} tensors, the tutorial shows {len(names)} ({names})")
        for name, shape in layer["returns"].items():
            assert tuple(got[name].shape) == tuple(shape), (
                f"{where}: {name} has shape {tuple(got[name].shape)}, the tutorial prints {tuple(shape)}")
        for group in layer.get("identical", []):
            for other in group[1:]:
                assert np.array_equal(got[group[0]], got[other]), (
                    f"{where}: {group[0]} and {other} must be identical (tutorial: lstm_out == state_h)")
        verdict = harness.judge_for(adapter)(case, outcome)
        worst = max(worst, verdict.worst)
        record["worst_ratio"] = worst
        if not verdict.passed:
            b, t, r, c, ch = x.shape
            env = spec.environment(cfg, dict(batch=b, timesteps=t, rows=r, cols=c, channels=ch))
            env["dtype"] = "float32"
            harness.xfail_if_expected(spec, adapter_name, example["clause"],
                                      "diverges from the oracle\n" + verdict.describe(), env, record)
        assert verdict.passed, f"{where}: diverges from the oracle\n{verdict.describe()}"
        x = round_to(np.asarray(tolerance.oracle.forward(case).output), "float32")

