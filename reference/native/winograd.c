/*
 * A 3x3, stride-1, undilated convolution by Winograd's minimal filtering
 * algorithm F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
 * Neural Networks", 2016), float32, for the big problems of the PyTorch
 * reference (reference/torch_ref.py).
 *
 * Why: on the CPU the reference's recurrent convolution runs at the GEMM rate
 * already, so a direct convolution cannot go faster.  F(2x2, 3x3) computes a
 * 2x2 output tile from a 4x4 input tile with 16 multiplications per channel
 * pair where direct convolution takes 36: per tile, 16 independent GEMMs over
 * the channels, between transforms that cost additions only.
 *
 *   Y = A^T [ (G g G^T) . (B^T d B) ] A        (. elementwise, per channel pair)
 *
 *   B^T = [1  0 -1  0]   G = [ 1    0    0 ]   A^T = [1 1  1  0]
 *         [0  1  1  0]       [1/2  1/2  1/2]         [0 1 -1 -1]
 *         [0 -1  1  0]       [1/2 -1/2  1/2]
 *         [0  1  0 -1]       [ 0    0    1 ]
 *
 * The weight transform U = G g G^T is done by the caller (in float64, then
 * rounded once); here the input transform, the GEMMs and the output
 * transform, over blocks of tiles small enough that a block's transformed
 * input V and products M stay in the core's L2 cache.
 *
 * Accuracy: B^T and A^T have entries 0 and +-1, so their transforms add and
 * subtract (two roundings per dimension of B, up to three of A); each GEMM
 * sums K products.  Unlike a direct convolution's, these roundings scale
 * with products of weights and inputs the convolution never forms (a
 * transform mixes the whole 4x4 tile), so they fit the tolerance model's
 * direct-summation bound (core/tolerance.py, item 1) only where many
 * channel products average out: the reference calls this kernel with at
 * least WINOGRAD_MIN_CHANNELS channels (reference/torch_ref.py), and
 * tests/test_winograd.py holds it to that bound against float64.
 *
 * Layouts: the input is NHWC with unit channel stride, read through its
 * (b, y, x) element strides: output (y, x) reads input rows y-pt..y-pt+2 and
 * columns x-pl..x-pl+2, and rows and columns outside [0, Hi) x [0, Wi) read
 * as zero (the 'same' padding of an input without a border, or the rest of a
 * last tile that lies half outside the output).  U is
 * (16, K, N) contiguous: tile element t = 4 r + s, input channel, output
 * channel.  The output is NHWC with unit channel stride through its (b, y, x)
 * strides; it is overwritten (plus bias when given) or accumulated into.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));

/* Arguments through g (WG_*): sizes; the input's offset (output (y, x) reads
 * input rows y-pt..y-pt+2, columns x-pl..x-pl+2); whether to accumulate;
 * tiles per block (0: the default); U's stride between tile elements (0:
 * K N, else a channel range of a bigger U); then the input's and output's
 * (b, y, x) strides. */
enum {
    WG_B, WG_HO, WG_WO, WG_HI, WG_WI, WG_PT, WG_PL, WG_K, WG_N, WG_ACC, WG_BLOCK, WG_US,
    WG_IS, WG_OS = WG_IS + 3, WG_LEN = WG_OS + 3
};

/* Rows of the GEMM micro-kernel: 6 tiles x 16 output channels keep twelve
 * 8-wide accumulators in registers, enough to cover the FMA latency. */
#define MR 6

/* Tiles per block when the caller leaves it to the kernel: a block's V and M
 * (or dM) stay in L2 at the benchmark's channel counts. */
#define DEFAULT_BLOCK 48

/* The output's 2x2 tiles, the last row and column of an odd size included. */
static inline int64_t tile_count(const int64_t *g)
{
    return g[WG_B] * ((g[WG_HO] + 1) / 2) * ((g[WG_WO] + 1) / 2);
}

static inline v8 load8(const float *p) { v8 v; memcpy(&v, p, sizeof v); return v; }
static inline void store8(float *p, v8 v) { memcpy(p, &v, sizeof v); }

