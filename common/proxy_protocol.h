/* The PROXY protocol header (versions 1 and 2, as HAProxy's proxy-protocol.txt defines them):
 * what a load balancer in front of a listener writes first on each connection, naming the
 * client it accepted the connection from. A parser for the receiving side (servers'
 * "proxyProtocol", worker/core/proxy_header.c) and writers for the sending side (tcp servers'
 * "sendProxyProtocol"). Pure functions on memory: no socket, no allocation. */
#ifndef FG_PROXY_PROTOCOL_H
#define FG_PROXY_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Longest header the parser takes: a version 1 line is at most 107 bytes; a version 2 header
 * is 16 bytes and its length field, with addresses and TLVs, which load balancers keep under a
 * few hundred bytes. A longer one is refused rather than buffered. */
#define FG_PROXY_PROTOCOL_MAX 1024
#define FG_PROXY_PROTOCOL_V1_MAX 107

typedef struct {
    int version; /* 1 or 2 */
    /* 1: the header names no client (version 2 LOCAL, version 1 UNKNOWN, or an address family
     * other than TCP over IPv4/IPv6): the connection's own addresses stand. */
    int local;
    struct sockaddr_storage src; /* the client, when !local */
    struct sockaddr_storage dst; /* the address the client connected to, when !local */
    socklen_t len;               /* of src and dst */
    /* version 2 with a PP2_TYPE_SSL TLV whose PP2_CLIENT_SSL bit is set: the client spoke TLS
     * to the balancer, which passes the decrypted stream on (HAProxy's send-proxy-v2-ssl) */
    int client_tls;
} fg_proxy_protocol_t;

/* Parse the header at the start of buf (len bytes received so far). Returns the header's
 * length (> 0) once it is complete, with *out filled; 0 while every byte so far can still
 * begin a header (read more); -1 when the bytes are not a valid header, with *why set to a
 * static reason. Bytes after the header are not looked at. */
int fg_proxy_protocol_parse(const uint8_t *buf, size_t len, fg_proxy_protocol_t *out,
                            const char **why);

/* Write a header for a connection from src to dst (AF_INET or AF_INET6, both of one family;
 * an IPv4-mapped IPv6 pair is written as IPv4) into out. version 1 or 2; a pair of another
 * family gives version 1's "PROXY UNKNOWN" or version 2's LOCAL. Returns the length written
 * (at most FG_PROXY_PROTOCOL_V1_MAX for 1, 52 for 2) or -1 when cap is too small. */
int fg_proxy_protocol_write(int version, const struct sockaddr_storage *src,
                            const struct sockaddr_storage *dst, uint8_t *out, size_t cap);

#endif
