/* The forward pass, and the backward pass when gradients are asked for, in
 * arithmetic of type REAL, included once per type by convlstm.c (REAL float:
 * float32 arithmetic throughout, with the float versions of exp and tanh). */

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

/* The derivative at v, given y = activate(v). */
static REAL NAME(slope)(Activation a, REAL v, REAL y) {
    switch (a) {
    case ACT_TANH: return (REAL)1 - y * y;
    case ACT_SIGMOID: return y * ((REAL)1 - y);
    case ACT_HARD_SIGMOID: return v > (REAL)-3 && v < (REAL)3 ? (REAL)1 / (REAL)6 : 0;
    case ACT_RELU: return v > 0 ? (REAL)1 : 0;
    default: return 1;
    }
}

/* Input pixel under kernel offset (a, e) of output (y, x); 0 when in the padding. */
static int NAME(input_at)(const Problem *p, size_t y, size_t x, size_t a, size_t e, size_t *at) {
    long iy = (long)(y * p->sh + a * p->dh) - (long)p->pad_top;
    long ix = (long)(x * p->sw + e * p->dw) - (long)p->pad_left;
    if (iy < 0 || ix < 0 || iy >= (long)p->H || ix >= (long)p->W) return 0;
    *at = (size_t)iy * p->W + (size_t)ix;
    return 1;
}

/* State pixel under kernel offset (a, e) of output (y, x) in the recurrent
 * convolution: stride 1, no dilation, "same" (the extra row and column after). */
static int NAME(state_at)(const Problem *p, size_t rtop, size_t rleft, size_t y, size_t x,
                          size_t a, size_t e, size_t *at) {
    long ry = (long)(y + a) - (long)rtop, rx = (long)(x + e) - (long)rleft;
    if (ry < 0 || rx < 0 || ry >= (long)p->Ho || rx >= (long)p->Wo) return 0;
    *at = (size_t)ry * p->Wo + (size_t)rx;
    return 1;
}

