/*
 * orcd router internals shared by the resource files (orcd_nodes.c,
 * orcd_endpoint.c, orcd_mailbox.c, orcd_kv.c, orcd_metrics.c) and the router
 * itself (orcd_api.c). Not for use outside the router.
 *
 * Store layout (per job J, ids zero-padded to 20 digits so keys sort by id):
 *   /jobs/J/meta/ids            node id counter: its version is the last id
 *   /jobs/J/nodes/ID            node record {host, pid, labels, ttl}; lease
 *   /jobs/J/nodes/ID/ep         endpoint record (opaque JSON object); lease
 *   /jobs/J/mbox/ID/seq         mailbox counter: version - 1 = last seq; lease
 *   /jobs/J/mbox/ID/m/SEQ       queued message {from, body}; lease
 *   /jobs/J/gone/ID             node deleted explicitly (404, not 410)
 *   /jobs/J/kv/KEY              kv value (JSON text); optional node lease
 *   /jobs/J/rid/RID             what the POST with Idempotency-Key RID did:
 *                               {"id", "ttl"} (registration; on the node's
 *                               lease) or {"node", "seq"} (mailbox post; on
 *                               the replica's rid lease, ORCD_RID_TTL)
 *   /jobs/J/mbox/ID/ack         written by earlier orcd versions (the last
 *                               acknowledged messages' request ids); read by
 *                               nothing, accepted in a snapshot
 * Every node owns one lease; everything it published is attached to it, so
 * expiry or DELETE removes it all in one revision and watchers see it.
 *
 * Retried requests: a client that lost a POST's answer sends it again with
 * the same Idempotency-Key and X-Orc-Attempt > 1. The transaction that
 * registers a node or stores a message also creates /rid/RID, on condition
 * that it does not exist yet: of two attempts of one request, whatever the
 * order their transactions reach the store in (an attempt may still be in
 * flight in etcd when orcd gave up on it and the client retried), exactly
 * one does the work and the other answers what /rid/RID says.
 */
#ifndef ORCD_API_INT_H_
#define ORCD_API_INT_H_

#include "orcd_api.h"
#include "orcd_counter.h"
#include "coordinator/common/orc_util.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#define ORCD_KEY_MAX         512
#define ORCD_STATUS_SLOTS    16
#define ORCD_LATENCY_SLOTS   15
#define ORCD_TXN_RETRIES     64
#define ORCD_RID_MAX         64
#define ORCD_COUNTER_WAIT_MS 2000
#define ORCD_RID_TTL         60 /* s; a post's /rid/ key lives >= half */

/* Key classes counted by the store (orcd_key_class) */
enum {
    ORCD_CLASS_OTHER,
    ORCD_CLASS_NODE,
    ORCD_CLASS_MESSAGE,
};

/*
 * Request statistics shared by all HTTP threads: atomics updated with relaxed
 * ordering (counters only; nothing synchronises on them).
 */
typedef struct orcd_metrics {
    _Atomic uint64_t requests[ORCD_ROUTE_LAST][ORCD_STATUS_SLOTS];
    _Atomic uint64_t latency[ORCD_ROUTE_LAST][ORCD_LATENCY_SLOTS];
    _Atomic uint64_t latency_sum_us[ORCD_ROUTE_LAST];
    _Atomic uint64_t wake[ORCD_LATENCY_SLOTS];
    _Atomic uint64_t wake_sum_us;
    _Atomic int64_t connections;
    _Atomic int64_t long_polls;
    _Atomic uint64_t long_polls_rejected;
} orcd_metrics_t;

/*
 * cfg is swapped by orcd_api_set_config() under the write lock; every request
 * holds the read lock while it runs, so a configuration is freed only when
 * nothing uses it. metrics: atomics (see orcd_metrics_t).
 *
 * counters: a request holds one (orcd_counter_lock) while it takes the
 * next value of a counter (a job's node ids, a mailbox's seq) by
 * compare-and-swap, so that this orcd's requests for one counter queue
 * instead of failing each other's compare: on etcd each try is a round
 * trip, and twelve posters racing made one lose ORCD_TXN_RETRIES times in a
 * row. Other replicas still race through the compare; that is what keeps
 * the counter right, the lock only keeps it fair here. Held across store
 * calls (each bounded by the store's timeout), never with another lock;
 * waited for at most ORCD_COUNTER_WAIT_MS (a holder stuck on an etcd
 * election must not queue every HTTP thread behind it: the waiters answer
 * 503 and their clients try another replica).
 *
 * rid_lease, rid_lease_ms: the lease a mailbox post's /rid/ key is put on
 * (granted with ORCD_RID_TTL, replaced once ORCD_RID_TTL / 2 old, so a key
 * lives between half and all of it), and when it was granted (monotonic
 * ms); read and replaced under rid_lock, which is held across the grant.
 */
