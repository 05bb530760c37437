/*
 * orcd request router and handlers.
 *
 * Store layout (per job J, ids zero-padded to 20 digits so keys sort by id):
 *   /jobs/J/meta/ids            node id counter: its version is the last id
 *   /jobs/J/nodes/ID            node record {host, pid, labels, ttl}; lease
 *   /jobs/J/nodes/ID/ep         endpoint record (opaque JSON object); lease
 *   /jobs/J/mbox/ID/seq         mailbox counter: version - 1 = last seq; lease
 *   /jobs/J/mbox/ID/m/SEQ       queued message {from, body}; lease
 *   /jobs/J/gone/ID             node deleted explicitly (404, not 410)
 *   /jobs/J/kv/KEY              kv value (JSON text); optional node lease
 * Every node owns one lease; everything it published is attached to it, so
 * expiry or DELETE removes it all in one revision and watchers see it.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ORCD_KEY_MAX        512
#define ORCD_STATUS_SLOTS   16
#define ORCD_LATENCY_SLOTS  15
#define ORCD_TXN_RETRIES    64
#define ORCD_MAX_SEGMENTS   16
#define ORCD_JSON_DEPTH_MAX 32

/*
 * Request statistics shared by all HTTP threads: atomics updated with relaxed
 * ordering (counters only; nothing synchronises on them).
 */
typedef struct orcd_metrics {
    _Atomic uint64_t requests[ORCD_ROUTE_LAST][ORCD_STATUS_SLOTS];
    _Atomic uint64_t latency[ORCD_ROUTE_LAST][ORCD_LATENCY_SLOTS];
    _Atomic uint64_t latency_sum_us[ORCD_ROUTE_LAST];
    _Atomic int64_t  connections;
    _Atomic int64_t  long_polls;
    _Atomic uint64_t long_polls_rejected;
} orcd_metrics_t;

/*
 * cfg is swapped by orcd_api_set_config() under the write lock; every request
 * holds the read lock while it runs, so a configuration is freed only when
 * nothing uses it. metrics: atomics (see orcd_metrics_t).
 */
struct orcd_api {
    pthread_rwlock_t  cfg_lock;
    orcd_config_t    *cfg;
    orc_store_t      *store;
    orcd_metrics_t    metrics;
};

static const unsigned orcd_status_slots[ORCD_STATUS_SLOTS - 1] = {
    200, 201, 204, 400, 401, 403, 404, 405, 409, 410, 413, 429, 500, 503, 0
};

static const double orcd_latency_bounds[ORCD_LATENCY_SLOTS - 1] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1, 5, 30
};

const char *orcd_route_name(orcd_route_t route)
{
    static const char *names[ORCD_ROUTE_LAST] = {
        "unknown", "healthz", "metrics", "nodes", "node", "keepalive",
        "endpoint", "mailbox", "kv"
    };

    return ((unsigned)route < ORCD_ROUTE_LAST) ? names[route] : "unknown";
}

/* --------------------------------------------------------------- responses */

void orcd_api_response_free(orcd_response_t *resp)
{
    free(resp->body);
    free(resp->watch_key);
    free(resp->watch_end);
    resp->body      = NULL;
    resp->watch_key = NULL;
    resp->watch_end = NULL;
    resp->block     = 0;
}

static void orcd_resp_set_body(orcd_response_t *resp, unsigned status,
                               char *body, size_t len)
{
    free(resp->body);
    resp->status       = status;
    resp->body         = body;
    resp->body_len     = len;
    resp->content_type = "application/json";
}

void orcd_api_error(orcd_response_t *resp, unsigned status, const char *code,
                    const char *fmt, ...)
{
    char detail[512];
    json_t *o;
    char *s;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    o = json_pack("{ssss}", "error", code, "detail", detail);
    s = (o != NULL) ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s == NULL) {
        s = strdup("{\"error\":\"internal\",\"detail\":\"out of memory\"}");
    }
    orcd_resp_set_body(resp, status, s, (s != NULL) ? strlen(s) : 0);
    /* a final error never blocks */
    free(resp->watch_key);
    free(resp->watch_end);
    resp->watch_key = NULL;
    resp->watch_end = NULL;
    resp->block     = 0;
}

/* Steals o. */
static void orcd_resp_json(orcd_response_t *resp, unsigned status, json_t *o)
{
    char *s = (o != NULL) ? json_dumps(o, JSON_COMPACT) : NULL;

    json_decref(o);
    if (s == NULL) {
        orcd_api_error(resp, 500, "internal", "out of memory");
        return;
    }
    orcd_resp_set_body(resp, status, s, strlen(s));
}

static void orcd_resp_empty(orcd_response_t *resp, unsigned status)
{
    orcd_resp_set_body(resp, status, NULL, 0);
    resp->content_type = NULL;
}

static void orcd_resp_store_error(orcd_response_t *resp, int status)
{
    orcd_api_error(resp, 500, "internal", "store: %s",
                   orc_store_status_str(status));
}

static int orcd_resp_block(orcd_response_t *resp, const char *key,
                           const char *range_end, uint64_t start_rev,
                           double wait)
{
    resp->watch_key = strdup(key);
    resp->watch_end = (range_end != NULL) ? strdup(range_end) : NULL;
    if ((resp->watch_key == NULL) ||
        ((range_end != NULL) && (resp->watch_end == NULL))) {
        orcd_api_error(resp, 500, "internal", "out of memory");
        return -1;
    }
    resp->watch_rev = start_rev;
    resp->wait      = wait;
    resp->block     = 1;
    return 0;
}

/* ---------------------------------------------------------------- metrics */

void orcd_api_record(orcd_api_t *api, orcd_route_t route, unsigned status,
                     double seconds)
{
    orcd_metrics_t *m = &api->metrics;
    size_t s, l;

    if ((unsigned)route >= ORCD_ROUTE_LAST) {
        route = ORCD_ROUTE_UNKNOWN;
    }
    for (s = 0; s < ORCD_STATUS_SLOTS - 1; ++s) {
        if (orcd_status_slots[s] == status) {
            break;
        }
    }
    for (l = 0; l < ORCD_LATENCY_SLOTS - 1; ++l) {
        if (seconds <= orcd_latency_bounds[l]) {
            break;
        }
    }
    atomic_fetch_add_explicit(&m->requests[route][s], 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency[route][l], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_us[route],
                              (uint64_t)(seconds * 1e6), memory_order_relaxed);
}

typedef struct orcd_buf {
    char   *data;
    size_t  len;
    size_t  cap;
    int     failed;
} orcd_buf_t;

static void orcd_buf_printf(orcd_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void orcd_buf_printf(orcd_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    size_t need;
    char *p;
    int n;

    if (b->failed) {
        return;
    }
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        need = b->cap * 2 + (size_t)n + 1;
        p    = realloc(b->data, need);
        if (p == NULL) {
            b->failed = 1;
            return;
        }
        b->data = p;
        b->cap  = need;
    }
}

/* Is key a node record key: /jobs/J/nodes/<20 digits> ? Returns the kind:
 * 1 node, 2 mailbox message, 0 other. */
