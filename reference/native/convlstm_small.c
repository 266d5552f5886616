/*
 * The whole ConvLSTM2D inference of a small problem in one call
 * (convlstm_small_*), and below it the gate arithmetic of one step for big
 * problems (lstm_gates_*), for the PyTorch reference (reference/torch_ref.py).
 *
 * At fuzzer sizes (a few hundred output positions, a handful of channels)
 * the arithmetic of a call takes tens of microseconds, and a library
 * formulation spends several times that on dispatching operators.  This
 * kernel walks the recurrence in one call: per step it accumulates both
 * convolutions at every output position into four gate planes, then applies
 * the activations and updates the cell over whole planes.
 *
 * Layouts: x is read through its five element strides (b, t, y, x, c), so any
 * data_format or view works without a copy; K (kh, kw, C, 4F), U (kh, kw, F,
 * 4F) and bias (4F) are contiguous in Keras's gate order i, f, c, o.  Initial
 * states are read through four strides (b, y, x, f).  Outputs are contiguous
 * NHWC: seq (B, T, Ho, Wo, F) when requested, h and c (B, Ho, Wo, F).
 *
 * Accuracy: float64 uses the C library's exp and tanh.  float32 uses a
 * branch-free exp (Cephes's range reduction and degree-6 polynomial) that the
 * compiler vectorizes; sigmoid is 1 / (1 + exp(-x)) and tanh is
 * 2 sigmoid(2x) - 1, as in the PyTorch path.  NaN propagates; +-inf
 * saturate.  tests/test_native_kernel.py bounds both against float64.
 *
 * Built on first use by reference/native/__init__.py (flags there; no
 * -ffast-math: NaN handling and the rounding trick below depend on it).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { ACT_LINEAR = 0, ACT_TANH = 1, ACT_SIGMOID = 2, ACT_HARD_SIGMOID = 3, ACT_RELU = 4 };

static inline float exp_f32(float x)
{
    /* The clamp keeps 2^n a normal float; NaN fails both tests and stays. */
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    /* n = round(x / ln 2): adding and subtracting 1.5 * 2^23 rounds to an
     * integer in the current (nearest) mode without a library call. */
    const float shifter = 12582912.0f;
    float fn = (x * 1.44269504088896341f + shifter) - shifter;
    float r = x - fn * 0.693359375f;
    r = r + fn * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t bits = ((int32_t)fn + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }
