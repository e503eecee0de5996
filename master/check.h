/* What `fastgateway -t` verifies beyond the configuration's own validity: that start-up would
 * find the files and directories it needs (docs/operations.md, "Testing a configuration"). */
#ifndef FG_CHECK_H
#define FG_CHECK_H

#include "common/config.h"

/* Check, for cfg, that the error log can be written by this process; that the access log's
 * directory exists and can be reached by the user the workers run as (when `user` is set and
 * this process is root; the master creates the file and hands it to that user), or written by
 * this process otherwise; and that the directories of pidFile and statusSocket exist and can
 * be written. Prints one line per problem on stderr ("FILE: key: reason"). Returns 0 when all
 * is well, -1 otherwise. */
int fg_check_start(const fg_config_t *cfg);

#endif
