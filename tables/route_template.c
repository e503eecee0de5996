/* Route path templates (see tables/route_template.h). The syntax and the rules of a valid
 * template are ASP.NET Core's (RoutePatternParser, RouteParameterParser); the constraints are
 * its default constraint map, with .NET's parsing rules for numbers, booleans and GUIDs. */
#include "tables/route_template.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- parsing ---- */

static const char *why(fg_route_tpl_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof(c->why), fmt, ap);
    va_end(ap);
    return c->why;
}

/* A copy of s[0..n) in c->strs, braces unescaped ("{{" is "{", "}}" is "}"). */
static fg_str_t put_str(fg_route_tpl_t *c, const char *s, size_t n)
{
    char *w = c->strs + c->nstrs, *start = w;
    for (size_t i = 0; i < n; i++) {
        *w++ = s[i];
        if ((s[i] == '{' || s[i] == '}') && i + 1 < n && s[i + 1] == s[i])
            i++;
    }
    *w++ = '\0';
    c->nstrs += (size_t)(w - start);
    return (fg_str_t){start, (size_t)(w - start - 1)};
}

static int valid_name_char(unsigned char ch)
{
    return isalnum(ch) || ch == '_' || ch == '-' || ch == '.';
}

/* A decimal integer argument (blanks around it allowed, as .NET's long.Parse). */
static int parse_arg(const char *s, size_t n, int64_t *out)
{
    char buf[32];
    while (n && *s == ' ') {
        s++;
        n--;
    }
    while (n && s[n - 1] == ' ')
        n--;
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0' || !(isdigit((unsigned char)buf[0]) || buf[0] == '-'))
        return -1;
    *out = v;
    return 0;
}

/* Append s to out at *w (room checked by the caller: 12 bytes per input byte). */
static void put(char *out, size_t *w, const char *s)
{
    size_t n = strlen(s);
    memcpy(out + *w, s, n);
    *w += n;
}

/* One escape "\e" of a .NET regex inside a bracket expression, in POSIX form. POSIX takes a
 * backslash in brackets literally, so classes are spelt out and escaped punctuation written
 * plainly; '-' goes last (*dash), where it is literal. */
static const char *bracket_escape(char e, int first, char *out, size_t *w, int *dash)
{
    char one[2] = {e, 0};
    switch (e) {
    case 'd':
        put(out, w, "0-9");
        return NULL;
    case 'w':
        put(out, w, "[:alnum:]_");
        return NULL;
    case 's':
        put(out, w, "[:space:]");
        return NULL;
    case '-':
        *dash = 1;
        return NULL;
    case ']':
    case '[':
        return "\\] and \\[ inside [...] have no POSIX equivalent (put ] first in the brackets)";
    case '^':
        if (first)
            return "\\^ first inside [...] has no POSIX equivalent (put ^ later)";
        break;
    default:
        if (isalnum((unsigned char)e))
            return "a class escape inside [...] other than \\d, \\w, \\s has no POSIX equivalent";
    }
    put(out, w, one);
    return NULL;
}

/* Translate a .NET regular expression into POSIX ERE for regcomp: \d and \D are spelt out
 * (glibc knows \w \W \s \S \b \B), "(?:" is a plain group (the match is only tested, never
 * captured); what POSIX cannot express (lookarounds, lazy quantifiers, other class escapes)
 * is refused rather than read differently. out has room for 12 * n + 1 bytes. */
