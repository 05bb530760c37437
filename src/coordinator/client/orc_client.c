/*
 * orc coordinator client library: libcurl for HTTP, jansson for JSON.
 * See orc_client.h for the contract of every call.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_client.h"
#include "coordinator/common/orc_util.h"

#include <curl/curl.h>
#include <jansson.h>

#include <errno.h>
#include <inttypes.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ORC_CLIENT_DEFAULT_TIMEOUT_MS 5000
#define ORC_CLIENT_REPLY_MAX          (64u * 1024 * 1024)
#define ORC_CLIENT_POOL_MAX           256
#define ORC_CLIENT_KA_RETRY_MS        250
/* unanswered keep-alives keep a node's lease for alive this many TTLs
 * after orcd's last answer at most (orc_client_ka_t) */
#define ORC_CLIENT_KA_UNANSWERED_TTLS 2
#define ORC_CLIENT_ERRBUF_LEN         512
/* a wait that ended this long after it began was cut short by orcd's
 * max_wait: worth asking again for the rest */
#define ORC_CLIENT_REWAIT_MIN_MS 500

/* Detail of the last failed call, per thread (orc_client_last_error()) */
static __thread char orc_client_errbuf[ORC_CLIENT_ERRBUF_LEN];

static pthread_once_t orc_client_global_once = PTHREAD_ONCE_INIT;
static CURLcode orc_client_global_status     = CURLE_FAILED_INIT;

/*
 * A node registered through this client, with its keep-alive thread.
 * Locking: `lost`, `stop`, `ttl_sec`, `read_seq`, `acked_seq` and the list
 * linkage are protected by client->nodes_lock; `cond` is waited on with
 * that lock held. `thread` is written once by register and joined once by
 * whoever unlinks the node (deregister or destroy), outside the lock.
 * `index` (the registration's, the create revision of the node's record;
 * 0 if orcd did not say) and `granted_ms` (when the registration was sent:
 * orcd granted the lease after that) are written before the node is
 * linked.
 *
 * Mailbox acknowledgements: read_seq is the newest message of the node's
 * mailbox that orc_client_mbox_recv() returned, acked_seq the newest known
 * acknowledged (a recv's cursor, or an ack a send carried); a send from
 * the node carries "ack" up to read_seq while read_seq > acked_seq, so
 * that orcd deletes them in the post's own transaction.
 */
typedef struct orc_client_node {
    struct orc_client_node *next;
    orc_client_t *client;
    uint64_t id;
    uint64_t index;
    uint64_t read_seq;
    uint64_t acked_seq;
    uint64_t granted_ms;
    unsigned ttl_sec;
    int lost;
    int stop;
    pthread_cond_t cond;
    pthread_t thread;
} orc_client_node_t;

/*
 * A pooled connection: an easy handle driven through its own multi handle,
 * which keeps the live connection between calls and lets
 * orc_client_interrupt() wake a call blocked in curl_multi_poll(). Used by
 * one call at a time; `prev`/`next` link it into client->waiting (under
 * wait_lock) while an interruptible call runs on it.
 */
typedef struct orc_client_conn {
    CURL *easy;
    CURLM *multi;
    struct orc_client_conn *prev;
    struct orc_client_conn *next;
} orc_client_conn_t;

/*
 * Client. Immutable after create except:
 *  - current: the replica (index into urls) requests go to first, moved on
 *    by a call that finds it dead (atomic);
 *  - max_index: the newest X-Orc-Index an answer carried, sent back as
 *    X-Orc-Min-Index so that a replica never answers from an older state
 *    than the client saw (atomic, only grows);
 *  - pool/pool_count: idle curl handles, protected by pool_lock;
 *  - nodes: registered nodes, protected by nodes_lock;
 *  - waiting: connections of calls in a long-poll, protected by wait_lock;
 *  - interrupted: set once by orc_client_interrupt() (seq-cst atomic; a
 *    waiting call links itself into `waiting` before it reads the flag,
 *    the interrupter sets the flag before it wakes `waiting`).
 */
struct orc_client {
    char **urls; /* base URLs of the replicas, no trailing '/' */
    size_t nurls;
    _Atomic size_t current;
    _Atomic uint64_t max_index;
    char *job;
    int timeout_ms;
    void (*log)(void *arg, const char *message);
    void *log_arg;
    char *ca_file;
    struct curl_slist *headers; /* read-only once built; holds the token */

    pthread_mutex_t pool_lock;
    orc_client_conn_t *pool[ORC_CLIENT_POOL_MAX];
    unsigned pool_count;

    pthread_mutex_t wait_lock;
    orc_client_conn_t *waiting;
    atomic_int interrupted;

    pthread_mutex_t nodes_lock;
    orc_client_node_t *nodes;
};

const char *orc_cl_status_str(orc_cl_status_t status)
{
    switch (status) {
    case ORC_CL_OK:
        return "success";
    case ORC_CL_ERR_INVALID:
        return "invalid argument";
    case ORC_CL_ERR_NO_MEMORY:
        return "out of memory";
    case ORC_CL_ERR_UNREACHABLE:
        return "coordinator unreachable";
    case ORC_CL_ERR_TIMEOUT:
        return "timed out";
    case ORC_CL_ERR_NOT_FOUND:
        return "not found";
    case ORC_CL_ERR_UNAUTHORIZED:
        return "unauthorized (missing or bad token)";
    case ORC_CL_ERR_FORBIDDEN:
        return "forbidden (token of another job)";
    case ORC_CL_ERR_CONFLICT:
        return "conflict";
    case ORC_CL_ERR_GONE:
        return "lease expired";
    case ORC_CL_ERR_TOO_LARGE:
        return "request too large";
    case ORC_CL_ERR_BUSY:
        return "coordinator busy (limit hit)";
    case ORC_CL_ERR_PROTOCOL:
        return "protocol error";
    case ORC_CL_ERR_CANCELED:
        return "wait interrupted";
    }
    return "unknown status";
}

const char *orc_client_last_error(void)
{
    return orc_client_errbuf;
}

static void orc_client_set_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void orc_client_set_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(orc_client_errbuf, sizeof(orc_client_errbuf), fmt, ap);
    va_end(ap);
}

