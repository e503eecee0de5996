#include "master/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "master/balance.h"

enum { FRESH = 1, BLOCKED = 2 };

/* All sockets bound to one address, indexed by worker slot (-1 = none). */
typedef struct {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int *fds;
    unsigned char *fresh;   /* FRESH: opened by the pending prepare; BLOCKED: dropping SYNs */
    unsigned char *offered; /* in the balancing program's socket map */
    int nfds;
    int used;      /* needed by the pending configuration */
    int bal_group; /* the group's id for least-connections balancing, -1 = kernel hash */
} group_t;

typedef struct {
    int fd;
    pid_t owner;
} retired_t;

struct fg_listeners_s {
    group_t *groups;
    size_t ngroups;
    retired_t *retired;
    size_t nretired;
    int pending;
    int pending_workers;
    fg_balance_t *bal; /* NULL: the kernel's hash spreads connections */
};

/* A slot no worker takes connections for weighs this much, so that the program passes it by. */
#define UNAVAILABLE (1u << 30)

fg_listeners_t *fg_listeners_new(void)
{
    fg_listeners_t *ls = calloc(1, sizeof(fg_listeners_t));
    if (ls == NULL)
        return NULL;
    char err[256];
    ls->bal = fg_balance_new(err, sizeof(err));
    if (ls->bal == NULL) {
        fg_log_info("listeners: connections are spread over the workers by the kernel's hash, "
                    "not by their load: %s",
                    err);
        return ls;
    }
    fg_balance_page_t *pg = fg_balance_page(ls->bal);
    for (int s = 0; s < FG_BALANCE_SLOTS; s++)
        pg->open[s] = UNAVAILABLE;
    return ls;
}

int fg_listeners_balanced(const fg_listeners_t *ls)
{
    return ls->bal != NULL;
}

uint32_t *fg_listeners_balance_slot(fg_listeners_t *ls, int slot, uint32_t **pending,
                                    uint32_t **busy, uint64_t **owner)
{
    fg_balance_page_t *pg = fg_balance_page(ls->bal);
    if (pg == NULL || slot < 0 || slot >= FG_BALANCE_SLOTS) {
        *pending = *busy = NULL;
        *owner = NULL;
        return NULL;
    }
    *pending = &pg->pending[slot];
    *busy = &pg->busy[slot];
    *owner = &pg->owner[slot];
    return &pg->open[slot];
}

/* Offer the socket of `slot` of g to the balancing program (it takes connections), or withdraw
 * it (it is about to be retired). */
static void offer(fg_listeners_t *ls, group_t *g, int slot, int on)
{
    if (ls->bal == NULL || g->bal_group < 0 || slot >= FG_BALANCE_SLOTS || g->fds[slot] == -1 ||
        !g->offered[slot] == !on)
        return;
    int rc = fg_balance_offer(ls->bal, g->bal_group, slot, on ? g->fds[slot] : -1);
    if (rc < 0) {
        fg_log_warn("listeners: cannot %s listener fd %d for balancing: %s",
                    on ? "offer" : "withdraw", g->fds[slot], strerror(-rc));
        return;
    }
    g->offered[slot] = (unsigned char)on;
    fg_balance_page_t *pg = fg_balance_page(ls->bal);
    if (on && pg->open[slot] == UNAVAILABLE) {
        /* a new worker: it holds nothing yet, and writes its count from its first connection */
        __atomic_store_n(&pg->open[slot], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&pg->pending[slot], 0, __ATOMIC_RELAXED);
    }
}

void fg_listeners_slot_down(fg_listeners_t *ls, int slot, uint64_t generation)
{
    fg_balance_page_t *pg = fg_balance_page(ls->bal);
    if (pg == NULL || slot < 0 || slot >= FG_BALANCE_SLOTS)
        return;
    for (size_t i = 0; i < ls->ngroups; i++) {
        group_t *g = &ls->groups[i];
        if (slot < g->nfds && !g->fresh[slot])
            offer(ls, g, slot, 0);
    }
    /* The counts the dead worker left would still draw SYNs to the slot (a slot the program
     * picks but cannot select falls back to the hash, which may pick the slot's socket): it
     * weighs UNAVAILABLE until its replacement claims it, as that one starts accepting. The
     * claim of another generation's worker stands: that worker writes the counts. */
    if (__atomic_load_n(&pg->owner[slot], __ATOMIC_RELAXED) != generation)
        return;
    __atomic_store_n(&pg->open[slot], UNAVAILABLE, __ATOMIC_RELAXED);
    __atomic_store_n(&pg->pending[slot], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&pg->busy[slot], 0, __ATOMIC_RELAXED);
}

