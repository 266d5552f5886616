"""The tolerance model: how far a correct implementation may stray from the oracle.

Every budget here is a *running error bound*, computed element by element
alongside the float64 oracle's own evaluation of the case (its trace), in
the style of Wilkinson's running error analysis.  Nothing is a constant picked
until tests pass; the only free parameters are the ones named below, each with
its reason.

Model, for an implementation computing in a format with unit roundoff ``u``
(float64 2^-53, float32 2^-24, float16 2^-11, bfloat16 2^-8), on inputs and
weights that are exactly representable in that format (the suite rounds them
before handing them out, so input rounding contributes nothing):

1. **Pre-activations.**  Each gate pre-activation ``z = W*x + b + U*h`` is a sum
   of ``K = kh*kw*(C_in + F) + 1`` products.  Whatever the summation order
   (direct, im2col GEMM, blocked, fused), its rounding error is at most
   ``gamma_K * M`` where ``M = |W|*|x| + |b| + |U|*|h|`` is the magnitude sum
   the oracle records and ``gamma_K = K u / (1 - K u)`` (Higham, *Accuracy and
   Stability of Numerical Algorithms*, 2nd ed., §3.1).  When ``K u`` is too large
   for that bound to mean anything (bfloat16 with big kernels) the probabilistic
   bound ``lambda * sqrt(K) * u`` of Higham & Mary (2019) takes over, with
   ``lambda = 8`` (failure probability below 1e-13 per element).
   State error carried in from the previous step adds ``|U| * dh``.
   Fast convolution algorithms (Winograd, FFT) are not summation orders:
   their transforms round products that the convolution never forms, so
   their error is not bounded by ``M`` in general (a kernel with one nonzero
   tap can leave ``M`` at zero where they are not exact).  On the dense data
   the strategies draw it stays far inside this bound: the reference's
   Winograd convolution is measured against it in tests/test_winograd.py.
2. **Activations.**  An error ``dz`` in the argument moves ``act(z)`` by at most
   ``L * dz``, ``L`` the largest slope of ``act`` over ``[z - dz, z + dz]``
   (measured on the oracle's own activation, so kinks of relu-like functions
   are covered).  The activation itself may be off by ``ACT_ULPS`` units of
   roundoff of ``max(|act(z)|, 1)``: library tanh/sigmoid/exp are approximations
   accurate to a few ulps.  A bounded activation's error never exceeds the
   width of its range (``ACT_RANGE``: 1 for sigmoid, 2 for tanh, ...).
3. **Cell and hidden state.**  ``c' = f c + i g`` and ``h' = o act(c')`` propagate
   as products do: ``dc' = |f| dc + |c| df + df dc + |i| dg + |g| di + di dg``
   plus the rounding of the products and the sum; likewise for ``h'``.  The
   second-order products matter only where errors are large: a forget gate
   the oracle saturates (f ~ 0, so |f| dc ~ 0) may not be saturated within its
   error bound, and then df dc is the whole error.  Masked steps carry the
   previous error unchanged.
4. **Underflow.**  Relative bounds assume results stay in the normal range.  A
   product that lands among the subnormals is off by up to half their spacing,
   an absolute ``eta`` (Higham §2.1: ``fl(x*y) = x*y*(1 + d) + e``, ``|e| <=
   eta``); sums of subnormals are exact.  ``eta`` matters for float16 only
   (2^-25, where its gradients near zero round to multiples of 2^-24), so each
   rounding count above adds that many ``eta``.
5. **Safety factor** ``SAFETY = 2`` covers the second-order terms dropped in 1, 2
   and 4.
6. **Domain.**  The model cannot judge a case whose oracle values exceed the
   largest finite number of the implementation's format (it overflows to inf
   where the float64 oracle does not), nor one whose bounds have grown so far
   that they are unbounded in float64 (an expanding recurrence has
   amplified rounding past every digit).
   ``unjudgeable`` detects both from the oracle alone, so no implementation
   can steer into them; the verdict then says "not judged" and the suite
   counts it (``not_judged`` in the test's record) instead of passing or
   failing it.

The budget of an element is ``SAFETY * d`` for the implementation's format plus
the oracle's own bound at float64, and a comparison reports
``ratio = max |impl - oracle| / budget``: at most 1 passes.  The calibration
(``benchmarks/soak_tolerance.py``) shows correct implementations stay far below
1 and a forget-gate bias off by 0.01 lands far above it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from convlstm_conformance import oracle
from convlstm_conformance.model import Case, Outcome, OK

UNIT_ROUNDOFF = {
    "float64": 2.0 ** -53,
    "float32": 2.0 ** -24,
    "float16": 2.0 ** -11,
    "bfloat16": 2.0 ** -8,
    # Keras mixed-precision policies compute in the half format.
    "mixed_float16": 2.0 ** -11,
    "mixed_bfloat16": 2.0 ** -8,
}
# Half the spacing of the subnormal numbers: a product's absolute error when it
# underflows (model item 4).  Keyed by unit roundoff, which is how the bounds
# below know the format.
UNDERFLOW = {
    2.0 ** -53: 2.0 ** -1075,    # float64
    2.0 ** -24: 2.0 ** -150,     # float32
    2.0 ** -11: 2.0 ** -25,      # float16
    2.0 ** -8: 2.0 ** -134,      # bfloat16 (float32's exponent range)
}
ACT_ULPS = 8.0       # library activations: a few ulps of max(|y|, 1)
LAMBDA = 8.0         # probabilistic bound multiplier (Higham & Mary 2019)
SAFETY = 2.0         # second-order terms


def gamma(k: int, u: float) -> float:
    """Bound on the relative error of a k-term dot product."""
    ku = k * u
    worst = ku / (1.0 - ku) if ku < 0.5 else math.inf
    return min(worst, LAMBDA * math.sqrt(k) * u)


def _slope(act, z: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """Largest |slope| of ``act`` over [z - dz, z + dz], to first order."""
    eps = np.maximum(dz, 1e-7 * np.maximum(np.abs(z), 1.0))
    with np.errstate(over="ignore", invalid="ignore"):
        y0, ylo, yhi = act(z), act(z - eps), act(z + eps)
        zc = z + 1e-7 * np.maximum(np.abs(z), 1.0)
        mid = np.abs(act(zc) - y0) / (zc - z)
        s = np.maximum(np.maximum(np.abs(yhi - y0), np.abs(y0 - ylo)) / eps, mid)
    return np.nan_to_num(s, nan=np.inf, posinf=np.inf)


# Width of the range of the bounded activations: an activation's error can
# never exceed it, however large the error of its argument (which the slope
# bound alone would let grow without limit once errors are large).
ACT_RANGE = {"sigmoid": 1.0, "hard_sigmoid": 1.0, "sparse_sigmoid": 1.0, "tanh": 2.0,
             "hard_tanh": 2.0, "softsign": 2.0}


def _act_bound(name: str | None, act, z: np.ndarray, y: np.ndarray, dz: np.ndarray,
               u: float) -> np.ndarray:
    """Error bound of y = act(z) given an error bound dz of z (model item 2)."""
    d = _slope(act, z, dz) * dz + _act_err(y, u)
    width = ACT_RANGE.get(name or "linear")
    return d if width is None else np.minimum(d, width + _act_err(y, u))


def _act_err(y: np.ndarray, u: float) -> np.ndarray:
    return ACT_ULPS * u * np.maximum(np.abs(y), 1.0)


def error_bounds(case: Case, result: "oracle.Result", u: float,
                 per_step: list | None = None,
                 initial: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """First-order error bounds of output, h and c for unit roundoff ``u``.

    Arrays come back in the case's data_format, shaped like the oracle's.
    With ``per_step`` a list, the bounds of every step's intermediate values
    are appended to it (channels_last), for the gradient budget.  Overflow in
    the oracle's trace makes the bounds it reaches inf or NaN, as IEEE
    arithmetic gives them, without a warning.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return _error_bounds(case, result, u, per_step, initial)


