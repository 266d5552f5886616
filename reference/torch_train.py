"""The PyTorch reference's training path: ``forward_backward`` and dropout.

Out of place under autograd, with two hand-written backward passes: the
fused gate arithmetic (one contiguous gradient for the four gates; one C call
each way where :mod:`.native` is available) and the per-step convolution
(oneDNN or Winograd in C for the input gradient, one GEMM for the weight
gradient).
"""
from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from convlstm_conformance.model import Case
from convlstm_conformance.reference.config import LayerSpec, dropout_active
from convlstm_conformance.reference.torch_infer import result_shapes
from convlstm_conformance.reference.torch_plan import (
    COLS_BYTES, GATE_ORDER, WINOGRAD_MIN_CHANNELS, Plan, Projector, chunk_steps,
    conv3x3_in_c, frames_time_major, im2col, pad_nhwc, part_count, reorder_gates, run_parts,
    slice_rows, state_to_nhwc, weight_grad3x3_in_c, winograd_weights)

def _make_cell_class():
    import torch

    class LSTMCell(torch.autograd.Function):
        """The gate arithmetic of one step, fused, with a hand-written backward.

        z: (B, H', W', 4F) pre-activations in gate order i, f, o, c (the c block
        doubled when ``fast_tanh``: act = 2*sigmoid(z) - 1); c: previous cell
        state.  Saves the four gate values and tanh(c') (the least the backward
        needs) and returns dz as one contiguous tensor, so autograd does no
        per-gate slicing work.
        """

        @staticmethod
        def forward(ctx, z, c, fast_tanh, cell=None):
            F = c.shape[-1]
            ctx.cell = cell
            if cell is not None:
                # The C cell (reference/native): one pass each way; c unscaled.
                z, c = z.contiguous(), c.contiguous()
                a, c_new, h = torch.empty_like(z), torch.empty_like(c), torch.empty_like(c)
                cell[0](c.numel() // F, F, z.data_ptr(), c.data_ptr(), a.data_ptr(),
                        c_new.data_ptr(), h.data_ptr())
                ctx.save_for_backward(a, c, c_new)
                return h, c_new
            if fast_tanh:
                a = torch.sigmoid(z)
            else:
                a = torch.empty_like(z)
                torch.sigmoid(z[..., :3 * F], out=a[..., :3 * F])
                torch.tanh(z[..., 3 * F:], out=a[..., 3 * F:])
            i, f, o, s = a.split(F, dim=-1)
            c_new = torch.mul(f, c)
            if fast_tanh:
                # c' = f c + i (2 s - 1); tanh(c') = 2 sigmoid(2 c') - 1
                c_new.addcmul_(i, s, value=2.0).sub_(i)
                tc = torch.mul(c_new, 2.0).sigmoid_().mul_(2.0).sub_(1.0)
            else:
                c_new.addcmul_(i, s)
                tc = torch.tanh(c_new)
            h = torch.mul(o, tc)
            ctx.fast_tanh = fast_tanh
            # c' rather than tanh(c'): c' lives on anyway (the next step's c),
            # so the backward recomputes tanh instead of keeping a copy.
            ctx.save_for_backward(a, c, c_new)
            return h, c_new

        @staticmethod
        def backward(ctx, dh, dc_new):
            # In place on the output buffers where possible: every pass here
            # is memory-bound, and fresh large tensors cost page faults.
            a, c, c_new = ctx.saved_tensors
            F = c.shape[-1]
            if ctx.cell is not None:
                dz, dc = torch.empty_like(a), torch.empty_like(c)

                # Contiguous copies, held in names until the call returns.
                dh = None if dh is None else dh.contiguous()
                dc_new = None if dc_new is None else dc_new.contiguous()
                ctx.cell[1](c.numel() // F, F, a.data_ptr(), c.data_ptr(), c_new.data_ptr(),
                            None if dh is None else dh.data_ptr(),
                            None if dc_new is None else dc_new.data_ptr(),
                            dz.data_ptr(), dc.data_ptr())
                return dz, dc, None, None
            i, f, o, s = a.split(F, dim=-1)
            if ctx.fast_tanh:     # the forward's own formula, for consistent gradients
                tc = torch.mul(c_new, 2.0).sigmoid_().mul_(2.0).sub_(1.0)
            else:
                tc = torch.tanh(c_new)
            if dh is None:
                dh = torch.zeros_like(c)
            dz = torch.empty_like(a)
            dzi, dzf, dzo, dzc = dz.split(F, dim=-1)
            # dc = dc' + dh o (1 - tanh(c')^2)
            dc = torch.mul(dh, o)
            dc.addcmul_(dc, tc * tc, value=-1.0)
            if dc_new is not None:
                dc.add_(dc_new)
            # x * y * (1 - y) computed as u = x * y; u - u * y
            torch.mul(dh, tc, out=dzo).mul_(o)
            dzo.addcmul_(dzo, o, value=-1.0)
            if ctx.fast_tanh:
                torch.mul(dc, s, out=dzi).mul_(2.0).sub_(dc)      # dc * g, g = 2 s - 1
            else:
                torch.mul(dc, s, out=dzi)
            dzi.mul_(i)
            dzi.addcmul_(dzi, i, value=-1.0)
            torch.mul(dc, c, out=dzf).mul_(f)
            dzf.addcmul_(dzf, f, value=-1.0)
            torch.mul(dc, i, out=dzc)
            if ctx.fast_tanh:                                     # d/dz 2 sigmoid = 2 s (1 - s)
                dzc.mul_(s)
                dzc.addcmul_(dzc, s, value=-1.0).mul_(2.0)
            else:                                                 # d/dz tanh = 1 - g^2
                dzc.addcmul_(dzc, s * s, value=-1.0)
            return dz, dc.mul_(f), None, None

    return LSTMCell