static int orcd_key_kind(const char *key)
{
    const char *p;
    size_t n;

    if (strncmp(key, "/jobs/", 6) != 0) {
        return 0;
    }
    p = strchr(key + 6, '/');
    if (p == NULL) {
        return 0;
    }
    if (strncmp(p, "/nodes/", 7) == 0) {
        n = strlen(p + 7);
        return (n == 20) ? 1 : 0;
    }
    if (strncmp(p, "/mbox/", 6) == 0) {
        return (strstr(p + 6, "/m/") != NULL) ? 2 : 0;
    }
    return 0;
}

static void orcd_api_metrics_render(orcd_api_t *api, orcd_response_t *resp)
{
    orcd_metrics_t *m   = &api->metrics;
    orcd_buf_t b        = {0};
    orc_store_range_result_t res;
    orc_store_stats_t stats;
    uint64_t v, cum, nodes = 0, msgs = 0;
    size_t r, s, l, i;
    int status;

    b.cap  = 8192;
    b.data = malloc(b.cap);
    if (b.data == NULL) {
        orcd_api_error(resp, 500, "internal", "out of memory");
        return;
    }
    api->store->ops->stats(api->store, &stats);
    status = api->store->ops->range(api->store, "/jobs/", "/jobs0",
                                    ORC_STORE_RANGE_KEYS_ONLY, 0, &res);
    if (status == ORC_STORE_OK) {
        for (i = 0; i < res.count; ++i) {
            switch (orcd_key_kind(res.kvs[i].key)) {
            case 1: ++nodes; break;
            case 2: ++msgs; break;
            default: break;
            }
        }
        orc_store_range_result_free(&res);
    }

    orcd_buf_printf(&b, "# HELP orcd_requests_total HTTP requests by route "
                        "and status.\n# TYPE orcd_requests_total counter\n");
    for (r = 0; r < ORCD_ROUTE_LAST; ++r) {
        for (s = 0; s < ORCD_STATUS_SLOTS; ++s) {
            v = atomic_load_explicit(&m->requests[r][s], memory_order_relaxed);
            if (v == 0) {
                continue;
            }
            if (s < ORCD_STATUS_SLOTS - 1 && orcd_status_slots[s] != 0) {
                orcd_buf_printf(&b, "orcd_requests_total{route=\"%s\","
                                    "status=\"%u\"} %" PRIu64 "\n",
                                orcd_route_name(r), orcd_status_slots[s], v);
            } else {
                orcd_buf_printf(&b, "orcd_requests_total{route=\"%s\","
                                    "status=\"other\"} %" PRIu64 "\n",
                                orcd_route_name(r), v);
            }
        }
    }
    orcd_buf_printf(&b, "# HELP orcd_request_duration_seconds Request "
                        "latency (blocking queries include their wait).\n"
                        "# TYPE orcd_request_duration_seconds histogram\n");
    for (r = 0; r < ORCD_ROUTE_LAST; ++r) {
        cum = 0;
        for (l = 0; l < ORCD_LATENCY_SLOTS; ++l) {
            cum += atomic_load_explicit(&m->latency[r][l],
                                        memory_order_relaxed);
        }
        if (cum == 0) {
            continue;
        }
        cum = 0;
        for (l = 0; l < ORCD_LATENCY_SLOTS - 1; ++l) {
            cum += atomic_load_explicit(&m->latency[r][l],
                                        memory_order_relaxed);
            orcd_buf_printf(&b, "orcd_request_duration_seconds_bucket{route="
                                "\"%s\",le=\"%g\"} %" PRIu64 "\n",
                            orcd_route_name(r), orcd_latency_bounds[l], cum);
        }
        cum += atomic_load_explicit(&m->latency[r][l], memory_order_relaxed);
        orcd_buf_printf(&b, "orcd_request_duration_seconds_bucket{route=\"%s\","
                            "le=\"+Inf\"} %" PRIu64 "\n"
                            "orcd_request_duration_seconds_sum{route=\"%s\"} "
                            "%.6f\n"
                            "orcd_request_duration_seconds_count{route=\"%s\"} "
                            "%" PRIu64 "\n",
                        orcd_route_name(r), cum, orcd_route_name(r),
                        (double)atomic_load_explicit(&m->latency_sum_us[r],
                                                     memory_order_relaxed) /
                                1e6,
                        orcd_route_name(r), cum);
    }
    orcd_buf_printf(&b,
                    "# HELP orcd_nodes Registered nodes.\n"
                    "# TYPE orcd_nodes gauge\norcd_nodes %" PRIu64 "\n"
                    "# HELP orcd_leases_expired_total Node leases that "
                    "expired.\n# TYPE orcd_leases_expired_total counter\n"
                    "orcd_leases_expired_total %" PRIu64 "\n"
                    "# HELP orcd_mailbox_messages Messages queued in all "
                    "mailboxes.\n# TYPE orcd_mailbox_messages gauge\n"
                    "orcd_mailbox_messages %" PRIu64 "\n"
                    "# HELP orcd_store_bytes Bytes of keys and values "
                    "stored.\n# TYPE orcd_store_bytes gauge\n"
                    "orcd_store_bytes %" PRIu64 "\n"
                    "# HELP orcd_store_keys Keys stored.\n"
                    "# TYPE orcd_store_keys gauge\norcd_store_keys %" PRIu64
                    "\n# HELP orcd_store_revision Store revision.\n"
                    "# TYPE orcd_store_revision counter\n"
                    "orcd_store_revision %" PRIu64 "\n"
                    "# HELP orcd_connections Open client connections.\n"
                    "# TYPE orcd_connections gauge\norcd_connections %" PRId64
                    "\n# HELP orcd_long_polls Blocking queries waiting.\n"
                    "# TYPE orcd_long_polls gauge\norcd_long_polls %" PRId64
                    "\n# HELP orcd_long_polls_rejected_total Blocking "
                    "queries refused (max_long_polls).\n"
                    "# TYPE orcd_long_polls_rejected_total counter\n"
                    "orcd_long_polls_rejected_total %" PRIu64 "\n",
                    nodes, stats.leases_expired, msgs, stats.bytes, stats.keys,
                    stats.revision,
                    atomic_load_explicit(&m->connections, memory_order_relaxed),
                    atomic_load_explicit(&m->long_polls, memory_order_relaxed),
                    atomic_load_explicit(&m->long_polls_rejected,
                                         memory_order_relaxed));
    if (b.failed) {
        free(b.data);
        orcd_api_error(resp, 500, "internal", "out of memory");
        return;
    }
    orcd_resp_set_body(resp, 200, b.data, b.len);
    resp->content_type = "text/plain; version=0.0.4";
}

/* ------------------------------------------------------------ validation */

static int orcd_kv_key_valid(const char *s)
{
    size_t len = strlen(s), i;

    if ((len == 0) || (len > ORCD_NAME_MAX) || (s[0] == '/') ||
        (s[len - 1] == '/') || (strstr(s, "..") != NULL) ||
        (strstr(s, "//") != NULL)) {
        return 0;
    }
    for (i = 0; i < len; ++i) {
        if (!isalnum((unsigned char)s[i]) && (s[i] != '.') && (s[i] != '_') &&
            (s[i] != '-') && (s[i] != '/')) {
            return 0;
        }
    }
    return 1;
}