def _error_bounds(case: Case, result: "oracle.Result", u: float, per_step: list | None,
                  initial: tuple[np.ndarray, np.ndarray] | None) -> dict[str, np.ndarray]:
    cfg = case.config
    F = int(cfg["filters"])
    act_name = cfg.get("activation", "tanh")
    ract_name = cfg.get("recurrent_activation", "sigmoid")
    act = oracle.activation(act_name)
    ract = oracle.activation(ract_name)
    kh, kw = oracle.pair(cfg["kernel_size"])
    absU = np.abs(np.asarray(case.recurrent_kernel, dtype=np.float64))
    rmask = (case.recurrent_dropout_mask
             if case.training and case.recurrent_dropout_mask is not None else None)
    g = gamma(result.trace.accumulation + 2, u)
    eta = UNDERFLOW[u]

    steps = result.trace.steps
    shape = steps[0].h.shape
    Ho, Wo = shape[1:3]
    pad = oracle.same_pad_spec(Ho, Wo, kh, kw)
    # ``initial``: error bounds of a carried-in state (channels_last), e.g. the
    # final state of a previous call on a stateful layer.
    dh = np.zeros(shape) if initial is None else initial[0]
    dc = np.zeros(shape) if initial is None else initial[1]
    dout = np.zeros(shape)
    outs = []
    for st in steps:
        dz = g * st.mag + (result.trace.accumulation + 2) * eta
        if dh.any():
            for gi in range(4):
                sl = slice(gi * F, (gi + 1) * F)
                dhg = dh * np.abs(rmask[gi]) if rmask is not None else dh
                dz[..., sl] += oracle.conv2d(np.pad(dhg, pad), absU[..., sl])
        d = np.empty_like(dz)
        for gi, (name, fn) in enumerate(((ract_name, ract), (ract_name, ract), (act_name, act),
                                         (ract_name, ract))):
            sl = slice(gi * F, (gi + 1) * F)
            d[..., sl] = _act_bound(name, fn, st.z[..., sl], st.gates[..., sl], dz[..., sl], u)
        i, f, gc, o = (st.gates[..., k * F:(k + 1) * F] for k in range(4))
        di, df, dg, do = (d[..., k * F:(k + 1) * F] for k in range(4))
        fc, ig = np.abs(f * st.c_prev), np.abs(i * gc)
        # Products carry their second-order term too (|x y - x' y'| <= |x| dy +
        # |y| dx + dx dy): negligible while errors are small, decisive where a
        # gate the oracle saturates is not saturated within its error bound.
        dc_new = (np.abs(f) * dc + np.abs(st.c_prev) * df + np.abs(i) * dg + np.abs(gc) * di
                  + df * dc + di * dg
                  + 2 * u * (fc + ig) + u * np.abs(st.c) + 2 * eta)
        a = act(st.c)
        da = _act_bound(act_name, act, st.c, a, dc_new, u)
        dh_new = np.abs(o) * da + np.abs(a) * do + do * da + 2 * u * np.abs(st.h) + eta
        # Bounds that have grown past the float64 range make 0 * inf = NaN:
        # read as "unbounded" (judge reports such cases as not judgeable).
        dc_new, da, dh_new = (np.nan_to_num(v, nan=np.inf) for v in (dc_new, da, dh_new))
        if per_step is not None:
            # Slopes are evaluated from rounded values too (1 - y^2 for tanh,
            # y (1 - y) for sigmoid): a few ulps of max(|y|, 1) each.
            per_step.append({"z": dz, "gates": d, "c_prev": dc, "h_prev": dh, "c": dc_new, "a": da,
                             "slope_gates": _act_err(st.gates, u), "slope_a": _act_err(a, u)})
        sel = st.active[:, None, None, None]
        dh = np.where(sel, dh_new, dh)
        dc = np.where(sel, dc_new, dc)
        dout = np.where(sel, dh_new, dout)
        outs.append(dout)

    cf = case.channels_first
    if cfg.get("return_sequences", False):
        out = oracle.from_last(np.stack(outs, axis=1), cf, time_axis=True)
    else:
        out = oracle.from_last(outs[-1], cf, time_axis=False)
    return {"output": out, "h": oracle.from_last(dh, cf, False),
            "c": oracle.from_last(dc, cf, False), "h_last": dh, "c_last": dc}


