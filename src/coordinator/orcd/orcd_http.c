/*
 * orcd HTTP server on libmicrohttpd.
 *
 * Blocking queries: the handler registers the request as a waiter, creates a
 * store watch and suspends the connection. Exactly one party resumes it:
 *  - the watch callback (store lock held), if the watch fires;
 *  - the timer thread, if it cancels the watch first (deadline or shutdown);
 *  - the handler itself, if either of the above happened between creating
 *    the watch and suspending (the waiter state is still ARMING then).
 * The resumed handler re-runs the router and answers with the newest state.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_http.h"
#include "orcd_listen.h"
#include "coordinator/common/orc_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ORCD_DISCARD_FACTOR 4 /* close after this many max_body discarded */
#define ORCD_MAX_HEADERS    64

typedef enum orcd_wstate {
    ORCD_W_IDLE,
    ORCD_W_ARMING, /* watch created, connection not yet suspended */
    ORCD_W_SUSPENDED,
    ORCD_W_FIRED,     /* watch fired */
    ORCD_W_CANCELLED, /* timer cancelled the watch (deadline/shutdown) */
} orcd_wstate_t;

typedef struct orcd_req orcd_req_t;

/*
 * One HTTP request. Owned by the MHD thread serving its connection, except
 * the waiter fields: wstate is an atomic shared with the watch callback and
 * the timer thread (transitions described at the top); watch_id, deadline_ns
 * and the registry links are protected by orcd_server_t::wlock while the
 * request is in the registry.
 */
struct orcd_req {
    orcd_server_t *srv;
    struct MHD_Connection *conn;
    const char *method; /* MHD's, valid until completion */
    const char *url;
    const char *raw_uri; /* as received, in MHD's buffer */
    size_t raw_uri_len;
    const char *bad;     /* why the request line is refused */
    unsigned bad_status; /* and with what (0: 400) */
    int started;         /* the handler saw the head */
    uint64_t start_ns;
    orc_util_buf_t body; /* max_body is checked before appends */
    size_t max_body;
    size_t discarded;
    int too_large;
    unsigned status;
    orcd_route_t route;
    _Atomic int wstate;
    _Atomic uint64_t fired_ns; /* when its watch fired (0: not yet) */
    uint64_t watch_id;
    int has_deadline;
    uint64_t deadline_ns;
    int registered;
    orcd_req_t *wprev;
    orcd_req_t *wnext;
};

/*
 * wlock protects the waiter registry (waiters, nwaiters), max_long_polls,
 * stopping, timer_wake_ns and wcond (timer thread sleeps on it). active_requests is protected by
 * alock/acond. Everything else is set before the MHD daemon starts.
 */
struct orcd_server {
    orcd_api_t *api;
    orc_store_t *store;
    orcd_listen_t *listen;
    struct MHD_Daemon *daemon;
    unsigned max_long_polls;
    char *tls_cert;
    char *tls_key;
    pthread_mutex_t wlock;
    pthread_cond_t wcond;
    orcd_req_t *waiters;
    size_t nwaiters;
    int stopping;
    int timer_exit;
    uint64_t timer_wake_ns; /* when the timer wakes up next */
    pthread_t timer;
    int timer_started;
    _Atomic int draining; /* read lock-free by handlers */
    pthread_mutex_t alock;
    pthread_cond_t acond;
    long active_requests;
    int shut_down;
};

/* ------------------------------------------------------------- responses */

