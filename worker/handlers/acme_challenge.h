/* HTTP-01 challenges (RFC 8555 8.3): GET /.well-known/acme-challenge/TOKEN answers the key
 * authorization the ACME client (master/acme.c) wrote to acme.stateDir/challenges/TOKEN, on
 * every server, before routing (and before redirectHttps: fg_request_is_acme_challenge). */
#ifndef FG_ACME_CHALLENGE_H
#define FG_ACME_CHALLENGE_H

#include "worker/http/request.h"

/* Answers req when it asks for a challenge (200 with the file, 404 for a token without one,
 * 400 for a token that is not base64url). Returns 1 when answered, 0 otherwise. */
int fg_acme_challenge_answer(fg_request_t *req);

#endif