# The largest finite value of the format each dtype computes in.
FORMAT_MAX = {"float64": float(np.finfo(np.float64).max), "float32": float(np.finfo(np.float32).max),
              "float16": 65504.0, "bfloat16": 3.3895313892515355e38,
              "mixed_float16": 65504.0, "mixed_bfloat16": 3.3895313892515355e38}


def unjudgeable(case: Case, result: "oracle.Result", bounds: dict[str, np.ndarray]) -> str:
    """Why the model cannot judge ``case``, or "".

    * A value of the oracle's trace (pre-activation, gate, cell, activated
      cell, hidden state) beyond the largest finite number of the case's
      format: an implementation in that format overflows to inf, and NaN
      follows, where the float64 oracle stays finite.
    * Budgets that are not finite: the bounds of an expanding recurrence
      have grown past float64's range, so any result would pass.  Reported,
      not passed silently.  (Finite bounds are judged, however loose.)
    """
    big = FORMAT_MAX.get(case.dtype)
    if big is not None:
        act = oracle.activation(case.config.get("activation", "tanh"))
        with np.errstate(over="ignore", invalid="ignore"):
            top = max(float(np.nanmax(np.abs(v), initial=0.0))
                      for st in result.trace.steps
                      for v in (st.z, st.gates, st.c, act(st.c), st.h))
        if top > big:
            return (f"the oracle's values reach {top:.3g}, beyond the largest {case.dtype} "
                    f"({big:.3g}): an implementation in {case.dtype} overflows")
    for name, b in bounds.items():
        if not np.isfinite(b).all():
            return (f"the error bound of {name} is unbounded (past float64's range): the "
                    f"recurrence amplifies rounding past every digit")
    return ""


