"""The PyTorch reference's inference: ``forward_infer``.

Small maskless problems run as one call of the C kernel where it applies
(:func:`_infer_native`), other small problems as im2col GEMMs on one thread
(:func:`_infer_small`), big ones with the input projection hoisted over chunks
of frames, the recurrent convolution by the library (or Winograd in C) and the
gate arithmetic in place (:func:`_infer`), one batch slice per core.
"""
from __future__ import annotations

import numpy as np

from convlstm_conformance.reference import native
from convlstm_conformance.reference.torch_plan import (
    WINOGRAD_MIN_CHANNELS, Plan, Projector, chunk_steps, conv3x3_in_c, conv_weight,
    frames_time_major, gate_activations, gate_matrix, gates_in_c, im2col, pad_nhwc,
    reorder_gates, run_parts, slice_rows, state_to_nhwc, winograd_weights)

def _infer_small(plan: Plan, x, K, U, bias, h0, c0):
    """forward_infer for small problems without a mask: im2col GEMMs, fewest calls.

    Each operator call costs microseconds of dispatch, as much as its
    arithmetic at these sizes, so this path is written for call count.
    """
    import torch
    spec, g = plan.spec, plan.geo
    F = spec.filters
    B, T, Ho, Wo = g.B, g.T, g.Ho, g.Wo
    kh, kw = spec.kernel
    dt, dev = plan.dtype, plan.device
    P = gate_matrix(F, plan.fast_tanh, dt, dev)
    K2 = torch.mm(K.reshape(kh * kw * g.C, 4 * F), P)
    U2 = torch.mm(U.reshape(kh * kw * F, 4 * F), P)
    frames = frames_time_major(x, spec).view(T * B, g.H, g.W, g.C)
    frames = pad_nhwc(frames, g.pad_in)
    cols = im2col(frames, kh, kw, *spec.strides, *spec.dilation, Ho, Wo)
    xp = (torch.addmm(torch.mv(P.t(), bias), cols, K2) if bias is not None
          else torch.mm(cols, K2))
    rows = B * Ho * Wo
    rt, rb, rl, rr = g.pad_rec
    hp = torch.zeros((B, Ho + rt + rb, Wo + rl + rr, F), dtype=dt, device=dev)
    h = hp[:, rt:rt + Ho, rl:rl + Wo, :]
    if h0 is not None:
        h.copy_(state_to_nhwc(h0, spec))
        c = state_to_nhwc(c0, spec).contiguous().clone()
    else:
        c = torch.zeros((B, Ho, Wo, F), dtype=dt, device=dev)
    # Every buffer and view the loop touches exists before it starts, so a
    # step is eight operator calls: patch copy, GEMM, gates, cell, output.
    s0, s1, s2, s3 = hp.stride()
    patches = hp.as_strided((B, Ho, Wo, kh, kw, F), (s0, s1, s2, s1, s2, s3))
    cols = torch.empty((B, Ho, Wo, kh, kw, F), dtype=dt, device=dev)
    cols2 = cols.view(rows, kh * kw * F)
    z = torch.empty((rows, 4 * F), dtype=dt, device=dev)
    z4 = z.view(B, Ho, Wo, 4 * F)
    i, f, o, gc = z4.split(F, dim=-1)
    tmp = torch.empty((B, Ho, Wo, F), dtype=dt, device=dev)
    seq = (torch.empty((B, T, Ho, Wo, F), dtype=dt, device=dev)
           if spec.return_sequences else None)
    gates_, act_c = gate_activations(plan)
    xps = xp.split(rows)
    for s in range(T):
        if s == 0 and h0 is None:     # h = 0: no recurrent term
            z.copy_(xps[0])
        else:
            cols.copy_(patches)
            torch.addmm(xps[s], cols2, U2, out=z)
        gates_(z4)
        c.mul_(f)
        if plan.fast_tanh:
            c.addcmul_(i, gc, value=2.0).sub_(i)
        else:
            c.addcmul_(i, gc)
        if spec.activation == "linear":
            torch.mul(o, c, out=h)
        else:
            torch.mul(o, torch.tanh(c, out=tmp) if spec.activation == "tanh"
                      else act_c(tmp.copy_(c)), out=h)
        if seq is not None:
            seq[:, s] = h
    return (seq if seq is not None else h), h, c



