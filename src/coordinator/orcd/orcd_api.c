/*
 * orcd request router: the route table, the checks every request passes
 * (route, method, job name, auth), response helpers and the API object.
 * The handlers live in one file per resource: orcd_nodes.c,
 * orcd_endpoint.c, orcd_mailbox.c, orcd_kv.c, orcd_metrics.c.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define ORCD_ALLOW_MAX 32

/* ------------------------------------------------------------ route table */

typedef enum orcd_auth_kind {
    ORCD_AUTH_NONE,    /* never (health) */
    ORCD_AUTH_METRICS, /* any job's token, if auth.metrics_auth */
    ORCD_AUTH_JOB,     /* a token of the {job} in the path */
} orcd_auth_kind_t;

/*
 * One route: method and path pattern. Pattern segments are literals or
 * captures: {job} (a job name), {id} (a node id), {key} (the rest of the
 * path, one or more segments). Entries of one resource share its route id
 * and pattern; their methods in table order make its Allow header.
 */
typedef struct orcd_route_entry {
    const char *method;
    const char *pattern;
    orcd_route_t route;
    orcd_auth_kind_t auth;
    void (*handler)(orcd_ctx_t *c);
} orcd_route_entry_t;

static void orcd_h_healthz(orcd_ctx_t *c);

#define ORCD_NODE_PATH "/v1/jobs/{job}/nodes/{id}"

static const orcd_route_entry_t orcd_routes[] = {
    {"GET", "/healthz", ORCD_ROUTE_HEALTHZ, ORCD_AUTH_NONE, orcd_h_healthz},
    {"GET", "/metrics", ORCD_ROUTE_METRICS, ORCD_AUTH_METRICS, orcd_h_metrics},
    {"GET", "/v1/jobs/{job}/nodes", ORCD_ROUTE_NODES, ORCD_AUTH_JOB,
     orcd_h_list},
    {"POST", "/v1/jobs/{job}/nodes", ORCD_ROUTE_NODES, ORCD_AUTH_JOB,
     orcd_h_register},
    {"GET", ORCD_NODE_PATH, ORCD_ROUTE_NODE, ORCD_AUTH_JOB, orcd_h_node_get},
    {"DELETE", ORCD_NODE_PATH, ORCD_ROUTE_NODE, ORCD_AUTH_JOB,
     orcd_h_node_delete},
    {"PUT", ORCD_NODE_PATH "/keepalive", ORCD_ROUTE_KEEPALIVE, ORCD_AUTH_JOB,
     orcd_h_keepalive},
    {"GET", ORCD_NODE_PATH "/rdma/endpoint", ORCD_ROUTE_ENDPOINT, ORCD_AUTH_JOB,
     orcd_h_endpoint_get},
    {"POST", ORCD_NODE_PATH "/rdma/endpoint", ORCD_ROUTE_ENDPOINT,
     ORCD_AUTH_JOB, orcd_h_endpoint_post},
    {"PUT", ORCD_NODE_PATH "/rdma/endpoint", ORCD_ROUTE_ENDPOINT, ORCD_AUTH_JOB,
     orcd_h_endpoint_put},
    {"GET", ORCD_NODE_PATH "/mailbox", ORCD_ROUTE_MAILBOX, ORCD_AUTH_JOB,
     orcd_h_mailbox_get},
    {"POST", ORCD_NODE_PATH "/mailbox", ORCD_ROUTE_MAILBOX, ORCD_AUTH_JOB,
     orcd_h_mailbox_post},
    {"GET", "/v1/jobs/{job}/kv/{key}", ORCD_ROUTE_KV, ORCD_AUTH_JOB,
     orcd_h_kv_get},
    {"PUT", "/v1/jobs/{job}/kv/{key}", ORCD_ROUTE_KV, ORCD_AUTH_JOB,
     orcd_h_kv_put},
    {"DELETE", "/v1/jobs/{job}/kv/{key}", ORCD_ROUTE_KV, ORCD_AUTH_JOB,
     orcd_h_kv_delete},
};

#define ORCD_NROUTES (sizeof(orcd_routes) / sizeof(orcd_routes[0]))

const char *orcd_route_name(orcd_route_t route)
{
    static const char *names[ORCD_ROUTE_LAST] = {"unknown",  "healthz",
                                                 "metrics",  "nodes",
                                                 "node",     "keepalive",
                                                 "endpoint", "mailbox",
                                                 "kv"};

    return ((unsigned)route < ORCD_ROUTE_LAST) ? names[route] : "unknown";
}