def budgets(case: Case, result: "oracle.Result | None" = None,
            carried: tuple | None = None) -> dict[str, np.ndarray]:
    """Per-element budgets for comparing an implementation of ``case.dtype``.

    ``carried``: (impl, own) bounds of a state carried in from a previous call.
    """
    if result is None:
        result = oracle.forward(case)
    u = UNIT_ROUNDOFF[case.dtype]
    impl = error_bounds(case, result, u, initial=carried[0] if carried else None)
    own = error_bounds(case, result, UNIT_ROUNDOFF["float64"], initial=carried[1] if carried else None)
    with np.errstate(over="ignore"):      # bounds past float64's range are inf
        out = {k: SAFETY * (impl[k] + own[k]) for k in ("output", "h", "c")}
    out["_carry"] = ((impl["h_last"], impl["c_last"]), (own["h_last"], own["c_last"]))
    return out


@dataclass
class TensorError:
    """Measured error of one returned tensor against its budget."""

    name: str
    max_abs: float
    budget: float           # the budget at the worst element
    ratio: float            # max over elements of |error| / budget
    index: tuple = ()
    expected: float = 0.0   # the oracle's value at the worst element
    got: float = 0.0        # the implementation's value there

    def to_json(self) -> dict:
        return {"max_abs": self.max_abs, "budget": self.budget, "ratio": self.ratio,
                "index": list(self.index)}

    @property
    def exact(self) -> bool:
        """Whether the worst element allows no error: a budget of zero, or an
        expected zero whose budget is only underflow slack (below the
        smallest normal float32), where error/budget would read as an
        astronomically large ratio rather than as what it is."""
        return self.budget == 0 or (self.expected == 0 and self.budget < EXACT_BUDGET)

    def describe(self) -> str:
        """One line: the error against its budget, or, where no error is
        allowed, the value expected exactly and the value returned."""
        at = f" at {self.index}" if self.index else ""
        if self.exact and self.ratio > 1:
            slack = f" (its budget {self.budget:.3g} is underflow slack)" if self.budget else ""
            return (f"{self.name}: expected exactly {_exact(self.expected)}, got "
                    f"{_exact(self.got)}{at}{slack} [FAIL]")
        flag = "FAIL" if self.ratio > 1 else "ok"
        return (f"{self.name}: max |error| {self.max_abs:.3g}, budget {self.budget:.3g}{at}, "
                f"error/budget {self.ratio:.3g} [{flag}]")


#: Budgets below this at an expected zero are underflow slack: "exactly 0".
EXACT_BUDGET = float(np.finfo(np.float32).tiny)


def _exact(value: float) -> str:
    """A value as it is (the shortest text that reads back the same), 0 as 0."""
    return "0" if value == 0 else repr(value)