void fg_listeners_slot_up(fg_listeners_t *ls, int slot)
{
    for (size_t i = 0; i < ls->ngroups; i++) {
        group_t *g = &ls->groups[i];
        if (slot < g->nfds && !g->fresh[slot])
            offer(ls, g, slot, 1);
    }
}

static void group_deinit(fg_listeners_t *ls, group_t *g)
{
    if (ls->bal != NULL && g->bal_group >= 0)
        fg_balance_group_free(ls->bal, g->bal_group);
    for (int i = 0; i < g->nfds; i++)
        if (g->fds[i] != -1)
            close(g->fds[i]);
    free(g->fds);
    free(g->fresh);
    free(g->offered);
}

void fg_listeners_free(fg_listeners_t *ls)
{
    if (ls == NULL)
        return;
    for (size_t i = 0; i < ls->ngroups; i++)
        group_deinit(ls, &ls->groups[i]);
    for (size_t i = 0; i < ls->nretired; i++)
        close(ls->retired[i].fd);
    fg_balance_free(ls->bal);
    free(ls->groups);
    free(ls->retired);
    free(ls);
}

/* Same family, address and port (and IPv6 scope). Other sockaddr bytes (padding, flow info)
 * do not make a different listener. */
static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return memcmp(a, b, sizeof(*a)) == 0;
}

static group_t *find_group(fg_listeners_t *ls, const struct sockaddr_storage *addr)
{
    for (size_t i = 0; i < ls->ngroups; i++)
        if (same_addr(&ls->groups[i].addr, addr))
            return &ls->groups[i];
    return NULL;
}

/* Create, set up and bind a TCP socket for addr; SO_REUSEPORT only when reuseport. Returns the
 * fd or -errno; `what` names the failing call. */
static int bound_socket(const struct sockaddr_storage *addr, socklen_t len, int reuseport,
                        const char **what)
{
    int one = 1;
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd == -1) {
        *what = "socket";
        return -errno;
    }
    *what = "setsockopt";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1))
        goto fail;
    /* "[::]:80" means IPv6 only, so that "0.0.0.0:80" can be a separate server (nginx does so). */
    if (addr->ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1)
        goto fail;
    *what = "bind";
    if (bind(fd, (const struct sockaddr *)addr, len) == -1)
        goto fail;
    return fd;
fail:;
    int e = errno;
    close(fd);
    return -e;
}

/* A nonblocking SO_REUSEPORT listener. No CLOEXEC: workers are forked, never exec'ed, and keep
 * the descriptors they are given. Returns the fd or -errno; `what` names the failing call. */
static int open_socket(const struct sockaddr_storage *addr, socklen_t len, int backlog,
                       const char **what)
{
    int fd = bound_socket(addr, len, 1, what);
    if (fd < 0)
        return fd;
    *what = "listen";
    if (listen(fd, backlog > 0 ? backlog : 511) == -1) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* SO_REUSEPORT lets a socket of any process of the same user join a group on the same address,
 * so binding alone cannot tell that another instance (or program) already listens there. A
 * probe bound with SO_REUSEADDR and without SO_REUSEPORT can: Linux refuses it with EADDRINUSE
 * while any socket listens on an overlapping address (the same one, or the wildcard address of
 * the family, whatever that socket's options), and allows it over connections in TIME_WAIT.
 * Returns 0 when the address is free, or -errno. */
static int probe(const struct sockaddr_storage *addr, socklen_t len)
{
    const char *what;
    int fd = bound_socket(addr, len, 0, &what);
    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

static void bind_error(char *err, size_t errlen, size_t si, const fg_server_t *srv,
                       const char *what, int e)
{
    snprintf(err, errlen, "servers[%zu].listen: %s() to %s failed (%d: %s)", si, what,
             srv->listen ? srv->listen : "?", e, strerror(e));
}

static int port_of(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)a)->sin_port);
    if (a->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)a)->sin6_port);
    return -1;
}

