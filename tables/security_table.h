/* The security table of a configuration generation: the master compiles the "security"
 * sections, the servers' and the routes' attachments into one plan per (server, route) pair
 * (the enabled rules and lists attached globally, to the server and to the route,
 * de-duplicated, global first), and finds or creates their zones in the arena (shm/zone.h), so
 * an unchanged zone keeps its contents across reloads. Workers inherit the table through fork
 * and only read it (worker/admission/security.c). The compiled rules and lists are the
 * admission modules' own types (worker/admission/ratelimit.h, acl.h): their compilers sit with
 * their checks so that one file holds a rule's representation. */
#ifndef FG_SECURITY_TABLE_H
#define FG_SECURITY_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/iprange.h"
#include "shm/arena.h"
#include "shm/hash.h"
#include "shm/stats.h"
#include "worker/admission/acl.h"
#include "worker/admission/ratelimit.h"

/* Zone kinds (shm/zone.h) used here. */
enum { FG_ZONE_STATS = 1, FG_ZONE_RATELIMIT, FG_ZONE_ACL, FG_ZONE_ABNORMAL };

/* The built-in list abnormal-IP tracking blocks addresses with. */
#define FG_SECURITY_AUTOBLOCK_ID "autoBlock"

/* What applies to one (server, route) pair: enabled rules and lists, de-duplicated, global
 * first. */
typedef struct {
    fg_rl_rule_t **rules;
    size_t nrules;
    fg_acl_t **acls;
    size_t nacls;
} fg_security_plan_t;

/* The compiled form of a generation's security sections (cfg->security_compiled). */
typedef struct {
    uint64_t gen;
    fg_stats_t *stats;
    fg_shm_hash_t *rl_zone;
    fg_acl_dyn_t *dyn;
    fg_shm_hash_t *abn_zone;
    fg_rl_rule_t *rules;
    size_t nrules;
    fg_acl_t *acls; /* nacls configured lists, then the autoBlock list */
    size_t nacls;
    int autoblock;
    fg_iprange_set_t *trusted; /* per server */
    size_t nservers, nroutes;
    fg_security_plan_t
        *plans; /* [server * (nroutes + 1) + route], route nroutes = no route matched */
    const fg_config_t *cfg;
} fg_security_table_t;

/* Compile cfg's security sections into cfg->security_compiled, finding or creating their zones
 * for generation gen. Returns 0 or -1 with err. */
int fg_security_table_build(fg_config_t *cfg, fg_shm_t *shm, uint64_t gen, char *err,
                            size_t errlen);
void fg_security_table_free(fg_config_t *cfg);
/* The list named id (the autoBlock list when tracking blocks), or NULL. */
fg_acl_t *fg_security_table_list(const fg_security_table_t *s, const char *id);

#endif
