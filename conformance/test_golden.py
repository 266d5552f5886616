"""Golden examples from the Keras documentation (conformance/golden/*.yaml).

Shapes are exactly the ones the tutorial printed; identical tensors must be
bit-equal; each layer's numbers are judged against the oracle, and each
layer's input is the previous layer's oracle output, so one wrong layer does
not blame the next.
"""
import functools
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


def fail(spec, record, results_dir, adapter_name: str, adapter, clause_id: str, case: Case,
         where: str, problem: str, outcome=None):
    """Fail with the suite's one-block message: the layer's case is saved and
    a command reproducing it given (a divergence is re-judged against the
    oracle, anything else against the clause)."""
    b, t, r, c, ch = case.inputs.shape
    path = harness.save_case(results_dir, f"golden-{where}-{adapter.name}", case)
    numbers = problem.startswith("diverges")
    repro = harness.repro_command(path, adapter_name, None if numbers else clause_id)
    message = harness.failure_message(
        spec, spec.clauses[clause_id], adapter.name, f"{where}: {problem}", case.config,
        dict(batch=b, timesteps=t, rows=r, cols=c, channels=ch), case.dtype, repro,
        outcome=outcome)
    record.update({"message": message, "repro": repro})
    raise harness.ConformanceFailure(message)


@pytest.mark.parametrize("source, example", _examples())
def test_golden(adapter_name, source, example, adapters, spec, record, results_dir):
    adapter = adapters.get(adapter_name)
    record.update({"clause": example["clause"], "config": example["layers"][0]["config"]})
    assert example["clause"] in spec.clauses, f"{source}: unknown clause {example['clause']}"
    clause_id = example["clause"]
    stop = functools.partial(fail, spec, record, results_dir, adapter_name, adapter, clause_id)
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
        where = f"{example['id']} layer {i + 1}"
        if outcome.status != "ok":
            stop(case, where, "did not run", outcome)
        names = list(layer["returns"])
        got = dict(zip(names, outcome.outputs))
        if len(outcome.outputs) != len(names):
            stop(case, where, f"returned {len(outcome.outputs)} tensors, the tutorial shows "
                              f"{len(names)} ({names})")
        for name, shape in layer["returns"].items():
            if tuple(got[name].shape) != tuple(shape):
                stop(case, where, f"{name} has shape {tuple(got[name].shape)}, the tutorial "
                                  f"prints {tuple(shape)}")
        for group in layer.get("identical", []):
            for other in group[1:]:
                if not np.array_equal(got[group[0]], got[other]):
                    stop(case, where, f"{group[0]} and {other} must be identical (tutorial: "
                         f"lstm_out == state_h)")
        verdict = harness.judge_for(adapter)(case, outcome)
        worst = max(worst, verdict.worst)
        record["worst_ratio"] = worst
        if not verdict.passed:
            b, t, r, c, ch = x.shape
            env = spec.environment(cfg, dict(batch=b, timesteps=t, rows=r, cols=c, channels=ch))
            env["dtype"] = "float32"
            harness.xfail_if_expected(spec, adapter_name, clause_id,
                                      "diverges from the oracle\n" + verdict.describe(), env, record)
            stop(case, where, "diverges from the oracle\n  "
                 + verdict.describe().replace("\n", "\n  "))
        x = round_to(np.asarray(tolerance.oracle.forward(case).output), "float32")

