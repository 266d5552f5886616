/* convlstm-worker: a ConvLSTM2D in C speaking the conformance suite's worker
 * protocol (docs/worker-protocol.md), protocol 2.
 *
 * Requests arrive on stdin, one JSON object per line; answers go to stdout,
 * one per line; diagnostics go to stderr.  A "run" request names a case file
 * (.npz) to read and a result file (.npz) to write.  The worker computes the
 * float32 and float64 forward pass and its gradients, claims exactly what it
 * implements (CAPABILITIES below) and refuses every other case, saying why.
 *
 * Build: make (or cc -O2 -std=c11 -o convlstm-worker *.c -lm).
 * `--wrong-forget-bias` adds 0.01 to the forget-gate bias: a planted bug for
 * checking that the suite catches it. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "convlstm.h"
#include "json.h"
#include "npz.h"

#define VERSION "1.0"

/* What this implementation computes, in the suite's feature names
 * (core/features.py); a feature left out would take the suite's default. */
static const char CAPABILITIES[] =
    "{\"padding\": [\"same\", \"valid\"], \"data_format\": [\"channels_first\", \"channels_last\"],"
    " \"activation\": [\"hard_sigmoid\", \"linear\", \"relu\", \"sigmoid\", \"tanh\"],"
    " \"recurrent_activation\": [\"hard_sigmoid\", \"linear\", \"relu\", \"sigmoid\", \"tanh\"],"
    " \"dtype\": [\"float32\", \"float64\"], \"device\": [\"cpu\"], \"kernel_parity\": [\"even\", \"odd\"],"
    " \"strides\": true, \"dilation\": true, \"no_bias\": true, \"non_square\": true,"
    " \"return_state\": true, \"return_sequences\": true, \"go_backwards\": true, \"mask\": true,"
    " \"initial_state\": true, \"masking_layer\": true, \"stateful\": false, \"dropout\": false,"
    " \"dropout_injection\": false, \"gradients\": true, \"argument_validation\": false,"
    " \"serialization\": false, \"mixed_precision\": false, \"symbolic_shapes\": false}";

static const char *ACTIVATION_NAMES[] = {"tanh", "sigmoid", "hard_sigmoid", "relu", "linear"};

static int wrong_forget_bias;

/* --------------------------------------------------------------------- */
/* The outcome of one case */

typedef struct {
    const char *status;          /* "ok", "raised", "refused" */
    char message[512];           /* the error's message or the refusal's reason */
    const char *phase;           /* "construct" or "call", for "raised" */
    int n_outputs;               /* 1 or 3 */
    double *outputs[3];
    int ndim[3];
    size_t shape[3][5];
    const char *dtype;
    int n_grads;                 /* gradients, written as grad_<name> */
    const char *grad_names[6];
    double *grads[6];
    int grad_ndim[6];
    size_t grad_shape[6][5];
} Result;

/* Hand a gradient to the result, of `ndim` dimensions `shape`. */
static void add_grad(Result *r, const char *name, double *data, int ndim, const size_t *shape) {
    r->grad_names[r->n_grads] = name;
    r->grads[r->n_grads] = data;
    r->grad_ndim[r->n_grads] = ndim;
    memcpy(r->grad_shape[r->n_grads], shape, (size_t)ndim * sizeof *shape);
    r->n_grads++;
}

static int refuse(Result *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
    r->status = "refused";
    return -1;
}

/* The layer rejects the configuration or the input, as Keras raises ValueError. */
static int raise_value_error(Result *r, const char *phase, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
    r->status = "raised";
    r->phase = phase;
    return -1;
}

/* --------------------------------------------------------------------- */
/* Reading the case's configuration */

static int is_int(const JValue *v) {
    return v && v->type == J_NUM && v->number == floor(v->number) && fabs(v->number) < 1e9;
}

