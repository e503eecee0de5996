/* The configuration: parsed once from JSON by the master (fg_config_load), validated, then
 * frozen. Workers read it and never change it; a reload builds a new fg_config_t.
 * Every duration is in milliseconds, every size in bytes. Schema: docs/config.md. */
#ifndef FG_CONFIG_H
#define FG_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "common/iprange.h"

/* ---- security: rate limits, access control, client address (common/config_security.c) ---- */

typedef enum { FG_RLT_SLIDING = 0, FG_RLT_FIXED, FG_RLT_TOKEN } fg_ratelimit_type_t;
typedef enum {
    FG_RLS_GLOBAL = 0,
    FG_RLS_PER_IP,
    FG_RLS_PER_ROUTE,
    FG_RLS_PER_HEADER
} fg_ratelimit_scope_t;
typedef enum { FG_CIP_SOCKET = 0, FG_CIP_XFF, FG_CIP_REAL_IP, FG_CIP_CF } fg_client_ip_source_t;

typedef struct {
    char *id;
    char *name;
    int enabled;  /* default 1 */
    int type;     /* fg_ratelimit_type_t, default SlidingWindow */
    int scope;    /* fg_ratelimit_scope_t, default PerIp */
    char *header; /* PerHeader: header name */
    uint64_t max_requests;
    uint64_t window_ms;
    uint64_t burst;     /* TokenBucket capacity; 0 = maxRequests */
    char *path_pattern; /* NULL = any */
    char *ip_pattern;   /* NULL = any */
    char **methods;     /* upper-case; empty = any */
    size_t nmethods;
    int dry_run;
    unsigned ipv6_prefix; /* PerIp: IPv6 clients counted per prefix of this length; default 64 */
} fg_ratelimit_rule_t;

typedef struct {
    char *id;
    char *name;
    int enabled;    /* default 1 */
    int whitelist;  /* type "whitelist" */
    char **entries; /* "IP", "a-b", "CIDR"; validated at load */
    size_t nentries;
} fg_acl_list_t;

/* Ids of rules and lists attached at one level (global, a server, a route); resolved at load. */
typedef struct {
    char **ratelimits;
    size_t nratelimits;
    char **acls;
    size_t nacls;
} fg_security_attach_t;

typedef struct {
    int enabled;                  /* the abnormalIp section is present */
    uint64_t window_ms;           /* default 60 s */
    uint64_t threshold;           /* errors in the window that mark an address abnormal; 20 */
    int autoblock;                /* autoBlock.enabled */
    uint64_t autoblock_threshold; /* default = threshold */
    uint64_t autoblock_ms;        /* default 30 min */
} fg_abnormal_config_t;

/* ---- TLS: certificates, server policy, HTTPS redirect, destination client (config_tls.c) ---- */

/* Protocol versions as on the wire (RFC 8446 4.1.2 legacy_version numbering). */
#define FG_TLS_VERSION_1_2 0x0303
#define FG_TLS_VERSION_1_3 0x0304

typedef struct {
    char *id;
    char *chain;  /* absolute path: PEM, the certificate first, then its intermediates */
    char *key;    /* absolute path: PEM private key */
    char **names; /* "names"; NULL = the certificate's DNS SANs (its CN when it has none) */
    size_t nnames;
    int acme;        /* "acme": issued and renewed by the ACME client (master/acme.c) for names */
    char *ocsp_file; /* "ocspFile": absolute path of a DER OCSP response to staple; NULL = none */
    int ocsp_update; /* "ocspUpdate": the master fetches ocsp_file (master/ocsp_update.c) */
    char *ocsp_responder; /* "ocspResponder": its URL; NULL = the certificate's (AIA) */
} fg_tls_cert_config_t;

/* The longest HTTP-01 token taken (RFC 8555 8.3: base64url, 128 bits or more), by the client
 * that writes its file and by the workers that serve it. */
#define FG_ACME_TOKEN_MAX 256

/* "acme": automatic certificates (RFC 8555, HTTP-01), for certificates with "acme": true. */
typedef struct {
    int enabled;
    char *directory;            /* the ACME server's directory URL (https) */
    char *email;                /* account contact; NULL = none */
    char *state_dir;            /* absolute: account.key, challenges/ */
    char *ca_file;              /* absolute: the ACME server's CAs; NULL = the system's */
    uint64_t renew_before_ms;   /* default 30 days */
    uint64_t check_interval_ms; /* default 12 h */
    /* "externalAccount" (RFC 8555 7.3.4): the key id and the file of the MAC key the CA gave
     * (base64url); NULL = none. The key itself is read when an account is created. */
    char *eab_key_id;
    char *eab_mac_file; /* absolute */
} fg_acme_config_t;

/* The MAC key of an external account binding, in bytes: at least, at most. */
#define FG_ACME_EAB_KEY_MIN 16
#define FG_ACME_EAB_KEY_MAX 256

