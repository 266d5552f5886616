"""The reference as a package: its backends stay apart, and importing it
changes nothing process-wide (frameworks load lazily; torch's OpenMP policy
is set for torch's own import only; thread settings are restored)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

MODULES = {
    "torch": ["convlstm_conformance.reference.torch_ref", "convlstm_conformance.reference.torch_plan",
              "convlstm_conformance.reference.torch_infer",
              "convlstm_conformance.reference.torch_train"],
    "jax": ["convlstm_conformance.reference.jax_ref"],
}


def _python(code: str, env: dict | None = None) -> dict:
    import os
    full = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    full.update(env or {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=full).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("backend, other", [("torch", "jax"), ("jax", "torch")])
def test_a_backend_imports_nothing_of_the_other(backend, other):
    code = (f"import json, sys, importlib; [importlib.import_module(m) for m in {MODULES[backend]!r}]; "
            f"print(json.dumps(sorted(m for m in sys.modules if m in {MODULES[other]!r})))")
    assert _python(code) == [], f"importing the {backend} reference imported {other} modules"


def test_importing_the_reference_changes_nothing_process_wide():
    code = ("import json, os, sys, importlib; before = dict(os.environ); "
            f"[importlib.import_module(m) for m in {MODULES['torch'] + MODULES['jax']!r}]; "
            "importlib.import_module('convlstm_conformance.adapters.ref_torch'); "
            "importlib.import_module('convlstm_conformance.adapters.ref_jax'); "
            "print(json.dumps({'environ': dict(os.environ) == before, "
            "'frameworks': sorted(m for m in ('torch', 'jax') if m in sys.modules)}))")
    assert _python(code) == {"environ": True, "frameworks": []}


def test_torch_is_imported_with_the_passive_policy_and_the_environment_restored():
    code = ("import importlib, json, os\n"
            "from convlstm_conformance.reference.torch_ref import import_torch\n"
            "seen, real = [], importlib.import_module\n"
            "def spy(name, *a):\n"
            "    seen.append((name, os.environ.get('OMP_WAIT_POLICY')))\n"
            "    return real(name, *a)\n"
            "importlib.import_module = spy\n"
            "import_torch()\n"
            "print(json.dumps({'during': seen, 'after': os.environ.get('OMP_WAIT_POLICY')}))")
    got = _python(code)
    assert got == {"during": [["torch", "PASSIVE"]], "after": None}, got
    # A user's own setting is kept as it is.
    assert _python(code, {"OMP_WAIT_POLICY": "ACTIVE"}) == {
        "during": [["torch", "ACTIVE"]], "after": "ACTIVE"}


def test_running_the_reference_restores_torch_s_thread_count():
    torch = pytest.importorskip("torch")
    from convlstm_conformance.adapters.ref_torch import TorchReferenceAdapter
    from reference.tests.test_reference import BASE, make_case
    before = torch.get_num_threads()
    out = TorchReferenceAdapter("cpu").run(make_case(dict(BASE), dtype="float32"))
    assert out.status == "ok", out.summary()
    assert torch.get_num_threads() == before
    assert np.isfinite(out.outputs[0]).all()