struct orcd_api {
    pthread_rwlock_t cfg_lock;
    orcd_config_t *cfg;
    orc_store_t *store;
    orcd_metrics_t metrics;
    orcd_counters_t counters; /* its own lock (orcd_counter.h) */
    pthread_mutex_t rid_lock;
    uint64_t rid_lease;
    uint64_t rid_lease_ms;
};

/* One request being handled: what the route captured, and where to answer */
typedef struct orcd_ctx {
    orcd_api_t *api;
    const orcd_config_t *cfg;
    orc_store_t *store;
    const orcd_request_t *req;
    orcd_response_t *resp;
    char job[ORCD_NAME_MAX + 1];
    uint64_t id;        /* {id} of the route, 0 if none */
    const char *kv_key; /* {key} of the route (rest of the path) */
    uint64_t floor;     /* reads at this revision or later */
    uint64_t rev;       /* newest revision seen (X-Orc-Index) */
    unsigned attempt;   /* X-Orc-Attempt, 1 if none */
    uint64_t deadline;  /* monotonic ms: a write's store calls end by then
                         * (orcd_call_fits) */
} orcd_ctx_t;

/* Handlers, one per (method, route) of the route table in orcd_api.c */
void orcd_h_register(orcd_ctx_t *c);
void orcd_h_list(orcd_ctx_t *c);
void orcd_h_node_get(orcd_ctx_t *c);
void orcd_h_node_delete(orcd_ctx_t *c);
void orcd_h_keepalive(orcd_ctx_t *c);
void orcd_h_endpoint_get(orcd_ctx_t *c);
void orcd_h_endpoint_post(orcd_ctx_t *c);
void orcd_h_endpoint_put(orcd_ctx_t *c);
void orcd_h_mailbox_post(orcd_ctx_t *c);
void orcd_h_mailbox_get(orcd_ctx_t *c);
void orcd_h_kv_put(orcd_ctx_t *c);
void orcd_h_kv_get(orcd_ctx_t *c);
void orcd_h_kv_delete(orcd_ctx_t *c);
void orcd_h_metrics(orcd_ctx_t *c);

/* ------------------------------------------------- responses (orcd_api.c) */

void orcd_resp_set_body(orcd_response_t *resp, unsigned status, char *body,
                        size_t len);
/* JSON body from o (reference stolen); 500 if o is NULL */
void orcd_resp_json(orcd_response_t *resp, unsigned status, json_t *o);
void orcd_resp_empty(orcd_response_t *resp, unsigned status);
void orcd_resp_store_error(orcd_response_t *resp, int status);
/* Make the response a blocking one (watch [key, range_end) from start_rev);
 * -1 with a 500 filled on failure */
int orcd_resp_block(orcd_response_t *resp, const char *key,
                    const char *range_end, uint64_t start_rev, double wait);

/* ------------------------------------------- store access (orcd_api.c) */

/* The request's reads and writes: read at c->floor or later (the client's
 * X-Orc-Min-Index and this request's own writes), c->rev and c->floor
 * raised by what they see and write. Return the store's status. */
int orcd_range(orcd_ctx_t *c, const char *key, const char *range_end,
               unsigned flags, orc_store_range_result_t *res);
int orcd_get(orcd_ctx_t *c, const char *key, orc_store_kv_t *kv);
int orcd_txn(orcd_ctx_t *c, const orc_store_cmp_t *cmps, size_t ncmp,
             const orc_store_op_t *ops, size_t nops,
             orc_store_txn_result_t *res);
/* Take the lock of counter `id` of the request's job (0: its node ids),
 * see struct orcd_api: the counter (to unlock), or NULL if it stayed taken
 * for ORCD_COUNTER_WAIT_MS */
orcd_counter_t *orcd_counter_lock(orcd_ctx_t *c, uint64_t id);
void orcd_counter_unlock(orcd_ctx_t *c, orcd_counter_t *counter);
/* Is there time for one more store call before c->deadline? A request
 * that writes (a registration, a post: several calls, a counter lock
 * between them) is given 2 x store.etcd.timeout in all, so that it answers
 * (503 if out of time) within the client's timeout however slow each call
 * is, and the client can try another replica. A call is started only if
 * it has its whole timeout before the deadline. Memory store: no deadline
 * (calls take no time; the counter lock's wait is bounded). */
int orcd_call_fits(const orcd_ctx_t *c);
/* A write made outside those calls (a lease op) at revision rev */
void orcd_seen(orcd_ctx_t *c, uint64_t rev);
/* Room for keys more keys of bytes bytes in the job and in total? 0, or -1
 * with 429 filled */
int orcd_quota(orcd_ctx_t *c, uint64_t keys, uint64_t bytes);
/* The request is a retry of one whose answer was lost: its
 * Idempotency-Key, else NULL */
