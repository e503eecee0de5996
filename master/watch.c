#include "master/watch.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/log.h"

/* A file is complete when its writer closes it (IN_CLOSE_WRITE) or when a finished file is
 * renamed over it (IN_MOVED_TO). Creation, deletion and single writes are not waited on: they
 * come before the content is whole. */
#define DIR_EVENTS (IN_CLOSE_WRITE | IN_MOVED_TO)

typedef struct {
    int wd;
    char *path;       /* as given */
    const char *name; /* the file's name within its directory: points into path */
} entry_t;

struct fg_watch_s {
    int fd;
    struct event *read_ev;
    struct event *debounce_ev;
    unsigned debounce_ms;
    entry_t *entries;
    size_t n;
    char *changed; /* the first file seen changing since the last call of fn; NULL = none */
    fg_watch_fn fn;
    void *arg;
};

static void on_debounce(evutil_socket_t fd, short what, void *arg)
{
    fg_watch_t *w = arg;
    char *file = w->changed;
    w->changed = NULL;
    w->fn(w->arg, file ? file : "a watched file");
    free(file);
}

/* The entry an event is about, or NULL. Lost events count as the first file's: one of them may
 * have been ours. */
static const entry_t *matches(const fg_watch_t *w, const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW)
        return w->n ? &w->entries[0] : NULL;
    for (size_t i = 0; i < w->n; i++)
        if (w->entries[i].wd == ev->wd && ev->len > 0 && strcmp(ev->name, w->entries[i].name) == 0)
            return &w->entries[i];
    return NULL;
}

static void on_inotify(evutil_socket_t fd, short what, void *arg)
{
    fg_watch_t *w = arg;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    int hit = 0;
    ssize_t len;
    while ((len = read(fd, buf, sizeof(buf))) > 0) {
        for (char *p = buf; p < buf + len;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            const entry_t *e = matches(w, ev);
            if (e != NULL) {
                hit = 1;
                if (w->changed == NULL)
                    w->changed = strdup(e->path); /* NULL: the log says less, nothing else */
            }
            p += sizeof(*ev) + ev->len;
        }
    }
    if (!hit)
        return;
    /* Every change restarts the wait: the reload reads the files once they have been quiet. */
    struct timeval tv = {(time_t)(w->debounce_ms / 1000),
                         (suseconds_t)(w->debounce_ms % 1000) * 1000};
    evtimer_add(w->debounce_ev, &tv);
}

/* Watch the directory of path into *e. Returns 0, or -1 with the reason logged. */
static int watch_file(const fg_watch_t *w, const char *path, entry_t *e)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL || slash[1] == '\0') {
        fg_log_warn("watchConfig: %s is not an absolute file path, not watched", path);
        return -1;
    }
    char dir[PATH_MAX];
    size_t dlen = slash == path ? 1 : (size_t)(slash - path);
    if (dlen >= sizeof(dir)) {
        fg_log_warn("watchConfig: %s: path too long, not watched", path);
        return -1;
    }
    memcpy(dir, path, dlen);
    dir[dlen] = '\0';
    /* A directory already watched gives its existing descriptor back. */
    int wd = inotify_add_watch(w->fd, dir, DIR_EVENTS);
    if (wd == -1) {
        fg_log_warn("watchConfig: cannot watch %s for %s: %s", dir, path, strerror(errno));
        return -1;
    }
    e->path = strdup(path);
    if (e->path == NULL) {
        fg_log_error("watchConfig: out of memory");
        return -1;
    }
    e->wd = wd;
    e->name = e->path + (slash + 1 - path);
    return 0;
}

static int wd_in(const entry_t *v, size_t n, int wd)
{
    for (size_t i = 0; i < n; i++)
        if (v[i].wd == wd)
            return 1;
    return 0;
}

static void free_entries(entry_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].path);
    free(v);
}

#define MAX_LINKS 40 /* as the kernel's own limit on symlinks in one lookup (ELOOP) */

typedef struct {
    const fg_watch_t *w;
    entry_t *v;
    size_t n, cap;
} entries_t;

static void push(entries_t *es, const char *path)
{
    if (es->n == es->cap) {
        size_t cap = es->cap ? 2 * es->cap : 8;
        entry_t *grown = realloc(es->v, cap * sizeof(*grown));
        if (grown == NULL) {
            fg_log_error("watchConfig: out of memory, %s not watched", path);
            return;
        }
        es->v = grown;
        es->cap = cap;
    }
    if (watch_file(es->w, path, &es->v[es->n]) == 0)
        es->n++;
}