static enum MHD_Result orcd_http_send(orcd_req_t *r, orcd_response_t *resp,
                                      int close_conn)
{
    struct MHD_Response *mr;
    enum MHD_Result ret;
    char num[32];

    if (resp->body != NULL) {
        mr = MHD_create_response_from_buffer(resp->body_len, resp->body,
                                             MHD_RESPMEM_MUST_FREE);
        if (mr != NULL) {
            resp->body = NULL; /* now MHD's */
        }
    } else {
        mr = MHD_create_response_from_buffer(0, (void *)"",
                                             MHD_RESPMEM_PERSISTENT);
    }
    if (mr == NULL) {
        orcd_error("cannot create a response: out of memory");
        orcd_api_response_free(resp);
        return MHD_NO;
    }
    if (resp->content_type != NULL) {
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE,
                                resp->content_type);
    }
    if (resp->has_index) {
        snprintf(num, sizeof(num), "%llu", (unsigned long long)resp->index);
        MHD_add_response_header(mr, "X-Orc-Index", num);
    }
    if (resp->allow != NULL) {
        MHD_add_response_header(mr, MHD_HTTP_HEADER_ALLOW, resp->allow);
    }
    if (resp->retry_after > 0) {
        snprintf(num, sizeof(num), "%u", resp->retry_after);
        MHD_add_response_header(mr, MHD_HTTP_HEADER_RETRY_AFTER, num);
    }
    if (resp->www_authenticate) {
        MHD_add_response_header(mr, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    }
    if (close_conn || atomic_load(&r->srv->draining)) {
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONNECTION, "close");
    }
    r->status = resp->status;
    r->route  = resp->route;
    orcd_listen_request_received(r->srv->listen, r->conn);
    ret = MHD_queue_response(r->conn, resp->status, mr);
    MHD_destroy_response(mr);
    orcd_api_response_free(resp);
    return ret;
}

/* ----------------------------------------------------------------- waiters */

/* Store watch callback: runs with the store lock held. */
static void orcd_http_watch_fired(void *arg, uint64_t rev)
{
    orcd_req_t *r = arg;
    int expected  = ORCD_W_ARMING;

    (void)rev;
    atomic_store(&r->fired_ns, orc_util_now_ns());
    if (atomic_compare_exchange_strong(&r->wstate, &expected, ORCD_W_FIRED)) {
        return; /* the handler has not suspended yet: it resumes itself */
    }
    /* expected == SUSPENDED: nobody else can resume (the watch is gone) */
    atomic_store(&r->wstate, ORCD_W_FIRED);
    MHD_resume_connection(r->conn);
}

/* Timer side: called with wlock held. */
static void orcd_http_waiter_cancel(orcd_server_t *srv, orcd_req_t *r)
{
    int state = atomic_load(&r->wstate);
    int expected;

    if (((state != ORCD_W_ARMING) && (state != ORCD_W_SUSPENDED)) ||
        (r->watch_id == 0)) {
        return; /* not armed yet, or already fired: retried next tick */
    }
    if (srv->store->ops->watch_cancel(srv->store, r->watch_id) !=
        ORC_STORE_OK) {
        return; /* the callback ran (or runs) and resumes it */
    }
    expected = ORCD_W_ARMING;
    if (atomic_compare_exchange_strong(&r->wstate, &expected,
                                       ORCD_W_CANCELLED)) {
        return;
    }
    atomic_store(&r->wstate, ORCD_W_CANCELLED);
    MHD_resume_connection(r->conn);
}

static void *orcd_http_timer(void *arg)
{
    orcd_server_t *srv = arg;
    struct timespec ts;
    uint64_t now, next;
    orcd_req_t *r;

    pthread_mutex_lock(&srv->wlock);
    while (!srv->timer_exit) {
        now  = orc_util_now_ns();
        next = now + 100000000u; /* at least every 100 ms */
        for (r = srv->waiters; r != NULL; r = r->wnext) {
            if (srv->stopping || (r->deadline_ns <= now)) {
                orcd_http_waiter_cancel(srv, r);
                /* not resumed yet (still arming): look again soon */
                if (atomic_load(&r->wstate) != ORCD_W_CANCELLED) {
                    next = (now + 1000000u < next) ? now + 1000000u : next;
                }
            } else if (r->deadline_ns < next) {
                next = r->deadline_ns;
            }
        }
        srv->timer_wake_ns = next;
        ts.tv_sec          = (time_t)(next / 1000000000u);
        ts.tv_nsec         = (long)(next % 1000000000u);
        pthread_cond_timedwait(&srv->wcond, &srv->wlock, &ts);
    }
    pthread_mutex_unlock(&srv->wlock);
    return NULL;
}