static void orc_client_log(orc_client_t *client, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void orc_client_log(orc_client_t *client, const char *fmt, ...)
{
    char message[ORC_CLIENT_ERRBUF_LEN];
    va_list ap;

    if (client->log == NULL) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    client->log(client->log_arg, message);
}

/* ------------------------------------------------------------------ base64 */

char *orc_client_b64_encode(const void *data, size_t length)
{
    return orc_util_b64_encode(data, length);
}

int orc_client_b64_decode(const char *text, size_t text_len, void **data_p,
                          size_t *length_p)
{
    return orc_util_b64_decode(text, text_len, data_p, length_p);
}

/* ------------------------------------------------------------------ setup */

static void orc_client_global_init(void)
{
    orc_client_global_status = curl_global_init(CURL_GLOBAL_DEFAULT);
}

orc_cl_status_t orc_client_read_token_file(const char *path, char **token_p)
{
    char err[ORC_CLIENT_ERRBUF_LEN];

    if (orc_util_read_token_file(path, token_p, err, sizeof(err)) != 0) {
        orc_client_set_error("token file %s", err);
        return ORC_CL_ERR_INVALID;
    }
    return ORC_CL_OK;
}

orc_cl_status_t orc_client_params_from_env(orc_client_params_t *params,
                                           char **token_buf_p)
{
    const char *value;
    orc_cl_status_t status;

    *token_buf_p = NULL;

    value = getenv(ORC_CLIENT_ENV_URL);
    if (!(params->field_mask & ORC_CLIENT_PARAM_FIELD_URL) && (value != NULL) &&
        (value[0] != '\0')) {
        params->url = value;
        params->field_mask |= ORC_CLIENT_PARAM_FIELD_URL;
    }

    value = getenv(ORC_CLIENT_ENV_JOB);
    if (!(params->field_mask & ORC_CLIENT_PARAM_FIELD_JOB) && (value != NULL) &&
        (value[0] != '\0')) {
        params->job = value;
        params->field_mask |= ORC_CLIENT_PARAM_FIELD_JOB;
    }

    if (params->field_mask & ORC_CLIENT_PARAM_FIELD_TOKEN) {
        return ORC_CL_OK;
    }

    value = getenv(ORC_CLIENT_ENV_TOKEN);
    if ((value != NULL) && (value[0] != '\0')) {
        params->token = value;
        params->field_mask |= ORC_CLIENT_PARAM_FIELD_TOKEN;
        return ORC_CL_OK;
    }

    value = getenv(ORC_CLIENT_ENV_TOKEN_FILE);
    if ((value != NULL) && (value[0] != '\0')) {
        status = orc_client_read_token_file(value, token_buf_p);
        if (status != ORC_CL_OK) {
            return status;
        }
        params->token = *token_buf_p;
        params->field_mask |= ORC_CLIENT_PARAM_FIELD_TOKEN;
    }

    return ORC_CL_OK;
}

/* Is url one coordinator URL, or a comma-separated list of them? */
static orc_cl_status_t orc_client_urls_check(const char *url)
{
    const char *p = url, *end;
    size_t len;

    do {
        end = strchr(p, ',');
        len = (end != NULL) ? (size_t)(end - p) : strlen(p);
        if (((len < 8) || strncmp(p, "http://", 7)) &&
            ((len < 9) || strncmp(p, "https://", 8))) {
            orc_client_set_error("coordinator url '%s': each of its "
                                 "comma-separated URLs must start with "
                                 "http:// or https://",
                                 url);
            return ORC_CL_ERR_INVALID;
        }
        p = (end != NULL) ? end + 1 : NULL;
    } while (p != NULL);
    return ORC_CL_OK;
}

static void orc_client_urls_free(orc_client_t *client)
{
    size_t i;

    for (i = 0; i < client->nurls; ++i) {
        free(client->urls[i]);
    }
    free(client->urls);
}

/* client->urls from a checked list; -1 without memory */
static int orc_client_urls_parse(orc_client_t *client, const char *url)
{
    const char *p = url, *end;
    size_t n      = 1, len;

    for (end = url; (end = strchr(end, ',')) != NULL; ++end) {
        ++n;
    }
    client->urls = calloc(n, sizeof(*client->urls));
    if (client->urls == NULL) {
        return -1;
    }
    for (; client->nurls < n; p = end + 1) {
        end = strchrnul(p, ',');
        len = (size_t)(end - p);
        while ((len > 0) && (p[len - 1] == '/')) {
            --len;
        }
        client->urls[client->nurls] = strndup(p, len);
        if (client->urls[client->nurls] == NULL) {
            return -1;
        }
        ++client->nurls;
    }
    return 0;
}

orc_cl_status_t orc_client_create(const orc_client_params_t *params,
                                  orc_client_t **client_p)
{
    const char *url   = ORC_CLIENT_DEFAULT_URL;
    const char *job   = ORC_CLIENT_DEFAULT_JOB;
    const char *token = NULL;
    struct curl_slist *headers;
    orc_client_t *client;
    char *auth;
    size_t len;

    if ((params == NULL) || (client_p == NULL)) {
        orc_client_set_error("params and client_p are required");
        return ORC_CL_ERR_INVALID;
    }

    pthread_once(&orc_client_global_once, orc_client_global_init);
    if (orc_client_global_status != CURLE_OK) {
        orc_client_set_error("curl_global_init failed: %s",
                             curl_easy_strerror(orc_client_global_status));
        return ORC_CL_ERR_NO_MEMORY;
    }

    if ((params->field_mask & ORC_CLIENT_PARAM_FIELD_URL) &&
        (params->url != NULL)) {
        url = params->url;
    }
    if ((params->field_mask & ORC_CLIENT_PARAM_FIELD_JOB) &&
        (params->job != NULL)) {
        job = params->job;
    }
    if ((params->field_mask & ORC_CLIENT_PARAM_FIELD_TOKEN) &&
        (params->token != NULL) && (params->token[0] != '\0')) {
        token = params->token;
    }

    if (orc_client_urls_check(url) != ORC_CL_OK) {
        return ORC_CL_ERR_INVALID;
    }

    if (!orc_util_name_valid(job, strlen(job), 0)) {
        orc_client_set_error("invalid job name '%s': 1..%d characters of "
                             "[A-Za-z0-9._-]",
                             job, ORC_UTIL_NAME_MAX);
        return ORC_CL_ERR_INVALID;
    }

    if ((token != NULL) && (strpbrk(token, "\r\n") != NULL)) {
        orc_client_set_error("the token contains a line break");
        return ORC_CL_ERR_INVALID;
    }

    if ((params->field_mask & ORC_CLIENT_PARAM_FIELD_TIMEOUT) &&
        (params->timeout_ms <= 0)) {
        orc_client_set_error("timeout_ms must be > 0 (got %d)",
                             params->timeout_ms);
        return ORC_CL_ERR_INVALID;
    }

    client = calloc(1, sizeof(*client));
    if (client == NULL) {
        goto err;
    }

    client->job = strdup(job);
    if ((client->job == NULL) || orc_client_urls_parse(client, url)) {
        goto err_free;
    }

    client->timeout_ms = (params->field_mask & ORC_CLIENT_PARAM_FIELD_TIMEOUT)
                             ? params->timeout_ms
                             : ORC_CLIENT_DEFAULT_TIMEOUT_MS;
    if (params->field_mask & ORC_CLIENT_PARAM_FIELD_LOG) {
        client->log     = params->log;
        client->log_arg = params->log_arg;
    }
    if ((params->field_mask & ORC_CLIENT_PARAM_FIELD_CA_FILE) &&
        (params->ca_file != NULL)) {
        client->ca_file = strdup(params->ca_file);
        if (client->ca_file == NULL) {
            goto err_free;
        }
    }

    headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (headers == NULL) {
        goto err_free;
    }
    client->headers = headers;

    /* no "Expect: 100-continue" round trip for larger bodies */
    headers = curl_slist_append(client->headers, "Expect:");
    if (headers == NULL) {
        goto err_free;
    }
    client->headers = headers;

    if (token != NULL) {
        len  = strlen(token) + sizeof("Authorization: Bearer ");
        auth = malloc(len);
        if (auth == NULL) {
            goto err_free;
        }
        snprintf(auth, len, "Authorization: Bearer %s", token);
        headers = curl_slist_append(client->headers, auth);
        memset(auth, 0, len);
        free(auth);
        if (headers == NULL) {
            goto err_free;
        }
        client->headers = headers;
    }

    pthread_mutex_init(&client->pool_lock, NULL);
    pthread_mutex_init(&client->wait_lock, NULL);
    atomic_init(&client->interrupted, 0);
    pthread_mutex_init(&client->nodes_lock, NULL);
    *client_p = client;
    return ORC_CL_OK;

err_free:
    curl_slist_free_all(client->headers);
    free(client->ca_file);
    free(client->job);
    orc_client_urls_free(client);
    free(client);
err:
    orc_client_set_error("out of memory creating the client");
    return ORC_CL_ERR_NO_MEMORY;
}

/* ------------------------------------------------------------------ HTTP */

static void orc_client_conn_destroy(orc_client_conn_t *conn)
{
    if (conn->multi != NULL) {
        curl_multi_cleanup(conn->multi);
    }
    if (conn->easy != NULL) {
        curl_easy_cleanup(conn->easy);
    }
    free(conn);
}

static orc_client_conn_t *orc_client_conn_get(orc_client_t *client)
{
    orc_client_conn_t *conn = NULL;
    CURL *curl;

    pthread_mutex_lock(&client->pool_lock);
    if (client->pool_count > 0) {
        conn = client->pool[--client->pool_count];
    }
    pthread_mutex_unlock(&client->pool_lock);

    if (conn != NULL) {
        /* set up already; its multi keeps the live connection for reuse */
        return conn;
    }

    conn = calloc(1, sizeof(*conn));
    if (conn == NULL) {
        return NULL;
    }

    conn->easy = curl = curl_easy_init();
    conn->multi       = curl_multi_init();
    if ((curl == NULL) || (conn->multi == NULL)) {
        orc_client_conn_destroy(conn);
        return NULL;
    }

    /* options every request shares; the per-request ones are set by
     * orc_client_http_ex() each time */
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, client->headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, orc_util_buf_curl_write);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    if (client->ca_file != NULL) {
        curl_easy_setopt(curl, CURLOPT_CAINFO, client->ca_file);
    }
    return conn;
}

static void orc_client_conn_put(orc_client_t *client, orc_client_conn_t *conn,
                                int reuse)
{
    if (reuse) {
        pthread_mutex_lock(&client->pool_lock);
        if (client->pool_count < ORC_CLIENT_POOL_MAX) {
            client->pool[client->pool_count++] = conn;
            conn                               = NULL;
        }
        pthread_mutex_unlock(&client->pool_lock);
    }

    if (conn != NULL) {
        orc_client_conn_destroy(conn);
    }
}

static void orc_client_wait_link(orc_client_t *client, orc_client_conn_t *conn)
{
    pthread_mutex_lock(&client->wait_lock);
    conn->prev = NULL;
    conn->next = client->waiting;
    if (client->waiting != NULL) {
        client->waiting->prev = conn;
    }
    client->waiting = conn;
    pthread_mutex_unlock(&client->wait_lock);
}

static void orc_client_wait_unlink(orc_client_t *client,
                                   orc_client_conn_t *conn)
{
    pthread_mutex_lock(&client->wait_lock);
    if (conn->prev != NULL) {
        conn->prev->next = conn->next;
    } else {
        client->waiting = conn->next;
    }
    if (conn->next != NULL) {
        conn->next->prev = conn->prev;
    }
    conn->prev = conn->next = NULL;
    pthread_mutex_unlock(&client->wait_lock);
}

void orc_client_interrupt(orc_client_t *client)
{
    orc_client_conn_t *conn;

    if (client == NULL) {
        return;
    }

    atomic_store(&client->interrupted, 1);
    pthread_mutex_lock(&client->wait_lock);
    for (conn = client->waiting; conn != NULL; conn = conn->next) {
        curl_multi_wakeup(conn->multi);
    }
    pthread_mutex_unlock(&client->wait_lock);
}

/*
 * Run the request set up on conn->easy. An interruptible one (a long-poll)
 * ends early with *canceled_p set once orc_client_interrupt() was called.
 */