static int orcd_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if ((s == NULL) || (s[0] == '\0') || (strlen(s) > 20)) {
        return -1;
    }
    for (i = 0; s[i] != '\0'; ++i) {
        if (!isdigit((unsigned char)s[i])) {
            return -1;
        }
        if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10) {
            return -1;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

/* seconds: digits with at most one '.', e.g. "5", "0.5" */
static int orcd_parse_wait(const char *s, double *out)
{
    size_t i, dots = 0;
    char *end;
    double d;

    if ((s == NULL) || (s[0] == '\0') || (strlen(s) > 16) || (s[0] == '.')) {
        return -1;
    }
    for (i = 0; s[i] != '\0'; ++i) {
        if (s[i] == '.') {
            ++dots;
        } else if (!isdigit((unsigned char)s[i])) {
            return -1;
        }
    }
    if (dots > 1) {
        return -1;
    }
    errno = 0;
    d     = strtod(s, &end);
    if ((errno != 0) || (*end != '\0') || !isfinite(d) || (d < 0)) {
        return -1;
    }
    *out = d;
    return 0;
}

static const char *orcd_query(const orcd_request_t *req, const char *key,
                              int *present_p)
{
    size_t i;

    for (i = 0; i < req->nargs; ++i) {
        if ((req->args[i].key != NULL) && !strcmp(req->args[i].key, key)) {
            if (present_p != NULL) {
                *present_p = 1;
            }
            return (req->args[i].value != NULL) ? req->args[i].value : "";
        }
    }
    if (present_p != NULL) {
        *present_p = 0;
    }
    return NULL;
}

/* Constant-time equality (time depends on the lengths only). */
static int orcd_ct_equal(const char *a, size_t alen, const char *b,
                         size_t blen)
{
    size_t n = (alen > blen) ? alen : blen, i;
    unsigned char d = (alen != blen);
    unsigned char x, y;

    for (i = 0; i < n; ++i) {
        x  = (i < alen) ? (unsigned char)a[i] : 0;
        y  = (i < blen) ? (unsigned char)b[i] : 0;
        d |= (unsigned char)(x ^ y);
    }
    return d == 0;
}

/*
 * 0 if allowed; else fills resp (401/403). job NULL: any valid token.
 * Every configured token is compared (no early exit) so timing does not
 * reveal which one matched.
 */
static int orcd_auth_check(const orcd_config_t *cfg, const orcd_request_t *req,
                           const char *job, size_t job_len,
                           orcd_response_t *resp)
{
    const char *h = req->authorization, *tok;
    size_t tok_len, i;
    ssize_t match = -1;

    if ((h == NULL) || (strncasecmp(h, "Bearer ", 7) != 0)) {
        orcd_api_error(resp, 401, "unauthorized",
                       "missing bearer token (Authorization: Bearer ...)");
        resp->www_authenticate = 1;
        return -1;
    }
    tok = h + 7;
    while (*tok == ' ') {
        ++tok;
    }
    tok_len = strlen(tok);
    for (i = 0; i < cfg->ntokens; ++i) {
        /* a token belongs to one job (orcd_config_finalize) */
        if (orcd_ct_equal(tok, tok_len, cfg->tokens[i].token,
                          strlen(cfg->tokens[i].token))) {
            match = (ssize_t)i;
        }
    }
    if (match < 0) {
        orcd_api_error(resp, 401, "unauthorized", "invalid token");
        resp->www_authenticate = 1;
        return -1;
    }
    if ((job != NULL) &&
        ((strlen(cfg->tokens[match].job) != job_len) ||
         strncmp(cfg->tokens[match].job, job, job_len))) {
        orcd_api_error(resp, 403, "forbidden",
                       "the token does not belong to job '%.*s'",
                       (int)job_len, job);
        return -1;
    }
    return 0;
}

/* ----------------------------------------------------------------- routing */

typedef struct orcd_target {
    orcd_route_t route;
    const char  *job;      /* points into path */
    size_t       job_len;
    const char  *id;       /* node id text (not NUL-terminated) */
    size_t       id_len;
    const char  *kv_key;   /* rest of the path after /kv/ */
} orcd_target_t;

static const char *orcd_route_allow(orcd_route_t route)
{
    switch (route) {
    case ORCD_ROUTE_HEALTHZ:
    case ORCD_ROUTE_METRICS:   return "GET";
    case ORCD_ROUTE_NODES:     return "GET, POST";
    case ORCD_ROUTE_NODE:      return "GET, DELETE";
    case ORCD_ROUTE_KEEPALIVE: return "PUT";
    case ORCD_ROUTE_ENDPOINT:  return "GET, POST, PUT";
    case ORCD_ROUTE_MAILBOX:   return "GET, POST";
    case ORCD_ROUTE_KV:        return "GET, PUT, DELETE";
    default:                   return "";
    }
}

static int orcd_method_allowed(orcd_route_t route, const char *method)
{
    const char *p = orcd_route_allow(route);
    size_t len    = strlen(method), tok;

    /* the allow list is "A, B, C": compare whole tokens */
    while (*p != '\0') {
        tok = strcspn(p, ",");
        if ((tok == len) && (len > 0) && !memcmp(p, method, len)) {
            return 1;
        }
        p += tok;
        while ((*p == ',') || (*p == ' ')) {
            ++p;
        }
    }
    return 0;
}

static void orcd_route_match(const char *path, orcd_target_t *t)
{
    const char *seg[ORCD_MAX_SEGMENTS];
    size_t seglen[ORCD_MAX_SEGMENTS];
    size_t n = 0;
    const char *p = path, *q;

    memset(t, 0, sizeof(*t));
    t->route = ORCD_ROUTE_UNKNOWN;
    if ((p == NULL) || (p[0] != '/')) {
        return;
    }
    ++p;
    while (n < ORCD_MAX_SEGMENTS) {
        q = strchr(p, '/');
        seg[n]    = p;
        seglen[n] = (q != NULL) ? (size_t)(q - p) : strlen(p);
        ++n;
        if (q == NULL) {
            break;
        }
        p = q + 1;
    }
#define SEG(_i, _s) \
    ((seglen[_i] == sizeof(_s) - 1) && !memcmp(seg[_i], _s, sizeof(_s) - 1))
    if (n == 1 && SEG(0, "healthz")) {
        t->route = ORCD_ROUTE_HEALTHZ;
        return;
    }
    if (n == 1 && SEG(0, "metrics")) {
        t->route = ORCD_ROUTE_METRICS;
        return;
    }
    if ((n < 4) || !SEG(0, "v1") || !SEG(1, "jobs")) {
        return;
    }
    t->job     = seg[2];
    t->job_len = seglen[2];
    if (SEG(3, "kv")) {
        if (n >= 5) {
            t->route  = ORCD_ROUTE_KV;
            t->kv_key = seg[4];
        }
        return;
    }
    if (!SEG(3, "nodes")) {
        return;
    }
    if (n == 4) {
        t->route = ORCD_ROUTE_NODES;
        return;
    }
    t->id     = seg[4];
    t->id_len = seglen[4];
    if (n == 5) {
        t->route = ORCD_ROUTE_NODE;
    } else if (n == 6 && SEG(5, "keepalive")) {
        t->route = ORCD_ROUTE_KEEPALIVE;
    } else if (n == 6 && SEG(5, "mailbox")) {
        t->route = ORCD_ROUTE_MAILBOX;
    } else if (n == 7 && SEG(5, "rdma") && SEG(6, "endpoint")) {
        t->route = ORCD_ROUTE_ENDPOINT;
    }
#undef SEG
}

/* Route, method, job name and auth. Returns 1 with resp filled on reject. */
static int orcd_api_gate(orcd_api_t *api, const orcd_config_t *cfg,
                         const orcd_request_t *req, orcd_target_t *t,
                         orcd_response_t *resp)
{
    orcd_route_match(req->path, t);
    resp->route = t->route;
    if (t->route == ORCD_ROUTE_UNKNOWN) {
        orcd_api_error(resp, 404, "not_found", "no such route");
        return 1;
    }
    if ((req->method == NULL) || !orcd_method_allowed(t->route, req->method)) {
        orcd_api_error(resp, 405, "method_not_allowed",
                       "allowed methods: %s", orcd_route_allow(t->route));
        resp->allow = orcd_route_allow(t->route);
        return 1;
    }
    (void)api;
    if (t->route == ORCD_ROUTE_HEALTHZ) {
        return 0;
    }
    if (t->route == ORCD_ROUTE_METRICS) {
        if (cfg->auth_enabled && cfg->metrics_auth &&
            orcd_auth_check(cfg, req, NULL, 0, resp)) {
            return 1;
        }
        return 0;
    }
    if (!orcd_name_valid(t->job, t->job_len)) {
        orcd_api_error(resp, 400, "bad_job",
                       "job names are 1..%d characters of A-Z a-z 0-9 . _ -",
                       ORCD_NAME_MAX);
        return 1;
    }
    if (cfg->auth_enabled && orcd_auth_check(cfg, req, t->job, t->job_len,
                                             resp)) {
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- handlers */

typedef struct orcd_ctx {
    orcd_api_t            *api;
    const orcd_config_t   *cfg;
    orc_store_t           *store;
    const orcd_request_t  *req;
    orcd_response_t       *resp;
    char                   job[ORCD_NAME_MAX + 1];
    uint64_t               id;
} orcd_ctx_t;

static void orcd_key(char *buf, const orcd_ctx_t *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "/jobs/<job>" + formatted suffix into a ORCD_KEY_MAX buffer */
static void orcd_key(char *buf, const orcd_ctx_t *c, const char *fmt, ...)
{
    va_list ap;
    int n;

    n = snprintf(buf, ORCD_KEY_MAX, "/jobs/%s", c->job);
    va_start(ap, fmt);
    vsnprintf(buf + n, ORCD_KEY_MAX - (size_t)n, fmt, ap);
    va_end(ap);
}

static json_t *orcd_body_json(orcd_ctx_t *c, size_t max, int want_object)
{
    json_error_t err;
    json_t *o;

    if (c->req->body_len > max) {
        orcd_api_error(c->resp, 413, "too_large",
                       "body of %zu bytes exceeds the limit of %zu",
                       c->req->body_len, max);
        return NULL;
    }
    if (c->req->body_len == 0) {
        orcd_api_error(c->resp, 400, "bad_json", "empty body, expected JSON");
        return NULL;
    }
    o = json_loadb(c->req->body, c->req->body_len,
                   JSON_REJECT_DUPLICATES, &err);
    if (o == NULL) {
        orcd_api_error(c->resp, 400, "bad_json", "line %d column %d: %s",
                       err.line, err.column, err.text);
        return NULL;
    }
    if (want_object && !json_is_object(o)) {
        json_decref(o);
        orcd_api_error(c->resp, 400, "bad_json", "expected a JSON object");
        return NULL;
    }
    return o;
}

/* The node is missing: 410 if its id was issued and it was not deleted
 * explicitly (so its lease expired), else 404. */
static void orcd_node_missing(orcd_ctx_t *c)
{
    char key[ORCD_KEY_MAX];
    orc_store_kv_t kv;
    uint64_t last_id = 0;
    int status;

    orcd_key(key, c, "/meta/ids");
    status = orc_store_get(c->store, key, &kv, NULL);
    if (status == ORC_STORE_OK) {
        last_id = kv.version;
        orc_store_kv_free(&kv);
    } else if (status != ORC_STORE_ENOENT) {
        orcd_resp_store_error(c->resp, status);
        return;
    }
    if (c->id <= last_id) {
        orcd_key(key, c, "/gone/%020" PRIu64, c->id);
        status = orc_store_get(c->store, key, &kv, NULL);
        if (status == ORC_STORE_ENOENT) {
            orcd_api_error(c->resp, 410, "lease_expired",
                           "the lease of node %" PRIu64 " expired", c->id);
            return;
        }
        if (status == ORC_STORE_OK) {
            orc_store_kv_free(&kv);
        }
    }
    orcd_api_error(c->resp, 404, "not_found", "no node %" PRIu64 " in job %s",
                   c->id, c->job);
}

/* Fetch the node record; on failure the response is filled. */
static int orcd_node_get(orcd_ctx_t *c, orc_store_kv_t *kv)
{
    char key[ORCD_KEY_MAX];
    int status;

    orcd_key(key, c, "/nodes/%020" PRIu64, c->id);
    status = orc_store_get(c->store, key, kv, NULL);
    if (status == ORC_STORE_ENOENT) {
        orcd_node_missing(c);
        return -1;
    }
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return -1;
    }
    return 0;
}

/* Build a node object from its record (and endpoint kv, may be NULL). */
static json_t *orcd_node_object(uint64_t id, const orc_store_kv_t *node,
                                const orc_store_kv_t *ep)
{
    json_t *o, *e = NULL;
    uint64_t index = node->mod_rev;

    o = json_loadb(node->value, node->value_len, 0, NULL);
    if ((o == NULL) || !json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    if (ep != NULL) {
        e = json_loadb(ep->value, ep->value_len, 0, NULL);
        if (ep->mod_rev > index) {
            index = ep->mod_rev;
        }
    }
    if (json_object_set_new(o, "id", json_integer((json_int_t)id)) ||
        json_object_set_new(o, "endpoint", (e != NULL) ? e : json_null()) ||
        json_object_set_new(o, "index", json_integer((json_int_t)index))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static void orcd_h_register(orcd_ctx_t *c)
{
    const orcd_config_t *cfg = c->cfg;
    json_t *body, *labels = NULL, *rec, *v;
    const char *host, *lk;
    json_int_t pid, ttl = 0;
    char ids_key[ORCD_KEY_MAX], node_key[ORCD_KEY_MAX], seq_key[ORCD_KEY_MAX];
    orc_store_txn_result_t tres;
    orc_store_kv_t kv;
    uint64_t lease, version;
    char *value;
    int status, attempt;

    body = orcd_body_json(c, cfg->max_body, 1);
    if (body == NULL) {
        return;
    }
    if (json_unpack(body, "{s:s, s:I, s?o, s?I}", "host", &host, "pid", &pid,
                    "labels", &labels, "ttl", &ttl) ||
        (host[0] == '\0') || (strlen(host) > 255) || (pid < 0) ||
        (pid > INT32_MAX) || (json_object_get(body, "ttl") != NULL &&
                              ttl <= 0)) {
        orcd_api_error(c->resp, 400, "bad_field",
                       "expected {\"host\": non-empty string (<= 255), "
                       "\"pid\": integer >= 0, \"labels\": {string: string}?, "
                       "\"ttl\": integer > 0?}");
        goto out_body;
    }
    if ((labels != NULL) && !json_is_null(labels)) {
        if (!json_is_object(labels)) {
            orcd_api_error(c->resp, 400, "bad_field",
                           "labels must be an object of strings");
            goto out_body;
        }
        json_object_foreach(labels, lk, v) {
            if (!json_is_string(v)) {
                orcd_api_error(c->resp, 400, "bad_field",
                               "label values must be strings");
                goto out_body;
            }
        }
    }
    if (ttl == 0) {
        ttl = cfg->ttl_default;
    }
    if (ttl < cfg->ttl_min) {
        ttl = cfg->ttl_min;
    }
    if (ttl > cfg->ttl_max) {
        ttl = cfg->ttl_max;
    }
    rec = json_pack("{sssIsosI}", "host", host, "pid", pid, "labels",
                    ((labels != NULL) && !json_is_null(labels)) ?
                            json_incref(labels) : json_object(),
                    "ttl", ttl);
    value = (rec != NULL) ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_decref(rec);
    if (value == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_body;
    }

    status = c->store->ops->lease_grant(c->store, ttl, &lease);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        goto out_value;
    }
    orcd_key(ids_key, c, "/meta/ids");
    for (attempt = 0; attempt < ORCD_TXN_RETRIES; ++attempt) {
        status = orc_store_get(c->store, ids_key, &kv, NULL);
        if (status == ORC_STORE_OK) {
            version = kv.version;
            orc_store_kv_free(&kv);
        } else if (status == ORC_STORE_ENOENT) {
            version = 0;
        } else {
            break;
        }
        c->id = version + 1;
        orcd_key(node_key, c, "/nodes/%020" PRIu64, c->id);
        orcd_key(seq_key, c, "/mbox/%020" PRIu64 "/seq", c->id);
        {
            orc_store_cmp_t cmp = {ids_key, ORC_STORE_CMP_VERSION,
                                   ORC_STORE_CMP_EQUAL, version};
            orc_store_op_t ops[3] = {
                {ORC_STORE_OP_PUT, ids_key, NULL, "", 0, 0},
                {ORC_STORE_OP_PUT, node_key, NULL, value, strlen(value),
                 lease},
                {ORC_STORE_OP_PUT, seq_key, NULL, "", 0, lease},
            };
            status = c->store->ops->txn(c->store, &cmp, 1, ops, 3, &tres);
        }
        if (status != ORC_STORE_ECOMPARE) {
            break;
        }
    }
    if (status != ORC_STORE_OK) {
        c->store->ops->lease_revoke(c->store, lease);
        if (status == ORC_STORE_ECOMPARE) {
            orcd_api_error(c->resp, 503, "busy", "too much contention, retry");
            c->resp->retry_after = 1;
        } else {
            orcd_resp_store_error(c->resp, status);
        }
        goto out_value;
    }
    orcd_debug("job %s: node %" PRIu64 " registered (host %s pid %lld ttl "
               "%lld)", c->job, c->id, host, (long long)pid, (long long)ttl);
    orcd_resp_json(c->resp, 201,
                   json_pack("{sIsIsI}", "id", (json_int_t)c->id, "ttl", ttl,
                             "index", (json_int_t)tres.revision));
out_value:
    free(value);
out_body:
    json_decref(body);
}

static void orcd_h_list(orcd_ctx_t *c)
{
    char prefix[ORCD_KEY_MAX], *end;
    const char *index_s, *wait_s;
    orc_store_range_result_t res;
    json_t *nodes, *o, *root;
    uint64_t index = 0, id;
    double wait = 0;
    size_t i, plen;
    int status, has_index, has_wait;

    index_s = orcd_query(c->req, "index", &has_index);
    wait_s  = orcd_query(c->req, "wait", &has_wait);
    if ((has_index && orcd_parse_u64(index_s, &index)) ||
        (has_wait && orcd_parse_wait(wait_s, &wait))) {
        orcd_api_error(c->resp, 400, "bad_query",
                       "index must be an unsigned integer and wait a number "
                       "of seconds");
        return;
    }
    if (wait > c->cfg->max_wait) {
        wait = c->cfg->max_wait;
    }
    orcd_key(prefix, c, "/nodes/");
    plen = strlen(prefix);
    end  = orc_store_prefix_end(prefix);
    if (end == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        return;
    }
    status = c->store->ops->range(c->store, prefix, end, 0, 0, &res);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        goto out_end;
    }
    nodes = json_array();
    for (i = 0; (nodes != NULL) && (i < res.count); ++i) {
        const char *rest = res.kvs[i].key + plen;
        const orc_store_kv_t *ep = NULL;

        if ((strlen(rest) != 20) || orcd_parse_u64(rest, &id)) {
            continue; /* an endpoint key without its node: skip */
        }
        if ((i + 1 < res.count) &&
            !strncmp(res.kvs[i + 1].key, res.kvs[i].key,
                     strlen(res.kvs[i].key)) &&
            !strcmp(res.kvs[i + 1].key + strlen(res.kvs[i].key), "/ep")) {
            ep = &res.kvs[i + 1];
        }
        o = orcd_node_object(id, &res.kvs[i], ep);
        if ((o == NULL) || json_array_append_new(nodes, o)) {
            json_decref(nodes);
            nodes = NULL;
        }
    }
    if (nodes == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_res;
    }
    root = json_pack("{sIso}", "index", (json_int_t)res.revision, "nodes",
                     nodes);
    orcd_resp_json(c->resp, 200, root);
    c->resp->has_index = 1;
    c->resp->index     = res.revision;
    /* an index from the future means orcd restarted without its state:
     * answer at once so the client resynchronises */
    if (c->req->may_block && has_index && (wait > 0) &&
        (index <= res.revision) && (c->resp->status == 200)) {
        /* the list read above already holds anything newer than index */
        if (orcd_resp_block(c->resp, prefix, end, index + 1, wait) == 0) {
            c->resp->answer_if_fired = 1;
        }
    }
out_res:
    orc_store_range_result_free(&res);
out_end:
    free(end);
}

static void orcd_h_node_get(orcd_ctx_t *c)
{
    char key[ORCD_KEY_MAX];
    orc_store_kv_t node, ep;
    int status, has_ep;
    json_t *o;

    if (orcd_node_get(c, &node)) {
        return;
    }
    orcd_key(key, c, "/nodes/%020" PRIu64 "/ep", c->id);
    status = orc_store_get(c->store, key, &ep, NULL);
    has_ep = (status == ORC_STORE_OK);
    o      = orcd_node_object(c->id, &node, has_ep ? &ep : NULL);
    if (o == NULL) {
        orcd_api_error(c->resp, 500, "internal", "corrupt node record");
    } else {
        orcd_resp_json(c->resp, 200, o);
    }
    if (has_ep) {
        orc_store_kv_free(&ep);
    }
    orc_store_kv_free(&node);
}

static void orcd_h_node_delete(orcd_ctx_t *c)
{
    char key[ORCD_KEY_MAX];
    orc_store_kv_t node;
    int status;

    if (orcd_node_get(c, &node)) {
        return;
    }
    orcd_key(key, c, "/gone/%020" PRIu64, c->id);
    status = orc_store_put(c->store, key, "", 0, 0, NULL);
    if (status == ORC_STORE_OK) {
        status = c->store->ops->lease_revoke(c->store, node.lease);
        if (status == ORC_STORE_ENOENT) {
            status = ORC_STORE_OK; /* expired meanwhile: gone either way */
        }
    }
    orc_store_kv_free(&node);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return;
    }
    orcd_debug("job %s: node %" PRIu64 " deleted", c->job, c->id);
    orcd_resp_empty(c->resp, 204);
}

static void orcd_h_keepalive(orcd_ctx_t *c)
{
    orc_store_kv_t node;
    int64_t ttl;
    int status;

    if (orcd_node_get(c, &node)) {
        return;
    }
    status = c->store->ops->lease_keepalive(c->store, node.lease, &ttl);
    orc_store_kv_free(&node);
    if (status == ORC_STORE_ENOENT) {
        orcd_api_error(c->resp, 410, "lease_expired",
                       "the lease of node %" PRIu64 " expired", c->id);
        return;
    }
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return;
    }
    orcd_resp_json(c->resp, 200,
                   json_pack("{sIsI}", "id", (json_int_t)c->id, "ttl",
                             (json_int_t)ttl));
}

static void orcd_h_endpoint_get(orcd_ctx_t *c)
{
    char key[ORCD_KEY_MAX];
    orc_store_kv_t ep, node;
    int status;

    orcd_key(key, c, "/nodes/%020" PRIu64 "/ep", c->id);
    status = orc_store_get(c->store, key, &ep, NULL);
    if (status == ORC_STORE_OK) {
        orcd_resp_set_body(c->resp, 200, ep.value, ep.value_len);
        ep.value = NULL;
        orc_store_kv_free(&ep);
        return;
    }
    if (status != ORC_STORE_ENOENT) {
        orcd_resp_store_error(c->resp, status);
        return;
    }
    if (orcd_node_get(c, &node)) {
        return;
    }
    orc_store_kv_free(&node);
    orcd_api_error(c->resp, 404, "not_found",
                   "node %" PRIu64 " has no endpoint", c->id);
}

static void orcd_h_endpoint_put(orcd_ctx_t *c, int create)
{
    char node_key[ORCD_KEY_MAX], ep_key[ORCD_KEY_MAX];
    orc_store_txn_result_t tres;
    orc_store_kv_t node;
    json_t *body;
    char *value;
    int status;

    body = orcd_body_json(c, c->cfg->endpoint_max, 1);
    if (body == NULL) {
        return;
    }
    value = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (value == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        return;
    }
    if (orcd_node_get(c, &node)) {
        goto out_value;
    }
    orcd_key(node_key, c, "/nodes/%020" PRIu64, c->id);
    orcd_key(ep_key, c, "/nodes/%020" PRIu64 "/ep", c->id);
    {
        orc_store_cmp_t cmps[2] = {
            {node_key, ORC_STORE_CMP_CREATE, ORC_STORE_CMP_EQUAL,
             node.create_rev},
            {ep_key, ORC_STORE_CMP_CREATE, ORC_STORE_CMP_EQUAL, 0},
        };
        orc_store_op_t op = {ORC_STORE_OP_PUT, ep_key, NULL, value,
                             strlen(value), node.lease};
        status = c->store->ops->txn(c->store, cmps, create ? 2 : 1, &op, 1,
                                    &tres);
    }
    orc_store_kv_free(&node);
    if ((status == ORC_STORE_ECOMPARE) && (tres.failed_cmp == 1)) {
        orcd_api_error(c->resp, 409, "conflict",
                       "node %" PRIu64 " already has an endpoint (PUT "
                       "replaces it)", c->id);
    } else if ((status == ORC_STORE_ECOMPARE) ||
               (status == ORC_STORE_ENOENT)) {
        orcd_node_missing(c);
    } else if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
    } else {
        orcd_resp_json(c->resp, create ? 201 : 200,
                       json_pack("{sI}", "index",
                                 (json_int_t)tres.revision));
    }
out_value:
    free(value);
}

static void orcd_h_mailbox_post(orcd_ctx_t *c)
{
    char node_key[ORCD_KEY_MAX], seq_key[ORCD_KEY_MAX];
    char msg_key[ORCD_KEY_MAX], prefix[ORCD_KEY_MAX], *end;
    orc_store_range_result_t res;
    orc_store_txn_result_t tres;
    orc_store_kv_t node, seq;
    json_t *body, *payload = NULL, *msg;
    json_int_t from = 0;
    uint64_t version;
    char *value = NULL;
    int status = ORC_STORE_OK, attempt;

    body = orcd_body_json(c, c->cfg->mailbox_msg_max, 1);
    if (body == NULL) {
        return;
    }
    if (json_unpack(body, "{s?I, s:o}", "from", &from, "body", &payload) ||
        !json_is_object(payload) || (from < 0)) {
        orcd_api_error(c->resp, 400, "bad_field",
                       "expected {\"from\": node id?, \"body\": {...}}");
        goto out_body;
    }
    msg   = json_pack("{sIsO}", "from", from, "body", payload);
    value = (msg != NULL) ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (value == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_body;
    }
    if (orcd_node_get(c, &node)) {
        goto out_value;
    }
    orcd_key(node_key, c, "/nodes/%020" PRIu64, c->id);
    orcd_key(seq_key, c, "/mbox/%020" PRIu64 "/seq", c->id);
    orcd_key(prefix, c, "/mbox/%020" PRIu64 "/m/", c->id);
    end = orc_store_prefix_end(prefix);
    if (end == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_node;
    }
    status = c->store->ops->range(c->store, prefix, end,
                                  ORC_STORE_RANGE_COUNT_ONLY, 0, &res);
    free(end);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        goto out_node;
    }
    if (res.total >= c->cfg->mailbox_depth) {
        orcd_api_error(c->resp, 429, "mailbox_full",
                       "mailbox of node %" PRIu64 " holds %zu messages (limit "
                       "%u)", c->id, res.total, c->cfg->mailbox_depth);
        c->resp->retry_after = 1;
        goto out_node;
    }
    for (attempt = 0; attempt < ORCD_TXN_RETRIES; ++attempt) {
        status = orc_store_get(c->store, seq_key, &seq, NULL);
        if (status != ORC_STORE_OK) {
            break;
        }
        version = seq.version;
        orc_store_kv_free(&seq);
        /* the message gets seq = version: the counter's version after this
         * put is version + 1, and last_seq = version - 1 */
        orcd_key(msg_key, c, "/mbox/%020" PRIu64 "/m/%020" PRIu64, c->id,
                 version);
        {
            orc_store_cmp_t cmps[2] = {
                {seq_key, ORC_STORE_CMP_VERSION, ORC_STORE_CMP_EQUAL, version},
                {node_key, ORC_STORE_CMP_CREATE, ORC_STORE_CMP_EQUAL,
                 node.create_rev},
            };
            orc_store_op_t ops[2] = {
                {ORC_STORE_OP_PUT, seq_key, NULL, "", 0, node.lease},
                {ORC_STORE_OP_PUT, msg_key, NULL, value, strlen(value),
                 node.lease},
            };
            status = c->store->ops->txn(c->store, cmps, 2, ops, 2, &tres);
        }
        if ((status != ORC_STORE_ECOMPARE) || (tres.failed_cmp != 0)) {
            break;
        }
    }
    if (status == ORC_STORE_OK) {
        orcd_resp_json(c->resp, 201,
                       json_pack("{sI}", "seq", (json_int_t)version));
    } else if ((status == ORC_STORE_ENOENT) ||
               ((status == ORC_STORE_ECOMPARE) && (tres.failed_cmp == 1))) {
        orcd_node_missing(c);
    } else if (status == ORC_STORE_ECOMPARE) {
        orcd_api_error(c->resp, 503, "busy", "too much contention, retry");
        c->resp->retry_after = 1;
    } else {
        orcd_resp_store_error(c->resp, status);
    }
out_node:
    orc_store_kv_free(&node);
out_value:
    free(value);
out_body:
    json_decref(body);
}