/* Add r to the registry; 0 ok, -1 over max_long_polls, -2 stopping. */
static int orcd_http_waiter_add(orcd_server_t *srv, orcd_req_t *r)
{
    int ret = 0;

    pthread_mutex_lock(&srv->wlock);
    if (srv->stopping) {
        ret = -2;
    } else if (srv->nwaiters >= srv->max_long_polls) {
        ret = -1;
    } else {
        r->wprev = NULL;
        r->wnext = srv->waiters;
        if (srv->waiters != NULL) {
            srv->waiters->wprev = r;
        }
        srv->waiters = r;
        ++srv->nwaiters;
        r->registered = 1;
        r->watch_id   = 0;
        atomic_store(&r->wstate, ORCD_W_IDLE);
        if (r->deadline_ns < srv->timer_wake_ns) {
            /* the timer would sleep past this deadline: wake it */
            pthread_cond_signal(&srv->wcond);
        }
    }
    pthread_mutex_unlock(&srv->wlock);
    if (ret == 0) {
        orcd_api_count_long_poll(srv->api, 1);
    }
    return ret;
}

static void orcd_http_waiter_remove(orcd_server_t *srv, orcd_req_t *r)
{
    if (!r->registered) {
        return;
    }
    pthread_mutex_lock(&srv->wlock);
    if (r->wprev != NULL) {
        r->wprev->wnext = r->wnext;
    } else {
        srv->waiters = r->wnext;
    }
    if (r->wnext != NULL) {
        r->wnext->wprev = r->wprev;
    }
    --srv->nwaiters;
    r->registered = 0;
    pthread_mutex_unlock(&srv->wlock);
    orcd_api_count_long_poll(srv->api, -1);
}

/* ------------------------------------------------------------------ handler */

typedef struct orcd_http_args {
    orcd_query_arg_t args[ORCD_MAX_QUERY_ARGS];
    size_t nargs;
} orcd_http_args_t;

static enum MHD_Result orcd_http_arg_iter(void *cls, enum MHD_ValueKind kind,
                                          const char *key, const char *value)
{
    orcd_http_args_t *a = cls;

    (void)kind;
    if (a->nargs >= ORCD_MAX_QUERY_ARGS) {
        return MHD_NO;
    }
    a->args[a->nargs].key   = key;
    a->args[a->nargs].value = value;
    ++a->nargs;
    return MHD_YES;
}

static void orcd_http_request_init(struct MHD_Connection *conn,
                                   const char *method, const char *url,
                                   orcd_http_args_t *args, orcd_request_t *req)
{
    memset(req, 0, sizeof(*req));
    args->nargs = 0;
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, orcd_http_arg_iter,
                              args);
    req->method = method;
    req->path   = url;
    req->args   = args->args;
    req->nargs  = args->nargs;
    req->authorization =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    req->min_index_text =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Orc-Min-Index");
    req->rid =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Idempotency-Key");
    req->attempt_text =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Orc-Attempt");
}

static long long orcd_http_content_length(struct MHD_Connection *conn)
{
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                    MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long v = 0;
    const char *p;

    if (cl == NULL) {
        return -1;
    }
    for (p = cl; *p != '\0'; ++p) {
        if ((*p < '0') || (*p > '9') || (v > 1000000000000ULL)) {
            return -1;
        }
        v = v * 10 + (unsigned long long)(*p - '0');
    }
    return (p == cl) ? -1 : (long long)v;
}