static CURLcode orc_client_perform(orc_client_t *client,
                                   orc_client_conn_t *conn, int interruptible,
                                   int *canceled_p)
{
    CURLcode rc = CURLE_GOT_NOTHING;
    CURLMsg *msg;
    CURLMcode mc;
    int running, left;

    *canceled_p = 0;
    if (curl_multi_add_handle(conn->multi, conn->easy) != CURLM_OK) {
        return CURLE_OUT_OF_MEMORY;
    }

    if (interruptible) {
        orc_client_wait_link(client, conn);
    }

    for (;;) {
        mc = curl_multi_perform(conn->multi, &running);
        if (mc != CURLM_OK) {
            rc = (mc == CURLM_OUT_OF_MEMORY) ? CURLE_OUT_OF_MEMORY
                                             : CURLE_RECV_ERROR;
            break;
        }
        if (!running) {
            while ((msg = curl_multi_info_read(conn->multi, &left)) != NULL) {
                if ((msg->msg == CURLMSG_DONE) &&
                    (msg->easy_handle == conn->easy)) {
                    rc = msg->data.result;
                }
            }
            break;
        }
        if (interruptible && atomic_load(&client->interrupted)) {
            *canceled_p = 1;
            break;
        }
        /* curl shortens the poll to its own timeouts */
        mc = curl_multi_poll(conn->multi, NULL, 0, 1000, NULL);
        if (mc != CURLM_OK) {
            rc = CURLE_RECV_ERROR;
            break;
        }
    }

    if (interruptible) {
        orc_client_wait_unlink(client, conn);
    }
    curl_multi_remove_handle(conn->multi, conn->easy);
    return rc;
}

static orc_cl_status_t orc_client_http_status_map(long code)
{
    switch (code) {
    case 400:
        return ORC_CL_ERR_INVALID;
    case 401:
        return ORC_CL_ERR_UNAUTHORIZED;
    case 403:
        return ORC_CL_ERR_FORBIDDEN;
    case 404:
        return ORC_CL_ERR_NOT_FOUND;
    case 409:
        return ORC_CL_ERR_CONFLICT;
    case 410:
        return ORC_CL_ERR_GONE;
    case 413:
        return ORC_CL_ERR_TOO_LARGE;
    case 429:
        return ORC_CL_ERR_BUSY;
    case 503:
        return ORC_CL_ERR_BUSY; /* shutting down: retry later */
    default:
        return ORC_CL_ERR_PROTOCOL;
    }
}

/* A transport failure (not a timeout: the caller tells those apart) */
static orc_cl_status_t orc_client_curl_status_map(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        return ORC_CL_ERR_UNREACHABLE;
    case CURLE_OUT_OF_MEMORY:
        return ORC_CL_ERR_NO_MEMORY;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return ORC_CL_ERR_INVALID;
    default:
        return ORC_CL_ERR_PROTOCOL;
    }
}

/* Record orcd's {"error","detail"} reply (or the bare status) as the error */
static void orc_client_error_from_reply(const char *method, const char *path,
                                        long code, const orc_util_buf_t *buf)
{
    const char *error = NULL, *detail = NULL;
    json_t *reply;

    reply = (buf->len > 0) ? json_loadb(buf->data, buf->len, 0, NULL) : NULL;
    if (json_is_object(reply)) {
        error  = json_string_value(json_object_get(reply, "error"));
        detail = json_string_value(json_object_get(reply, "detail"));
    }

    orc_client_set_error("%s %s: HTTP %ld%s%s%s%s", method, path, code,
                         (error != NULL) ? " " : "",
                         (error != NULL) ? error : "",
                         (detail != NULL) ? ": " : "",
                         (detail != NULL) ? detail : "");
    json_decref(reply);
}

/* X-Orc-Index of an answer: the client's newest index grows to it */
static size_t orc_client_header_cb(char *ptr, size_t size, size_t nmemb,
                                   void *arg)
{
    orc_client_t *client = arg;
    size_t len           = size * nmemb;
    uint64_t index, cur;
    char text[32];

    if ((len > 13) && (len - 13 < sizeof(text)) &&
        !strncasecmp(ptr, "X-Orc-Index:", 12)) {
        memcpy(text, ptr + 12, len - 12);
        text[len - 12] = '\0';
        index          = strtoull(text, NULL, 10);
        cur            = atomic_load(&client->max_index);
        while ((index > cur) &&
               !atomic_compare_exchange_weak(&client->max_index, &cur, index)) {
        }
    }
    return len;
}

/* The headers of one attempt: the client's, and those of a client of
 * several replicas (the newest index it saw; a POST's idempotency key and
 * attempt number). NULL without memory. */
static struct curl_slist *orc_client_headers(orc_client_t *client,
                                             const char *rid, int attempt)
{
    struct curl_slist *list = NULL, *h, *n;
    uint64_t index          = atomic_load(&client->max_index);
    char line[128];

    for (h = client->headers; h != NULL; h = h->next) {
        n = curl_slist_append(list, h->data);
        if (n == NULL) {
            goto err;
        }
        list = n;
    }
    if (index > 0) {
        snprintf(line, sizeof(line), "X-Orc-Min-Index: %" PRIu64, index);
        if ((n = curl_slist_append(list, line)) == NULL) {
            goto err;
        }
        list = n;
    }
    if (rid != NULL) {
        snprintf(line, sizeof(line), "Idempotency-Key: %s", rid);
        if ((n = curl_slist_append(list, line)) == NULL) {
            goto err;
        }
        list = n;
        snprintf(line, sizeof(line), "X-Orc-Attempt: %d", attempt);
        if ((n = curl_slist_append(list, line)) == NULL) {
            goto err;
        }
        list = n;
    }
    return list;

err:
    curl_slist_free_all(list);
    return NULL;
}

/* One attempt of a request on one replica */
typedef struct orc_client_try {
    size_t replica;
    CURLcode rc;
    long code; /* HTTP status, 0 if none */
    int canceled;
    double connect_s; /* 0: never connected */
    orc_util_buf_t buf;
} orc_client_try_t;

static orc_cl_status_t orc_client_try(orc_client_t *client, size_t replica,
                                      const char *method, const char *path,
                                      const char *body, int wait_ms,
                                      long timeout_ms, long connect_ms,
                                      const char *rid, int attempt,
                                      orc_client_try_t *t)
{
    struct curl_slist *headers;
    orc_client_conn_t *conn;
    char url[1024];
    CURL *curl;

    memset(t, 0, sizeof(*t));
    t->buf.max = ORC_CLIENT_REPLY_MAX;
    t->replica = replica;
    if (snprintf(url, sizeof(url), "%s%s", client->urls[replica], path) >=
        (int)sizeof(url)) {
        orc_client_set_error("%s %s: url too long", method, path);
        return ORC_CL_ERR_INVALID;
    }
    conn    = orc_client_conn_get(client);
    headers = orc_client_headers(client, rid, attempt);
    if ((conn == NULL) || (headers == NULL)) {
        if (conn != NULL) {
            orc_client_conn_put(client, conn, 1);
        }
        curl_slist_free_all(headers);
        orc_client_set_error("%s %s: out of memory", method, path);
        return ORC_CL_ERR_NO_MEMORY;
    }
    curl = conn->easy;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, orc_client_header_cb);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, client);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t->buf);
    /* every request sets its method and body in full: a pooled handle
     * still holds the previous request's */
    if (!strcmp(method, "GET") || !strcmp(method, "DELETE")) {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST,
                         strcmp(method, "GET") ? method : NULL);
    } else {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, (body != NULL) ? body : "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)((body != NULL) ? strlen(body) : 0));
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    t->rc = orc_client_perform(client, conn, wait_ms > 0, &t->canceled);
    curl_easy_getinfo(curl, CURLINFO_CONNECT_TIME, &t->connect_s);
    if (t->connect_s == 0) {
        /* a reused connection has no connect time: it was connected if
         * the request got as far as being sent */
        curl_easy_getinfo(curl, CURLINFO_PRETRANSFER_TIME, &t->connect_s);
    }
    if (t->rc == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &t->code);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, client->headers);
    curl_slist_free_all(headers);
    /* a connection cut mid-request is not reused */
    orc_client_conn_put(client, conn, (t->rc == CURLE_OK) && !t->canceled);
    return ORC_CL_OK;
}

/* Did the attempt find its replica gone (or going)? Then another one is
 * asked. Not for a timeout once connected: that replica is slow, not gone,
 * and asking another would double the wait. */
static int orc_client_try_failed_over(const orc_client_try_t *t)
{
    switch (t->rc) {
    case CURLE_OK:
        return t->code == 503;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
        return 1;
    case CURLE_OPERATION_TIMEDOUT:
        return t->connect_s == 0;
    default:
        return 0;
    }
}

/* Was the request possibly received (and acted on)? */
static int orc_client_try_uncertain(const orc_client_try_t *t)
{
    return (t->rc != CURLE_OK) && (t->rc != CURLE_COULDNT_RESOLVE_HOST) &&
           (t->rc != CURLE_COULDNT_CONNECT) && (t->connect_s > 0);
}

