/* The admin API's requests (docs/admin.md): the handler the admin listener calls
 * (master/admin_http.h), in the master's loop, with the master as arg. */
#ifndef FG_ADMIN_API_H
#define FG_ADMIN_API_H

#include <jansson.h>

#include "master/admin_http.h"

struct master_s;

/* Every request of the admin listener: /metrics, /api/..., and the dashboard's files. */
void fg_admin_api_handle(void *arg, fg_admin_conn_t *c, const fg_admin_req_t *req);
/* The dashboard's files (admin.dashboard), anonymous: they hold no data. */
void fg_admin_api_static(struct master_s *m, fg_admin_conn_t *c, const fg_admin_req_t *req);
/* The reloads the admin listener has seen end, newest last. */
json_t *fg_admin_api_history(struct master_s *m);

#endif
