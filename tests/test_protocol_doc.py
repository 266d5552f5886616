"""docs/worker-protocol.md covers the whole protocol: the capability table is
the one generated from core/features.py, what it says a case needs agrees
with required_features, and every metadata key and array name of case and
result files is documented."""
import copy
import importlib.util
import re
from pathlib import Path

import numpy as np

from convlstm_conformance import model
from convlstm_conformance.features import FEATURES, required_features
from convlstm_conformance.model import Call, Case

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "worker-protocol.md"


def _table_script():
    spec = importlib.util.spec_from_file_location("capability_table",
                                                  ROOT / "scripts" / "capability_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_capability_table_is_the_generated_one():
    script = _table_script()
    text = DOC.read_text(encoding="utf-8")
    assert script.block() in text, ("docs/worker-protocol.md's capability table is not the "
                                    "feature table's: run python scripts/capability_table.py "
                                    "--write")
    for f in FEATURES:
        assert f"| `{f.name}` |" in text


def _needs_of(mutate) -> dict:
    case = Case(config={"filters": 2, "kernel_size": 3}, inputs=np.zeros((1, 2, 4, 4, 1)))
    case = copy.deepcopy(case)
    mutate(case)
    return required_features(case)


#: For each capability, a change of a plain case that, as the table's last
#: column says, needs it (and the value it then needs).
NEEDED_BY = {
    "padding": (lambda c: c.config.update(padding="SAME"), "same"),
    "data_format": (lambda c: c.config.update(data_format="channels_first"), "channels_first"),
    "activation": (lambda c: c.config.update(activation=None), "linear"),
    "recurrent_activation": (lambda c: c.config.update(recurrent_activation="relu"), "relu"),
    "dtype": (lambda c: setattr(c, "dtype", "float64"), "float64"),
    "device": (lambda c: c.config.update(device="cuda"), "cuda"),
    "kernel_parity": (lambda c: c.config.update(kernel_size=2), "even"),
    "strides": (lambda c: c.config.update(strides=[1, 2]), True),
    "dilation": (lambda c: c.config.update(dilation_rate=[2, 1]), True),
    "no_bias": (lambda c: c.config.update(use_bias=False), True),
    "non_square": (lambda c: c.config.update(kernel_size=[3, 5]), True),
    "return_state": (lambda c: c.config.update(return_state=True), True),
    "return_sequences": (lambda c: c.config.update(return_sequences=True), True),
    "go_backwards": (lambda c: c.config.update(go_backwards=True), True),
    "mask": (lambda c: setattr(c, "mask", np.ones((1, 2), bool)), True),
    "initial_state": (lambda c: setattr(c, "initial_state", (np.zeros(1), np.zeros(1))), True),
    "stateful": (lambda c: c.followups.append(Call(np.zeros((1, 2, 4, 4, 1)))), True),
    "dropout": (lambda c: (c.config.update(recurrent_dropout=0.5), setattr(c, "training", True)),
                True),
    "dropout_injection": (lambda c: setattr(c, "dropout_mask", np.ones(1)), True),
    "gradients": (lambda c: setattr(c, "cotangent", np.ones(1)), True),
    "argument_validation": (lambda c: None, False),
    "masking_layer": (lambda c: setattr(c, "masking_value", 0.0), True),
    "serialization": (lambda c: setattr(c, "roundtrip", "config"), True),
    "mixed_precision": (lambda c: setattr(c, "dtype", "mixed_float16"), True),
    "symbolic_shapes": (lambda c: setattr(c, "unknown_dims", ["rows"]), True),
}


def test_what_the_table_says_a_case_needs_is_what_the_suite_requires():
    assert set(NEEDED_BY) == {f.name for f in FEATURES}, "a capability without its check here"
    plain = _needs_of(lambda c: None)
    assert not any(v is True for v in plain.values()), plain
    for name, (mutate, value) in NEEDED_BY.items():
        needs = _needs_of(mutate)
        changed = {k for k in needs if needs[k] != plain[k]}
        # A policy dtype also changes the dtype needed: that is its point.
        expected = {name, "dtype"} if name == "mixed_precision" else ({name} if value else set())
        assert changed == expected, (name, changed)
        assert needs[name] == value, (name, needs[name])


def test_every_key_and_array_of_case_and_result_files_is_documented():
    text = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"`([a-z_{}0-9-]+)`", text))
    keys = set(model.CASE_META_KEYS) | set(model.OUTCOME_META_KEYS)
    arrays = ({"inputs", "mask", "cotangent", "dropout_mask", "recurrent_dropout_mask",
               "initial_h", "initial_c", "followup{i}_inputs", "followup{i}_out{j}"}
              | set(model.WEIGHT_NAMES) | {f"grad_{n}" for n in model.GRAD_NAMES}
              | {f"weight_{n}" for n in model.WEIGHT_NAMES})
    values = set(model.UNKNOWN_DIMS) | {s for s in model.STRUCTURES if s} | set(model.STATUSES)
    missing = sorted((keys | arrays | values) - documented)
    assert not missing, f"docs/worker-protocol.md does not document {missing}"
