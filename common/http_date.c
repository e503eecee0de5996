#include "common/http_date.h"

#include <string.h>

static const char wdays[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static void put_digits(char *out, unsigned v, int n)
{
    for (int i = n - 1; i >= 0; i--, v /= 10)
        out[i] = (char)('0' + v % 10);
}

size_t fg_http_date(time_t t, char *out)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    /* Laid out by hand: strftime would follow the process locale.
     * "Sun, 06 Nov 1994 08:49:37 GMT" */
    memcpy(out, wdays[tm.tm_wday % 7], 3);
    memcpy(out + 3, ", 00 ", 5);
    put_digits(out + 5, (unsigned)tm.tm_mday, 2);
    memcpy(out + 8, months[tm.tm_mon % 12], 3);
    out[11] = ' ';
    put_digits(out + 12, (unsigned)(tm.tm_year + 1900) % 10000, 4);
    memcpy(out + 16, " 00:00:00 GMT", 14);
    put_digits(out + 17, (unsigned)tm.tm_hour, 2);
    put_digits(out + 20, (unsigned)tm.tm_min, 2);
    put_digits(out + 23, (unsigned)tm.tm_sec, 2);
    return 29;
}
