/* watchConfig: the set of files a configuration reads when it loads (the file itself, errorPages
 * files, certificate chains and keys, httpClient CA files). Static roots are not in it: they are
 * served live, not read at load. */
#ifndef FG_WATCH_FILES_H
#define FG_WATCH_FILES_H

#include <stddef.h>

#include "common/config.h"

typedef struct {
    char **paths; /* absolute, each once */
    size_t n, cap;
} fg_watch_files_t;

/* Add conf_file and every file the loaded cfg read. Aborts on out-of-memory, like the loader. */
void fg_watch_files_add_config(fg_watch_files_t *l, const char *conf_file, const fg_config_t *cfg);
/* Add, best effort, the files conf_file names though it did not load: its JSON is read without
 * validation and the same keys are looked up. Returns how many were added; a file that is not
 * JSON adds none. Relative names are taken against conf_file's directory, as the loader does. */
size_t fg_watch_files_add_named(fg_watch_files_t *l, const char *conf_file);
void fg_watch_files_free(fg_watch_files_t *l);

#endif