static void orc_client_sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* The status and reply of a finished attempt */
static orc_cl_status_t orc_client_try_result(orc_client_t *client,
                                             const char *method,
                                             const char *path,
                                             orc_client_try_t *t, int uncertain,
                                             long *code_p, json_t **reply_p)
{
    json_error_t jerr;
    json_t *reply;

    if (t->rc != CURLE_OK) {
        if (t->buf.overflow) {
            orc_client_set_error("%s %s: reply larger than %u bytes", method,
                                 path, ORC_CLIENT_REPLY_MAX);
            return ORC_CL_ERR_PROTOCOL;
        }
        orc_client_set_error("%s %s%s: %s", method, client->urls[t->replica],
                             path, curl_easy_strerror(t->rc));
        if (t->rc == CURLE_OPERATION_TIMEDOUT) {
            /* a connect that never completed: nobody answered at all */
            return (t->connect_s > 0) ? ORC_CL_ERR_TIMEOUT
                                      : ORC_CL_ERR_UNREACHABLE;
        }
        return orc_client_curl_status_map(t->rc);
    }
    if (code_p != NULL) {
        *code_p = t->code;
    }
    /* a delete whose first attempt may have done it */
    if (uncertain && (t->code == 404) && !strcmp(method, "DELETE")) {
        return ORC_CL_OK;
    }
    if ((t->code < 200) || (t->code > 299)) {
        orc_client_error_from_reply(method, path, t->code, &t->buf);
        return orc_client_http_status_map(t->code);
    }
    if (reply_p == NULL) {
        return ORC_CL_OK;
    }
    reply = json_loadb((t->buf.data != NULL) ? t->buf.data : "", t->buf.len,
                       JSON_REJECT_DUPLICATES, &jerr);
    if (reply == NULL) {
        orc_client_set_error("%s %s: malformed JSON reply: %s (line %d)",
                             method, path, jerr.text, jerr.line);
        return ORC_CL_ERR_PROTOCOL;
    }
    if (!json_is_object(reply)) {
        orc_client_set_error("%s %s: reply is not a JSON object", method, path);
        json_decref(reply);
        return ORC_CL_ERR_PROTOCOL;
    }
    *reply_p = reply;
    return ORC_CL_OK;
}

/* A fresh idempotency key (32 hex digits) in rid */
static void orc_client_new_rid(char rid[33])
{
    unsigned char bytes[16];
    size_t i;

    if (getrandom(bytes, sizeof(bytes), 0) != (ssize_t)sizeof(bytes)) {
        /* no entropy to be had: time and address still make it unique
         * enough within a retry's few seconds */
        uint64_t t = orc_util_now_ns();
        memcpy(bytes, &t, sizeof(t));
        t = (uint64_t)(uintptr_t)rid ^ (uint64_t)getpid();
        memcpy(bytes + 8, &t, sizeof(t));
    }
    for (i = 0; i < sizeof(bytes); ++i) {
        snprintf(rid + 2 * i, 3, "%02x", bytes[i]);
    }
}

/*
 * One request. `path` starts with '/'; `body` (may be NULL) is sent as JSON;
 * `wait_ms` extends the timeout for long-polls. On a 2xx reply, *reply_p (if
 * not NULL) gets the parsed JSON object (strictly: anything else is a
 * protocol error). *code_p (if not NULL) gets the HTTP status whenever one was
 * received, else 0.
 *
 * With several replicas, a request whose replica is gone (connection
 * refused or cut, 503) is sent to the next one, at most twice around them
 * all within the request's time; GET, PUT and DELETE always, a POST only
 * with an idempotency key `rid` (orcd then answers a repeat as the first).
 */
static orc_cl_status_t orc_client_http_rid(orc_client_t *client,
                                           const char *method, const char *path,
                                           const char *body, int wait_ms,
                                           int req_timeout_ms, const char *rid,
                                           long *code_p, json_t **reply_p)
{
    int retryable      = strcmp(method, "POST") || (rid != NULL);
    uint64_t start     = orc_util_now_ms(), now, deadline;
    orc_client_try_t t = {0};
    orc_cl_status_t status;
    size_t first, attempt;
    int uncertain = 0, left_wait;

    if (code_p != NULL) {
        *code_p = 0;
    }
    if ((wait_ms > 0) && atomic_load(&client->interrupted)) {
        orc_client_set_error("%s %s: waits of this client were interrupted",
                             method, path);
        return ORC_CL_ERR_CANCELED;
    }
    if (req_timeout_ms <= 0) {
        req_timeout_ms = client->timeout_ms;
    }
    deadline  = start + (uint64_t)req_timeout_ms + (uint64_t)wait_ms;
    left_wait = wait_ms;
    for (attempt = 1;; ++attempt) {
        first = atomic_load(&client->current);
        status =
            orc_client_try(client, first % client->nurls, method, path, body,
                           left_wait, (long)(deadline - orc_util_now_ms()),
                           (long)req_timeout_ms, rid, (int)attempt, &t);
        if ((status != ORC_CL_OK) || t.canceled) {
            free(t.buf.data);
            if (t.canceled) {
                orc_client_set_error("%s %s: wait interrupted", method, path);
                return ORC_CL_ERR_CANCELED;
            }
            return status;
        }
        if (!orc_client_try_failed_over(&t) &&
            ((t.rc != CURLE_OPERATION_TIMEDOUT) || (client->nurls == 1))) {
            break;
        }
        /* this replica is gone or slow: the next one is asked first from
         * now on (unless another call moved on already) */
        atomic_compare_exchange_strong(&client->current, &first, first + 1);
        uncertain |= orc_client_try_uncertain(&t);
        now = orc_util_now_ms();
        if ((client->nurls == 1) || !retryable ||
            (attempt >= 2 * client->nurls) || (now >= deadline) ||
            !orc_client_try_failed_over(&t)) {
            break;
        }
        free(t.buf.data);
        if (attempt % client->nurls == 0) {
            /* all of them once: give them a moment */
            orc_client_sleep_ms((now + 100 < deadline) ? 100 : deadline - now);
            now = orc_util_now_ms();
        }
        left_wait = (wait_ms <= 0) ? 0
                    : (start + (uint64_t)wait_ms > now)
                        ? (int)(start + (uint64_t)wait_ms - now)
                        : 1;
    }
    status = orc_client_try_result(client, method, path, &t, uncertain, code_p,
                                   reply_p);
    free(t.buf.data);
    return status;
}

static orc_cl_status_t orc_client_http_ex(orc_client_t *client,
                                          const char *method, const char *path,
                                          const char *body, int wait_ms,
                                          int req_timeout_ms, long *code_p,
                                          json_t **reply_p)
{
    return orc_client_http_rid(client, method, path, body, wait_ms,
                               req_timeout_ms, NULL, code_p, reply_p);
}

static orc_cl_status_t orc_client_http(orc_client_t *client, const char *method,
                                       const char *path, const char *body,
                                       int wait_ms, long *code_p,
                                       json_t **reply_p)
{
    return orc_client_http_ex(client, method, path, body, wait_ms, 0, code_p,
                              reply_p);
}

/* Parse `text` as one JSON object (caller input); INVALID otherwise */
static orc_cl_status_t
orc_client_parse_object(const char *what, const char *text, json_t **object_p)
{
    json_error_t jerr;
    json_t *object;

    if (text == NULL) {
        orc_client_set_error("%s: missing JSON object", what);
        return ORC_CL_ERR_INVALID;
    }

    object = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (object == NULL) {
        orc_client_set_error("%s: malformed JSON: %s (column %d)", what,
                             jerr.text, jerr.column);
        return ORC_CL_ERR_INVALID;
    }

    if (!json_is_object(object)) {
        orc_client_set_error("%s: must be a JSON object", what);
        json_decref(object);
        return ORC_CL_ERR_INVALID;
    }

    *object_p = object;
    return ORC_CL_OK;
}

/* Serialise `object` (reference stolen) compactly */
static orc_cl_status_t orc_client_dump(json_t *object, char **text_p)
{
    char *text;

    if (object == NULL) {
        orc_client_set_error("out of memory building a request");
        return ORC_CL_ERR_NO_MEMORY;
    }

    text = json_dumps(object, JSON_COMPACT);
    json_decref(object);
    if (text == NULL) {
        orc_client_set_error("out of memory serialising JSON");
        return ORC_CL_ERR_NO_MEMORY;
    }

    *text_p = text;
    return ORC_CL_OK;
}

/* Integer field >= min (and present), strictly typed */
static int orc_client_get_uint(json_t *object, const char *key, uint64_t min,
                               uint64_t *value_p)
{
    json_t *value = json_object_get(object, key);

    if (!json_is_integer(value) || (json_integer_value(value) < 0) ||
        ((uint64_t)json_integer_value(value) < min)) {
        return 0;
    }

    *value_p = (uint64_t)json_integer_value(value);
    return 1;
}

static void orc_client_wait_str(int wait_ms, char *buf, size_t size)
{
    snprintf(buf, size, "%d.%03d", wait_ms / 1000, wait_ms % 1000);
}

/*
 * A long-poll came back with nothing: should it be asked again? orcd caps
 * each wait (max_wait), so yes while the caller's wait has time left, unless
 * orcd answered at once (then it does not wait, and asking again would only
 * spin). *left_ms_p: the rest of the caller's wait.
 */
static int orc_client_rewait(uint64_t start_ms, uint64_t deadline_ms,
                             int *left_ms_p)
{
    uint64_t now_ms = orc_util_now_ms();

    if ((now_ms >= deadline_ms) ||
        (now_ms - start_ms < ORC_CLIENT_REWAIT_MIN_MS)) {
        return 0;
    }

    *left_ms_p = (int)(deadline_ms - now_ms);
    return 1;
}

/* ------------------------------------------------------------------ health */

orc_cl_status_t orc_client_health(orc_client_t *client)
{
    orc_cl_status_t status;
    json_t *reply = NULL;
    const char *text;

    if (client == NULL) {
        orc_client_set_error("client is NULL");
        return ORC_CL_ERR_INVALID;
    }

    status = orc_client_http(client, "GET", "/healthz", NULL, 0, NULL, &reply);
    if (status != ORC_CL_OK) {
        return status;
    }

    text = json_string_value(json_object_get(reply, "status"));
    if ((text == NULL) || strcmp(text, "ok")) {
        orc_client_set_error("GET /healthz: status is not \"ok\"");
        status = ORC_CL_ERR_PROTOCOL;
    }

    json_decref(reply);
    return status;
}

