/* The import command: read, convert, check, print (import.h). */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/config.h"
#include "master/import.h"
#include "master/import_impl.h"
#include "tables/route_table.h"

size_t fg_import_push(fg_import_t *im, const char *key)
{
    size_t mark = im->plen;
    int n = snprintf(im->path + im->plen, sizeof(im->path) - im->plen, "%s%s",
                     im->plen ? (char[]){im->sep, '\0'} : "", key);
    if (n > 0)
        im->plen =
            im->plen + (size_t)n < sizeof(im->path) ? im->plen + (size_t)n : sizeof(im->path) - 1;
    return mark;
}

size_t fg_import_push_index(fg_import_t *im, size_t i)
{
    char key[32];
    if (im->sep == ':') /* ASP.NET configuration paths number array elements as keys */
        return snprintf(key, sizeof(key), "%zu", i), fg_import_push(im, key);
    size_t mark = im->plen;
    int n = snprintf(im->path + im->plen, sizeof(im->path) - im->plen, "[%zu]", i);
    if (n > 0 && im->plen + (size_t)n < sizeof(im->path))
        im->plen += (size_t)n;
    return mark;
}

void fg_import_pop(fg_import_t *im, size_t mark)
{
    im->plen = mark;
    im->path[mark] = '\0';
}

/* "PATH[SEP key]" into buf. */
static void where(const fg_import_t *im, const char *key, char *buf, size_t len)
{
    if (key == NULL)
        snprintf(buf, len, "%s", im->plen ? im->path : "(top level)");
    else if (im->plen == 0)
        snprintf(buf, len, "%s", key);
    else
        snprintf(buf, len, "%s%c%s", im->path, im->sep, key);
}