def _infer_native(plan: Plan, x, K, U, bias, h0, c0):
    """_infer_small in one call of the C kernel (reference/native), or None
    where the kernel does not apply.  Arguments and results as forward_infer;
    written for call overhead, which at fuzzer sizes is a fifth of the time."""
    import torch
    if plan.native is None:
        return None
    kernel, prefix, state_shape, seq_shape, np_dtype = plan.native
    cf = plan.spec.channels_first
    xs = x.stride()
    if cf:                                   # (b, t, c, y, x) -> strides in (b, t, y, x, c)
        xs = (xs[0], xs[1], xs[3], xs[4], xs[2])
    ss = (0, 0, 0, 0)
    if h0 is not None:
        if h0.stride() != c0.stride():
            h0, c0 = h0.contiguous(), c0.contiguous()
        ss = h0.stride()
        if cf:                               # (b, f, y, x) -> (b, y, x, f)
            ss = (ss[0], ss[2], ss[3], ss[1])
    # NumPy allocates a small result in half the time torch.empty takes.
    h = torch.from_numpy(np.empty(state_shape, np_dtype))
    c = torch.from_numpy(np.empty(state_shape, np_dtype))
    seq = torch.from_numpy(np.empty(seq_shape, np_dtype)) if seq_shape else None
    status = kernel(native.geometry_array(prefix + xs + ss), x.data_ptr(),
                    K.contiguous().data_ptr(), U.contiguous().data_ptr(),
                    bias.contiguous().data_ptr() if bias is not None else None,
                    h0.data_ptr() if h0 is not None else None,
                    c0.data_ptr() if c0 is not None else None,
                    seq.data_ptr() if seq is not None else None, h.data_ptr(), c.data_ptr())
    if status != 0:
        raise MemoryError("the C kernel could not allocate its work buffer")
    return (seq if seq is not None else h), h, c


def forward_infer(plan: Plan, x, K, U, bias, h0, c0, mask):
    """Inference without autograd: in place, on preallocated buffers.

    Arguments are torch tensors in canonical layouts (x in the data_format,
    K/U/bias in Keras layout, h0/c0 in the data_format or None, mask (B, T)
    bool or None).  Returns (output, h, c) with output and states physically
    NHWC: (B, T, H', W', F) / (B, H', W', F).
    """
    import torch
    if plan.small and mask is None:
        # One C call, single-threaded: no batch slices, no thread settings.
        done = _infer_native(plan, x, K, U, bias, h0, c0)
        if done is not None:
            return done

    if plan.small:
        def part(sub, lo, hi):
            if mask is None:
                return _infer_small(sub, x[lo:hi], K, U, bias, h0, c0)
            return _infer(sub, x, K, U, bias, h0, c0, mask)
        return run_parts(plan, part)[0]

    # Batch slices write their rows of the results in place, each on its own
    # core: no concatenation afterwards (megabytes copied on one core while
    # the other waits, and the results held twice).
    out_shape, state = result_shapes(plan)
    h_all = torch.empty(state, dtype=plan.dtype, device=plan.device)
    c_all = torch.empty(state, dtype=plan.dtype, device=plan.device)
    if plan.spec.return_sequences:
        out_all = torch.empty(out_shape, dtype=plan.dtype, device=plan.device)
    else:   # the last output is the last h, except where a mask holds it back
        out_all = h_all if mask is None else torch.empty_like(h_all)

    def part(sub, lo, hi):
        _infer(sub, x[lo:hi], K, U, bias, slice_rows(h0, lo, hi), slice_rows(c0, lo, hi),
               slice_rows(mask, lo, hi), dest=(out_all[lo:hi], h_all[lo:hi], c_all[lo:hi]))

    run_parts(plan, part)
    return out_all, h_all, c_all