/* ------------------------------------------------------------------ nodes */

static int orc_client_timedwait_ms(pthread_cond_t *cond, pthread_mutex_t *lock,
                                   uint64_t deadline_ms)
{
    struct timespec ts;

    ts.tv_sec  = (time_t)(deadline_ms / 1000);
    ts.tv_nsec = (long)(deadline_ms % 1000) * 1000000L;
    return pthread_cond_timedwait(cond, lock, &ts);
}

static orc_cl_status_t orc_client_keepalive_once(orc_client_t *client,
                                                 uint64_t node_id,
                                                 int timeout_ms,
                                                 unsigned *ttl_p)
{
    char path[256];
    orc_cl_status_t status;
    json_t *reply = NULL;
    uint64_t ttl;

    snprintf(path, sizeof(path), "/v1/jobs/%s/nodes/%" PRIu64 "/keepalive",
             client->job, node_id);
    status = orc_client_http_ex(client, "PUT", path, NULL, 0, timeout_ms, NULL,
                                &reply);
    if (status != ORC_CL_OK) {
        return status;
    }

    if (orc_client_get_uint(reply, "ttl", 1, &ttl) && (ttl <= UINT_MAX)) {
        *ttl_p = (unsigned)ttl;
    }

    json_decref(reply);
    return ORC_CL_OK;
}

orc_cl_status_t orc_client_keepalive(orc_client_t *client, uint64_t node_id)
{
    unsigned ttl;

    if ((client == NULL) || (node_id == 0)) {
        orc_client_set_error("keepalive: client and node id are required");
        return ORC_CL_ERR_INVALID;
    }

    return orc_client_keepalive_once(client, node_id, 0, &ttl);
}

/*
 * One node's keep-alive schedule, owned by its thread (no other thread
 * touches it).
 *  - renewed_ms: when the last renewal was sent. orcd renewed the lease
 *    after that, so it lasts at least until renewed_ms + TTL; the next
 *    renewal is due a third of the TTL after it.
 *  - alive_ms: until when the lease may still be alive: a TTL after the
 *    last moment orcd may have renewed it, which is the answer of the last
 *    renewal, or the moment we gave up early on an attempt that a replica
 *    received but did not answer (with several replicas an attempt gets
 *    half of what is left: orcd may have renewed the lease meanwhile).
 *    Attempts go on until then; only past it (or on orcd's 404/410) is the
 *    node lost, so the client does not stop renewing a lease that may be
 *    alive. A single orcd is waited for until then, so a stalled one
 *    makes the node lost a TTL after its last answer; attempts given up
 *    unanswered extend it to ORC_CLIENT_KA_UNANSWERED_TTLS TTLs after the
 *    last answer at most, so replicas that all take requests and never
 *    answer make the node lost too.
 *  - answered_ms: when orcd last answered (the registration or a renewal).
 *  - due_ms: when the next attempt is due; failing: the last one failed;
 *    logged_ms: when a late renewal was last logged.
 */
typedef struct orc_client_ka {
    uint64_t renewed_ms;
    uint64_t alive_ms;
    uint64_t answered_ms;
    uint64_t due_ms;
    uint64_t logged_ms;
    int failing;
} orc_client_ka_t;

/*
 * The time an attempt sent at now_ms may take: until the lease is surely
 * over (a slow orcd is waited for as long as the lease may last; a stalled
 * one must not hold us past it). With several replicas half of it: the
 * other half is for the next replica, which the next attempt asks first.
 * At least 1 ms.
 */
static int orc_client_keepalive_budget(const orc_client_t *client,
                                       const orc_client_ka_t *ka,
                                       uint64_t now_ms)
{
    uint64_t left = (ka->alive_ms > now_ms) ? ka->alive_ms - now_ms : 1;

    if (client->nurls > 1) {
        left /= 2;
    }
    if (left > INT_MAX) {
        left = INT_MAX;
    }
    return (left > 0) ? (int)left : 1;
}

/* A third of the TTL after the last renewal was sent (not after it was
 * answered: a slow answer must not push the next renewal towards the end
 * of the lease); after a failure ORC_CLIENT_KA_RETRY_MS later */
static void orc_client_keepalive_schedule(orc_client_ka_t *ka, unsigned ttl,
                                          uint64_t now_ms)
{
    uint64_t interval_ms = (uint64_t)ttl * 1000 / 3;

    if (interval_ms == 0) {
        interval_ms = 1;
    }
    if (!ka->failing) {
        ka->due_ms = ka->renewed_ms + interval_ms;
    } else {
        ka->due_ms = now_ms + ((interval_ms > ORC_CLIENT_KA_RETRY_MS)
                                   ? ORC_CLIENT_KA_RETRY_MS
                                   : interval_ms);
    }
}

/* nodes_lock held. A renewal answered with less than a third of the
 * TTL left of the lease it renewed (counted from the renewal before) is
 * logged, at most once a TTL, with where the time went: in this thread (it
 * sent late: starved) or in orcd (it answered late). */
static void orc_client_keepalive_renewed(orc_client_node_t *node,
                                         orc_client_ka_t *ka, uint64_t sent_ms,
                                         uint64_t now_ms, unsigned ttl)
{
    uint64_t ttl_ms = (uint64_t)node->ttl_sec * 1000;
    int64_t left    = (int64_t)(ka->renewed_ms + ttl_ms) - (int64_t)now_ms;

    if ((left < (int64_t)ttl_ms / 3) &&
        ((ka->logged_ms == 0) || (now_ms - ka->logged_ms >= ttl_ms))) {
        orc_client_log(node->client,
                       "node %" PRIu64 ": keep-alive renewed the lease with "
                       "%" PRId64 " ms of its %u s left: sent %" PRId64
                       " ms after it was due, answered in %" PRIu64 " ms",
                       node->id, left, node->ttl_sec,
                       (int64_t)sent_ms - (int64_t)ka->due_ms,
                       now_ms - sent_ms);
        ka->logged_ms = now_ms;
    } else if (ka->failing) {
        orc_client_log(node->client, "node %" PRIu64 ": keep-alive recovered",
                       node->id);
    }
    ka->renewed_ms  = sent_ms;
    ka->alive_ms    = now_ms + (uint64_t)ttl * 1000;
    ka->answered_ms = now_ms;
    ka->failing     = 0;
    node->ttl_sec   = ttl;
}

/* nodes_lock held. A failed attempt: 0 if the lease is lost (orcd says so,
 * or it is surely over), else 1 (the next attempt is scheduled). */
static int orc_client_keepalive_failed(orc_client_node_t *node,
                                       orc_client_ka_t *ka, uint64_t now_ms,
                                       orc_cl_status_t status)
{
    orc_client_t *client = node->client;
    uint64_t ttl_ms      = (uint64_t)node->ttl_sec * 1000;
    uint64_t max_ms      = ORC_CLIENT_KA_UNANSWERED_TTLS * ttl_ms;

    if ((status == ORC_CL_ERR_GONE) || (status == ORC_CL_ERR_NOT_FOUND)) {
        orc_client_log(client, "node %" PRIu64 ": lease lost: %s", node->id,
                       orc_client_last_error());
        return 0;
    }
    if ((status == ORC_CL_ERR_TIMEOUT) &&
        (now_ms + ORC_CLIENT_KA_RETRY_MS <= ka->alive_ms)) {
        /* given up early (half the time, for another replica), unanswered
         * but received: orcd may have renewed the lease before */
        ka->alive_ms = now_ms + ttl_ms;
        if (ka->alive_ms > ka->answered_ms + max_ms) {
            ka->alive_ms = ka->answered_ms + max_ms;
        }
    }
    if (now_ms >= ka->alive_ms) {
        orc_client_log(client,
                       "node %" PRIu64 ": lease lost, no keep-alive "
                       "answered for %" PRIu64 " ms (TTL %u s): %s",
                       node->id, now_ms - ka->answered_ms, node->ttl_sec,
                       orc_client_last_error());
        return 0;
    }
    if (!ka->failing) {
        orc_client_log(client,
                       "node %" PRIu64 ": keep-alive failed (%s), "
                       "retrying: %s",
                       node->id, orc_cl_status_str(status),
                       orc_client_last_error());
    }
    ka->failing = 1;
    orc_client_keepalive_schedule(ka, node->ttl_sec, now_ms);
    return 1;
}

/* nodes_lock held (dropped during the request). One attempt: 0 if the
 * lease is lost, else 1. */
static int orc_client_keepalive_attempt(orc_client_node_t *node,
                                        orc_client_ka_t *ka)
{
    orc_client_t *client = node->client;
    unsigned ttl         = node->ttl_sec;
    uint64_t sent_ms     = orc_util_now_ms();
    int timeout_ms       = orc_client_keepalive_budget(client, ka, sent_ms);
    orc_cl_status_t status;
    uint64_t now_ms;

    pthread_mutex_unlock(&client->nodes_lock);
    status = orc_client_keepalive_once(client, node->id, timeout_ms, &ttl);
    now_ms = orc_util_now_ms();
    pthread_mutex_lock(&client->nodes_lock);
    if (status != ORC_CL_OK) {
        return orc_client_keepalive_failed(node, ka, now_ms, status);
    }

    orc_client_keepalive_renewed(node, ka, sent_ms, now_ms, ttl);
    orc_client_keepalive_schedule(ka, node->ttl_sec, now_ms);
    return 1;
}