/* An integer or a pair of integers (kernel_size, strides, dilation_rate). */
static int get_pair(const JValue *cfg, const char *key, long fallback, long out[2], Result *r) {
    const JValue *v = json_get(cfg, key);
    if (!v) { out[0] = out[1] = fallback; return 0; }
    if (is_int(v)) { out[0] = out[1] = (long)v->number; }
    else if (v->type == J_ARR && v->n == 2 && is_int(v->items[0]) && is_int(v->items[1])) {
        out[0] = (long)v->items[0]->number;
        out[1] = (long)v->items[1]->number;
    } else return raise_value_error(r, "construct", "%s must be an integer or a pair of integers", key);
    if (out[0] < 1 || out[1] < 1)
        return raise_value_error(r, "construct", "%s must be positive, got (%ld, %ld)", key, out[0], out[1]);
    return 0;
}

static int get_flag(const JValue *obj, const char *key, int fallback) {
    const JValue *v = json_get(obj, key);
    return v && v->type == J_BOOL ? v->boolean : fallback;
}

static double get_number(const JValue *obj, const char *key) {
    const JValue *v = json_get(obj, key);
    return v && v->type == J_NUM ? v->number : 0.0;
}

static int get_activation(const JValue *cfg, const char *key, const char *fallback,
                          Activation *out, Result *r) {
    const JValue *v = json_get(cfg, key);
    const char *name = !v ? fallback : v->type == J_NULL ? "linear" : v->type == J_STR ? v->string : NULL;
    if (!name) return raise_value_error(r, "construct", "%s must be a name", key);
    for (size_t i = 0; i < sizeof ACTIVATION_NAMES / sizeof *ACTIVATION_NAMES; i++)
        if (strcmp(name, ACTIVATION_NAMES[i]) == 0) { *out = (Activation)i; return 0; }
    return refuse(r, "outside capabilities: %s=%.80s", key, name);
}

/* An array of the case, required to have `ndim` dimensions. */
static const NpyArray *array(const Npz *npz, const char *name, int ndim, Result *r) {
    const NpyArray *a = npz_get(npz, name);
    if (a && (a->ndim != ndim || (a->type != NPY_F8 && strcmp(name, "mask") != 0))) {
        raise_value_error(r, "call", "%s must be a %d-D float64 array", name, ndim);
        return NULL;
    }
    return a;
}

/* The array's values as doubles; a channels_first (lead..., X, Y, Z) array
 * reordered to channels_last (lead..., Y, Z, X). */
static double *to_last(const NpyArray *a, int channels_first) {
    size_t n = a->count;
    double *out = malloc((n ? n : 1) * sizeof *out);
    if (!out) return NULL;
    if (!channels_first) {
        for (size_t i = 0; i < n; i++) out[i] = npy_value(a, i);
        return out;
    }
    size_t X = a->shape[a->ndim - 3], Y = a->shape[a->ndim - 2], Z = a->shape[a->ndim - 1];
    size_t lead = (X * Y * Z) != 0 ? n / (X * Y * Z) : 0;   /* batch (and time) */
    for (size_t l = 0; l < lead; l++)
        for (size_t x = 0; x < X; x++)
            for (size_t y = 0; y < Y; y++)
                for (size_t z = 0; z < Z; z++)
                    out[((l * Y + y) * Z + z) * X + x] = npy_value(a, ((l * X + x) * Y + y) * Z + z);
    return out;
}

/* channels_last (lead, Ho, Wo, F) -> channels_first (lead, F, Ho, Wo), in place via a copy. */
static void to_first(double *a, size_t lead, size_t Ho, size_t Wo, size_t F) {
    double *tmp = malloc(lead * Ho * Wo * F * sizeof *tmp);
    if (!tmp) return;
    memcpy(tmp, a, lead * Ho * Wo * F * sizeof *tmp);
    for (size_t l = 0; l < lead; l++)
        for (size_t y = 0; y < Ho; y++)
            for (size_t x = 0; x < Wo; x++)
                for (size_t f = 0; f < F; f++)
                    a[((l * F + f) * Ho + y) * Wo + x] = tmp[((l * Ho + y) * Wo + x) * F + f];
    free(tmp);
}

