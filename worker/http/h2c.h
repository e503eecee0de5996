/* h2c by prior knowledge (RFC 9113 3.3): the front end of a plaintext server with
 * "http2": {"h2c": true}. It peeks at the first bytes of a connection, without reading them,
 * and hands the untouched socket to HTTP/2 (worker/http/http2.c) when they are the client
 * preface, else to HTTP/1.1 (worker/http/http1.c). A preface that arrives in pieces is waited
 * for, within the server's header timeout. */
#ifndef FG_H2C_H
#define FG_H2C_H

#include "worker/core/frontend.h"

extern const fg_frontend_t fg_h2c_frontend;

#endif
