/* Front ends: the protocols that serve client connections (HTTP/1.1 in worker/http/http1.c;
 * HTTP/2 and tunnels are peers of it). The worker knows them only through this interface: it
 * hands an accepted connection to the front end chosen for it (by ALPN once a transport has
 * negotiated one) and, for reload and exit, asks every open session to retire, to close if
 * idle, or to close now.
 *
 * A session embeds fg_session_t as its first member and registers with fg_frontend_add; the
 * worker keeps all sessions of all front ends in one list. */
#ifndef FG_FRONTEND_H
#define FG_FRONTEND_H

#include <sys/socket.h>
#include "common/config.h"
#include "worker/core/context.h"

typedef struct fg_session_s fg_session_t;

typedef struct fg_frontend_s {
    const char *name; /* protocol name as ALPN spells it: "http/1.1" */
    unsigned slot;    /* index into fg_worker_t.frontend_state, < FG_FRONTEND_SLOTS */
    /* Serve an accepted connection. Returns 0, or -1 (the caller closes fd). */
    int (*start)(fg_worker_t *w, const fg_server_t *srv, int fd,
                 const struct sockaddr_storage *peer, socklen_t len);
    /* Graceful reload/quit: finish what is in flight, take no new request (HTTP/1.1 answers
     * its current or next request with "Connection: close"; HTTP/2 would send GOAWAY). */
    void (*retire)(fg_session_t *s);
    /* End of the drain period: close s if it is idle between requests. */
    void (*close_idle)(fg_session_t *s);
    /* Close s now (worker exit); it unregisters itself. */
    void (*close)(fg_session_t *s);
    /* Free the worker-wide state in w->frontend_state[slot] (after every session closed). */
    void (*release)(fg_worker_t *w);
} fg_frontend_t;

struct fg_session_s {
    const fg_frontend_t *fe;
    fg_session_t *prev, *next;
};

/* Chooses the front end for a connection of srv whose transport negotiated alpn (len 0: none,
 * plain TCP or no ALPN): the accept path calls it once the transport is ready. */
typedef const fg_frontend_t *(*fg_frontend_pick_fn)(const fg_server_t *srv, const char *alpn,
                                                    size_t len);

/* Register s, a session of fe, and count it in the worker's record. */
void fg_frontend_add(fg_worker_t *w, fg_session_t *s, const fg_frontend_t *fe);
/* Publish w->nconns for least-connections balancing (master/balance.h), and when accepted_all
 * (the accept queue is empty) clear the count of connections steered here; a no-op when
 * balancing is off or a newer worker took the slot over. Called by add and remove. */
void fg_frontend_publish_load(fg_worker_t *w, int accepted_all);
/* A connection steered here was accepted: it leaves the count of those steered and not
 * accepted as it joins the worker's connections (fg_frontend_add), so that the balancing program
 * never counts it twice while an accept loop runs. A no-op when balancing is off. */
void fg_frontend_accepted_one(fg_worker_t *w);
/* The connection of a session that handed it to another front end's session (after a TLS
 * handshake, a PROXY protocol header, the h2c sniff) was counted in the worker's
 * connectionsTotal when the first registered: the second takes that count back. */
void fg_frontend_handed_over(fg_worker_t *w);
/* Unregister s; a retiring worker leaves its loop once its last session is gone. */
void fg_frontend_remove(fg_worker_t *w, fg_session_t *s);

/* Worker-wide: apply retire / close_idle / close to every session. */
void fg_frontend_retire_all(fg_worker_t *w);
void fg_frontend_close_idle(fg_worker_t *w);
/* Close every session, then release every front end's worker state (fes: the front ends,
 * n of them). */
void fg_frontend_close_all(fg_worker_t *w, const fg_frontend_t *const *fes, size_t n);

#endif