/* B^T d B of a 4x4 tile d (elements of type T: 8 channels or one), each of
 * its 16 elements passed to STORE(tile element, value). */
#define INPUT_TILE(T, d, STORE)                                                           \
    do {                                                                                  \
        T t_[4][4];                                                                       \
        for (int v_ = 0; v_ < 4; v_++) {           /* B^T d */                            \
            t_[0][v_] = d[0][v_] - d[2][v_];                                              \
            t_[1][v_] = d[1][v_] + d[2][v_];                                              \
            t_[2][v_] = d[2][v_] - d[1][v_];                                              \
            t_[3][v_] = d[1][v_] - d[3][v_];                                              \
        }                                                                                 \
        for (int u_ = 0; u_ < 4; u_++) {           /* (B^T d) B */                        \
            STORE(4 * u_ + 0, t_[u_][0] - t_[u_][2]);                                     \
            STORE(4 * u_ + 1, t_[u_][1] + t_[u_][2]);                                     \
            STORE(4 * u_ + 2, t_[u_][2] - t_[u_][1]);                                     \
            STORE(4 * u_ + 3, t_[u_][1] - t_[u_][3]);                                     \
        }                                                                                 \
    } while (0)

/* V[t][i][k] for the tiles p0 .. p0+n-1 of the output (tile = (b, ty, tx)). */
static void input_transform(const int64_t *g, const float *x, float *V, int64_t p0,
                            int64_t n, int64_t R)
{
    const int64_t Hi = g[WG_HI], Wi = g[WG_WI], K = g[WG_K];
    const int64_t pt = g[WG_PT], pl = g[WG_PL];
    const int64_t tx_n = (g[WG_WO] + 1) / 2, ty_n = (g[WG_HO] + 1) / 2;
    const int64_t sb = g[WG_IS], sy = g[WG_IS + 1], sx = g[WG_IS + 2];
    const int64_t ts = R * K;              /* stride between tile elements in V */
    for (int64_t i = 0; i < n; i++) {
        const int64_t p = p0 + i, b = p / (ty_n * tx_n), r = p % (ty_n * tx_n);
        const int64_t y0 = 2 * (r / tx_n) - pt, x0 = 2 * (r % tx_n) - pl;
        const float *rows[4][4];
        for (int u = 0; u < 4; u++)
            for (int v = 0; v < 4; v++)
                rows[u][v] = (y0 + u >= 0 && y0 + u < Hi && x0 + v >= 0 && x0 + v < Wi)
                             ? x + b * sb + (y0 + u) * sy + (x0 + v) * sx : NULL;
        float *out = V + i * K;
        int64_t k = 0;
        for (; k + 8 <= K; k += 8) {
            v8 d[4][4];
            for (int u = 0; u < 4; u++)
                for (int v = 0; v < 4; v++)
                    d[u][v] = rows[u][v] ? load8(rows[u][v] + k) : (v8){0};
#define STORE_V8(e, val) store8(out + (e) * ts + k, (val))
            INPUT_TILE(v8, d, STORE_V8);
#undef STORE_V8
        }
        for (; k < K; k++) {                       /* the channels past a multiple of 8 */
            float d[4][4];
            for (int u = 0; u < 4; u++)
                for (int v = 0; v < 4; v++)
                    d[u][v] = rows[u][v] ? rows[u][v][k] : 0.0f;
#define STORE_F32(e, val) (out[(e) * ts + k] = (val))
            INPUT_TILE(float, d, STORE_F32);
#undef STORE_F32
        }
    }
}

/* M[i][n..n+16] = sum_k V[i][k] U[k][n..n+16] for MR rows i. */
static inline void micro_6x16(int64_t K, int64_t N, const float *restrict V,
                              const float *restrict U, float *restrict M)
{
    v8 c[MR][2];
    for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = (v8){0};
    for (int64_t k = 0; k < K; k++) {
        const v8 b0 = load8(U + k * N), b1 = load8(U + k * N + 8);
        for (int r = 0; r < MR; r++) {
            const float a = V[r * K + k];
            c[r][0] += a * b0;
            c[r][1] += a * b1;
        }
    }
    for (int r = 0; r < MR; r++) {
        store8(M + r * N, c[r][0]);
        store8(M + r * N + 8, c[r][1]);
    }
}

