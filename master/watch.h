/* watchConfig: inotify on the configuration files, debounced. Each file is watched through its
 * directory and matched by name, so an editor that writes a new file and renames it over the
 * old one (vim, sed -i, configuration management) is seen like an in-place write. */
#ifndef FG_WATCH_H
#define FG_WATCH_H

#include <stddef.h>

struct event_base;

typedef struct fg_watch_s fg_watch_t;
/* file: the first watched file that changed since the last call (the watcher's copy, valid
 * during the call). */
typedef void (*fg_watch_fn)(void *arg, const char *file);

/* A watcher with no files yet: call fn(arg, file) once debounce_ms have passed without a
 * further change to any watched file. Returns NULL with err filled. */
fg_watch_t *fg_watch_new(struct event_base *base, unsigned debounce_ms, fg_watch_fn fn, void *arg,
                         char *err, size_t errlen);
/* Replace the watched set with files[0..n) (absolute paths, copied). A change already seen
 * still fires. A file whose directory cannot be watched is logged and left out. Returns how
 * many files are watched. */
size_t fg_watch_set(fg_watch_t *w, const char *const *files, size_t n);
void fg_watch_free(fg_watch_t *w);
/* In a forked child: close the inotify descriptor, leaving the event base alone. */
void fg_watch_close_in_child(const fg_watch_t *w);

#endif