static void orcd_h_mailbox_get(orcd_ctx_t *c)
{
    char from[ORCD_KEY_MAX], prefix[ORCD_KEY_MAX];
    char watch[ORCD_KEY_MAX], *end = NULL, *watch_end = NULL;
    const char *after_s, *wait_s;
    orc_store_range_result_t res;
    orc_store_kv_t node;
    json_t *msgs, *m, *root;
    uint64_t after = 0, seq, last;
    double wait = 0;
    size_t i, plen;
    int status, has_after, has_wait;

    after_s = orcd_query(c->req, "after", &has_after);
    wait_s  = orcd_query(c->req, "wait", &has_wait);
    if ((has_after && orcd_parse_u64(after_s, &after)) ||
        (has_wait && orcd_parse_wait(wait_s, &wait))) {
        orcd_api_error(c->resp, 400, "bad_query",
                       "after must be an unsigned integer and wait a number "
                       "of seconds");
        return;
    }
    if (wait > c->cfg->max_wait) {
        wait = c->cfg->max_wait;
    }
    if (orcd_node_get(c, &node)) {
        return;
    }
    orc_store_kv_free(&node);
    orcd_key(prefix, c, "/mbox/%020" PRIu64 "/m/", c->id);
    plen = strlen(prefix);
    end  = orc_store_prefix_end(prefix);
    if (end == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        return;
    }
    /* the first unacknowledged message */
    if (after < UINT64_MAX) {
        orcd_key(from, c, "/mbox/%020" PRIu64 "/m/%020" PRIu64, c->id,
                 after + 1);
    } else {
        snprintf(from, sizeof(from), "%s", end);
    }
    /* acknowledge: drop every message <= after */
    if (after > 0) {
        status = orc_store_delete(c->store, prefix, from, NULL, NULL);
        if (status != ORC_STORE_OK) {
            orcd_resp_store_error(c->resp, status);
            goto out_end;
        }
    }
    status = c->store->ops->range(c->store, from, end, 0, 0, &res);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        goto out_end;
    }
    msgs = json_array();
    last = after;
    for (i = 0; (msgs != NULL) && (i < res.count); ++i) {
        if (orcd_parse_u64(res.kvs[i].key + plen, &seq)) {
            continue;
        }
        m = json_loadb(res.kvs[i].value, res.kvs[i].value_len, 0, NULL);
        if ((m == NULL) ||
            json_object_set_new(m, "seq", json_integer((json_int_t)seq)) ||
            json_array_append_new(msgs, m)) {
            json_decref(m);
            json_decref(msgs);
            msgs = NULL;
            break;
        }
        last = seq;
    }
    if (msgs == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_res;
    }
    root = json_pack("{sosI}", "messages", msgs, "last_seq",
                     (json_int_t)last);
    orcd_resp_json(c->resp, 200, root);
    c->resp->has_index = 1;
    c->resp->index     = res.revision;
    if (c->req->may_block && (res.count == 0) && (wait > 0) &&
        (c->resp->status == 200)) {
        /* wake on new messages and on the node's removal (its counter key
         * lives under the same prefix) */
        orcd_key(watch, c, "/mbox/%020" PRIu64 "/", c->id);
        watch_end = orc_store_prefix_end(watch);
        if (watch_end == NULL) {
            orcd_api_error(c->resp, 500, "internal", "out of memory");
        } else {
            orcd_resp_block(c->resp, watch, watch_end, res.revision + 1, wait);
        }
    }