/* The same for 8 output channels (N's remainder when N is 8 mod 16). */
static inline void micro_6x8(int64_t K, int64_t N, const float *restrict V,
                             const float *restrict U, float *restrict M)
{
    v8 c[MR];
    for (int r = 0; r < MR; r++) c[r] = (v8){0};
    for (int64_t k = 0; k < K; k++) {
        const v8 b0 = load8(U + k * N);
        for (int r = 0; r < MR; r++) c[r] += V[r * K + k] * b0;
    }
    for (int r = 0; r < MR; r++) store8(M + r * N, c[r]);
}

/* Element offsets in the output (or output gradient) of tile p's four
 * positions, -1 for those beyond the output (the last tile of an odd size). */
static inline void output_tile(const int64_t *g, int64_t p, int64_t off[2][2])
{
    const int64_t Ho = g[WG_HO], Wo = g[WG_WO];
    const int64_t tx_n = (Wo + 1) / 2, ty_n = (Ho + 1) / 2;
    const int64_t b = p / (ty_n * tx_n), r = p % (ty_n * tx_n);
    const int64_t y0 = 2 * (r / tx_n), x0 = 2 * (r % tx_n);
    for (int u = 0; u < 2; u++)
        for (int v = 0; v < 2; v++)
            off[u][v] = (y0 + u < Ho && x0 + v < Wo)
                        ? b * g[WG_OS] + (y0 + u) * g[WG_OS + 1] + (x0 + v) * g[WG_OS + 2] : -1;
}

/* Y for tiles p0 .. p0+n-1 from M[t][i][n]: A^T M A, plus bias or the output's
 * previous value, written where the tile lies inside the output. */
static void output_transform(const int64_t *g, const float *M, const float *bias, float *y,
                             int64_t p0, int64_t n, int64_t R)
{
    const int64_t N = g[WG_N], acc = g[WG_ACC];
    const int64_t ts = R * N;
    for (int64_t i = 0; i < n; i++) {
        int64_t off[2][2];
        float *dst[2][2];
        output_tile(g, p0 + i, off);
        for (int u = 0; u < 2; u++)
            for (int v = 0; v < 2; v++)
                dst[u][v] = off[u][v] >= 0 ? y + off[u][v] : NULL;
        const float *m = M + i * N;
        for (int64_t c = 0; c < N; c += 8) {
            v8 s[4][2];
            for (int u = 0; u < 4; u++) {          /* M A, row by row */
                const v8 m0 = load8(m + (4 * u + 0) * ts + c), m1 = load8(m + (4 * u + 1) * ts + c);
                const v8 m2 = load8(m + (4 * u + 2) * ts + c), m3 = load8(m + (4 * u + 3) * ts + c);
                s[u][0] = m0 + m1 + m2;
                s[u][1] = m1 - m2 - m3;
            }
            v8 o[2][2];
            for (int v = 0; v < 2; v++) {          /* A^T (M A) */
                o[0][v] = s[0][v] + s[1][v] + s[2][v];
                o[1][v] = s[1][v] - s[2][v] - s[3][v];
            }
            const v8 add = bias && !acc ? load8(bias + c) : (v8){0};
            for (int u = 0; u < 2; u++)
                for (int v = 0; v < 2; v++) {
                    float *d = dst[u][v];
                    if (!d) continue;
                    store8(d + c, (acc ? load8(d + c) : add) + o[u][v]);
                }
        }
    }
}

/* The convolution of the whole input, one thread.  Returns 0, 1 when N is not
 * a multiple of 8, 2 when the work buffers cannot be allocated. */
