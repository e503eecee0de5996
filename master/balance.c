#include "master/balance.h"

#include <errno.h>
#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

struct fg_balance_s {
    int page_fd;  /* BPF_MAP_TYPE_ARRAY, one fg_balance_page_t, BPF_F_MMAPABLE */
    int socks_fd; /* BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, key group * SLOTS + slot */
    fg_balance_page_t *page;
    size_t page_len;
    uint64_t groups_used; /* bit per group id */
};

static long sys_bpf(int cmd, union bpf_attr *attr)
{
    return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

static int map_create(uint32_t type, uint32_t value_size, uint32_t entries, uint32_t flags)
{
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.map_type = type;
    a.key_size = sizeof(uint32_t);
    a.value_size = value_size;
    a.max_entries = entries;
    a.map_flags = flags;
    int fd = (int)sys_bpf(BPF_MAP_CREATE, &a);
    return fd == -1 ? -errno : fd;
}

fg_balance_t *fg_balance_new(char *err, size_t errlen)
{
    fg_balance_t *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->page_fd = map_create(BPF_MAP_TYPE_ARRAY, sizeof(fg_balance_page_t), 1, BPF_F_MMAPABLE);
    if (b->page_fd < 0) {
        snprintf(err, errlen, "bpf(BPF_MAP_CREATE) of the shared page failed (%d: %s)", -b->page_fd,
                 strerror(-b->page_fd));
        goto out_free;
    }
    b->socks_fd = map_create(BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, sizeof(uint64_t),
                             FG_BALANCE_SLOTS * FG_BALANCE_GROUPS, 0);
    if (b->socks_fd < 0) {
        snprintf(err, errlen, "bpf(BPF_MAP_CREATE) of the socket map failed (%d: %s)", -b->socks_fd,
                 strerror(-b->socks_fd));
        goto out_close_page;
    }
    long pg = sysconf(_SC_PAGESIZE);
    b->page_len = ((sizeof(fg_balance_page_t) + (size_t)pg - 1) / (size_t)pg) * (size_t)pg;
    b->page = mmap(NULL, b->page_len, PROT_READ | PROT_WRITE, MAP_SHARED, b->page_fd, 0);
    if (b->page == MAP_FAILED) {
        snprintf(err, errlen, "mmap of the shared page failed (%d: %s)", errno, strerror(errno));
        goto out_close_socks;
    }
    return b;
out_close_socks:
    close(b->socks_fd);
out_close_page:
    close(b->page_fd);
out_free:
    free(b);
    return NULL;
}

void fg_balance_free(fg_balance_t *b)
{
    if (b == NULL)
        return;
    munmap(b->page, b->page_len);
    fg_balance_close_in_child(b);
    free(b);
}

void fg_balance_close_in_child(fg_balance_t *b)
{
    if (b == NULL)
        return;
    if (b->page_fd >= 0)
        close(b->page_fd);
    if (b->socks_fd >= 0)
        close(b->socks_fd);
    b->page_fd = b->socks_fd = -1;
}

fg_balance_page_t *fg_balance_page(fg_balance_t *b)
{
    return b ? b->page : NULL;
}

int fg_balance_group_new(fg_balance_t *b)
{
    for (int g = 0; g < FG_BALANCE_GROUPS; g++) {
        if (!(b->groups_used & (1ull << g))) {
            b->groups_used |= 1ull << g;
            return g;
        }
    }
    return -1;
}

void fg_balance_group_free(fg_balance_t *b, int group)
{
    if (group < 0 || group >= FG_BALANCE_GROUPS)
        return;
    for (int s = 0; s < FG_BALANCE_SLOTS; s++)
        fg_balance_offer(b, group, s, -1);
    b->groups_used &= ~(1ull << group);
}

int fg_balance_offer(fg_balance_t *b, int group, int slot, int fd)
{
    if (group < 0 || group >= FG_BALANCE_GROUPS || slot < 0 || slot >= FG_BALANCE_SLOTS)
        return -EINVAL;
    uint32_t key = (uint32_t)(group * FG_BALANCE_SLOTS + slot);
    uint64_t value = (uint64_t)fd;
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.map_fd = (uint32_t)b->socks_fd;
    a.key = (uint64_t)(uintptr_t)&key;
    if (fd < 0) {
        if (sys_bpf(BPF_MAP_DELETE_ELEM, &a) == -1 && errno != ENOENT)
            return -errno;
        return 0;
    }
    a.value = (uint64_t)(uintptr_t)&value;
    a.flags = BPF_ANY;
    return sys_bpf(BPF_MAP_UPDATE_ELEM, &a) == -1 ? -errno : 0;
}

/* ---- the program ---- */

#define INSN(c, d, s, o, i)                                                                        \
    ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})