static inline float tanh_f32(float x) { return 2.0f * sigmoid_f32(2.0f * x) - 1.0f; }
static inline double sigmoid_f64(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double tanh_f64(double x) { return tanh(x); }

/* Activation code over n values in place; each case is a loop of its own so
 * the compiler can vectorize it.  The clamps are written so NaN passes. */
#define DEFINE_ACT(NAME, T, SIGMOID, TANH)                                               \
static void NAME(T *restrict v, int64_t n, int code)                                     \
{                                                                                        \
    switch (code) {                                                                      \
    case ACT_TANH:                                                                       \
        for (int64_t k = 0; k < n; k++) v[k] = TANH(v[k]);                               \
        break;                                                                           \
    case ACT_SIGMOID:                                                                    \
        for (int64_t k = 0; k < n; k++) v[k] = SIGMOID(v[k]);                            \
        break;                                                                           \
    case ACT_HARD_SIGMOID:                                                               \
        for (int64_t k = 0; k < n; k++) {                                                \
            T t = v[k] + (T)3;                                                           \
            t = t < (T)0 ? (T)0 : t;                                                     \
            t = t > (T)6 ? (T)6 : t;                                                     \
            v[k] = t / (T)6;                                                             \
        }                                                                                \
        break;                                                                           \
    case ACT_RELU:                                                                       \
        for (int64_t k = 0; k < n; k++) v[k] = v[k] < (T)0 ? (T)0 : v[k];                \
        break;                                                                           \
    default:                                                                             \
        break;                                                                           \
    }                                                                                    \
}

DEFINE_ACT(act_f32, float, sigmoid_f32, tanh_f32)
DEFINE_ACT(act_f64, double, sigmoid_f64, tanh_f64)

/* Geometry and options of one call, in the order the Python side packs them,
 * followed by x's five element strides (b, t, y, x, c) at G_XS and the
 * initial state's four (b, y, x, f) at G_SS. */
enum {
    G_B, G_T, G_H, G_W, G_C, G_F, G_HO, G_WO, G_KH, G_KW, G_SH, G_SW, G_DH, G_DW,
    G_PT, G_PL, G_RT, G_RL, G_BACKWARDS, G_ACT, G_RACT, G_XS, G_SS = G_XS + 5,
    G_LEN = G_SS + 4
};

/* One step's pre-activations: both convolutions at every output position,
 * written to the four gate planes z (gate-major: i, f, c, o, each B*Ho*Wo*F).
 *
 * The 4F gate channels of a position are accumulated in NV = 4F / L vectors
 * of L lanes.  F and NV are literals in each specialised copy (F = 1..16), so the
 * accumulators live in registers and a kernel tap costs NV vector
 * multiply-adds; four accumulator sets take turns over the channels to keep
 * the adds' dependency chains short.  With NV a run-time value (the generic
 * copy, F > 16) the compiler keeps them in memory, about 3x slower. */
typedef float f32x4 __attribute__((vector_size(16)));
typedef double f64x4 __attribute__((vector_size(32)));

#define STEP_ARGS                                                                        \
    const int64_t *g, const T *restrict xt, const int64_t *xs, const T *restrict K,      \
    const T *restrict U, const T *restrict bias, const T *restrict h_prev, int have_h,   \
    T *restrict z

/* acc[0:NV] += s * w[0:LN NV] (LN lanes per vector) */
#define TAP(acc, s, w)                                                                   \
    do {                                                                                 \
        const T s_ = (s);                                                                \
        const T *w_ = (w);                                                               \
        for (int64_t v = 0; v < NV; v++) {                                               \
            V wv;                                                                        \
            memcpy(&wv, w_ + LN * v, sizeof wv);                                         \
            (acc)[v] += s_ * wv;                                                         \
        }                                                                                \
    } while (0)

/* acc + acc2 + acc3 + acc4 += sum over n channels of vals[k * stride] * w[k * F4 : +F4];
 * four sets of accumulators give the adds independent chains. */
#define CHANNELS(vals, stride, w, n)                                                     \
    do {                                                                                 \
        int64_t k_ = 0;                                                                  \
        for (; k_ + 3 < (n); k_ += 4) {                                                  \
            TAP(acc, (vals)[k_ * (stride)], (w) + k_ * F4);                              \
            TAP(acc2, (vals)[(k_ + 1) * (stride)], (w) + (k_ + 1) * F4);                 \
            TAP(acc3, (vals)[(k_ + 2) * (stride)], (w) + (k_ + 2) * F4);                 \
            TAP(acc4, (vals)[(k_ + 3) * (stride)], (w) + (k_ + 3) * F4);                 \
        }                                                                                \
        if (k_ < (n)) TAP(acc, (vals)[k_ * (stride)], (w) + k_ * F4);                    \
        if (k_ + 1 < (n)) TAP(acc2, (vals)[(k_ + 1) * (stride)], (w) + (k_ + 1) * F4);   \
        if (k_ + 2 < (n)) TAP(acc3, (vals)[(k_ + 2) * (stride)], (w) + (k_ + 2) * F4);   \
    } while (0)

#define STEP_BODY(FX, NVX, L)                                                                   \
{                                                                                        \
    const int64_t B = g[G_B], H = g[G_H], W = g[G_W], C = g[G_C], F = (FX);              \
    const int64_t Ho = g[G_HO], Wo = g[G_WO], kh = g[G_KH], kw = g[G_KW];                \
    const int64_t sh = g[G_SH], sw = g[G_SW], dh = g[G_DH], dw = g[G_DW];                \
    const int64_t pt = g[G_PT], pl = g[G_PL], rt = g[G_RT], rl = g[G_RL];                \
    const int64_t xsb = xs[0], xsy = xs[2], xsx = xs[3], xsc = xs[4];                    \
    const int64_t NV = (NVX), LN = (L), F4 = 4 * F, plane = Ho * Wo * F, n = B * plane;  \
    V b0[NVX];                                                                           \
    for (int64_t v = 0; v < NV; v++) {                                                   \
        if (bias) memcpy(&b0[v], bias + LN * v, sizeof b0[v]);                           \
        else b0[v] = (V){0};                                                             \
    }                                                                                    \
    for (int64_t b = 0; b < B; b++) {                                                    \
        const T *xb = xt + b * xsb, *hb = h_prev + b * plane;                            \
        for (int64_t y = 0; y < Ho; y++) {                                               \
            for (int64_t q = 0; q < Wo; q++) {                                           \
                V acc[NVX], acc2[NVX], acc3[NVX], acc4[NVX];                             \
                for (int64_t v = 0; v < NV; v++)                                         \
                    acc[v] = b0[v], acc2[v] = acc3[v] = acc4[v] = (V){0};                \
                for (int64_t i = 0; i < kh; i++) {                                       \
                    const int64_t iy = y * sh + i * dh - pt;                             \
                    if (iy < 0 || iy >= H) continue;                                     \
                    for (int64_t j = 0; j < kw; j++) {                                   \
                        const int64_t ix = q * sw + j * dw - pl;                         \
                        if (ix < 0 || ix >= W) continue;                                 \
                        CHANNELS(xb + iy * xsy + ix * xsx, xsc, K + (i * kw + j) * C * F4, C); \
                    }                                                                    \
                }                                                                        \
                if (have_h) {                                                            \
                    for (int64_t i = 0; i < kh; i++) {                                   \
                        const int64_t hy = y + i - rt;                                   \
                        if (hy < 0 || hy >= Ho) continue;                                \
                        for (int64_t j = 0; j < kw; j++) {                               \
                            const int64_t hx = q + j - rl;                               \
                            if (hx < 0 || hx >= Wo) continue;                            \
                            CHANNELS(hb + (hy * Wo + hx) * F, 1, U + (i * kw + j) * F * F4, F); \
                        }                                                                \
                    }                                                                    \
                }                                                                        \
                for (int64_t v = 0; v < NV; v++) acc[v] += (acc2[v] + acc3[v]) + acc4[v]; \
                /* Keras's gate blocks i, f, c, o into the four planes. */               \
                T lanes[(L) * (NVX)];                                                    \
                memcpy(lanes, acc, sizeof lanes);                                        \
                const int64_t base = b * plane + (y * Wo + q) * F;                       \
                for (int64_t gate = 0; gate < 4; gate++)                                 \
                    for (int64_t f = 0; f < F; f++)                                      \
                        z[gate * n + base + f] = lanes[gate * F + f];                    \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
}

/* float: 8 lanes where 4F is a multiple of 8 (F even), else 4. */
typedef float f32x8 __attribute__((vector_size(32)));
#define T float
#define V f32x8
#define STEP(N) static void step_f32_##N(STEP_ARGS) STEP_BODY(N, (N) / 2, 8)
STEP(2) STEP(4) STEP(6) STEP(8) STEP(10) STEP(12) STEP(14) STEP(16)
#undef V
#define V f32x4
#undef STEP
#define STEP(N) static void step_f32_##N(STEP_ARGS) STEP_BODY(N, N, 4)
STEP(1) STEP(3) STEP(5) STEP(7) STEP(9) STEP(11) STEP(13) STEP(15)
static void step_f32_any(STEP_ARGS) STEP_BODY(g[G_F], g[G_F], 4)
#undef STEP
#undef T
#undef V
#define T double
#define V f64x4
#define STEP(N) static void step_f64_##N(STEP_ARGS) STEP_BODY(N, N, 4)
STEP(1) STEP(2) STEP(3) STEP(4) STEP(5) STEP(6) STEP(7) STEP(8)
STEP(9) STEP(10) STEP(11) STEP(12) STEP(13) STEP(14) STEP(15) STEP(16)
static void step_f64_any(STEP_ARGS) STEP_BODY(g[G_F], g[G_F], 4)
#undef STEP
#undef T
#undef V

#define STEP_TABLE(S)                                                                    \
    { S##_any, S##_1, S##_2, S##_3, S##_4, S##_5, S##_6, S##_7, S##_8,                    \
      S##_9, S##_10, S##_11, S##_12, S##_13, S##_14, S##_15, S##_16 }

/* The whole call: initial state, then per step the pre-activations, the gate
 * activations over whole planes, the cell update and the outputs.  Returns 0,
 * or 1 when the work buffer cannot be allocated. */
#define DEFINE_KERNEL(NAME, STEPS, T, ACT)                                               \
int NAME(const int64_t *g, const T *x, const T *K, const T *U, const T *bias,           \
         const T *h0, const T *c0, T *seq, T *h_out, T *c_out)                           \
{                                                                                        \
    const int64_t *xs = g + G_XS, *ss = g + G_SS;                                        \
    typedef void (*step_fn)(const int64_t *, const T *, const int64_t *, const T *,      \
                            const T *, const T *, const T *, int, T *);                  \
    static const step_fn steps[17] = STEP_TABLE(STEPS);                                  \
    const int64_t B = g[G_B], Tn = g[G_T], F = g[G_F], Ho = g[G_HO], Wo = g[G_WO];       \
    const int back = (int)g[G_BACKWARDS], act = (int)g[G_ACT], ract = (int)g[G_RACT];    \
    const int64_t plane = Ho * Wo * F, n = B * plane;                                    \
    const step_fn step = steps[F <= 16 ? F : 0];                                         \
    /* h is double-buffered: every position's recurrent convolution reads its           \
     * neighbours' previous h. */                                                        \
    /* (+1: malloc(0) may return NULL, which would read as a failure) */                 \
    T *work = malloc(sizeof(T) * (size_t)(5 * n + 1));                                   \
    if (!work) return 1;                                                                 \
    T *restrict h_prev = work, *restrict z = work + n;                                   \
    T *restrict zi = z, *restrict zf = z + n, *restrict zc = z + 2 * n;                  \
    T *restrict zo = z + 3 * n, *restrict cs = c_out, *restrict hs = h_out;              \
    for (int64_t b = 0; b < B; b++)                                                      \
        for (int64_t y = 0; y < Ho; y++)                                                 \
            for (int64_t q = 0; q < Wo; q++)                                             \
                for (int64_t f = 0; f < F; f++) {                                        \
                    const int64_t o = ((b * Ho + y) * Wo + q) * F + f;                   \
                    const int64_t s = b * ss[0] + y * ss[1] + q * ss[2] + f * ss[3];     \
                    h_prev[o] = h0 ? h0[s] : (T)0;                                       \
                    cs[o] = c0 ? c0[s] : (T)0;                                           \
                }                                                                        \
    int have_h = h0 != NULL;   /* without it h = 0: no recurrent term at step 0 */       \
    for (int64_t st = 0; st < Tn; st++) {                                                \
        step(g, x + (back ? Tn - 1 - st : st) * xs[1], xs, K, U, bias, h_prev, have_h, z); \
        ACT(zi, n, ract);                                                                \
        ACT(zf, n, ract);                                                                \
        ACT(zc, n, act);                                                                 \
        ACT(zo, n, ract);                                                                \
        for (int64_t k = 0; k < n; k++) cs[k] = zf[k] * cs[k] + zi[k] * zc[k];           \
        for (int64_t k = 0; k < n; k++) hs[k] = cs[k];                                   \
        ACT(hs, n, act);                                                                 \
        for (int64_t k = 0; k < n; k++) hs[k] *= zo[k];                                  \
        if (seq)                                                                         \
            for (int64_t b = 0; b < B; b++)                                              \
                memcpy(seq + (b * Tn + st) * plane, hs + b * plane,                      \
                       sizeof(T) * (size_t)plane);                                       \
        memcpy(h_prev, hs, sizeof(T) * (size_t)n);                                       \
        have_h = 1;                                                                      \
    }                                                                                    \
    free(work);                                                                          \
    return 0;                                                                            \
}

DEFINE_KERNEL(convlstm_small_f32, step_f32, float, act_f32)
DEFINE_KERNEL(convlstm_small_f64, step_f64, double, act_f64)

/* The gate arithmetic of one step of a big problem, whose convolutions the
 * library computes: from the pre-activations z to the new c (in place), h and
 * optionally the step's output slot.  The PyTorch formulation makes ten
 * passes over arrays of megabytes per step, bound by memory traffic; here
 * every position is read and written once.
 *
 * z holds per position the 4F pre-activations in the order i, f, o, c (the
 * reference's internal order), unscaled.  Arguments through gate_geometry
 * (GG_*): sizes, activation codes, and the (b, y, x) element strides of z, c,
 * h and out, whose channels are contiguous.  out may be NULL.  Returns 0, or 1
 * when the scratch buffer cannot be allocated. */
enum {
    GG_B, GG_HO, GG_WO, GG_F, GG_ACT, GG_RACT, GG_Z, GG_C = GG_Z + 3, GG_H = GG_C + 3,
    GG_OUT = GG_H + 3, GG_LEN = GG_OUT + 3
};

#define DEFINE_GATES(NAME, T, SIGMOID, TANH, ACT)                                        \
int NAME(const int64_t *g, const T *z, T *c, T *h, T *out)                               \
{                                                                                        \
    const int64_t B = g[GG_B], Ho = g[GG_HO], Wo = g[GG_WO], F = g[GG_F];                \
    const int act = (int)g[GG_ACT], ract = (int)g[GG_RACT];                              \
    const int common = act == ACT_TANH && ract == ACT_SIGMOID;                           \
    T *tmp = malloc(sizeof(T) * (size_t)(5 * F + 1));                                    \
    if (!tmp) return 1;                                                                  \
    for (int64_t b = 0; b < B; b++)                                                      \
        for (int64_t y = 0; y < Ho; y++)                                                 \
            for (int64_t q = 0; q < Wo; q++) {                                           \
                const T *restrict zi = z + b * g[GG_Z] + y * g[GG_Z + 1] + q * g[GG_Z + 2]; \
                T *restrict cp = c + b * g[GG_C] + y * g[GG_C + 1] + q * g[GG_C + 2];    \
                T *restrict hp = h + b * g[GG_H] + y * g[GG_H + 1] + q * g[GG_H + 2];    \
                if (common) {                                                            \
                    /* One activation per loop: with all five in one loop body the     \
                     * kernel took 4.0 instead of 3.6 ns per cell element             \
                     * (benchmarks/reference_breakdown.py). */                         \
                    for (int64_t k = 0; k < 3 * F; k++) tmp[k] = SIGMOID(zi[k]);         \
                    for (int64_t k = 3 * F; k < 4 * F; k++) tmp[k] = TANH(zi[k]);        \
                    for (int64_t f = 0; f < F; f++)                                      \
                        cp[f] = tmp[F + f] * cp[f] + tmp[f] * tmp[3 * F + f];            \
                    for (int64_t f = 0; f < F; f++) hp[f] = tmp[2 * F + f] * TANH(cp[f]); \
                } else {                                                                 \
                    memcpy(tmp, zi, sizeof(T) * (size_t)(4 * F));                        \
                    ACT(tmp, 3 * F, ract);                                               \
                    ACT(tmp + 3 * F, F, act);                                            \
                    for (int64_t f = 0; f < F; f++)                                      \
                        tmp[4 * F + f] = cp[f] = tmp[F + f] * cp[f] + tmp[f] * tmp[3 * F + f]; \
                    ACT(tmp + 4 * F, F, act);                                            \
                    for (int64_t f = 0; f < F; f++) hp[f] = tmp[2 * F + f] * tmp[4 * F + f]; \
                }                                                                        \
                if (out) {                                                               \
                    T *op = out + b * g[GG_OUT] + y * g[GG_OUT + 1] + q * g[GG_OUT + 2]; \
                    memcpy(op, hp, sizeof(T) * (size_t)F);                               \
                }                                                                        \
            }                                                                            \
    free(tmp);                                                                           \
    return 0;                                                                            \
}

DEFINE_GATES(lstm_gates_f32, float, sigmoid_f32, tanh_f32, act_f32)
DEFINE_GATES(lstm_gates_f64, double, sigmoid_f64, tanh_f64, act_f64)

/* The backward's loop for one combination of the cotangents present: DHE
 * and DCE are an element's dh and dc' (a load, or 0).  BWD picks one of four
 * copies before looping: with the choice inside the loop (a load through a
 * pointer that may be NULL) the compiler does not vectorize it, and S
 * forward+backward spent 107-126 instead of 31 ms of one core in the cell
 * backward (benchmarks/reference_breakdown.py --mode fwdbwd). */
#define CELL_BWD_LOOP(T, TANH, DHE, DCE)                                                 \
    for (int64_t p = 0; p < n; p++) {                                                    \
        const T *ap = a + p * 4 * F;                                                     \
        T *dzp = dz + p * 4 * F;                                                         \
        for (int64_t f = 0; f < F; f++) {                                                \
            const int64_t e = p * F + f;                                                 \
            const T i = ap[f], fg = ap[F + f], o = ap[2 * F + f], g = ap[3 * F + f];     \
            const T tc = TANH(c_new[e]);                                                 \
            const T dhe = (DHE);                                                         \
            const T dc = (DCE) + dhe * o * ((T)1 - tc * tc);                             \
            dzp[f] = dc * g * i * ((T)1 - i);                                            \
            dzp[F + f] = dc * c[e] * fg * ((T)1 - fg);                                   \
            dzp[2 * F + f] = dhe * tc * o * ((T)1 - o);                                  \
            dzp[3 * F + f] = dc * i * ((T)1 - g * g);                                    \
            dc_prev[e] = dc * fg;                                                        \
        }                                                                                \
    }

/* The training path's cell, tanh/sigmoid only, over n positions with
 * contiguous channels: forward from z (n, 4F; order i, f, o, c; unscaled) and
 * the previous c to the activated gates a (n, 4F), c' and h; backward from a,
 * the previous c, c' and the cotangents dh, dc' (either may be NULL) to dz and
 * the previous c's gradient.  The backward differentiates the forward's own
 * formulas: tanh(c') is recomputed with the same function, the slopes are
 * s (1 - s) and 1 - t^2 of the values the forward produced. */
#define DEFINE_CELL(FWD, BWD, T, SIGMOID, TANH)                                          \
void FWD(int64_t n, int64_t F, const T *restrict z, const T *restrict c,                  \
         T *restrict a, T *restrict c_new, T *restrict h)                                \
{                                                                                        \
    for (int64_t p = 0; p < n; p++) {                                                    \
        const T *zp = z + p * 4 * F;                                                     \
        T *ap = a + p * 4 * F;                                                           \
        const T *cp = c + p * F;                                                         \
        T *cn = c_new + p * F, *hp = h + p * F;                                          \
        for (int64_t k = 0; k < 3 * F; k++) ap[k] = SIGMOID(zp[k]);                      \
        for (int64_t k = 3 * F; k < 4 * F; k++) ap[k] = TANH(zp[k]);                     \
        for (int64_t f = 0; f < F; f++) {                                                \
            cn[f] = ap[F + f] * cp[f] + ap[f] * ap[3 * F + f];                           \
            hp[f] = ap[2 * F + f] * TANH(cn[f]);                                         \
        }                                                                                \
    }                                                                                    \
}                                                                                        \
void BWD(int64_t n, int64_t F, const T *restrict a, const T *restrict c,                  \
         const T *restrict c_new, const T *restrict dh, const T *restrict dc_new,        \
         T *restrict dz, T *restrict dc_prev)                                            \
{                                                                                        \
    if (dh && dc_new) { CELL_BWD_LOOP(T, TANH, dh[e], dc_new[e]) }                       \
    else if (dh) { CELL_BWD_LOOP(T, TANH, dh[e], (T)0) }                                 \
    else if (dc_new) { CELL_BWD_LOOP(T, TANH, (T)0, dc_new[e]) }                         \
    else { CELL_BWD_LOOP(T, TANH, (T)0, (T)0) }                                          \
}

DEFINE_CELL(lstm_cell_fwd_f32, lstm_cell_bwd_f32, float, sigmoid_f32, tanh_f32)
DEFINE_CELL(lstm_cell_fwd_f64, lstm_cell_bwd_f64, double, sigmoid_f64, tanh_f64)

/* The activations alone, for testing their accuracy against float64. */
void activation_f32(float *v, int64_t n, int code) { act_f32(v, n, code); }
void activation_f64(double *v, int64_t n, int code) { act_f64(v, n, code); }