/* Allow header of each route, from the table (built once) */
static char orcd_allow[ORCD_ROUTE_LAST][ORCD_ALLOW_MAX];
static pthread_once_t orcd_allow_once = PTHREAD_ONCE_INIT;

static void orcd_allow_build(void)
{
    size_t i, len;
    char *a;

    for (i = 0; i < ORCD_NROUTES; ++i) {
        a   = orcd_allow[orcd_routes[i].route];
        len = strlen(a);
        snprintf(a + len, ORCD_ALLOW_MAX - len, "%s%s", (len > 0) ? ", " : "",
                 orcd_routes[i].method);
    }
}

/* What a path matched: the first entry of its route and the captures */
typedef struct orcd_target {
    const orcd_route_entry_t *entry; /* NULL: no route */
    const char *job;                 /* points into the path */
    size_t job_len;
    const char *id;
    size_t id_len;
    const char *key; /* rest of the path */
} orcd_target_t;

/* Does path match pattern? Captures go to t. */
static int orcd_pattern_match(const char *pattern, const char *path,
                              orcd_target_t *t)
{
    const char *p = pattern, *s = path, *pe, *se;
    size_t plen, slen;

    while ((*p == '/') && (*s == '/')) {
        ++p;
        ++s;
        pe   = strchrnul(p, '/');
        se   = strchrnul(s, '/');
        plen = (size_t)(pe - p);
        slen = (size_t)(se - s);
        if ((plen == 5) && !memcmp(p, "{key}", 5)) {
            t->key = s; /* the rest, at least one segment */
            return (*s != '\0') && (*pe == '\0');
        } else if ((plen == 5) && !memcmp(p, "{job}", 5)) {
            t->job     = s;
            t->job_len = slen;
        } else if ((plen == 4) && !memcmp(p, "{id}", 4)) {
            t->id     = s;
            t->id_len = slen;
        } else if ((plen != slen) || memcmp(p, s, plen)) {
            return 0;
        }
        p = pe;
        s = se;
    }
    return (*p == '\0') && (*s == '\0');
}

static void orcd_route_match(const char *path, orcd_target_t *t)
{
    size_t i;

    memset(t, 0, sizeof(*t));
    if (path == NULL) {
        return;
    }
    for (i = 0; i < ORCD_NROUTES; ++i) {
        if (((i == 0) || (orcd_routes[i].route != orcd_routes[i - 1].route)) &&
            orcd_pattern_match(orcd_routes[i].pattern, path, t)) {
            t->entry = &orcd_routes[i];
            return;
        }
        memset(t, 0, sizeof(*t));
    }
}

/* The entry of t's route for method, or NULL */
static const orcd_route_entry_t *orcd_route_method(const orcd_target_t *t,
                                                   const char *method)
{
    const orcd_route_entry_t *e;

    for (e = t->entry;
         (e < orcd_routes + ORCD_NROUTES) && (e->route == t->entry->route);
         ++e) {
        if ((method != NULL) && !strcmp(e->method, method)) {
            return e;
        }
    }
    return NULL;
}

/* ----------------------------------------------------------------- auth */

/* Constant-time equality (time depends on the lengths only). */
static int orcd_ct_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n        = (alen > blen) ? alen : blen, i;
    unsigned char d = (alen != blen);
    unsigned char x, y;

    for (i = 0; i < n; ++i) {
        x = (i < alen) ? (unsigned char)a[i] : 0;
        y = (i < blen) ? (unsigned char)b[i] : 0;
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
    if ((job != NULL) && ((strlen(cfg->tokens[match].job) != job_len) ||
                          strncmp(cfg->tokens[match].job, job, job_len))) {
        orcd_api_error(resp, 403, "forbidden",
                       "the token does not belong to job '%.*s'", (int)job_len,
                       job);
        return -1;
    }
    return 0;
}

/*
 * Route, method, job name and auth. Returns the entry to run, or NULL with
 * resp filled (404, 405, 400, 401, 403).
 */