/* Whether one of our own sockets, in use or retired, has addr's family and port: then a probe
 * of addr may fail on our own socket (the wildcard address next to a specific one, an address
 * removed and added back before its old worker has exited), and it proves nothing. */
static int holds_port(const fg_listeners_t *ls, const struct sockaddr_storage *addr)
{
    for (size_t i = 0; i < ls->ngroups; i++)
        if (ls->groups[i].addr.ss_family == addr->ss_family &&
            port_of(&ls->groups[i].addr) == port_of(addr))
            return 1;
    for (size_t i = 0; i < ls->nretired; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(ls->retired[i].fd, (struct sockaddr *)&ss, &len) == 0 &&
            ss.ss_family == addr->ss_family && port_of(&ss) == port_of(addr))
            return 1;
    }
    return 0;
}

/* Probe every enabled server of cfg whose port ls does not hold already (ls NULL: every one).
 * Returns 0, or -1 with the first address in use in err. Other errors are left to the real
 * bind, which reports them. */
static int probe_servers(const fg_listeners_t *ls, const fg_config_t *cfg, char *err, size_t errlen)
{
    for (size_t si = 0; si < cfg->nservers; si++) {
        const fg_server_t *srv = &cfg->servers[si];
        if (!srv->enabled || (ls != NULL && holds_port(ls, &srv->addr)))
            continue;
        int rc = probe(&srv->addr, srv->addrlen);
        if (rc == -EADDRINUSE) {
            bind_error(err, errlen, si, srv, "bind", EADDRINUSE);
            return -1;
        }
    }
    return 0;
}

int fg_listeners_probe(const fg_config_t *cfg, char *err, size_t errlen)
{
    return probe_servers(NULL, cfg, err, errlen);
}

int fg_listener_block(int fd)
{
    /* Drop new connection attempts only: a SYN hashed to this socket is dropped and the client
     * retransmits it (to a live socket once this one is closed). Everything else passes, so a
     * handshake that was half done when the socket was retired still completes and is accepted
     * by the old worker's final drain; dropping its last ACK too would leave the client with a
     * connection the server never accepts, reset when the socket closes. A socket filter on a
     * TCP listener sees the packet from the TCP header on: byte 13 holds the flags. */
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x02 /* SYN */, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, 0),
        BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),
    };
    struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) == -1)
        return -errno;
    return 0;
}

static int grow_group(group_t *g, int n)
{
    if (n <= g->nfds)
        return 0;
    int *fds = realloc(g->fds, (size_t)n * sizeof(*fds));
    if (fds == NULL)
        return -1;
    g->fds = fds;
    unsigned char *fresh = realloc(g->fresh, (size_t)n);
    if (fresh == NULL)
        return -1;
    g->fresh = fresh;
    unsigned char *offered = realloc(g->offered, (size_t)n);
    if (offered == NULL)
        return -1;
    g->offered = offered;
    for (int i = g->nfds; i < n; i++) {
        g->fds[i] = -1;
        g->fresh[i] = 0;
        g->offered[i] = 0;
    }
    g->nfds = n;
    return 0;
}

static group_t *add_group(fg_listeners_t *ls, const fg_server_t *srv)
{
    group_t *groups = realloc(ls->groups, (ls->ngroups + 1) * sizeof(*groups));
    if (groups == NULL)
        return NULL;
    ls->groups = groups;
    group_t *g = &groups[ls->ngroups++];
    memset(g, 0, sizeof(*g));
    g->addr = srv->addr;
    g->addrlen = srv->addrlen;
    g->bal_group = ls->bal ? fg_balance_group_new(ls->bal) : -1;
    return g;
}

/* Retire one socket: filter it, then close it now (no owner) or remember it for its owner. */
static void retire(fg_listeners_t *ls, int fd, pid_t owner)
{
    int rc = fg_listener_block(fd);
    if (rc < 0)
        fg_log_warn("cannot attach the drop filter to listener fd %d: %s", fd, strerror(-rc));
    if (owner > 0) {
        retired_t *r = realloc(ls->retired, (ls->nretired + 1) * sizeof(*r));
        if (r != NULL) {
            ls->retired = r;
            ls->retired[ls->nretired++] = (retired_t){fd, owner};
            return;
        }
        /* Out of memory: closing our copy is safe, the owner keeps its own. */
    }
    close(fd);
}