@dataclass
class Verdict:
    passed: bool
    errors: dict[str, TensorError] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # Why the case could not be judged (outside the model's domain, model
    # item 6: values beyond the format's range, or unbounded error bounds);
    # empty when it was.  Such a verdict passes and says so.
    unjudged: str = ""

    @property
    def worst(self) -> float:
        if self.problems:
            return math.inf
        return max((e.ratio for e in self.errors.values()), default=0.0)

    def describe(self) -> str:
        if self.unjudged:
            return f"not judged: {self.unjudged}"
        return "\n".join(list(self.problems) + [e.describe() for e in self.errors.values()])


def compare_tensor(name: str, got: np.ndarray, want: np.ndarray,
                   budget: np.ndarray) -> TensorError | str:
    """Compare one tensor; a string when the shapes or special values disagree."""
    got = np.asarray(got, dtype=np.float64)
    if got.shape != want.shape:
        return f"{name}: shape {got.shape}, expected {want.shape}"
    # NaN and Inf are compared as such, not as numbers.
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    if (nan_g != nan_w).any():
        idx = tuple(int(v) for v in np.argwhere(nan_g != nan_w)[0])
        return f"{name}: NaN at {idx} in {'result' if nan_g[idx] else 'oracle'} only"
    inf_g, inf_w = np.isinf(got), np.isinf(want)
    if (inf_g != inf_w).any() or (np.sign(got[inf_g]) != np.sign(want[inf_w])).any():
        idx = tuple(int(v) for v in np.argwhere((inf_g != inf_w) | (inf_g & (got != want)))[0])
        return f"{name}: infinity mismatch at {idx}: got {got[idx]}, expected {want[idx]}"
    finite = ~(nan_w | inf_w)
    with np.errstate(invalid="ignore"):
        err = np.where(finite, np.abs(got - want), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err > 0, err / np.where(budget > 0, budget, 0.0), 0.0)
    ratio = np.nan_to_num(ratio, nan=math.inf)
    if ratio.size == 0:
        return TensorError(name, 0.0, 0.0, 0.0)
    flat = int(np.argmax(ratio))
    idx = tuple(int(v) for v in np.unravel_index(flat, ratio.shape))
    return TensorError(name, float(err.max()), float(budget[idx]), float(ratio[idx]), idx,
                       expected=float(want[idx]), got=float(got[idx]))


def judge(case: Case, outcome: Outcome, oracle_result: "oracle.Result | None" = None,
          expected=None) -> Verdict:
    """Judge an implementation's outcome for ``case`` against the oracle.

    Follow-up calls on a stateful layer are judged too, each with the error
    of the state it carries in from the call before.  ``expected(case)``, when
    given, supplies the (output, h, c) of every call to compare with in place
    of the oracle's values (the budgets still come from the oracle's trace):
    how the oracle itself is judged, against ``oracle_twin``.
    """
    if outcome.status != OK:
        return Verdict(False, problems=[f"implementation did not return: {outcome.summary()}"])
    results = ([oracle_result] if oracle_result is not None and not case.followups
               else oracle.forward_calls(case))
    calls = [outcome.outputs] + list(outcome.followup_outputs)
    if len(calls) != len(results):
        return Verdict(False, problems=[f"returned results for {len(calls)} call(s), "
                                        f"expected {len(results)}"])
    names = ["output", "h", "c"] if case.config.get("return_state", False) else ["output"]
    wanted = (expected(case) if expected is not None
              else [(r.output, r.h, r.c) for r in results])
    verdict = Verdict(True)
    carried = None
    import dataclasses
    for k, (got_all, res) in enumerate(zip(calls, results)):
        sub = case if k == 0 else dataclasses.replace(
            case, inputs=case.followups[k - 1].inputs, followups=[], mask=None, masking_value=None)
        follow = case.followups[k - 1] if k else None
        if follow is not None and (follow.reset or follow.initial_state is not None):
            carried = None
        bud = budgets(sub, res, carried)
        carried = bud["_carry"]
        label = "" if k == 0 else f"call {k + 1} "
        reason = unjudgeable(sub, res, {k: bud[k] for k in ("output", "h", "c")})
        if reason:
            return Verdict(True, unjudged=f"{label}{reason}")
        if len(got_all) != len(names):
            verdict.problems.append(f"{label}returned {len(got_all)} tensors, expected "
                                    f"{len(names)} ({', '.join(names)})")
            continue
        want = dict(zip(("output", "h", "c"), wanted[k]))
        for name, got in zip(names, got_all):
            cmp = compare_tensor(f"{label}{name}", got, want[name], bud[name])
            if isinstance(cmp, str):
                verdict.problems.append(cmp)
            else:
                verdict.errors[f"{label}{name}"] = cmp
    verdict.passed = not verdict.problems and verdict.worst <= 1.0
    return verdict


