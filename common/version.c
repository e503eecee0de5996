/* Version report of the command lines (common/version.h). */
#include "common/version.h"

#include <stdio.h>

#include <event2/event.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>

void fg_version_print(const char *program)
{
    const nghttp2_info *h2 = nghttp2_version(0);
    printf("%s %s\n", program, FG_VERSION);
    printf("built with libevent %s, running with %s\n", LIBEVENT_VERSION, event_get_version());
    printf("built with %s, running with %s\n", OPENSSL_VERSION_TEXT,
           OpenSSL_version(OPENSSL_VERSION));
    printf("built with nghttp2 %s, running with %s\n", NGHTTP2_VERSION, h2 ? h2->version_str : "?");
}
