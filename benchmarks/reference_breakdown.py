#!/usr/bin/env python
"""Where the time of ref-torch's forward pass goes: convolutions or the rest.

Times ``reference_torch.forward_infer`` on a size of ``bench_speed.py`` as it
is, then with ``torch.nn.functional.conv2d`` replaced by a lookup of results
computed beforehand (same shapes and memory layout, no arithmetic). The
difference is the time in the library's convolutions; what remains is gate
arithmetic, copies and dispatch. Against the float32 GEMM rate measured in the
same process it shows how far the convolutions are from the machine's ceiling:

    .venv/bin/python benchmarks/reference_breakdown.py            # S
    .venv/bin/python benchmarks/reference_breakdown.py --size L --repeats 5

The numbers are meaningful only for sizes that take the convolution-library
path (S and L; the fuzzer size runs one C call, no conv2d).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from adapters import reference_torch as rt  # noqa: E402  (before torch: its OpenMP note)
import bench_speed as bs  # noqa: E402


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
    args = ap.parse_args(argv)
    size = bs.SIZES[args.size]
    arrays = bs.canonical_arrays(size)
    spec = rt.parse_config(dict(filters=size["F"], kernel_size=size["k"],
                                padding=size["padding"]))
    geo = rt.geometry(spec, arrays["x"].shape)
    plan = rt.make_plan(spec, geo, torch.float32, torch.device("cpu"))
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}

    def call():
        with torch.no_grad():
            rt.forward_infer(plan, t["x"], t["kernel"], t["recurrent_kernel"], t["bias"],
                             None, None, None)

    real = tf.conv2d
    done: dict = {}

    def looked_up(x, w, b=None, *rest, **kw):
        key = (tuple(x.shape), x.stride(), tuple(w.shape), b is None, rest, tuple(kw.items()))
        if key not in done:
            done[key] = real(x, w, b, *rest, **kw)
        return done[key]

    full = median_ms(call, args.repeats)
    tf.conv2d = looked_up
    try:
        rest = median_ms(call, args.repeats)
    finally:
        tf.conv2d = real
    if not done:
        print(f"size {args.size} does not use conv2d (small problem path): nothing to split")
        return 1
    Ho, Wo = bs.out_hw(size)
    # The reference skips the recurrent half of the first step (h = 0).
    work = bs.flops(size) - 2.0 * size["B"] * Ho * Wo * 4 * size["F"] * size["k"] ** 2 * size["F"]
    conv = full - rest
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    gemm = 2 * 2048 ** 3 / (median_ms(lambda: a @ a, 5) / 1e3) / 1e9
    print(f"size {args.size}: forward {full:.1f} ms; without the convolutions {rest:.1f} ms "
          f"(gate arithmetic, copies, dispatch); convolutions {conv:.1f} ms for "
          f"{work / 1e9:.1f} GFLOP = {work / conv / 1e6:.0f} GFLOP/s; "
          f"numpy float32 GEMM 2048^3 here: {gemm:.0f} GFLOP/s; native kernel: "
          f"{'yes' if plan.native_gates is not None else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