const char *orcd_retry_rid(const orcd_ctx_t *c);

/* ------------------------------------------ Idempotency-Keys (orcd_rid.c) */

/* Characters of an Idempotency-Key */
#define ORCD_RID_CHARS \
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

/* Is rid an Idempotency-Key: 1..ORCD_RID_MAX of ORCD_RID_CHARS? */
int orcd_rid_valid(const char *rid);
/* The compare and the put that make a write happen once per
 * Idempotency-Key: /rid/RID must not exist, and is created with value (a
 * JSON object) on lease. key: an ORCD_KEY_MAX buffer they point into. */
void orcd_rid_txn(orcd_ctx_t *c, char *key, const char *value, uint64_t lease,
                  orc_store_cmp_t *cmp, orc_store_op_t *op);
/* What the request's Idempotency-Key did, read from the newest state (the
 * client never saw the revision of the attempt that did it): 1 with *rec_p
 * (a JSON object to decref) and *rev_p (its revision), 0 if nothing yet,
 * -1 with the response filled */
int orcd_rid_find(orcd_ctx_t *c, json_t **rec_p, uint64_t *rev_p);
/* The lease of mailbox posts' /rid/ keys: ORC_STORE_OK and *lease_p, or the
 * store's status. orcd_rid_lease_lost: a write on lease failed with ENOENT
 * (the store lost it): the next call grants another. */
int orcd_rid_lease(orcd_ctx_t *c, uint64_t *lease_p);
void orcd_rid_lease_lost(orcd_ctx_t *c, uint64_t lease);

/* ------------------------------------ acknowledgements (orcd_mailbox_ack.c) */

/* A post's acknowledgement of the poster's own mailbox ("ack" in its body):
 * node is the post's "from", index the create revision of its record */
typedef struct orcd_mbox_ack {
    int given;  /* the post carried one */
    int active; /* its delete goes into the post's transaction */
    uint64_t node;
    uint64_t after;
    uint64_t index;
    char node_key[ORCD_KEY_MAX];
    char first[ORCD_KEY_MAX]; /* [first, upto): the messages <= after */
    char upto[ORCD_KEY_MAX];
} orcd_mbox_ack_t;

/* A receive with after, whose read of c->id's mailbox showed messages <=
 * after: acknowledge (delete) them (node: its record). 0, or -1 with the
 * response filled */
int orcd_mbox_ack(orcd_ctx_t *c, const orc_store_kv_t *node, uint64_t after);
/* The post's "ack" (NULL: none) into *ack. 0, or -1 with a 400 filled */
int orcd_mbox_ack_parse(orcd_ctx_t *c, json_t *ack_json, json_int_t from,
                        orcd_mbox_ack_t *ack);
/* Decide whether the ack joins the post's transaction (ack->active): the
 * poster's node is the one registered at index. 0, or -1 with the response filled (400 if after is past the last
 * seq of the poster's mailbox) */
int orcd_mbox_ack_prepare(orcd_ctx_t *c, orcd_mbox_ack_t *ack);
/* The compare and the delete an active ack adds to the post's transaction
 * (they point into ack) */
void orcd_mbox_ack_txn(const orcd_mbox_ack_t *ack, orc_store_cmp_t *cmp,
                       orc_store_op_t *op);

/* ------------------------------------------------ request (orcd_api.c) */

/* Value of query argument key ("" for "?key"), NULL if absent */
const char *orcd_query(const orcd_request_t *req, const char *key,
                       int *present_p);
/* Unsigned integer argument (left unchanged if absent): 0 ok, -1 with a 400
 * filled */
int orcd_query_u64(orcd_ctx_t *c, const char *key, uint64_t *value_p,
                   int *present_p);
/* "wait" argument capped at limits.max_wait: 0 ok, -1 with a 400 filled */
int orcd_query_wait(orcd_ctx_t *c, double *wait_p);
/* Parse the body as JSON (an object if want_object); NULL with 400/413 */
json_t *orcd_body_json(orcd_ctx_t *c, size_t max, int want_object);
/* "/jobs/<job>" + formatted suffix into an ORCD_KEY_MAX buffer */
void orcd_key(char *buf, const orcd_ctx_t *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* -------------------------------------------------- nodes (orcd_nodes.c) */

/* Fetch the node record of c->id; -1 with the response filled if absent */
int orcd_node_get(orcd_ctx_t *c, orc_store_kv_t *kv);
/* The node is missing: 410 if its lease expired, else 404 */
void orcd_node_missing(orcd_ctx_t *c);

/* ------------------------------------------------- text (orcd_api.c) */

/* Growable text buffer; failed is set once memory ran out */
typedef struct orcd_buf {
    char *data;
    size_t len;
    size_t cap;
    int failed;
} orcd_buf_t;

void orcd_buf_printf(orcd_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
