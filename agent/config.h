/* The tunnel agent's configuration (docs/tunnels.md, "Agent configuration"): a JSON file read
 * at start and on SIGHUP, checked with the gateway's loader conventions (unknown keys refused,
 * every error as "FILE: path.key: reason"). The secret is read here, from secretFile, and is
 * never printed. */
#ifndef FG_AGENT_CONFIG_H
#define FG_AGENT_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/tunnel_proto.h"

#define FG_AGENT_CONNECTIONS_MAX 16 /* tunnel connections one agent keeps, at most */

typedef struct {
    char *name;     /* the fg-tunnel-service value the gateway sends */
    char *address;  /* http:// or https:// URL of the local destination */
    json_t *client; /* "httpClient" object for an https:// address, or NULL */
    /* Set by agent/services.c once the address's host name is resolved: the address with
     * the host replaced by what it resolved to, and the host[:port] the address named, without
     * the scheme's default port (the destination's Host and TLS name). NULL: the address is
     * used as it is. */
    char *resolved;
    char *authority;
} fg_agent_service_t;

typedef struct {
    char *file; /* absolute path, as given on the command line */
    /* gateway: ws:// or wss:// URL */
    char *gateway;
    int tls;          /* wss:// */
    char *host;       /* as in the URL, IPv6 without brackets */
    char *port;       /* decimal */
    char *path;       /* "/_fg/tunnel" (and the query, if any) */
    char *host_field; /* the Host field: host[:port] as the URL has it */
    char id[FG_TUNNEL_ID_MAX + 1];
    char *secret_file;
    uint8_t secret[FG_TUNNEL_SECRET_MAX];
    size_t secret_len;
    char *ca_file;     /* tls.ca: NULL = the system's trust store */
    char *server_name; /* tls.serverName: NULL = host */
    char *cert_file;   /* tls.certificate: PEM chain presented to the gateway (clientAuth) */
    char *key_file;    /* tls.key: its private key */
    int verify;        /* tls.verify, default 1 */
    fg_agent_service_t *services;
    size_t nservices;
    uint64_t initial_ms, max_ms, stable_ms; /* reconnect.initialMs, maxMs, stableMs */
    double jitter;                          /* reconnect.jitter */
    unsigned heartbeat_s, grace_s;
    uint64_t connect_timeout_ms;  /* connectTimeoutMs: resolution + TCP + TLS + upgrade +
                                   * handshake */
    uint64_t shutdown_timeout_ms; /* shutdownTimeoutMs: the streams' drain time at TERM */
    unsigned connections;         /* 1..FG_AGENT_CONNECTIONS_MAX; 0: "auto", the gateway's
                                   * worker count (from its OK) */
    int log_level;
    char *error_log; /* log.errorLog: NULL = stderr */
    char *pid_file;
} fg_agent_config_t;

/* Load and check file. NULL with err ("FILE: path: reason") on any error. */
fg_agent_config_t *fg_agent_config_load(const char *file, char *err, size_t errlen);
/* The same from text (name stands for the file in messages and relative paths). */
fg_agent_config_t *fg_agent_config_parse(const char *name, const char *text, char *err,
                                         size_t errlen);
/* Frees cfg and wipes the secret. NULL is fine. */
void fg_agent_config_free(fg_agent_config_t *cfg);

#endif