/* Body arrived (or the request was resumed): run the router. */
static enum MHD_Result orcd_http_process(orcd_req_t *r, const char *method,
                                         const char *url)
{
    orcd_server_t *srv = r->srv;
    orcd_http_args_t args;
    orcd_request_t req;
    orcd_response_t resp;
    uint64_t now, id;
    int attempt, ret, expected;

    for (attempt = 0; attempt < 4; ++attempt) {
        orcd_http_request_init(r->conn, method, url, &args, &req);
        req.body      = r->body.data;
        req.body_len  = r->body.len;
        now           = orc_util_now_ns();
        req.may_block = !atomic_load(&srv->draining) && (attempt < 3) &&
                        (!r->has_deadline || (now < r->deadline_ns));
        orcd_api_handle(srv->api, &req, &resp);
        if (!resp.block) {
            return orcd_http_send(r, &resp, 0);
        }
        if (!r->has_deadline) {
            r->has_deadline = 1;
            r->deadline_ns  = now + (uint64_t)(resp.wait * 1e9);
        }
        ret = orcd_http_waiter_add(srv, r);
        if (ret == -1) {
            orcd_api_count_long_poll_rejected(srv->api);
            orcd_api_error(&resp, 429, "too_many_long_polls",
                           "too many blocking queries in flight");
            resp.retry_after = 1;
            return orcd_http_send(r, &resp, 0);
        }
        if (ret == -2) {
            return orcd_http_send(r, &resp, 0); /* stopping: answer now */
        }
        atomic_store(&r->wstate, ORCD_W_ARMING);
        ret = srv->store->ops->watch_create(srv->store, resp.watch_key,
                                            resp.watch_end, resp.watch_rev,
                                            orcd_http_watch_fired, r, &id);
        if (ret == ORC_STORE_OK) {
            pthread_mutex_lock(&srv->wlock);
            r->watch_id = id;
            pthread_mutex_unlock(&srv->wlock);
            orcd_api_response_free(&resp);
            MHD_suspend_connection(r->conn);
            expected = ORCD_W_ARMING;
            if (!atomic_compare_exchange_strong(&r->wstate, &expected,
                                                ORCD_W_SUSPENDED)) {
                /* fired or cancelled before we suspended */
                MHD_resume_connection(r->conn);
            }
            return MHD_YES;
        }
        orcd_http_waiter_remove(srv, r);
        if (ret != ORC_STORE_FIRED) {
            orcd_api_error(&resp, 500, "internal", "store watch: %s",
                           orc_store_status_str(ret));
            return orcd_http_send(r, &resp, 0);
        }
        /* changed since the read */
        if (resp.answer_if_fired) {
            return orcd_http_send(r, &resp, 0);
        }
        orcd_api_response_free(&resp);
    }
    return MHD_NO; /* not reached: attempt 3 never blocks */
}

/* ------------------------------------------------------ the request head */

/* A byte range libmicrohttpd parsed out of the request head */
typedef struct orcd_span {
    const char *start;
    const char *end;
} orcd_span_t;

typedef struct orcd_head_spans {
    orcd_span_t spans[2 * ORCD_MAX_HEADERS + 3];
    size_t n;
    int overflow;
} orcd_head_spans_t;

static void orcd_head_span_add(orcd_head_spans_t *h, const char *p, size_t len)
{
    if (h->n == sizeof(h->spans) / sizeof(h->spans[0])) {
        h->overflow = 1;
        return;
    }
    h->spans[h->n].start = p;
    h->spans[h->n].end   = p + len;
    ++h->n;
}

static enum MHD_Result orcd_head_header_iter(void *cls, enum MHD_ValueKind kind,
                                             const char *key, size_t key_size,
                                             const char *value,
                                             size_t value_size)
{
    orcd_head_spans_t *h = cls;

    (void)kind;
    orcd_head_span_add(h, key, key_size);
    if (value != NULL) {
        orcd_head_span_add(h, value, value_size);
    }
    return MHD_YES;
}

static int orcd_head_span_cmp(const void *a, const void *b)
{
    const char *x = ((const orcd_span_t *)a)->start;
    const char *y = ((const orcd_span_t *)b)->start;

    return (x > y) - (x < y);
}

/*
 * Does the request head hold nothing but what libmicrohttpd parsed out of
 * it? libmicrohttpd 0.9.75 keeps header values (and the URI) as C strings, so
 * "Bearer <token>\0junk" would read as "Bearer <token>". It parses the head
 * in place in its read buffer, which starts at the method and spans the
 * head's size; there, every byte outside the parsed strings must be a NUL it
 * wrote (line ends, the colon, the request line's spaces) or a blank.
 * Returns NULL, or why the head is refused.
 */
