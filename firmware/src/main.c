/* hwlat reference firmware: the board side of firmware/PROTOCOL.md.
 *
 * One command per line in, one reply per line out. The host loads an op configuration (OP), streams
 * its tensors (DATA), checks them (CRC), runs the kernel W + N times while the port's counter
 * brackets each timed call (RUN), and can read any tensor back (READ).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "port.h"

#ifndef ARENA_BYTES
#define ARENA_BYTES (256u * 1024u)
#endif
#ifndef FW_GIT
#define FW_GIT "unknown"
#endif
#ifndef FW_CFLAGS
#define FW_CFLAGS "unknown"
#endif

#define PROTO_VERSION 1
#define FW_VERSION "0.1"
#define LINE_MAX 512        /* bytes per line, newline included */
#define CHUNK_MAX 224       /* payload bytes per DATA/READ line */
#define MAX_ARGS 48
#define MAX_RUNS 100000u

static const char KERNELS[] = "conv2d,dwconv2d,pwconv2d,linear,avgpool,maxpool,add,relu,mean,bn,mul";

/* ---- output ------------------------------------------------------------------------------- */
static char out_buf[LINE_MAX + 64];
static uint32_t out_len;

static void out_str(const char *s)
{
    while (*s && out_len < sizeof(out_buf) - 1) out_buf[out_len++] = *s++;
}