# Scratch buffers reused across the time steps of one backward pass (a fresh
# tens-of-megabytes buffer per step costs more in page faults than the copy
# into it); per thread, since batch parts run concurrently, and dropped by
# :func:`forward_backward` when the pass ends.
_TLS = threading.local()


def _workspaces() -> dict:
    if not hasattr(_TLS, "buffers"):
        _TLS.buffers = {}
    return _TLS.buffers


def _workspace(shape, dtype, device):
    import torch
    key = (tuple(shape), dtype, str(device))
    buffers = _workspaces()
    buf = buffers.get(key)
    if buf is None:
        buf = buffers[key] = torch.empty(shape, dtype=dtype, device=device)
    return buf


def _make_conv_class():
    import torch
    import torch.nn.functional as tf

    class ConvStep(torch.autograd.Function):
        """A stride-1, unpadded NHWC convolution whose weight gradient is a GEMM.

        inp (N, Hp, Wp, Cin) already padded, w (kh, kw, Cin, O), bias (O,) or
        None -> (N, Hp-kh+1, Wp-kw+1, O).  oneDNN computes the forward and the
        input gradient well; its weight gradient runs at about half the GEMM
        rate on CPUs without AVX-512, so the weight gradient here is the im2col
        matrix (kh*kw slab copies) times the output gradient, one GEMM.  With
        ``wino`` (a _WinogradWeights of w) all three are Winograd's F(2x2,
        3x3) in C instead, where _winograd_takes says so.
        """

        @staticmethod
        def forward(ctx, inp, w, bias, wino=None):
            ctx.save_for_backward(inp, w)
            ctx.has_bias = bias is not None
            ctx.wino = wino
            if _winograd_takes(wino, inp.shape[3], w):
                N, Hp, Wp, _ = inp.shape
                out = torch.empty((N, Hp - 2, Wp - 2, w.shape[3]), dtype=inp.dtype,
                                  device=inp.device)
                conv3x3_in_c(wino.lib, inp, wino.forward(), out, bias=bias)
                return out
            return tf.conv2d(inp.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1),
                             bias).permute(0, 2, 3, 1)

        @staticmethod
        def backward(ctx, dz):
            inp, w = ctx.saved_tensors
            kh, kw, cin, O = w.shape
            N, Hp, Wp, _ = inp.shape
            Ho, Wo = Hp - kh + 1, Wp - kw + 1
            dz = dz.contiguous()
            d_inp = d_w = d_b = None
            # The input gradient is the correlation of dz with the flipped,
            # transposed kernel: Winograd where it computes this convolution.
            if ctx.needs_input_grad[0] and _winograd_takes(ctx.wino, O, w.transpose(2, 3)):
                d_inp = torch.empty(inp.shape, dtype=inp.dtype, device=inp.device)
                conv3x3_in_c(ctx.wino.lib, dz, ctx.wino.flipped(), d_inp, pad=(2, 2))
            elif ctx.needs_input_grad[0]:
                d_inp = torch.ops.aten.convolution_backward(
                    dz.permute(0, 3, 1, 2), inp.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1),
                    None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                    [True, False, False])[0].permute(0, 2, 3, 1)
            dz2 = dz.view(N * Ho * Wo, O)
            if ctx.needs_input_grad[1] and _winograd_takes(ctx.wino, cin, w):
                d_w = weight_grad3x3_in_c(ctx.wino.lib, inp, dz)
            elif ctx.needs_input_grad[1]:
                # Images in chunks whose patch matrix stays under COLS_BYTES:
                # the GEMMs keep thousands of rows, the scratch stays small.
                per_image = Ho * Wo * kh * kw * cin * inp.element_size()
                n = max(1, min(N, COLS_BYTES // per_image))
                cols = _workspace((n, Ho, Wo, kh * kw, cin), inp.dtype, inp.device)
                d_w = torch.zeros((kh * kw * cin, O), dtype=inp.dtype, device=inp.device)
                for i0 in range(0, N, n):
                    m = min(n, N - i0)
                    part = cols[:m]
                    for a in range(kh):
                        for b in range(kw):
                            part[:, :, :, a * kw + b].copy_(inp[i0:i0 + m, a:a + Ho, b:b + Wo])
                    d_w.addmm_(part.view(m * Ho * Wo, kh * kw * cin).t(),
                               dz2[i0 * Ho * Wo:(i0 + m) * Ho * Wo])
                d_w = d_w.view(kh, kw, cin, O)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                d_b = dz2.sum(0)
            return d_inp, d_w, d_b, None

    return ConvStep


class _WinogradWeights:
    """A plan's Winograd library with the transforms of one weight tensor w
    (3, 3, K, N), each made on first use: U for the convolution, and U of
    the flipped, transposed kernel for its input gradient.  The training
    path makes one per weight tensor per call; transforming on every step
    cost about 1.3 ms of a batch slice's step at size S."""

    def __init__(self, lib, w):
        self.lib, self.w = lib, w
        self._u = self._flipped = None

    def forward(self):
        if self._u is None:
            self._u = winograd_weights(self.w)
        return self._u

    def flipped(self):
        if self._flipped is None:
            self._flipped = winograd_weights(self.w.flip(0, 1).transpose(2, 3))
        return self._flipped


def _winograd_takes(wino, channels: int, w) -> bool:
    """Whether the C Winograd convolution (``wino``, a _WinogradWeights or
    None) computes a convolution over ``channels`` input channels with
    weights of w's shape (3, 3, channels, O): enough channels for its
    accuracy, O a multiple of its vector width."""
    return (wino is not None and tuple(w.shape[:2]) == (3, 3)
            and channels >= WINOGRAD_MIN_CHANNELS and w.shape[3] % 8 == 0)


class _LazyFunction:
    """An autograd Function built on first use, keeping torch imports lazy."""

    def __init__(self, make: Callable):
        self._make = make
        self._cls = None

    def apply(self, *args):
        if self._cls is None:
            self._cls = self._make()
        return self._cls.apply(*args)


_ConvStep = _LazyFunction(_make_conv_class)
_LSTMCell = _LazyFunction(_make_cell_class)


def forward_backward(plan: Plan, x, K, U, bias, h0, c0, mask, cotangent=None,
                     dmask=None, rmask=None):
    """The training path: out of place, dropout masks, and gradients.

    Same arguments as :func:`forward_infer`, plus the cotangent of the output
    (NHWC like the output) and per-gate dropout multipliers (canonical gate
    order, channels_last, already scaled) or None.  Returns ``((output, h, c),
    grads)`` where grads are the gradients of sum(output * cotangent) w.r.t.
    (x, K, U, bias, h0, c0), None where an argument is None or no cotangent
    was given.  Arguments need not require grad.
    """
    import torch
    want = cotangent is not None

    def leaf(t):
        # A private autograd identity per batch part: parts run concurrently.
        return None if t is None else t.detach().requires_grad_(want)

    # With several batch slices, each writes its rows of the outputs and of
    # the per-sample gradients in place (as forward_infer does); the weight
    # gradients, to which every slice contributes, are summed afterwards.
    dest = None
    if part_count(plan) > 1:
        out_shape, state = result_shapes(plan)

        def like(shape, present=True):
            return torch.empty(shape, dtype=plan.dtype, device=plan.device) if present else None

        per_sample = (x, None, None, None, h0, c0)
        dest = ((like(out_shape), like(state), like(state)),
                tuple(like(a.shape, want) if a is not None else None for a in per_sample))

    def part(sub, lo, hi):
        args = [leaf(x[lo:hi]), leaf(K), leaf(U), leaf(bias),
                leaf(slice_rows(h0, lo, hi)), leaf(slice_rows(c0, lo, hi))]
        with torch.enable_grad():
            out, h, c = _train(sub, *args, slice_rows(mask, lo, hi), slice_rows(dmask, lo, hi, 1),
                               slice_rows(rmask, lo, hi, 1))
        grads = (None,) * 6
        if want:
            try:
                wanted = [a for a in args if a is not None]
                got = iter(torch.autograd.grad(out, wanted, cotangent[lo:hi],
                                               allow_unused=True))
                grads = tuple(None if a is None else next(got) for a in args)
            finally:
                _workspaces().clear()
        outs = (out.detach(), h.detach(), c.detach())
        if dest is None:
            return outs, grads
        for d, r in zip(dest[0] + dest[1], outs + grads):
            if d is not None and r is not None:
                d[lo:hi].copy_(r)
        return grads

    res = run_parts(plan, part)
    if dest is None:
        return res[0]
    grads = list(dest[1])
    for i in (1, 2, 3):             # weights: every slice contributes
        if res[0][i] is not None:
            grads[i] = torch.stack([r[i] for r in res]).sum(0)
    return dest[0], tuple(grads)



def _train(plan: Plan, x, K, U, bias, h0, c0, mask, dmask, rmask):
    import torch
    import torch.nn.functional as tf
    spec, g = plan.spec, plan.geo
    F = spec.filters
    B, T, Ho, Wo = g.B, g.T, g.Ho, g.Wo
    dt, dev = plan.dtype, plan.device

    # The fused cell runs in C where available; it takes the c-gate weights
    # as they are (no fast-tanh doubling).
    cell = plan.native_cell
    scale = plan.fast_tanh and cell is None
    Ki = reorder_gates(K, F, scale)
    Ui = reorder_gates(U, F, scale)
    bi = reorder_gates(bias, F, scale) if bias is not None else None
    order = list(GATE_ORDER)
    dm = dmask[order] if dmask is not None else None
    rm = rmask[order] if rmask is not None else None
    frames = frames_time_major(x, spec)
    # As in inference: with the recurrent geometry, x_t rides along as extra
    # input channels of one convolution per step (one backward call per step
    # instead of two, the input side's small-K GEMMs folded into a big one).
    ride = (not plan.small and dm is None and rm is None and spec.padding == "same"
            and spec.strides == (1, 1) and spec.dilation == (1, 1))
    # Each weight tensor's Winograd transforms, made once per call.
    wino = ((lambda w: _WinogradWeights(plan.winograd, w)) if plan.winograd is not None
            else (lambda w: None))
    if ride:
        Wcat = torch.cat([Ui, Ki], dim=2)
        wino_cat, wino_k = wino(Wcat), wino(Ki)
        xp = [frames]
    else:
        wino_u = wino(Ui)
        project = Projector(plan, Ki, bi, dm)
        n = chunk_steps(plan)
        xp = [project(frames[t0:t0 + n].reshape(-1, g.H, g.W, g.C)).reshape(
            -1, B, Ho, Wo, 4 * F) for t0 in range(0, T, n)]

    kh, kw = spec.kernel
    if rm is not None:
        # Per-gate masked copies of h, one grouped convolution.
        Ug = Ui.reshape(kh, kw, F, 4, F).permute(3, 4, 2, 0, 1).reshape(4 * F, F, kh, kw)
        rmp = rm.permute(1, 2, 3, 0, 4)                      # B, Ho, Wo, 4, F

        def recurrent(h):
            hg = (h.unsqueeze(3) * rmp).reshape(B, Ho, Wo, 4 * F)
            hg = pad_nhwc(hg, g.pad_rec)
            return tf.conv2d(hg.permute(0, 3, 1, 2), Ug, groups=4).permute(0, 2, 3, 1)
    elif plan.small:
        U2 = Ui.reshape(kh * kw * F, 4 * F)

        def recurrent(h):
            hpad = pad_nhwc(h, g.pad_rec).contiguous()
            return torch.mm(im2col(hpad, kh, kw, 1, 1, 1, 1, Ho, Wo), U2).view(
                B, Ho, Wo, 4 * F)
    else:
        def recurrent(h):
            return _ConvStep.apply(pad_nhwc(h, g.pad_rec).contiguous(), Ui, None, wino_u)

    def pre(xs, h, first):
        """Pre-activation z of one step (h = 0 when ``first``)."""
        if ride:      # xs is the frame x_t
            inp = xs if first else torch.cat([h, xs], dim=-1)
            return _ConvStep.apply(pad_nhwc(inp, g.pad_rec).contiguous(),
                                   Ki if first else Wcat, bi,
                                   wino_k if first else wino_cat)
        return xs if first else xs + recurrent(h)   # xs is the projected x_t

    if h0 is not None:
        h, c = state_to_nhwc(h0, spec), state_to_nhwc(c0, spec)
    else:
        h = torch.zeros((B, Ho, Wo, F), dtype=dt, device=dev)
        c = torch.zeros((B, Ho, Wo, F), dtype=dt, device=dev)
    if mask is not None:
        active = (mask.flip(1) if spec.go_backwards else mask).to(dev).view(B, T, 1, 1, 1)
        prev_out = torch.zeros((B, Ho, Wo, F), dtype=dt, device=dev)
    F3 = 3 * F
    # The fused cell (hand-written backward) covers the default activations;
    # other activations go through autograd op by op.
    fused = spec.activation == "tanh" and spec.recurrent_activation == "sigmoid"
    outs = []
    # unbind/split rather than indexing: their backward assembles the gradient
    # in one pass instead of zero-filling a full-size tensor per slice.
    zero_h = h0 is None
    for xs in (step for chunk in xp for step in chunk.unbind(0)):
        # (h = 0 at the first step without an initial state: no recurrent term)
        z = pre(xs, h, zero_h and not outs)
        if fused:
            h_new, c_new = _LSTMCell.apply(z, c, scale, cell)
        else:
            zr, zc = z.split([F3, F], dim=-1)
            i, f, o = plan.ract(zr).split(F, dim=-1)
            # (fast_tanh: the c-gate weights are doubled, act = 2 sigmoid - 1)
            gc = 2.0 * torch.sigmoid(zc) - 1.0 if plan.fast_tanh else plan.act(zc)
            c_new = f * c + i * gc
            h_new = o * plan.act(c_new)
        if mask is not None:
            m = active[:, len(outs)]
            h = torch.where(m, h_new, h)
            c = torch.where(m, c_new, c)
            prev_out = torch.where(m, h_new, torch.zeros_like(h_new)
                                   if spec.zero_output_for_mask else prev_out)
            outs.append(prev_out)
        else:
            h, c = h_new, c_new
            outs.append(h)
    out = torch.stack(outs, dim=1) if spec.return_sequences else outs[-1]
    return out, h, c


def draw_masks(plan: Plan, spec: LayerSpec, case: Case, generator):
    """Injected masks, or fresh Bernoulli ones (keep 1-rate, scaled 1/(1-rate))."""
    import torch
    g = plan.geo
    use_in, use_rec = dropout_active(spec, case)

    def draw(shape, rate):
        keep = torch.full(shape, 1.0 - rate, dtype=torch.float64)
        return torch.bernoulli(keep, generator=generator) / (1.0 - rate)

    dm = rm = None
    if use_in:
        dm = (torch.from_numpy(np.asarray(case.dropout_mask, dtype=np.float64))
              if case.dropout_mask is not None
              else draw((4, g.B, g.H, g.W, g.C), spec.dropout))
    if use_rec:
        rm = (torch.from_numpy(np.asarray(case.recurrent_dropout_mask, dtype=np.float64))
              if case.recurrent_dropout_mask is not None
              else draw((4, g.B, g.Ho, g.Wo, spec.filters), spec.recurrent_dropout))
    return dm, rm
