"""The case source of benchmarks/throughput.py draws what its README says."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import throughput  # noqa: E402

# The native kernels' fixture: skips without a C compiler, fails if one is
# present but the kernels do not build.
from tests.test_native_kernel import lib  # noqa: E402, F401


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


def test_reference_breakdown_splits_the_time(capsys):
    """The split of benchmarks/README.md: convolutions and the rest add up."""
    import re
    pytest.importorskip("torch")
    import reference_breakdown
    assert reference_breakdown.main(["--size", "S", "--repeats", "1"]) == 0
    line = capsys.readouterr().out
    full, rest, conv = (float(v) for v in re.search(
        r"forward ([\d.]+) ms; without the convolutions ([\d.]+) ms.*convolutions ([\d.]+) ms",
        line).groups())
    assert 0 < rest < full and abs(full - rest - conv) < 0.2, line
    # The gate arithmetic and the floor it implies are reported beside the split.
    gate, sigmoid, five = (float(v) for v in re.search(
        r"gate arithmetic alone: ([\d.]+) ns.*sigmoid ([\d.]+) ns, five per cell element "
        r"([\d.]+) ns", line).groups())
    assert gate > 0 and sigmoid > 0 and abs(five - 5 * sigmoid) < 0.05, line
    floor = float(re.search(r"floor by direct convolution: ([\d.]+) ms", line).group(1))
    work, gemm = (float(v) for v in re.search(
        r"([\d.]+) GFLOP = .*GEMM 2048\^3 here: ([\d.]+) GFLOP/s", line).groups())
    cells, cores = (float(v) for v in re.search(
        r"([\d.]+) M cell elements on (\d+) core", line).groups())
    # Rebuilt from the printed (rounded) figures: the convolutions' work at the
    # GEMM rate plus five sigmoids per cell element on every core.
    expected = 1e3 * work / gemm + cells * five / cores
    assert abs(floor - expected) < 0.01 * expected, (floor, expected, line)


def test_reference_breakdown_profiles_forward_backward(capsys):
    """The forward+backward profile: every part reported and seen, the GEMM
    parts with their rate, and torch's thread count restored afterwards."""
    import re
    pytest.importorskip("torch")
    import torch
    import reference_breakdown
    threads = torch.get_num_threads()
    assert reference_breakdown.main(["--mode", "fwdbwd", "--repeats", "1"]) == 0
    assert torch.get_num_threads() == threads, "the profile left torch on one thread"
    out = capsys.readouterr().out
    assert re.search(r"profiled [\d.]+ ms of CPU time", out), out
    parts = {name: float(ms) for name, ms in re.findall(r"^  ([^:]+): ([\d.]+) ms", out, re.M)}
    expected = set(reference_breakdown.PROFILE_PARTS.values()) | {"other"}
    assert set(parts) == expected, out
    for name in reference_breakdown.PROFILE_PARTS.values():
        # A renamed operator or Function would fall into "other" unnoticed.
        assert parts[name] > 0, f"{name}: the profile saw no such operator\n{out}"
    for name in reference_breakdown.GEMM_PARTS:
        assert re.search(re.escape(name) + r": [\d.]+ ms, [\d.]+ GFLOP = \d+ GFLOP/s", out), out


def test_winograd_accuracy_reports_each_kind(capsys, lib):
    """The figures behind WINOGRAD_MIN_CHANNELS: every kind of data at the
    channel counts asked for, and dense data inside the bound where the
    reference uses the path."""
    import re
    pytest.importorskip("torch")
    import winograd_accuracy
    from adapters import reference_torch as rt
    K = rt.WINOGRAD_MIN_CHANNELS
    assert winograd_accuracy.main(["--channels", f"1,{K}"]) == 0
    rows = re.findall(r"K=\s*(\d+)\s+(.+?)\s+([\d.e+-]+|inf)$", capsys.readouterr().out, re.M)
    kinds = {name for _, name, _ in rows}
    assert len(kinds) == 5 and len(rows) == 10, rows
    dense = {int(k): float(v) for k, name, v in rows if name == "dense uniform"}
    assert dense[K] <= 1, f"dense data at {K} channels outside the bound: {dense}"


def test_new_configuration_cpu_time_is_read_from_the_worker():
    """compile_cost reads the CPU time of the worker process that ran the case
    (not this process's), and compile_bound turns it into a rate."""
    from adapters.worker import WorkerAdapter
    adapter = WorkerAdapter("oracle-in-a-worker", target="adapters.numpy_oracle:NumpyOracle")
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
