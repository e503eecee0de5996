/* Request admission: client address (worker/admission/clientip.c), access-control lists
 * (worker/admission/acl.c), rate limits (worker/admission/ratelimit.c) and abnormal-IP tracking
 * (shm/abnormal.c), glued to the configuration and the shm zones.
 *
 * The master builds one plan per (server, route) pair when it loads a generation
 * (tables/security_table.h). A request then costs one array lookup to find its plan; with an
 * empty plan and no abnormal tracking nothing else runs. */
#ifndef FG_WORKER_SECURITY_H
#define FG_WORKER_SECURITY_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "common/config.h"
#include "shm/arena.h"
#include "worker/http/request.h"

/* ---- master ---- */

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