static void out_u32(uint32_t v)
{
    char tmp[11];
    int i = 0;
    do {
        tmp[i++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    while (i > 0 && out_len < sizeof(out_buf) - 1) out_buf[out_len++] = tmp[--i];
}

static void out_i32(int32_t v)
{
    if (v < 0) {
        out_str("-");
        out_u32(0u - (uint32_t)v);
    } else {
        out_u32((uint32_t)v);
    }
}

static const char HEX[] = "0123456789abcdef";

static void out_hex32(uint32_t v)
{
    for (int s = 28; s >= 0; s -= 4) out_buf[out_len++] = HEX[(v >> s) & 0xFu];
}

/* a value with spaces (the compiler's version string) as one token */
static void out_token(const char *s)
{
    for (; *s && out_len < sizeof(out_buf) - 1; ++s) out_buf[out_len++] = *s == ' ' ? '_' : *s;
}

static void out_end(void)
{
    out_buf[out_len++] = '\n';
    board_uart_write(out_buf, out_len);
    out_len = 0;
}

static void reply_err(const char *code, const char *msg)
{
    out_len = 0;
    out_str("ERR ");
    out_str(code);
    out_str(" ");
    out_str(msg);
    out_end();
}

/* ---- parsing ------------------------------------------------------------------------------ */
static int parse_i32(const char *s, int32_t *value)
{
    int neg = 0;
    int64_t v = 0;
    if (*s == '-') {
        neg = 1;
        ++s;
    }
    if (!*s) return -1;
    for (; *s; ++s) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
        if (v > 0x80000000LL) return -1;
    }
    if (neg) v = -v;
    if (v > INT32_MAX || v < INT32_MIN) return -1;
    *value = (int32_t)v;
    return 0;
}

static int hex_nibble(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static uint32_t crc32_update(uint32_t crc, const uint8_t *data, size_t len)
{
    /* zlib's CRC-32 (reflected 0xEDB88320), a nibble at a time from a 16-entry table. */
    static const uint32_t table[16] = {
        0x00000000u, 0x1db71064u, 0x3b6e20c8u, 0x26d930acu, 0x76dc4190u, 0x6b6b51f4u, 0x4db26158u, 0x5005713cu,
        0xedb88320u, 0xf00f9344u, 0xd6d6a3e8u, 0xcb61b38cu, 0x9b64c2b0u, 0x86d3d2d4u, 0xa00ae278u, 0xbdbdf21cu,
    };
    crc = ~crc;
    for (size_t i = 0; i < len; ++i) {
        crc ^= data[i];
        crc = (crc >> 4) ^ table[crc & 0xFu];
        crc = (crc >> 4) ^ table[crc & 0xFu];
    }
    return ~crc;
}

/* ---- the loaded op ------------------------------------------------------------------------ */
typedef struct {
    const char *name;
    uint8_t *data;
    uint32_t size;
} tensor;

enum { T_X, T_X2, T_W, T_B, T_M, T_S, T_Y, T_COUNT };
static const char *const TENSOR_NAMES[T_COUNT] = {"x", "x2", "w", "b", "m", "s", "y"};

static uint8_t arena[ARENA_BYTES] __attribute__((aligned(8)));

static struct {
    int loaded;
    kernel_fn fn;
    op_params p;
    op_tensors t;
    tensor tensors[T_COUNT];
    uint32_t arena_used;
} op;

static tensor *find_tensor(const char *name)
{
    for (int i = 0; i < T_COUNT; ++i) {
        if (op.tensors[i].size && strcmp(op.tensors[i].name, name) == 0) return &op.tensors[i];
    }
    return NULL;
}

/* key=value arguments of OP; unknown keys are an error so host bugs surface. */
typedef struct {
    const char *key;
    int32_t *dst;
    int32_t deflt;
    int required;
} kv_spec;

static int parse_kv(int argc, char **argv, const kv_spec *specs, int nspecs, char *err, size_t errlen)
{
    for (int i = 0; i < nspecs; ++i) *specs[i].dst = specs[i].deflt;
    uint64_t seen = 0;
    for (int a = 0; a < argc; ++a) {
        char *eq = strchr(argv[a], '=');
        if (!eq) {
            strncpy(err, "expected key=value, got ", errlen - 1);
            strncat(err, argv[a], errlen - strlen(err) - 1);
            return -1;
        }
        *eq = '\0';
        int found = -1;
        for (int i = 0; i < nspecs; ++i) {
            if (strcmp(specs[i].key, argv[a]) == 0) found = i;
        }
        if (found < 0) {
            strncpy(err, "unknown key ", errlen - 1);
            strncat(err, argv[a], errlen - strlen(err) - 1);
            return -1;
        }
        if (parse_i32(eq + 1, specs[found].dst) != 0) {
            strncpy(err, "not an integer: ", errlen - 1);
            strncat(err, argv[a], errlen - strlen(err) - 1);
            return -1;
        }
        seen |= 1ull << found;
    }
    for (int i = 0; i < nspecs; ++i) {
        if (specs[i].required && !(seen & (1ull << i))) {
            strncpy(err, "missing key ", errlen - 1);
            strncat(err, specs[i].key, errlen - strlen(err) - 1);
            return -1;
        }
    }
    return 0;
}

static uint32_t align8(uint32_t v) { return (v + 7u) & ~7u; }

static int cmd_op(int argc, char **argv)
{
    static op_params p;
    int32_t bias = 1, dm = 1, k = 0;
    const char *kind = argc > 1 ? argv[1] : "";
    kv_spec specs[] = {
        {"n", &p.n, 1, 0}, {"h", &p.h, 1, 0}, {"w", &p.w, 1, 0}, {"c", &p.c, 0, 1},
        {"oh", &p.oh, 0, 0}, {"ow", &p.ow, 0, 0}, {"oc", &p.oc, 0, 0},
        {"kh", &p.kh, 1, 0}, {"kw", &p.kw, 1, 0}, {"sh", &p.sh, 1, 0}, {"sw", &p.sw, 1, 0},
        {"ph", &p.ph, 0, 0}, {"pw", &p.pw, 0, 0}, {"dh", &p.dh, 1, 0}, {"dw", &p.dw, 1, 0},
        {"groups", &p.groups, 1, 0}, {"dm", &dm, 1, 0}, {"bias", &bias, 1, 0}, {"k", &k, 0, 0},
        {"zi", &p.in_offset, 0, 0}, {"zw", &p.w_offset, 0, 0}, {"zo", &p.out_offset, 0, 0},
        {"zi2", &p.in2_offset, 0, 0}, {"amin", &p.act_min, -128, 0}, {"amax", &p.act_max, 127, 0},
        {"ls", &p.left_shift, 20, 0}, {"m1", &p.m1, 0, 0}, {"s1", &p.s1, 0, 0},
        {"m2", &p.m2, 0, 0}, {"s2", &p.s2, 0, 0}, {"mo", &p.mo, 0, 0}, {"so", &p.so, 0, 0},
        {"zt", &p.mid_offset, 0, 0},
    };
    char err[96] = {0};
    op.loaded = 0;
    if (parse_kv(argc - 2, argv + 2, specs, (int)(sizeof(specs) / sizeof(specs[0])), err, sizeof(err)) != 0) {
        reply_err("SYNTAX", err);
        return -1;
    }
    /* zero points arrive as zero points; kernels want offsets */
    p.in_offset = -p.in_offset;
    p.w_offset = -p.w_offset;
    p.in2_offset = -p.in2_offset;
    if (k > 0) { p.kh = k; p.kw = k; }

    int has_w = 0, has_x2 = 0, requant = 0;
    kernel_fn fn = NULL;
    if (strcmp(kind, "conv2d") == 0) {
        fn = conv2d_s8; has_w = 1; requant = 1;
    } else if (strcmp(kind, "dwconv2d") == 0) {
        fn = dwconv2d_s8; has_w = 1; requant = 1;
        if (p.oc == 0) p.oc = p.c * dm;
    } else if (strcmp(kind, "pwconv2d") == 0) {
        fn = pwconv2d_s8; has_w = 1; requant = 1;
        p.kh = p.kw = 1; p.ph = p.pw = 0;
    } else if (strcmp(kind, "linear") == 0) {
        fn = linear_s8; has_w = 1; requant = 1;
        p.h = p.w = p.kh = p.kw = 1; p.ph = p.pw = 0;
    } else if (strcmp(kind, "avgpool") == 0 || strcmp(kind, "maxpool") == 0) {
        fn = kind[0] == 'a' ? avgpool_s8 : maxpool_s8;
        p.oc = p.c;
    } else if (strcmp(kind, "relu") == 0) {
        fn = relu_s8;
        p.oc = p.c; p.oh = p.h; p.ow = p.w;
    } else if (strcmp(kind, "mean") == 0) {
        fn = mean_s8;
        p.oc = p.c; p.oh = 1; p.ow = 1;
    } else if (strcmp(kind, "bn") == 0) {
        fn = bn_s8; has_w = 1; requant = 1;
        p.oc = p.c; p.oh = p.h; p.ow = p.w; p.kh = p.kw = 1; p.ph = p.pw = 0; p.groups = p.c;
        if (p.left_shift < 0 || p.left_shift > 30) {
            reply_err("RANGE", "ls must be in 0..30");
            return -1;
        }
    } else if (strcmp(kind, "mul") == 0) {
        fn = mul_s8; has_w = 1; requant = 1; bias = 0;
        p.oc = p.c; p.oh = p.h; p.ow = p.w; p.kh = p.kw = 1; p.ph = p.pw = 0; p.groups = p.c;
    } else if (strcmp(kind, "add") == 0) {
        fn = add_s8; has_x2 = 1;
        p.oc = p.c; p.oh = p.h; p.ow = p.w;
        if (p.left_shift < 0 || p.left_shift > 30) {
            reply_err("RANGE", "ls must be in 0..30");
            return -1;
        }
    } else {
        out_len = 0;
        out_str("ERR UNSUPPORTED kernel ");
        out_str(kind);
        out_str(" (this firmware runs ");
        out_str(KERNELS);
        out_str(")");
        out_end();
        return -1;
    }
    if (p.oc == 0) {
        reply_err("SYNTAX", "missing key oc");
        return -1;
    }
    if (p.n < 1 || p.h < 1 || p.w < 1 || p.c < 1 || p.oc < 1 || p.kh < 1 || p.kw < 1 || p.sh < 1 || p.sw < 1 ||
        p.dh < 1 || p.dw < 1 || p.groups < 1 || p.ph < 0 || p.pw < 0 || dm < 1) {
        reply_err("RANGE", "sizes, strides and dilations must be >= 1, padding >= 0");
        return -1;
    }
    if (p.c % p.groups || p.oc % p.groups || (fn == dwconv2d_s8 && p.oc % p.c)) {
        reply_err("RANGE", "groups must divide c and oc (depthwise: c must divide oc)");
        return -1;
    }
    if (p.act_min < -128 || p.act_max > 127 || p.act_min > p.act_max) {
        reply_err("RANGE", "need -128 <= amin <= amax <= 127");
        return -1;
    }
    if (p.oh == 0) p.oh = (p.h + 2 * p.ph - p.dh * (p.kh - 1) - 1) / p.sh + 1;
    if (p.ow == 0) p.ow = (p.w + 2 * p.pw - p.dw * (p.kw - 1) - 1) / p.sw + 1;
    if (p.oh < 1 || p.ow < 1) {
        reply_err("RANGE", "empty output; check kernel, stride and padding");
        return -1;
    }
    if (fn == pwconv2d_s8 && ((p.oh - 1) * p.sh >= p.h || (p.ow - 1) * p.sw >= p.w)) {
        reply_err("RANGE", "pointwise output larger than its input allows");
        return -1;
    }

    /* sizes in bytes, in 64 bits so that absurd shapes are refused instead of wrapping */
    uint64_t sizes[T_COUNT] = {0};
    sizes[T_X] = (uint64_t)p.n * p.h * p.w * p.c;
    sizes[T_X2] = has_x2 ? sizes[T_X] : 0;
    if (has_w) {
        if (fn == dwconv2d_s8) sizes[T_W] = (uint64_t)p.kh * p.kw * p.oc;
        else sizes[T_W] = (uint64_t)p.oc * p.kh * p.kw * (p.c / p.groups);
    }
    sizes[T_B] = (requant && bias) ? 4ull * p.oc : 0;
    sizes[T_M] = requant ? 4ull * p.oc : 0;
    sizes[T_S] = requant ? 4ull * p.oc : 0;
    sizes[T_Y] = (uint64_t)p.n * p.oh * p.ow * p.oc;
    uint64_t need = 0;
    for (int i = 0; i < T_COUNT; ++i) need += (sizes[i] + 7u) & ~7ull;
    if (need > ARENA_BYTES) {
        out_len = 0;
        out_str("ERR ARENA need=");
        out_u32(need > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)need);
        out_str(" have=");
        out_u32(ARENA_BYTES);
        out_str(" op ");
        out_str(kind);
        out_str(" does not fit the tensor arena");
        out_end();
        return -1;
    }
    memset(arena, 0, (size_t)need);
    uint32_t used = 0;
    for (int i = 0; i < T_COUNT; ++i) {
        op.tensors[i].name = TENSOR_NAMES[i];
        op.tensors[i].size = (uint32_t)sizes[i];
        op.tensors[i].data = sizes[i] ? arena + used : NULL;
        used += align8((uint32_t)sizes[i]);
    }
    op.p = p;
    op.fn = fn;
    op.t.x = (const int8_t *)op.tensors[T_X].data;
    op.t.x2 = (const int8_t *)op.tensors[T_X2].data;
    op.t.w = (const int8_t *)op.tensors[T_W].data;
    op.t.bias = (const int32_t *)op.tensors[T_B].data;
    op.t.mult = (const int32_t *)op.tensors[T_M].data;
    op.t.shift = (const int32_t *)op.tensors[T_S].data;
    op.t.y = (int8_t *)op.tensors[T_Y].data;
    op.arena_used = used;
    op.loaded = 1;

    out_len = 0;
    out_str("OK OP ");
    out_str(kind);
    out_str(" arena=");
    out_u32(used);
    out_str(" out=");
    out_i32(p.n); out_str("x"); out_i32(p.oh); out_str("x"); out_i32(p.ow); out_str("x"); out_i32(p.oc);
    out_str(" tensors=");
    int first = 1;
    for (int i = 0; i < T_COUNT; ++i) {
        if (!op.tensors[i].size) continue;
        if (!first) out_str(",");
        first = 0;
        out_str(op.tensors[i].name);
        out_str(":");
        out_u32(op.tensors[i].size);
    }
    out_end();
    return 0;
}

static tensor *tensor_arg(int argc, char **argv)
{
    if (!op.loaded) {
        reply_err("NOOP", "no op loaded; send OP first");
        return NULL;
    }
    if (argc < 2) {
        reply_err("SYNTAX", "missing tensor name");
        return NULL;
    }
    tensor *t = find_tensor(argv[1]);
    if (!t) {
        reply_err("SYNTAX", "no such tensor in the loaded op");
        return NULL;
    }
    return t;
}

static void cmd_data(int argc, char **argv)
{
    tensor *t = tensor_arg(argc, argv);
    int32_t offset;
    if (!t) return;
    if (argc != 4 || parse_i32(argv[2], &offset) != 0 || offset < 0) {
        reply_err("SYNTAX", "usage: DATA <tensor> <offset> <hex>");
        return;
    }
    size_t nhex = strlen(argv[3]);
    if (nhex % 2 || nhex / 2 > CHUNK_MAX) {
        reply_err("SYNTAX", "payload must be an even number of hex digits, at most 448");
        return;
    }
    if ((uint32_t)offset + nhex / 2 > t->size) {
        reply_err("RANGE", "data past the end of the tensor");
        return;
    }
    for (size_t i = 0; i < nhex / 2; ++i) {
        int hi = hex_nibble(argv[3][2 * i]), lo = hex_nibble(argv[3][2 * i + 1]);
        if (hi < 0 || lo < 0) {
            reply_err("SYNTAX", "payload is not hex");
            return;
        }
        t->data[offset + i] = (uint8_t)(hi << 4 | lo);
    }
    out_str("OK DATA ");
    out_str(t->name);
    out_str(" ");
    out_u32((uint32_t)offset + (uint32_t)(nhex / 2));
    out_end();
}

/* FILL <tensor> <seed> <lo> <hi>: int8 values uniform in [lo, hi] from xorshift32, so big tensors
 * need not cross a slow serial line. The host generates the same numbers (PROTOCOL.md). */
static void cmd_fill(int argc, char **argv)
{
    tensor *t = tensor_arg(argc, argv);
    int32_t seed, lo, hi;
    if (!t) return;
    if (argc != 5 || parse_i32(argv[2], &seed) != 0 || parse_i32(argv[3], &lo) != 0 || parse_i32(argv[4], &hi) != 0) {
        reply_err("SYNTAX", "usage: FILL <tensor> <seed> <lo> <hi>");
        return;
    }
    if (seed == 0 || lo < -128 || hi > 127 || lo > hi) {
        reply_err("RANGE", "FILL needs a non-zero seed and -128 <= lo <= hi <= 127");
        return;
    }
    uint32_t state = (uint32_t)seed;
    const uint64_t span = (uint64_t)(hi - lo + 1);
    for (uint32_t i = 0; i < t->size; ++i) {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        t->data[i] = (uint8_t)(int8_t)(lo + (int32_t)(((uint64_t)state * span) >> 32));
    }
    out_str("OK FILL ");
    out_str(t->name);
    out_str(" ");
    out_hex32(crc32_update(0, t->data, t->size));
    out_end();
}

static void cmd_crc(int argc, char **argv)
{
    tensor *t = tensor_arg(argc, argv);
    if (!t) return;
    out_str("OK CRC ");
    out_str(t->name);
    out_str(" ");
    out_hex32(crc32_update(0, t->data, t->size));
    out_str(" ");
    out_u32(t->size);
    out_end();
}

static void cmd_read(int argc, char **argv)
{
    tensor *t = tensor_arg(argc, argv);
    int32_t offset, len;
    if (!t) return;
    if (argc != 4 || parse_i32(argv[2], &offset) != 0 || parse_i32(argv[3], &len) != 0 || offset < 0 || len < 0) {
        reply_err("SYNTAX", "usage: READ <tensor> <offset> <len>");
        return;
    }
    if (len > CHUNK_MAX || (uint32_t)offset + (uint32_t)len > t->size) {
        reply_err("RANGE", "READ past the end of the tensor or over 224 bytes");
        return;
    }
    out_str("OK READ ");
    out_str(t->name);
    out_str(" ");
    out_u32((uint32_t)offset);
    out_str(" ");
    for (int32_t i = 0; i < len; ++i) {
        out_buf[out_len++] = HEX[t->data[offset + i] >> 4];
        out_buf[out_len++] = HEX[t->data[offset + i] & 0xF];
    }
    out_end();
}

static void cmd_run(int argc, char **argv)
{
    int32_t n, warmup = 0;
    if (!op.loaded) {
        reply_err("NOOP", "no op loaded; send OP first");
        return;
    }
    if (argc < 2 || argc > 3 || parse_i32(argv[1], &n) != 0 || (argc == 3 && parse_i32(argv[2], &warmup) != 0) ||
        n < 1 || warmup < 0 || (uint32_t)n > MAX_RUNS || (uint32_t)warmup > MAX_RUNS) {
        reply_err("SYNTAX", "usage: RUN <n 1..100000> [warmup 0..100000]");
        return;
    }
    for (int32_t i = 0; i < warmup; ++i) op.fn(&op.p, &op.t);
    for (int32_t i = 0; i < n; ++i) {
        counter_start();
        op.fn(&op.p, &op.t);
        uint32_t count = counter_stop();
        out_str("T ");
        out_u32(count);
        out_end();
    }
    out_str("OK RUN n=");
    out_i32(n);
    out_str(" crc=");
    out_hex32(crc32_update(0, op.tensors[T_Y].data, op.tensors[T_Y].size));
    out_end();
}

static uint32_t counter_overhead(void)
{
    /* The count of an empty bracket: what every sample carries on top of the kernel. */
    uint32_t best = 0xFFFFFFFFu;
    for (int i = 0; i < 5; ++i) {
        counter_start();
        uint32_t c = counter_stop();
        if (c < best) best = c;
    }
    return best;
}

static void cmd_id(void)
{
    out_str("OK ID proto=");
    out_u32(PROTO_VERSION);
    out_str(" fw=hwlat-ref/" FW_VERSION " git=" FW_GIT " board=");
    out_str(board_name());
    out_str(" core=");
    out_str(board_core());
    out_end();
}

static void cmd_describe(int counter_status)
{
    out_str("OK DESCRIBE board=");
    out_str(board_name());
    out_str(" core=");
    out_str(board_core());
    out_str(" clock_hz=");
    out_u32(board_clock_hz());
    out_str(" counter=");
    out_str(counter_name());
    out_str(" unit=");
    out_str(counter_unit());
    out_str(" resolution=");
    out_u32(counter_resolution());
    out_str(" overhead=");
    out_u32(counter_status == 0 ? counter_overhead() : 0);
    out_str(" counter_ok=");
    out_u32(counter_status == 0 ? 1u : 0u);
    out_str(" arena=");
    out_u32(ARENA_BYTES);
    out_str(" line=");
    out_u32(LINE_MAX);
    out_str(" chunk=");
    out_u32(CHUNK_MAX);
    out_str(" kernels=");
    out_str(KERNELS);
    out_str(" gcc=");
    out_token(__VERSION__);
    out_end();
}

static void handle_line(char *line, int counter_status)
{
    char *argv[MAX_ARGS];
    int argc = 0;
    for (char *tok = strtok(line, " \t"); tok; tok = strtok(NULL, " \t")) {
        if (argc == MAX_ARGS) {
            reply_err("SYNTAX", "too many arguments");
            return;
        }
        argv[argc++] = tok;
    }
    if (argc == 0) return;  /* blank lines are ignored: a host may send one to flush a partial line */
    out_len = 0;
    const char *cmd = argv[0];
    if (strcmp(cmd, "ID") == 0) {
        cmd_id();
    } else if (strcmp(cmd, "DESCRIBE") == 0) {
        cmd_describe(counter_status);
    } else if (strcmp(cmd, "BUILD") == 0) {
        out_str("OK BUILD " FW_CFLAGS);  /* free text to the end of the line */
        out_end();
    } else if (strcmp(cmd, "SYNC") == 0) {
        out_str("OK SYNC");
        if (argc > 1) {
            out_str(" ");
            out_str(argv[1]);
        }
        out_end();
    } else if (strcmp(cmd, "OP") == 0) {
        if (argc < 2) reply_err("SYNTAX", "usage: OP <kernel> key=value ...");
        else cmd_op(argc, argv);
    } else if (strcmp(cmd, "DATA") == 0) {
        cmd_data(argc, argv);
    } else if (strcmp(cmd, "FILL") == 0) {
        cmd_fill(argc, argv);
    } else if (strcmp(cmd, "CRC") == 0) {
        cmd_crc(argc, argv);
    } else if (strcmp(cmd, "READ") == 0) {
        cmd_read(argc, argv);
    } else if (strcmp(cmd, "RUN") == 0) {
        if (counter_status != 0) reply_err("COUNTER", "the cycle counter does not run on this core; see PROTOCOL.md");
        else cmd_run(argc, argv);
    } else if (strcmp(cmd, "FREE") == 0) {
        op.loaded = 0;
        out_str("OK FREE");
        out_end();
    } else if (strcmp(cmd, "RESET") == 0) {
        out_str("OK RESET");
        out_end();
        board_reset();
    } else {
        reply_err("UNKNOWN", "command; known: ID DESCRIBE BUILD SYNC OP DATA FILL CRC READ RUN FREE RESET");
    }
}

int main(void)
{
    static char line[LINE_MAX];
    uint32_t len = 0;
    int overflow = 0;

    board_init();
    int counter_status = counter_init();
    /* The leading newline ends whatever partial line the host saw before the reset. */
    out_len = 0;
    out_str("\nREADY hwlat-fw proto=");
    out_u32(PROTO_VERSION);
    out_str(" board=");
    out_str(board_name());
    out_end();

    for (;;) {
        int c = board_uart_read();
        if (c < 0) {
            board_wait();
            continue;
        }
        if (c == '\r') continue;
        if (c != '\n') {
            if (len < LINE_MAX - 1) line[len++] = (char)c;
            else overflow = 1;
            continue;
        }
        line[len] = '\0';
        if (overflow) {
            reply_err("LINE", "line too long (max 511 bytes before the newline)");
        } else {
            handle_line(line, counter_status);
        }
        len = 0;
        overflow = 0;
    }
}