/* Output extent and leading padding of one spatial axis; -1 when too small. */
static long geometry(size_t n, long k, long s, long d, int same, size_t *pad_before) {
    long span = (k - 1) * d + 1;
    *pad_before = 0;
    if (!same) return (long)n >= span ? ((long)n - span) / s + 1 : -1;
    long out = ((long)n + s - 1) / s, total = (out - 1) * s + span - (long)n;
    *pad_before = total > 0 ? (size_t)(total / 2) : 0;       /* the odd one after, as TF */
    return out;
}

/* --------------------------------------------------------------------- */
/* One case */

static int run_case(const JValue *meta, const Npz *npz, Result *r) {
    const JValue *cfg = json_get(meta, "config");
    const JValue *dtype = json_get(meta, "dtype");
    const char *dt = dtype && dtype->type == J_STR ? dtype->string : "float32";
    if (strcmp(dt, "float32") != 0 && strcmp(dt, "float64") != 0)
        return refuse(r, "outside capabilities: dtype=%.40s", dt);
    r->dtype = strcmp(dt, "float32") == 0 ? "float32" : "float64";
    const JValue *device = json_get(cfg, "device"), *followups = json_get(meta, "followups"),
                 *masking = json_get(meta, "masking_value"), *roundtrip = json_get(meta, "roundtrip"),
                 *unknown = json_get(meta, "unknown_dims");
    if (device && !(device->type == J_STR && strcmp(device->string, "cpu") == 0))
        return refuse(r, "outside capabilities: device");
    if (get_flag(cfg, "stateful", 0) || (followups && followups->n))
        return refuse(r, "outside capabilities: stateful");
    if (roundtrip && roundtrip->type == J_STR && roundtrip->string[0])
        return refuse(r, "outside capabilities: serialization");
    if (unknown && unknown->n) return refuse(r, "outside capabilities: symbolic_shapes");
    if (npz_get(npz, "dropout_mask") || npz_get(npz, "recurrent_dropout_mask"))
        return refuse(r, "outside capabilities: dropout_injection");
    if (get_flag(meta, "training", 0) && (get_number(cfg, "dropout") > 0 || get_number(cfg, "recurrent_dropout") > 0))
        return refuse(r, "outside capabilities: dropout");

    Problem p = {0};
    const JValue *filters = json_get(cfg, "filters"), *padding = json_get(cfg, "padding"),
                 *format = json_get(cfg, "data_format");
    if (!is_int(filters) || filters->number < 1)
        return raise_value_error(r, "construct", "filters must be a positive integer");
    p.F = (size_t)filters->number;
    long k[2], s[2], d[2];
    if (!json_get(cfg, "kernel_size")) return raise_value_error(r, "construct", "kernel_size is required");
    if (get_pair(cfg, "kernel_size", 1, k, r) || get_pair(cfg, "strides", 1, s, r)
        || get_pair(cfg, "dilation_rate", 1, d, r))
        return -1;
    if ((s[0] > 1 || s[1] > 1) && (d[0] > 1 || d[1] > 1))
        return raise_value_error(r, "construct", "strides > 1 is incompatible with dilation_rate > 1");
    int same;
    if (!padding) same = 0;
    else if (padding->type == J_STR && strcasecmp(padding->string, "same") == 0) same = 1;
    else if (padding->type == J_STR && strcasecmp(padding->string, "valid") == 0) same = 0;
    else return raise_value_error(r, "construct", "padding must be 'valid' or 'same'");
    int cf;
    if (!format || format->type == J_NULL) cf = 0;
    else if (format->type == J_STR && strcmp(format->string, "channels_first") == 0) cf = 1;
    else if (format->type == J_STR && strcmp(format->string, "channels_last") == 0) cf = 0;
    else return raise_value_error(r, "construct", "data_format must be channels_first or channels_last");
    if (get_activation(cfg, "activation", "tanh", &p.act, r)
        || get_activation(cfg, "recurrent_activation", "sigmoid", &p.ract, r))
        return -1;
    int use_bias = get_flag(cfg, "use_bias", 1);
    p.go_backwards = get_flag(cfg, "go_backwards", 0);
    p.kh = (size_t)k[0]; p.kw = (size_t)k[1]; p.sh = (size_t)s[0]; p.sw = (size_t)s[1];
    p.dh = (size_t)d[0]; p.dw = (size_t)d[1];

    const NpyArray *inputs = npz_get(npz, "inputs");
    if (!inputs || inputs->type != NPY_F8) return raise_value_error(r, "call", "inputs must be a float64 array");
    if (inputs->ndim != 5)
        return raise_value_error(r, "call", "Input 0 of layer is incompatible: expected ndim=5, found ndim=%d",
                                 inputs->ndim);
    const size_t *sh = inputs->shape;
    p.B = sh[0]; p.T = sh[1];
    p.C = cf ? sh[2] : sh[4]; p.H = cf ? sh[3] : sh[2]; p.W = cf ? sh[4] : sh[3];
    if (!p.B || !p.T || !p.H || !p.W || !p.C) return raise_value_error(r, "call", "inputs have an empty dimension");
    long Ho = geometry(p.H, k[0], s[0], d[0], same, &p.pad_top);
    long Wo = geometry(p.W, k[1], s[1], d[1], same, &p.pad_left);
    if (Ho < 1 || Wo < 1)
        return raise_value_error(r, "call", "input %zux%zu is too small for kernel %ldx%ld with dilation %ldx%ld",
                                 p.H, p.W, k[0], k[1], d[0], d[1]);
    p.Ho = (size_t)Ho; p.Wo = (size_t)Wo;

    const NpyArray *K = array(npz, "kernel", 4, r), *U = array(npz, "recurrent_kernel", 4, r),
                   *bias = array(npz, "bias", 1, r), *h0 = array(npz, "initial_h", 4, r),
                   *c0 = array(npz, "initial_c", 4, r), *mask = array(npz, "mask", 2, r);
    if (r->status) return -1;
    if (!K || !U) return refuse(r, "the case carries no weights to map");
    if (use_bias && !bias) return refuse(r, "use_bias is set but the case carries no bias");
    size_t G = 4 * p.F;
    if (K->shape[0] != p.kh || K->shape[1] != p.kw || K->shape[2] != p.C || K->shape[3] != G
        || U->shape[0] != p.kh || U->shape[1] != p.kw || U->shape[2] != p.F || U->shape[3] != G
        || (use_bias && bias->shape[0] != G))
        return raise_value_error(r, "call", "weights do not match kernel_size, the input channels and filters");
    if (!h0 != !c0) return raise_value_error(r, "call", "initial_state needs both h and c");
    size_t state = p.B * p.Ho * p.Wo * p.F;
    if (h0 && (h0->count != state || c0->count != state || h0->shape[0] != p.B
               || h0->shape[cf ? 1 : 3] != p.F || h0->shape[cf ? 2 : 1] != p.Ho))
        return raise_value_error(r, "call", "initial_state does not have the state's shape");
    if (mask && (mask->type != NPY_B1 || mask->shape[0] != p.B || mask->shape[1] != p.T))
        return raise_value_error(r, "call", "mask must be a boolean (batch, timesteps) array");
    int sequences = get_flag(cfg, "return_sequences", 0), with_state = get_flag(cfg, "return_state", 0);
    const NpyArray *cot = array(npz, "cotangent", sequences ? 5 : 4, r);
    if (r->status) return -1;
    if (cot && cot->count != (sequences ? p.T : 1) * state)
        return raise_value_error(r, "call", "cotangent does not have the output's shape");
    p.return_sequences = sequences;
    size_t frame_in = p.H * p.W * p.C, nk = p.kh * p.kw * p.C * G, nu = p.kh * p.kw * p.F * G;
    Grads grads = {0};
    if (cot) {
        grads.inputs = malloc(p.B * p.T * frame_in * sizeof(double));
        grads.kernel = malloc(nk * sizeof(double));
        grads.recurrent_kernel = malloc(nu * sizeof(double));
        grads.bias = malloc(G * sizeof(double));
        grads.initial_h = malloc(state * sizeof(double));
        grads.initial_c = malloc(state * sizeof(double));
    }
    double *cotl = cot ? to_last(cot, cf) : NULL;
    int grads_ok = !cot || (cotl && grads.inputs && grads.kernel && grads.recurrent_kernel
                            && grads.bias && grads.initial_h && grads.initial_c);

    double *x = to_last(inputs, cf), *h0l = h0 ? to_last(h0, cf) : NULL, *c0l = c0 ? to_last(c0, cf) : NULL;
    double *kernel = to_last(K, 0), *rec = to_last(U, 0), *b = use_bias ? to_last(bias, 0) : NULL;
    unsigned char *m = malloc(p.B * p.T);
    double *seq = malloc(p.B * p.T * state / p.B * sizeof *seq), *h = malloc(state * sizeof *h),
           *c = malloc(state * sizeof *c);
    int status = -1;
    if (x && kernel && rec && m && seq && h && c && (!h0 || (h0l && c0l)) && (!use_bias || b) && grads_ok) {
        for (size_t i = 0; mask && i < p.B * p.T; i++) m[i] = mask->data[i] != 0;
        if (masking && masking->type == J_NUM) {
            /* An upstream Masking layer skips a step whose every value equals mask_value. */
            size_t frame = p.H * p.W * p.C;
            for (size_t i = 0; i < p.B * p.T; i++) {
                m[i] = 0;
                for (size_t j = 0; j < frame; j++) m[i] |= x[i * frame + j] != masking->number;
            }
        }
        if (b && wrong_forget_bias)
            for (size_t f = 0; f < p.F; f++) b[p.F + f] += 0.01;
        p.x = x; p.kernel = kernel; p.recurrent_kernel = rec; p.bias = b;
        p.h0 = h0l; p.c0 = c0l;
        p.mask = (mask || (masking && masking->type == J_NUM)) ? m : NULL;
        p.cotangent = cotl;
        status = convlstm_forward(&p, strcmp(r->dtype, "float32") == 0, seq, h, c, cot ? &grads : NULL);
    }
    free(x); free(h0l); free(c0l); free(kernel); free(rec); free(b); free(m); free(cotl);
    if (!status && cot) {
        /* Gradients in the case's layout; the weights' in the canonical one. */
        size_t in_shape[5] = {p.B, p.T, cf ? p.C : p.H, cf ? p.H : p.W, cf ? p.W : p.C};
        size_t st_shape[4] = {p.B, cf ? p.F : p.Ho, cf ? p.Ho : p.Wo, cf ? p.Wo : p.F};
        size_t k_shape[4] = {p.kh, p.kw, p.C, G}, u_shape[4] = {p.kh, p.kw, p.F, G};
        if (cf) to_first(grads.inputs, p.B * p.T, p.H, p.W, p.C);
        add_grad(r, "inputs", grads.inputs, 5, in_shape);
        add_grad(r, "kernel", grads.kernel, 4, k_shape);
        add_grad(r, "recurrent_kernel", grads.recurrent_kernel, 4, u_shape);
        if (use_bias) add_grad(r, "bias", grads.bias, 1, &G); else free(grads.bias);
        if (h0) {
            if (cf) { to_first(grads.initial_h, p.B, p.Ho, p.Wo, p.F); to_first(grads.initial_c, p.B, p.Ho, p.Wo, p.F); }
            add_grad(r, "initial_h", grads.initial_h, 4, st_shape);
            add_grad(r, "initial_c", grads.initial_c, 4, st_shape);
        } else { free(grads.initial_h); free(grads.initial_c); }
    } else {
        free(grads.inputs); free(grads.kernel); free(grads.recurrent_kernel); free(grads.bias);
        free(grads.initial_h); free(grads.initial_c);
    }
    if (status) {
        free(seq); free(h); free(c);
        return raise_value_error(r, "call", "out of memory");
    }
    size_t frame = p.Ho * p.Wo * p.F;
    if (sequences) {
        if (cf) to_first(seq, p.B * p.T, p.Ho, p.Wo, p.F);
        r->outputs[0] = seq;
        r->ndim[0] = 5;
        size_t shape[5] = {p.B, p.T, cf ? p.F : p.Ho, cf ? p.Ho : p.Wo, cf ? p.Wo : p.F};
        memcpy(r->shape[0], shape, sizeof shape);
    } else {
        double *last = malloc(state * sizeof *last);
        for (size_t i = 0; last && i < p.B; i++)
            memcpy(last + i * frame, seq + (i * p.T + p.T - 1) * frame, frame * sizeof *last);
        free(seq);
        if (!last) { free(h); free(c); return raise_value_error(r, "call", "out of memory"); }
        if (cf) to_first(last, p.B, p.Ho, p.Wo, p.F);
        r->outputs[0] = last;
    }
    if (cf) { to_first(h, p.B, p.Ho, p.Wo, p.F); to_first(c, p.B, p.Ho, p.Wo, p.F); }
    size_t state_shape[4] = {p.B, cf ? p.F : p.Ho, cf ? p.Ho : p.Wo, cf ? p.Wo : p.F};
    for (int i = sequences ? 1 : 0; i < 3; i++) {
        r->ndim[i] = 4;
        memcpy(r->shape[i], state_shape, sizeof state_shape);
    }
    if (with_state) { r->outputs[1] = h; r->outputs[2] = c; r->n_outputs = 3; }
    else { free(h); free(c); r->n_outputs = 1; }
    r->status = "ok";
    return 0;
}

