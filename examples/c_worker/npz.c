/* .npz reading and writing: the zip container (central directory, Zip64
 * extras, CRC-32) and the .npy header, without third-party code. */
#include "npz.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE_BYTES ((size_t)1 << 31)   /* a case file larger than 2 GiB is refused */

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static uint32_t le16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t le32(const unsigned char *p) { return le16(p) | le16(p + 2) << 16; }
static uint64_t le64(const unsigned char *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

/* --------------------------------------------------------------------- */
/* .npy header: {'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), } */

static int parse_npy(const unsigned char *p, size_t n, NpyArray *a, char *err, size_t errlen) {
    if (n < 10 || memcmp(p, "\x93NUMPY", 6) != 0)
        return fail(err, errlen, "%s: not a .npy array", a->name);
    size_t hlen, start;
    if (p[6] == 1) { hlen = le16(p + 8); start = 10; }
    else if (p[6] == 2 || p[6] == 3) {
        if (n < 12) return fail(err, errlen, "%s: truncated header", a->name);
        hlen = le32(p + 8); start = 12;
    } else return fail(err, errlen, "%s: .npy version %d", a->name, p[6]);
    if (hlen > 65536 || start + hlen > n) return fail(err, errlen, "%s: truncated header", a->name);
    char header[65537];
    memcpy(header, p + start, hlen);
    header[hlen] = 0;
    const char *d = strstr(header, "'descr':"), *f = strstr(header, "'fortran_order':"),
               *s = strstr(header, "'shape':");
    if (!d || !f || !s) return fail(err, errlen, "%s: header without descr, fortran_order or shape", a->name);
    static const struct { const char *descr; NpyType type; size_t size; } types[] = {
        {"'<f8'", NPY_F8, 8}, {"'<f4'", NPY_F4, 4}, {"'|b1'", NPY_B1, 1}, {"'|u1'", NPY_U1, 1}};
    d += strlen("'descr':");
    while (*d == ' ') d++;
    size_t size = 0;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (strncmp(d, types[i].descr, strlen(types[i].descr)) == 0) { a->type = types[i].type; size = types[i].size; }
    if (!size) return fail(err, errlen, "%s: unsupported dtype %.10s", a->name, d);
    f += strlen("'fortran_order':");
    while (*f == ' ') f++;
    if (strncmp(f, "False", 5) != 0) return fail(err, errlen, "%s: Fortran order is not supported", a->name);
    s += strlen("'shape':");
    while (*s == ' ') s++;
    if (*s++ != '(') return fail(err, errlen, "%s: bad shape", a->name);
    a->ndim = 0;
    a->count = 1;
    for (;;) {
        while (*s == ' ' || *s == ',') s++;
        if (*s == ')') break;
        char *stop;
        unsigned long long dim = strtoull(s, &stop, 10);
        if (stop == s || a->ndim == NPY_MAX_DIMS || dim > ((size_t)1 << 40))
            return fail(err, errlen, "%s: bad shape", a->name);
        a->shape[a->ndim++] = (size_t)dim;
        if (dim && a->count > ((size_t)1 << 40) / dim) return fail(err, errlen, "%s: too large", a->name);
        a->count *= (size_t)dim;
        s = stop;
    }
    if (start + hlen + a->count * size > n)
        return fail(err, errlen, "%s: %zu elements but only %zu bytes of data", a->name, a->count,
                    n - start - hlen);
    a->data = p + start + hlen;
    return 0;
}

double npy_value(const NpyArray *a, size_t i) {
    const unsigned char *p = a->data;
    switch (a->type) {
    case NPY_F8: { double v; memcpy(&v, p + 8 * i, 8); return v; }   /* x86/ARM are little-endian */
    case NPY_F4: { float v; memcpy(&v, p + 4 * i, 4); return v; }
    default: return p[i];
    }
}

/* --------------------------------------------------------------------- */
/* Zip reading, from the central directory */

static int find_eocd(const unsigned char *b, size_t n, size_t *at) {
    if (n < 22) return 0;
    size_t lowest = n > 22 + 65535 ? n - 22 - 65535 : 0;
    for (size_t i = n - 22 + 1; i-- > lowest;)
        if (le32(b + i) == 0x06054b50) { *at = i; return 1; }
    return 0;
}

int npz_read(const char *path, Npz *npz, char *err, size_t errlen) {
    memset(npz, 0, sizeof *npz);
    FILE *fh = fopen(path, "rb");
    if (!fh) return fail(err, errlen, "cannot open %s", path);
    fseek(fh, 0, SEEK_END);
    long size = ftell(fh);
    fseek(fh, 0, SEEK_SET);
    if (size < 0 || (size_t)size > MAX_FILE_BYTES) { fclose(fh); return fail(err, errlen, "%s: unreadable size", path); }
    npz->n = (size_t)size;
    npz->buffer = malloc(npz->n ? npz->n : 1);
    if (!npz->buffer || fread(npz->buffer, 1, npz->n, fh) != npz->n) {
        fclose(fh);
        return fail(err, errlen, "cannot read %s", path);
    }
    fclose(fh);
    const unsigned char *b = npz->buffer;
    size_t n = npz->n, eocd;
    if (!find_eocd(b, n, &eocd)) return fail(err, errlen, "%s: not a zip archive", path);
    uint64_t entries = le16(b + eocd + 10), cd = le32(b + eocd + 16);
    if ((entries == 0xFFFF || cd == 0xFFFFFFFF) && eocd >= 20 && le32(b + eocd - 20) == 0x07064b50) {
        uint64_t z = le64(b + eocd - 20 + 8);          /* the Zip64 end record */
        if (z + 56 > n || le32(b + z) != 0x06064b50) return fail(err, errlen, "%s: bad Zip64 record", path);
        entries = le64(b + z + 32);
        cd = le64(b + z + 48);
    }
    if (entries > sizeof npz->arrays / sizeof *npz->arrays)
        return fail(err, errlen, "%s: %llu members, more than this reader takes", path, (unsigned long long)entries);
    for (uint64_t k = 0; k < entries; k++) {
        if (cd + 46 > n || le32(b + cd) != 0x02014b50) return fail(err, errlen, "%s: bad central directory", path);
        uint32_t method = le16(b + cd + 10), nlen = le16(b + cd + 28), elen = le16(b + cd + 30),
                 clen = le16(b + cd + 32);
        uint64_t csize = le32(b + cd + 20), usize = le32(b + cd + 24), local = le32(b + cd + 42);
        if (cd + 46 + nlen + elen > n) return fail(err, errlen, "%s: bad central directory", path);
        /* Zip64 extra field: the 64-bit values of the fields set to 0xFFFFFFFF, in order. */
        for (size_t e = cd + 46 + nlen; e + 4 <= cd + 46 + nlen + elen;) {
            uint32_t id = le16(b + e), len = le16(b + e + 2);
            if (id == 1) {
                size_t q = e + 4;
                if (usize == 0xFFFFFFFF && q + 8 <= e + 4 + len) { usize = le64(b + q); q += 8; }
                if (csize == 0xFFFFFFFF && q + 8 <= e + 4 + len) { csize = le64(b + q); q += 8; }
                if (local == 0xFFFFFFFF && q + 8 <= e + 4 + len) { local = le64(b + q); }
            }
            e += 4 + len;
        }
        NpyArray *a = &npz->arrays[k];
        if (nlen < 5 || nlen - 4 >= sizeof a->name || memcmp(b + cd + 46 + nlen - 4, ".npy", 4) != 0)
            return fail(err, errlen, "%s: member %llu is not a .npy file", path, (unsigned long long)k);
        memcpy(a->name, b + cd + 46, nlen - 4);
        a->name[nlen - 4] = 0;
        if (method != 0 || csize != usize)
            return fail(err, errlen, "%s: member %s is compressed (method %u); this reader takes "
                        "stored members, as np.savez writes them", path, a->name, method);
        if (local + 30 > n || le32(b + local) != 0x04034b50) return fail(err, errlen, "%s: bad local header", path);
        uint64_t data = local + 30 + le16(b + local + 26) + le16(b + local + 28);
        if (data + usize > n) return fail(err, errlen, "%s: member %s is truncated", path, a->name);
        if (parse_npy(b + data, (size_t)usize, a, err, errlen)) return -1;
        cd += 46 + nlen + elen + clen;
    }
    return 0;
}

void npz_free(Npz *npz) {
    free(npz->buffer);
    memset(npz, 0, sizeof *npz);
}

const NpyArray *npz_get(const Npz *npz, const char *name) {
    for (size_t i = 0; i < sizeof npz->arrays / sizeof *npz->arrays; i++)
        if (npz->arrays[i].data && strcmp(npz->arrays[i].name, name) == 0) return &npz->arrays[i];
    return NULL;
}

/* --------------------------------------------------------------------- */
/* Zip writing: stored members, then the central directory */

static uint32_t crc32_update(uint32_t crc, const unsigned char *p, size_t n) {
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    crc = ~crc;
    while (n--) crc = table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

typedef struct { char name[72]; uint32_t crc, size, offset; } Member;

struct NpzWriter {
    FILE *fh;
    uint32_t offset;
    int failed;
    size_t n;
    Member members[32];
};

static void put16(unsigned char *p, uint32_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void put32(unsigned char *p, uint32_t v) { put16(p, v & 0xFFFF); put16(p + 2, v >> 16); }

NpzWriter *npz_create(const char *path) {
    NpzWriter *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    if (!(w->fh = fopen(path, "wb"))) { free(w); return NULL; }
    return w;
}

/* One stored member: the .npy header then `n` bytes of data. */
static int add_member(NpzWriter *w, const char *name, const char *descr, int ndim,
                      const size_t *shape, const void *data, size_t n) {
    char dict[256], dims[160] = "";
    size_t used = 0;
    for (int i = 0; i < ndim; i++)
        used += (size_t)snprintf(dims + used, sizeof dims - used, "%zu,%s", shape[i], i + 1 < ndim ? " " : "");
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                       descr, dims);
    size_t total = 10 + (size_t)len + 1, padded = (total + 63) / 64 * 64;   /* aligned to 64 */
    size_t hlen = padded - 10;
    unsigned char head[10 + 320];
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    put16(head + 8, (uint32_t)hlen);
    memcpy(head + 10, dict, (size_t)len);
    memset(head + 10 + len, ' ', hlen - (size_t)len - 1);
    head[padded - 1] = '\n';
    if (w->n == sizeof w->members / sizeof *w->members || (uint64_t)w->offset + padded + n > 0xFFFF0000u) return -1;
    Member *m = &w->members[w->n++];
    snprintf(m->name, sizeof m->name, "%s.npy", name);
    m->crc = crc32_update(crc32_update(0, head, padded), data, n);
    m->size = (uint32_t)(padded + n);
    m->offset = w->offset;
    size_t nlen = strlen(m->name);
    unsigned char local[30] = {0};
    put32(local, 0x04034b50);
    put16(local + 4, 20);                      /* version needed */
    put16(local + 12, 0x21);                   /* 1980-01-01 */
    put32(local + 14, m->crc);
    put32(local + 18, m->size);
    put32(local + 22, m->size);
    put16(local + 26, (uint32_t)nlen);
    if (fwrite(local, 1, 30, w->fh) != 30 || fwrite(m->name, 1, nlen, w->fh) != nlen
        || fwrite(head, 1, padded, w->fh) != padded || fwrite(data, 1, n, w->fh) != n)
        w->failed = 1;
    w->offset += (uint32_t)(30 + nlen) + m->size;
    return w->failed ? -1 : 0;
}

int npz_add_f8(NpzWriter *w, const char *name, const double *data, int ndim, const size_t *shape) {
    size_t count = 1;
    for (int i = 0; i < ndim; i++) count *= shape[i];
    return add_member(w, name, "<f8", ndim, shape, data, count * sizeof(double));
}

int npz_add_bytes(NpzWriter *w, const char *name, const void *data, size_t n) {
    return add_member(w, name, "|u1", 1, &n, data, n);
}

int npz_close(NpzWriter *w) {
    uint32_t start = w->offset, size = 0;
    for (size_t i = 0; i < w->n; i++) {
        Member *m = &w->members[i];
        size_t nlen = strlen(m->name);
        unsigned char c[46] = {0};
        put32(c, 0x02014b50);
        put16(c + 4, 20);
        put16(c + 6, 20);
        put16(c + 14, 0x21);
        put32(c + 16, m->crc);
        put32(c + 20, m->size);
        put32(c + 24, m->size);
        put16(c + 28, (uint32_t)nlen);
        put32(c + 42, m->offset);
        if (fwrite(c, 1, 46, w->fh) != 46 || fwrite(m->name, 1, nlen, w->fh) != nlen) w->failed = 1;
        size += (uint32_t)(46 + nlen);
    }
    unsigned char e[22] = {0};
    put32(e, 0x06054b50);
    put16(e + 8, (uint32_t)w->n);
    put16(e + 10, (uint32_t)w->n);
    put32(e + 12, size);
    put32(e + 16, start);
    if (fwrite(e, 1, 22, w->fh) != 22) w->failed = 1;
    if (fclose(w->fh)) w->failed = 1;
    int failed = w->failed;
    free(w);
    return failed ? -1 : 0;
}
