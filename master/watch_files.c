#include "master/watch_files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Takes ownership of path; a path already listed is dropped. */
static int add_owned(fg_watch_files_t *l, char *path)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->paths[i], path) == 0) {
            free(path);
            return 0;
        }
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        char **p = realloc(l->paths, cap * sizeof(*p));
        if (p == NULL)
            abort(); /* master bookkeeping at reload: the loader aborts the same way */
        l->paths = p;
        l->cap = cap;
    }
    l->paths[l->n++] = path;
    return 1;
}

static int add(fg_watch_files_t *l, const char *path)
{
    if (path == NULL || path[0] == '\0')
        return 0;
    char *copy = strdup(path);
    if (copy == NULL)
        abort();
    return add_owned(l, copy);
}

static void add_pages(fg_watch_files_t *l, const fg_responses_config_t *r)
{
    for (size_t i = 0; i < r->nerror_pages; i++)
        add(l, r->error_pages[i].file);
}

void fg_watch_files_add_config(fg_watch_files_t *l, const char *conf_file, const fg_config_t *cfg)
{
    add(l, conf_file);
    add_pages(l, &cfg->responses);
    for (size_t i = 0; i < cfg->nservers; i++) {
        add_pages(l, &cfg->servers[i].responses);
        if (cfg->servers[i].tls) {
            add(l, cfg->servers[i].tls->client_ca_file);
            add(l, cfg->servers[i].tls->client_crl_file);
        }
    }
    for (size_t i = 0; i < cfg->ncertificates; i++) {
        add(l, cfg->certificates[i].chain);
        add(l, cfg->certificates[i].key);
        if (!cfg->certificates[i].ocsp_update) /* the master writes it, and reloads itself */
            add(l, cfg->certificates[i].ocsp_file);
    }
    for (size_t i = 0; i < cfg->nclusters; i++)
        add(l, cfg->clusters[i].http_client.ca_file);
}

/* ---- names in a file that did not load ---- */

typedef struct {
    fg_watch_files_t *l;
    const char *dir; /* conf_file's directory, with its trailing '/' */
    size_t dlen;
    size_t added;
} named_t;

static void add_name(named_t *c, const json_t *v)
{
    const char *s = json_string_value(v);
    if (s == NULL || s[0] == '\0')
        return;
    size_t slen = strlen(s), dlen = s[0] == '/' ? 0 : c->dlen;
    char *p = malloc(dlen + slen + 1);
    if (p == NULL)
        abort();
    memcpy(p, c->dir, dlen);
    memcpy(p + dlen, s, slen + 1);
    c->added += (size_t)add_owned(c->l, p);
}

/* errorPages: {"404": FILE, "5xx": {"file": FILE} ...} */
static void named_pages(named_t *c, const json_t *obj)
{
    json_t *pages = json_object_get(obj, "errorPages"), *v;
    const char *k;
    json_object_foreach(pages, k, v)
    {
        add_name(c, json_is_object(v) ? json_object_get(v, "file") : v);
    }
}

/* The document in file, comments allowed as the loader allows them; NULL when it is not one. */
static json_t *parse(const char *file)
{
    FILE *f = fopen(file, "re");
    if (f == NULL)
        return NULL;
    char *text = malloc(FG_CONFIG_MAX_FILE_SIZE + 1), *plain = NULL;
    json_t *root = NULL;
    if (text == NULL)
        goto out;
    size_t len = fread(text, 1, FG_CONFIG_MAX_FILE_SIZE + 1, f);
    if (ferror(f) || len > FG_CONFIG_MAX_FILE_SIZE)
        goto out;
    text[len] = '\0';
    int line, col;
    plain = fg_config_strip_comments(text, &line, &col);
    if (plain != NULL)
        root = json_loads(plain, 0, NULL);
out:
    free(plain);
    free(text);
    fclose(f);
    return root;
}

size_t fg_watch_files_add_named(fg_watch_files_t *l, const char *conf_file)
{
    json_t *root = parse(conf_file);
    if (!json_is_object(root)) {
        json_decref(root);
        return 0;
    }
    const char *slash = strrchr(conf_file, '/');
    named_t c = {l, conf_file, slash ? (size_t)(slash - conf_file) + 1 : 0, 0};
    size_t i;
    json_t *v;
    named_pages(&c, root);
    json_array_foreach(json_object_get(root, "servers"), i, v)
    {
        named_pages(&c, v);
        json_t *auth = json_object_get(json_object_get(v, "tls"), "clientAuth");
        add_name(&c, json_object_get(auth, "caFile"));
        add_name(&c, json_object_get(auth, "crlFile"));
    }
    json_array_foreach(json_object_get(root, "certificates"), i, v)
    {
        add_name(&c, json_object_get(v, "chain"));
        add_name(&c, json_object_get(v, "key"));
        if (!json_is_true(json_object_get(v, "ocspUpdate")))
            add_name(&c, json_object_get(v, "ocspFile"));
    }
    json_array_foreach(json_object_get(root, "clusters"), i, v)
    {
        add_name(&c, json_object_get(json_object_get(v, "httpClient"), "caFile"));
    }
    json_decref(root);
    return c.added;
}

void fg_watch_files_free(fg_watch_files_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->paths[i]);
    free(l->paths);
    l->paths = NULL;
    l->n = l->cap = 0;
}