typedef struct {
    char **certificates; /* ids, as written */
    size_t ncertificates;
    size_t *cert_index; /* resolved: indexes into fg_config_t.certificates */
    char *default_id;   /* "default"; the only certificate when one is listed */
    size_t default_index;
    int min_version, max_version; /* FG_TLS_VERSION_*; default 1.2 .. 1.3 */
    char *ciphers;      /* TLS 1.2 cipher list (OpenSSL syntax); NULL = built-in default */
    char *ciphersuites; /* TLS 1.3 suites; NULL = OpenSSL's default */
    char *groups;       /* default "X25519:P-256:P-384" */
    char **alpn;        /* server preference order; default ["http/1.1"] */
    size_t nalpn;
    int session_tickets;            /* default 1 */
    unsigned session_cache;         /* per-worker session-id cache entries; 0 = off (default) */
    unsigned tickets_per_handshake; /* TLS 1.3 tickets after a full handshake; default 1 */
    char *hsts_header;              /* Strict-Transport-Security value; NULL = off (default) */
    uint64_t handshake_timeout_ms;  /* default 10 s */
    /* "clientAuth": client certificates (RFC 8446 4.3.2, 4.4.2.4) */
    int client_auth;         /* FG_TLS_CLIENT_AUTH_*; default off */
    char *client_ca_file;    /* absolute path: PEM, the CAs a client certificate must chain to */
    char *client_crl_file;   /* absolute path: PEM CRLs checked for every certificate; NULL */
    int client_verify_depth; /* intermediate CAs allowed under a CA of client_ca_file; 2 */
} fg_tls_server_config_t;

enum { FG_TLS_CLIENT_AUTH_OFF = 0, FG_TLS_CLIENT_AUTH_OPTIONAL, FG_TLS_CLIENT_AUTH_REQUIRED };

typedef struct {
    int enabled;
    uint16_t port;   /* target port; 443 is left out of the Location */
    char *authority; /* instead of the request's host and port; NULL = from the request */
    int status;      /* 301 or 308 (default) */
} fg_redirect_https_t;

/* A cluster's "httpClient": how https destinations are spoken to. */
typedef struct {
    int verify;                   /* !dangerousAcceptAnyServerCertificate; default 1 */
    int min_version, max_version; /* from sslProtocols */
    char *ca_file;                /* absolute path; NULL = the system's CAs */
    char *server_name;            /* SNI and verified name; NULL = the destination's host */
    char *client_cert_id;         /* "clientCertificate": a certificates id, for mutual TLS */
    char *ciphers;                /* TLS 1.2 list; NULL = FG_TLS_DEFAULT_CIPHERS */
    char *ciphersuites;           /* TLS 1.3 suites; NULL = OpenSSL's */
    char *groups;                 /* key exchange groups; NULL = OpenSSL's client default */
    size_t client_cert_index;
    uint64_t handshake_timeout_ms; /* default 10 s */
} fg_tls_client_config_t;

/* ---- routes: match ---- */

typedef enum {
    FG_HDR_EXACT = 0,    /* ExactHeader */
    FG_HDR_PREFIX,       /* HeaderPrefix */
    FG_HDR_CONTAINS,     /* Contains */
    FG_HDR_NOT_CONTAINS, /* NotContains */
    FG_HDR_EXISTS,       /* Exists */
    FG_HDR_NOT_EXISTS,   /* NotExists */
} fg_header_mode_t;

typedef enum {
    FG_QUERY_EXACT = 0,    /* Exact */
    FG_QUERY_PREFIX,       /* Prefix */
    FG_QUERY_CONTAINS,     /* Contains */
    FG_QUERY_NOT_CONTAINS, /* NotContains */
    FG_QUERY_EXISTS,       /* Exists */
} fg_query_mode_t;

typedef struct {
    char *name;
    char **values; /* OR-ed; NULL-terminated; empty for Exists/NotExists */
    size_t nvalues;
    int mode;           /* fg_header_mode_t or fg_query_mode_t */
    int case_sensitive; /* isCaseSensitive, default 0 */
} fg_match_kv_t;

typedef struct {
    char *path;   /* template, e.g. "/api/{id}" or "/files/{**rest}"; NULL = any */
    char **hosts; /* "example.com", "*.example.com", "example.com:8080" */
    size_t nhosts;
    char **methods; /* upper-case */
    size_t nmethods;
    fg_match_kv_t *headers;
    size_t nheaders;
    fg_match_kv_t *query;
    size_t nquery;
} fg_route_match_t;

/* Worker processes at most: two generations overlap in the shared worker table during a
 * reload (shm/arena.h FG_SHM_MAX_WORKERS). "auto" is clamped to it. */
#define FG_CONFIG_MAX_WORKERS 128

/* ---- routes: transforms (YARP names, applied in order) ---- */

