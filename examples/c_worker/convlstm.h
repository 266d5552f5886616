/* The ConvLSTM2D forward pass, in float32 or float64 arithmetic. */
#ifndef CONVLSTM_H
#define CONVLSTM_H

#include <stddef.h>

typedef enum { ACT_TANH, ACT_SIGMOID, ACT_HARD_SIGMOID, ACT_RELU, ACT_LINEAR } Activation;

/* Everything about one call, channels_last; weights in the canonical Keras
 * layout: kernel (kh, kw, C, 4F), recurrent_kernel (kh, kw, F, 4F), bias
 * (4F), gate blocks i, f, c, o. */
typedef struct {
    size_t B, T, H, W, C, F;      /* batch, steps, rows, cols, channels, filters */
    size_t kh, kw, sh, sw, dh, dw;
    size_t Ho, Wo;                /* output rows and cols */
    size_t pad_top, pad_left;     /* of the input convolution ("same": TF placement) */
    Activation act, ract;
    int go_backwards;
    const double *x;              /* (B, T, H, W, C) */
    const double *kernel, *recurrent_kernel, *bias;   /* bias NULL: no bias */
    const double *h0, *c0;        /* (B, Ho, Wo, F) each, or NULL: zeros */
    const unsigned char *mask;    /* (B, T), or NULL */
    int return_sequences;
    const double *cotangent;      /* shaped like the output, channels_last; NULL: no gradients */
} Problem;

/* Gradients of sum(output * cotangent), channels_last, canonical weight layouts. */
typedef struct {
    double *inputs;               /* (B, T, H, W, C) */
    double *kernel, *recurrent_kernel, *bias;
    double *initial_h, *initial_c;   /* (B, Ho, Wo, F): of the initial state (zeros or given) */
} Grads;

/* Run the layer; `seq` gets (B, T, Ho, Wo, F) outputs in processing order,
 * `h` and `c` the final state (B, Ho, Wo, F); results as doubles.  With
 * `grads` (and p->cotangent), the gradients too.  `single` selects float32
 * arithmetic.  0 on success, -1 out of memory. */
int convlstm_forward(const Problem *p, int single, double *seq, double *h, double *c, Grads *grads);

#endif