static int NAME(forward)(const Problem *p, double *seq, double *h_out, double *c_out, Grads *grads) {
    const size_t B = p->B, T = p->T, H = p->H, W = p->W, C = p->C, F = p->F, G = 4 * F;
    const size_t Ho = p->Ho, Wo = p->Wo, kh = p->kh, kw = p->kw;
    const size_t state = B * Ho * Wo * F, frame = H * W * C;
    const size_t rtop = (kh - 1) / 2, rleft = (kw - 1) / 2;
    const size_t nk = kh * kw * C * G, nu = kh * kw * F * G;
    /* With gradients, every step's pre-activations and states are kept. */
    const size_t kept = grads ? T : 1;
    REAL *K = malloc(nk * sizeof(REAL)), *U = malloc(nu * sizeof(REAL));
    REAL *bias = calloc(G, sizeof(REAL)), *zs = malloc(kept * B * Ho * Wo * G * sizeof(REAL));
    REAL *hs = calloc((kept + 1) * state, sizeof(REAL)), *cs = calloc((kept + 1) * state, sizeof(REAL));
    REAL *prev = calloc(state, sizeof(REAL)), *hn = malloc(state * sizeof(REAL));
    REAL *cns = malloc(kept * state * sizeof(REAL));
    int ok = K && U && bias && zs && hs && cs && prev && hn && cns;
    if (ok) {
        for (size_t i = 0; i < nk; i++) K[i] = (REAL)p->kernel[i];
        for (size_t i = 0; i < nu; i++) U[i] = (REAL)p->recurrent_kernel[i];
        if (p->bias) for (size_t i = 0; i < G; i++) bias[i] = (REAL)p->bias[i];
        for (size_t i = 0; p->h0 && i < state; i++) { hs[i] = (REAL)p->h0[i]; cs[i] = (REAL)p->c0[i]; }
    }
    for (size_t step = 0; ok && step < T; step++) {
        size_t t = p->go_backwards ? T - 1 - step : step, k = grads ? step : 0;
        /* states before this step at slot k, after it at slot k + 1 (k + 1 == 1 without gradients) */
        REAL *h = hs + k * state, *c = cs + k * state, *hnext = hs + (k + 1) * state;
        REAL *cnext = cs + (k + 1) * state, *z = zs + k * B * Ho * Wo * G, *cn = cns + k * state;
        for (size_t b = 0; b < B; b++) {
            const double *xt = p->x + (b * T + t) * frame;
            const REAL *hb = h + b * Ho * Wo * F;
            for (size_t y = 0; y < Ho; y++)
                for (size_t x = 0; x < Wo; x++) {
                    REAL *zz = z + ((b * Ho + y) * Wo + x) * G;
                    for (size_t g = 0; g < G; g++) zz[g] = bias[g];
                    for (size_t a = 0; a < kh; a++)
                        for (size_t e = 0; e < kw; e++) {
                            size_t at;
                            if (NAME(input_at)(p, y, x, a, e, &at))
                                for (size_t ci = 0; ci < C; ci++) {
                                    REAL v = (REAL)xt[at * C + ci];
                                    const REAL *kk = K + ((a * kw + e) * C + ci) * G;
                                    for (size_t g = 0; g < G; g++) zz[g] += v * kk[g];
                                }
                            if (NAME(state_at)(p, rtop, rleft, y, x, a, e, &at))
                                for (size_t fi = 0; fi < F; fi++) {
                                    REAL v = hb[at * F + fi];
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
                hnext[i] = active ? hn[i] : h[i];
                cnext[i] = active ? cn[i] : c[i];
                if (active) prev[i] = hn[i];
                seq[(b * T + step) * Ho * Wo * F + (i - b * Ho * Wo * F)] = prev[i];
            }
        }
        if (!grads) {       /* one slot pair only: the state after becomes the state before */
            memcpy(h, hnext, state * sizeof(REAL));
            memcpy(c, cnext, state * sizeof(REAL));
        }
    }
    const REAL *hT = hs + kept * state, *cT = cs + kept * state;
    for (size_t i = 0; ok && i < state; i++) { h_out[i] = hT[i]; c_out[i] = cT[i]; }

    /* Gradients of sum(output * cotangent), back through the steps. */
    REAL *dh = grads ? calloc(state, sizeof(REAL)) : NULL, *dc = grads ? calloc(state, sizeof(REAL)) : NULL;
    REAL *dprev = grads ? calloc(state, sizeof(REAL)) : NULL, *dz = grads ? malloc(B * Ho * Wo * G * sizeof(REAL)) : NULL;
    REAL *dhp = grads ? malloc(state * sizeof(REAL)) : NULL, *dK = grads ? calloc(nk, sizeof(REAL)) : NULL;
    REAL *dU = grads ? calloc(nu, sizeof(REAL)) : NULL, *db = grads ? calloc(G, sizeof(REAL)) : NULL;
    REAL *dx = grads ? calloc(B * T * frame, sizeof(REAL)) : NULL;
    if (grads) ok = ok && dh && dc && dprev && dz && dhp && dK && dU && db && dx;
    for (size_t step = T; grads && ok && step-- > 0;) {
        size_t t = p->go_backwards ? T - 1 - step : step;
        const REAL *h = hs + step * state, *c = cs + step * state, *z = zs + step * B * Ho * Wo * G;
        const REAL *cn = cns + step * state;
        memset(dz, 0, B * Ho * Wo * G * sizeof(REAL));
        memset(dhp, 0, state * sizeof(REAL));
        for (size_t b = 0; b < B; b++) {
            int active = !p->mask || p->mask[b * T + t];
            for (size_t j = 0; j < Ho * Wo * F; j++) {
                size_t i = b * Ho * Wo * F + j, pos = i / F, f = i % F;
                /* the cotangent of this step's output */
                REAL g = dprev[i];
                if (p->return_sequences) g += (REAL)p->cotangent[(b * T + step) * Ho * Wo * F + j];
                else if (step == T - 1) g += (REAL)p->cotangent[i];
                if (!active) { dprev[i] = g; continue; }   /* the output repeated an earlier one */
                dprev[i] = 0;
                const REAL *zz = z + pos * G;
                REAL ig = NAME(activate)(p->ract, zz[f]), fg = NAME(activate)(p->ract, zz[F + f]);
                REAL cand = NAME(activate)(p->act, zz[2 * F + f]), o = NAME(activate)(p->ract, zz[3 * F + f]);
                REAL ac = NAME(activate)(p->act, cn[i]);
                REAL dhn = g + dh[i];
                REAL dcn = dc[i] + dhn * o * NAME(slope)(p->act, cn[i], ac);
                REAL *d = dz + pos * G;
                d[f] = dcn * cand * NAME(slope)(p->ract, zz[f], ig);
                d[F + f] = dcn * c[i] * NAME(slope)(p->ract, zz[F + f], fg);
                d[2 * F + f] = dcn * ig * NAME(slope)(p->act, zz[2 * F + f], cand);
                d[3 * F + f] = dhn * ac * NAME(slope)(p->ract, zz[3 * F + f], o);
                dc[i] = dcn * fg;
                dh[i] = 0;          /* replaced below by what flows through U */
            }
        }
        for (size_t b = 0; b < B; b++) {
            const double *xt = p->x + (b * T + t) * frame;
            REAL *dxt = dx + (b * T + t) * frame;
            const REAL *hb = h + b * Ho * Wo * F;
            REAL *dhb = dhp + b * Ho * Wo * F;
            for (size_t y = 0; y < Ho; y++)
                for (size_t x = 0; x < Wo; x++) {
                    const REAL *d = dz + ((b * Ho + y) * Wo + x) * G;
                    for (size_t g = 0; g < G; g++) db[g] += d[g];
                    for (size_t a = 0; a < kh; a++)
                        for (size_t e = 0; e < kw; e++) {
                            size_t at;
                            if (NAME(input_at)(p, y, x, a, e, &at))
                                for (size_t ci = 0; ci < C; ci++) {
                                    REAL v = (REAL)xt[at * C + ci], acc = 0;
                                    const REAL *kk = K + ((a * kw + e) * C + ci) * G;
                                    REAL *dkk = dK + ((a * kw + e) * C + ci) * G;
                                    for (size_t g = 0; g < G; g++) { acc += d[g] * kk[g]; dkk[g] += v * d[g]; }
                                    dxt[at * C + ci] += acc;
                                }
                            if (NAME(state_at)(p, rtop, rleft, y, x, a, e, &at))
                                for (size_t fi = 0; fi < F; fi++) {
                                    REAL v = hb[at * F + fi], acc = 0;
                                    const REAL *u = U + ((a * kw + e) * F + fi) * G;
                                    REAL *du = dU + ((a * kw + e) * F + fi) * G;
                                    for (size_t g = 0; g < G; g++) { acc += d[g] * u[g]; du[g] += v * d[g]; }
                                    dhb[at * F + fi] += acc;
                                }
                        }
                }
        }
        /* An active step's state came through U; a masked one's passed unchanged. */
        for (size_t b = 0; b < B; b++) {
            int active = !p->mask || p->mask[b * T + t];
            for (size_t i = b * Ho * Wo * F; active && i < (b + 1) * Ho * Wo * F; i++) dh[i] = dhp[i];
        }
    }
    if (grads && ok) {
        for (size_t i = 0; i < B * T * frame; i++) grads->inputs[i] = dx[i];
        for (size_t i = 0; i < nk; i++) grads->kernel[i] = dK[i];
        for (size_t i = 0; i < nu; i++) grads->recurrent_kernel[i] = dU[i];
        for (size_t i = 0; i < G; i++) grads->bias[i] = db[i];
        for (size_t i = 0; i < state; i++) { grads->initial_h[i] = dh[i]; grads->initial_c[i] = dc[i]; }
    }
    free(dh); free(dc); free(dprev); free(dz); free(dhp); free(dK); free(dU); free(db); free(dx);
    free(K); free(U); free(bias); free(zs); free(hs); free(cs); free(prev); free(hn); free(cns);
    return ok ? 0 : -1;
}