static const char *regex_to_posix(const char *s, size_t n, char *out)
{
    size_t w = 0;
    int in_br = 0, dash = 0, br_start = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '\\') {
            if (++i >= n)
                return "a regex cannot end with a backslash";
            if (in_br) {
                const char *e = bracket_escape(s[i], w == (size_t)br_start, out, &w, &dash);
                if (e != NULL)
                    return e;
                continue;
            }
            char e2[3] = {'\\', s[i], 0};
            if (s[i] == 'd' || s[i] == 'D')
                put(out, &w, s[i] == 'd' ? "[0-9]" : "[^0-9]");
            else if (!isalnum((unsigned char)s[i]) || strchr("wWsSbB", s[i]) != NULL)
                put(out, &w, e2);
            else
                return "a regex escape other than \\d \\D \\w \\W \\s \\S \\b \\B or punctuation "
                       "has no POSIX equivalent";
            continue;
        }
        if (in_br) {
            if (ch == ']' && w > (size_t)br_start) {
                if (dash)
                    out[w++] = '-';
                in_br = dash = 0;
            } else if (ch == '[' && i + 1 < n && s[i + 1] == ':') {
                const char *end = strstr(s + i, ":]");
                if (end == NULL || end >= s + n)
                    return "unclosed [: :] class";
                size_t len = (size_t)(end - (s + i)) + 2;
                memcpy(out + w, s + i, len);
                w += len;
                i += len - 1;
                continue;
            }
            out[w++] = ch;
            continue;
        }
        if (ch == '[') {
            in_br = 1;
            out[w++] = '[';
            if (i + 1 < n && s[i + 1] == '^')
                out[w++] = s[++i];
            br_start = (int)w;
            if (i + 1 < n && s[i + 1] == ']')
                out[w++] = s[++i]; /* a leading ']' is literal */
            continue;
        }
        if (ch == '(' && i + 1 < n && s[i + 1] == '?') {
            if (i + 2 < n && s[i + 2] == ':') {
                out[w++] = '(';
                i += 2;
                continue;
            }
            return "lookarounds and inline options \"(?...)\" have no POSIX equivalent";
        }
        if (strchr("?*+}", ch) != NULL && i + 1 < n && (s[i + 1] == '?' || s[i + 1] == '+') &&
            !(ch == '?' && i > 0 && s[i - 1] == '('))
            return "lazy and possessive quantifiers have no POSIX equivalent";
        out[w++] = ch;
    }
    if (in_br)
        return "unclosed [ in the regex";
    out[w] = '\0';
    return NULL;
}

