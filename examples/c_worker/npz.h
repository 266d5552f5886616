/* Reading and writing NumPy .npz archives: a zip of .npy arrays.
 *
 * The reader takes stored (uncompressed) members, with or without Zip64
 * records, as np.savez writes them; the writer writes stored members. */
#ifndef NPZ_H
#define NPZ_H

#include <stddef.h>

#define NPY_MAX_DIMS 8

typedef enum { NPY_F8, NPY_F4, NPY_B1, NPY_U1 } NpyType;

typedef struct {
    char name[64];               /* member name without ".npy" */
    NpyType type;
    int ndim;
    size_t shape[NPY_MAX_DIMS];
    size_t count;                /* number of elements */
    const unsigned char *data;   /* points into the archive's buffer */
} NpyArray;

typedef struct {
    unsigned char *buffer;       /* the whole file */
    size_t n;
    NpyArray arrays[32];
} Npz;

/* Read `path`; 0 on success, else -1 with a message in `err`. */
int npz_read(const char *path, Npz *npz, char *err, size_t errlen);
void npz_free(Npz *npz);
const NpyArray *npz_get(const Npz *npz, const char *name);

/* Element i of a numeric or boolean array, as a double. */
double npy_value(const NpyArray *a, size_t i);

/* An archive being written: add members, then close. */
typedef struct NpzWriter NpzWriter;
NpzWriter *npz_create(const char *path);
/* A float64 array of `ndim` dimensions; a 1-D uint8 array of `n` bytes. */
int npz_add_f8(NpzWriter *w, const char *name, const double *data, int ndim, const size_t *shape);
int npz_add_bytes(NpzWriter *w, const char *name, const void *data, size_t n);
int npz_close(NpzWriter *w);   /* 0 on success */

#endif
