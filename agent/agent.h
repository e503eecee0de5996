/* The tunnel agent: keeps one tunnel to the gateway serving (agent/tunnel.h), reconnects with
 * backoff (agent/backoff.h), follows the gateway's RECONNECT (the new tunnel first, then the
 * old one retired), and reloads its configuration on SIGHUP the same way: a new runtime
 * (agent/runtime.h) and a new tunnel, the old ones finishing their streams. */
#ifndef FG_AGENT_H
#define FG_AGENT_H

#include "agent/config.h"

typedef struct fg_agent_s fg_agent_t;

/* Set up the agent for cfg (owned from now on) on a new event loop, with its signals:
 * TERM and INT stop, HUP reloads cfg->file, USR1 reopens the log. cfg's service names are
 * resolved already (fg_services_resolve_now); a reload resolves them off the loop. NULL with
 * err. */
fg_agent_t *fg_agent_new(fg_agent_config_t *cfg, char *err, size_t errlen);
/* Run until stopped. Returns the exit status. */
int fg_agent_run(fg_agent_t *a);
void fg_agent_free(fg_agent_t *a);

#endif
