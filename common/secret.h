/* Secrets kept in files of their own (an agent's secret, an ACME external account's MAC key):
 * never in the configuration, never in a log. */
#ifndef FG_COMMON_SECRET_H
#define FG_COMMON_SECRET_H

#include <stddef.h>
#include <stdint.h>

/* Read the secret in path: the file's bytes without surrounding whitespace, at least min and
 * at most cap of them. Refuses what is not a regular file (a symbolic link included) and a file
 * that others than its owner may read or write (mode & 077). Returns the length, or -1 with a
 * reason in err (never the secret). */
int fg_secret_load(const char *path, uint8_t *secret, size_t cap, size_t min, char *err,
                   size_t errlen);

/* A secret file holding a key in base64url (RFC 4648 5, padding allowed), as ACME CAs hand out
 * external account MAC keys: the decoded key, at least min bytes and at most cap. Returns its
 * length, or -1 with a reason in err (never the key). */
int fg_secret_load_b64url(const char *path, uint8_t *key, size_t cap, size_t min, char *err,
                          size_t errlen);

#endif
