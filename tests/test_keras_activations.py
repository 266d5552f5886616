"""The Keras adapters claim exactly the activations the installed release
accepts (adapters/keras_layer.py: TF_KERAS_ACTIVATIONS,
KERAS3_ACTIVATION_SINCE), read from package metadata, never by importing Keras
in the suite's process.  Claiming a name a release refuses fails every clause
that draws it; not claiming one it accepts hides its divergences (tf-keras's
leaky_relu, whose float64 slope is rounded to float32, was hidden so)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from convlstm_conformance.features import activations
from convlstm_conformance.adapters import keras_layer

# In a process of its own: Keras 3 fixes its backend at import.
_ACCEPTED = """
import importlib, json, sys
mod = importlib.import_module(sys.argv[1])
out = []
for name in json.loads(sys.argv[2]):
    try:
        mod.activations.get(name)
        out.append(name)
    except Exception:
        pass
print(json.dumps(out))
"""


def accepted_by(module: str) -> set[str]:
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _ACCEPTED, module,
                           json.dumps(sorted(activations()))],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("flavor, module", [("keras3", "keras"), ("tf_keras", "tf_keras")])
def test_claims_are_what_the_installed_release_accepts(flavor, module):
    pytest.importorskip(module.replace("-", "_"), reason=f"{module} is not installed")
    claimed = keras_layer.KerasConvLSTM(flavor, "tensorflow").capabilities().activation - {None}
    accepted = accepted_by(module)
    assert claimed == accepted, (f"{module}: claimed but refused {sorted(claimed - accepted)}, "
                                 f"accepted but not claimed {sorted(accepted - claimed)}")


def test_an_older_keras3_claims_only_what_it_had(monkeypatch):
    """Keras 3.4 refused celu, sparse_plus, ... ("Could not interpret activation
    function identifier"), as the release matrix's 2024-07 point showed."""
    monkeypatch.setattr(keras_layer, "_release", lambda package: (3, 4, 1))
    old = keras_layer.KerasConvLSTM("keras3", "torch").capabilities().activation
    assert not old & set(keras_layer.KERAS3_ACTIVATION_SINCE)
    assert {"tanh", "hard_silu", "gelu", None} <= old
    monkeypatch.setattr(keras_layer, "_release", lambda package: (3, 8, 0))
    mid = keras_layer.KerasConvLSTM("keras3", "torch").capabilities().activation
    assert "sparse_plus" in mid and "sparse_sigmoid" not in mid
    assert set(keras_layer.KERAS3_ACTIVATION_SINCE) <= set(activations()), \
        "a release table entry names no activation of the spec"