int fg_import_fail(fg_import_t *im, const char *key, const char *fmt, ...)
{
    char at[1100], why[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    where(im, key, at, sizeof(at));
    snprintf(im->msg, sizeof(im->msg), "%s: %s: %s", im->file, at, why);
    return -1;
}

void fg_import_note(fg_import_t *im, const char *key, const char *fmt, ...)
{
    char at[1100], why[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    where(im, key, at, sizeof(at));
    fprintf(im->errout, "note: %s: %s: %s\n", im->file, at, why);
}

json_t *fg_import_get(const json_t *obj, const char *key)
{
    const char *k;
    json_t *v;
    if (!json_is_object(obj))
        return NULL;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (strcasecmp(k, key) == 0)
            return v;
    }
    return NULL;
}

int fg_import_want_object(fg_import_t *im, const json_t *v, const char *key)
{
    if (json_is_object(v))
        return 0;
    return fg_import_fail(im, key, "expected an object");
}

int fg_import_check_keys(fg_import_t *im, const json_t *obj, const char *const known[])
{
    const char *k, *k2;
    json_t *v, *v2;
    json_object_foreach((json_t *)obj, k, v)
    {
        size_t i = 0;
        while (known[i] != NULL && strcasecmp(known[i], k) != 0)
            i++;
        if (known[i] == NULL)
            return fg_import_fail(im, k,
                                  "unknown key (no equivalent in FastGateway's "
                                  "configuration, or a typo)");
        json_object_foreach((json_t *)obj, k2, v2)
        {
            if (k2 != k && strcasecmp(k, k2) == 0)
                return fg_import_fail(im, k, "given twice as \"%s\" and \"%s\" (keys ignore case)",
                                      k, k2);
        }
    }
    return 0;
}

int fg_import_string(fg_import_t *im, const json_t *obj, const char *key, const char **out)
{
    json_t *v = fg_import_get(obj, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return fg_import_fail(im, key, "expected a string");
    *out = json_string_value(v);
    return 0;
}

static void set_present(int *present, int yes)
{
    if (present != NULL)
        *present = yes;
}

int fg_import_bool(fg_import_t *im, const json_t *obj, const char *key, int *out, int *present)
{
    json_t *v = fg_import_get(obj, key);
    set_present(present, 0);
    if (v == NULL || json_is_null(v))
        return 0;
    if (json_is_boolean(v))
        *out = json_is_true(v);
    else if (json_is_string(v) && strcasecmp(json_string_value(v), "true") == 0)
        *out = 1;
    else if (json_is_string(v) && strcasecmp(json_string_value(v), "false") == 0)
        *out = 0;
    else
        return fg_import_fail(im, key, "expected true or false");
    set_present(present, 1);
    return 0;
}

int fg_import_int(fg_import_t *im, const json_t *obj, const char *key, long long *out, int *present)
{
    json_t *v = fg_import_get(obj, key);
    set_present(present, 0);
    if (v == NULL || json_is_null(v))
        return 0;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        long long n = strtoll(s, &end, 10);
        if (*s == '\0' || *end != '\0' || errno != 0)
            return fg_import_fail(im, key, "\"%s\" is not an integer", s);
        *out = n;
    } else {
        return fg_import_fail(im, key, "expected an integer");
    }
    set_present(present, 1);
    return 0;
}

int fg_import_number(fg_import_t *im, const json_t *obj, const char *key, double *out, int *present)
{
    json_t *v = fg_import_get(obj, key);
    set_present(present, 0);
    if (v == NULL || json_is_null(v))
        return 0;
    if (json_is_number(v)) {
        *out = json_number_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        double d = strtod(s, &end);
        if (*s == '\0' || *end != '\0')
            return fg_import_fail(im, key, "\"%s\" is not a number", s);
        *out = d;
    } else {
        return fg_import_fail(im, key, "expected a number");
    }
    set_present(present, 1);
    return 0;
}

void fg_import_duration(unsigned long long ms, char *out, size_t len)
{
    if (ms % 1000 == 0)
        snprintf(out, len, "%llus", ms / 1000);
    else
        snprintf(out, len, "%llums", ms);
}

/* Digits at *p (at most max of them) as a number; -1 when there are none. */
static long long digits(const char **p, int max)
{
    long long n = 0;
    int k = 0;
    while (k < max && isdigit((unsigned char)**p)) {
        n = n * 10 + (**p - '0');
        (*p)++;
        k++;
    }
    return k ? n : -1;
}

/* .NET's TimeSpan "c" format: [d.]hh:mm[:ss[.fffffff]]; also a bare "d" (days), as
 * TimeSpan.Parse reads it. Negative spans mean nothing for a timeout and are refused. */
static int parse_timespan(const char *s, unsigned long long *ms)
{
    const char *p = s;
    long long d = 0, h, m, sec = 0, frac_ms = 0;
    long long first = digits(&p, 8);
    if (first < 0)
        return -1;
    if (*p == '\0') {
        *ms = (unsigned long long)first * 86400000ULL;
        return 0;
    }
    if (*p == '.') {
        d = first;
        p++;
        h = digits(&p, 2);
    } else {
        h = first;
    }
    if (h < 0 || h > 23 || *p++ != ':' || (m = digits(&p, 2)) < 0 || m > 59)
        return -1;
    if (*p == ':') {
        p++;
        if ((sec = digits(&p, 2)) < 0 || sec > 59)
            return -1;
        if (*p == '.') {
            p++;
            const char *f = p;
            long long fr = digits(&p, 7);
            if (fr < 0)
                return -1;
            for (size_t k = (size_t)(p - f); k < 7; k++)
                fr *= 10;
            if (fr % 10000 != 0) /* finer than a millisecond: our durations cannot hold it */
                return -2;
            frac_ms = fr / 10000;
        }
    }
    if (*p != '\0')
        return -1;
    *ms = (unsigned long long)((((d * 24 + h) * 60 + m) * 60 + sec) * 1000 + frac_ms);
    return 0;
}

int fg_import_timespan(fg_import_t *im, const json_t *obj, const char *key, char *out, size_t len,
                       int *present)
{
    const char *s = NULL;
    set_present(present, 0);
    if (fg_import_string(im, obj, key, &s) < 0)
        return -1;
    if (s == NULL)
        return 0;
    unsigned long long ms;
    int rc = parse_timespan(s, &ms);
    if (rc == -2)
        return fg_import_fail(im, key, "\"%s\": durations are whole milliseconds", s);
    if (rc < 0)
        return fg_import_fail(im, key, "\"%s\" is not a TimeSpan (hh:mm:ss, d.hh:mm:ss.fff)", s);
    fg_import_duration(ms, out, len);
    set_present(present, 1);
    return 0;
}

int fg_import_enum_from(fg_import_t *im, const json_t *obj, const char *key,
                        const char *const names[], int first, const char **out)
{
    json_t *v = fg_import_get(obj, key);
    size_t n = 0;
    while (names[n] != NULL)
        n++;
    if (v == NULL || json_is_null(v))
        return 0;
    if (json_is_integer(v) && first != FG_IMPORT_NAMES_ONLY) {
        json_int_t i = json_integer_value(v) - first;
        if (i >= 0 && (size_t)i < n) {
            *out = names[i];
            return 0;
        }
    }
    if (json_is_string(v)) {
        for (size_t i = 0; i < n; i++)
            if (strcasecmp(json_string_value(v), names[i]) == 0) {
                *out = names[i];
                return 0;
            }
    }
    char list[512] = "";
    for (size_t i = 0, o = 0; i < n && o < sizeof(list); i++)
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", names[i]);
    if (json_is_string(v))
        return fg_import_fail(im, key, "unknown value \"%s\" (expected %s)", json_string_value(v),
                              list);
    return fg_import_fail(im, key, "expected one of %s", list);
}

int fg_import_enum(fg_import_t *im, const json_t *obj, const char *key, const char *const names[],
                   const char **out)
{
    return fg_import_enum_from(im, obj, key, names, 0, out);
}

/* Append the trimmed pieces of s, split at commas and semicolons, to arr. */
static void split_into(json_t *arr, const char *s)
{
    while (*s) {
        size_t n = strcspn(s, ",;");
        const char *b = s, *e = s + n;
        while (b < e && isspace((unsigned char)*b))
            b++;
        while (e > b && isspace((unsigned char)e[-1]))
            e--;
        if (e > b)
            json_array_append_new(arr, json_stringn(b, (size_t)(e - b)));
        s += n + (s[n] != '\0');
    }
}

int fg_import_string_list(fg_import_t *im, const json_t *obj, const char *key, json_t **out)
{
    json_t *v = fg_import_get(obj, key), *e;
    size_t i;
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    json_t *arr = json_array();
    if (json_is_string(v)) {
        split_into(arr, json_string_value(v));
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, e)
        {
            if (!json_is_string(e)) {
                json_decref(arr);
                size_t mark = fg_import_push(im, key);
                fg_import_push_index(im, i);
                fg_import_fail(im, NULL, "expected a string");
                fg_import_pop(im, mark);
                return -1;
            }
            json_array_append(arr, e);
        }
    } else {
        json_decref(arr);
        return fg_import_fail(im, key, "expected a string or an array of strings");
    }
    *out = arr;
    return 0;
}

