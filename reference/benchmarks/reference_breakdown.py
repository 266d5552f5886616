#!/usr/bin/env python
"""Where the time of ref-torch's forward pass goes: convolutions or the rest.

Times ``torch_infer.forward_infer`` on a size of ``bench_speed.py`` as it
is, then with its convolutions taken out: ``torch.nn.functional.conv2d``
replaced by a lookup of results computed beforehand (same shapes and memory
layout, no arithmetic), and the C Winograd convolution (``conv3x3_in_c``) by
a call that leaves its output buffer as it is. The difference is the time in
the convolutions; what remains is gate arithmetic, copies and dispatch. Their
rate counts the direct convolution's work, so it can pass the float32 GEMM
rate measured in the same process only by an algorithm that does less
(Winograd's F(2x2, 3x3) multiplies 16/36 as often):

    .venv/bin/python reference/benchmarks/reference_breakdown.py            # S
    .venv/bin/python reference/benchmarks/reference_breakdown.py --size L --repeats 5
    .venv/bin/python reference/benchmarks/reference_breakdown.py --mode fwdbwd

The numbers are meaningful only for sizes that take the convolution-library
path (S and L; the fuzzer size runs one C call, no conv2d).

It then times the C gate arithmetic alone, on one batch slice's step with the
same shapes, and the float32 sigmoid it evaluates five times per cell element
(three gates, and tanh twice as 2 sigmoid(2x) - 1), and prints the lower bound
these give for a forward pass by direct convolution on this machine: the
convolutions' work at the GEMM rate plus five sigmoids per cell element, on
every core.  The Winograd path is not bound by it.

``--mode fwdbwd`` profiles forward+backward instead (the gradients of
bench_speed.py's fwdbwd row) on one core, with the batch in one slice so the
profiler sees every operator: CPU time of the forward convolutions, their
gradients (input and weight), copies, the cell forward and backward, and the
rest, with the rate of the first two (direct count) against torch's GEMM on
one thread.  Divided by the cores, the sum estimates the
parallel wall time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import bench_speed as bs  # noqa: E402
from convlstm_conformance.reference import (  # noqa: E402
    config as rc, torch_infer as ti, torch_plan as tp, torch_train as tt)


def setup(name: str):
    """(size, plan, canonical tensors) for a float32 CPU forward of a bench size."""
    import torch
    size = bs.SIZES[name]
    arrays = bs.canonical_arrays(size)
    spec = rc.parse_config(dict(filters=size["F"], kernel_size=size["k"],
                                padding=size["padding"]))
    geo = rc.geometry(spec, arrays["x"].shape)
    plan = tp.make_plan(spec, geo, torch.float32, torch.device("cpu"))
    return size, plan, {k: torch.from_numpy(v) for k, v in arrays.items()}


def reference_work(size: dict) -> float:
    """FLOP of the reference's convolutions in one forward: the direct count
    less the recurrent half of the first step, which it skips (h = 0)."""
    Ho, Wo = bs.out_hw(size)
    return bs.flops(size) - 2.0 * size["B"] * Ho * Wo * 4 * size["F"] * size["k"] ** 2 * size["F"]


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main(argv=None) -> int:
    import numpy as np
    import torch
    import torch.nn.functional as tf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="S", choices=sorted(bs.SIZES))
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--mode", default="fwd", choices=("fwd", "fwdbwd"))
    args = ap.parse_args(argv)
    if args.mode == "fwdbwd":
        return forward_backward_profile(args)
    size, plan, t = setup(args.size)

    def call():
        with torch.no_grad():
            ti.forward_infer(plan, t["x"], t["kernel"], t["recurrent_kernel"], t["bias"],
                             None, None, None)

    # torch_infer calls the C convolution by the name it imported.
    real, real_c = tf.conv2d, ti.conv3x3_in_c
    done: dict = {}
    used_c = []

    def looked_up(x, w, b=None, *rest, **kw):
        key = (tuple(x.shape), x.stride(), tuple(w.shape), b is None, rest, tuple(kw.items()))
        if key not in done:
            done[key] = real(x, w, b, *rest, **kw)
        return done[key]

    def skipped(*args, **kw):
        # The C convolution writes into a buffer the step then reads: leaving
        # it as it is costs nothing, and the gate kernel's time does not
        # depend on the values (no branches on them).
        used_c.append(1)

    full = median_ms(call, args.repeats)
    tf.conv2d, ti.conv3x3_in_c = looked_up, skipped
    try:
        rest = median_ms(call, args.repeats)
    finally:
        tf.conv2d, ti.conv3x3_in_c = real, real_c
    if not done and not used_c:
        print(f"size {args.size} computes no convolution apart (small problem path): "
              "nothing to split")
        return 1
    Ho, Wo = bs.out_hw(size)
    work = reference_work(size)
    conv = full - rest
    how = ("Winograd F(2x2, 3x3) in C" if plan.winograd is not None
           else "the library's conv2d")
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    gemm = 2 * 2048 ** 3 / (median_ms(lambda: a @ a, 5) / 1e3) / 1e9
    print(f"size {args.size}: forward {full:.1f} ms; without the convolutions {rest:.1f} ms "
          f"(gate arithmetic, copies, dispatch); convolutions {conv:.1f} ms for "
          f"{work / 1e9:.1f} GFLOP = {work / conv / 1e6:.0f} GFLOP/s (direct count; by "
          f"{how}); "
          f"numpy float32 GEMM 2048^3 here: {gemm:.0f} GFLOP/s; native kernel: "
          f"{'yes' if plan.native_gates is not None else 'no'}")
    if plan.native_gates is None:
        return 0
    gate_ns, sigmoid_ns = gate_costs(plan, args.repeats)
    cells = size["B"] * size["T"] * Ho * Wo * size["F"]
    cores = tp.part_count(plan)
    floor = 1e3 * work / (gemm * 1e9) + 1e-6 * cells * 5 * sigmoid_ns / cores
    print(f"gate arithmetic alone: {gate_ns:.2f} ns per cell element; one float32 sigmoid "
          f"{sigmoid_ns:.2f} ns, five per cell element {5 * sigmoid_ns:.2f} ns; "
          f"{cells / 1e6:.1f} M cell elements on {cores} core(s)")
    print(f"floor by direct convolution: {floor:.1f} ms (convolutions at the GEMM rate, "
          f"five sigmoids per cell element, nothing else); this forward is "
          f"{full / floor:.2f}x that")
    return 0


# Profiler operator names -> what they are in the training path of
# torch_train (its autograd Functions are named ConvStep and LSTMCell).
# A Function's own time is what it spends outside torch operators: the C
# Winograd kernels of the 3x3 path; the library's operators carry the rest.
PROFILE_PARTS = {
    "aten::mkldnn_convolution": "forward convolutions",
    "ConvStep": "forward convolutions",
    "aten::convolution_backward": "convolution gradients",
    "aten::addmm_": "convolution gradients",
    "ConvStepBackward": "convolution gradients",
    "aten::copy_": "copies (im2col slabs, states)",
    "LSTMCell": "cell forward",
    "LSTMCellBackward": "cell backward",
}
# The convolution parts and how many times the forward convolutions' work
# each does: the gradients are two convolutions' worth (input and weight).
GEMM_PARTS = {"forward convolutions": 1, "convolution gradients": 2}


def forward_backward_profile(args) -> int:
    import torch

    cores = torch.get_num_threads()
    torch.set_num_threads(1)       # one batch slice on this thread: the profiler sees it all
    try:
        return _profile_one_core(args, cores)
    finally:
        torch.set_num_threads(cores)


def _profile_one_core(args, cores: int) -> int:
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    size, plan, t = setup(args.size)
    if tp.part_count(plan) != 1:
        print(f"size {args.size} runs in several batch slices even on one thread")
        return 1
    Ho, Wo = bs.out_hw(size)
    cot = torch.ones((size["B"], Ho, Wo, size["F"]))

    def call():
        tt.forward_backward(plan, t["x"], t["kernel"], t["recurrent_kernel"], t["bias"],
                            None, None, None, cot)

    wall = median_ms(call, max(1, args.repeats // 3))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    parts: dict = {}
    for e in prof.key_averages():
        name = PROFILE_PARTS.get(e.key, "other")
        parts[name] = parts.get(name, 0.0) + e.self_cpu_time_total / 1e3
    total = sum(parts.values())
    work = reference_work(size)
    a = torch.from_numpy(np.random.default_rng(0).standard_normal((2048, 2048), np.float32))
    gemm = 2 * 2048 ** 3 / (median_ms(lambda: a @ a, 3) / 1e3) / 1e9   # torch: one thread
    print(f"size {args.size} forward+backward on one core: {wall:.0f} ms a call; profiled "
          f"{total:.0f} ms of CPU time; torch float32 GEMM 2048^3 on one core: "
          f"{gemm:.0f} GFLOP/s")
    for name in list(dict.fromkeys(PROFILE_PARTS.values())) + ["other"]:
        ms = parts.get(name, 0.0)
        part_work = GEMM_PARTS.get(name, 0) * work
        rate = (f", {part_work / 1e9:.1f} GFLOP = {part_work / ms / 1e6:.0f} GFLOP/s"
                if part_work and ms > 0 else "")
        print(f"  {name}: {ms:.1f} ms{rate}")
    at_gemm = 3e3 * work / (gemm * 1e9)
    print(f"on {cores} cores: about {total / cores:.0f} ms; the GEMM parts at the GEMM rate "
          f"alone {at_gemm / cores:.0f} ms, everything else now "
          f"{(total - sum(parts.get(n, 0.0) for n in GEMM_PARTS)) / cores:.0f} ms")
    return 0


def gate_costs(plan, repeats: int) -> tuple[float, float]:
    """ns per cell element of the C gate kernel on one batch slice's step
    (L2-sized or not, as in the forward), and ns per element of the kernel's
    float32 sigmoid over the same number of values."""
    import numpy as np
    import torch
    from convlstm_conformance.reference import native

    g = plan.geo
    rows = -(-g.B // tp.part_count(plan))
    F = plan.spec.filters
    gen = torch.Generator().manual_seed(0)
    z = torch.randn((rows, g.Ho, g.Wo, 4 * F), generator=gen, dtype=plan.dtype) * 2
    c = torch.randn((rows, g.Ho, g.Wo, F), generator=gen, dtype=plan.dtype)
    h = torch.empty_like(c)
    n = c.numel()
    step = median_ms(lambda: tp.gates_in_c(plan, z, c, h, None), repeats * 5)
    v = (np.random.default_rng(0).standard_normal(n) * 4).astype(np.float32)
    lib = native.library()
    ptr = v.ctypes.data
    one = median_ms(lambda: lib.activation_f32(ptr, n, native.ACTIVATIONS["sigmoid"]),
                    repeats * 5)
    return 1e6 * step / n, 1e6 * one / n


if __name__ == "__main__":
    sys.exit(main())