def result_shapes(plan: Plan) -> tuple[tuple, tuple]:
    """(output, state) shapes of a whole batch's results, physically NHWC."""
    g = plan.geo
    state = (g.B, g.Ho, g.Wo, plan.spec.filters)
    return ((g.B, g.T) + state[1:] if plan.spec.return_sequences else state), state


def _infer(plan: Plan, x, K, U, bias, h0, c0, mask, dest=None):
    """forward_infer on one batch slice.  ``dest`` (output, h, c): tensors the
    results are written into (the slice's rows of the whole batch's; output
    may be h itself), or None to allocate them."""
    import torch
    import torch.nn.functional as tf
    spec, g = plan.spec, plan.geo
    F = spec.filters
    B, T, Ho, Wo = g.B, g.T, g.Ho, g.Wo
    kh, kw = spec.kernel
    dt, dev = plan.dtype, plan.device

    # Without a mask the gate arithmetic is one C call per step where the
    # kernel is available; it takes the c-gate weights as they are.
    in_c = mask is None and plan.native_gates is not None
    scale = plan.fast_tanh and not in_c
    Ki = reorder_gates(K, F, scale)
    Ui = reorder_gates(U, F, scale)
    bi = reorder_gates(bias, F, scale) if bias is not None else None
    # When the input convolution has the recurrent one's geometry (stride 1,
    # no dilation, 'same') and one time step is a big enough GEMM on its own,
    # the frame x_t rides along as C extra channels of the state buffer: one
    # convolution over F+C channels yields the whole pre-activation, with no
    # projection buffer and no separate add pass.
    ride = (not plan.small and spec.padding == "same" and spec.strides == (1, 1)
            and spec.dilation == (1, 1))
    extra = g.C if ride else 0

    # The state h lives inside a zero-bordered buffer: the recurrent 'same'
    # convolution then reads it with no padding work at all.
    rt, rb, rl, rr = g.pad_rec
    hp = torch.zeros((B, Ho + rt + rb, Wo + rl + rr, F + extra), dtype=dt, device=dev)
    h = hp[:, rt:rt + Ho, rl:rl + Wo, :F]
    if dest is not None:
        c = dest[2]
        c.zero_()
    else:
        c = torch.zeros((B, Ho, Wo, F), dtype=dt, device=dev)
    if h0 is not None:
        h.copy_(state_to_nhwc(h0, spec))
        c.copy_(state_to_nhwc(c0, spec))
    wino = plan.winograd is not None
    if ride:
        xin = hp[:, rt:rt + Ho, rl:rl + Wo, F:]
        frames = x.permute(0, 1, 3, 4, 2) if spec.channels_first else x   # B, T, H, W, C
        Wcat = torch.cat([Ui, Ki], dim=2)
        Wc = conv_weight(Wcat)
        if wino:
            Uw = winograd_weights(Wcat)
            zbuf = torch.empty((B, Ho, Wo, 4 * F), dtype=dt, device=dev)
    else:
        project = Projector(plan, Ki, bi)
        frames = frames_time_major(x, spec)                               # T, B, H, W, C
        steps_per_chunk = chunk_steps(plan)
        U2 = Ui.reshape(kh * kw * F, 4 * F)
        Wc = conv_weight(Ui)
        if wino:
            Uw = winograd_weights(Ui)
    hp_nchw = hp.permute(0, 3, 1, 2)
    tmp = torch.empty((B, Ho, Wo, F), dtype=dt, device=dev)

    seq = None
    if spec.return_sequences:
        seq = dest[0] if dest is not None else torch.empty((B, T, Ho, Wo, F), dtype=dt, device=dev)
    if mask is not None:
        active = mask.flip(1) if spec.go_backwards else mask
        active = active.to(dev).view(B, T, 1, 1, 1)
        h_new = torch.empty((B, Ho, Wo, F), dtype=dt, device=dev)
        prev_out = torch.zeros((B, Ho, Wo, F), dtype=dt, device=dev)
        zeros = torch.zeros((), dtype=dt, device=dev)
    gates_, act_c = gate_activations(plan)

    xp = None
    # Without an initial state h is zero at the first step, and so is its
    # convolution: that step needs the input half only.
    zero_h = h0 is None
    for s in range(T):
        if ride:
            xin.copy_(frames[:, T - 1 - s if spec.go_backwards else s])
            first = s == 0 and zero_h        # the input channels only
            if wino and not (first and g.C < WINOGRAD_MIN_CHANNELS):
                z = zbuf
                conv3x3_in_c(plan.winograd, hp, Uw, z, k0=F if first else 0, bias=bi)
            elif first:
                z = tf.conv2d(hp_nchw[:, F:], conv_weight(Ki), bi).permute(0, 2, 3, 1)
            else:
                z = tf.conv2d(hp_nchw, Wc, bi).permute(0, 2, 3, 1)
        else:
            j = s % steps_per_chunk
            if j == 0:
                xp = None   # release the previous chunk before the next is made
                t1 = min(T, s + steps_per_chunk)
                xp = project(frames[s:t1].view((t1 - s) * B, g.H, g.W, g.C))
            xs = xp[j * B:(j + 1) * B]
            if s == 0 and zero_h:
                z = xs      # the chunk is ours: its steps can be overwritten in place
            elif plan.small:
                z = torch.addmm(xs.reshape(B * Ho * Wo, 4 * F),
                                im2col(hp, kh, kw, 1, 1, 1, 1, Ho, Wo), U2)
                z = z.view(B, Ho, Wo, 4 * F)
            elif wino and xs.stride(3) == 1:
                z = xs      # accumulated into in place, as at the first step
                conv3x3_in_c(plan.winograd, hp, Uw, z, accumulate=True)
            else:
                z = tf.conv2d(hp_nchw, Wc).permute(0, 2, 3, 1)
                z.add_(xs)
        if in_c:
            gates_in_c(plan, z, c, h, seq[:, s] if seq is not None else None)
            continue
        gates_(z)
        i, f, o, gc = z.split(F, dim=-1)
        if mask is not None:
            m = active[:, s]
            c_prev = c.clone()
        c.mul_(f)
        if plan.fast_tanh:
            # c' = f*c + i*(2*s - 1) with s = sigmoid(2 z_c)
            c.addcmul_(i, gc, value=2.0).sub_(i)
        else:
            c.addcmul_(i, gc)
        target = h_new if mask is not None else h
        if spec.activation == "linear":
            torch.mul(o, c, out=target)
        else:
            if plan.fast_tanh:
                # tanh(c') = 2 sigmoid(2c') - 1: five cheap passes beat one tanh
                torch.mul(c, 2.0, out=tmp).sigmoid_().mul_(2.0).sub_(1.0)
            elif spec.activation == "tanh":
                torch.tanh(c, out=tmp)
            else:
                act_c(tmp.copy_(c))
            torch.mul(o, tmp, out=target)
        if mask is not None:
            torch.where(m, c, c_prev, out=c)
            torch.where(m, h_new, h, out=h)
            fill = zeros if spec.zero_output_for_mask else prev_out
            torch.where(m, h_new, fill, out=prev_out)
            if seq is not None:
                seq[:, s].copy_(prev_out)
        elif seq is not None:
            seq[:, s].copy_(h)
    if spec.return_sequences:
        out = seq
    else:
        out = prev_out if mask is not None else h
    if dest is None:
        return out, h, c
    dest[1].copy_(h)
    if out is not seq and dest[0].data_ptr() != dest[1].data_ptr():   # output is not h itself
        dest[0].copy_(out)
    return dest