int winograd3x3_f32(const int64_t *g, const float *x, const float *U, const float *bias,
                    float *y)
{
    const int64_t K = g[WG_K], N = g[WG_N];
    const int64_t P = tile_count(g);
    int64_t R = g[WG_BLOCK] > 0 ? g[WG_BLOCK] : DEFAULT_BLOCK;
    R = (R + MR - 1) / MR * MR;
    const int64_t us = g[WG_US] > 0 ? g[WG_US] : K * N;
    if (N % 8) return 1;
    float *V = aligned_alloc(64, sizeof(float) * (size_t)(16 * R * K + 16));
    float *M = aligned_alloc(64, sizeof(float) * (size_t)(16 * R * N + 16));
    if (!V || !M) { free(V); free(M); return 2; }
    for (int64_t p0 = 0; p0 < P; p0 += R) {
        const int64_t n = P - p0 < R ? P - p0 : R;
        const int64_t rows = (n + MR - 1) / MR * MR;
        if (rows > n)                            /* the last block's padding rows */
            for (int t = 0; t < 16; t++)
                memset(V + t * R * K + n * K, 0, sizeof(float) * (size_t)((rows - n) * K));
        input_transform(g, x, V, p0, n, R);
        for (int t = 0; t < 16; t++) {
            const float *Vt = V + t * R * K, *Ut = U + t * us;
            float *Mt = M + t * R * N;
            int64_t c = 0;
            for (; c + 16 <= N; c += 16)
                for (int64_t i = 0; i < rows; i += MR)
                    micro_6x16(K, N, Vt + i * K, Ut + c, Mt + i * N + c);
            if (c < N)
                for (int64_t i = 0; i < rows; i += MR)
                    micro_6x8(K, N, Vt + i * K, Ut + c, Mt + i * N + c);
        }
        output_transform(g, M, bias, y, p0, n, R);
    }
    free(V);
    free(M);
    return 0;
}

/* The weight gradient of the same convolution, accumulated into dU (16, K,
 * N), the gradient with respect to the Winograd weights U: for each tile
 * element t, dU[t] += V[t]^T dM[t] over all tiles, where V is the input
 * transform as above and dM = A dY A^T the adjoint of the output transform
 * (dY the output gradient, read through the output strides).  The caller
 * maps dU back to the 3x3 weights with the adjoint of U = G w G^T, dw =
 * G^T dU G.  The same multiplications as the forward's GEMMs (16 per tile
 * and channel pair, against the 36 of an im2col weight gradient) and no
 * patch copies. */
static void output_adjoint(const int64_t *g, const float *dy, float *dM, int64_t p0, int64_t n,
                           int64_t R)
{
    const int64_t N = g[WG_N];
    const int64_t ts = R * N;
    for (int64_t i = 0; i < n; i++) {
        int64_t off[2][2];
        const float *src[2][2];
        output_tile(g, p0 + i, off);
        for (int u = 0; u < 2; u++)
            for (int v = 0; v < 2; v++)
                src[u][v] = off[u][v] >= 0 ? dy + off[u][v] : NULL;
        float *m = dM + i * N;
        for (int64_t c = 0; c < N; c += 8) {
            v8 d[2][2], t[4][2];
            for (int u = 0; u < 2; u++)
                for (int v = 0; v < 2; v++)
                    d[u][v] = src[u][v] ? load8(src[u][v] + c) : (v8){0};
            for (int v = 0; v < 2; v++) {          /* A dY */
                t[0][v] = d[0][v];
                t[1][v] = d[0][v] + d[1][v];
                t[2][v] = d[0][v] - d[1][v];
                t[3][v] = -d[1][v];
            }
            for (int u = 0; u < 4; u++) {          /* (A dY) A^T */
                store8(m + (4 * u + 0) * ts + c, t[u][0]);
                store8(m + (4 * u + 1) * ts + c, t[u][0] + t[u][1]);
                store8(m + (4 * u + 2) * ts + c, t[u][0] - t[u][1]);
                store8(m + (4 * u + 3) * ts + c, -t[u][1]);
            }
        }
    }
}

