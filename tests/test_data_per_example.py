"""Compiling adapters run several cases (fresh weights and inputs) per example.

A new configuration costs an XLA-compiled adapter ~0.3 s and a further case on
it a few milliseconds, so each numerics and gradients example of those
adapters judges ``data_per_example`` cases on its configuration.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings

from convlstm_conformance import registry
from convlstm_conformance import harness

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name, n", [("flax", registry.COMPILED_DATA),
                                     ("keras3-jax", registry.COMPILED_DATA),
                                     ("ref-jax-cpu", registry.COMPILED_DATA),
                                     ("keras3-torch", 1), ("oracle", 1),
                                     ("an-adapter-from-elsewhere", 1)])
def test_data_draws_per_adapter(name, n):
    @settings(max_examples=10, database=None)
    @given(harness.data_draws(name))
    def check(data):
        assert len(data) == n, f"{name}: {len(data)} data draws per example, expected {n}"
        for seed, scale in data:
            assert isinstance(seed, int) and scale > 0

    check()


@pytest.mark.skipif(not registry.known("ref-jax-cpu").available()[0], reason="JAX not installed")
def test_each_example_judges_every_data_draw(tmp_path):
    """Through the suite: the record of a compiling adapter counts its judged
    cases, a whole multiple of data_per_example per example."""
    cmd = [sys.executable, "-m", "pytest", "conformance/test_numerics.py", "-q", "-p",
           "no:cacheprovider", "--profile", "ci", "--results-dir", str(tmp_path),
           "--adapters", "ref-jax-cpu", "-k", "SEM-STEP"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    records = [json.loads(line) for p in tmp_path.glob("results-*.jsonl")
               for line in p.read_text().splitlines() if line.strip()]
    step = [r for r in records if r.get("clause") == "SEM-STEP"]
    assert step, f"no SEM-STEP record in {records}"
    n = step[0]["examples"]
    assert n >= 2 * registry.COMPILED_DATA and n % registry.COMPILED_DATA == 0, (
        f"{n} cases judged: expected whole examples of {registry.COMPILED_DATA} cases each")