out_res:
    orc_store_range_result_free(&res);
out_end:
    free(watch_end);
    free(end);
}

static void orcd_h_kv_put(orcd_ctx_t *c, const char *key)
{
    orc_store_txn_result_t tres;
    char node_key[ORCD_KEY_MAX];
    json_t *body, *value = NULL;
    json_int_t node_id = 0;
    orc_store_kv_t node;
    char *text;
    int status, has_node;

    body = orcd_body_json(c, c->cfg->max_body, 1);
    if (body == NULL) {
        return;
    }
    if (json_unpack(body, "{s:o, s?I}", "value", &value, "node", &node_id) ||
        (node_id < 0) ||
        ((json_object_get(body, "node") != NULL) && (node_id == 0))) {
        orcd_api_error(c->resp, 400, "bad_field",
                       "expected {\"value\": any JSON, \"node\": node id?}");
        goto out_body;
    }
    has_node = (node_id > 0);
    text     = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_body;
    }
    if (has_node) {
        c->id = (uint64_t)node_id;
        if (orcd_node_get(c, &node)) {
            goto out_text;
        }
        orcd_key(node_key, c, "/nodes/%020" PRIu64, c->id);
        {
            orc_store_cmp_t cmp = {node_key, ORC_STORE_CMP_CREATE,
                                   ORC_STORE_CMP_EQUAL, node.create_rev};
            orc_store_op_t op   = {ORC_STORE_OP_PUT, key, NULL, text,
                                   strlen(text), node.lease};
            status = c->store->ops->txn(c->store, &cmp, 1, &op, 1, &tres);
        }
        orc_store_kv_free(&node);
        if ((status == ORC_STORE_ECOMPARE) || (status == ORC_STORE_ENOENT)) {
            orcd_node_missing(c);
            goto out_text;
        }
    } else {
        orc_store_op_t op = {ORC_STORE_OP_PUT, key, NULL, text, strlen(text),
                             0};
        status = c->store->ops->txn(c->store, NULL, 0, &op, 1, &tres);
    }
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
    } else {
        orcd_resp_json(c->resp, 200,
                       json_pack("{sI}", "index", (json_int_t)tres.revision));
    }