# --------------------------------------------------------------------------
# Gradients
#
# A gradient element is a sum over backpropagation paths of products of
# factors (weights, gate values, activation slopes, the cotangent).  Each
# computed factor carries the forward error bound of the value it is computed
# from (``error_bounds(per_step=...)``), and each
# element is reached through at most ``n = steps * (K + B*H'*W' + 16)``
# roundings and additions: K accumulations per convolution adjoint, a
# reduction over batch and positions for weight gradients, a handful of
# elementwise products per step.  To first order the error is at most
# ``gamma_n * M`` where M is
# the same backward pass run on magnitudes (``oracle.backward(absolute=
# True)``).  Where a path crosses a kink (relu at 0, hard_sigmoid at +-3) an
# implementation may take either one-sided slope; the magnitude pass with the
# slopes widened by that ambiguity bounds the difference it can make.
# The oracle's own slopes come from float64 central differences, good to
# about 1e-10 relative: ORACLE_SLOPE_REL covers them.

GRAD_OPS_PER_STEP = 16
ORACLE_SLOPE_REL = 1e-9
GRAD_NAMES = ("inputs", "kernel", "recurrent_kernel", "bias", "initial_h", "initial_c")


def gradient_budgets(case: Case, result: "oracle.Result",
                     forward: dict | None = None) -> dict[str, np.ndarray]:
    """Budgets of the gradients; with ``forward`` a dict, the forward budgets
    of output, h and c (the implementation's format) are put in it."""
    u = UNIT_ROUNDOFF[case.dtype]
    B, Ho, Wo = result.trace.steps[0].h.shape[:3]
    n = len(result.trace.steps) * (result.trace.accumulation + B * Ho * Wo + GRAD_OPS_PER_STEP)
    mag = oracle.backward(case, result, absolute=True)
    # Every factor widened by its own forward error bound (and kinks by their
    # slope ambiguity): the difference bounds what forward errors do to the
    # gradient, to first order.
    slack: list[dict] = []
    fwd = error_bounds(case, result, u, per_step=slack)
    if forward is not None:
        with np.errstate(over="ignore"):
            forward.update({k: SAFETY * fwd[k] for k in ("output", "h", "c")})
    wide = oracle.backward(case, result, absolute=True, slack=slack)
    g = gamma(n, u) + gamma(n, UNIT_ROUNDOFF["float64"])
    eta = n * (UNDERFLOW[u] + UNDERFLOW[UNIT_ROUNDOFF["float64"]])
    return {k: SAFETY * (g * wide[k] + eta) + (wide[k] - mag[k]) + ORACLE_SLOPE_REL * wide[k]
            for k in mag}


def judge_gradients(case: Case, outcome: Outcome,
                    oracle_result: "oracle.Result | None" = None) -> Verdict:
    """Judge the gradients an implementation returned for ``case.cotangent``."""
    if outcome.status != OK:
        return Verdict(False, problems=[f"implementation did not return: {outcome.summary()}"])
    if oracle_result is None:
        oracle_result = oracle.forward(case)
    forward: dict = {}
    bud = gradient_budgets(case, oracle_result, forward)
    reason = unjudgeable(case, oracle_result, forward)
    if reason:
        return Verdict(True, unjudged=reason)
    want = oracle.backward(case, oracle_result)
    verdict = Verdict(True)
    missing = sorted(set(want) - set(outcome.grads))
    if missing:
        verdict.problems.append(f"no gradient returned for {', '.join(missing)}")
    for name in want:
        if name in outcome.grads:
            res = compare_tensor(f"d/d{name}", outcome.grads[name], want[name], bud[name])
            if isinstance(res, str):
                verdict.problems.append(res)
            else:
                verdict.errors[name] = res
    verdict.passed = not verdict.problems and verdict.worst <= 1.0
    return verdict