/* --------------------------------------------------------------------- */
/* Result files */

static int write_result(const char *path, const Result *r, double seconds) {
    char *meta = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&meta, &len);
    if (!m) return -1;
    fprintf(m, "{\"status\": \"%s\", \"n_outputs\": %d, \"duration_s\": %.6f", r->status, r->n_outputs, seconds);
    if (strcmp(r->status, "ok") == 0) {
        fprintf(m, ", \"structure\": \"%s\", \"dtypes\": [", r->n_outputs > 1 ? "list" : "tensor");
        for (int i = 0; i < r->n_outputs; i++) fprintf(m, "%s\"%s\"", i ? ", " : "", r->dtype);
        fputs("]", m);
    } else if (strcmp(r->status, "raised") == 0) {
        fputs(", \"error\": {\"type\": \"ValueError\", \"message\": ", m);
        json_write_string(m, r->message);
        fprintf(m, ", \"phase\": \"%s\", \"mro\": [\"ValueError\", \"Exception\", \"BaseException\", "
                   "\"object\"]}", r->phase);
    } else {
        fputs(", \"detail\": ", m);
        json_write_string(m, r->message);
    }
    fputs("}", m);
    fclose(m);
    NpzWriter *w = npz_create(path);
    int failed = !w || npz_add_bytes(w, "__meta__", meta, len);
    for (int i = 0; w && !failed && i < r->n_outputs; i++) {
        char name[8];
        snprintf(name, sizeof name, "out%d", i);
        failed = npz_add_f8(w, name, r->outputs[i], r->ndim[i], r->shape[i]) != 0;
    }
    for (int i = 0; w && !failed && i < r->n_grads; i++) {
        char name[32];
        snprintf(name, sizeof name, "grad_%s", r->grad_names[i]);
        failed = npz_add_f8(w, name, r->grads[i], r->grad_ndim[i], r->grad_shape[i]) != 0;
    }
    if (w && npz_close(w)) failed = 1;
    free(meta);
    return failed ? -1 : 0;
}

