"""A ConvLSTM2D in PyTorch and a zoo of deliberately wrong variants of it.

The base (``TorchConvLSTM()``) claims everything the mutants need: every
activation, float32 and float64, masks and Masking layers, initial_state,
stateful follow-up calls, dropout drawn by the layer and injected by the
suite, go_backwards, both data formats and gradients (PyTorch autograd).  It
must pass the whole ``ci`` suite.  Each mutant (``TorchConvLSTM(name)``)
makes exactly one documented deviation, keeps the base's claims, and must be
caught by the clause of :data:`MUTATIONS` that describes the deviation.

From the command line, each is an adapter object::

    pytest conformance --adapters "" --adapter-object tests.mutant_zoo:make.swap_i_f

The layer computes in NCHW internally (PyTorch's convolution layout) and
converts at the edges, so channels_last and channels_first differ only there.
"""
from __future__ import annotations

import functools
import time
import types
from dataclasses import dataclass

import numpy as np

from convlstm_conformance.features import Capabilities, activations, required_features
from convlstm_conformance.model import CALL, OK, RAISED, REFUSED, Adapter, Case, ErrorInfo, Outcome


@dataclass(frozen=True)
class Mutation:
    name: str
    clause: str      # the clause whose text the deviation contradicts
    doc: str


MUTATIONS: tuple[Mutation, ...] = (
    # Gate order: the blocks of kernel, recurrent_kernel and bias read in another order.
    Mutation("swap_i_f", "SEM-STEP", "gate blocks i and f exchanged"),
    Mutation("swap_i_c", "SEM-STEP", "gate blocks i and c exchanged"),
    Mutation("swap_i_o", "SEM-STEP", "gate blocks i and o exchanged"),
    Mutation("swap_f_c", "SEM-STEP", "gate blocks f and c exchanged"),
    Mutation("swap_f_o", "SEM-STEP", "gate blocks f and o exchanged"),
    Mutation("swap_c_o", "SEM-STEP", "gate blocks c and o exchanged"),
    # The forget-gate bias.
    Mutation("forget_bias_missing", "SEM-STEP", "the forget gate's bias is left out"),
    Mutation("forget_bias_doubled", "SEM-STEP", "the forget gate's bias is added twice"),
    Mutation("forget_bias_plus_0_01", "SEM-STEP", "the forget gate's bias is off by 0.01"),
    Mutation("no_bias_unit_forget", "SEM-NO-BIAS",
             "with use_bias=False the step still adds 1 to the forget gate "
             "(unit_forget_bias applied in the step instead of at initialization)"),
    # The recurrent convolution.
    Mutation("recurrent_layer_padding", "SEM-RECURRENT-CONV",
             "the recurrent convolution takes the layer's padding ('valid' shrinks it; "
             "the missing border gets no recurrent term)"),
    Mutation("recurrent_layer_strides", "SEM-RECURRENT-CONV",
             "the recurrent convolution takes the layer's strides (the positions it "
             "does not reach get no recurrent term)"),
    Mutation("recurrent_layer_dilation", "SEM-RECURRENT-DILATION",
             "the recurrent convolution takes the layer's dilation_rate"),
    Mutation("bias_in_both_convs", "SEM-RECURRENT-CONV",
             "the bias is added by the recurrent convolution too"),
    # 'same' padding.
    Mutation("same_pad_wrong_side", "SEM-SAME-EVEN-KERNEL",
             "an odd 'same' padding puts its extra row/column top/left (both convolutions)"),
    Mutation("same_pad_symmetric", "SEM-SAME-EVEN-KERNEL",
             "'same' pads the input symmetrically, rounding an odd total up "
             "(padding=k//2, as PyTorch ports do): even kernels gain an output row/column"),
    # Kernel and channel layout.
    Mutation("kernel_hw_swapped", "SEM-WEIGHT-LAYOUT",
             "kernels read as (kw, kh, ...): taps with rows and columns exchanged"),
    Mutation("kernel_flipped", "SEM-WEIGHT-LAYOUT",
             "a true convolution (kernels rotated by 180 degrees) instead of Keras's "
             "cross-correlation"),
    Mutation("input_channels_reversed", "SEM-WEIGHT-LAYOUT",
             "input channels read in reverse order"),
    Mutation("recurrent_channels_reversed", "SEM-WEIGHT-LAYOUT",
             "the state's channels read in reverse order by the recurrent kernel"),
    Mutation("channels_first_as_last", "SEM-DATA-FORMAT",
             "channels_first arrays reshaped, not transposed, to and from channels_last"),
    # Activations.
    Mutation("activations_swapped", "SEM-ACTIVATIONS",
             "activation and recurrent_activation exchanged"),
    Mutation("hard_sigmoid_keras2", "SEM-ACTIVATIONS",
             "hard_sigmoid as Keras 2 defined it: clip(0.2 x + 0.5, 0, 1)"),
    Mutation("hard_sigmoid_as_sparse", "SEM-ACTIVATIONS",
             "hard_sigmoid as BinaryConnect defined it: clip((x + 1) / 2, 0, 1)"),
    Mutation("relu_as_leaky", "SEM-ACTIVATIONS", "relu computed as a leaky relu (slope 0.01)"),
    Mutation("leaky_relu_keras2", "SEM-ACTIVATIONS",
             "leaky_relu with Keras 2's slope 0.3 instead of 0.2"),
    Mutation("scaled_tanh", "SEM-ACTIVATIONS", "tanh as LeCun's 1.7159 tanh(2x/3)"),
    Mutation("gelu_tanh_approx", "SEM-ACTIVATIONS",
             "gelu by its tanh approximation instead of erf"),
    # What the call returns.
    Mutation("states_swapped", "STRUCT-LAST-STATE", "return_state returns [output, c, h]"),
    Mutation("return_state_previous_step", "STRUCT-LAST-STATE",
             "return_state returns the state before the last step"),
    Mutation("go_backwards_rereversed", "SEM-GO-BACKWARDS",
             "go_backwards returns its outputs in input order, reversed back"),
    Mutation("go_backwards_ignored", "SEM-GO-BACKWARDS", "go_backwards processes first to last"),
    # Masks.
    Mutation("mask_ignored", "SEM-MASK", "the mask is ignored"),
    Mutation("masked_steps_zero", "SEM-MASK",
             "a masked step outputs zeros instead of repeating the previous output"),
    Mutation("mask_not_reversed", "SEM-MASK",
             "with go_backwards the mask is read in processing order, not reversed with "
             "the inputs"),
    # Initial and carried state.
    Mutation("initial_state_ignored", "SEM-INITIAL-STATE", "initial_state is ignored"),
    Mutation("initial_state_swapped", "SEM-INITIAL-STATE", "initial_state read as [c, h]"),
    Mutation("stateful_not_carried", "SEM-STATEFUL-CARRY",
             "a stateful layer starts every call from zeros"),
    Mutation("stateful_reset_ignored", "SEM-STATEFUL-RESET",
             "reset_states() does not reset: the state is carried across it"),
    Mutation("stateful_initial_state_ignored", "SEM-STATEFUL-INITIAL-STATE",
             "a stateful layer's carried state wins over an explicit initial_state"),
    # Dropout.
    Mutation("dropout_redrawn_each_step", "SEM-DROPOUT-MASKS",
             "dropout masks drawn afresh at every time step (the given ones at the first)"),
    Mutation("dropout_at_inference", "SEM-DROPOUT-INFERENCE",
             "dropout applied with training=False too"),
    # Arithmetic.
    Mutation("float16_accumulation", "SEM-STEP",
             "float32 convolutions accumulate their sums in float16"),
    Mutation("time_loop_off_by_one", "SEM-STEP",
             "step t reads input t - 1 (the first step reads the last input)"),
    # Gradients (as a custom backward with one wrong line would give them).
    Mutation("grad_recurrent_kernel_negated", "SEM-GRADIENTS",
             "the gradient of recurrent_kernel has the wrong sign"),
    Mutation("grad_kernel_doubled", "SEM-GRADIENTS", "the gradient of kernel is twice too big"),
)