#define MOV_R(d, s) INSN(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define MOV_K(d, k) INSN(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, k)
#define ALU_R(op, d, s) INSN(BPF_ALU64 | (op) | BPF_X, d, s, 0, 0)
#define ALU_K(op, d, k) INSN(BPF_ALU64 | (op) | BPF_K, d, 0, 0, k)
#define LDX_W(d, s, o) INSN(BPF_LDX | BPF_MEM | BPF_W, d, s, o, 0)
#define STX_W(d, s, o) INSN(BPF_STX | BPF_MEM | BPF_W, d, s, o, 0)
#define XADD_W(d, s, o) INSN(BPF_STX | BPF_ATOMIC | BPF_W, d, s, o, BPF_ADD)
#define LD_MAP(d, kind, fd) INSN(BPF_LD | BPF_DW | BPF_IMM, d, kind, 0, fd)

enum { R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 };
#define PENDING_OFF ((int)offsetof(fg_balance_page_t, pending))
#define BUSY_OFF ((int)offsetof(fg_balance_page_t, busy))

/* Instructions per slot after the first (the loop of build) and around them: the room
 * fg_balance_attach gives build. */
#define SLOT_INSNS 15
#define FIXED_INSNS 32

/* The program for slots 0..n-1 of group g, into code (room for FIXED_INSNS + SLOT_INSNS * n).
 * r7 points at the shared page, r8 is the slot chosen so far and r9 its load (open + pending +
 * 2 * busy).
 * The choice is branch-free (a sign mask picks the new minimum or keeps the old), so the
 * verifier walks one path whatever n is; ties keep the lower slot. The chosen slot's pending
 * count goes up by one before the socket is selected. Returns the number of instructions. */