typedef enum {
    FG_TX_PATH_PREFIX = 1,       /* PathPrefix: value */
    FG_TX_PATH_REMOVE_PREFIX,    /* PathRemovePrefix: value */
    FG_TX_PATH_SET,              /* PathSet: value */
    FG_TX_PATH_PATTERN,          /* PathPattern: value (template using route captures) */
    FG_TX_QUERY_VALUE,           /* QueryValueParameter: name; Set|Append: value */
    FG_TX_QUERY_REMOVE,          /* QueryRemoveParameter: name */
    FG_TX_METHOD_CHANGE,         /* HttpMethodChange: name=from; Set: value=to */
    FG_TX_REQ_HEADER,            /* RequestHeader: name; Set|Append: value */
    FG_TX_REQ_HEADER_REMOVE,     /* RequestHeaderRemove: name */
    FG_TX_REQ_HEADERS_COPY,      /* RequestHeadersCopy: flag (true/false) */
    FG_TX_REQ_ORIGINAL_HOST,     /* RequestHeaderOriginalHost: flag */
    FG_TX_X_FORWARDED,           /* X-Forwarded: xf_* fields */
    FG_TX_FORWARDED,             /* Forwarded (RFC 7239): fwd_* fields, xf_for = action */
    FG_TX_RESP_HEADER,           /* ResponseHeader: name; Set|Append: value; When */
    FG_TX_RESP_HEADER_REMOVE,    /* ResponseHeaderRemove: name; When */
    FG_TX_REQ_HEADER_ROUTE,      /* RequestHeaderRouteValue: name; Set|Append: route value key */
    FG_TX_QUERY_ROUTE,           /* QueryRouteParameter: name; Set|Append: route value key */
    FG_TX_REQ_HEADERS_ALLOWED,   /* RequestHeadersAllowed: value = "A;B" (copy only those) */
    FG_TX_RESP_HEADERS_COPY,     /* ResponseHeadersCopy: flag */
    FG_TX_RESP_HEADERS_ALLOWED,  /* ResponseHeadersAllowed: value = "A;B" */
    FG_TX_RESP_TRAILERS_COPY,    /* ResponseTrailersCopy: flag */
    FG_TX_RESP_TRAILERS_ALLOWED, /* ResponseTrailersAllowed: value = "A;B" */
    FG_TX_RESP_TRAILER,          /* ResponseTrailer: name; Set|Append: value; When */
    FG_TX_RESP_TRAILER_REMOVE,   /* ResponseTrailerRemove: name; When */
    FG_TX_CLIENT_CERT,           /* ClientCert: name (the TLS client certificate, base64 DER) */
} fg_transform_kind_t;

typedef enum { FG_TX_SET = 0, FG_TX_APPEND } fg_transform_action_t;
typedef enum { FG_WHEN_SUCCESS = 0, FG_WHEN_ALWAYS, FG_WHEN_FAILURE } fg_transform_when_t;
typedef enum { FG_XF_OFF = 0, FG_XF_SET, FG_XF_APPEND, FG_XF_REMOVE } fg_xf_action_t;
/* How the Forwarded transform writes a node (RFC 7239 6), YARP's NodeFormat names. */
typedef enum {
    FG_NODE_NONE = 0,
    FG_NODE_RANDOM, /* an obfuscated identifier, "_" and random characters (RFC 7239 6.3) */
    FG_NODE_RANDOM_AND_PORT,
    FG_NODE_RANDOM_AND_RANDOM_PORT,
    FG_NODE_UNKNOWN, /* "unknown" (RFC 7239 6.2) */
    FG_NODE_UNKNOWN_AND_PORT,
    FG_NODE_UNKNOWN_AND_RANDOM_PORT,
    FG_NODE_IP,
    FG_NODE_IP_AND_PORT,
    FG_NODE_IP_AND_RANDOM_PORT,
} fg_node_format_t;

typedef struct {
    int kind;    /* fg_transform_kind_t */
    char *name;  /* header or query parameter name; method "from" for HttpMethodChange */
    char *value; /* path, header value, query value, method "to" */
    int action;  /* fg_transform_action_t */
    int when;    /* fg_transform_when_t, response transforms */
    int flag;    /* RequestHeadersCopy / RequestHeaderOriginalHost */
    /* X-Forwarded: which headers and how; prefix of header names, default "X-Forwarded-" */
    int xf_for, xf_proto, xf_host, xf_prefix; /* fg_xf_action_t each */
    char *xf_header_prefix;
    /* Forwarded: the parameters written (host and proto flags, for/by formats) */
    int fwd_host, fwd_proto;
    int fwd_for, fwd_by; /* fg_node_format_t; FG_NODE_NONE = not written */
} fg_transform_t;

/* ---- routes ---- */

typedef enum {
    FG_ROUTE_CLUSTER = 1, /* proxy to a cluster */
    FG_ROUTE_STATIC,      /* serve files */
    FG_ROUTE_DIRECT,      /* fixed response, like nginx `return` */
    FG_ROUTE_REDIRECT,    /* redirect with a location template */
} fg_route_kind_t;

typedef struct {
    char *name;
    char *value;
} fg_header_kv_t;

/* A route's "compression" object (worker/http/compress.h applies it, docs/compression.md). */
typedef struct {
    int enabled;  /* "enabled", default 0 */
    char **types; /* "types": lowercase media types; a "*" subtype covers its type */
    size_t ntypes;
    uint64_t min_length; /* "minLength": a known Content-Length below it is sent as is */
    int level;           /* "level", 1..9 */
} fg_compression_config_t;

typedef struct fg_cluster_s fg_cluster_t;

