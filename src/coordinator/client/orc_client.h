/*
 * orc coordinator client library (libcurl + jansson).
 *
 * Talks to orcd's HTTP/JSON API (/v1, see README.md "orcd API"). Used by the
 * orc transport (register, publish the endpoint record, pairing mailbox),
 * by applications (kv: publish and find UCP worker addresses by name) and by
 * orcctl.
 *
 * Every call has a timeout and returns an orc_cl_status_t; nothing here
 * aborts the process or prints on its own except through the optional log
 * callback. Tokens never appear in a returned error message.
 *
 * Several orcd replicas (orcd on etcd): params.url may list them,
 * comma-separated. A call whose replica is gone (connection refused or cut,
 * 503) moves on to the next, at most twice around them all within its
 * timeout, and so do long polls and keep-alives; POSTs (registration,
 * mailbox messages) carry an idempotency key, so a retry of one whose
 * answer was lost is answered as the first attempt. Later calls start with
 * the replica that answered; a replica that comes back is used again once
 * the others fail. Every request tells orcd the newest index the client has
 * seen, so no replica answers from an older state.
 *
 * Thread safety: one orc_client_t may be used from any number of threads at
 * once (each call takes a curl handle of its own from the client's pool, and
 * puts it back with its keep-alive connection for the next call).
 * orc_client_destroy() must not race with other calls on the same client.
 * After fork(), a child process creates its own client.
 */
#ifndef ORC_CLIENT_H_
#define ORC_CLIENT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum orc_cl_status {
    ORC_CL_OK               = 0,
    ORC_CL_ERR_INVALID      = -1, /* bad argument, or 400 from orcd */
    ORC_CL_ERR_NO_MEMORY    = -2,
    ORC_CL_ERR_UNREACHABLE  = -3,  /* cannot connect to orcd */
    ORC_CL_ERR_TIMEOUT      = -4,  /* call timeout, or a wait that expired */
    ORC_CL_ERR_NOT_FOUND    = -5,  /* 404: unknown job, node or key */
    ORC_CL_ERR_UNAUTHORIZED = -6,  /* 401 */
    ORC_CL_ERR_FORBIDDEN    = -7,  /* 403 */
    ORC_CL_ERR_CONFLICT     = -8,  /* 409 */
    ORC_CL_ERR_GONE         = -9,  /* 410: the node's lease expired */
    ORC_CL_ERR_TOO_LARGE    = -10, /* 413 */
    ORC_CL_ERR_BUSY         = -11, /* 429: a limit was hit, retry later */
    ORC_CL_ERR_PROTOCOL     = -12, /* unexpected status or malformed reply */
    ORC_CL_ERR_CANCELED     = -13, /* wait ended by orc_client_interrupt() */
} orc_cl_status_t;

const char *orc_cl_status_str(orc_cl_status_t status);

typedef struct orc_client orc_client_t;

/* Environment variables read by orc_client_params_from_env() and orcctl */
#define ORC_CLIENT_ENV_URL        "ORC_COORDINATOR_URL"
#define ORC_CLIENT_ENV_TOKEN      "ORC_TOKEN"
#define ORC_CLIENT_ENV_TOKEN_FILE "ORC_TOKEN_FILE"
#define ORC_CLIENT_ENV_JOB        "ORC_JOB"

/* orcd's embedded default address */
#define ORC_CLIENT_DEFAULT_URL "http://127.0.0.1:7411"
#define ORC_CLIENT_DEFAULT_JOB "default"

typedef enum orc_client_params_field {
    ORC_CLIENT_PARAM_FIELD_URL     = 1u << 0,
    ORC_CLIENT_PARAM_FIELD_JOB     = 1u << 1,
    ORC_CLIENT_PARAM_FIELD_TOKEN   = 1u << 2,
    ORC_CLIENT_PARAM_FIELD_TIMEOUT = 1u << 3,
    ORC_CLIENT_PARAM_FIELD_LOG     = 1u << 4,
    ORC_CLIENT_PARAM_FIELD_CA_FILE = 1u << 5,
} orc_client_params_field_t;