static const char *orcd_http_head_check(orcd_req_t *r, const char *method,
                                        const char *version)
{
    const union MHD_ConnectionInfo *info;
    orcd_head_spans_t h = {.n = 0, .overflow = 0};
    const char *block, *end, *p;
    size_t i;

    info = MHD_get_connection_info(r->conn,
                                   MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    if ((info == NULL) || (r->raw_uri == NULL)) {
        return "malformed request head";
    }
    block = method;
    end   = method + info->header_size;
    orcd_head_span_add(&h, method, strlen(method));
    orcd_head_span_add(&h, r->raw_uri, r->raw_uri_len);
    orcd_head_span_add(&h, version, strlen(version));
    MHD_get_connection_values_n(r->conn, MHD_HEADER_KIND, orcd_head_header_iter,
                                &h);
    if (h.overflow) {
        return "too many header lines";
    }
    for (i = 0; i < h.n; ++i) {
        if ((h.spans[i].start < block) || (h.spans[i].end > end)) {
            /* a value libmicrohttpd copied: a folded header line */
            return "folded header lines are not accepted";
        }
    }
    qsort(h.spans, h.n, sizeof(h.spans[0]), orcd_head_span_cmp);
    p = block;
    for (i = 0; i <= h.n; ++i) {
        const char *stop = (i < h.n) ? h.spans[i].start : end;
        for (; p < stop; ++p) {
            if ((*p != '\0') && (*p != ' ') && (*p != '\t')) {
                return "NUL byte in the request head";
            }
        }
        if ((i < h.n) && (h.spans[i].end > p)) {
            p = h.spans[i].end;
        }
    }
    return NULL;
}

/*
 * MHD_OPTION_URI_LOG_CALLBACK: the request line arrived. Creates the
 * request (it becomes the handler's *con_cls). The URI is still raw here:
 * "%00" (a NUL after unescaping) is refused, and so is a query of more than
 * ORCD_MAX_QUERY_ARGS arguments, which is cut off in libmicrohttpd's buffer
 * before it parses it: 0.9.75 runs out of connection memory on about a
 * thousand arguments and then never answers.
 */
static void *orcd_http_uri(void *cls, const char *uri,
                           struct MHD_Connection *conn)
{
    orcd_server_t *srv = cls;
    char *query        = strchr(uri, '?');
    size_t nargs       = 0;
    orcd_req_t *r;
    const char *p;

    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        orcd_error("out of memory for a request");
        return NULL;
    }
    r->srv         = srv;
    r->conn        = conn;
    r->raw_uri     = uri;
    r->raw_uri_len = strlen(uri);
    r->start_ns    = orc_util_now_ns();
    pthread_mutex_lock(&srv->alock);
    ++srv->active_requests;
    pthread_mutex_unlock(&srv->alock);
    if (strstr(uri, "%00") != NULL) {
        r->bad = "NUL byte (%00) in the URL";
    }
    for (p = query; p != NULL; p = strchr(p + 1, '&')) {
        ++nargs;
    }
    if (nargs > ORCD_MAX_QUERY_ARGS) {
        r->bad        = "too many query arguments";
        r->bad_status = 431;  /* what libmicrohttpd meant to answer */
        query[1]      = '\0'; /* libmicrohttpd's buffer, parsed after we
                                 return */
    }
    return r;
}

/* First call of a request: its head arrived. Refuse it, or wait for its
 * body. */