static const char *compile_regex(fg_route_tpl_t *c, constraint_t *k, const char *s, size_t n)
{
    char *posix = malloc(12 * n + 1);
    if (posix == NULL)
        return "out of memory";
    const char *e = regex_to_posix(s, n, posix);
    if (e != NULL) {
        free(posix);
        return why(c, "regex(%.*s): %s", (int)n, s, e);
    }
    k->re = calloc(1, sizeof(regex_t));
    if (k->re == NULL) {
        free(posix);
        return "out of memory";
    }
    /* RegexRouteConstraint: IgnoreCase | CultureInvariant, IsMatch (a search, not anchored) */
    int rc = regcomp(k->re, posix, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    free(posix);
    if (rc != 0) {
        char msg[96];
        regerror(rc, k->re, msg, sizeof(msg));
        free(k->re);
        k->re = NULL;
        return why(c, "regex(%.*s): %s", (int)n, s, msg);
    }
    return NULL;
}

typedef struct {
    const char *name;
    int kind;
    int nargs; /* 0, 1, 2; -1 = one or two; 9 = raw text */
} con_spec_t;

static const con_spec_t con_specs[] = {
    {"int", CON_INT, 0},          {"long", CON_LONG, 0},        {"bool", CON_BOOL, 0},
    {"guid", CON_GUID, 0},        {"alpha", CON_ALPHA, 0},      {"required", CON_REQUIRED, 0},
    {"minlength", CON_MINLEN, 1}, {"maxlength", CON_MAXLEN, 1}, {"length", CON_LENGTH, -1},
    {"min", CON_MIN, 1},          {"max", CON_MAX, 1},          {"range", CON_RANGE, 2},
    {"regex", CON_REGEX, 9},
};

/* The arguments "a" or "a,b" of a constraint into k->a, k->b. */
static const char *con_args(fg_route_tpl_t *c, const con_spec_t *sp, constraint_t *k, const char *a,
                            size_t n)
{
    const char *comma = memchr(a, ',', n);
    int two = comma != NULL;
    if ((sp->nargs == 1 && two) || (sp->nargs == 2 && !two))
        return why(c, "the constraint \"%s\" takes %d argument%s", sp->name, sp->nargs,
                   sp->nargs == 1 ? "" : "s");
    size_t n1 = two ? (size_t)(comma - a) : n;
    if (parse_arg(a, n1, &k->a) != 0 || (two && parse_arg(comma + 1, n - n1 - 1, &k->b) != 0))
        return why(c, "the constraint \"%s\" needs integer arguments, not \"%.*s\"", sp->name,
                   (int)n, a);
    if (sp->kind == CON_LENGTH && !two) {
        k->b = k->a;
    }
    int lengths = sp->kind == CON_MINLEN || sp->kind == CON_MAXLEN || sp->kind == CON_LENGTH;
    if ((lengths && (k->a < 0 || k->b < 0)) || ((two) && k->a > k->b))
        return why(c, "the constraint \"%s(%.*s)\" has an invalid range", sp->name, (int)n, a);
    return NULL;
}

/* One constraint "name" or "name(args)" of part p. */
static const char *add_constraint(fg_route_tpl_t *c, part_t *p, const char *name, size_t nlen,
                                  const char *args, size_t alen, int has_args)
{
    const con_spec_t *sp = NULL;
    for (size_t i = 0; i < sizeof(con_specs) / sizeof(con_specs[0]); i++)
        if (strlen(con_specs[i].name) == nlen && strncasecmp(con_specs[i].name, name, nlen) == 0)
            sp = &con_specs[i];
    if (sp == NULL)
        return why(c,
                   "the constraint \"%.*s\" of parameter \"%.*s\" is not supported (int, long, "
                   "bool, guid, alpha, required, minlength, maxlength, length, min, max, range, "
                   "regex)",
                   (int)nlen, name, (int)p->text.len, p->text.base);
    constraint_t *k = &c->cons[c->ncons++];
    k->kind = sp->kind;
    if (p->ncons == 0)
        p->cons = k;
    p->ncons++;
    if (sp->nargs == 0 && has_args)
        return why(c, "the constraint \"%s\" takes no argument", sp->name);
    if (sp->nargs != 0 && !has_args)
        return why(c, "the constraint \"%s\" needs an argument", sp->name);
    if (sp->kind == CON_REGEX)
        return compile_regex(c, k, args, alen);
    return sp->nargs ? con_args(c, sp, k, args, alen) : NULL;
}

/* The end of a constraint's "(...)" that starts at s[0] == '(': the first ')' followed by the
 * end, ':' or '=' (RouteParameterParser), or NULL. */
static const char *args_end(const char *s, const char *end)
{
    for (const char *q = s + 1; q < end; q++)
        if (*q == ')' && (q + 1 == end || q[1] == ':' || q[1] == '='))
            return q;
    return NULL;
}

/* The constraints and default after a parameter's name: q points at ':' or '=' or end. */
static const char *parse_policies(fg_route_tpl_t *c, part_t *p, const char *q, const char *end)
{
    while (q < end && *q == ':') {
        const char *name = ++q;
        while (q < end && *q != ':' && *q != '=' && *q != '(')
            q++;
        const char *args = NULL;
        size_t alen = 0;
        if (q < end && *q == '(') {
            const char *close = args_end(q, end);
            if (close == NULL)
                return "unclosed parenthesis in a constraint";
            args = q + 1;
            alen = (size_t)(close - args);
            q = close + 1;
        }
        if (q == name) /* "::": an empty constraint is skipped, as ASP.NET does */
            continue;
        const char *e = add_constraint(c, p, name, (size_t)((args ? args - 1 : q) - name), args,
                                       alen, args != NULL);
        if (e != NULL)
            return e;
    }
    if (q < end && *q == '=') {
        if (p->optional)
            return "an optional parameter cannot have a default value";
        p->has_default = 1;
        p->dflt = put_str(c, q + 1, (size_t)(end - q - 1));
    }
    return NULL;
}

/* The inside of "{...}" (s[0..n), braces still escaped) into part p; *kind gets SEG_PARAM,
 * SEG_OPTIONAL or SEG_CATCHALL. */
static const char *parse_param(fg_route_tpl_t *c, const char *s, size_t n, part_t *p, int *kind)
{
    fg_str_t in = put_str(c, s, n);
    const char *q = in.base, *end = in.base + in.len;
    *kind = SEG_PARAM;
    if (end - q >= 2 && q[0] == '*' && q[1] == '*')
        q += 2, *kind = SEG_CATCHALL;
    else if (end - q >= 1 && q[0] == '*')
        q += 1, *kind = SEG_CATCHALL;
    if (end > q && end[-1] == '?') {
        if (*kind == SEG_CATCHALL)
            return "a catch-all parameter cannot be optional";
        *kind = SEG_OPTIONAL;
        p->optional = 1;
        end--;
    }
    const char *name = q;
    while (q < end && !((*q == ':' || *q == '=') && q > name))
        q++;
    if (q == name)
        return "empty parameter name";
    for (const char *k = name; k < q; k++)
        if (!valid_name_char((unsigned char)*k))
            return "invalid character in parameter name";
    p->text = (fg_str_t){name, (size_t)(q - name)};
    for (size_t i = 0; i + 1 < c->nparts; i++)
        if (!c->parts[i].literal && fg_str_ieq(c->parts[i].text, p->text))
            return "a parameter name is used twice";
    return parse_policies(c, p, q, end);
}

static const char *check_literal(const char *s, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        if (s[k] == '}')
            return "unbalanced braces";
        if (strchr("?# \\\"<>^`|", s[k]) != NULL)
            return "a literal segment cannot hold '?', '#', spaces or characters a request path "
                   "never has";
    }
    return NULL;
}

