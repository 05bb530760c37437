/*
 * etcd v3 over its JSON gateway (libcurl + jansson): one POST /v3/... per
 * call, to any of several endpoints, with the cluster's TLS and user.
 *
 * Calls fail over between endpoints and retry within a time budget while
 * the outcome is certain: the request never left (connection refused), or
 * etcd refused it before proposing it (no leader, too many requests, an
 * expired auth token). After an uncertain failure (the connection died
 * with the request sent, or etcd timed out waiting for raft), a call that
 * is not idempotent returns ORC_STORE_EUNAVAIL at once: it may or may not
 * have been applied. When every endpoint refuses connections, a call
 * returns ORC_STORE_EUNAVAIL without waiting for the budget.
 *
 * Thread-safe: each call takes a curl handle of its own from a pool.
 */
#ifndef ORC_ETCD_H_
#define ORC_ETCD_H_

#include "orc_store.h"

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct orc_etcd orc_etcd_t;

typedef struct orc_etcd_params {
    const char *const *endpoints; /* http[s]://host:port */
    size_t nendpoints;
    const char *ca_file;   /* https: CA of the cluster (NULL: system) */
    const char *cert_file; /* client certificate (NULL: none) */
    const char *key_file;
    const char *username; /* NULL: no auth */
    const char *password;
    unsigned timeout_ms; /* budget of one call, retries included */
} orc_etcd_params_t;

/* Connect and check: at least one endpoint answers (and authenticates);
 * else -1 with the reason in err */
int orc_etcd_open(const orc_etcd_params_t *params, orc_etcd_t **etcd_p,
                  char *err, size_t errlen);
void orc_etcd_close(orc_etcd_t *etcd);

/*
 * POST path (e.g. "/v3/kv/range") with body (a JSON object; reference
 * stolen). ORC_STORE_OK and *reply_p (free with json_decref), or:
 * ORC_STORE_ENOENT (etcd: not found, e.g. a lease), ORC_STORE_EINVAL (etcd
 * refused the request as invalid; logged), ORC_STORE_EUNAVAIL (see above),
 * ORC_STORE_EIO (another etcd error; logged).
 */
int orc_etcd_call(orc_etcd_t *etcd, const char *path, json_t *body,
                  int idempotent, json_t **reply_p);
/* The same, within the budget that ends at deadline (monotonic ms,
 * orc_util_now_ms) instead of timeout_ms from now */
int orc_etcd_call_until(orc_etcd_t *etcd, const char *path, json_t *body,
                        int idempotent, uint64_t deadline, json_t **reply_p);
/* The budget of one call (orc_etcd_params_t::timeout_ms, defaults applied) */
unsigned orc_etcd_timeout_ms(const orc_etcd_t *etcd);

/*
 * A streaming POST (the watch): on_message gets each JSON object etcd
 * sends, until it returns non-zero, the stream ends, or stopped(arg)
 * returns non-zero (asked at least every second, and at orc_etcd_wake()).
 * One stream at a time. One endpoint, no retry;
 * the caller reconnects. ORC_STORE_OK if on_message ended it, else
 * ORC_STORE_EUNAVAIL.
 */
int orc_etcd_stream(orc_etcd_t *etcd, const char *path, json_t *body,
                    int (*on_message)(void *arg, json_t *msg),
                    int (*stopped)(void *arg), void *arg);
/* Make the running stream ask stopped() now */
void orc_etcd_wake(orc_etcd_t *etcd);
/* After a stream failed: use the next endpoint */
void orc_etcd_next_endpoint(orc_etcd_t *etcd);

/* JSON helpers for etcd's encoding: bytes are base64 strings, 64-bit
 * integers are decimal strings (or numbers) */
json_t *orc_etcd_bytes(const void *data, size_t len);
/* decoded copy of a bytes field (NUL-terminated; "" if absent), or NULL */
char *orc_etcd_get_bytes(json_t *o, const char *field, size_t *len_p);
uint64_t orc_etcd_get_u64(json_t *o, const char *field);

#ifdef __cplusplus
}
#endif

#endif
