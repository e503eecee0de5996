/* `fastgateway --import yarp|fastgateway FILE`: convert another gateway's configuration into
 * ours (docs/import.md). The converters live in import_yarp.c and import_fastgateway.c; this
 * module reads the file, runs one, checks that the result loads, and prints it. */
#ifndef FG_IMPORT_H
#define FG_IMPORT_H

#include <stdio.h>

/* Convert FILE, of kind "yarp" or "fastgateway", and print our configuration (JSON) on out.
 * Returns 0; or -1 after printing one line "FILE: key.path: reason" on errout. Notes about
 * inert source keys (no effect on traffic, so nothing to convert) go to errout as
 * "note: ..." lines and do not fail the import. */
int fg_import_run(const char *kind, const char *file, FILE *out, FILE *errout);

#endif