/* The end of the parameter that starts at tpl[i] == '{': the index of its closing '}', or
 * 0 when there is none ("{{" and "}}" inside are escaped braces). */
static size_t param_end(const char *tpl, size_t len, size_t i)
{
    for (size_t j = i + 1; j < len; j++) {
        if ((tpl[j] == '{' || tpl[j] == '}') && j + 1 < len && tpl[j + 1] == tpl[j]) {
            j++;
            continue;
        }
        if (tpl[j] == '{')
            return 0;
        if (tpl[j] == '}')
            return j;
    }
    return 0;
}

/* The rules of a segment with several parts (RoutePatternParser.IsSegmentValid). */
static const char *check_complex(const part_t *parts, size_t n, const int *kinds)
{
    for (size_t i = 0; i < n; i++) {
        if (parts[i].literal)
            continue;
        if (kinds[i] == SEG_CATCHALL)
            return "a catch-all parameter cannot share its segment with anything else";
        if (i > 0 && !parts[i - 1].literal)
            return "two parameters in one segment must be separated by literal text";
        if (parts[i].optional && (i != n - 1 || i == 0 || !parts[i - 1].literal ||
                                  !fg_str_eq(parts[i - 1].text, FG_STR_LIT("."))))
            return "an optional parameter in a segment with other parts must be last and "
                   "follow a period (\"{name}.{ext?}\")";
    }
    return NULL;
}

