/* The forward pass in arithmetic of type REAL, included once per type by
 * convlstm.c (REAL float: float32 arithmetic throughout, with the float
 * versions of exp and tanh). */

static REAL NAME(activate)(Activation a, REAL v) {
    switch (a) {
    case ACT_TANH: return TANH(v);
    case ACT_SIGMOID:           /* split by sign so exp never overflows */
        if (v >= 0) return (REAL)1 / ((REAL)1 + EXP(-v));
        else { REAL e = EXP(v); return e / ((REAL)1 + e); }
    case ACT_HARD_SIGMOID: {    /* Keras 3: relu6(x + 3) / 6 */
        REAL s = v + (REAL)3;
        s = s < 0 ? 0 : (s > 6 ? (REAL)6 : s);
        return s / (REAL)6;
    }
    case ACT_RELU: return v > 0 ? v : 0;
    default: return v;
    }
}

static int NAME(forward)(const Problem *p, double *seq, double *h_out, double *c_out) {
    const size_t B = p->B, T = p->T, H = p->H, W = p->W, C = p->C, F = p->F, G = 4 * F;
    const size_t Ho = p->Ho, Wo = p->Wo, kh = p->kh, kw = p->kw;
    const size_t state = B * Ho * Wo * F;
    /* Recurrent convolution: stride 1, no dilation, "same" (extra row and column after). */
    const size_t rtop = (kh - 1) / 2, rleft = (kw - 1) / 2;
    REAL *K = malloc(kh * kw * C * G * sizeof(REAL)), *U = malloc(kh * kw * F * G * sizeof(REAL));
    REAL *bias = calloc(G, sizeof(REAL)), *z = malloc(Ho * Wo * G * sizeof(REAL));
    REAL *h = calloc(state, sizeof(REAL)), *c = calloc(state, sizeof(REAL));
    REAL *prev = calloc(state, sizeof(REAL)), *hn = malloc(state * sizeof(REAL));
    REAL *cn = malloc(state * sizeof(REAL));
    int ok = K && U && bias && z && h && c && prev && hn && cn;
    if (ok) {
        for (size_t i = 0; i < kh * kw * C * G; i++) K[i] = (REAL)p->kernel[i];
        for (size_t i = 0; i < kh * kw * F * G; i++) U[i] = (REAL)p->recurrent_kernel[i];
        if (p->bias) for (size_t i = 0; i < G; i++) bias[i] = (REAL)p->bias[i];
        for (size_t i = 0; p->h0 && i < state; i++) { h[i] = (REAL)p->h0[i]; c[i] = (REAL)p->c0[i]; }
    }
    for (size_t step = 0; ok && step < T; step++) {
        size_t t = p->go_backwards ? T - 1 - step : step;
        for (size_t b = 0; b < B; b++) {
            const double *xt = p->x + (b * T + t) * H * W * C;
            const REAL *hb = h + b * Ho * Wo * F;
            for (size_t y = 0; y < Ho; y++)
                for (size_t x = 0; x < Wo; x++) {
                    REAL *zz = z + (y * Wo + x) * G;
                    for (size_t g = 0; g < G; g++) zz[g] = bias[g];
                    for (size_t a = 0; a < kh; a++)
                        for (size_t e = 0; e < kw; e++) {
                            /* input pixel under kernel offset (a, e), outside: padding */
                            long iy = (long)(y * p->sh + a * p->dh) - (long)p->pad_top;
                            long ix = (long)(x * p->sw + e * p->dw) - (long)p->pad_left;
                            if (iy >= 0 && ix >= 0 && iy < (long)H && ix < (long)W)
                                for (size_t ci = 0; ci < C; ci++) {
                                    REAL v = (REAL)xt[((size_t)iy * W + (size_t)ix) * C + ci];
                                    const REAL *k = K + ((a * kw + e) * C + ci) * G;
                                    for (size_t g = 0; g < G; g++) zz[g] += v * k[g];
                                }
                            long ry = (long)(y + a) - (long)rtop, rx = (long)(x + e) - (long)rleft;
                            if (ry >= 0 && rx >= 0 && ry < (long)Ho && rx < (long)Wo)
                                for (size_t fi = 0; fi < F; fi++) {
                                    REAL v = hb[((size_t)ry * Wo + (size_t)rx) * F + fi];
                                    const REAL *u = U + ((a * kw + e) * F + fi) * G;
                                    for (size_t g = 0; g < G; g++) zz[g] += v * u[g];
                                }
                        }
                    size_t s = ((b * Ho + y) * Wo + x) * F;
                    for (size_t f = 0; f < F; f++) {
                        REAL i = NAME(activate)(p->ract, zz[f]);
                        REAL fg = NAME(activate)(p->ract, zz[F + f]);
                        REAL cand = NAME(activate)(p->act, zz[2 * F + f]);
                        REAL o = NAME(activate)(p->ract, zz[3 * F + f]);
                        cn[s + f] = fg * c[s + f] + i * cand;
                        hn[s + f] = o * NAME(activate)(p->act, cn[s + f]);
                    }
                }
        }
        /* A masked step carries the state and repeats the previous output. */
        for (size_t b = 0; b < B; b++) {
            int active = !p->mask || p->mask[b * T + t];
            for (size_t i = b * Ho * Wo * F; i < (b + 1) * Ho * Wo * F; i++) {
                if (active) { h[i] = hn[i]; c[i] = cn[i]; prev[i] = hn[i]; }
                seq[(b * T + step) * Ho * Wo * F + (i - b * Ho * Wo * F)] = prev[i];
            }
        }
    }
    for (size_t i = 0; ok && i < state; i++) { h_out[i] = h[i]; c_out[i] = c[i]; }
    free(K); free(U); free(bias); free(z); free(h); free(c); free(prev); free(hn); free(cn);
    return ok ? 0 : -1;
}