/* Drop groups left without any socket, keeping the order of the others. */
static void compact(fg_listeners_t *ls)
{
    size_t out = 0;
    for (size_t i = 0; i < ls->ngroups; i++) {
        group_t *g = &ls->groups[i];
        int any = 0;
        for (int s = 0; s < g->nfds; s++)
            any |= g->fds[s] != -1;
        if (!any) {
            group_deinit(ls, g);
            continue;
        }
        ls->groups[out++] = *g;
    }
    ls->ngroups = out;
}

/* Close what prepare opened (used on its own failure, before any worker could hold it). */
static void undo_fresh(fg_listeners_t *ls)
{
    for (size_t i = 0; i < ls->ngroups; i++) {
        group_t *g = &ls->groups[i];
        for (int s = 0; s < g->nfds; s++) {
            if (g->fresh[s]) {
                close(g->fds[s]);
                g->fds[s] = -1;
                g->fresh[s] = 0;
                g->offered[s] = 0;
            }
        }
    }
    compact(ls);
}

static int prepare_server(fg_listeners_t *ls, const fg_config_t *cfg, size_t si, int *tbl,
                          char *err, size_t errlen)
{
    const fg_server_t *srv = &cfg->servers[si];
    group_t *g = find_group(ls, &srv->addr);
    if (g != NULL && g->used) {
        snprintf(err, errlen, "servers[%zu].listen: %s is also the address of another server", si,
                 srv->listen ? srv->listen : "?");
        return -1;
    }
    if (g == NULL && (g = add_group(ls, srv)) == NULL)
        goto oom;
    g->used = 1;
    if (grow_group(g, cfg->workers) < 0)
        goto oom;
    for (int slot = 0; slot < cfg->workers; slot++) {
        if (g->fds[slot] == -1) {
            const char *what = "";
            int fd = open_socket(&srv->addr, srv->addrlen, srv->backlog, &what);
            if (fd < 0) {
                bind_error(err, errlen, si, srv, what, -fd);
                return -1;
            }
            g->fds[slot] = fd;
            g->fresh[slot] = FRESH;
            /* no connection for this slot until its worker is ready (fg_listeners_open_slot) */
            if (fg_listener_block(fd) == 0)
                g->fresh[slot] |= BLOCKED;
        }
        tbl[si * (size_t)cfg->workers + (size_t)slot] = g->fds[slot];
    }
    if (ls->bal != NULL && g->bal_group >= 0) {
        char why[512];
        if (fg_balance_attach(ls->bal, g->bal_group, cfg->workers, g->fds[0], why, sizeof(why)) < 0)
            fg_log_warn("listeners: %s: the kernel's hash spreads its connections: %s",
                        srv->listen ? srv->listen : "?", why);
    }
    return 0;
oom:
    snprintf(err, errlen, "servers[%zu].listen: out of memory", si);
    return -1;
}