/* One segment tpl[*i..) up to '/' or the end. */
static const char *parse_segment(fg_route_tpl_t *c, const char *tpl, size_t len, size_t *i)
{
    size_t first = c->nparts;
    int kinds[FG_ROUTE_MAX_PARTS];
    while (*i < len && tpl[*i] != '/') {
        if (c->nparts - first >= FG_ROUTE_MAX_PARTS)
            return "too many parameters";
        part_t *p = &c->parts[c->nparts++];
        size_t k = c->nparts - first - 1;
        if (tpl[*i] == '{') {
            if (*i + 1 < len && tpl[*i + 1] == '{')
                return "a literal brace never matches a request path (clients send %7B)";
            size_t close = param_end(tpl, len, *i);
            if (close == 0)
                return "unbalanced braces";
            const char *e = parse_param(c, tpl + *i + 1, close - *i - 1, p, &kinds[k]);
            if (e != NULL)
                return e;
            *i = close + 1;
            continue;
        }
        size_t start = *i;
        while (*i < len && tpl[*i] != '/' && tpl[*i] != '{')
            (*i)++;
        const char *e = check_literal(tpl + start, *i - start);
        if (e != NULL)
            return e;
        p->literal = 1;
        p->text = (fg_str_t){tpl + start, *i - start};
        kinds[k] = SEG_LITERAL;
    }
    seg_t *s = &c->segs[c->nsegs++];
    size_t n = c->nparts - first;
    if (n == 1) {
        s->kind = kinds[0];
        s->p = c->parts[first];
        s->text = s->p.text;
        if (s->kind == SEG_LITERAL && ((s->text.len == 1 && s->text.base[0] == '.') ||
                                       (s->text.len == 2 && memcmp(s->text.base, "..", 2) == 0)))
            return "\".\" and \"..\" segments never match a normalised path";
        return NULL;
    }
    s->kind = SEG_COMPLEX;
    s->parts = &c->parts[first];
    s->nparts = n;
    return check_complex(s->parts, n, kinds);
}

static size_t count_char(const char *s, char ch)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == ch;
    return n;
}

const char *fg_route_template_parse(fg_route_tpl_t *c, const char *tpl)
{
    size_t len = strlen(tpl);
    c->segs = calloc(count_char(tpl, '/') + 1, sizeof(seg_t));
    c->parts = calloc(len + 1, sizeof(part_t));
    c->cons = calloc(count_char(tpl, ':') + 1, sizeof(constraint_t));
    c->strs = malloc(2 * len + 2);
    if (c->segs == NULL || c->parts == NULL || c->cons == NULL || c->strs == NULL)
        return "out of memory";
    size_t i = 0, nparams = 0;
    int leading = 1;
    while (i < len) {
        while (i < len && tpl[i] == '/')
            i++;
        if (i == len)
            break;
        if (c->nsegs > 0 && c->segs[c->nsegs - 1].kind == SEG_CATCHALL)
            return "a catch-all parameter must be the last segment";
        const char *e = parse_segment(c, tpl, len, &i);
        if (e != NULL)
            return e;
        const seg_t *s = &c->segs[c->nsegs - 1];
        leading &= s->kind == SEG_LITERAL;
        c->nleading += (unsigned)leading;
        for (size_t k = 0; k < (s->kind == SEG_COMPLEX ? s->nparts : 1); k++)
            nparams += s->kind == SEG_COMPLEX ? !s->parts[k].literal : s->kind != SEG_LITERAL;
        if (nparams > FG_ROUTE_MAX_PARAMS)
            return "too many parameters";
    }
    return NULL;
}

void fg_route_template_free(fg_route_tpl_t *c)
{
    for (size_t i = 0; c->cons != NULL && i < c->ncons; i++) {
        if (c->cons[i].re != NULL) {
            regfree(c->cons[i].re);
            free(c->cons[i].re);
        }
    }
    free(c->segs);
    free(c->parts);
    free(c->cons);
    free(c->strs);
}

int fg_route_template_has_param(const fg_route_tpl_t *c, fg_str_t name)
{
    for (size_t k = 0; k < c->nparts; k++)
        if (!c->parts[k].literal && fg_str_ieq(c->parts[k].text, name))
            return 1;
    return 0;
}

/* ---- constraints ---- */

/* .NET's white space for NumberStyles.AllowLeadingWhite / AllowTrailingWhite. */
static int net_space(char ch)
{
    return ch == ' ' || (ch >= '\t' && ch <= '\r');
}

static fg_str_t trim(fg_str_t v)
{
    while (v.len && net_space(v.base[0])) {
        v.base++;
        v.len--;
    }
    while (v.len && net_space(v.base[v.len - 1]))
        v.len--;
    return v;
}

