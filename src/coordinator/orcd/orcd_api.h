/*
 * orcd request router: the whole HTTP/JSON API (README "orcd API") as a pure
 * function of (method, path, query, Authorization, body) -> response, on top
 * of the store. No sockets here: orcd_http.c feeds it from libmicrohttpd,
 * the fuzz harness and the unit tests call it directly.
 *
 * Blocking queries: a request that may block returns both the answer to send
 * if nothing happens (empty mailbox, unchanged list, 404 for a missing key)
 * and a watch spec (key range and start revision) plus the wait time. The
 * caller watches the store; on an event or at the deadline it calls
 * orcd_api_handle() again (may_block = 0 once the deadline passed) and sends
 * the newest answer.
 */
#ifndef ORCD_API_H_
#define ORCD_API_H_

#include "orcd.h"
#include "coordinator/store/orc_store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum orcd_route {
    ORCD_ROUTE_UNKNOWN,
    ORCD_ROUTE_HEALTHZ,
    ORCD_ROUTE_METRICS,
    ORCD_ROUTE_NODES,     /* GET list, POST register */
    ORCD_ROUTE_NODE,      /* GET, DELETE */
    ORCD_ROUTE_KEEPALIVE, /* PUT */
    ORCD_ROUTE_ENDPOINT,  /* GET, POST, PUT */
    ORCD_ROUTE_MAILBOX,   /* GET, POST */
    ORCD_ROUTE_KV,        /* GET, PUT, DELETE */
    ORCD_ROUTE_LAST
} orcd_route_t;

typedef struct orcd_query_arg {
    const char *key;
    const char *value; /* may be NULL ("?wait") */
} orcd_query_arg_t;

#define ORCD_MAX_QUERY_ARGS 16

typedef struct orcd_request {
    const char *method;
    const char *path; /* without the query string */
    const orcd_query_arg_t *args;
    size_t nargs;
    const char *authorization; /* header value or NULL */
    const char *body;
    size_t body_len;
    int may_block;
    /* headers of a client that talks to several orcd replicas (or NULL):
     * reads reflect at least revision X-Orc-Min-Index; a retried POST
     * carries its first attempt's Idempotency-Key, X-Orc-Attempt > 1 */
    const char *min_index_text;
    const char *rid;
    const char *attempt_text;
} orcd_request_t;

typedef struct orcd_response {
    unsigned status;
    char *body; /* malloc'd, body_len bytes */
    size_t body_len;
    const char *content_type; /* static */
    const char *allow;        /* static; set with 405 */
    unsigned retry_after;     /* s; set with 429/503 */
    int has_index;
    uint64_t index; /* X-Orc-Index */
    int www_authenticate;
    orcd_route_t route;
    /* blocking: set only if the request may block */
    int block;
    char *watch_key; /* malloc'd */
    char *watch_end; /* malloc'd or NULL (single key) */
    uint64_t watch_rev;
    double wait;         /* seconds, already capped at max_wait */
    int answer_if_fired; /* the body already answers a change
                                      between the read and the watch */
} orcd_response_t;


typedef struct orcd_api orcd_api_t;

/* Takes ownership of cfg (heap-allocated); the store stays the caller's. */
int orcd_api_create(orcd_config_t *cfg, orc_store_t *store, orcd_api_t **api_p);
void orcd_api_destroy(orcd_api_t *api);
/* Replace the configuration (SIGHUP): takes ownership of cfg, frees the old
 * one once no request uses it any more. */
void orcd_api_set_config(orcd_api_t *api, orcd_config_t *cfg);
/* Run fn with the current configuration (read-locked). */
void orcd_api_with_config(orcd_api_t *api,
                          void (*fn)(const orcd_config_t *cfg, void *arg),
                          void *arg);
/* HTTP-layer gauges and counters shown in /metrics (thread-safe) */
void orcd_api_count_connection(orcd_api_t *api, int delta);
void orcd_api_count_long_poll(orcd_api_t *api, int delta);
void orcd_api_count_long_poll_rejected(orcd_api_t *api);
orc_store_t *orcd_api_store(orcd_api_t *api);

/*
 * Checks that need only the request line and headers: route, method, auth,
 * Content-Length (content_length < 0: unknown/chunked). Returns 1 with resp
 * filled if the request is rejected, 0 if it may proceed; *max_body_p gets
 * the largest body this request may carry.
 */
int orcd_api_precheck(orcd_api_t *api, const orcd_request_t *req,
                      long long content_length, size_t *max_body_p,
                      orcd_response_t *resp);
/* Full handling. Always fills resp (status 500 on internal failure). */
void orcd_api_handle(orcd_api_t *api, const orcd_request_t *req,
                     orcd_response_t *resp);
void orcd_api_response_free(orcd_response_t *resp);
/* Fill resp with a JSON error. */
void orcd_api_error(orcd_response_t *resp, unsigned status, const char *code,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Account one finished request. */
void orcd_api_record(orcd_api_t *api, orcd_route_t route, unsigned status,
                     double seconds);
/* Account one woken blocking query: from its watch firing to its handler
 * running again */
void orcd_api_record_wake(orcd_api_t *api, double seconds);
const char *orcd_route_name(orcd_route_t route);

/* The class the store counts key in (orc_store_params_t::classify): node
 * records and mailbox messages, for /metrics (orcd_layout.c) */
unsigned orcd_key_class(const char *key);
/* Store accounting groups: "/jobs/<job>" */
#define ORCD_STORE_GROUP_DEPTH 2

/* Does the store hold only what orcd writes, as it writes it? 0, or -1 with
 * the first offending key in err (orcd_layout.c). */
int orcd_api_check_store(orc_store_t *store, char *err, size_t errlen);

/* Snapshots of the memory store (orcd_snapshot.c). restore: check that the
 * snapshot's directory can be written, remove temporary files of an
 * interrupted write, load the file if there is one (a path that cannot be
 * read is an error, not an empty start) and check its content; 0 or -1
 * (logged). write: 0 or -1 (logged). */
int orcd_snapshot_restore(orc_store_t *store, const char *path);
int orcd_snapshot_write(orc_store_t *store, const char *path);

#ifdef __cplusplus
}
#endif

#endif