out_text:
    free(text);
out_body:
    json_decref(body);
}

static void orcd_h_kv_get(orcd_ctx_t *c, const char *key, const char *name)
{
    const char *wait_s;
    orc_store_kv_t kv;
    orcd_buf_t b = {0};
    uint64_t rev;
    double wait = 0;
    int status, has_wait;

    wait_s = orcd_query(c->req, "wait", &has_wait);
    if (has_wait && orcd_parse_wait(wait_s, &wait)) {
        orcd_api_error(c->resp, 400, "bad_query",
                       "wait must be a number of seconds");
        return;
    }
    if (wait > c->cfg->max_wait) {
        wait = c->cfg->max_wait;
    }
    status = orc_store_get(c->store, key, &kv, &rev);
    if (status == ORC_STORE_ENOENT) {
        orcd_api_error(c->resp, 404, "not_found", "no key '%s' in job %s",
                       name, c->job);
        if (c->req->may_block && (wait > 0)) {
            orcd_resp_block(c->resp, key, NULL, rev + 1, wait);
        }
        return;
    }
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return;
    }
    /* the name is validated ([A-Za-z0-9._/-]) and the value is stored JSON
     * text: both are inserted verbatim */
    b.cap  = kv.value_len + strlen(name) + 64;
    b.data = malloc(b.cap);
    if (b.data == NULL) {
        orc_store_kv_free(&kv);
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        return;
    }
    orcd_buf_printf(&b, "{\"key\":\"%s\",\"value\":%s,\"index\":%" PRIu64 "}",
                    name, kv.value, kv.mod_rev);
    orc_store_kv_free(&kv);
    if (b.failed) {
        free(b.data);
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        return;
    }
    orcd_resp_set_body(c->resp, 200, b.data, b.len);
    c->resp->has_index = 1;
    c->resp->index     = rev;
}