/* long.TryParse(v, NumberStyles.Integer, InvariantCulture): blanks, one sign, digits. */
static int parse_long(fg_str_t v, int64_t *out)
{
    v = trim(v);
    size_t i = 0;
    int neg = 0;
    if (i < v.len && (v.base[i] == '+' || v.base[i] == '-'))
        neg = v.base[i++] == '-';
    if (i == v.len)
        return 0;
    uint64_t acc = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < v.len; i++) {
        if (v.base[i] < '0' || v.base[i] > '9')
            return 0;
        unsigned d = (unsigned)(v.base[i] - '0');
        if (acc > (lim - d) / 10)
            return 0;
        acc = acc * 10 + d;
    }
    *out = neg ? (int64_t)(0 - acc) : (int64_t)acc;
    return 1;
}

static int hex_run(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

/* Guid.TryParse: "N" (32 digits), "D" (8-4-4-4-12), "B" ({D}) and "P" ((D)) forms. */
static int guid_ok(fg_str_t v)
{
    v = trim(v);
    if (v.len == 32)
        return hex_run(v.base, 32);
    if (v.len == 38 &&
        ((v.base[0] == '{' && v.base[37] == '}') || (v.base[0] == '(' && v.base[37] == ')'))) {
        v.base++;
        v.len = 36;
    }
    if (v.len != 36)
        return 0;
    const char *s = v.base;
    return hex_run(s, 8) && s[8] == '-' && hex_run(s + 9, 4) && s[13] == '-' &&
           hex_run(s + 14, 4) && s[18] == '-' && hex_run(s + 19, 4) && s[23] == '-' &&
           hex_run(s + 24, 12);
}

/* The length .NET gives the decoded string: UTF-16 code units. */
static int64_t utf16_len(fg_str_t v)
{
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        unsigned char b = (unsigned char)v.base[i];
        n += (b & 0xC0) != 0x80;
        n += b >= 0xF0; /* outside the BMP: a surrogate pair */
    }
    return n;
}

static int regex_ok(const regex_t *re, fg_str_t v)
{
    regmatch_t m[1] = {{0, (regoff_t)v.len}};
    /* REG_STARTEND: the value is a slice, not NUL-terminated */
    return regexec(re, v.len ? v.base : "", 1, m, REG_STARTEND) == 0;
}

static int con_ok(const constraint_t *k, fg_str_t v)
{
    int64_t x = 0;
    switch (k->kind) {
    case CON_INT:
        return parse_long(v, &x) && x >= INT32_MIN && x <= INT32_MAX;
    case CON_LONG:
        return parse_long(v, &x);
    case CON_BOOL:
        v = trim(v);
        return (v.len == 4 && strncasecmp(v.base, "true", 4) == 0) ||
               (v.len == 5 && strncasecmp(v.base, "false", 5) == 0);
    case CON_GUID:
        return guid_ok(v);
    case CON_ALPHA:
        for (size_t i = 0; i < v.len; i++)
            if (!isalpha((unsigned char)v.base[i]) || (unsigned char)v.base[i] >= 0x80)
                return 0;
        return 1;
    case CON_REQUIRED:
        return v.len > 0;
    case CON_MINLEN:
        return utf16_len(v) >= k->a;
    case CON_MAXLEN:
        return utf16_len(v) <= k->a;
    case CON_LENGTH:
        return utf16_len(v) >= k->a && utf16_len(v) <= k->b;
    case CON_MIN:
        return parse_long(v, &x) && x >= k->a;
    case CON_MAX:
        return parse_long(v, &x) && x <= k->a;
    case CON_RANGE:
        return parse_long(v, &x) && x >= k->a && x <= k->b;
    case CON_REGEX:
        return regex_ok(k->re, v);
    default:
        return 0;
    }
}

static int unhex(char ch)
{
    return ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10;
}