/* dU[k..k+MRW][n..n+16] += sum_i V[i][k..] dM[i][n..n+16] over n_i rows i. */
#define DEFINE_WGRAD_MICRO(MRW)                                                          \
static inline void wgrad_micro_##MRW(int64_t n_i, int64_t K, int64_t N,                  \
                                     const float *restrict V, const float *restrict dM,  \
                                     float *restrict dU)                                 \
{                                                                                        \
    v8 c[MRW][2];                                                                        \
    for (int r = 0; r < MRW; r++) {                                                      \
        c[r][0] = load8(dU + r * N);                                                     \
        c[r][1] = load8(dU + r * N + 8);                                                 \
    }                                                                                    \
    for (int64_t i = 0; i < n_i; i++) {                                                  \
        const v8 b0 = load8(dM + i * N), b1 = load8(dM + i * N + 8);                     \
        for (int r = 0; r < MRW; r++) {                                                  \
            const float a = V[i * K + r];                                                \
            c[r][0] += a * b0;                                                           \
            c[r][1] += a * b1;                                                           \
        }                                                                                \
    }                                                                                    \
    for (int r = 0; r < MRW; r++) {                                                      \
        store8(dU + r * N, c[r][0]);                                                     \
        store8(dU + r * N + 8, c[r][1]);                                                 \
    }                                                                                    \
}
DEFINE_WGRAD_MICRO(1)
DEFINE_WGRAD_MICRO(2)
DEFINE_WGRAD_MICRO(3)
DEFINE_WGRAD_MICRO(4)
DEFINE_WGRAD_MICRO(5)
DEFINE_WGRAD_MICRO(6)

/* The 8-column version, for N's remainder when N is 8 mod 16. */
static inline void wgrad_micro_x8(int64_t mr, int64_t n_i, int64_t K, int64_t N,
                                  const float *restrict V, const float *restrict dM,
                                  float *restrict dU)
{
    v8 c[MR];
    for (int r = 0; r < mr; r++) c[r] = load8(dU + r * N);
    for (int64_t i = 0; i < n_i; i++) {
        const v8 b0 = load8(dM + i * N);
        for (int r = 0; r < mr; r++) c[r] += V[i * K + r] * b0;
    }
    for (int r = 0; r < mr; r++) store8(dU + r * N, c[r]);
}

/* Returns 0, 1 when N is not a multiple of 8, 2 when the work buffers cannot
 * be allocated. */
int winograd3x3_wgrad_f32(const int64_t *g, const float *x, const float *dy, float *dU)
{
    const int64_t K = g[WG_K], N = g[WG_N];
    const int64_t P = tile_count(g);
    const int64_t R = g[WG_BLOCK] > 0 ? g[WG_BLOCK] : DEFAULT_BLOCK;
    if (N % 8) return 1;
    float *V = aligned_alloc(64, sizeof(float) * (size_t)(16 * R * K + 16));
    float *dM = aligned_alloc(64, sizeof(float) * (size_t)(16 * R * N + 16));
    if (!V || !dM) { free(V); free(dM); return 2; }
    for (int64_t p0 = 0; p0 < P; p0 += R) {
        const int64_t n = P - p0 < R ? P - p0 : R;
        input_transform(g, x, V, p0, n, R);
        output_adjoint(g, dy, dM, p0, n, R);
        for (int t = 0; t < 16; t++) {
            const float *Vt = V + t * R * K, *dMt = dM + t * R * N;
            float *dUt = dU + t * K * N;
            for (int64_t k = 0; k < K; k += MR) {
                const int64_t mr = K - k < MR ? K - k : MR;
                int64_t c = 0;
                for (; c + 16 <= N; c += 16) {
                    const float *v = Vt + k, *m = dMt + c;
                    float *d = dUt + k * N + c;
                    switch (mr) {
                    case 6: wgrad_micro_6(n, K, N, v, m, d); break;
                    case 5: wgrad_micro_5(n, K, N, v, m, d); break;
                    case 4: wgrad_micro_4(n, K, N, v, m, d); break;
                    case 3: wgrad_micro_3(n, K, N, v, m, d); break;
                    case 2: wgrad_micro_2(n, K, N, v, m, d); break;
                    default: wgrad_micro_1(n, K, N, v, m, d); break;
                    }
                }
                if (c < N) wgrad_micro_x8(mr, n, K, N, Vt + k, dMt + c, dUt + k * N + c);
            }
        }
    }
    free(V);
    free(dM);
    return 0;
}
