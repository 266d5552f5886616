"""The fast reference ConvLSTM2D, in PyTorch (CPU and CUDA).

Same contract as the float64 oracle (Keras 3 semantics, see
``specs/convlstm2d.yaml``), written for speed instead of clarity.  Inference:

* Tensors stay physically NHWC (PyTorch "channels_last"): oneDNN's fastest CPU
  convolution layout, and the layout in which a gate block is a slice of the
  last axis, so no transposes happen inside the loop.
* The four gates share one recurrent convolution with 4F output channels.
* The input convolution is hoisted out of the time loop where that helps: one
  GEMM over many frames.  Hoisting pays where one time step is too small a GEMM
  to run efficiently; past ``CHUNK_ROWS`` output positions a chunk is already
  efficient and more only costs memory (4F channels per position), so frames
  are projected in chunks of about that size: all B*T frames at once for small
  problems, one step at a time for big ones.
* Big problems whose input convolution has the recurrent one's geometry
  (stride 1, no dilation, 'same': the common case) go one step further: x_t
  rides along as C extra channels of the state buffer, and a single
  convolution over F+C channels yields the whole pre-activation.
* The state lives inside a zero-bordered buffer, so the recurrent 'same'
  convolution (odd or even kernel) needs no per-step padding copy; without an
  initial state the first step skips the recurrent convolution (h = 0).
* The gate arithmetic runs in place on the convolution's output, on
  preallocated buffers; on the CPU in float32, tanh is computed as
  2*sigmoid(2x) - 1 (see :func:`.torch_plan.make_plan`).  Without a mask, and where the C
  kernels of ``reference/native`` are available, a step's gate arithmetic is
  one C call (``torch_plan.gates_in_c``) reading and writing every position once,
  where the operators make ten passes over megabytes.
* Big float32 problems with 3x3 kernels compute the recurrent convolution (and
  the input one where x_t rides along, see ``torch_infer._infer``) by Winograd's
  F(2x2, 3x3) in C (``reference/native/winograd.c``, ``torch_plan.conv3x3_in_c``):
  16 multiplications per 2x2 output tile where direct convolution takes 36.
  The direct convolution already ran at the machine's GEMM rate, so no
  formulation of it could go faster.  The training path's per-step
  convolution takes it too, with its input and weight gradients (ConvStep).
  Its rounding is not that of a summation order: see
  ``torch_plan.WINOGRAD_MIN_CHANNELS`` for where it is used and why.
* Small problems replace the library convolution by im2col GEMMs and run on
  one thread: oneDNN's per-call overhead (~50 us) and OpenMP's fork/join
  dominate at those sizes, so that path is written for operator count.  Where
  a C compiler is available, small maskless float32/float64 inference with
  few filters and the common activations runs instead as one call of a C
  kernel (``reference/native``, see :data:`NATIVE_MAX_FILTERS`): at fuzzer
  sizes even a few operator dispatches cost more than the arithmetic.  Big
  problems on several cores run one batch slice per core instead of splitting
  every operator (see ``torch_plan.run_parts``).

Training and gradients run an out-of-place path under autograd, with two
hand-written backward passes: the fused gate arithmetic (one contiguous
gradient for the four gates; one C call each way where ``reference/native``
is available) and the per-step convolution (oneDNN for the input gradient,
one GEMM for the weight gradient).

Modules: :mod:`.torch_plan` (the plan and shared helpers), :mod:`.torch_infer`
(inference), :mod:`.torch_train` (training and gradients), :mod:`.native`
(the C kernels); the configuration handling both backends share is
:mod:`.config`, the run protocol :mod:`.runner`.  Torch itself is imported
lazily (:func:`import_torch`).
"""
from __future__ import annotations

import numpy as np

from convlstm_conformance.model import Case
from convlstm_conformance.reference import native
from convlstm_conformance.reference.config import Geometry, LayerSpec, dropout_active
from convlstm_conformance.reference.runner import ReferenceRunner
from convlstm_conformance.reference.torch_infer import forward_infer
from convlstm_conformance.reference.torch_plan import make_plan
from convlstm_conformance.reference.torch_train import draw_masks, forward_backward


def import_torch():
    """Import torch for the reference: with OpenMP's passive wait policy.

    PyTorch's CPU kernels run on OpenMP, whose threads by default spin after
    every parallel region.  On a machine shared with other work a spinning
    thread steals the core a descheduled peer needs, and a forward pass runs
    two to three times slower than on one thread.  Passive waiting costs a
    few microseconds per region on an idle machine.  libgomp reads the policy
    once, when torch loads it, so it is set for that import only and then
    removed: the process's environment (and its children's) is left as it
    was.  A user's own setting, or a torch already imported, is left alone.
    """
    import importlib
    import os
    import sys
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return importlib.import_module("torch")
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        return importlib.import_module("torch")
    finally:
        del os.environ["OMP_WAIT_POLICY"]


