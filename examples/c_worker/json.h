/* A small JSON reader (requests and case metadata) and string writer. */
#ifndef JSON_H
#define JSON_H

#include <stddef.h>
#include <stdio.h>

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } JType;

typedef struct JValue {
    JType type;
    int boolean;
    double number;
    char *string;              /* J_STR: NUL-terminated UTF-8 */
    size_t n;                  /* J_ARR, J_OBJ: number of items */
    struct JValue **items;     /* J_ARR, J_OBJ: the values */
    char **keys;               /* J_OBJ: the keys */
} JValue;

/* Parse `text` (length `len`); NULL with a message in `err` on bad input. */
JValue *json_parse(const char *text, size_t len, char *err, size_t errlen);
void json_free(JValue *v);

/* Member `key` of an object, or NULL (also when `obj` is not an object). */
const JValue *json_get(const JValue *obj, const char *key);

/* Write `s` as a JSON string literal, quotes included. */
void json_write_string(FILE *out, const char *s);

#endif
