"""The case source of benchmarks/throughput.py draws what its README says."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import throughput  # noqa: E402


def _signature(case):
    return (repr(sorted(case.config.items())), case.inputs.shape, case.dtype)


def test_cases_stay_fuzzer_sized():
    source = throughput.CaseSource(seed=1)
    for _ in range(30):
        B, T = source.next().inputs.shape[:2]
        assert B <= throughput.LIMITS["batch"] and T <= throughput.LIMITS["timesteps"], (
            f"a throughput case of batch {B}, timesteps {T} exceeds {throughput.LIMITS}")


def test_data_per_config_repeats_the_configuration_with_fresh_data():
    source = throughput.CaseSource(seed=2, data_per_config=3)
    cases = [source.next() for _ in range(9)]
    for k in range(0, 9, 3):
        group = cases[k:k + 3]
        assert len({_signature(c) for c in group}) == 1, (
            f"cases {k}..{k + 2} should share configuration, shape and dtype")
        assert not np.array_equal(group[0].inputs, group[1].inputs), (
            "cases of one configuration must get fresh inputs")
        assert not np.array_equal(group[0].kernel, group[1].kernel), (
            "cases of one configuration must get fresh weights")
    assert len({_signature(cases[k]) for k in (0, 3, 6)}) > 1, (
        "after data_per_config cases a new configuration must be drawn")


def test_new_configuration_cpu_time_is_read_from_the_worker():
    """compile_cost reads the CPU time of the worker process that ran the case
    (not this process's), and compile_bound turns it into a rate."""
    from convlstm_conformance.worker import WorkerAdapter
    adapter = WorkerAdapter("oracle-in-a-worker", target="convlstm_conformance.adapters.oracle:NumpyOracle")
    try:
        assert throughput.cpu_seconds(adapter) is None, "no worker has started yet"
        source = throughput.CaseSource(seed=3, caps=adapter.capabilities())
        adapter.run(source.next())            # starts the worker
        cost = throughput.compile_cost(adapter, source, n=2)
        assert cost["new_config_cpu_s"] is not None and cost["new_config_cpu_s"] >= 0, cost
        assert throughput.cpu_seconds(adapter) > 0, "the worker has run cases: it used CPU"
    finally:
        adapter.close()
    costs = {"slow": {"new_config_s": 0.4, "new_config_cpu_s": 0.6, "same_case_again_s": 0.01},
             "quick": {"new_config_s": 0.01, "new_config_cpu_s": 0.01, "same_case_again_s": 0.01}}
    # Only the compiling adapter counts: 0.6 CPU-s on half the cases, 2 cores.
    assert throughput.compile_bound(costs, {"slow": 0.5, "quick": 1.0}, cores=2) == 2 / 0.3
    assert throughput.compile_bound({"quick": costs["quick"]}, {"quick": 1.0}, cores=2) is None