typedef struct fg_route_s {
    char *id;
    int order;         /* lower first; default 0 */
    char **server_ids; /* servers this route is attached to; empty = all servers */
    size_t nserver_ids;
    fg_route_match_t match;
    int kind; /* fg_route_kind_t */
    /* cluster */
    char *cluster_id;
    fg_cluster_t *cluster; /* resolved reference */
    /* direct */
    int direct_status;
    fg_header_kv_t *direct_headers;
    size_t ndirect_headers;
    char *direct_body;
    size_t direct_body_len;
    /* redirect */
    int redirect_status;     /* 301, 302, 307, 308 */
    char *redirect_location; /* template: {scheme} {host} {path} {query} {captures...} */
    /* static */
    char *static_root;
    char **static_index; /* default ["index.html"] */
    size_t nstatic_index;
    char **static_try_files; /* e.g. ["{path}", "/index.html"] */
    size_t nstatic_try_files;
    /* all kinds */
    fg_transform_t *transforms;
    size_t ntransforms;
    int64_t max_request_body_size; /* -1 = inherit the server's */
    fg_security_attach_t security; /* route "rateLimits" / "accessControl" */
    void *compiled;                /* matcher compiled by the router (worker/http/router.c) */
    /* tenant routes (FastGateway's GwTenantRoute): a route with a tenantCode that is not global
     * matches only requests of that tenant, and wins over a global route of the same path */
    char *tenant_code;        /* NULL = none */
    int is_global;            /* isGlobal; default 1 without tenantCode, 0 with one */
    fg_header_kv_t *metadata; /* "metadata": free string pairs, in the access log */
    size_t nmetadata;
    void *metrics; /* shm/metrics.c object, attached by the master (fg_metrics_attach) */
    /* Protocol switches (RFC 9110 7.8) relayed on this route (docs/websocket.md): the
     * "upgradeProtocols" names, compared case-insensitively without a "/version"; default
     * ["websocket"], [] = none (the Upgrade field is then dropped, as any hop-by-hop one). */
    char **upgrade_protocols;
    size_t nupgrade_protocols;
    uint64_t upgrade_idle_timeout_ms; /* "webSocketIdleTimeout"; 0 = the cluster's activity */
    int exempt_event_streams;         /* "exemptEventStreams": text/event-stream has no activity
                                       * timeout; default 1 */
    /* "compression" (docs/compression.md): gzip of responses on this route; without the key
     * (compression_from_server), the server's applies. compress_any: compression is enabled
     * here or on a server the route is attached to (the one test a request pays). */
    fg_compression_config_t compression;
    int compression_from_server;
    int compress_any;
    /* "requireClientCertificate": a request without a verified TLS client certificate (its
     * server's tls.clientAuth) gets 403 */
    int require_client_cert;
} fg_route_t;

/* ---- clusters ---- */

typedef enum {
    FG_LB_POWER_OF_TWO = 0, /* PowerOfTwoChoices (default) */
    FG_LB_ROUND_ROBIN,
    FG_LB_LEAST_REQUESTS,
    FG_LB_RANDOM,
    FG_LB_FIRST_ALPHABETICAL,
} fg_lb_policy_t;

/* Cluster health checks, session affinity and failover (docs/config.md). */
typedef enum { FG_AVAIL_HEALTHY_OR_PANIC = 0, FG_AVAIL_HEALTHY_AND_UNKNOWN } fg_availability_t;

typedef struct {
    int active;               /* healthCheck.active.enabled */
    uint64_t interval_ms;     /* default 15 s */
    uint64_t timeout_ms;      /* default 10 s */
    char *path;               /* default "/" */
    char *query;              /* without '?'; NULL = none */
    unsigned threshold;       /* consecutive failed probes that mark unhealthy; default 2 */
    int expected_status;      /* 0 = any 2xx */
    int passive;              /* healthCheck.passive.enabled */
    uint64_t window_ms;       /* default 60 s */
    unsigned min_requests;    /* default 10 */
    double failure_rate;      /* default 0.3 */
    unsigned consecutive;     /* consecutive transport failures; default 5, 0 = off */
    uint64_t reactivation_ms; /* default 60 s */
    int availability;         /* fg_availability_t */
} fg_health_config_t;

typedef enum { FG_AFF_HASH_COOKIE = 0, FG_AFF_COOKIE, FG_AFF_CUSTOM_HEADER } fg_affinity_policy_t;
typedef enum { FG_AFF_REDISTRIBUTE = 0, FG_AFF_RETURN_503 } fg_affinity_failure_t;
typedef enum { FG_AFF_KEY_REQUEST = 0, FG_AFF_KEY_TENANT } fg_affinity_key_source_t;
typedef enum {
    FG_SAMESITE_UNSET = 0,
    FG_SAMESITE_LAX,
    FG_SAMESITE_STRICT,
    FG_SAMESITE_NONE
} fg_samesite_t;

typedef struct {
    int enabled;
    int policy;           /* fg_affinity_policy_t */
    int failure_policy;   /* fg_affinity_failure_t */
    char *key_name;       /* header or cookie name; default X-Session-Key / .FastGateway.Affinity */
    int key_source;       /* fg_affinity_key_source_t */
    char *cookie_path;    /* default "/" */
    char *cookie_domain;  /* NULL = none */
    int cookie_http_only; /* default 1 */
    int cookie_secure;    /* default 0 */
    int cookie_same_site; /* fg_samesite_t */
    int64_t cookie_max_age; /* seconds; -1 = session cookie */
} fg_affinity_config_t;

