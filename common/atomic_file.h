/* Files replaced whole: written under a temporary name beside them, synced, then renamed over
 * them, so that a reader (a reload, a worker) sees the old file or the new one, never a part.
 * Used by the master's children that keep files: the ACME client's certificates and keys, the
 * OCSP updater's responses. */
#ifndef FG_ATOMIC_FILE_H
#define FG_ATOMIC_FILE_H

#include <stddef.h>
#include <sys/types.h>

/* data written whole to path's temporary name (path + suffix, its name into tmp) with mode, and
 * synced; removed again on failure. Returns 0, or -1 with err set. */
int fg_atomic_file_prepare(const char *path, const char *suffix, const void *data, size_t len,
                           mode_t mode, char *tmp, size_t tmplen, char *err, size_t errlen);
/* tmp (written by fg_atomic_file_prepare) renamed over path. Returns 0, or -1 with err set. */
int fg_atomic_file_commit(const char *tmp, const char *path, char *err, size_t errlen);
/* Both in turn. */
int fg_atomic_file_write(const char *path, const char *suffix, const void *data, size_t len,
                         mode_t mode, char *err, size_t errlen);

#endif
