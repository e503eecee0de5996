/* libFuzzer target: static file mapping (worker/handlers/static.c) driven through mock request
 * ops, as tests/unit/test_static.c does. Input: "TARGET\nTRYFILE". The target is normalised as
 * the front end does and served from a root beside a secret file and symbolic links leading
 * out of the root. Whatever the input: nothing outside the root and no hidden file is ever
 * sent, a file is sent only with 200 or 206, and every request is finished exactly once. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/path.h"
#include "common/pool.h"
#include "worker/handlers/static.h"
#include "worker/http/request.h"

#define SECRET "TOPSECRET"

static struct {
    int status, heads, finished, files;
    int leaked;
} cap;

static int leaks(const char *buf, size_t n)
{
    return memmem(buf, n, SECRET, sizeof(SECRET) - 1) != NULL;
}

static int send_head(fg_request_t *req, int status, const fg_headers_t *h, int64_t len)
{
    cap.heads++;
    cap.status = status;
    return 0;
}

static int send_body(fg_request_t *req, struct evbuffer *buf)
{
    size_t n = evbuffer_get_length(buf);
    const char *p = (const char *)evbuffer_pullup(buf, (ssize_t)n);
    /* error bodies quote the request path, which the input chooses: only content counts */
    if (p != NULL && cap.status < 300 && leaks(p, n))
        cap.leaked = 1;
    evbuffer_drain(buf, n);
    return 0;
}

static int send_file(fg_request_t *req, int fd, off_t off, off_t len)
{
    char buf[256];
    ssize_t n = pread(fd, buf, sizeof(buf), 0);
    if (n > 0 && leaks(buf, (size_t)n))
        cap.leaked = 1;
    cap.files++;
    close(fd);
    return 0;
}

static void finish(fg_request_t *req)
{
    cap.finished++;
}

static size_t pending(fg_request_t *req)
{
    return 0;
}

static void pause_body(fg_request_t *req, int pause) {}

static void abort_req(fg_request_t *req)
{
    abort();
}

static const fg_req_ops_t ops = {.send_head = send_head,
                                 .send_body = send_body,
                                 .send_file = send_file,
                                 .finish = finish,
                                 .pending = pending,
                                 .pause_body = pause_body,
                                 .abort = abort_req};

static char root[128];
static char *index_files[] = {"index.html"};

static void put(const char *dir, const char *name, const char *text)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (f == NULL)
        abort();
    fputs(text, f);
    fclose(f);
}

static void setup(void)
{
    static char dir[] = "/tmp/fg_fuzz_static_XXXXXX";
    char p[256];
    if (root[0])
        return;
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(root, sizeof(root), "%s/root", dir);
    if (mkdir(root, 0755) == -1)
        abort();
    put(dir, "outside.txt", SECRET "\n");
    put(root, ".env", SECRET "\n");
    put(root, "hello.txt", "hello\n");
    put(root, "index.html", "<h1>index</h1>\n");
    snprintf(p, sizeof(p), "%s/sub", root);
    mkdir(p, 0755);
    put(p, "a.txt", "a\n");
    snprintf(p, sizeof(p), "%s/link_out", root);
    if (symlink("../outside.txt", p) == -1)
        abort();
    snprintf(p, sizeof(p), "%s/link_dir", root);
    if (symlink("..", p) == -1)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    const uint8_t *nl = memchr(data, '\n', size);
    size_t tlen = nl ? (size_t)(nl - data) : size;
    char *target = strndup((const char *)data, tlen);
    char *tryfile = nl ? strndup((const char *)nl + 1, size - tlen - 1) : NULL;
    char *path = malloc(tlen + 2);
    if (target == NULL || path == NULL || (nl && tryfile == NULL))
        abort();
    size_t plen = strcspn(target, "?");
    long n = fg_path_normalize(target, plen, path);
    if (n > 0 && strncmp(path, "/static", 7) == 0 && (path[7] == '/' || path[7] == '\0')) {
        char *tries[] = {"{path}", tryfile, "=404"};
        fg_route_t route = {0};
        route.id = "files";
        route.kind = FG_ROUTE_STATIC;
        route.match.path = "/static/{**rest}";
        route.static_root = root;
        route.static_index = index_files;
        route.nstatic_index = 1;
        if (tryfile != NULL && (tryfile[0] == '/' || tryfile[0] == '{')) {
            route.static_try_files = tries;
            route.nstatic_try_files = 3;
        }
        fg_pool_t *pool = fg_pool_new(4096);
        fg_request_t req = {0};
        req.pool = pool;
        req.route = &route;
        req.method = FG_STR_LIT("GET");
        req.path = (fg_str_t){path, (size_t)n};
        req.target = fg_str(target);
        req.ops = &ops;
        req.version = 11;
        size_t rest = (size_t)n > 8 ? 8 : (size_t)n;
        req.captures[0] = (fg_capture_t){FG_STR_LIT("rest"), {path + rest, (size_t)n - rest}};
        req.ncaptures = 1;
        memset(&cap, 0, sizeof(cap));
        fg_static_handle(&req);
        if (cap.leaked || cap.finished != 1 || cap.heads != 1)
            abort();
        if (cap.files && cap.status != 200 && cap.status != 206)
            abort();
        fg_pool_free(pool);
    }
    free(path);
    free(target);
    free(tryfile);
    return 0;
}