typedef struct {
    int enabled;
    uint64_t connect_timeout_ms; /* per attempt, default 150 ms */
    uint64_t budget_ms;          /* all attempts of one request, default 500 ms */
    int allow_non_idempotent;    /* default 0 */
} fg_failover_config_t;

typedef struct {
    char *id;
    char *address; /* as written: http://host:port[/base] */
    int https;     /* scheme is https */
    char *host;    /* host part of address, for connecting */
    uint16_t port;
    char *base_path;     /* "" or "/base" without trailing slash */
    char *host_override; /* Host header to send instead of the client's ("host") */
    char *health;        /* optional health address */
    int enabled;
    int weight;                   /* default 1 */
    struct sockaddr_storage addr; /* resolved at load */
    socklen_t addrlen;
    /* active probes go to `health` when set, else to `address` */
    struct sockaddr_storage health_addr;
    socklen_t health_addrlen;
    char *health_authority; /* Host header of a probe */
    char *health_base;      /* "" or "/base" */
    int health_https;       /* probes speak TLS: an https address, or https `health` */
    /* FNV-1a of id, and as 16 hex digits (the HashCookie value), computed at load so that
     * session affinity compares and scores without hashing per request */
    uint64_t id_hash;
    char id_hash_hex[17]; /* see fg_config_destination_hash */
    void *state;          /* shm/health.c record, attached by the master (fg_health_attach) */
    void *metrics;        /* shm/metrics.c object, attached by the master (fg_metrics_attach) */
    /* "httpVersion": FG_HTTP_V11 or FG_HTTP_V2; the cluster's when the destination sets none */
    int http_version;
    /* "tunnel://AGENT/SERVICE" (docs/tunnels.md): no socket address; requests travel down the
     * agent's tunnel; tunnel_agent indexes fg_config_t.tunnels.agents. */
    int tunnel;
    int tunnel_agent;
    char *tunnel_service;
    void *tunnel_rec; /* shm/tunnels.c record of the agent, attached by the master */
    /* "tcp://HOST:PORT": a raw TCP destination, for tcp servers (worker/stream/tcp_proxy.h) and
     * routes that relay the "tcp" protocol switch; host, port and addr as for http:// */
    int tcp;
} fg_destination_t;

/* Protocol versions a cluster or destination speaks to its destinations ("httpVersion"). */
enum { FG_HTTP_V11 = 11, FG_HTTP_V2 = 20 };
/* "versionPolicy" (YARP's HttpVersionPolicy): whether a destination that does not agree to
 * HTTP/2 by ALPN is spoken to in HTTP/1.1 (OrLower) or refused (Exact). */
enum { FG_VERSION_OR_LOWER = 0, FG_VERSION_EXACT = 1 };

struct fg_cluster_s {
    char *id;
    int lb_policy; /* fg_lb_policy_t */
    fg_destination_t *destinations;
    size_t ndestinations;
    /* httpRequest */
    uint64_t connect_timeout_ms;  /* default 5 s */
    uint64_t activity_timeout_ms; /* default 100 s (YARP) */
    /* keepAlive (per worker, per destination) */
    unsigned max_idle_connections;        /* default 64 */
    uint64_t idle_timeout_ms;             /* default 60 s */
    unsigned max_requests_per_connection; /* 0 = unlimited */
    fg_health_config_t health;            /* "healthCheck" */
    fg_affinity_config_t affinity;        /* "sessionAffinity" */
    fg_failover_config_t failover;        /* "failover" */
    void *state;                          /* shm/health.c cluster record, attached by the master */
    fg_tls_client_config_t http_client;   /* "httpClient" */
    void *tls;                            /* common/tls_client.c, built in the master */
    void *metrics;                        /* shm/metrics.c object (fg_metrics_attach) */
    int http_version;                     /* "httpVersion": FG_HTTP_V11 (default) or _V2 */
    int version_policy;                   /* "versionPolicy": FG_VERSION_* */
    int tcp; /* has tcp:// destinations: serves tcp servers and the "tcp" switch, no HTTP */
};

/* ---- the gateway's own answers (common/config_responses.c) ---- */

/* Largest errorPages file; the file is held in memory by every worker. */
#define FG_ERROR_PAGE_MAX (64 * 1024)

/* One errorPages entry: what replaces the JSON error body for a status or a status class. */
typedef struct {
    int status; /* 400..599, or 4 / 5 for the "4xx" / "5xx" class */
    char *file; /* absolute path, as read at load; NULL for a redirect */
    char *body; /* the file's contents (body_len bytes, NUL-terminated) */
    size_t body_len;
    char *content_type; /* "contentType", or NULL: by the file's extension */
    char *redirect;     /* "redirect": answer 302 with this Location instead */
    /* "route": the route (static, direct or cluster) that answers instead, resolved at load;
     * route_status is the status the client sees ("status"), 0 = the error's own. */
    char *route_id;
    const struct fg_route_s *route;
    int route_status;
} fg_error_page_t;

/* "serverHeader", "errorPages", "exposeAccessListIds": top level (the defaults) and per
 * server. A server's own errorPages are searched before the top-level ones. */