typedef struct orc_client_params {
    uint64_t field_mask; /* ORC_CLIENT_PARAM_FIELD_*: which fields are set */
    const char *url;     /* default ORC_CLIENT_DEFAULT_URL; several
                                replicas: "http://a:7411,http://b:7411" */
    const char *job;     /* default ORC_CLIENT_DEFAULT_JOB */
    const char *token;   /* default: none (auth off) */
    int timeout_ms;      /* per request, excluding long-poll waits;
                                default 5000 */
    /* optional log sink for warnings (e.g. a failed keep-alive) */
    void (*log)(void *arg, const char *message);
    void *log_arg;
    const char *ca_file; /* https: CA bundle to verify orcd */
} orc_client_params_t;

orc_cl_status_t orc_client_create(const orc_client_params_t *params,
                                  orc_client_t **client_p);
void orc_client_destroy(orc_client_t *client);

/*
 * Membership. Register a node of the job; a background thread keeps its lease
 * alive until orc_client_deregister() or orc_client_destroy(). If the lease is
 * lost (orcd says 410/404, or keep-alives fail for longer than the TTL), the
 * node is reported lost by orc_client_node_lost().
 */
typedef struct orc_node_info {
    uint64_t id;
    const char *host;
    int64_t pid;
    const char *labels_json;   /* JSON object, "{}" if none */
    const char *endpoint_json; /* JSON object, or NULL if not published */
} orc_node_info_t;

orc_cl_status_t orc_client_register(orc_client_t *client, const char *host,
                                    int64_t pid, const char *labels_json,
                                    unsigned ttl_sec, uint64_t *node_id_p);
orc_cl_status_t orc_client_deregister(orc_client_t *client, uint64_t node_id);
/* 1 if the lease of a node registered through this client is known lost */
int orc_client_node_lost(orc_client_t *client, uint64_t node_id);

/* Endpoint records: an opaque JSON object of bounded size */
orc_cl_status_t orc_client_endpoint_put(orc_client_t *client, uint64_t node_id,
                                        const char *endpoint_json);
/* *endpoint_json_p: malloc'ed, free() it */
orc_cl_status_t orc_client_endpoint_get(orc_client_t *client, uint64_t node_id,
                                        char **endpoint_json_p);

/*
 * List the job's nodes. With wait_ms > 0, block until something changed after
 * `index` (or the wait expires: then ORC_CL_OK with the unchanged list).
 * *nodes_p: free with orc_client_nodes_free().
 */
orc_cl_status_t orc_client_nodes_list(orc_client_t *client, uint64_t index,
                                      int wait_ms, orc_node_info_t **nodes_p,
                                      size_t *count_p, uint64_t *index_p);
void orc_client_nodes_free(orc_node_info_t *nodes, size_t count);

/*
 * Mailboxes (pairing). send queues one JSON object for node dst;
 * recv returns every message with seq > after (waiting up to wait_ms for the
 * first), which acknowledges every message <= after. A caller that retries
 * with the same cursor gets the same messages again: nothing is lost.
 * For a node registered through this client, a message recv returned
 * counts as read: the node's next send (from = that node) through this
 * client acknowledges it too, in the post's own store write (one write less
 * per message on etcd), so a retry with an older cursor after such a send
 * no longer gets it. A message recv did not return is never acknowledged
 * that way.
 */
typedef struct orc_mbox_msg {
    uint64_t seq;
    uint64_t from;         /* sender node id, 0 if not given */
    const char *body_json; /* JSON object */
} orc_mbox_msg_t;

orc_cl_status_t orc_client_mbox_send(orc_client_t *client, uint64_t dst,
                                     uint64_t from, const char *body_json,
                                     uint64_t *seq_p);