static void *orc_client_keepalive_thread(void *arg)
{
    orc_client_node_t *node = arg;
    orc_client_t *client    = node->client;
    orc_client_ka_t ka      = {0};

    pthread_mutex_lock(&client->nodes_lock);
    ka.renewed_ms  = node->granted_ms;
    ka.answered_ms = orc_util_now_ms(); /* the registration's answer */
    ka.alive_ms    = ka.answered_ms + (uint64_t)node->ttl_sec * 1000;
    orc_client_keepalive_schedule(&ka, node->ttl_sec, ka.renewed_ms);
    while (!node->stop) {
        if (orc_util_now_ms() < ka.due_ms) {
            orc_client_timedwait_ms(&node->cond, &client->nodes_lock,
                                    ka.due_ms);
            continue;
        }
        if (!orc_client_keepalive_attempt(node, &ka)) {
            node->lost = 1;
            break;
        }
    }
    pthread_mutex_unlock(&client->nodes_lock);
    return NULL;
}

orc_cl_status_t orc_client_register(orc_client_t *client, const char *host,
                                    int64_t pid, const char *labels_json,
                                    unsigned ttl_sec, uint64_t *node_id_p)
{
    char path[256], rid[33];
    orc_client_node_t *node;
    json_t *request, *labels, *reply = NULL;
    uint64_t id, ttl, index, sent_ms;
    orc_cl_status_t status;
    pthread_condattr_t attr;
    const char *key;
    json_t *value;
    char *body;
    int ret;

    if ((client == NULL) || (host == NULL) || (host[0] == '\0') ||
        (node_id_p == NULL)) {
        orc_client_set_error("register: client, host and node_id_p are "
                             "required");
        return ORC_CL_ERR_INVALID;
    }

    if (labels_json != NULL) {
        status =
            orc_client_parse_object("register: labels", labels_json, &labels);
        if (status != ORC_CL_OK) {
            return status;
        }
        json_object_foreach(labels, key, value)
        {
            if (!json_is_string(value)) {
                orc_client_set_error("register: label '%s' is not a string",
                                     key);
                json_decref(labels);
                return ORC_CL_ERR_INVALID;
            }
        }
    } else {
        labels = json_object();
    }

    request = json_pack("{s:s, s:I, s:o}", "host", host, "pid", (json_int_t)pid,
                        "labels", labels);
    if ((request != NULL) && (ttl_sec > 0)) {
        json_object_set_new(request, "ttl", json_integer(ttl_sec));
    }

    status = orc_client_dump(request, &body);
    if (status != ORC_CL_OK) {
        return status;
    }

    snprintf(path, sizeof(path), "/v1/jobs/%s/nodes", client->job);
    orc_client_new_rid(rid);
    sent_ms = orc_util_now_ms();
    status  = orc_client_http_rid(client, "POST", path, body, 0, 0, rid, NULL,
                                  &reply);
    free(body);
    if (status != ORC_CL_OK) {
        return status;
    }

    if (!orc_client_get_uint(reply, "id", 1, &id) ||
        !orc_client_get_uint(reply, "ttl", 1, &ttl) || (ttl > UINT_MAX)) {
        orc_client_set_error("POST %s: reply lacks a valid id/ttl", path);
        json_decref(reply);
        return ORC_CL_ERR_PROTOCOL;
    }
    if (!orc_client_get_uint(reply, "index", 1, &index)) {
        index = 0; /* an older orcd: its posts carry no ack */
    }
    json_decref(reply);

    node = calloc(1, sizeof(*node));
    if (node == NULL) {
        orc_client_set_error("register: out of memory");
        status = ORC_CL_ERR_NO_MEMORY;
        goto err_delete;
    }

    node->client     = client;
    node->id         = id;
    node->index      = index;
    node->granted_ms = sent_ms;
    node->ttl_sec    = (unsigned)ttl;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&node->cond, &attr);
    pthread_condattr_destroy(&attr);

    pthread_mutex_lock(&client->nodes_lock);
    ret =
        pthread_create(&node->thread, NULL, orc_client_keepalive_thread, node);
    if (ret != 0) {
        pthread_mutex_unlock(&client->nodes_lock);
        orc_client_set_error("register: cannot start the keep-alive thread: "
                             "%s",
                             strerror(ret));
        status = ORC_CL_ERR_NO_MEMORY;
        goto err_free_node;
    }
    node->next    = client->nodes;
    client->nodes = node;
    pthread_mutex_unlock(&client->nodes_lock);

    *node_id_p = id;
    return ORC_CL_OK;

err_free_node:
    pthread_cond_destroy(&node->cond);
    free(node);
err_delete:
    snprintf(path, sizeof(path), "/v1/jobs/%s/nodes/%" PRIu64, client->job, id);
    orc_client_http(client, "DELETE", path, NULL, 0, NULL, NULL);
    return status;
}

/* nodes_lock held: node_id if registered through this client, else NULL */
static orc_client_node_t *orc_client_node_find(orc_client_t *client,
                                               uint64_t node_id)
{
    orc_client_node_t *node;

    for (node = client->nodes; node != NULL; node = node->next) {
        if (node->id == node_id) {
            return node;
        }
    }
    return NULL;
}

/* Unlink a node and stop its keep-alive thread; NULL if not ours */
static orc_client_node_t *orc_client_node_detach(orc_client_t *client,
                                                 uint64_t node_id)
{
    orc_client_node_t **pp, *node = NULL;

    pthread_mutex_lock(&client->nodes_lock);
    for (pp = &client->nodes; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->id == node_id) {
            node       = *pp;
            *pp        = node->next;
            node->stop = 1;
            pthread_cond_signal(&node->cond);
            break;
        }
    }
    pthread_mutex_unlock(&client->nodes_lock);

    if (node != NULL) {
        pthread_join(node->thread, NULL);
        pthread_cond_destroy(&node->cond);
    }

    return node;
}

orc_cl_status_t orc_client_deregister(orc_client_t *client, uint64_t node_id)
{
    orc_client_node_t *node;
    char path[256];

    if ((client == NULL) || (node_id == 0)) {
        orc_client_set_error("deregister: client and node id are required");
        return ORC_CL_ERR_INVALID;
    }

    node = orc_client_node_detach(client, node_id);
    free(node);

    snprintf(path, sizeof(path), "/v1/jobs/%s/nodes/%" PRIu64, client->job,
             node_id);
    return orc_client_http(client, "DELETE", path, NULL, 0, NULL, NULL);
}

int orc_client_node_lost(orc_client_t *client, uint64_t node_id)
{
    orc_client_node_t *node;
    int lost;

    if (client == NULL) {
        return 0;
    }

    pthread_mutex_lock(&client->nodes_lock);
    node = orc_client_node_find(client, node_id);
    lost = (node != NULL) && node->lost;
    pthread_mutex_unlock(&client->nodes_lock);
    return lost;
}

void orc_client_destroy(orc_client_t *client)
{
    orc_client_node_t *node;
    unsigned i;

    if (client == NULL) {
        return;
    }

    /* nodes still registered: stop keeping them alive and leave the job */
    while (client->nodes != NULL) {
        node = client->nodes;
        orc_client_deregister(client, node->id);
    }

    for (i = 0; i < client->pool_count; ++i) {
        orc_client_conn_destroy(client->pool[i]);
    }

    pthread_mutex_destroy(&client->nodes_lock);
    pthread_mutex_destroy(&client->wait_lock);
    pthread_mutex_destroy(&client->pool_lock);
    curl_slist_free_all(client->headers);
    free(client->ca_file);
    free(client->job);
    orc_client_urls_free(client);
    free(client);
}

/* ------------------------------------------------------------------ endpoints
 */

orc_cl_status_t orc_client_endpoint_put(orc_client_t *client, uint64_t node_id,
                                        const char *endpoint_json)
{
    char path[256];
    orc_cl_status_t status;
    json_t *object;
    char *body;

    if ((client == NULL) || (node_id == 0)) {
        orc_client_set_error("endpoint_put: client and node id are required");
        return ORC_CL_ERR_INVALID;
    }

    status = orc_client_parse_object("endpoint_put", endpoint_json, &object);
    if (status != ORC_CL_OK) {
        return status;
    }

    status = orc_client_dump(object, &body);
    if (status != ORC_CL_OK) {
        return status;
    }

    snprintf(path, sizeof(path), "/v1/jobs/%s/nodes/%" PRIu64 "/rdma/endpoint",
             client->job, node_id);
    status = orc_client_http(client, "PUT", path, body, 0, NULL, NULL);
    free(body);
    return status;
}

orc_cl_status_t orc_client_endpoint_get(orc_client_t *client, uint64_t node_id,
                                        char **endpoint_json_p)
{
    char path[256];
    orc_cl_status_t status;
    json_t *reply = NULL;

    if ((client == NULL) || (node_id == 0) || (endpoint_json_p == NULL)) {
        orc_client_set_error("endpoint_get: client, node id and "
                             "endpoint_json_p are required");
        return ORC_CL_ERR_INVALID;
    }

    snprintf(path, sizeof(path), "/v1/jobs/%s/nodes/%" PRIu64 "/rdma/endpoint",
             client->job, node_id);
    status = orc_client_http(client, "GET", path, NULL, 0, NULL, &reply);
    if (status != ORC_CL_OK) {
        return status;
    }

    return orc_client_dump(reply, endpoint_json_p);
}

/* ------------------------------------------------------------------ listing */