typedef struct {
    char *server_header; /* Server field value; NULL = none. Default "fastgateway" */
    fg_error_page_t *error_pages;
    size_t nerror_pages;
    int expose_acl_ids; /* a 403 body names the list that refused; default 0 */
} fg_responses_config_t;

/* "admin": the master's admin API listener (docs/admin.md); listen NULL = none. */
typedef struct {
    char *listen; /* default "127.0.0.1:9901" when "admin" is present */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int loopback; /* listen is 127.0.0.0/8 or ::1 */
    char *token;  /* tokenFile's content, trailing blanks cut; NULL = none */
    size_t token_len;
    char *token_file;      /* absolute */
    char *state_file;      /* absolute; NULL = the API cannot change the configuration */
    int anonymous_writes;  /* every request allowed without a token (loopback only) */
    int anonymous_metrics; /* GET of the metrics path without a token */
    char *metrics_path;    /* default "/metrics" */
    char *dashboard;       /* directory of the dashboard's files, absolute; NULL = none */
    long tls_cert;         /* admin.tls.certificate: index in certificates, -1 = plain HTTP */
    char *tls_cert_id;
    char *client_ca_file; /* admin.tls.clientCaFile, absolute; NULL = no client certificates */
} fg_admin_config_t;

/* ---- servers (listeners) ---- */

/* A server's "http2" object (worker/http/http2.c, docs/http2.md): how HTTP/2 is reached on a
 * plaintext server, and the limits every HTTP/2 connection of the server runs under. */
typedef struct {
    int h2c;                         /* "h2c": prior knowledge on a plaintext server; default 0 */
    unsigned max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS; default 128 */
    uint32_t max_header_list_size;   /* decoded field section bytes (RFC 9113 6.5.2); 64k */
    uint32_t initial_window_size;    /* per-stream receive window; default 1m */
    uint32_t connection_window_size; /* the connection's receive window; default 8m */
    uint32_t max_frame_size;         /* largest frame we accept; default 16k */
    int enable_connect_protocol;     /* SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441); default 1 */
} fg_http2_config_t;

/* A server's "tcp" object (common/config_tcp.c, worker/stream/tcp_proxy.h): the server relays
 * each connection's bytes to a destination of the cluster; it takes no routes. */
typedef struct {
    int enabled;                 /* "tcp" present: a layer-4 server */
    char *cluster_id;            /* "clusterId" */
    const fg_cluster_t *cluster; /* resolved after clusters load */
    uint64_t idle_timeout_ms; /* "idleTimeout": neither side sent a byte; default 1 h, 0 = none */
    uint64_t connect_timeout_ms; /* "connectTimeout": per destination attempt; default 5 s */
    unsigned max_connections;    /* "maxConnections": open, all workers; 0 = no cap */
    unsigned max_per_client;     /* "maxConnectionsPerClient": open from one address; 0 = none */
    /* "sendProxyProtocol": 1 or 2 = each destination connection begins with a PROXY protocol
     * header of that version naming the client (common/proxy_protocol.h); 0 = none */
    int send_proxy_protocol;
} fg_tcp_server_config_t;

#define FG_MAX_CONN_CAP 1000000     /* of connection caps: far past what descriptors allow */
#define FG_TCP_MAX_CONNECTIONS 1024 /* default of "maxConnections" */
#define FG_TCP_MAX_PER_CLIENT 64    /* default of "maxConnectionsPerClient" */

/* The protocol name of a relayed TCP stream: the switch a tcp server asks of a tunnel (an
 * HTTP/2 CONNECT, RFC 9113 8.5, inside the tunnel; an HTTP/1.1 Upgrade over the hop) and that a
 * route to tcp:// destinations relays. */
#define FG_TCP_PROTOCOL "tcp"

/* A server's "proxyProtocol" (worker/core/proxy_header.c, docs/config.md): every connection
 * begins with a PROXY protocol header, version 1 or 2, and the client it names is the
 * connection's peer from then on (caps, access control, rate limits, logs, forwarded fields). */
typedef struct {
    int enabled;
    uint64_t timeout_ms;  /* "timeout": the whole header within this of the accept; 5 s */
    char **trusted_peers; /* "trustedPeers": who may connect at all; none = anyone */
    size_t ntrusted_peers;
    fg_iprange_set_t trusted; /* trusted_peers, built at load */
} fg_proxy_protocol_config_t;

