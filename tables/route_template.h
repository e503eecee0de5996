/* Route path templates as ASP.NET Core routing writes them (YARP's Match.Path): literal
 * segments, parameters "{id}", optional "{id?}", defaults "{id=1}", catch-alls "{*rest}" and
 * "{**rest}", inline constraints "{id:int}", "{slug:regex(^[a-z]+$)}", and complex segments
 * that mix literal text and parameters ("{name}.{ext}", "v{major}").
 *
 * fg_route_template_parse runs once in the master when the route table is built; the other
 * functions run in workers on candidate routes only, and allocate nothing. */
#ifndef FG_ROUTE_TEMPLATE_H
#define FG_ROUTE_TEMPLATE_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>
#include "common/str.h"

/* Parameters a path template may have: a match fills one fg_request_t capture for each. */
#define FG_ROUTE_MAX_PARAMS 16

/* Segment kinds. SEG_COMPLEX holds literal text and parameters in one segment ("{name}.{ext}",
 * "v{major}"), matched as ASP.NET's RoutePatternMatcher does. */
enum { SEG_LITERAL, SEG_PARAM, SEG_OPTIONAL, SEG_CATCHALL, SEG_COMPLEX };

/* ASP.NET's inline route constraints (":int", ":range(1,9)", ":regex(...)"): the value a
 * parameter captured must satisfy all of its constraints, or the route does not match. */
typedef enum {
    CON_INT = 1, /* int.TryParse, NumberStyles.Integer */
    CON_LONG,
    CON_BOOL,
    CON_GUID,
    CON_ALPHA,    /* ASCII letters only */
    CON_REQUIRED, /* a non-empty value */
    CON_MINLEN,   /* a: length in UTF-16 units, as .NET counts a string */
    CON_MAXLEN,
    CON_LENGTH, /* a <= length <= b */
    CON_MIN,    /* a <= value, the value a long */
    CON_MAX,
    CON_RANGE,
    CON_REGEX, /* re: case-insensitive search, not anchored (RegexRouteConstraint.IsMatch) */
} con_kind_t;

typedef struct {
    int kind; /* con_kind_t */
    int64_t a, b;
    regex_t *re; /* CON_REGEX: compiled at load, owned */
} constraint_t;

/* A literal run or a parameter of a segment. */
typedef struct {
    int literal;
    int optional;    /* "{x?}" */
    int has_default; /* "{x=v}": the value when the request has none */
    fg_str_t text;   /* literal text or parameter name */
    fg_str_t dflt;   /* default value (in the template's strings) */
    constraint_t *cons;
    size_t ncons;
} part_t;

typedef struct {
    int kind;
    fg_str_t text; /* literal text or parameter name, a slice of the template */
    part_t p;      /* SEG_PARAM, SEG_OPTIONAL, SEG_CATCHALL: constraints and default */
    part_t *parts; /* SEG_COMPLEX: left to right */
    size_t nparts;
} seg_t;

/* A parsed template: its segments and the pools they point into (owned). */
typedef struct {
    seg_t *segs;
    size_t nsegs;
    unsigned nleading; /* literal segments before the first other one: the trie's depth */
    part_t *parts;
    size_t nparts;
    constraint_t *cons;
    size_t ncons;
    char *strs; /* unescaped literals, defaults and regexes */
    size_t nstrs;
    char why[192]; /* a reason that names what is wrong (fg_route_template_parse) */
} fg_route_tpl_t;

/* Parts a complex segment may have: parameters alternate with literal text. */
#define FG_ROUTE_MAX_PARTS (2 * FG_ROUTE_MAX_PARAMS + 1)

/* The longest percent-decoded value a constraint is checked against; a longer value that
 * needs decoding fails the constraint (the route does not match). */
#define FG_ROUTE_VALUE_MAX 2048

/* Parse tpl into c (segs, parts, constraints, strings; compiled regexes). Returns NULL, or the
 * reason tpl is invalid (a static string or c->why). What was built is released by
 * fg_route_template_free either way. */
const char *fg_route_template_parse(fg_route_tpl_t *c, const char *tpl);
void fg_route_template_free(fg_route_tpl_t *c);

/* Whether the template has a parameter of that name (ASCII case-insensitive). */
int fg_route_template_has_param(const fg_route_tpl_t *c, fg_str_t name);

/* Whether raw (a parameter's value as the request path writes it, percent-encoded) satisfies
 * every constraint of p. The value is percent-decoded first, as ASP.NET's route values are,
 * except "%2F", which stays as it is. */
int fg_route_constraints_ok(const part_t *p, fg_str_t raw);

/* Match the request segment v against the complex segment s, right to left as ASP.NET's
 * RoutePatternMatcher.MatchComplexSegment does. On a match vals[i] is the value of part i when
 * it is a parameter (a slice of v; base NULL for an optional parameter left out) and 1 is
 * returned; else 0. vals has room for s->nparts entries. */
int fg_route_complex_match(const seg_t *s, fg_str_t v, fg_str_t *vals);

#endif