static void orcd_h_kv_delete(orcd_ctx_t *c, const char *key, const char *name)
{
    size_t deleted;
    int status;

    status = orc_store_delete(c->store, key, NULL, &deleted, NULL);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
    } else if (deleted == 0) {
        orcd_api_error(c->resp, 404, "not_found", "no key '%s' in job %s",
                       name, c->job);
    } else {
        orcd_resp_empty(c->resp, 204);
    }
}

static void orcd_h_kv(orcd_ctx_t *c, const orcd_target_t *t)
{
    char key[ORCD_KEY_MAX];

    if (!orcd_kv_key_valid(t->kv_key)) {
        orcd_api_error(c->resp, 400, "bad_key",
                       "kv keys are 1..%d characters of A-Z a-z 0-9 . _ - /, "
                       "without '..', '//' or a leading or trailing '/'",
                       ORCD_NAME_MAX);
        return;
    }
    orcd_key(key, c, "/kv/%s", t->kv_key);
    if (!strcmp(c->req->method, "PUT")) {
        orcd_h_kv_put(c, key);
    } else if (!strcmp(c->req->method, "GET")) {
        orcd_h_kv_get(c, key, t->kv_key);
    } else {
        orcd_h_kv_delete(c, key, t->kv_key);
    }
}

/* ------------------------------------------------------------- public API */