typedef struct {
    char *id;
    char *name;
    char *listen;                 /* "127.0.0.1:8080", "[::1]:8080", "*:8080" */
    struct sockaddr_storage addr; /* resolved */
    socklen_t addrlen;
    int enabled;
    int backlog; /* default 511 */
    /* limits */
    size_t max_request_line;       /* default 8k -> 414 */
    size_t max_header_size;        /* default 32k -> 431 */
    unsigned max_headers;          /* default 100 -> 431 */
    int64_t max_request_body_size; /* default 100m -> 413; -1 unlimited */
    /* "maxConnections", "maxConnectionsPerClient": open connections of an HTTP server (all
     * workers), of one client address; 0 = no cap. Checked at accept (worker/core/connlimit.h). */
    unsigned max_connections;
    unsigned max_per_client;
    /* timeouts */
    uint64_t header_timeout_ms;      /* default 60 s -> 408 */
    uint64_t body_timeout_ms;        /* default 60 s between body reads -> 408 */
    uint64_t keepalive_timeout_ms;   /* default 75 s idle between requests -> close */
    uint64_t send_timeout_ms;        /* default 60 s for the client to accept bytes */
    unsigned max_keepalive_requests; /* default 0 = unlimited */
    /* "ignoreClientAbort": a client EOF after the whole request does not cancel it; the
     * response is still sent (nginx's proxy_ignore_client_abort). Default off: the EOF aborts
     * the upstream exchange and logs 499, as nginx and YARP do. */
    int ignore_client_abort;
    unsigned max_websockets; /* "maxWebSockets": open relays (all workers), 503 past it */
    /* routes attached to this server, in match order (built at load) */
    fg_route_t **routes;
    size_t nroutes;
    void *router;                  /* compiled router (worker/http/router.c), built in the master */
    fg_security_attach_t security; /* server "rateLimits" / "accessControl" */
    int client_ip_source;          /* fg_client_ip_source_t */
    char **trusted_proxies;        /* CIDRs or addresses */
    size_t ntrusted_proxies;
    fg_proxy_protocol_config_t proxy_protocol; /* "proxyProtocol" */
    fg_responses_config_t responses;           /* serverHeader, errorPages, exposeAccessListIds */
    fg_tls_server_config_t *tls;               /* "tls"; NULL = plaintext */
    fg_redirect_https_t redirect;              /* "redirectHttps" (plaintext servers only) */
    void *tls_compiled;                        /* common/tls.c contexts, built in the master */
    void *metrics;                             /* shm/metrics.c object (fg_metrics_attach) */
    fg_http2_config_t http2;                   /* "http2" */
    int accept_tunnels; /* "acceptTunnels": agents connect on tunnels.path (docs/tunnels.md) */
    int tunnel_hop;     /* not configured: a worker's hop socket (worker/tunnel/hop.h) */
    fg_tcp_server_config_t tcp; /* "tcp": a layer-4 server */
    /* not configured: the HTTP/2 front end takes a CONNECT (RFC 9113 8.5) as a switch to
     * FG_TCP_PROTOCOL for the authority's service (the agent's tunnel server) */
    int accept_connect;
    /* "compression": the default of the routes that have none (docs/compression.md) */
    fg_compression_config_t compression;
} fg_server_t;

/* ---- tunnels (common/config_tunnels.c, docs/tunnels.md) ---- */

#define FG_TUNNEL_AGENTS_MAX 256
#define FG_TUNNEL_HANDSHAKE_TIMEOUT_MS 10000 /* "handshakeTimeout" default */

typedef struct {
    char *id;          /* [A-Za-z0-9._-]{1,64} */
    char *secret_file; /* absolute */
    /* the secret, read by the master at load (never dumped, logged or shown) */
    uint8_t secret[1024];
    size_t secret_len;
    void *state; /* shm/tunnels.c record, attached by the master (fg_tunnels_attach) */
} fg_tunnel_agent_t;

typedef struct {
    int enabled;           /* the section is present */
    char *path;            /* default "/_fg/tunnel" */
    uint64_t heartbeat_ms; /* "heartbeatSeconds", default 30 s */
    uint64_t grace_ms;     /* "graceSeconds", default 10 s */
    /* "handshakeTimeout": an agent connection's whole tunnel-protocol handshake, from the
     * upgrade to OK; 100 ms to 5 min, default 10 s */
    uint64_t handshake_timeout_ms;
    unsigned auth_failures_max; /* "authFailuresPerMinute" per client address; default 10 */
    fg_tunnel_agent_t *agents;
    size_t nagents;
} fg_tunnels_config_t;

/* ---- top level ---- */

typedef struct {
    char *path;               /* error log path or "stderr" */
    int level;                /* FG_LOG_* */
    int json;                 /* format "json" */
    char *access_path;        /* NULL = off */
    size_t access_buffer;     /* default 64k */
    uint64_t access_flush_ms; /* default 1 s */
    uint64_t access_fields;   /* accessLogFields: FG_AL_BIT()s of common/log.h; 0 = default */
} fg_log_config_t;