/* The file's text with comments blanked (both sources allow them), parsed. NULL with the
 * reason in im->msg. */
static json_t *read_source(fg_import_t *im)
{
    struct stat st;
    if (stat(im->file, &st) == -1) {
        snprintf(im->msg, sizeof(im->msg), "%s: %s", im->file, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > FG_CONFIG_MAX_FILE_SIZE) {
        snprintf(im->msg, sizeof(im->msg), "%s: not a regular file of at most 64 MiB", im->file);
        return NULL;
    }
    json_error_t je;
    FILE *f = fopen(im->file, "rb");
    if (f == NULL) {
        snprintf(im->msg, sizeof(im->msg), "%s: %s", im->file, strerror(errno));
        return NULL;
    }
    char *text = calloc(1, (size_t)st.st_size + 1);
    size_t n = text ? fread(text, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    if (text == NULL)
        abort(); /* start-up path: out of memory is fatal (STYLE.md) */
    text[n] = '\0';
    int line, col;
    const char *body = text;
    if ((unsigned char)body[0] == 0xEF && (unsigned char)body[1] == 0xBB &&
        (unsigned char)body[2] == 0xBF)
        body += 3; /* .NET tools write a UTF-8 byte order mark */
    char *plain = fg_config_strip_comments(body, &line, &col);
    free(text);
    if (plain == NULL) {
        snprintf(im->msg, sizeof(im->msg), "%s:%d:%d: unterminated /* comment", im->file, line,
                 col);
        return NULL;
    }
    json_t *root = json_loads(plain, JSON_REJECT_DUPLICATES, &je);
    free(plain);
    if (root == NULL)
        snprintf(im->msg, sizeof(im->msg), "%s:%d:%d: %s", im->file, je.line, je.column, je.text);
    else if (!json_is_object(root)) {
        snprintf(im->msg, sizeof(im->msg), "%s: the top level is not an object", im->file);
        json_decref(root);
        root = NULL;
    }
    return root;
}

/* The converted document must load as any configuration does: a destination address or a
 * host our loader refuses is reported with the loader's words, against the source file. */
static int check_loads(fg_import_t *im, const char *text)
{
    char err[1024];
    fg_config_t *cfg = fg_config_load_string(im->file, text, err, sizeof(err));
    if (cfg == NULL) {
        snprintf(im->msg, sizeof(im->msg), "the converted configuration does not load: %s", err);
        return -1;
    }
    int rc = fg_route_table_build(cfg, err, sizeof(err));
    if (rc < 0)
        snprintf(im->msg, sizeof(im->msg), "the converted configuration does not load: %s: %s",
                 im->file, err);
    fg_route_table_free(cfg);
    fg_config_free(cfg);
    return rc < 0 ? -1 : 0;
}

int fg_import_run(const char *kind, const char *file, FILE *out, FILE *errout)
{
    fg_import_t im = {.file = file, .errout = errout};
    json_t *(*convert)(fg_import_t *, const json_t *);
    if (strcmp(kind, "yarp") == 0) {
        im.sep = ':';
        convert = fg_import_yarp;
    } else if (strcmp(kind, "fastgateway") == 0) {
        im.sep = '.';
        convert = fg_import_fastgateway;
    } else {
        fprintf(errout, "fastgateway: --import: unknown kind \"%s\" (yarp, fastgateway)\n", kind);
        return -1;
    }
    json_t *src = read_source(&im), *ours = NULL;
    char *text = NULL;
    int rc = -1;
    if (src == NULL)
        goto out;
    ours = convert(&im, src);
    if (ours == NULL)
        goto out;
    text = json_dumps(ours, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
    if (text == NULL)
        abort();
    if (check_loads(&im, text) < 0)
        goto out;
    fprintf(out, "%s\n", text);
    rc = 0;
out:
    if (rc < 0)
        fprintf(errout, "%s\n", im.msg);
    free(text);
    json_decref(ours);
    json_decref(src);
    return rc;
}