int fg_route_constraints_ok(const part_t *p, fg_str_t raw)
{
    if (p->ncons == 0)
        return 1;
    char buf[FG_ROUTE_VALUE_MAX];
    fg_str_t v = raw;
    if (raw.len > 0 && memchr(raw.base, '%', raw.len) != NULL) {
        if (raw.len > sizeof(buf))
            return 0;
        size_t o = 0;
        for (size_t i = 0; i < raw.len; i++) {
            const char *s = raw.base + i;
            if (s[0] == '%' && i + 2 < raw.len && isxdigit((unsigned char)s[1]) &&
                isxdigit((unsigned char)s[2])) {
                int ch = unhex(s[1]) << 4 | unhex(s[2]);
                if (ch != '/') { /* "%2F" stays encoded, as Kestrel leaves it in the path */
                    buf[o++] = (char)ch;
                    i += 2;
                    continue;
                }
            }
            buf[o++] = s[0];
        }
        v = (fg_str_t){buf, o};
    }
    for (size_t i = 0; i < p->ncons; i++)
        if (!con_ok(&p->cons[i], v))
            return 0;
    return 1;
}

/* ---- complex segments ---- */

/* The last index at which lit occurs in v[0..end), ignoring ASCII case, or -1. */
static long last_index(fg_str_t v, size_t end, fg_str_t lit)
{
    if (lit.len > end)
        return -1;
    for (size_t i = end - lit.len + 1; i-- > 0;)
        if (strncasecmp(v.base + i, lit.base, lit.len) == 0)
            return (long)i;
    return -1;
}

/* RoutePatternMatcher.MatchComplexSegmentCore: from part `last` leftwards, each literal is
 * found at its last occurrence left of what was matched so far (leaving a character for a
 * pending parameter), and a parameter takes the text between two literals. */
static int complex_core(const seg_t *s, fg_str_t v, long last, fg_str_t *vals)
{
    size_t last_index_used = v.len;
    long pending = -1, last_lit = -1;
    for (long i = last; i >= 0; i--) {
        const part_t *p = &s->parts[i];
        size_t new_last = last_index_used;
        if (!p->literal) {
            pending = i;
        } else {
            last_lit = i;
            size_t start = last_index_used;
            if (pending >= 0) {
                if (start == 0)
                    return 0;
                start--;
            }
            if (start == 0)
                return 0;
            long at = last_index(v, start, p->text);
            if (at < 0)
                return 0;
            /* the rightmost part, a literal, must end the segment */
            if (i == (long)s->nparts - 1 && (size_t)at + p->text.len != v.len)
                return 0;
            new_last = (size_t)at;
        }
        if (pending >= 0 && ((last_lit >= 0 && p->literal) || i == 0)) {
            size_t from = 0, n = last_index_used;
            if (last_lit >= 0 && !(i == 0 && !p->literal)) {
                from = new_last + s->parts[last_lit].text.len;
                n = last_index_used - from;
            }
            if (n == 0)
                return 0;
            vals[pending] = (fg_str_t){v.base + from, n};
            pending = last_lit = -1;
        }
        last_index_used = new_last;
    }
    return last_index_used == 0 || !s->parts[0].literal;
}

int fg_route_complex_match(const seg_t *s, fg_str_t v, fg_str_t *vals)
{
    long last = (long)s->nparts - 1;
    for (size_t i = 0; i < s->nparts; i++)
        vals[i] = FG_STR_NULL;
    if (!s->parts[last].optional)
        return complex_core(s, v, last, vals);
    /* "{name}.{ext?}": with the optional part first; then, when the segment does not end with
     * the period, without it ("file" matches with name only). */
    if (complex_core(s, v, last, vals))
        return 1;
    for (size_t i = 0; i < s->nparts; i++)
        vals[i] = FG_STR_NULL;
    fg_str_t sep = s->parts[last - 1].text;
    if (v.len >= sep.len && strncasecmp(v.base + v.len - sep.len, sep.base, sep.len) == 0)
        return 0;
    return complex_core(s, v, last - 2, vals);
}
