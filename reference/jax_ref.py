"""The fast reference ConvLSTM2D, in JAX (CPU and CUDA).

The same contract and the same configuration handling as the PyTorch
reference (both use the framework-free :mod:`.config` and :mod:`.runner`),
computed by one XLA program per configuration:

* The input convolution is hoisted out of the time loop: one convolution over
  all B*T frames, with the bias folded in.
* The loop is a ``lax.scan`` whose body is one recurrent convolution with 4F
  output channels followed by the gate arithmetic, which XLA fuses into one
  loop.  Small problems use an im2col dot instead of the convolution: XLA's
  CPU convolution has a large fixed cost per call.
* Programs are compiled once per (config, shapes, dtype, call options) and
  cached, so repeated calls pay only dispatch, in two tiers (:class:`_Tiered`):
  quickly, with XLA's backend optimization off, for the first calls (a fuzzer
  calls most configurations once, and compiling is most of its cost), then
  fully optimized for a configuration called again and again.
* Gradients come from ``jax.vjp`` of the same function, compiled and cached
  the same way.

JAX and XLA are imported lazily.  Float64 runs inside ``jax.enable_x64``, so
the process's default precision is left alone.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from convlstm_conformance.model import Case
from convlstm_conformance.reference.config import Geometry, LayerSpec, dropout_active
from convlstm_conformance.reference.runner import ReferenceRunner

#: Compiled programs kept per adapter (least recently used are dropped).
CACHE_SIZE = 64
#: Problems whose per-step GEMM has at most this many rows (B*H'*W') use
#: im2col GEMMs; XLA's CPU dot is slow on bigger ones, its convolution on
#: smaller ones.
JAX_SMALL_ROWS = 512
#: Small problems with at most this many steps unroll the scan (make_forward).
UNROLL_STEPS = 16
#: Tiered compilation (:class:`_Tiered`) of small problems: a program is
#: first compiled with XLA's backend optimization off, and again with it on
#: once it has been called this many times.  At fuzzer size the quick tier
#: compiles in ~230 ms instead of ~400 ms and runs in ~330 us instead of
#: ~150 us, so the full tier pays for itself after ~1000 calls: a fuzzer calls
#: most configurations a few times, a benchmark or a training loop thousands.
#: Big problems compile fully at once: their run time dwarfs compiling, and
#: unoptimized fusions would cost more than it saves.
OPTIMIZE_AFTER = 1000
QUICK_OPTIONS = {"xla_backend_optimization_level": 0}


def jax_activation(name: str) -> Callable:
    """Activation ``name`` as Keras 3 defines it, on jax arrays."""
    import jax
    import jax.numpy as jnp

    def hard_sigmoid(x):
        return jnp.clip(x + 3.0, 0.0, 6.0) / 6.0

    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    table = {
        "tanh": jnp.tanh,
        "sigmoid": jax.nn.sigmoid,
        "hard_sigmoid": hard_sigmoid,
        "relu": jax.nn.relu,
        "relu6": lambda x: jnp.clip(x, 0.0, 6.0),
        "leaky_relu": lambda x: jnp.where(x >= 0, x, 0.2 * x),
        "elu": lambda x: jnp.where(x > 0, x, jnp.expm1(jnp.minimum(x, 0.0))),
        "selu": jax.nn.selu,
        "celu": lambda x: jnp.where(x > 0, x, jnp.expm1(jnp.minimum(x, 0.0))),
        "softplus": softplus,
        "softsign": lambda x: x / (1.0 + jnp.abs(x)),
        "squareplus": lambda x: (x + jnp.sqrt(x * x + 4.0)) / 2.0,
        "soft_shrink": lambda x: jnp.where(x > 0.5, x - 0.5,
                                           jnp.where(x < -0.5, x + 0.5, jnp.zeros_like(x))),
        "hard_shrink": lambda x: jnp.where(jnp.abs(x) > 0.5, x, jnp.zeros_like(x)),
        "tanh_shrink": lambda x: x - jnp.tanh(x),
        "hard_tanh": lambda x: jnp.clip(x, -1.0, 1.0),
        "sparse_plus": lambda x: jnp.where(x <= -1, jnp.zeros_like(x),
                                           jnp.where(x >= 1, x, 0.25 * (x + 1.0) ** 2)),
        "sparse_sigmoid": lambda x: jnp.where(x <= -1, jnp.zeros_like(x),
                                              jnp.where(x >= 1, jnp.ones_like(x),
                                                        0.5 * (x + 1.0))),
        "silu": jax.nn.silu,
        "swish": jax.nn.silu,
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "exponential": jnp.exp,
        "hard_silu": lambda x: x * hard_sigmoid(x),
        "hard_swish": lambda x: x * hard_sigmoid(x),
        "mish": lambda x: x * jnp.tanh(softplus(x)),
        "log_sigmoid": jax.nn.log_sigmoid,
        "linear": lambda x: x,
    }
    return table[name]


@dataclass(frozen=True)
class CallKey:
    """Everything a compiled program depends on besides array values."""

    spec: LayerSpec
    geo: Geometry
    dtype: str
    has_state: bool       # initial state given (or carried by a stateful layer)
    has_mask: bool
    input_dropout: bool
    recurrent_dropout: bool
    grads: bool


def _dtype(name: str):
    import jax.numpy as jnp
    return {"float64": jnp.float64, "float32": jnp.float32, "float16": jnp.float16,
            "bfloat16": jnp.bfloat16}[name]


def make_forward(key: CallKey) -> Callable:
    """The pure function computing one call: arrays in, (output, h, c) out.

    Signature: ``f(x, K, U, b, h0, c0, mask, dmask, rmask)``; absent optional
    arguments are passed as None (they are static in the key).  Arrays are in
    the canonical layouts; outputs in the case's data_format.

    How the pre-activations are computed depends on the problem, because
    XLA's CPU kernels have sharp edges:

    * small problems: the input projection of all B*T frames is hoisted into
      one im2col GEMM, and the recurrent convolution is an im2col GEMM too
      (XLA's CPU convolution has a large fixed cost per call);
    * big problems: one input convolution per step inside the scan.  Hoisting
      it over all frames makes XLA run the convolution over a (T*B)-image
      batch at a third of the per-step rate, and holds a 4F-channel buffer of
      the whole sequence;
    * big problems with gradients: convolutions with a hand-written VJP
      (:func:`_conv_vjp`), and where the input convolution has the recurrent
      one's geometry, x_t rides along as extra input channels of a single
      convolution per step.
    """
    import jax.numpy as jnp
    from jax import lax

    spec, g = key.spec, key.geo
    F = spec.filters
    B, T, Ho, Wo = g.B, g.T, g.Ho, g.Wo
    kh, kw = spec.kernel
    dt = _dtype(key.dtype)
    act = jax_activation(spec.activation)
    ract = jax_activation(spec.recurrent_activation)
    dropout = key.input_dropout or key.recurrent_dropout
    small = B * Ho * Wo <= JAX_SMALL_ROWS and not dropout
    ride = (not small and not dropout and key.grads and spec.padding == "same"
            and spec.strides == (1, 1) and spec.dilation == (1, 1))
    dn = ("NHWC", "HWIO", "NHWC")
    hi = lax.Precision.HIGHEST
    pt, pb, pl, pr = g.pad_in
    rt, rb, rl, rr = g.pad_rec
    same_conv = _conv_vjp(kh, kw, (rt, rb, rl, rr)) if key.grads and not small else None
    # Small problems unroll the time loop: XLA's CPU while loop costs tens of
    # microseconds per iteration, as much as a tiny step's work (fuzzer-sized
    # forward 356 -> 248 us), and unrolling fuses across steps.  Compile time
    # grows with the steps unrolled, hence the cap.
    unroll = T if small and T <= UNROLL_STEPS else 1

    def im2col(a, sh, sw, dh, dw, oh, ow):
        return _im2col(a, kh, kw, sh, sw, dh, dw, oh, ow)

    def in_conv(frames, K, dmask):
        """Input convolution of (N, H, W, C) frames -> (N, H', W', 4F), no bias."""
        if dmask is not None:
            # Per-gate masked copies of the input, one grouped convolution.
            reps = frames.shape[0] // B
            m = jnp.transpose(dmask, (1, 2, 3, 0, 4))               # B, H, W, 4, C
            xg = (frames.reshape(reps, B, g.H, g.W, 1, g.C) * m).reshape(
                reps * B, g.H, g.W, 4 * g.C)
            return lax.conv_general_dilated(xg, _grouped_hwio(K, kh, kw, g.C, F), spec.strides,
                                            ((pt, pb), (pl, pr)), rhs_dilation=spec.dilation,
                                            dimension_numbers=dn, feature_group_count=4,
                                            precision=hi)
        if small or key.grads:
            # With gradients: the patch GEMM's transpose is two more GEMMs,
            # where XLA's CPU convolution backward is very slow.
            a = jnp.pad(frames, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
            cols = im2col(a, *spec.strides, *spec.dilation, Ho, Wo)
            return jnp.dot(cols, K.reshape(kh * kw * g.C, 4 * F), precision=hi)
        return lax.conv_general_dilated(frames, K, spec.strides, ((pt, pb), (pl, pr)),
                                        rhs_dilation=spec.dilation, dimension_numbers=dn,
                                        precision=hi)

    def rec_conv(h, U, rmask):
        """Recurrent convolution (B, H', W', F) -> (B, H', W', 4F)."""
        if rmask is not None:
            m = jnp.transpose(rmask, (1, 2, 3, 0, 4))               # B, Ho, Wo, 4, F
            hg = (h[:, :, :, None, :] * m).reshape(B, Ho, Wo, 4 * F)
            return lax.conv_general_dilated(hg, _grouped_hwio(U, kh, kw, F, F), (1, 1),
                                            ((rt, rb), (rl, rr)), dimension_numbers=dn,
                                            feature_group_count=4, precision=hi)
        if small:
            a = jnp.pad(h, ((0, 0), (rt, rb), (rl, rr), (0, 0)))
            return jnp.dot(im2col(a, 1, 1, 1, 1, Ho, Wo), U.reshape(kh * kw * F, 4 * F),
                           precision=hi)
        if same_conv is not None:
            return same_conv(h, U)
        return lax.conv_general_dilated(h, U, (1, 1), ((rt, rb), (rl, rr)),
                                        dimension_numbers=dn, precision=hi)

    def to_last(a, time_axis):
        if not spec.channels_first:
            return a
        return jnp.moveaxis(a, 2 if time_axis else 1, -1)

    def from_last(a, time_axis):
        if not spec.channels_first:
            return a
        return jnp.moveaxis(a, -1, 2 if time_axis else 1)

    def forward(x, K, U, b, h0, c0, mask, dmask, rmask):
        x = jnp.swapaxes(to_last(x, True), 0, 1)                    # T, B, H, W, C
        if spec.go_backwards:
            x = x[::-1]
        hoisted = small or (key.grads and not ride)
        if hoisted:
            xs_all = in_conv(x.reshape(T * B, g.H, g.W, g.C), K, dmask).reshape(
                T, B, Ho, Wo, 4 * F)
            if b is not None:
                xs_all = xs_all + b
        else:
            xs_all = x
        UK = jnp.concatenate([U, K], axis=2) if ride else None

        def pre(xs, h, first):
            """Pre-activation z of one step (h = 0 when ``first``)."""
            if ride:
                z = (same_conv(xs, K) if first
                     else same_conv(jnp.concatenate([h, xs], axis=-1), UK))
            else:
                z = xs if hoisted else in_conv(xs, K, dmask)
                if not first:
                    z = z + rec_conv(h, U, rmask)
            return z if (b is None or hoisted) else z + b

        if mask is not None:
            m = jnp.swapaxes(mask, 0, 1)
            if spec.go_backwards:
                m = m[::-1]
            m = m.reshape(T, B, 1, 1, 1)
        else:
            m = jnp.zeros((T, 0), bool)   # unused placeholder with a time axis

        def cell(carry, inp, first=False):
            h, c, prev = carry
            xs, mt = inp
            z = pre(xs, h, first)
            i = ract(z[..., :F])
            f = ract(z[..., F:2 * F])
            gc = act(z[..., 2 * F:3 * F])
            o = ract(z[..., 3 * F:])
            c_new = f * c + i * gc
            h_new = o * act(c_new)
            if mask is None:
                return (h_new, c_new, prev), h_new
            # Masked steps carry the state and repeat the previous output
            # (zeros before any active step), as Keras's TensorFlow backend.
            fill = jnp.zeros_like(h_new) if spec.zero_output_for_mask else prev
            out = jnp.where(mt, h_new, fill)
            return (jnp.where(mt, h_new, h), jnp.where(mt, c_new, c), out), out

        zeros = jnp.zeros((B, Ho, Wo, F), dt)
        if h0 is None:
            # h = 0 at the first step: it needs no recurrent convolution, so
            # it runs before the scan over the remaining steps.
            carry, out0 = cell((zeros, zeros, zeros), (xs_all[0], m[0]), first=True)
            carry, outs = lax.scan(cell, carry, (xs_all[1:], m[1:]), unroll=unroll)
            outs = jnp.concatenate([out0[None], outs], axis=0)
        else:
            carry, outs = lax.scan(cell, (to_last(h0, False), to_last(c0, False), zeros),
                                   (xs_all, m), unroll=unroll)
        h, c, _ = carry
        out = jnp.swapaxes(outs, 0, 1) if spec.return_sequences else outs[-1]
        return (from_last(out, spec.return_sequences), from_last(h, False),
                from_last(c, False))

    return forward


def _im2col(a, kh, kw, sh, sw, dh, dw, oh, ow):
    """a (N, Hp, Wp, C) -> (N, oh, ow, kh*kw*C) patches in (kh, kw, C) order."""
    import jax.numpy as jnp
    cols = [a[:, i * dh: i * dh + (oh - 1) * sh + 1: sh,
              j * dw: j * dw + (ow - 1) * sw + 1: sw, :]
            for i in range(kh) for j in range(kw)]
    return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def _conv_vjp(kh: int, kw: int, pads: tuple[int, int, int, int]) -> Callable:
    """A stride-1 NHWC convolution with explicit padding and a hand-written VJP.

    XLA's CPU backward of a convolution computes the weight gradient as a
    convolution whose "kernel" is the whole image, tens of times slower than
    the forward pass.  Here the input gradient is the forward convolution of
    the cotangent with the flipped, transposed kernel, and the weight gradient
    one GEMM of the im2col patches with the cotangent.
    """
    import jax
    import jax.numpy as jnp
    from jax import lax
    rt, rb, rl, rr = pads
    dn = ("NHWC", "HWIO", "NHWC")
    hi = lax.Precision.HIGHEST

    @jax.custom_vjp
    def conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), ((rt, rb), (rl, rr)),
                                        dimension_numbers=dn, precision=hi)

    def fwd(x, w):
        return conv(x, w), (x, w)

    def bwd(res, dy):
        x, w = res
        N, H, W, C = x.shape
        O = w.shape[-1]
        wt = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)            # kh, kw, O, C
        dx = lax.conv_general_dilated(dy, wt, (1, 1),
                                      ((kh - 1 - rt, kh - 1 - rb), (kw - 1 - rl, kw - 1 - rr)),
                                      dimension_numbers=dn, precision=hi)
        a = jnp.pad(x, ((0, 0), (rt, rb), (rl, rr), (0, 0)))
        Ho, Wo = dy.shape[1:3]
        cols = _im2col(a, kh, kw, 1, 1, 1, 1, Ho, Wo).reshape(N * Ho * Wo, kh * kw * C)
        dw = jnp.dot(cols.T, dy.reshape(N * Ho * Wo, O), precision=hi)
        return dx, dw.reshape(kh, kw, C, O)

    conv.defvjp(fwd, bwd)
    return conv


def _grouped_hwio(W, kh: int, kw: int, cin: int, F: int):
    """The HWIO kernel of a 4-group convolution over gate-major 4*cin inputs.

    With feature_group_count=4, XLA takes I = cin (per group) and splits the
    outputs into 4 consecutive blocks, block q reading input block q: exactly
    the canonical (kh, kw, cin, 4F) layout with its gate blocks.
    """
    assert W.shape == (kh, kw, cin, 4 * F)
    return W


class _Tiered:
    """A jitted function compiled in two tiers, as JIT compilers do.

    The first calls run a quickly compiled executable (QUICK_OPTIONS); the
    call after OPTIMIZE_AFTER compiles the fully optimized one, which serves
    from then on.  Untiered (``tiered`` False), the first call compiles the
    optimized one.  Both compile the same HLO: the options change only how
    LLVM turns it into machine code, not the operations or their order.
    """

    def __init__(self, fn: Callable, tiered: bool = True):
        import jax
        self.jitted = jax.jit(fn)
        self.tiered = tiered
        self.calls = 0
        self.quick = None
        self.full = None

    def __call__(self, *args):
        self.calls += 1
        if self.full is None and (not self.tiered or self.calls > OPTIMIZE_AFTER):
            self.full = self.jitted.lower(*args).compile()
            self.quick = None
        if self.full is not None:
            return self.full(*args)
        if self.quick is None:
            self.quick = self.jitted.lower(*args).compile(compiler_options=QUICK_OPTIONS)
        return self.quick(*args)


class JaxReference(ReferenceRunner):
    """The fast reference on JAX; ``device`` is "cpu" or "cuda"."""

    framework = "jax"

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        import jax
        if device == "cuda":
            try:
                devs = jax.devices("gpu")
            except RuntimeError:
                devs = []
            if not devs:
                raise RuntimeError("ref-jax-cuda needs a CUDA GPU and jax built with CUDA")
            # TF32 (and bf16 passes) would silently degrade convolutions on
            # NVIDIA GPUs; the reference must compute in the dtype it claims.
            jax.config.update("jax_default_matmul_precision", "highest")
            self._device = devs[0]
        else:
            self._device = jax.devices("cpu")[0]
        self._cache: OrderedDict[CallKey, Callable] = OrderedDict()
        self._draws = 0
        self._unseeded = 0

    def versions(self) -> dict[str, str]:
        import jax
        import jaxlib
        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}

    # -- compiled programs ---------------------------------------------
    def program(self, key: CallKey, optimized: bool = False) -> Callable:
        """The program for ``key`` (compiled on first use, in tiers, then cached);
        ``optimized``: skip the quick tier (a caller about to call it many times).

        Without grads it maps (x, K, U, b, h0, c0, mask, dmask, rmask) to
        (output, h, c); with grads it takes a trailing cotangent and returns
        ((output, h, c), (dx, dK, dU, db, dh0, dc0)).
        """
        fn = self._cache.get(key)
        if fn is not None:
            self._cache.move_to_end(key)
            fn.tiered = fn.tiered and not optimized
            return fn
        import jax
        forward = make_forward(key)
        g = key.geo
        tiered = not optimized and g.B * g.Ho * g.Wo <= JAX_SMALL_ROWS
        if not key.grads:
            fn = _Tiered(forward, tiered)
        else:
            def with_grads(x, K, U, b, h0, c0, mask, dmask, rmask, cot):
                def primal(x, K, U, b, h0, c0):
                    out, h, c = forward(x, K, U, b, h0, c0, mask, dmask, rmask)
                    return out, (h, c)
                out, vjp, (h, c) = jax.vjp(primal, x, K, U, b, h0, c0, has_aux=True)
                return (out, h, c), vjp(cot)
            fn = _Tiered(with_grads, tiered)
        self._cache[key] = fn
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return fn

    # -- the computation ------------------------------------------------
    def _compute(self, spec: LayerSpec, geo: Geometry, case: Case):
        import jax
        with jax.enable_x64(True):
            return self._compute64(spec, geo, case)

    def _compute64(self, spec: LayerSpec, geo: Geometry, case: Case):
        import jax
        dt = _dtype(case.dtype)
        dev = self._device

        def arr(a):
            if a is None:
                return None
            return jax.device_put(np.asarray(a, dtype=np.float64).astype(dt), dev)

        use_in, use_rec = dropout_active(spec, case)
        dmask, rmask = self._masks(spec, geo, case, use_in, use_rec, dt)
        skey = self._state_key(spec, geo, case.dtype)
        if case.initial_state is not None:
            h0, c0 = (arr(s) for s in case.initial_state)
        elif spec.stateful and skey in self._state:
            h0, c0 = self._state[skey]
        else:
            h0 = c0 = None
        mask = (jax.device_put(np.asarray(case.mask, dtype=bool), dev)
                if case.mask is not None else None)
        key = CallKey(spec, geo, case.dtype, h0 is not None, mask is not None,
                      dmask is not None, rmask is not None, case.cotangent is not None)
        fn = self.program(key)
        args = (arr(case.inputs), arr(case.kernel), arr(case.recurrent_kernel),
                arr(case.bias) if spec.use_bias else None, h0, c0, mask, dmask, rmask)
        grads = {}
        if case.cotangent is None:
            out, h, c = fn(*args)
        else:
            (out, h, c), g = fn(*args, arr(case.cotangent))
            names = ["inputs", "kernel", "recurrent_kernel", "bias", "initial_h", "initial_c"]
            for name, value in zip(names, g):
                if value is None:
                    continue
                if name.startswith("initial_") and case.initial_state is None:
                    continue
                grads[name] = _np64(value)
        if mask is None:
            # Without a mask the last output *is* h.  XLA may compute the two
            # in separate fusions (it duplicates elementwise producers into
            # each consumer), whose exp/tanh round apart in the last bit; the
            # spec wants them identical, so h is read from the output.
            h = out[:, -1] if spec.return_sequences else out
        if spec.stateful:
            self._state[skey] = (h, c)
        outputs = [_np64(a) for a in (out, h, c)]
        return outputs, grads, [str(np.dtype(a.dtype)) for a in (out, h, c)]

    def _masks(self, spec, geo, case, use_in, use_rec, dt):
        """Injected dropout masks, or fresh Bernoulli draws (keep 1-rate, scaled)."""
        import jax
        import jax.numpy as jnp

        def draw(shape, rate):
            if spec.seed is not None:
                # A seeded layer's mask sequence restarts with every new layer (case).
                key = jax.random.fold_in(jax.random.PRNGKey(spec.seed), self._draws)
                self._draws += 1
            else:
                # Unseeded layers never repeat a mask, across cases too.
                key = jax.random.fold_in(jax.random.PRNGKey(0), 1_000_000_007 + self._unseeded)
                self._unseeded += 1
            keep = jax.random.bernoulli(key, 1.0 - rate, shape)
            return jnp.where(keep, 1.0 / (1.0 - rate), 0.0).astype(dt)

        def put(a):
            return jax.device_put(np.asarray(a, dtype=np.float64).astype(dt), self._device)

        dmask = rmask = None
        if use_in:
            dmask = (put(case.dropout_mask) if case.dropout_mask is not None
                     else draw((4, geo.B, geo.H, geo.W, geo.C), spec.dropout))
        if use_rec:
            rmask = (put(case.recurrent_dropout_mask) if case.recurrent_dropout_mask is not None
                     else draw((4, geo.B, geo.Ho, geo.Wo, spec.filters), spec.recurrent_dropout))
        return dmask, rmask


def _np64(a) -> np.ndarray:
    import jax.numpy as jnp
    if a.dtype == jnp.bfloat16:
        a = a.astype(jnp.float32)
    return np.asarray(a, dtype=np.float64)