/* --------------------------------------------------------------------- */
/* The protocol loop */

static void answer(const JValue *id, int ok, const char *extra) {
    printf("{\"ok\": %s", ok ? "true" : "false");
    if (id && id->type == J_NUM) printf(", \"id\": %.0f", id->number);
    if (extra) printf(", %s", extra);
    puts("}");
    fflush(stdout);
}

static void answer_error(const JValue *id, const char *message) {
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    fputs("\"error\": ", m);
    json_write_string(m, message);
    fclose(m);
    answer(id, 0, text);
    free(text);
}

static void serve_run(const JValue *msg, const JValue *id) {
    const JValue *case_path = json_get(msg, "case"), *result_path = json_get(msg, "result");
    if (!case_path || case_path->type != J_STR || !result_path || result_path->type != J_STR) {
        answer_error(id, "run needs 'case' and 'result' paths");
        return;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char err[512];
    Npz npz;
    if (npz_read(case_path->string, &npz, err, sizeof err)) {
        npz_free(&npz);
        answer_error(id, err);
        return;
    }
    const NpyArray *meta_bytes = npz_get(&npz, "__meta__");
    JValue *meta = meta_bytes && meta_bytes->type == NPY_U1
                       ? json_parse((const char *)meta_bytes->data, meta_bytes->count, err, sizeof err)
                       : NULL;
    if (!meta || !json_get(meta, "config")) {
        answer_error(id, meta_bytes ? "unreadable __meta__ in the case file" : "no __meta__ in the case file");
        json_free(meta);
        npz_free(&npz);
        return;
    }
    Result r = {0};
    run_case(meta, &npz, &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (write_result(result_path->string, &r, seconds)) answer_error(id, "cannot write the result file");
    else answer(id, 1, NULL);
    for (int i = 0; i < 3; i++) free(r.outputs[i]);
    for (int i = 0; i < r.n_grads; i++) free(r.grads[i]);
    json_free(meta);
    npz_free(&npz);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--wrong-forget-bias") == 0) wrong_forget_bias = 1;
        else { fprintf(stderr, "usage: %s [--wrong-forget-bias]\n", argv[0]); return 2; }
    }
    puts("{\"ok\": true, \"op\": \"hello\", \"protocol\": 2}");
    fflush(stdout);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        char err[256];
        JValue *msg = json_parse(line, (size_t)n, err, sizeof err);
        const JValue *op = json_get(msg, "op"), *id = json_get(msg, "id");
        if (!op || op->type != J_STR) {
            fprintf(stderr, "convlstm-worker: unreadable request (%s)\n", msg ? "no op" : err);
            answer_error(id, "unreadable request");
        } else if (strcmp(op->string, "capabilities") == 0) {
            char extra[sizeof CAPABILITIES + 32];
            snprintf(extra, sizeof extra, "\"capabilities\": %s", CAPABILITIES);
            answer(id, 1, extra);
        } else if (strcmp(op->string, "versions") == 0) {
            answer(id, 1, "\"versions\": {\"c-convlstm\": \"" VERSION "\", \"compiler\": \"" __VERSION__ "\"}");
        } else if (strcmp(op->string, "run") == 0) {
            serve_run(msg, id);
        } else if (strcmp(op->string, "reset") == 0) {
            answer(id, 1, NULL);         /* no state is carried between cases */
        } else if (strcmp(op->string, "close") == 0) {
            answer(id, 1, NULL);
            json_free(msg);
            break;
        } else {
            answer_error(id, "unknown op");
        }
        json_free(msg);
    }
    free(line);
    return 0;
}