ZOO: dict[str, Mutation] = {m.name: m for m in MUTATIONS}

GATES = "ifco"
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _torch():
    import torch
    # One thread: the cases are tiny, and the machine is shared.
    torch.set_num_threads(1)
    return torch


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


def _same_pads(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """(before, after) of TF/XLA 'same' padding: the odd one goes after."""
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


@functools.lru_cache(maxsize=None)
def capabilities() -> Capabilities:
    names = activations() | {None}
    return Capabilities(activation=names, recurrent_activation=names,
                        dtype=frozenset({"float32", "float64"}), mask=True, masking_layer=True,
                        initial_state=True, stateful=True, go_backwards=True, dropout=True,
                        dropout_injection=True, gradients=True)


def _activation_table(mutation: str | None):
    torch = _torch()
    F = torch.nn.functional
    table = {
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        # Not F.hardsigmoid, whose float64 gradient is a float32 1/6 (torch 2.13).
        "hard_sigmoid": lambda x: torch.clamp(x + 3, 0.0, 6.0) / 6,
        "relu": F.relu,
        "relu6": F.relu6,
        "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
        "elu": F.elu,
        # Not F.selu, whose gradient for x << 0 cancels (result + alpha * scale).
        "selu": lambda x: _SELU_SCALE * torch.where(
            x > 0, x, _SELU_ALPHA * torch.expm1(torch.clamp(x, max=0.0))),
        "celu": F.celu,
        # F.softplus returns x itself past x = 20: off by 2e-9, too much in float64.
        "softplus": lambda x: torch.logaddexp(x, torch.zeros_like(x)),
        "softsign": F.softsign,
        "squareplus": lambda x: (x + torch.sqrt(x * x + 4)) / 2,
        "soft_shrink": lambda x: F.softshrink(x, 0.5),
        "hard_shrink": lambda x: F.hardshrink(x, 0.5),
        "tanh_shrink": F.tanhshrink,
        "hard_tanh": F.hardtanh,
        "sparse_plus": lambda x: torch.where(x <= -1, 0.0,
                                             torch.where(x >= 1, x, 0.25 * (x + 1) ** 2)),
        "sparse_sigmoid": lambda x: torch.clamp(0.5 * (x + 1), 0.0, 1.0),
        "silu": F.silu,
        "swish": F.silu,
        "gelu": F.gelu,
        "exponential": torch.exp,
        "hard_silu": F.hardswish,
        "hard_swish": F.hardswish,
        "mish": lambda x: x * torch.tanh(torch.logaddexp(x, torch.zeros_like(x))),
        "log_sigmoid": F.logsigmoid,
        "linear": lambda x: x,
    }
    if mutation == "hard_sigmoid_keras2":
        table["hard_sigmoid"] = lambda x: torch.clamp(0.2 * x + 0.5, 0.0, 1.0)
    elif mutation == "hard_sigmoid_as_sparse":
        table["hard_sigmoid"] = table["sparse_sigmoid"]
    elif mutation == "relu_as_leaky":
        table["relu"] = lambda x: F.leaky_relu(x, 0.01)
    elif mutation == "leaky_relu_keras2":
        table["leaky_relu"] = lambda x: F.leaky_relu(x, 0.3)
    elif mutation == "scaled_tanh":
        table["tanh"] = lambda x: 1.7159 * torch.tanh(x * (2.0 / 3.0))
    elif mutation == "gelu_tanh_approx":
        table["gelu"] = lambda x: F.gelu(x, approximate="tanh")
    return table


class TorchConvLSTM(Adapter):
    """ConvLSTM2D in PyTorch; ``mutation`` names one deviation of :data:`ZOO`."""

    def __init__(self, mutation: str | None = None):
        if mutation is not None and mutation not in ZOO:
            raise ValueError(f"unknown mutation {mutation!r}; known: {sorted(ZOO)}")
        self.mutation = mutation
        self.name = "zoo-base" if mutation is None else f"zoo-{mutation}"

    def capabilities(self) -> Capabilities:
        return capabilities()

    def versions(self) -> dict[str, str]:
        return {"torch": _torch().__version__}

    def run(self, case: Case) -> Outcome:
        start = time.perf_counter()
        missing = self.capabilities().missing(required_features(case))
        if missing:
            return Outcome(status=REFUSED, detail=f"outside capabilities: {missing}")
        if case.kernel is None or case.recurrent_kernel is None or (
                case.config.get("use_bias", True) and case.bias is None):
            return Outcome(status=REFUSED, detail="no initializers: the case must carry weights")
        try:
            outputs, grads, followups = _Layer(case, self.mutation).run()
        except (ValueError, RuntimeError) as exc:   # e.g. an input too small for the kernel
            return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, CALL),
                           duration_s=time.perf_counter() - start)
        names = {"torch.float32": "float32", "torch.float64": "float64"}
        return Outcome(status=OK, outputs=[o.detach().double().numpy() for o in outputs],
                       structure="list" if len(outputs) > 1 else "tensor",
                       dtypes=[names[str(o.dtype)] for o in outputs], grads=grads,
                       followup_outputs=[[o.detach().double().numpy() for o in f]
                                         for f in followups],
                       duration_s=time.perf_counter() - start)


