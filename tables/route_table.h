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
#include "common/config.h"
#include "common/str.h"
#include "tables/route_template.h"

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
    fg_route_tpl_t tpl; /* the path template, parsed */
    host_pat_t *hosts;
    size_t nhosts;
    int exact_hosts_only; /* hosts present and none is a wildcard: indexable by host */
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