orc_cl_status_t orc_client_mbox_recv(orc_client_t *client, uint64_t node_id,
                                     uint64_t after, int wait_ms,
                                     orc_mbox_msg_t **msgs_p, size_t *count_p);
void orc_client_mbox_free(orc_mbox_msg_t *msgs, size_t count);

/*
 * Key-value space of the job (applications). Values are bytes; they are
 * carried base64-encoded in JSON. get with wait_ms > 0 blocks until the key
 * exists or the wait expires (ORC_CL_ERR_TIMEOUT).
 * *value_p: malloc'ed, free() it.
 */
orc_cl_status_t orc_client_kv_put(orc_client_t *client, const char *key,
                                  const void *value, size_t length);
orc_cl_status_t orc_client_kv_get(orc_client_t *client, const char *key,
                                  int wait_ms, void **value_p,
                                  size_t *length_p);
orc_cl_status_t orc_client_kv_delete(orc_client_t *client, const char *key);

/* ---------------------------------------------------------------------------
 * Additions (compatible with everything above)
 * ------------------------------------------------------------------------- */

/*
 * Human-readable detail of the last call that failed in the calling thread
 * (method, path, HTTP status, orcd's "error"/"detail"). Never holds the
 * token. Valid until the next call from the same thread.
 */
const char *orc_client_last_error(void);

/*
 * Fill params->url, ->job and ->token from ORC_COORDINATOR_URL, ORC_JOB and
 * ORC_TOKEN (or the first line of the file named by ORC_TOKEN_FILE), for the
 * fields not already set in params->field_mask. The strings point into the
 * environment, except a token read from a file: *token_buf_p is then
 * malloc'ed (else NULL); keep it until orc_client_create() returned, then
 * free() it.
 */
orc_cl_status_t orc_client_params_from_env(orc_client_params_t *params,
                                           char **token_buf_p);
/* First line of a token file, whitespace-trimmed; *token_p: free() it */
orc_cl_status_t orc_client_read_token_file(const char *path, char **token_p);

/*
 * End the long-polls of this client: calls waiting in orc_client_mbox_recv(),
 * orc_client_kv_get() or orc_client_nodes_list() with a wait return
 * ORC_CL_ERR_CANCELED promptly, and so does every later call with a wait.
 * Calls without a wait are unaffected (the node can still be deregistered).
 * For stopping a thread that long-polls before joining it. Thread-safe,
 * async with respect to the waiting calls; not undone.
 */
void orc_client_interrupt(orc_client_t *client);

/* GET /healthz: ORC_CL_OK if orcd answers {"status": "ok"} */
orc_cl_status_t orc_client_health(orc_client_t *client);

/* One keep-alive of any node of the job, now (register does this itself) */
orc_cl_status_t orc_client_keepalive(orc_client_t *client, uint64_t node_id);

/* One node; *node_p: free with orc_client_nodes_free(*node_p, 1) */
orc_cl_status_t orc_client_node_get(orc_client_t *client, uint64_t node_id,
                                    orc_node_info_t **node_p);

/*
 * kv put whose key is attached to the lease of node_id (deleted with the
 * node); node_id 0 is the same as orc_client_kv_put().
 */
orc_cl_status_t orc_client_kv_put_node(orc_client_t *client, const char *key,
                                       const void *value, size_t length,
                                       uint64_t node_id);

/*
 * Base64 (RFC 4648, padded) as used for kv values. encode: malloc'ed
 * NUL-terminated text or NULL (no memory). decode: 0 and a malloc'ed buffer
 * (NUL-terminated beyond *length_p), -1 on malformed or non-canonical
 * input, -2 without memory.
 */
char *orc_client_b64_encode(const void *data, size_t length);
int orc_client_b64_decode(const char *text, size_t text_len, void **data_p,
                          size_t *length_p);

#ifdef __cplusplus
}
#endif

#endif /* ORC_CLIENT_H_ */
