/* Route path templates as ASP.NET Core routing writes them (YARP's Match.Path): literal
 * segments, parameters "{id}", optional "{id?}", defaults "{id=1}", catch-alls "{*rest}" and
 * "{**rest}", inline constraints "{id:int}", "{slug:regex(^[a-z]+$)}", and complex segments
 * that mix literal text and parameters ("{name}.{ext}", "v{major}").
 *
 * fg_route_template_parse runs once in the master when the route table is built; the other
 * functions run in workers on candidate routes only, and allocate nothing. */
#ifndef FG_ROUTE_TEMPLATE_H
#define FG_ROUTE_TEMPLATE_H

#include "tables/route_table.h"

/* Parts a complex segment may have: parameters alternate with literal text. */
#define FG_ROUTE_MAX_PARTS (2 * FG_ROUTE_MAX_PARAMS + 1)

/* The longest percent-decoded value a constraint is checked against; a longer value that
 * needs decoding fails the constraint (the route does not match). */
#define FG_ROUTE_VALUE_MAX 2048

/* Parse tpl into c (segs, parts, constraints, strings; compiled regexes). Returns NULL, or the
 * reason tpl is invalid (a static string or c->why). What was built is released by
 * fg_route_template_free either way. */
const char *fg_route_template_parse(compiled_t *c, const char *tpl);
void fg_route_template_free(compiled_t *c);

/* Whether the template has a parameter of that name (ASCII case-insensitive). */
int fg_route_template_has_param(const compiled_t *c, fg_str_t name);

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