int fg_listeners_prepare(fg_listeners_t *ls, const fg_config_t *cfg, int **fds, char *err,
                         size_t errlen)
{
    if (ls->pending) {
        snprintf(err, errlen, "listeners: a previous change is still pending");
        return -1;
    }
    if (cfg->workers <= 0) {
        snprintf(err, errlen, "workers: must be at least 1");
        return -1;
    }
    size_t n = cfg->nservers * (size_t)cfg->workers;
    int *tbl = malloc((n ? n : 1) * sizeof(*tbl));
    if (tbl == NULL) {
        snprintf(err, errlen, "listeners: out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        tbl[i] = -1;
    /* Before anything is opened, so that our fresh sockets cannot hide a foreign one. */
    if (probe_servers(ls, cfg, err, errlen) < 0) {
        free(tbl);
        return -1;
    }
    for (size_t i = 0; i < ls->ngroups; i++)
        ls->groups[i].used = 0;
    for (size_t si = 0; si < cfg->nservers; si++) {
        if (!cfg->servers[si].enabled)
            continue;
        if (prepare_server(ls, cfg, si, tbl, err, errlen) < 0) {
            undo_fresh(ls);
            free(tbl);
            return -1;
        }
    }
    ls->pending = 1;
    ls->pending_workers = cfg->workers;
    *fds = tbl;
    return 0;
}

/* The socket of `slot` takes connections: its filter goes, and the balancing program may pick
 * it from now on. */
static void unblock(fg_listeners_t *ls, group_t *g, int slot)
{
    int dummy = 0;
    if (slot >= g->nfds || g->fds[slot] == -1)
        return;
    if (g->fresh[slot] & BLOCKED) {
        if (setsockopt(g->fds[slot], SOL_SOCKET, SO_DETACH_FILTER, &dummy, sizeof(dummy)) == -1)
            fg_log_warn("cannot detach the filter of listener fd %d: %s", g->fds[slot],
                        strerror(errno));
        g->fresh[slot] &= (unsigned char)~BLOCKED;
    }
    offer(ls, g, slot, 1);
}

void fg_listeners_open_slot(fg_listeners_t *ls, int slot)
{
    for (size_t i = 0; i < ls->ngroups; i++)
        if (ls->groups[i].used)
            unblock(ls, &ls->groups[i], slot);
}

size_t fg_listeners_commit(fg_listeners_t *ls, fg_listeners_owner_fn owner, void *arg)
{
    size_t n = 0;
    for (size_t i = 0; i < ls->ngroups; i++) {
        group_t *g = &ls->groups[i];
        int keep = g->used ? ls->pending_workers : 0;
        for (int s = 0; s < g->nfds; s++) {
            if (s < keep)
                unblock(ls, g, s);
            g->fresh[s] = 0;
            if (s >= keep && g->fds[s] != -1) {
                offer(ls, g, s, 0);
                retire(ls, g->fds[s], owner ? owner(s, arg) : 0);
                g->fds[s] = -1;
                n++;
            }
        }
        if (g->nfds > keep)
            g->nfds = keep;
    }
    /* Slots beyond the workers now configured take no more connections; their old workers,
     * no longer owners, stop writing their counts. */
    fg_balance_page_t *pg = fg_balance_page(ls->bal);
    for (int s = ls->pending_workers; pg != NULL && s < FG_BALANCE_SLOTS; s++) {
        __atomic_store_n(&pg->owner[s], UINT64_MAX, __ATOMIC_RELAXED);
        __atomic_store_n(&pg->open[s], UNAVAILABLE, __ATOMIC_RELAXED);
    }
    compact(ls);
    ls->pending = 0;
    return n;
}

size_t fg_listeners_rollback(fg_listeners_t *ls, fg_listeners_owner_fn owner, void *arg)
{
    size_t n = 0;
    for (size_t i = 0; i < ls->ngroups; i++) {
        group_t *g = &ls->groups[i];
        for (int s = 0; s < g->nfds; s++) {
            if (g->fresh[s]) {
                offer(ls, g, s, 0);
                retire(ls, g->fds[s], owner ? owner(s, arg) : 0);
                g->fds[s] = -1;
                g->fresh[s] = 0;
                n++;
            }
        }
    }
    compact(ls);
    ls->pending = 0;
    return n;
}

size_t fg_listeners_release(fg_listeners_t *ls, pid_t pid)
{
    size_t out = 0, closed = 0;
    for (size_t i = 0; i < ls->nretired; i++) {
        if (ls->retired[i].owner == pid) {
            close(ls->retired[i].fd);
            closed++;
        } else {
            ls->retired[out++] = ls->retired[i];
        }
    }
    ls->nretired = out;
    return closed;
}

static int kept(int fd, const int *keep, size_t nkeep)
{
    for (size_t i = 0; i < nkeep; i++)
        if (keep[i] == fd)
            return 1;
    return 0;
}

void fg_listeners_close_in_child(const fg_listeners_t *ls, const int *keep, size_t nkeep)
{
    for (size_t i = 0; i < ls->ngroups; i++) {
        const group_t *g = &ls->groups[i];
        for (int s = 0; s < g->nfds; s++)
            if (g->fds[s] != -1 && !kept(g->fds[s], keep, nkeep))
                close(g->fds[s]);
    }
    for (size_t i = 0; i < ls->nretired; i++)
        if (!kept(ls->retired[i].fd, keep, nkeep))
            close(ls->retired[i].fd);
    fg_balance_close_in_child(ls->bal);
}

size_t fg_listeners_active(const fg_listeners_t *ls)
{
    size_t n = 0;
    for (size_t i = 0; i < ls->ngroups; i++)
        for (int s = 0; s < ls->groups[i].nfds; s++)
            n += ls->groups[i].fds[s] != -1;
    return n;
}

size_t fg_listeners_retired(const fg_listeners_t *ls)
{
    return ls->nretired;
}
