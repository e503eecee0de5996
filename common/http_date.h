/* HTTP-date formatting (RFC 9110 5.6.7). */
#ifndef FG_HTTP_DATE_H
#define FG_HTTP_DATE_H

#include <stddef.h>
#include <time.h>

/* IMF-fixdate of t into out (30 bytes with the NUL). Returns 29. */
size_t fg_http_date(time_t t, char *out);

#endif