int orcd_api_create(orcd_config_t *cfg, orc_store_t *store,
                    orcd_api_t **api_p)
{
    orcd_api_t *api = calloc(1, sizeof(*api));

    if (api == NULL) {
        return -1;
    }
    if (pthread_rwlock_init(&api->cfg_lock, NULL) != 0) {
        free(api);
        return -1;
    }
    api->cfg   = cfg;
    api->store = store;
    *api_p     = api;
    return 0;
}

void orcd_api_destroy(orcd_api_t *api)
{
    if (api == NULL) {
        return;
    }
    orcd_config_cleanup(api->cfg);
    free(api->cfg);
    pthread_rwlock_destroy(&api->cfg_lock);
    free(api);
}

void orcd_api_set_config(orcd_api_t *api, orcd_config_t *cfg)
{
    orcd_config_t *old;

    pthread_rwlock_wrlock(&api->cfg_lock);
    old      = api->cfg;
    api->cfg = cfg;
    pthread_rwlock_unlock(&api->cfg_lock);
    orcd_config_cleanup(old);
    free(old);
}

void orcd_api_with_config(orcd_api_t *api,
                          void (*fn)(const orcd_config_t *cfg, void *arg),
                          void *arg)
{
    pthread_rwlock_rdlock(&api->cfg_lock);
    fn(api->cfg, arg);
    pthread_rwlock_unlock(&api->cfg_lock);
}

void orcd_api_count_connection(orcd_api_t *api, int delta)
{
    atomic_fetch_add_explicit(&api->metrics.connections, delta,
                              memory_order_relaxed);
}

void orcd_api_count_long_poll(orcd_api_t *api, int delta)
{
    atomic_fetch_add_explicit(&api->metrics.long_polls, delta,
                              memory_order_relaxed);
}

void orcd_api_count_long_poll_rejected(orcd_api_t *api)
{
    atomic_fetch_add_explicit(&api->metrics.long_polls_rejected, 1,
                              memory_order_relaxed);
}

orc_store_t *orcd_api_store(orcd_api_t *api)
{
    return api->store;
}

static void orcd_resp_init(orcd_response_t *resp)
{
    memset(resp, 0, sizeof(*resp));
}

int orcd_api_precheck(orcd_api_t *api, const orcd_request_t *req,
                      long long content_length, size_t *max_body_p,
                      orcd_response_t *resp)
{
    orcd_target_t t;
    int rejected;

    orcd_resp_init(resp);
    pthread_rwlock_rdlock(&api->cfg_lock);
    rejected    = orcd_api_gate(api, api->cfg, req, &t, resp);
    *max_body_p = api->cfg->max_body;
    if (!rejected && (content_length >= 0) &&
        ((unsigned long long)content_length > api->cfg->max_body)) {
        orcd_api_error(resp, 413, "too_large",
                       "Content-Length %lld exceeds the limit of %zu bytes",
                       content_length, api->cfg->max_body);
        rejected = 1;
    }
    pthread_rwlock_unlock(&api->cfg_lock);
    return rejected;
}

void orcd_api_handle(orcd_api_t *api, const orcd_request_t *req,
                     orcd_response_t *resp)
{
    orcd_ctx_t c;
    orcd_target_t t;
    const char *m = req->method;

    orcd_resp_init(resp);
    memset(&c, 0, sizeof(c));
    pthread_rwlock_rdlock(&api->cfg_lock);
    c.api   = api;
    c.cfg   = api->cfg;
    c.store = api->store;
    c.req   = req;
    c.resp  = resp;
    if (orcd_api_gate(api, api->cfg, req, &t, resp)) {
        goto out;
    }
    if (t.route == ORCD_ROUTE_HEALTHZ) {
        orcd_resp_json(resp, 200, json_pack("{ss}", "status", "ok"));
        goto out;
    }
    if (t.route == ORCD_ROUTE_METRICS) {
        orcd_api_metrics_render(api, resp);
        goto out;
    }
    memcpy(c.job, t.job, t.job_len);
    c.job[t.job_len] = '\0';
    if (t.id != NULL) {
        char idbuf[24];
        if ((t.id_len == 0) || (t.id_len >= sizeof(idbuf))) {
            goto bad_id;
        }
        memcpy(idbuf, t.id, t.id_len);
        idbuf[t.id_len] = '\0';
        if (orcd_parse_u64(idbuf, &c.id) || (c.id == 0)) {
            goto bad_id;
        }
    }
    switch (t.route) {
    case ORCD_ROUTE_NODES:
        if (!strcmp(m, "POST")) {
            orcd_h_register(&c);
        } else {
            orcd_h_list(&c);
        }
        break;
    case ORCD_ROUTE_NODE:
        if (!strcmp(m, "GET")) {
            orcd_h_node_get(&c);
        } else {
            orcd_h_node_delete(&c);
        }
        break;
    case ORCD_ROUTE_KEEPALIVE:
        orcd_h_keepalive(&c);
        break;
    case ORCD_ROUTE_ENDPOINT:
        if (!strcmp(m, "GET")) {
            orcd_h_endpoint_get(&c);
        } else {
            orcd_h_endpoint_put(&c, !strcmp(m, "POST"));
        }
        break;
    case ORCD_ROUTE_MAILBOX:
        if (!strcmp(m, "GET")) {
            orcd_h_mailbox_get(&c);
        } else {
            orcd_h_mailbox_post(&c);
        }
        break;
    case ORCD_ROUTE_KV:
        orcd_h_kv(&c, &t);
        break;
    default:
        orcd_api_error(resp, 404, "not_found", "no such route");
        break;
    }
    goto out;

bad_id:
    orcd_api_error(resp, 400, "bad_id",
                   "node ids are unsigned 64-bit integers > 0");
out:
    if (resp->status == 0) {
        orcd_api_error(resp, 500, "internal", "no response produced");
    }
    pthread_rwlock_unlock(&api->cfg_lock);
}