/* Watch path as named and every symlink met on the way to the file it names, in the final
 * component or in a directory (a ConfigMap's cfg.json -> ..data/cfg.json, ..data -> ..2026_x
 * swapped by rename): replacing any link of the chain changes which file a reload reads, and
 * the owner sets the watch again when a reload starts, so a swap is followed. A component
 * that does not exist ends the walk: what was found is watched. */
static void push_chain(entries_t *es, const char *path)
{
    push(es, path);
    char done[PATH_MAX] = "", rest[PATH_MAX], link[PATH_MAX], tmp[2 * PATH_MAX];
    if (snprintf(rest, sizeof(rest), "%s", path) >= (int)sizeof(rest))
        return;
    int links = 0;
    char *r = rest;
    while (*r) {
        while (*r == '/')
            r++;
        if (*r == '\0')
            break;
        char *end = strchrnul(r, '/');
        size_t clen = (size_t)(end - r);
        if (clen == 1 && r[0] == '.') {
            r = end;
            continue;
        }
        if (clen == 2 && r[0] == '.' && r[1] == '.') {
            char *slash = strrchr(done, '/');
            if (slash)
                *slash = '\0';
            r = end;
            continue;
        }
        size_t dlen = strlen(done);
        if (dlen + 1 + clen >= sizeof(done))
            return;
        char *comp = done + dlen;
        *comp = '/';
        memcpy(comp + 1, r, clen);
        comp[1 + clen] = '\0';
        r = end;
        struct stat st;
        if (lstat(done, &st) == -1)
            break;
        if (!S_ISLNK(st.st_mode))
            continue;
        ssize_t n = readlink(done, link, sizeof(link) - 1);
        if (n <= 0 || ++links > MAX_LINKS)
            break;
        link[n] = '\0';
        push(es, done);
        /* The target replaces the component: absolute from "/", relative from its directory. */
        if (snprintf(tmp, sizeof(tmp), "%s/%s", link, r) >= (int)sizeof(rest))
            break;
        memcpy(rest, tmp, sizeof(rest));
        r = rest;
        if (link[0] == '/')
            done[0] = '\0';
        else
            *comp = '\0';
    }
    /* The file at the end of the chain: written in place by an editor. */
    if (done[0] != '\0' && strcmp(done, path) != 0)
        push(es, done);
}

size_t fg_watch_set(fg_watch_t *w, const char *const *files, size_t n)
{
    entries_t es = {.w = w};
    for (size_t i = 0; i < n; i++)
        push_chain(&es, files[i]);
    /* Directories no file of the new set lives in are dropped. */
    for (size_t i = 0; i < w->n; i++)
        if (!wd_in(es.v, es.n, w->entries[i].wd) && !wd_in(w->entries, i, w->entries[i].wd))
            inotify_rm_watch(w->fd, w->entries[i].wd);
    free_entries(w->entries, w->n);
    w->entries = es.v;
    w->n = es.n;
    return es.n;
}

fg_watch_t *fg_watch_new(struct event_base *base, unsigned debounce_ms, fg_watch_fn fn, void *arg,
                         char *err, size_t errlen)
{
    fg_watch_t *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errlen, "watchConfig: out of memory");
        return NULL;
    }
    w->debounce_ms = debounce_ms;
    w->fn = fn;
    w->arg = arg;
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd == -1) {
        snprintf(err, errlen, "watchConfig: inotify_init1: %s", strerror(errno));
        goto fail;
    }
    w->read_ev = event_new(base, w->fd, EV_READ | EV_PERSIST, on_inotify, w);
    w->debounce_ev = evtimer_new(base, on_debounce, w);
    if (w->read_ev == NULL || w->debounce_ev == NULL || event_add(w->read_ev, NULL) == -1) {
        snprintf(err, errlen, "watchConfig: cannot register with the event loop");
        goto fail;
    }
    return w;
fail:
    fg_watch_free(w);
    return NULL;
}

void fg_watch_free(fg_watch_t *w)
{
    if (w == NULL)
        return;
    if (w->read_ev)
        event_free(w->read_ev);
    if (w->debounce_ev)
        event_free(w->debounce_ev);
    if (w->fd != -1)
        close(w->fd);
    free_entries(w->entries, w->n);
    free(w->changed);
    free(w);
}

void fg_watch_close_in_child(const fg_watch_t *w)
{
    if (w != NULL)
        close(w->fd);
}
