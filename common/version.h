/* What a binary reports with -v: its name and version, then each library it shares with the
 * other binary (libevent, OpenSSL, nghttp2) as compiled against and as loaded at run time (a
 * shared library upgraded under the binary shows here). */
#ifndef FG_VERSION_H
#define FG_VERSION_H

/* Print "PROGRAM VERSION" and one line per library on stdout. */
void fg_version_print(const char *program);

#endif
