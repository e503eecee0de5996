/* Route kinds answered by the gateway itself: `direct` (a fixed response, like nginx `return`)
 * and `redirect` (a status and a Location built from a template). */
#ifndef FG_DIRECT_H
#define FG_DIRECT_H

#include "worker/http/request.h"

void fg_direct_handle(fg_request_t *req);
void fg_redirect_handle(fg_request_t *req);

/* Expand a location template: {scheme} {host} {path} {query} ("?q" or "") and route captures
 * {name}. Returns a pool string or NULL. */
char *fg_redirect_expand(fg_request_t *req, const char *tpl);

#endif