static void orc_client_node_info_clear(orc_node_info_t *info)
{
    free((char *)info->host);
    free((char *)info->labels_json);
    free((char *)info->endpoint_json);
    memset(info, 0, sizeof(*info));
}

static orc_cl_status_t orc_client_node_info_parse(json_t *object,
                                                  orc_node_info_t *info)
{
    json_t *host, *pid, *labels, *endpoint, *value;
    const char *key;

    memset(info, 0, sizeof(*info));

    host     = json_object_get(object, "host");
    pid      = json_object_get(object, "pid");
    labels   = json_object_get(object, "labels");
    endpoint = json_object_get(object, "endpoint");

    if (!json_is_object(object) ||
        !orc_client_get_uint(object, "id", 1, &info->id) ||
        !json_is_string(host) || !json_is_integer(pid) ||
        ((labels != NULL) && !json_is_object(labels)) ||
        ((endpoint != NULL) && !json_is_object(endpoint) &&
         !json_is_null(endpoint))) {
        orc_client_set_error("node object with missing or mistyped fields "
                             "(id, host, pid, labels, endpoint)");
        return ORC_CL_ERR_PROTOCOL;
    }

    if (labels != NULL) {
        json_object_foreach(labels, key, value)
        {
            if (!json_is_string(value)) {
                orc_client_set_error("node %" PRIu64 ": label '%s' is not a "
                                     "string",
                                     info->id, key);
                return ORC_CL_ERR_PROTOCOL;
            }
        }
    }

    info->pid         = json_integer_value(pid);
    info->host        = strdup(json_string_value(host));
    info->labels_json = (labels != NULL)
                            ? json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS)
                            : strdup("{}");
    if (json_is_object(endpoint)) {
        info->endpoint_json = json_dumps(endpoint, JSON_COMPACT);
        if (info->endpoint_json == NULL) {
            goto err_nomem;
        }
    }

    if ((info->host == NULL) || (info->labels_json == NULL)) {
        goto err_nomem;
    }

    return ORC_CL_OK;

err_nomem:
    orc_client_node_info_clear(info);
    orc_client_set_error("out of memory parsing a node");
    return ORC_CL_ERR_NO_MEMORY;
}

void orc_client_nodes_free(orc_node_info_t *nodes, size_t count)
{
    size_t i;

    if (nodes == NULL) {
        return;
    }

    for (i = 0; i < count; ++i) {
        orc_client_node_info_clear(&nodes[i]);
    }
    free(nodes);
}

orc_cl_status_t orc_client_nodes_list(orc_client_t *client, uint64_t index,
                                      int wait_ms, orc_node_info_t **nodes_p,
                                      size_t *count_p, uint64_t *index_p)
{
    char path[320], wait[32];
    orc_node_info_t *nodes;
    orc_cl_status_t status;
    json_t *reply = NULL, *array;
    uint64_t reply_index, deadline_ms, start_ms;
    size_t i, count;
    int left_ms;

    if ((client == NULL) || (nodes_p == NULL) || (count_p == NULL) ||
        (wait_ms < 0)) {
        orc_client_set_error("nodes_list: client, nodes_p and count_p are "
                             "required, wait_ms >= 0");
        return ORC_CL_ERR_INVALID;
    }

    deadline_ms = orc_util_now_ms() + (uint64_t)wait_ms;
    left_ms     = wait_ms;
    for (;;) {
        if (left_ms > 0) {
            orc_client_wait_str(left_ms, wait, sizeof(wait));
            snprintf(path, sizeof(path),
                     "/v1/jobs/%s/nodes?index=%" PRIu64 "&wait=%s", client->job,
                     index, wait);
        } else {
            snprintf(path, sizeof(path), "/v1/jobs/%s/nodes", client->job);
        }

        start_ms = orc_util_now_ms();
        status =
            orc_client_http(client, "GET", path, NULL, left_ms, NULL, &reply);
        if (status != ORC_CL_OK) {
            return status;
        }

        array = json_object_get(reply, "nodes");
        if (!json_is_array(array) ||
            !orc_client_get_uint(reply, "index", 0, &reply_index)) {
            orc_client_set_error("GET %s: reply lacks nodes[] or index", path);
            status = ORC_CL_ERR_PROTOCOL;
            goto out;
        }

        /* unchanged after a capped wait: wait for the rest */
        if ((wait_ms == 0) || (reply_index > index) ||
            !orc_client_rewait(start_ms, deadline_ms, &left_ms)) {
            break;
        }
        json_decref(reply);
        reply = NULL;
    }

    count = json_array_size(array);
    nodes = calloc(count + 1, sizeof(*nodes));
    if (nodes == NULL) {
        orc_client_set_error("nodes_list: out of memory");
        status = ORC_CL_ERR_NO_MEMORY;
        goto out;
    }

    for (i = 0; i < count; ++i) {
        status =
            orc_client_node_info_parse(json_array_get(array, i), &nodes[i]);
        if (status != ORC_CL_OK) {
            orc_client_nodes_free(nodes, i);
            goto out;
        }
    }

    *nodes_p = nodes;
    *count_p = count;
    if (index_p != NULL) {
        *index_p = reply_index;
    }

out:
    json_decref(reply);
    return status;
}

orc_cl_status_t orc_client_node_get(orc_client_t *client, uint64_t node_id,
                                    orc_node_info_t **node_p)
{
    char path[256];
    orc_node_info_t *node;
    orc_cl_status_t status;
    json_t *reply = NULL;

    if ((client == NULL) || (node_id == 0) || (node_p == NULL)) {
        orc_client_set_error("node_get: client, node id and node_p are "
                             "required");
        return ORC_CL_ERR_INVALID;
    }

    snprintf(path, sizeof(path), "/v1/jobs/%s/nodes/%" PRIu64, client->job,
             node_id);
    status = orc_client_http(client, "GET", path, NULL, 0, NULL, &reply);
    if (status != ORC_CL_OK) {
        return status;
    }

    node = calloc(1, sizeof(*node));
    if (node == NULL) {
        orc_client_set_error("node_get: out of memory");
        status = ORC_CL_ERR_NO_MEMORY;
        goto out;
    }

    status = orc_client_node_info_parse(reply, node);
    if (status != ORC_CL_OK) {
        free(node);
        goto out;
    }

    *node_p = node;

out:
    json_decref(reply);
    return status;
}

/* ------------------------------------------------------------------ mailbox */

/* A recv of node_id's mailbox with cursor after returned messages up to
 * last (after if none) */
static void orc_client_mbox_read(orc_client_t *client, uint64_t node_id,
                                 uint64_t after, uint64_t last)
{
    orc_client_node_t *node;

    pthread_mutex_lock(&client->nodes_lock);
    node = orc_client_node_find(client, node_id);
    if (node != NULL) {
        node->acked_seq = (after > node->acked_seq) ? after : node->acked_seq;
        node->read_seq  = (last > node->read_seq) ? last : node->read_seq;
    }
    pthread_mutex_unlock(&client->nodes_lock);
}

/* Add to a post from node `from` the ack of what its recv returned and
 * nothing acknowledged yet: *after_p (0: none added) */
static void orc_client_mbox_ack_add(orc_client_t *client, uint64_t from,
                                    json_t *request, uint64_t *after_p)
{
    orc_client_node_t *node;
    uint64_t index = 0;

    *after_p = 0;
    pthread_mutex_lock(&client->nodes_lock);
    node = orc_client_node_find(client, from);
    if ((node != NULL) && (node->index > 0) &&
        (node->read_seq > node->acked_seq)) {
        *after_p = node->read_seq;
        index    = node->index;
    }
    pthread_mutex_unlock(&client->nodes_lock);
    if ((*after_p > 0) &&
        json_object_set_new(request, "ack",
                            json_pack("{sIsI}", "after", (json_int_t)*after_p,
                                      "index", (json_int_t)index))) {
        *after_p = 0;
    }
}

orc_cl_status_t orc_client_mbox_send(orc_client_t *client, uint64_t dst,
                                     uint64_t from, const char *body_json,
                                     uint64_t *seq_p)
{
    char path[256], rid[33];
    orc_cl_status_t status;
    json_t *object, *request, *reply = NULL;
    uint64_t seq, ack = 0;
    char *body;

    if ((client == NULL) || (dst == 0)) {
        orc_client_set_error("mbox_send: client and destination are required");
        return ORC_CL_ERR_INVALID;
    }

    status = orc_client_parse_object("mbox_send", body_json, &object);
    if (status != ORC_CL_OK) {
        return status;
    }

    request = json_pack("{s:o}", "body", object);
    if ((request != NULL) && (from != 0)) {
        json_object_set_new(request, "from", json_integer((json_int_t)from));
        orc_client_mbox_ack_add(client, from, request, &ack);
    }

    status = orc_client_dump(request, &body);
    if (status != ORC_CL_OK) {
        return status;
    }

    snprintf(path, sizeof(path), "/v1/jobs/%s/nodes/%" PRIu64 "/mailbox",
             client->job, dst);
    orc_client_new_rid(rid);
    status = orc_client_http_rid(client, "POST", path, body, 0, 0, rid, NULL,
                                 &reply);
    free(body);
    if (status != ORC_CL_OK) {
        return status;
    }

    if (!orc_client_get_uint(reply, "seq", 1, &seq)) {
        orc_client_set_error("POST %s: reply lacks a valid seq", path);
        status = ORC_CL_ERR_PROTOCOL;
    } else if (seq_p != NULL) {
        *seq_p = seq;
    }
    if ((status == ORC_CL_OK) && (ack > 0)) {
        orc_client_mbox_read(client, from, ack, 0); /* acknowledged */
    }

    json_decref(reply);
    return status;
}