def _torch_dtype(name: str):
    import torch
    return {"float64": torch.float64, "float32": torch.float32,
            "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def _to_numpy64(t) -> np.ndarray:
    import torch
    return t.detach().to("cpu", torch.float64).numpy()


class TorchReference(ReferenceRunner):
    """The fast reference on PyTorch; ``device`` is "cpu" or "cuda"."""

    framework = "torch"

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        torch = import_torch()
        if device == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("ref-torch-cuda needs a CUDA GPU and torch built with CUDA")
            # TF32 would silently round convolution and matmul inputs to 10
            # mantissa bits; the reference must compute in the dtype it claims.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self._torch_device = torch.device(device)
        self._generator = torch.Generator()
        self._seed: int | None = None

    def versions(self) -> dict[str, str]:
        import torch
        out = {"torch": torch.__version__}
        if self.device == "cuda":
            out["cuda"] = str(torch.version.cuda)
        else:
            # Whether small problems ran on the C kernel, and if not why.
            out["native kernel"] = native.status()
        return out

    # -- the computation ------------------------------------------------
    def _compute(self, spec: LayerSpec, geo: Geometry, case: Case):
        import torch
        dtype = _torch_dtype(case.dtype)
        dev = self._torch_device
        plan = make_plan(spec, geo, dtype, dev)

        def tensor(a):
            return torch.as_tensor(np.asarray(a, dtype=np.float64)).to(dev, dtype)

        want_grads = case.cotangent is not None
        x = tensor(case.inputs)
        K = tensor(case.kernel)
        U = tensor(case.recurrent_kernel)
        bias = tensor(case.bias) if spec.use_bias else None
        key = self._state_key(spec, geo, case.dtype)
        if case.initial_state is not None:
            h0, c0 = (tensor(s) for s in case.initial_state)
        elif spec.stateful and key in self._state:
            h0, c0 = self._state[key]
        else:
            h0 = c0 = None
        mask = (torch.as_tensor(np.asarray(case.mask, dtype=bool)).to(dev)
                if case.mask is not None else None)
        use_in, use_rec = dropout_active(spec, case)

        if spec.seed is not None and spec.seed != self._seed:
            # A seeded layer draws a reproducible sequence of dropout masks.
            self._generator.manual_seed(spec.seed)
            self._seed = spec.seed
        if want_grads or use_in or use_rec:
            dm, rm = draw_masks(plan, spec, case, self._generator)
            dm = dm.to(dev, dtype) if dm is not None else None
            rm = rm.to(dev, dtype) if rm is not None else None
            cot = (tensor(_nhwc_numpy(case.cotangent, spec, time_axis=spec.return_sequences))
                   if want_grads else None)
            (out, h, c), got = forward_backward(plan, x, K, U, bias, h0, c0, mask, cot,
                                                dm, rm)
        else:
            with torch.no_grad():
                out, h, c = forward_infer(plan, x, K, U, bias, h0, c0, mask)

        grads = {}
        if want_grads:
            names = ["inputs", "kernel", "recurrent_kernel", "bias", "initial_h", "initial_c"]
            for name, arg, g in zip(names, (x, K, U, bias, h0, c0), got):
                if arg is None or (name.startswith("initial_") and case.initial_state is None):
                    continue
                grads[name] = (_to_numpy64(g) if g is not None
                               else np.zeros(arg.shape, dtype=np.float64))
        if spec.stateful:
            self._state[key] = tuple(_from_nhwc(s.detach(), spec, False).clone()
                                     for s in (h, c))
        outputs = [_to_numpy64(_from_nhwc(out, spec, spec.return_sequences)),
                   _to_numpy64(_from_nhwc(h, spec, False)),
                   _to_numpy64(_from_nhwc(c, spec, False))]
        return outputs, grads, [str(t.dtype).removeprefix("torch.") for t in (out, h, c)]


def _from_nhwc(t, spec: LayerSpec, time_axis: bool):
    """Physically-NHWC result -> the data_format layout (a view)."""
    if not spec.channels_first:
        return t
    return t.permute(0, 1, 4, 2, 3) if time_axis else t.permute(0, 3, 1, 2)


def _nhwc_numpy(a: np.ndarray, spec: LayerSpec, time_axis: bool) -> np.ndarray:
    if not spec.channels_first:
        return a
    return np.moveaxis(a, 2 if time_axis else 1, -1)
