/* The forward and backward passes, compiled once for float32 and once for float64. */
#include "convlstm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define REAL float
#define NAME(x) x##_f32
#define EXP expf
#define TANH tanhf
#include "convlstm_impl.h"
#undef REAL
#undef NAME
#undef EXP
#undef TANH

#define REAL double
#define NAME(x) x##_f64
#define EXP exp
#define TANH tanh
#include "convlstm_impl.h"

int convlstm_forward(const Problem *p, int single, double *seq, double *h, double *c, Grads *grads) {
    return single ? forward_f32(p, seq, h, c, grads) : forward_f64(p, seq, h, c, grads);
}