void orc_client_mbox_free(orc_mbox_msg_t *msgs, size_t count)
{
    size_t i;

    if (msgs == NULL) {
        return;
    }

    for (i = 0; i < count; ++i) {
        free((char *)msgs[i].body_json);
    }
    free(msgs);
}

orc_cl_status_t orc_client_mbox_recv(orc_client_t *client, uint64_t node_id,
                                     uint64_t after, int wait_ms,
                                     orc_mbox_msg_t **msgs_p, size_t *count_p)
{
    char path[320], wait[32];
    orc_cl_status_t status;
    json_t *reply = NULL, *array, *item, *body, *from;
    orc_mbox_msg_t *msgs;
    uint64_t prev_seq, deadline_ms, start_ms;
    size_t i, count;
    int left_ms;

    if ((client == NULL) || (node_id == 0) || (msgs_p == NULL) ||
        (count_p == NULL) || (wait_ms < 0)) {
        orc_client_set_error("mbox_recv: client, node id, msgs_p and count_p "
                             "are required, wait_ms >= 0");
        return ORC_CL_ERR_INVALID;
    }

    deadline_ms = orc_util_now_ms() + (uint64_t)wait_ms;
    left_ms     = wait_ms;
    for (;;) {
        orc_client_wait_str(left_ms, wait, sizeof(wait));
        snprintf(path, sizeof(path),
                 "/v1/jobs/%s/nodes/%" PRIu64 "/mailbox?after=%" PRIu64
                 "&wait=%s",
                 client->job, node_id, after, wait);
        start_ms = orc_util_now_ms();
        status =
            orc_client_http(client, "GET", path, NULL, left_ms, NULL, &reply);
        if (status != ORC_CL_OK) {
            return status;
        }

        array = json_object_get(reply, "messages");
        if ((wait_ms == 0) || !json_is_array(array) ||
            (json_array_size(array) > 0) ||
            !orc_client_rewait(start_ms, deadline_ms, &left_ms)) {
            break;
        }
        json_decref(reply);
        reply = NULL;
    }

    if (!json_is_array(array)) {
        orc_client_set_error("GET %s: reply lacks messages[]", path);
        status = ORC_CL_ERR_PROTOCOL;
        goto out;
    }

    count = json_array_size(array);
    msgs  = calloc(count + 1, sizeof(*msgs));
    if (msgs == NULL) {
        orc_client_set_error("mbox_recv: out of memory");
        status = ORC_CL_ERR_NO_MEMORY;
        goto out;
    }

    prev_seq = after;
    for (i = 0; i < count; ++i) {
        item = json_array_get(array, i);
        body = json_object_get(item, "body");
        from = json_object_get(item, "from");
        if (!json_is_object(item) ||
            !orc_client_get_uint(item, "seq", 1, &msgs[i].seq) ||
            (msgs[i].seq <= prev_seq) || !json_is_object(body) ||
            ((from != NULL) && !json_is_null(from) &&
             !orc_client_get_uint(item, "from", 0, &msgs[i].from))) {
            orc_client_set_error("GET %s: message %zu is malformed or out of "
                                 "order",
                                 path, i);
            orc_client_mbox_free(msgs, i);
            status = ORC_CL_ERR_PROTOCOL;
            goto out;
        }

        prev_seq          = msgs[i].seq;
        msgs[i].body_json = json_dumps(body, JSON_COMPACT);
        if (msgs[i].body_json == NULL) {
            orc_client_set_error("mbox_recv: out of memory");
            orc_client_mbox_free(msgs, i);
            status = ORC_CL_ERR_NO_MEMORY;
            goto out;
        }
    }

    *msgs_p  = msgs;
    *count_p = count;
    orc_client_mbox_read(client, node_id, after, prev_seq);

out:
    json_decref(reply);
    return status;
}

/* ------------------------------------------------------------------ kv */

orc_cl_status_t orc_client_kv_put_node(orc_client_t *client, const char *key,
                                       const void *value, size_t length,
                                       uint64_t node_id)
{
    char path[320];
    orc_cl_status_t status;
    json_t *request;
    char *b64, *body;

    if ((client == NULL) || ((value == NULL) && (length > 0))) {
        orc_client_set_error("kv_put: client and value are required");
        return ORC_CL_ERR_INVALID;
    }

    if ((key == NULL) || !orc_util_name_valid(key, strlen(key), 1)) {
        orc_client_set_error("kv_put: invalid key: 1..%d characters of "
                             "[A-Za-z0-9._-/], no '..', '//', leading or "
                             "trailing '/'",
                             ORC_UTIL_NAME_MAX);
        return ORC_CL_ERR_INVALID;
    }

    b64 = orc_client_b64_encode((value != NULL) ? value : "", length);
    if (b64 == NULL) {
        orc_client_set_error("kv_put: out of memory");
        return ORC_CL_ERR_NO_MEMORY;
    }

    request = json_pack("{s:{s:s}}", "value", "b64", b64);
    free(b64);
    if ((request != NULL) && (node_id != 0)) {
        json_object_set_new(request, "node", json_integer((json_int_t)node_id));
    }

    status = orc_client_dump(request, &body);
    if (status != ORC_CL_OK) {
        return status;
    }

    snprintf(path, sizeof(path), "/v1/jobs/%s/kv/%s", client->job, key);
    status = orc_client_http(client, "PUT", path, body, 0, NULL, NULL);
    free(body);
    return status;
}

orc_cl_status_t orc_client_kv_put(orc_client_t *client, const char *key,
                                  const void *value, size_t length)
{
    return orc_client_kv_put_node(client, key, value, length, 0);
}

orc_cl_status_t orc_client_kv_get(orc_client_t *client, const char *key,
                                  int wait_ms, void **value_p, size_t *length_p)
{
    char path[320], wait[32];
    orc_cl_status_t status;
    json_t *reply = NULL, *value, *b64;
    uint64_t deadline_ms, start_ms;
    int ret, left_ms;

    if ((client == NULL) || (value_p == NULL) || (length_p == NULL) ||
        (wait_ms < 0)) {
        orc_client_set_error("kv_get: client, value_p and length_p are "
                             "required, wait_ms >= 0");
        return ORC_CL_ERR_INVALID;
    }

    if ((key == NULL) || !orc_util_name_valid(key, strlen(key), 1)) {
        orc_client_set_error("kv_get: invalid key: 1..%d characters of "
                             "[A-Za-z0-9._-/], no '..', '//', leading or "
                             "trailing '/'",
                             ORC_UTIL_NAME_MAX);
        return ORC_CL_ERR_INVALID;
    }

    deadline_ms = orc_util_now_ms() + (uint64_t)wait_ms;
    left_ms     = wait_ms;
    for (;;) {
        if (left_ms > 0) {
            orc_client_wait_str(left_ms, wait, sizeof(wait));
            snprintf(path, sizeof(path), "/v1/jobs/%s/kv/%s?wait=%s",
                     client->job, key, wait);
        } else {
            snprintf(path, sizeof(path), "/v1/jobs/%s/kv/%s", client->job, key);
        }

        start_ms = orc_util_now_ms();
        status =
            orc_client_http(client, "GET", path, NULL, left_ms, NULL, &reply);
        if ((status != ORC_CL_ERR_NOT_FOUND) || (wait_ms == 0)) {
            break;
        }

        if (!orc_client_rewait(start_ms, deadline_ms, &left_ms)) {
            orc_client_set_error("GET /v1/jobs/%s/kv/%s: key did not appear "
                                 "within %d ms",
                                 client->job, key, wait_ms);
            return ORC_CL_ERR_TIMEOUT;
        }
    }

    if (status != ORC_CL_OK) {
        return status;
    }

    value = json_object_get(reply, "value");
    b64   = json_object_get(value, "b64");
    if (!json_is_object(value) || (json_object_size(value) != 1) ||
        !json_is_string(b64)) {
        orc_client_set_error("GET %s: value is not {\"b64\": \"...\"}", path);
        status = ORC_CL_ERR_PROTOCOL;
        goto out;
    }

    ret = orc_client_b64_decode(json_string_value(b64), json_string_length(b64),
                                value_p, length_p);
    if (ret == -2) {
        orc_client_set_error("kv_get: out of memory");
        status = ORC_CL_ERR_NO_MEMORY;
    } else if (ret != 0) {
        orc_client_set_error("GET %s: value is not valid base64", path);
        status = ORC_CL_ERR_PROTOCOL;
    }

out:
    json_decref(reply);
    return status;
}

orc_cl_status_t orc_client_kv_delete(orc_client_t *client, const char *key)
{
    char path[320];

    if (client == NULL) {
        orc_client_set_error("kv_delete: client is required");
        return ORC_CL_ERR_INVALID;
    }

    if ((key == NULL) || !orc_util_name_valid(key, strlen(key), 1)) {
        orc_client_set_error("kv_delete: invalid key: 1..%d characters of "
                             "[A-Za-z0-9._-/], no '..', '//', leading or "
                             "trailing '/'",
                             ORC_UTIL_NAME_MAX);
        return ORC_CL_ERR_INVALID;
    }

    snprintf(path, sizeof(path), "/v1/jobs/%s/kv/%s", client->job, key);
    return orc_client_http(client, "DELETE", path, NULL, 0, NULL, NULL);
}