typedef struct {
    char *file;  /* path the configuration was loaded from */
    int workers; /* resolved: "auto" = CPU count */
    char *user;  /* NULL = do not change */
    char *group;
    char *pid_file;
    char *status_socket;
    char *status_group;           /* NULL = mode 0600, else 0660 with this group */
    uint64_t rlimit_nofile;       /* workerRlimitNofile; 0 = leave as is */
    uint64_t shutdown_timeout_ms; /* default 30 s */
    uint64_t drain_timeout_ms;    /* idle keep-alive kept open on retire, default 2 s */
    size_t shm_size;              /* default 64m */
    int watch_config;             /* watchConfig: reload when the file changes; default 0 */
    /* open WebSockets kept on retire; default 20 s, less than shutdown_timeout_ms */
    uint64_t websocket_drain_timeout_ms;
    fg_log_config_t log;
    fg_server_t *servers;
    size_t nservers;
    fg_route_t *routes;
    size_t nroutes;
    fg_cluster_t *clusters;
    size_t nclusters;
    fg_ratelimit_rule_t *ratelimits;
    size_t nratelimits;
    fg_acl_list_t *acls;
    size_t nacls;
    fg_security_attach_t security; /* global attachments ("security") */
    fg_abnormal_config_t abnormal;
    size_t shm_ratelimit_zone;       /* shm.rateLimitZone, default 8m */
    size_t shm_acl_zone;             /* shm.accessControlZone, default 1m */
    size_t shm_abnormal_zone;        /* shm.abnormalIpZone, default 4m */
    void *security_compiled;         /* worker/admission/security.c, built in the master */
    char *tenant_header;             /* "tenantHeader", default "X-Tenant-Code" */
    fg_responses_config_t responses; /* top-level serverHeader, errorPages, ... (defaults) */
    void *json_root;                 /* the parsed document, kept for diagnostics; owned */
    char **warnings;                 /* "FILE: json.path: reason" the load did not fail on */
    size_t nwarnings;
    fg_tls_cert_config_t *certificates; /* "certificates" */
    size_t ncertificates;
    uint64_t tls_ticket_rotation_ms; /* tls.ticketKeyRotation, default 1 h */
    void *tls;                       /* common/tls.c: loaded certificates, built in the master */
    /* "metrics": the master's metrics listener (master/metrics_http.c); NULL listen = none */
    char *metrics_listen;
    char *metrics_path; /* default "/metrics" */
    struct sockaddr_storage metrics_addr;
    socklen_t metrics_addrlen;
    fg_admin_config_t admin;     /* "admin" (master/admin_http.c, docs/admin.md) */
    fg_tunnels_config_t tunnels; /* "tunnels" */
    fg_acme_config_t acme;       /* "acme" */
} fg_config_t;

/* The largest configuration file fg_config_load reads (docs/config.md). */
#define FG_CONFIG_MAX_FILE_SIZE (64 * 1024 * 1024)

/* Load, validate and resolve FILE: a regular file (symlinks followed) of at most
 * FG_CONFIG_MAX_FILE_SIZE bytes. Returns NULL on failure with a one-line message in err,
 * formatted "FILE: json.path: reason" or "FILE:LINE:COL: reason" for syntax errors. */
fg_config_t *fg_config_load(const char *file, char *err, size_t errlen);
/* The same from a string (tests); `name` stands for the file name in messages. */
fg_config_t *fg_config_load_string(const char *name, const char *json, char *err, size_t errlen);
void fg_config_free(fg_config_t *cfg);
/* A copy of text (NUL-terminated) with its // and block comments blanked, so that jansson reads
 * it; newlines stay, so line numbers still point into text. NULL for an unterminated block
 * comment (*line, *col = where it starts). The caller frees. */
char *fg_config_strip_comments(const char *text, int *line, int *col);
/* The effective configuration as a new JSON document (jansson's json_t; the caller
 * decrefs): every key with its default filled in, loadable as a configuration itself. */
struct json_t;
struct json_t *fg_config_dump(const fg_config_t *cfg);
/* Each of cfg->warnings to the error log at level warn (start and reload). */
void fg_config_log_warnings(const fg_config_t *cfg);

/* Helpers shared with other parsers. Return 0 or -1. */
int fg_config_parse_duration(
    const char *s, uint64_t *ms); /* "500ms" "30s" "5m" "1h" "2d", bare number = seconds */
int fg_config_parse_size(const char *s, uint64_t *bytes); /* "512" "64k" "64m" "1g" */
int fg_config_parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len);

/* fg_config_load with the API state document `state` (common/config_admin.c) merged in place of
 * the file admin.stateFile names; state NULL reads that file as fg_config_load does. */
struct json_t;
fg_config_t *fg_config_load_state(const char *file, const struct json_t *state, char *err,
                                  size_t errlen);
/* The document fg_config_load_state validates: the file's JSON with `state` (or the state file
 * when NULL) merged in. NULL with err on a read or syntax error. The caller decrefs. */
struct json_t *fg_config_merged_json(const char *file, const struct json_t *state, char *err,
                                     size_t errlen);

/* The API state document (common/config_admin.c, docs/admin.md): the kinds it may hold, NULL
 * terminated; the index of the element of arr with that "id" (-1); the shape check; the merge
 * into a configuration document; the file read (absent = an empty object). */
extern const char *const fg_config_admin_kinds[];
long fg_config_admin_find(const struct json_t *arr, const char *id);
int fg_config_admin_check_state(const struct json_t *state, const char *name, char *err,
                                size_t errlen);
void fg_config_admin_merge(struct json_t *root, const struct json_t *state);
struct json_t *fg_config_admin_read_state(const char *file, char *err, size_t errlen);

fg_cluster_t *fg_config_find_cluster(const fg_config_t *cfg, const char *id);
/* The index of the agent id (len bytes) in cfg->tunnels.agents, or -1. */
int fg_config_tunnel_agent(const fg_config_t *cfg, const char *id, size_t len);

/* The errorPages entry for status: the server's exact status, its class, then the top-level
 * exact status and class. NULL when the JSON error applies. */
const fg_error_page_t *fg_config_error_page(const fg_config_t *cfg, const fg_server_t *s,
                                            int status);

/* Fill d->id_hash and d->id_hash_hex from d->id (done by the loader). */
void fg_config_destination_hash(fg_destination_t *d);

#endif
