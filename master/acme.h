/* Automatic certificates: an ACME client (RFC 8555) with the HTTP-01 challenge (8.3).
 *
 * The master runs fg_acme_check in a child process of its own (master/master.c), shortly after
 * start and every acme.checkInterval: it blocks on the network, which the master's loop must
 * never do. For each certificate with "acme": true that is missing, a placeholder
 * (common/x509gen.h), expiring within acme.renewBefore, or not covering its names, the child
 * orders a certificate for its names with the account key of acme.stateDir, answers the
 * challenges through the workers (worker/handlers/acme_challenge.c reads the key
 * authorizations it writes to stateDir/challenges/), finalizes with a new key, and writes the
 * key and chain over the configured files. The master reloads when a file changed. */
#ifndef FG_ACME_H
#define FG_ACME_H

#include <signal.h>

#include "common/config.h"

/* What a check did, as bits (the child's exit status). */
#define FG_ACME_CHANGED 1 /* a certificate was written: reload */
#define FG_ACME_FAILED 2  /* a certificate that needs one could not get it (logged) */

/* One check of every ACME certificate of cfg; blocking. Adds FG_ACME_* bits to *bits as it goes
 * (what a check cut short had done) and returns them. */
int fg_acme_check(const fg_config_t *cfg, volatile sig_atomic_t *bits);

/* Whether certificate i of cfg needs an order now; why (when it does) into buf. */
int fg_acme_due(const fg_config_t *cfg, size_t i, char *why, size_t len);

#endif
