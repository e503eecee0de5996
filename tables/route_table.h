/* The compiled route table of a configuration generation (YARP route semantics, see
 * worker/http/router.h). The master builds it once after the config loads
 * (fg_route_table_build); workers inherit it through fork and only read it
 * (worker/http/router.c matches requests against it).
 *
 * Each route's path template is split into segments and its hosts are parsed
 * (route->compiled). Each server then gets an index (server->router): a trie over lower-cased
 * literal segments, where a route hangs on the node reached by its leading literal segments
 * ("/api/v1/{id}" under api -> v1); routes with no leading literal but only exact hosts are
 * bucketed by host instead of hanging on the root. Every list is sorted by the route's rank
 * on that server, a total order of (order, path precedence, constraints, configuration order;
 * see spec_cmp in route_table.c). */
#ifndef FG_ROUTE_TABLE_H
#define FG_ROUTE_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <regex.h>
#include "common/config.h"
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
    int optional;     /* "{x?}" */
    int has_default;  /* "{x=v}": the value when the request has none */
    fg_str_t text;    /* literal text or parameter name */
    fg_str_t dflt;    /* default value (compiled_t strings) */
    constraint_t *cons;
    size_t ncons;
} part_t;

typedef struct {
    int kind;
    fg_str_t text;  /* literal text or parameter name, a slice of the template */
    part_t p;       /* SEG_PARAM, SEG_OPTIONAL, SEG_CATCHALL: constraints and default */
    part_t *parts;  /* SEG_COMPLEX: left to right */
    size_t nparts;
} seg_t;

typedef struct {
    fg_str_t name; /* without port; for wildcards the suffix including the dot: ".example.com" */
    int wildcard;  /* "*.example.com" */
    int any;       /* "*" */
    int port;      /* -1 = any port */
} host_pat_t;

typedef struct {
    const fg_route_t *route;
    char *path_encoded; /* owned: the template with non-ASCII bytes percent-encoded, or NULL */
    int has_path;
    seg_t *segs;
    size_t nsegs;
    part_t *parts; /* pool for the segments' parts (owned) */
    size_t nparts;
    constraint_t *cons; /* pool for the parts' constraints (owned) */
    size_t ncons;
    char *strs; /* unescaped literals, defaults and regexes (owned) */
    size_t nstrs;
    char why[192]; /* a reason that names what is wrong (fg_route_template_parse) */
    host_pat_t *hosts;
    size_t nhosts;
    int exact_hosts_only; /* hosts present and none is a wildcard: indexable by host */
    unsigned nleading;    /* literal segments before the first parameter: the trie's depth */
} compiled_t;

typedef struct {
    const compiled_t *c;
    uint32_t rank;
} entry_t;

typedef struct {
    entry_t *v;
    size_t n;
    size_t cap;
} list_t;

typedef struct {
    char *key; /* lower-case, owned; NULL = empty slot */
    size_t keylen;
    uint64_t hash;
    list_t list;          /* host table: the routes of that host */
    struct node_s *child; /* trie: the node under that segment */
} bucket_t;

typedef struct {
    bucket_t *b;
    size_t cap; /* power of two, or 0 */
    size_t n;
} table_t;

/* A trie node: routes whose leading literal segments lead exactly here. */
typedef struct node_s {
    table_t children;
    list_t routes;
} node_t;

/* Literal segments indexed per route; deeper literals are checked by the full match only. */
#define MAX_DEPTH 8

typedef struct {
    node_t root;
    table_t by_host;
    int has_tenant_routes;
} router_t;

/* Compile the routes of every server of cfg (fills route->compiled and server->router).
 * Returns 0, or -1 with "routes[i].match.path: reason" in err for an invalid template. */
int fg_route_table_build(fg_config_t *cfg, char *err, size_t errlen);
void fg_route_table_free(fg_config_t *cfg);

/* The bucket of t whose key equals key (ASCII case-insensitive), or NULL. */
bucket_t *fg_route_table_find(const table_t *t, const char *key, size_t len);
/* Split "host", "host:port", "[v6]" or "[v6]:port" into a name and a port (-1 when absent,
 * -2 when malformed). The name of an IPv6 literal keeps its brackets. */
void fg_route_table_split_host(fg_str_t in, fg_str_t *name, int *port);

#endif
