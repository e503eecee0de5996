/* Shared by the converters of import.c: a cursor over the source document that knows the path
 * of the key being read, so that every error names it, and readers for the source's value
 * types (case-insensitive keys, values written as strings or as JSON scalars). */
#ifndef FG_IMPORT_IMPL_H
#define FG_IMPORT_IMPL_H

#include <limits.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

typedef struct fg_import {
    const char *file;
    FILE *errout;
    char sep;        /* ':' for YARP (ASP.NET configuration paths), '.' for FastGateway */
    char path[1024]; /* the key being read, e.g. "ReverseProxy:Routes:api:Match" */
    size_t plen;
    char msg[2400]; /* the error, once one occurred */
} fg_import_t;

/* Descend into key (or array index i); returns the mark that fg_import_pop restores. */
size_t fg_import_push(fg_import_t *im, const char *key);
size_t fg_import_push_index(fg_import_t *im, size_t i);
void fg_import_pop(fg_import_t *im, size_t mark);

/* Record "FILE: PATH[SEP key]: message" (key may be NULL). Returns -1. */
int fg_import_fail(fg_import_t *im, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Print "note: FILE: PATH[SEP key]: message" on errout. */
void fg_import_note(fg_import_t *im, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The member of obj whose name equals key ignoring ASCII case, or NULL. */
json_t *fg_import_get(const json_t *obj, const char *key);
/* Every member of obj must be one of known (ignoring case), and no two may differ only in
 * case. known ends with NULL. Returns 0 or -1. */
int fg_import_check_keys(fg_import_t *im, const json_t *obj, const char *const known[]);
/* obj must be a JSON object (what names the error: the current path). 0 or -1. */
int fg_import_want_object(fg_import_t *im, const json_t *v, const char *key);

/* Readers. Absent keys leave *out untouched and set *present = 0 (present may be NULL).
 * 0 or -1. */
int fg_import_string(fg_import_t *im, const json_t *obj, const char *key, const char **out);
int fg_import_bool(fg_import_t *im, const json_t *obj, const char *key, int *out, int *present);
int fg_import_int(fg_import_t *im, const json_t *obj, const char *key, long long *out,
                  int *present);
int fg_import_number(fg_import_t *im, const json_t *obj, const char *key, double *out,
                     int *present);
/* A .NET TimeSpan ("hh:mm:ss", "d.hh:mm:ss.fffffff", "hh:mm") as our duration string
 * ("1500ms", "30s") in out; *ms gets the value. */
int fg_import_timespan(fg_import_t *im, const json_t *obj, const char *key, char *out, size_t len,
                       int *present);
/* A duration of ms milliseconds as our duration text. */
void fg_import_duration(unsigned long long ms, char *out, size_t len);
/* An enumeration value: one of names (ignoring case), or its number written as an integer,
 * names[i] being number first + i, as .NET numbers the members of an enum (names in the order
 * of its declaration); *out is the canonical name. first FG_IMPORT_NAMES_ONLY: a key the source
 * reads as a string (a policy name), which takes no number. fg_import_enum: first 0. */
#define FG_IMPORT_NAMES_ONLY INT_MIN
int fg_import_enum_from(fg_import_t *im, const json_t *obj, const char *key,
                        const char *const names[], int first, const char **out);
int fg_import_enum(fg_import_t *im, const json_t *obj, const char *key, const char *const names[],
                   const char **out);
/* A string or an array of strings (a string is split at commas or semicolons, blanks trimmed)
 * as a new JSON array in *out (NULL when absent). */
int fg_import_string_list(fg_import_t *im, const json_t *obj, const char *key, json_t **out);

/* The converters: our configuration as a new document, or NULL with the error recorded. */
json_t *fg_import_yarp(fg_import_t *im, const json_t *root);
json_t *fg_import_fastgateway(fg_import_t *im, const json_t *root);

#endif