static const orcd_route_entry_t *orcd_api_gate(const orcd_config_t *cfg,
                                               const orcd_request_t *req,
                                               orcd_target_t *t,
                                               orcd_response_t *resp)
{
    const orcd_route_entry_t *e;

    orcd_route_match(req->path, t);
    if (t->entry == NULL) {
        resp->route = ORCD_ROUTE_UNKNOWN;
        orcd_api_error(resp, 404, "not_found", "no such route");
        return NULL;
    }
    resp->route = t->entry->route;
    e           = orcd_route_method(t, req->method);
    if (e == NULL) {
        pthread_once(&orcd_allow_once, orcd_allow_build);
        orcd_api_error(resp, 405, "method_not_allowed", "allowed methods: %s",
                       orcd_allow[t->entry->route]);
        resp->allow = orcd_allow[t->entry->route];
        return NULL;
    }
    switch (e->auth) {
    case ORCD_AUTH_NONE:
        return e;
    case ORCD_AUTH_METRICS:
        return (cfg->auth_enabled && cfg->metrics_auth &&
                orcd_auth_check(cfg, req, NULL, 0, resp))
                   ? NULL
                   : e;
    case ORCD_AUTH_JOB:
        break;
    }
    if (!orc_util_name_valid(t->job, t->job_len, 0)) {
        orcd_api_error(resp, 400, "bad_job",
                       "job names are 1..%d characters of A-Z a-z 0-9 . _ -",
                       ORCD_NAME_MAX);
        return NULL;
    }
    if (cfg->auth_enabled &&
        orcd_auth_check(cfg, req, t->job, t->job_len, resp)) {
        return NULL;
    }
    return e;
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

void orcd_resp_set_body(orcd_response_t *resp, unsigned status, char *body,
                        size_t len)
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

void orcd_resp_json(orcd_response_t *resp, unsigned status, json_t *o)
{
    char *s = (o != NULL) ? json_dumps(o, JSON_COMPACT) : NULL;

    json_decref(o);
    if (s == NULL) {
        orcd_api_error(resp, 500, "internal", "out of memory");
        return;
    }
    orcd_resp_set_body(resp, status, s, strlen(s));
}

void orcd_resp_empty(orcd_response_t *resp, unsigned status)
{
    orcd_resp_set_body(resp, status, NULL, 0);
    resp->content_type = NULL;
}

void orcd_resp_store_error(orcd_response_t *resp, int status)
{
    if (status == ORC_STORE_EUNAVAIL) {
        orcd_api_error(resp, 503, "store_unavailable",
                       "the store cannot be reached; retry");
        resp->retry_after = 1;
        return;
    }
    orcd_api_error(resp, 500, "internal", "store: %s",
                   orc_store_status_str(status));
}

int orcd_resp_block(orcd_response_t *resp, const char *key,
                    const char *range_end, uint64_t start_rev, double wait)
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

void orcd_buf_printf(orcd_buf_t *b, const char *fmt, ...)
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

/* ----------------------------------------------------------------- request */

const char *orcd_query(const orcd_request_t *req, const char *key,
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

int orcd_query_wait(orcd_ctx_t *c, double *wait_p)
{
    const char *s = orcd_query(c->req, "wait", NULL);
    double wait   = 0;

    if ((s != NULL) && orc_util_parse_seconds(s, HUGE_VAL, &wait)) {
        orcd_api_error(c->resp, 400, "bad_query",
                       "wait must be a number of seconds");
        return -1;
    }
    *wait_p = (wait > c->cfg->max_wait) ? c->cfg->max_wait : wait;
    return 0;
}

int orcd_query_u64(orcd_ctx_t *c, const char *key, uint64_t *value_p,
                   int *present_p)
{
    const char *s = orcd_query(c->req, key, present_p);

    if ((s != NULL) && orc_util_parse_u64(s, value_p)) {
        orcd_api_error(c->resp, 400, "bad_query",
                       "%s must be an unsigned integer", key);
        return -1;
    }
    return 0;
}

void orcd_key(char *buf, const orcd_ctx_t *c, const char *fmt, ...)
{
    va_list ap;
    int n;

    n = snprintf(buf, ORCD_KEY_MAX, "/jobs/%s", c->job);
    va_start(ap, fmt);
    vsnprintf(buf + n, ORCD_KEY_MAX - (size_t)n, fmt, ap);
    va_end(ap);
}

json_t *orcd_body_json(orcd_ctx_t *c, size_t max, int want_object)
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
    o = json_loadb(c->req->body, c->req->body_len, JSON_REJECT_DUPLICATES,
                   &err);
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

static void orcd_h_healthz(orcd_ctx_t *c)
{
    if (c->store->ops->health(c->store) != ORC_STORE_OK) {
        orcd_resp_json(c->resp, 503,
                       json_pack("{ssss}", "status", "unavailable", "detail",
                                 "the store cannot be reached"));
        c->resp->retry_after = 1;
        return;
    }
    orcd_resp_json(c->resp, 200, json_pack("{ss}", "status", "ok"));
}

/* ------------------------------------------------------------ store access */

void orcd_seen(orcd_ctx_t *c, uint64_t rev)
{
    if (rev > c->rev) {
        c->rev = rev;
    }
}

/* ms one store call may take (store.etcd.timeout; 0 in memory) */
static uint64_t orcd_call_ms(const orcd_config_t *cfg)
{
    return (cfg->store_backend == ORCD_STORE_ETCD)
               ? (uint64_t)(cfg->etcd.timeout * 1000)
               : 0;
}

int orcd_call_fits(const orcd_ctx_t *c)
{
    return orc_util_now_ms() + orcd_call_ms(c->cfg) <= c->deadline;
}

int orcd_range(orcd_ctx_t *c, const char *key, const char *range_end,
               unsigned flags, orc_store_range_result_t *res)
{
    int status;

    if (!orcd_call_fits(c)) {
        return ORC_STORE_EUNAVAIL;
    }
    status =
        c->store->ops->range(c->store, key, range_end, flags, 0, c->floor, res);
    if (status == ORC_STORE_OK) {
        orcd_seen(c, res->revision);
    }
    return status;
}

int orcd_get(orcd_ctx_t *c, const char *key, orc_store_kv_t *kv)
{
    uint64_t rev = 0;
    int status;

    if (!orcd_call_fits(c)) {
        return ORC_STORE_EUNAVAIL;
    }
    status = orc_store_get(c->store, key, c->floor, kv, &rev);
    orcd_seen(c, rev);
    return status;
}

int orcd_txn(orcd_ctx_t *c, const orc_store_cmp_t *cmps, size_t ncmp,
             const orc_store_op_t *ops, size_t nops,
             orc_store_txn_result_t *res)
{
    int status;

    if (!orcd_call_fits(c)) {
        memset(res, 0, sizeof(*res));
        return ORC_STORE_EUNAVAIL;
    }
    status = c->store->ops->txn(c->store, cmps, ncmp, ops, nops, res);
    if ((status == ORC_STORE_OK) || (status == ORC_STORE_ECOMPARE)) {
        /* later reads see this write, or what made the compare fail */
        orcd_seen(c, res->revision);
        if (res->revision > c->floor) {
            c->floor = res->revision;
        }
    }
    return status;
}

int orcd_quota(orcd_ctx_t *c, uint64_t keys, uint64_t bytes)
{
    const orcd_config_t *cfg = c->cfg;
    char group[ORCD_KEY_MAX];
    orc_store_stats_t st;
    uint64_t jkeys, jbytes;

    c->store->ops->stats(c->store, &st);
    orcd_key(group, c, "%s", "");
    c->store->ops->usage(c->store, group, &jkeys, &jbytes);
    if ((jkeys + keys > cfg->max_keys_per_job) ||
        (jbytes + bytes > cfg->max_bytes_per_job)) {
        orcd_api_error(c->resp, 429, "quota_exceeded",
                       "job %s holds %" PRIu64 " keys and %" PRIu64 " bytes "
                       "(limits.max_keys_per_job %" PRIu64
                       ", max_bytes_per_job %" PRIu64 ")",
                       c->job, jkeys, jbytes, cfg->max_keys_per_job,
                       cfg->max_bytes_per_job);
        c->resp->retry_after = 1;
        return -1;
    }
    if ((st.keys + keys > cfg->max_keys) ||
        (st.bytes + bytes > cfg->max_bytes)) {
        orcd_api_error(c->resp, 429, "quota_exceeded",
                       "orcd holds %" PRIu64 " keys and %" PRIu64 " bytes "
                       "(limits.max_keys %" PRIu64 ", max_bytes %" PRIu64 ")",
                       st.keys, st.bytes, cfg->max_keys, cfg->max_bytes);
        c->resp->retry_after = 1;
        return -1;
    }
    return 0;
}

orcd_counter_t *orcd_counter_lock(orcd_ctx_t *c, uint64_t id)
{
    uint64_t until = orc_util_now_ms() + ORCD_COUNTER_WAIT_MS;
    uint64_t last  = c->deadline - orcd_call_ms(c->cfg); /* a call after */

    until = (until < last) ? until : last;
    return orcd_counter_take(&c->api->counters, c->job, id, until);
}

void orcd_counter_unlock(orcd_ctx_t *c, orcd_counter_t *counter)
{
    orcd_counter_give(&c->api->counters, counter);
}

const char *orcd_retry_rid(const orcd_ctx_t *c)
{
    return (c->attempt > 1) ? c->req->rid : NULL;
}

/* ------------------------------------------------------------- public API */

int orcd_api_create(orcd_config_t *cfg, orc_store_t *store, orcd_api_t **api_p)
{
    orcd_api_t *api = calloc(1, sizeof(*api));

    if (api == NULL) {
        return -1;
    }
    if (pthread_rwlock_init(&api->cfg_lock, NULL) != 0) {
        free(api);
        return -1;
    }
    orcd_counters_init(&api->counters);
    pthread_mutex_init(&api->rid_lock, NULL);
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
    orcd_counters_fini(&api->counters);
    pthread_mutex_destroy(&api->rid_lock);
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

int orcd_api_precheck(orcd_api_t *api, const orcd_request_t *req,
                      long long content_length, size_t *max_body_p,
                      orcd_response_t *resp)
{
    orcd_target_t t;
    int rejected;

    memset(resp, 0, sizeof(*resp));
    pthread_rwlock_rdlock(&api->cfg_lock);
    rejected    = (orcd_api_gate(api->cfg, req, &t, resp) == NULL);
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

/* The client's headers for replicas: -1 with a 400 filled if malformed */
static int orcd_api_client_headers(const orcd_request_t *req, orcd_ctx_t *c)
{
    const char *rid  = req->rid;
    uint64_t attempt = 1;

    if ((req->min_index_text != NULL) &&
        orc_util_parse_u64(req->min_index_text, &c->floor)) {
        orcd_api_error(c->resp, 400, "bad_header",
                       "X-Orc-Min-Index must be an unsigned integer");
        return -1;
    }
    if ((req->attempt_text != NULL) &&
        (orc_util_parse_u64(req->attempt_text, &attempt) || (attempt < 1) ||
         (attempt > 1000))) {
        orcd_api_error(c->resp, 400, "bad_header",
                       "X-Orc-Attempt must be an integer in 1..1000");
        return -1;
    }
    c->attempt = (unsigned)attempt;
    if ((rid != NULL) && !orcd_rid_valid(rid)) {
        orcd_api_error(c->resp, 400, "bad_header",
                       "Idempotency-Key must be 1..%d characters of "
                       "A-Z a-z 0-9 _ -",
                       ORCD_RID_MAX);
        return -1;
    }
    return 0;
}

/* The {id} capture: a node id > 0; -1 with a 400 filled otherwise */
static int orcd_api_parse_id(const orcd_target_t *t, orcd_ctx_t *c)
{
    char idbuf[24];

    if ((t->id_len == 0) || (t->id_len >= sizeof(idbuf))) {
        goto bad;
    }
    memcpy(idbuf, t->id, t->id_len);
    idbuf[t->id_len] = '\0';
    if (orc_util_parse_u64(idbuf, &c->id) || (c->id == 0)) {
        goto bad;
    }
    return 0;
bad:
    orcd_api_error(c->resp, 400, "bad_id",
                   "node ids are unsigned 64-bit integers > 0");
    return -1;
}

void orcd_api_handle(orcd_api_t *api, const orcd_request_t *req,
                     orcd_response_t *resp)
{
    const orcd_route_entry_t *e;
    orcd_target_t t;
    orcd_ctx_t c;

    memset(resp, 0, sizeof(*resp));
    memset(&c, 0, sizeof(c));
    pthread_rwlock_rdlock(&api->cfg_lock);
    c.api   = api;
    c.cfg   = api->cfg;
    c.store = api->store;
    c.req   = req;
    c.resp  = resp;
    /* twice one call's time; none in memory (only the counter lock waits) */
    c.deadline = (orcd_call_ms(c.cfg) > 0)
                     ? orc_util_now_ms() + 2 * orcd_call_ms(c.cfg)
                     : UINT64_MAX;
    e          = orcd_api_gate(api->cfg, req, &t, resp);
    if (e == NULL) {
        goto out;
    }
    if (t.job != NULL) {
        memcpy(c.job, t.job, t.job_len);
        c.job[t.job_len] = '\0';
    }
    c.kv_key = t.key;
    if (orcd_api_client_headers(req, &c) ||
        ((t.id != NULL) && orcd_api_parse_id(&t, &c))) {
        goto out;
    }
    e->handler(&c);
    /* every answer says which revision it reflects */
    if (!resp->has_index && (c.rev > 0) && (resp->status < 500)) {
        resp->has_index = 1;
        resp->index     = c.rev;
    }
out:
    if (resp->status == 0) {
        orcd_api_error(resp, 500, "internal", "no response produced");
    }
    pthread_rwlock_unlock(&api->cfg_lock);
}