class _Layer:
    """One layer object: the case's first call, its follow-up calls, gradients."""

    def __init__(self, case: Case, mutation: str | None):
        self.torch = torch = _torch()
        self.case, self.m = case, mutation
        cfg = case.config
        self.cfg = cfg
        self.dt = {"float32": torch.float32, "float64": torch.float64}[case.dtype]
        self.F = int(cfg["filters"])
        self.kh, self.kw = _pair(cfg["kernel_size"])
        self.strides = _pair(cfg.get("strides", 1))
        self.dilation = _pair(cfg.get("dilation_rate", 1))
        self.padding = str(cfg.get("padding", "valid")).lower()
        self.cf = cfg.get("data_format") == "channels_first"
        table = _activation_table(mutation)
        self.act = table[cfg.get("activation", "tanh") or "linear"]
        self.ract = table[cfg.get("recurrent_activation", "sigmoid") or "linear"]
        if mutation == "activations_swapped":
            self.act, self.ract = self.ract, self.act
        self.rates = (float(cfg.get("dropout", 0.0) or 0.0),
                      float(cfg.get("recurrent_dropout", 0.0) or 0.0))
        # A new layer per case: a seed makes its mask sequence repeat.
        self.rng = np.random.default_rng(cfg.get("seed"))

    def tensor(self, a, grad: bool = False):
        t = self.torch.tensor(np.asarray(a, dtype=np.float64), dtype=self.dt)
        return t.requires_grad_(True) if grad else t

    # -- the whole case ------------------------------------------------
    def run(self):
        case, m, torch = self.case, self.m, self.torch
        grad = case.cotangent is not None
        leaves = {"inputs": self.tensor(case.inputs, grad),
                  "kernel": self.tensor(case.kernel, grad),
                  "recurrent_kernel": self.tensor(case.recurrent_kernel, grad)}
        use_bias = self.cfg.get("use_bias", True)
        if use_bias:
            leaves["bias"] = self.tensor(case.bias, grad)
        init = None
        if case.initial_state is not None:
            leaves["initial_h"] = self.tensor(case.initial_state[0], grad)
            leaves["initial_c"] = self.tensor(case.initial_state[1], grad)
            init = (leaves["initial_h"], leaves["initial_c"])
        self.weights(leaves["kernel"], leaves["recurrent_kernel"], leaves.get("bias"))
        mask = case.mask
        if case.masking_value is not None:
            x = np.asarray(case.inputs)
            mask = (x != case.masking_value).reshape(x.shape[0], x.shape[1], -1).any(axis=-1)
        out, h, c, prev = self.call(leaves["inputs"], init, mask)
        outputs = [out]
        if self.cfg.get("return_state", False):
            if m == "states_swapped":
                outputs += [c, h]
            elif m == "return_state_previous_step":
                outputs += list(prev)
            else:
                outputs += [h, c]
        grads = {}
        if grad:
            loss = (out * self.tensor(case.cotangent)).sum()
            names = list(leaves)
            got = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
            for n, g in zip(names, got):
                g = torch.zeros_like(leaves[n]) if g is None else g
                grads[n] = g.detach().double().numpy()
            if m == "grad_recurrent_kernel_negated":
                grads["recurrent_kernel"] = -grads["recurrent_kernel"]
            elif m == "grad_kernel_doubled":
                grads["kernel"] = 2.0 * grads["kernel"]
        followups = []
        state = (h.detach(), c.detach())
        stateful = bool(self.cfg.get("stateful", False))
        for call in case.followups:
            if call.initial_state is not None and not (
                    m == "stateful_initial_state_ignored" and stateful):
                start = (self.tensor(call.initial_state[0]), self.tensor(call.initial_state[1]))
            elif call.reset and m != "stateful_reset_ignored":
                start = None
            elif stateful and m != "stateful_not_carried":
                start = state
            else:
                start = None
            o, h2, c2, _ = self.call(self.tensor(call.inputs), start, None)
            state = (h2.detach(), c2.detach())
            followups.append([o, h2, c2] if self.cfg.get("return_state", False) else [o])
        return outputs, grads, followups

    # -- weights -------------------------------------------------------
    def weights(self, K, U, b):
        torch, m, F = self.torch, self.m, self.F
        if m and m.startswith("swap_"):
            a, z = (GATES.index(g) for g in m[5:].split("_"))
            order = list(range(4))
            order[a], order[z] = order[z], order[a]
            perm = torch.tensor([g * F + j for g in order for j in range(F)])
            K, U = K[..., perm], U[..., perm]
            b = None if b is None else b[perm]
        forget = torch.zeros(4 * F, dtype=self.dt)
        forget[F:2 * F] = 1.0
        if b is not None:
            if m == "forget_bias_missing":
                b = b * (1 - forget)
            elif m == "forget_bias_doubled":
                b = b + b * forget
            elif m == "forget_bias_plus_0_01":
                b = b + 0.01 * forget
        elif m == "no_bias_unit_forget":
            b = forget
        if m == "kernel_hw_swapped":
            K = K.reshape(self.kw, self.kh, *K.shape[2:]).permute(1, 0, 2, 3)
            U = U.reshape(self.kw, self.kh, *U.shape[2:]).permute(1, 0, 2, 3)
        elif m == "kernel_flipped":
            K, U = K.flip(0, 1), U.flip(0, 1)
        elif m == "recurrent_channels_reversed":
            U = U.flip(2)
        # (kh, kw, in, 4F) -> PyTorch's (4F, in, kh, kw)
        self.K, self.U = K.permute(3, 2, 0, 1), U.permute(3, 2, 0, 1)
        self.b = None if b is None else b.reshape(1, -1, 1, 1)

    # -- layouts -------------------------------------------------------
    def seq_in(self, x):
        """(B, T, ...) in the case's layout -> (B, T, C, H, W)."""
        if not self.cf:
            return x.permute(0, 1, 4, 2, 3)
        if self.m == "channels_first_as_last":
            B, T, C, H, W = x.shape
            return x.reshape(B, T, H, W, C).permute(0, 1, 4, 2, 3)
        return x

    def state_in(self, s):
        if not self.cf:
            return s.permute(0, 3, 1, 2)
        if self.m == "channels_first_as_last":
            B, F, H, W = s.shape
            return s.reshape(B, H, W, F).permute(0, 3, 1, 2)
        return s

    def state_out(self, s):
        if not self.cf:
            return s.permute(0, 2, 3, 1)
        if self.m == "channels_first_as_last":
            return s.permute(0, 2, 3, 1).reshape(s.shape)
        return s

    def seq_out(self, s):
        if not self.cf:
            return s.permute(0, 1, 3, 4, 2)
        if self.m == "channels_first_as_last":
            return s.permute(0, 1, 3, 4, 2).reshape(s.shape)
        return s

    # -- convolutions --------------------------------------------------
    def conv(self, x, w, pads, stride=(1, 1), dilation=(1, 1)):
        """Cross-correlation of NCHW ``x`` padded by ``pads`` (top, bottom, left, right)."""
        torch = self.torch
        (t, b), (l, r) = pads
        # Canonical strides: torch 2.13's float32 CPU convolution returns wrong
        # numbers (uninitialised memory, even) for a one-channel input whose
        # strides also read as channels_last, with strides (1, 2).
        x = torch.nn.functional.pad(x, (l, r, t, b)).clone(memory_format=torch.contiguous_format)
        w = w.clone(memory_format=torch.contiguous_format)
        if self.m == "float16_accumulation" and self.dt == torch.float32:
            return self.conv_f16(x, w, stride, dilation)
        return torch.nn.functional.conv2d(x, w, stride=stride, dilation=dilation)

    def conv_f16(self, x, w, stride, dilation):
        torch = self.torch
        B, _, H, W = x.shape
        O, C, kh, kw = w.shape
        cols = torch.nn.functional.unfold(x, (kh, kw), dilation=dilation, stride=stride)
        wf = w.reshape(O, -1)
        acc = torch.zeros(B, O, cols.shape[-1], dtype=torch.float16)
        for k in range(cols.shape[1]):
            acc = (acc.float() + wf[:, k][None, :, None] * cols[:, k][:, None, :]).half()
        oh = (H - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        ow = (W - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        return acc.float().reshape(B, O, oh, ow)

    def same(self, n, k, s, d, symmetric_ok=False):
        before, after = _same_pads(n, k, s, d)
        if self.m == "same_pad_wrong_side":
            return after, before
        if self.m == "same_pad_symmetric" and symmetric_ok:
            return after, after
        return before, after

    def input_pads(self, H, W):
        if self.padding == "valid":
            return (0, 0), (0, 0)
        (sh, sw), (dh, dw) = self.strides, self.dilation
        return (self.same(H, self.kh, sh, dh, True), self.same(W, self.kw, sw, dw, True))

    def input_conv(self, xt, dm):
        pads = self.input_pads(*xt.shape[2:])
        F = self.F
        if dm is None:
            z = self.conv(xt, self.K, pads, self.strides, self.dilation)
        else:
            z = self.torch.cat([self.conv(xt * dm[g], self.K[g * F:(g + 1) * F], pads,
                                          self.strides, self.dilation) for g in range(4)], 1)
        return z if self.b is None else z + self.b

    def recurrent_conv(self, h, rm):
        torch, m, F = self.torch, self.m, self.F
        Ho, Wo = h.shape[2:]
        stride, dilation, fill = (1, 1), (1, 1), False
        if m == "recurrent_layer_strides":
            stride, fill = self.strides, True
        elif m == "recurrent_layer_dilation":
            dilation = self.dilation
        if m == "recurrent_layer_padding" and self.padding == "valid":
            pads, fill = ((0, 0), (0, 0)), True
            if Ho < self.kh or Wo < self.kw:   # a 'valid' convolution reaching no position
                return torch.zeros(h.shape[0], 4 * F, Ho, Wo, dtype=self.dt)
        else:
            pads = (self.same(Ho, self.kh, stride[0], dilation[0]),
                    self.same(Wo, self.kw, stride[1], dilation[1]))
        if rm is None:
            z = self.conv(h, self.U, pads, stride, dilation)
        else:
            z = torch.cat([self.conv(h * rm[g], self.U[g * F:(g + 1) * F], pads, stride,
                                     dilation) for g in range(4)], 1)
        if fill:   # positions the convolution did not reach get no recurrent term
            z = torch.nn.functional.pad(z, (0, Wo - z.shape[3], 0, Ho - z.shape[2]))
        if m == "bias_in_both_convs" and self.b is not None:
            z = z + self.b
        return z

    # -- dropout -------------------------------------------------------
    def draw(self, shape):
        """Four masks (one per gate) of the two rates, scaled for inverted dropout."""
        masks = []
        for rate, sh in zip(self.rates, shape):
            keep = self.rng.random((4,) + sh) >= rate
            masks.append(None if rate == 0 else
                         self.tensor(np.where(keep, 1.0 / (1.0 - rate), 0.0)))
        return masks

    # -- one call ------------------------------------------------------
    def call(self, x, init, mask):
        """(output, h, c, (h, c) before the last step), in the case's layout."""
        torch, m, case = self.torch, self.m, self.case
        x = self.seq_in(x)
        if m == "input_channels_reversed":
            x = x.flip(2)
        B, T = x.shape[:2]
        z0 = self.input_conv(x[:, 0], None) if T else None
        Ho, Wo = z0.shape[2:]
        F = self.F
        frame, state = (B, x.shape[2], x.shape[3], x.shape[4]), (B, F, Ho, Wo)
        dm = rm = None
        training = bool(case.training)
        if training and (case.dropout_mask is not None or case.recurrent_dropout_mask is not None):
            if case.dropout_mask is not None:
                dm = self.tensor(case.dropout_mask).permute(0, 1, 4, 2, 3)
            if case.recurrent_dropout_mask is not None:
                rm = self.tensor(case.recurrent_dropout_mask).permute(0, 1, 4, 2, 3)
        elif (training or m == "dropout_at_inference") and max(self.rates) > 0:
            dm, rm = self.draw((frame, state))
        if init is None or m == "initial_state_ignored":
            h = c = torch.zeros(state, dtype=self.dt)
        else:
            h, c = (self.state_in(s) for s in init)
            if m == "initial_state_swapped":
                h, c = c, h
        backwards = bool(self.cfg.get("go_backwards", False)) and m != "go_backwards_ignored"
        order = list(range(T - 1, -1, -1)) if backwards else list(range(T))
        mask_t = None if mask is None or m == "mask_ignored" else torch.tensor(np.asarray(mask))
        prev_out = torch.zeros(state, dtype=self.dt)
        outs, prev = [], (h, c)
        for k, t in enumerate(order):
            if k and m == "dropout_redrawn_each_step" and max(self.rates) > 0:
                dm, rm = self.draw((frame, state))
            xt = x[:, t - 1] if m == "time_loop_off_by_one" else x[:, t]
            z = self.input_conv(xt, dm) + self.recurrent_conv(h, rm)
            i = self.ract(z[:, :F])
            f = self.ract(z[:, F:2 * F])
            g = self.act(z[:, 2 * F:3 * F])
            o = self.ract(z[:, 3 * F:])
            c_new = f * c + i * g
            h_new = o * self.act(c_new)
            prev = (h, c)
            if mask_t is None:
                h, c, out = h_new, c_new, h_new
            else:
                on = mask_t[:, k if m == "mask_not_reversed" else t].reshape(B, 1, 1, 1)
                h = torch.where(on, h_new, h)
                c = torch.where(on, c_new, c)
                out = torch.where(on, h_new, torch.zeros_like(h_new)
                                  if m == "masked_steps_zero" else prev_out)
            prev_out = out
            outs.append(out)
        if m == "go_backwards_rereversed" and backwards:
            outs = outs[::-1]
        if self.cfg.get("return_sequences", False):
            output = self.seq_out(torch.stack(outs, 1))
        else:
            output = self.state_out(outs[-1])
        return (output, self.state_out(h), self.state_out(c),
                (self.state_out(prev[0]), self.state_out(prev[1])))


def _factory(name: str | None):
    return functools.partial(TorchConvLSTM, name)


#: Adapter objects for ``--adapter-object tests.mutant_zoo:make.NAME``.
make = types.SimpleNamespace(base=_factory(None), **{m.name: _factory(m.name) for m in MUTATIONS})


def object_path(name: str | None) -> str:
    """What ``--adapter-object`` takes for a zoo member (``None``: the base)."""
    return f"tests.mutant_zoo:make.{name or 'base'}"


#: The suite's test function judging each kind of clause.
SUITE_TESTS = {"semantics": "conformance/test_numerics.py::test_matches_oracle",
               "gradients": "conformance/test_gradients.py::test_gradients_match_oracle",
               "structure": "conformance/test_structure.py::test_structure",
               "shape": "conformance/test_structure.py::test_structure",
               "layout": "conformance/test_structure.py::test_structure",
               "dropout": "conformance/test_dropout.py::test_dropout"}


def suite_node(spec, path: str, clause_id: str) -> str:
    """The pytest node id of the suite's test of ``clause_id`` on the adapter
    object ``path`` (``module:attr``)."""
    return f"{SUITE_TESTS[spec.clause(clause_id).kind]}[object:{path}-{clause_id}]"


def suite_test(spec, clause_id: str) -> str:
    """The ``test`` field of the records of that test ("numerics", ...)."""
    module = SUITE_TESTS[spec.clause(clause_id).kind].split("::")[0]
    return module.rpartition("/test_")[2].removesuffix(".py")