static enum MHD_Result orcd_http_head(orcd_req_t *r, const char *method,
                                      const char *url, const char *version)
{
    orcd_server_t *srv = r->srv;
    orcd_http_args_t args;
    orcd_request_t req;
    orcd_response_t resp;
    const char *bad;

    r->started = 1;
    r->method  = method;
    r->url     = url;
    memset(&resp, 0, sizeof(resp));
    if (atomic_load(&srv->draining)) {
        orcd_api_error(&resp, 503, "shutting_down", "orcd is shutting down");
        resp.retry_after = 1;
        return orcd_http_send(r, &resp, 1);
    }
    if (orcd_listen_conn_refused(srv->listen, r->conn)) {
        orcd_api_error(&resp, 503, "too_many_connections",
                       "limits.max_connections reached and every connection "
                       "is busy; retry");
        resp.retry_after = 1;
        return orcd_http_send(r, &resp, 1);
    }
    bad = (r->bad != NULL) ? r->bad : orcd_http_head_check(r, method, version);
    if (bad != NULL) {
        orcd_api_error(&resp, (r->bad_status != 0) ? r->bad_status : 400,
                       "bad_request", "%s", bad);
        return orcd_http_send(r, &resp, 1);
    }
    orcd_http_request_init(r->conn, method, url, &args, &req);
    if (orcd_api_precheck(srv->api, &req, orcd_http_content_length(r->conn),
                          &r->max_body, &resp)) {
        /* answered before the body is read; MHD then closes the
         * connection if a body was announced */
        return orcd_http_send(r, &resp, resp.status == 413);
    }
    orcd_api_response_free(&resp);
    return MHD_YES;
}

static enum MHD_Result orcd_http_handler(void *cls, struct MHD_Connection *conn,
                                         const char *url, const char *method,
                                         const char *version,
                                         const char *upload_data,
                                         size_t *upload_data_size,
                                         void **con_cls)
{
    orcd_req_t *r = *con_cls;
    orcd_response_t resp;
    uint64_t fired;
    size_t size;

    (void)cls;
    (void)conn;
    if (r == NULL) {
        return MHD_NO; /* no memory for it (logged) */
    }
    if (!r->started) {
        return orcd_http_head(r, method, url, version);
    }

    if (*upload_data_size > 0) {
        size              = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_large) {
            r->discarded += size;
            /* a chunked body that never ends: stop reading it */
            return (r->discarded > ORCD_DISCARD_FACTOR * r->max_body) ? MHD_NO
                                                                      : MHD_YES;
        }
        if (r->body.len + size > r->max_body) {
            r->too_large = 1;
            r->discarded = r->body.len + size;
            free(r->body.data);
            memset(&r->body, 0, sizeof(r->body));
            return MHD_YES;
        }
        if (orc_util_buf_append(&r->body, upload_data, size)) {
            orcd_error("out of memory for a request body");
            return MHD_NO;
        }
        return MHD_YES;
    }

    if (r->too_large) {
        memset(&resp, 0, sizeof(resp));
        orcd_api_error(&resp, 413, "too_large",
                       "request body exceeds the limit of %zu bytes",
                       r->max_body);
        return orcd_http_send(r, &resp, 1);
    }
    /* the whole request is here, or it was resumed after a watch event, a
     * deadline or shutdown */
    orcd_listen_request_received(r->srv->listen, r->conn);
    orcd_http_waiter_remove(r->srv, r);
    fired = atomic_exchange(&r->fired_ns, 0);
    if (fired != 0) {
        orcd_api_record_wake(r->srv->api,
                             (double)(orc_util_now_ns() - fired) / 1e9);
    }
    return orcd_http_process(r, method, url);
}

static void orcd_http_completed(void *cls, struct MHD_Connection *conn,
                                void **con_cls,
                                enum MHD_RequestTerminationCode toe)
{
    orcd_server_t *srv = cls;
    orcd_req_t *r      = *con_cls;
    double seconds;

    orcd_listen_request_done(srv->listen, conn);
    if (r == NULL) {
        return;
    }
    orcd_http_waiter_remove(srv, r);
    seconds = (double)(orc_util_now_ns() - r->start_ns) / 1e9;
    orcd_api_record(srv->api, r->route, r->status, seconds);
    /* access log: the path never carries a token (those go in a header) */
    orcd_debug("%s %.200s -> %u (%.3f ms)%s",
               (r->method != NULL) ? r->method : "-",
               (r->url != NULL) ? r->url : "-", r->status, seconds * 1e3,
               (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) ? ""
                                                            : " [aborted]");
    free(r->body.data);
    free(r);
    *con_cls = NULL;
    pthread_mutex_lock(&srv->alock);
    if (--srv->active_requests == 0) {
        pthread_cond_broadcast(&srv->acond);
    }
    pthread_mutex_unlock(&srv->alock);
}

