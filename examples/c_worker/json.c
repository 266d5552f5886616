/* A recursive-descent JSON reader: enough for the protocol's requests and
 * the case files' metadata, strict about what it accepts. */
#include "json.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct {
    const char *p, *end;
    char *err;
    size_t errlen;
} Parser;

static JValue *fail(Parser *ps, const char *fmt, ...) {
    if (ps->err[0] == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ps->err, ps->errlen, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

static void skip_ws(Parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static JValue *new_value(JType type) {
    JValue *v = calloc(1, sizeof *v);
    if (v) v->type = type;
    return v;
}

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(char *dst, unsigned cp) {
    if (cp < 0x80) { dst[0] = (char)cp; return 1; }
    if (cp < 0x800) { dst[0] = (char)(0xC0 | (cp >> 6)); dst[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        dst[0] = (char)(0xE0 | (cp >> 12)); dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    dst[0] = (char)(0xF0 | (cp >> 18)); dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); dst[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string literal at ps->p (on the opening quote); a malloc'd copy. */
static char *parse_string_raw(Parser *ps) {
    ps->p++;                                   /* the quote */
    /* The decoded text is never longer than the literal. */
    const char *start = ps->p;
    while (start < ps->end && *start != '"') start += (*start == '\\') ? 2 : 1;
    if (start >= ps->end) { fail(ps, "unterminated string"); return NULL; }
    char *out = malloc((size_t)(start - ps->p) + 1), *q = out;
    if (!out) { fail(ps, "out of memory"); return NULL; }
    while (*ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p++;
        if (c < 0x20) { free(out); fail(ps, "control character in a string"); return NULL; }
        if (c != '\\') { *q++ = (char)c; continue; }
        char e = *ps->p++;
        switch (e) {
        case '"': *q++ = '"'; break;
        case '\\': *q++ = '\\'; break;
        case '/': *q++ = '/'; break;
        case 'b': *q++ = '\b'; break;
        case 'f': *q++ = '\f'; break;
        case 'n': *q++ = '\n'; break;
        case 'r': *q++ = '\r'; break;
        case 't': *q++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (ps->end - ps->p < 4 || !hex4(ps->p, &cp)) { free(out); fail(ps, "bad \\u escape"); return NULL; }
            ps->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && ps->end - ps->p >= 6 && ps->p[0] == '\\'
                && ps->p[1] == 'u' && hex4(ps->p + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                ps->p += 6;
            }
            q += put_utf8(q, cp);              /* 6 or 12 literal bytes give at most 4 */
            break;
        }
        default: free(out); fail(ps, "bad escape \\%c", e); return NULL;
        }
    }
    ps->p++;                                   /* the closing quote */
    *q = 0;
    return out;
}

static int push(JValue *v, JValue *item, char *key) {
    if ((v->n & (v->n - 1)) == 0) {            /* grow at powers of two */
        size_t cap = v->n ? v->n * 2 : 1;
        JValue **items = realloc(v->items, cap * sizeof *items);
        if (!items) return 0;
        v->items = items;
        if (v->type == J_OBJ) {
            char **keys = realloc(v->keys, cap * sizeof *keys);
            if (!keys) return 0;
            v->keys = keys;
        }
    }
    v->items[v->n] = item;
    if (v->type == J_OBJ) v->keys[v->n] = key;
    v->n++;
    return 1;
}

static JValue *parse_value(Parser *ps, int depth);

static JValue *parse_container(Parser *ps, int depth, JType type) {
    char close = type == J_ARR ? ']' : '}';
    JValue *v = new_value(type);
    if (!v) return fail(ps, "out of memory");
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) { ps->p++; return v; }
    for (;;) {
        char *key = NULL;
        skip_ws(ps);
        if (type == J_OBJ) {
            if (ps->p >= ps->end || *ps->p != '"') { json_free(v); return fail(ps, "expected a key"); }
            if (!(key = parse_string_raw(ps))) { json_free(v); return NULL; }
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') { free(key); json_free(v); return fail(ps, "expected ':'"); }
            ps->p++;
        }
        JValue *item = parse_value(ps, depth + 1);
        if (!item || !push(v, item, key)) {
            free(key);
            json_free(item);
            json_free(v);
            return fail(ps, "out of memory");
        }
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
        if (ps->p < ps->end && *ps->p == close) { ps->p++; return v; }
        json_free(v);
        return fail(ps, "expected ',' or '%c'", close);
    }
}

static JValue *parse_value(Parser *ps, int depth) {
    if (depth > MAX_DEPTH) return fail(ps, "nested deeper than %d", MAX_DEPTH);
    skip_ws(ps);
    if (ps->p >= ps->end) return fail(ps, "unexpected end of text");
    char c = *ps->p;
    if (c == '{') return parse_container(ps, depth, J_OBJ);
    if (c == '[') return parse_container(ps, depth, J_ARR);
    if (c == '"') {
        char *s = parse_string_raw(ps);
        if (!s) return NULL;
        JValue *v = new_value(J_STR);
        if (!v) { free(s); return fail(ps, "out of memory"); }
        v->string = s;
        return v;
    }
    static const struct { const char *word; JType type; int boolean; } words[] = {
        {"null", J_NULL, 0}, {"true", J_BOOL, 1}, {"false", J_BOOL, 0}};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(words[i].word);
        if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, words[i].word, n) == 0) {
            ps->p += n;
            JValue *v = new_value(words[i].type);
            if (!v) return fail(ps, "out of memory");
            v->boolean = words[i].boolean;
            return v;
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        char buf[64];
        size_t n = 0;
        while (ps->p + n < ps->end && n < sizeof buf - 1 && strchr("+-0123456789.eE", ps->p[n])) n++;
        memcpy(buf, ps->p, n);
        buf[n] = 0;
        char *stop;
        double d = strtod(buf, &stop);
        if (stop != buf + n) return fail(ps, "bad number '%s'", buf);
        ps->p += n;
        JValue *v = new_value(J_NUM);
        if (!v) return fail(ps, "out of memory");
        v->number = d;
        return v;
    }
    return fail(ps, "unexpected character '%c'", c);
}

JValue *json_parse(const char *text, size_t len, char *err, size_t errlen) {
    Parser ps = {text, text + len, err, errlen};
    err[0] = 0;
    JValue *v = parse_value(&ps, 0);
    if (!v) return NULL;
    skip_ws(&ps);
    if (ps.p != ps.end) {
        json_free(v);
        return fail(&ps, "trailing text after the value");
    }
    return v;
}

void json_free(JValue *v) {
    if (!v) return;
    for (size_t i = 0; i < v->n; i++) {
        json_free(v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
    free(v);
}

const JValue *json_get(const JValue *obj, const char *key) {
    if (!obj || obj->type != J_OBJ) return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return obj->items[i];
    return NULL;
}

void json_write_string(FILE *out, const char *s) {
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(out, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", out);
        else if (*p < 0x20) fprintf(out, "\\u%04x", *p);
        else fputc(*p, out);
    }
    fputc('"', out);
}
