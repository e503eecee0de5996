/* Request admission: client address (worker/admission/clientip.c), access-control lists
 * (worker/admission/acl.c), rate limits (worker/admission/ratelimit.c) and abnormal-IP tracking
 * (shm/abnormal.c), glued to the configuration and the shm zones.
 *
 * The master builds one plan per (server, route) pair when it loads a generation: the enabled
 * rules and lists attached globally ("security"), to the server and to the route, de-duplicated,
 * global first. A request then costs one array lookup to find its plan; with an empty plan and
 * no abnormal tracking nothing else runs. The zones (rate limits, dynamic ACL entries, abnormal
 * counters, statistics) are found or created in the arena at build time (shm/zone.h), so an
 * unchanged zone keeps its contents across reloads. */
#ifndef FG_WORKER_SECURITY_H
#define FG_WORKER_SECURITY_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "common/config.h"
#include "shm/arena.h"
#include "worker/http/request.h"

/* Zone kinds (shm/zone.h) used here. */
enum { FG_ZONE_STATS = 1, FG_ZONE_RATELIMIT, FG_ZONE_ACL, FG_ZONE_ABNORMAL };

/* ---- master ---- */

/* Compile cfg's security sections into cfg->security_compiled, finding or creating their zones
 * for generation gen. Returns 0 or -1 with err. */
int fg_security_build(fg_config_t *cfg, fg_shm_t *shm, uint64_t gen, char *err, size_t errlen);
void fg_security_free(fg_config_t *cfg);

/* Status socket answers (new references). */
json_t *fg_security_show_ratelimits(const fg_config_t *cfg);
json_t *fg_security_show_acl(const fg_config_t *cfg);
json_t *fg_security_show_abnormal(const fg_config_t *cfg);
/* "add acl LIST ADDRESS|CIDR" (add != 0) or "del acl ..."; args is "LIST ADDRESS". */
json_t *fg_security_acl_command(const fg_config_t *cfg, int add, const char *args);
/* Every zone of the arena with its use. */
json_t *fg_security_show_zones(fg_shm_t *shm);

/* ---- worker ---- */

/* Once per worker process (a test build reads its fault hook from the environment). */
void fg_security_worker_init(const fg_config_t *cfg);
/* After routing (req->route may be NULL): 0 to go on, -1 after answering 403 or 429. */
int fg_security_check(fg_request_t *req);
/* When a response is complete or abandoned: abnormal-IP accounting. */
void fg_security_on_finish(fg_request_t *req);

#endif
