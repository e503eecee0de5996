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
    char *name; /* the file's name within its directory */
} entry_t;

struct fg_watch_s {
    int fd;
    struct event *read_ev;
    struct event *debounce_ev;
    unsigned debounce_ms;
    entry_t *entries;
    size_t n, cap;
    fg_watch_fn fn;
    void *arg;
};

static void on_debounce(evutil_socket_t fd, short what, void *arg)
{
    fg_watch_t *w = arg;
    w->fn(w->arg);
}

static int matches(const fg_watch_t *w, const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW)
        return 1; /* events were lost: one of them may have been ours */
    for (size_t i = 0; i < w->n; i++)
        if (w->entries[i].wd == ev->wd && ev->len > 0 && strcmp(ev->name, w->entries[i].name) == 0)
            return 1;
    return 0;
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
            hit |= matches(w, ev);
            p += sizeof(*ev) + ev->len;
        }
    }
    if (!hit)
        return;
    /* Every change restarts the wait: the reload reads the file once it has been quiet. */
    struct timeval tv = {(time_t)(w->debounce_ms / 1000),
                         (suseconds_t)(w->debounce_ms % 1000) * 1000};
    evtimer_add(w->debounce_ev, &tv);
}

/* Watch the directory of path, remember the name. Returns 0 or -1 with err. */
static int add_file(fg_watch_t *w, const char *path, char *err, size_t errlen)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL || slash[1] == '\0') {
        snprintf(err, errlen, "watchConfig: %s is not an absolute file path", path);
        return -1;
    }
    char dir[PATH_MAX];
    size_t dlen = slash == path ? 1 : (size_t)(slash - path);
    if (dlen >= sizeof(dir)) {
        snprintf(err, errlen, "watchConfig: %s: path too long", path);
        return -1;
    }
    memcpy(dir, path, dlen);
    dir[dlen] = '\0';
    int wd = inotify_add_watch(w->fd, dir, DIR_EVENTS);
    if (wd == -1) {
        snprintf(err, errlen, "watchConfig: cannot watch %s: %s", dir, strerror(errno));
        return -1;
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 4;
        entry_t *grown = realloc(w->entries, cap * sizeof(*grown));
        if (grown == NULL) {
            snprintf(err, errlen, "watchConfig: out of memory");
            return -1;
        }
        w->entries = grown;
        w->cap = cap;
    }
    entry_t *e = &w->entries[w->n];
    e->wd = wd;
    e->name = strdup(slash + 1);
    if (e->name == NULL) {
        snprintf(err, errlen, "watchConfig: out of memory");
        return -1;
    }
    w->n++;
    return 0;
}

#define MAX_LINKS 40 /* as the kernel's own limit on symlinks in one lookup (ELOOP) */

/* Watch path as named and every symlink met on the way to the file it names, in the final
 * component or in a directory (a ConfigMap's cfg.json -> ..data/cfg.json, ..data -> ..2026_x
 * swapped by rename): replacing any link of the chain changes which file a reload reads. The
 * chain is resolved now; the owner builds a new watch after each reload to follow a swap.
 * A component that does not exist ends the walk: what was found is watched. */
static int add_chain(fg_watch_t *w, const char *path, char *err, size_t errlen)
{
    if (add_file(w, path, err, errlen) < 0)
        return -1;
    char done[PATH_MAX] = "", rest[PATH_MAX], link[PATH_MAX], tmp[PATH_MAX];
    if (snprintf(rest, sizeof(rest), "%s", path) >= (int)sizeof(rest))
        return 0;
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
            return 0;
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
        if (add_file(w, done, err, errlen) < 0)
            return -1;
        /* The target replaces the component: absolute from "/", relative from its directory. */
        if (snprintf(tmp, sizeof(tmp), "%s/%s", link, r) >= (int)sizeof(tmp))
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
        return add_file(w, done, err, errlen);
    return 0;
}

fg_watch_t *fg_watch_new(struct event_base *base, const char *const *files, size_t n,
                         unsigned debounce_ms, fg_watch_fn fn, void *arg, char *err, size_t errlen)
{
    fg_watch_t *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errlen, "watchConfig: out of memory");
        free(w);
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
    for (size_t i = 0; i < n; i++)
        if (add_chain(w, files[i], err, errlen) < 0)
            goto fail;
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
    for (size_t i = 0; i < w->n; i++)
        free(w->entries[i].name);
    free(w->entries);
    free(w);
}

void fg_watch_close_in_child(const fg_watch_t *w)
{
    if (w != NULL)
        close(w->fd);
}