static void orcd_http_notify_conn(void *cls, struct MHD_Connection *conn,
                                  void **socket_context,
                                  enum MHD_ConnectionNotificationCode toe)
{
    orcd_server_t *srv = cls;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        orcd_listen_conn_started(srv->listen, conn, socket_context);
        orcd_api_count_connection(srv->api, 1);
    } else {
        orcd_listen_conn_closed(srv->listen, *socket_context);
        *socket_context = NULL;
        orcd_api_count_connection(srv->api, -1);
    }
}

static void orcd_http_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t len;

    (void)cls;
    if (!orcd_log_enabled(ORCD_LOG_DEBUG)) {
        return;
    }
    vsnprintf(msg, sizeof(msg), fmt, ap);
    len = strlen(msg);
    while ((len > 0) && (msg[len - 1] == '\n')) {
        msg[--len] = '\0';
    }
    orcd_log(ORCD_LOG_DEBUG, "libmicrohttpd: %s", msg);
}

/* ---------------------------------------------------------------- lifetime */

/* A TLS certificate or key file (PEM, well under 1 MiB) */
static char *orcd_http_read_file(const char *path, const char *what)
{
    char err[512], *data;
    size_t len;

    data = orc_util_read_file(path, 1024 * 1024, &len, err, sizeof(err));
    if (data == NULL) {
        orcd_error("TLS %s: %s", what, err);
    }
    return data;
}

int orcd_server_start(orcd_api_t *api, const orcd_config_t *cfg,
                      orcd_server_t **srv_p)
{
    struct MHD_OptionItem opts[16];
    unsigned flags, nopt = 0;
    orcd_server_t *srv;
    pthread_condattr_t cattr;
    int ret;

    srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        orcd_error("out of memory");
        return -1;
    }
    srv->api            = api;
    srv->store          = orcd_api_store(api);
    srv->max_long_polls = cfg->max_long_polls;
    pthread_mutex_init(&srv->wlock, NULL);
    pthread_mutex_init(&srv->alock, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->wcond, &cattr);
    pthread_condattr_destroy(&cattr);
    pthread_cond_init(&srv->acond, NULL);

    if (orcd_listen_open(cfg, &srv->listen)) {
        goto err_free;
    }
    /* the logger must be the first option to catch every message */
    opts[nopt++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER,
                                           (intptr_t)orcd_http_mhd_log, NULL};
    /* poll(2), not epoll: libmicrohttpd 0.9.75's epoll loop, after a wait
     * that returned exactly its 128 events, waits again with the timeout it
     * computed before them (up to the idle timeout) while it holds those
     * 128 requests: 128 connections sending at once (64 pairing clients)
     * were not answered until a client gave up. Its poll loop waits once
     * per round. */
    flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
            MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
            MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    if (cfg->tls_cert != NULL) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            orcd_error("this libmicrohttpd has no TLS support");
            goto err_free;
        }
        srv->tls_cert = orcd_http_read_file(cfg->tls_cert, "certificate");
        srv->tls_key  = orcd_http_read_file(cfg->tls_key, "key");
        if ((srv->tls_cert == NULL) || (srv->tls_key == NULL)) {
            goto err_free;
        }
        flags |= MHD_USE_TLS;
        opts[nopt++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0,
                                               srv->tls_cert};
        opts[nopt++] =
            (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, srv->tls_key};
    }
    opts[nopt++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE,
                                           orcd_config_threads(cfg), NULL};
    /* the limits are applied by the listener (orcd_listen.h) */
    opts[nopt++] =
        (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT,
                                ORCD_LISTEN_MAX(cfg->max_connections), NULL};
    opts[nopt++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT,
                                           cfg->idle_timeout, NULL};
    opts[nopt++] = (struct MHD_OptionItem){MHD_OPTION_URI_LOG_CALLBACK,
                                           (intptr_t)orcd_http_uri, srv};
    opts[nopt++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED,
                                           (intptr_t)orcd_http_completed, srv};
    opts[nopt++] =
        (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION,
                                (intptr_t)orcd_http_notify_conn, srv};
    opts[nopt++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};

    ret = pthread_create(&srv->timer, NULL, orcd_http_timer, srv);
    if (ret != 0) {
        errno = ret;
        orcd_error("cannot start the timer thread: %m");
        goto err_free;
    }
    srv->timer_started = 1;

    srv->daemon = MHD_start_daemon(flags, 0, NULL, NULL, orcd_http_handler, srv,
                                   MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (srv->daemon == NULL) {
        orcd_error("cannot start the HTTP server (libmicrohttpd)");
        goto err_free;
    }
    if (orcd_listen_run(srv->listen, srv->daemon)) {
        goto err_free;
    }
    *srv_p = srv;
    return 0;

err_free:
    orcd_server_destroy(srv);
    return -1;
}

