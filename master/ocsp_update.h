/* OCSP updates: the master fetches the OCSP response (RFC 6960) of each certificate with
 * "ocspUpdate" from its responder ("ocspResponder", else the certificate's Authority Information
 * Access) and keeps it in its "ocspFile", which the next generation staples (common/tls_ocsp.h).
 *
 * The master runs fg_ocsp_update in a child process of its own (a job, master/master.c), shortly
 * after start, every FG_OCSP_CHECK_MS, after each reload, and on `ocsp update`: it blocks on the
 * network, which the master's loop must never do. A response is fetched when the file holds none
 * that is good and current for the certificate, or when half of its validity (thisUpdate to
 * nextUpdate; for one without nextUpdate, an hour) has passed and the responder was not asked in
 * the last hour (the file's time). A fetched response passes the checks of a loaded one and must be
 * newer than the file's before it replaces it; one that says the certificate is revoked removes the
 * file, so that nothing is stapled. */
#ifndef FG_OCSP_UPDATE_H
#define FG_OCSP_UPDATE_H

#include <signal.h>
#include <stdint.h>

#include "common/config.h"

/* What an update did, as bits (the child's exit status). */
#define FG_OCSP_CHANGED 1 /* a file was written or removed: reload */
#define FG_OCSP_FAILED 2  /* a response that was due could not be fetched (logged) */

/* How often the child looks at the files (it asks a responder only when one is due). */
#define FG_OCSP_CHECK_MS (5 * 60 * 1000)

/* Whether any certificate of cfg has "ocspUpdate". */
int fg_ocsp_update_enabled(const fg_config_t *cfg);
/* What an update depends on: the certificates with "ocspUpdate", their files and responders. */
uint64_t fg_ocsp_update_fingerprint(const fg_config_t *cfg);
/* One update of every "ocspUpdate" certificate of cfg, each one due or all (force); blocking.
 * Adds FG_OCSP_* bits to *bits as it goes (what a run cut short had done) and returns them. */
int fg_ocsp_update(const fg_config_t *cfg, int force, volatile sig_atomic_t *bits);

#endif