static size_t build(struct bpf_insn *code, int g, int n, int page_fd, int socks_fd)
{
    size_t i = 0;
    code[i++] = MOV_R(R6, R1);
    code[i++] = LD_MAP(R7, BPF_PSEUDO_MAP_VALUE, page_fd);
    code[i++] = INSN(0, 0, 0, 0, 0); /* offset 0 into the value */
    code[i++] = MOV_K(R8, 0);
    code[i++] = LDX_W(R9, R7, 0);
    code[i++] = LDX_W(R1, R7, PENDING_OFF);
    code[i++] = ALU_R(BPF_ADD, R9, R1);
    code[i++] = LDX_W(R1, R7, BUSY_OFF);
    code[i++] = ALU_K(BPF_LSH, R1, 1);
    code[i++] = ALU_R(BPF_ADD, R9, R1);
    for (int s = 1; s < n; s++) {
        code[i++] = LDX_W(R1, R7, s * 4);
        code[i++] = LDX_W(R2, R7, PENDING_OFF + s * 4);
        code[i++] = ALU_R(BPF_ADD, R1, R2);
        code[i++] = LDX_W(R2, R7, BUSY_OFF + s * 4);
        code[i++] = ALU_K(BPF_LSH, R2, 1);
        code[i++] = ALU_R(BPF_ADD, R1, R2); /* r1 = load of s */
        code[i++] = ALU_R(BPF_SUB, R1, R9); /* r1 = load - best (both below 2^34) */
        code[i++] = MOV_R(R2, R1);
        code[i++] = ALU_K(BPF_ARSH, R2, 63); /* r2 = -1 when s is lighter, else 0 */
        code[i++] = ALU_R(BPF_AND, R1, R2);
        code[i++] = ALU_R(BPF_ADD, R9, R1); /* best = min(best, load) */
        code[i++] = MOV_K(R3, s);
        code[i++] = ALU_R(BPF_XOR, R3, R8);
        code[i++] = ALU_R(BPF_AND, R3, R2);
        code[i++] = ALU_R(BPF_XOR, R8, R3); /* slot = s when lighter */
    }
    code[i++] = ALU_K(BPF_AND, R8, FG_BALANCE_SLOTS - 1);
    code[i++] = MOV_R(R1, R8);
    code[i++] = ALU_K(BPF_LSH, R1, 2);
    code[i++] = MOV_R(R2, R7);
    code[i++] = ALU_R(BPF_ADD, R2, R1);
    code[i++] = MOV_K(R3, 1);
    code[i++] = XADD_W(R2, R3, PENDING_OFF);
    code[i++] = ALU_K(BPF_ADD, R8, g * FG_BALANCE_SLOTS);
    code[i++] = STX_W(R10, R8, -4);
    code[i++] = MOV_R(R1, R6);
    code[i++] = LD_MAP(R2, BPF_PSEUDO_MAP_FD, socks_fd);
    code[i++] = INSN(0, 0, 0, 0, 0);
    code[i++] = MOV_R(R3, R10);
    code[i++] = ALU_K(BPF_ADD, R3, -4);
    code[i++] = MOV_K(R4, 0);
    code[i++] = INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_select_reuseport);
    /* SK_PASS whatever the helper said: an empty slot leaves the choice to the hash. */
    code[i++] = MOV_K(R0, SK_PASS);
    code[i++] = INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    return i;
}

int fg_balance_attach(fg_balance_t *b, int group, int nslots, int fd, char *err, size_t errlen)
{
    if (group < 0 || group >= FG_BALANCE_GROUPS || nslots < 1 || nslots > FG_BALANCE_SLOTS)
        return -EINVAL;
    size_t cap = FIXED_INSNS + SLOT_INSNS * (size_t)nslots;
    struct bpf_insn *code = calloc(cap, sizeof(*code));
    if (code == NULL)
        return -ENOMEM;
    size_t n = build(code, group, nslots, b->page_fd, b->socks_fd);
    if (n > cap) /* build wrote past the buffer: SLOT_INSNS or FIXED_INSNS is out of date */
        abort();
    char log[4096] = "";
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.prog_type = BPF_PROG_TYPE_SK_REUSEPORT;
    a.insns = (uint64_t)(uintptr_t)code;
    a.insn_cnt = (uint32_t)n;
    a.license = (uint64_t)(uintptr_t) "none"; /* no GPL-only helper is called */
    int prog = (int)sys_bpf(BPF_PROG_LOAD, &a);
    int e = errno;
    if (prog == -1 && e != EPERM) {
        /* again with the verifier's log, for the reason (the tail of the log) */
        a.log_buf = (uint64_t)(uintptr_t)log;
        a.log_size = sizeof(log);
        a.log_level = 1;
        prog = (int)sys_bpf(BPF_PROG_LOAD, &a);
        e = errno;
    }
    free(code);
    if (prog == -1) {
        /* the verifier's last line says why */
        size_t len = strlen(log);
        while (len > 0 && log[len - 1] == '\n')
            log[--len] = '\0';
        const char *last = strrchr(log, '\n');
        snprintf(err, errlen, "bpf(BPF_PROG_LOAD) failed (%d: %s)%s%s", e, strerror(e),
                 len ? ": " : "", last ? last + 1 : log);
        return -e;
    }
    int rc = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog, sizeof(prog)) == -1) {
        rc = -errno;
        snprintf(err, errlen, "setsockopt(SO_ATTACH_REUSEPORT_EBPF) failed (%d: %s)", errno,
                 strerror(errno));
    }
    close(prog); /* the group holds it */
    return rc;
}