void orcd_server_reload(orcd_server_t *srv, const orcd_config_t *cfg)
{
    pthread_mutex_lock(&srv->wlock);
    srv->max_long_polls = cfg->max_long_polls; /* waiters above it finish */
    pthread_mutex_unlock(&srv->wlock);
}

unsigned orcd_server_port(orcd_server_t *srv)
{
    return orcd_listen_port(srv->listen);
}

void orcd_server_shutdown(orcd_server_t *srv, double timeout)
{
    struct timespec ts;
    size_t leftover;
    int i;

    if (srv->shut_down) {
        return;
    }
    srv->shut_down = 1;
    atomic_store(&srv->draining, 1);
    orcd_listen_stop(srv->listen);
    /* answer every blocking query now: the timer cancels them all */
    pthread_mutex_lock(&srv->wlock);
    srv->stopping = 1;
    pthread_cond_signal(&srv->wcond);
    pthread_mutex_unlock(&srv->wlock);

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)timeout;
    ts.tv_nsec += (long)((timeout - (double)(time_t)timeout) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&srv->alock);
    while (srv->active_requests > 0) {
        if (pthread_cond_timedwait(&srv->acond, &srv->alock, &ts) ==
            ETIMEDOUT) {
            orcd_warn("%ld requests still running at shutdown",
                      srv->active_requests);
            break;
        }
    }
    pthread_mutex_unlock(&srv->alock);

    /* MHD must not be stopped with suspended connections. Waiters are
     * active requests, so normally none is left here; if the wait above
     * timed out, give the timer up to a second more to resume them. */
    pthread_mutex_lock(&srv->wlock);
    for (i = 0; (srv->nwaiters > 0) && (i < 1000); ++i) {
        pthread_mutex_unlock(&srv->wlock);
        usleep(1000);
        pthread_mutex_lock(&srv->wlock);
    }
    leftover = srv->nwaiters;
    pthread_mutex_unlock(&srv->wlock);
    if (leftover > 0) {
        orcd_error("%zu blocking queries could not be resumed; leaving the "
                   "HTTP threads running",
                   leftover);
        return;
    }
    if (srv->daemon != NULL) {
        MHD_stop_daemon(srv->daemon);
        srv->daemon = NULL;
    }
}

void orcd_server_destroy(orcd_server_t *srv)
{
    if (srv == NULL) {
        return;
    }
    if (srv->daemon != NULL) {
        orcd_server_shutdown(srv, 5);
        if (srv->daemon != NULL) {
            return; /* threads still use srv: leak it, the process exits */
        }
    }
    if (srv->timer_started) {
        pthread_mutex_lock(&srv->wlock);
        srv->timer_exit = 1;
        pthread_cond_signal(&srv->wcond);
        pthread_mutex_unlock(&srv->wlock);
        pthread_join(srv->timer, NULL);
    }
    orcd_listen_destroy(srv->listen); /* after the daemon: it reports closes */
    free(srv->tls_cert);
    free(srv->tls_key);
    pthread_cond_destroy(&srv->wcond);
    pthread_cond_destroy(&srv->acond);
    pthread_mutex_destroy(&srv->wlock);
    pthread_mutex_destroy(&srv->alock);
    free(srv);
}
