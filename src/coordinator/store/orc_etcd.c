/*
 * etcd v3 over its JSON gateway (see orc_etcd.h).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_etcd.h"
#include "coordinator/common/orc_util.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ORC_ETCD_POOL_MAX    64
#define ORC_ETCD_REPLY_MAX   (256u * 1024 * 1024)
#define ORC_ETCD_BACKOFF_MS  50
#define ORC_ETCD_BACKOFF_MAX 500

typedef enum orc_etcd_outcome {
    ORC_ETCD_DONE,      /* an answer (success or a final error) */
    ORC_ETCD_REFUSED,   /* the request never reached etcd */
    ORC_ETCD_REJECTED,  /* etcd turned it down before raft: retry */
    ORC_ETCD_UNCERTAIN, /* it may have been applied */
    ORC_ETCD_REAUTH,    /* the auth token expired */
} orc_etcd_outcome_t;

/*
 * Immutable after open, except: pool/npool (pool_lock), token (token_lock:
 * read by every call, replaced when it expires), current (atomic: the
 * endpoint calls start with; moved on by whoever sees it fail) and stream
 * (stream_lock: the multi handle of the stream running, if any).
 */
struct orc_etcd {
    char **endpoints;
    size_t nendpoints;
    _Atomic size_t current;
    char *ca_file;
    char *cert_file;
    char *key_file;
    char *username;
    char *password;
    unsigned timeout_ms;
    pthread_mutex_t pool_lock;
    CURL *pool[ORC_ETCD_POOL_MAX];
    unsigned npool;
    pthread_rwlock_t token_lock;
    char *token;
    pthread_mutex_t stream_lock;
    CURLM *stream; /* the stream running, for orc_etcd_wake */
};

static pthread_once_t orc_etcd_once = PTHREAD_ONCE_INIT;

static void orc_etcd_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ------------------------------------------------------------ JSON helpers */

json_t *orc_etcd_bytes(const void *data, size_t len)
{
    char *text = orc_util_b64_encode(data, len);
    json_t *s;

    if (text == NULL) {
        return NULL;
    }
    s = json_string(text);
    free(text);
    return s;
}

char *orc_etcd_get_bytes(json_t *o, const char *field, size_t *len_p)
{
    json_t *v = json_object_get(o, field);
    void *data;

    if (v == NULL) {
        data   = calloc(1, 1); /* etcd leaves empty fields out */
        *len_p = 0;
        return data;
    }
    if (!json_is_string(v) ||
        orc_util_b64_decode(json_string_value(v), json_string_length(v), &data,
                            len_p)) {
        return NULL;
    }
    return data;
}

uint64_t orc_etcd_get_u64(json_t *o, const char *field)
{
    json_t *v  = json_object_get(o, field);
    uint64_t u = 0;

    if (json_is_integer(v) && (json_integer_value(v) >= 0)) {
        return (uint64_t)json_integer_value(v);
    }
    if (json_is_string(v)) {
        orc_util_parse_u64(json_string_value(v), &u);
    }
    return u;
}

/* ------------------------------------------------------------- transport */

static CURL *orc_etcd_handle_get(orc_etcd_t *etcd)
{
    CURL *curl = NULL;

    pthread_mutex_lock(&etcd->pool_lock);
    if (etcd->npool > 0) {
        curl = etcd->pool[--etcd->npool];
    }
    pthread_mutex_unlock(&etcd->pool_lock);
    if (curl != NULL) {
        return curl;
    }
    curl = curl_easy_init();
    if (curl == NULL) {
        return NULL;
    }
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPINTVL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, orc_util_buf_curl_write);
    if (etcd->ca_file != NULL) {
        curl_easy_setopt(curl, CURLOPT_CAINFO, etcd->ca_file);
    }
    if (etcd->cert_file != NULL) {
        curl_easy_setopt(curl, CURLOPT_SSLCERT, etcd->cert_file);
        curl_easy_setopt(curl, CURLOPT_SSLKEY, etcd->key_file);
    }
    return curl;
}

static void orc_etcd_handle_put(orc_etcd_t *etcd, CURL *curl, int reuse)
{
    if (reuse) {
        pthread_mutex_lock(&etcd->pool_lock);
        if (etcd->npool < ORC_ETCD_POOL_MAX) {
            etcd->pool[etcd->npool++] = curl;
            curl                      = NULL;
        }
        pthread_mutex_unlock(&etcd->pool_lock);
    }
    if (curl != NULL) {
        curl_easy_cleanup(curl);
    }
}

/* The path that gets a new auth token */
static const char orc_etcd_auth_path[] = "/v3/auth/authenticate";

/* Headers of a request to path: JSON, and the auth token if there is one,
 * except when asking for a new token: etcd refuses that request when it
 * carries an expired token */
static struct curl_slist *orc_etcd_headers(orc_etcd_t *etcd, const char *path)
{
    struct curl_slist *h, *n;
    char line[1024];

    h = curl_slist_append(NULL, "Content-Type: application/json");
    n = (h != NULL) ? curl_slist_append(h, "Expect:") : NULL;
    if (n == NULL) {
        curl_slist_free_all(h);
        return NULL;
    }
    h = n;
    pthread_rwlock_rdlock(&etcd->token_lock);
    if ((etcd->token != NULL) && strcmp(path, orc_etcd_auth_path)) {
        snprintf(line, sizeof(line), "Authorization: %s", etcd->token);
        n = curl_slist_append(h, line);
        memset(line, 0, sizeof(line));
    }
    pthread_rwlock_unlock(&etcd->token_lock);
    if (n == NULL) {
        curl_slist_free_all(h);
        return NULL;
    }
    return n;
}

/* The message of an error answer of etcd ("" if it has none) */
static const char *orc_etcd_reply_error(json_t *reply)
{
    const char *msg = json_string_value(json_object_get(reply, "error"));

    return (msg != NULL) ? msg : "";
}

/* An error answer of etcd: what it means for the call */
static orc_etcd_outcome_t orc_etcd_error_outcome(long http, json_t *reply,
                                                 int *status_p)
{
    const char *msg = orc_etcd_reply_error(reply);
    json_int_t code = json_integer_value(json_object_get(reply, "code"));

    switch (code) {
    case 5: /* NotFound */
        *status_p = ORC_STORE_ENOENT;
        return ORC_ETCD_DONE;
    case 16: /* Unauthenticated: the token expired */
        return ORC_ETCD_REAUTH;
    case 8: /* ResourceExhausted: too many requests, or no space */
        if (strstr(msg, "space") != NULL) {
            orc_store_error("etcd: %s", msg);
        }
        return ORC_ETCD_REJECTED;
    case 14: /* Unavailable: before raft, or a proposal that timed out */
        if (strstr(msg, "no leader") || strstr(msg, "not capable") ||
            strstr(msg, "leader changed") || strstr(msg, "too many")) {
            return ORC_ETCD_REJECTED;
        }
        return ORC_ETCD_UNCERTAIN;
    case 4: /* DeadlineExceeded */
        return ORC_ETCD_UNCERTAIN;
    case 3:  /* InvalidArgument */
    case 11: /* OutOfRange (a compacted revision) */
        orc_store_error("etcd refused a request: %s", msg);
        *status_p = ORC_STORE_EINVAL;
        return ORC_ETCD_DONE;
    default:
        orc_store_error("etcd: HTTP %ld: %s", http, msg);
        *status_p = ORC_STORE_EIO;
        return ORC_ETCD_DONE;
    }
}

/* Why a call to one endpoint did not get an answer, in words */
typedef struct {
    char text[256];
} orc_etcd_reason_t;

/* An answer that is not etcd's JSON (a proxy's, or etcd's gateway refusing
 * the request before it reached etcd): its status and first line */
static void orc_etcd_reason_http(orc_etcd_reason_t *reason, long http,
                                 const orc_util_buf_t *buf)
{
    const char *body = (buf->data != NULL) ? buf->data : "";
    int len          = (int)strcspn(body, "\r\n");

    snprintf(reason->text, sizeof(reason->text),
             "HTTP %ld, not etcd's JSON%s%.*s", http, (len > 0) ? ": " : "",
             (len > 160) ? 160 : len, body);
}

/* A transfer that failed: curl's words. A TLS connection that breaks while
 * orcd shows no certificate most likely met an etcd that requires one (with
 * TLS 1.3 the refusal comes after the handshake, and curl may only see the
 * connection close): say so. */
static void orc_etcd_reason_curl(orc_etcd_reason_t *reason,
                                 const orc_etcd_t *etcd, size_t ep, CURLcode rc,
                                 const char *curl_err)
{
    int tls_broke = ((rc == CURLE_SSL_CONNECT_ERROR) ||
                     (rc == CURLE_RECV_ERROR) || (rc == CURLE_SEND_ERROR)) &&
                    !strncmp(etcd->endpoints[ep], "https://", 8);

    snprintf(reason->text, sizeof(reason->text), "%s%s",
             (curl_err[0] != '\0') ? curl_err : curl_easy_strerror(rc),
             (tls_broke && (etcd->cert_file == NULL))
                 ? " (does etcd require a client certificate? "
                   "store.etcd.tls.cert and key)"
                 : "");
}

/*
 * One POST to one endpoint, within timeout_ms. DONE with *status_p and
 * *reply_p (on ORC_STORE_OK), or how it failed; reason names it.
 */
static orc_etcd_outcome_t orc_etcd_post(orc_etcd_t *etcd, size_t ep,
                                        const char *path, const char *text,
                                        long timeout_ms, int *status_p,
                                        json_t **reply_p,
                                        orc_etcd_reason_t *reason)
{
    orc_util_buf_t buf             = {.max = ORC_ETCD_REPLY_MAX};
    char curl_err[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers;
    orc_etcd_outcome_t out;
    char url[1024];
    json_t *reply;
    long http = 0;
    CURLcode rc;
    CURL *curl;

    snprintf(reason->text, sizeof(reason->text), "out of memory");
    curl    = orc_etcd_handle_get(etcd);
    headers = orc_etcd_headers(etcd, path);
    if ((curl == NULL) || (headers == NULL)) {
        curl_slist_free_all(headers);
        if (curl != NULL) {
            orc_etcd_handle_put(etcd, curl, 1);
        }
        *status_p = ORC_STORE_ENOMEM;
        return ORC_ETCD_DONE;
    }
    snprintf(url, sizeof(url), "%s%s", etcd->endpoints[ep], path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)strlen(text));
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                     (timeout_ms > 0) ? timeout_ms : 1);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     (timeout_ms > 0) ? timeout_ms : 1);
    rc = curl_easy_perform(curl);
    curl_slist_free_all(headers);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
    if (rc != CURLE_OK) {
        orc_etcd_handle_put(etcd, curl, 0);
        free(buf.data);
        orc_etcd_reason_curl(reason, etcd, ep, rc, curl_err);
        if ((rc == CURLE_COULDNT_CONNECT) ||
            (rc == CURLE_COULDNT_RESOLVE_HOST)) {
            return ORC_ETCD_REFUSED;
        }
        if ((rc == CURLE_SSL_CONNECT_ERROR) ||
            (rc == CURLE_PEER_FAILED_VERIFICATION) ||
            (rc == CURLE_SSL_CERTPROBLEM) || (rc == CURLE_SSL_CACERT_BADFILE)) {
            return ORC_ETCD_REFUSED; /* nothing was sent */
        }
        return ORC_ETCD_UNCERTAIN;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &http);
    orc_etcd_handle_put(etcd, curl, 1);
    reply = json_loadb((buf.data != NULL) ? buf.data : "", buf.len, 0, NULL);
    if (!json_is_object(reply)) {
        json_decref(reply);
        orc_etcd_reason_http(reason, http, &buf);
        free(buf.data);
        return (http == 200) ? ORC_ETCD_UNCERTAIN : ORC_ETCD_REFUSED;
    }
    free(buf.data);
    if (http == 200) {
        *status_p = ORC_STORE_OK;
        *reply_p  = reply;
        return ORC_ETCD_DONE;
    }
    snprintf(reason->text, sizeof(reason->text), "etcd: HTTP %ld: %s", http,
             orc_etcd_reply_error(reply));
    out = orc_etcd_error_outcome(http, reply, status_p);
    json_decref(reply);
    return out;
}

/* Get a new auth token (the user's): 0, or -1 with the reason in err */
static int orc_etcd_authenticate(orc_etcd_t *etcd, size_t ep, char *err,
                                 size_t errlen)
{
    orc_etcd_reason_t reason = {""};
    const char *token;
    json_t *body, *reply = NULL;
    orc_etcd_outcome_t out;
    char *text, *copy;
    int status = ORC_STORE_EIO;

    body =
        json_pack("{ssss}", "name", etcd->username, "password", etcd->password);
    text = (body != NULL) ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    out = orc_etcd_post(etcd, ep, orc_etcd_auth_path, text, etcd->timeout_ms,
                        &status, &reply, &reason);
    memset(text, 0, strlen(text));
    free(text);
    if ((out != ORC_ETCD_DONE) || (status != ORC_STORE_OK)) {
        snprintf(err, errlen, "%s: cannot authenticate user '%s'%s%s",
                 etcd->endpoints[ep], etcd->username,
                 (out != ORC_ETCD_DONE) ? ": " : " (wrong name or password?)",
                 (out != ORC_ETCD_DONE) ? reason.text : "");
        return -1;
    }
    token = json_string_value(json_object_get(reply, "token"));
    copy  = (token != NULL) ? strdup(token) : NULL;
    json_decref(reply);
    if (copy == NULL) {
        snprintf(err, errlen, "%s: no token in etcd's answer",
                 etcd->endpoints[ep]);
        return -1;
    }
    pthread_rwlock_wrlock(&etcd->token_lock);
    free(etcd->token);
    etcd->token = copy;
    pthread_rwlock_unlock(&etcd->token_lock);
    return 0;
}

static void orc_etcd_sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0) {
    }
}

void orc_etcd_next_endpoint(orc_etcd_t *etcd)
{
    atomic_fetch_add(&etcd->current, 1);
}

unsigned orc_etcd_timeout_ms(const orc_etcd_t *etcd)
{
    return etcd->timeout_ms;
}

int orc_etcd_call(orc_etcd_t *etcd, const char *path, json_t *body,
                  int idempotent, json_t **reply_p)
{
    return orc_etcd_call_until(etcd, path, body, idempotent,
                               orc_util_now_ms() + etcd->timeout_ms, reply_p);
}

int orc_etcd_call_until(orc_etcd_t *etcd, const char *path, json_t *body,
                        int idempotent, uint64_t deadline, json_t **reply_p)
{
    uint64_t now;
    size_t refused           = 0, ep, first;
    unsigned backoff         = ORC_ETCD_BACKOFF_MS;
    orc_etcd_reason_t reason = {""};
    orc_etcd_outcome_t out;
    int status = ORC_STORE_EUNAVAIL, reauth = 0;
    char err[256], *text;

    text = (body != NULL) ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        return ORC_STORE_ENOMEM;
    }
    *reply_p = NULL;
    for (;;) {
        first = atomic_load(&etcd->current);
        ep    = first % etcd->nendpoints;
        now   = orc_util_now_ms();
        if (now >= deadline) {
            break;
        }
        out = orc_etcd_post(etcd, ep, path, text, (long)(deadline - now),
                            &status, reply_p, &reason);
        if (out == ORC_ETCD_DONE) {
            goto out;
        }
        if ((out == ORC_ETCD_REAUTH) && (etcd->username != NULL) && !reauth++ &&
            !orc_etcd_authenticate(etcd, ep, err, sizeof(err))) {
            continue;
        }
        if ((out == ORC_ETCD_UNCERTAIN) && !idempotent) {
            status = ORC_STORE_EUNAVAIL;
            goto out;
        }
        /* move on to the next endpoint (unless another caller did) */
        atomic_compare_exchange_strong(&etcd->current, &first, first + 1);
        if (out == ORC_ETCD_REFUSED) {
            if (++refused >= etcd->nendpoints) {
                break; /* every endpoint refused: etcd is down */
            }
            continue;
        }
        refused = 0;
        now     = orc_util_now_ms();
        orc_etcd_sleep_ms((now + backoff < deadline) ? backoff
                          : (deadline > now)         ? deadline - now
                                                     : 0);
        backoff = (backoff * 2 > ORC_ETCD_BACKOFF_MAX) ? ORC_ETCD_BACKOFF_MAX
                                                       : backoff * 2;
    }
    status = ORC_STORE_EUNAVAIL;
    orc_store_log(ORC_STORE_LOG_DEBUG, "etcd %s: unavailable (%s)", path,
                  reason.text);
out:
    free(text);
    return status;
}

/* -------------------------------------------------------------- streaming */

typedef struct orc_etcd_stream_ctx {
    orc_util_buf_t buf;
    int (*on_message)(void *arg, json_t *msg);
    int (*stopped)(void *arg);
    void *arg;
    int done;
} orc_etcd_stream_ctx_t;

/* Hand every complete line (a JSON object) to on_message */
static size_t orc_etcd_stream_cb(char *ptr, size_t size, size_t nmemb,
                                 void *arg)
{
    orc_etcd_stream_ctx_t *s = arg;
    size_t len               = size * nmemb, line;
    json_t *msg;
    char *nl;

    if (orc_util_buf_append(&s->buf, ptr, len)) {
        return 0;
    }
    while (!s->done && ((nl = memchr(s->buf.data, '\n', s->buf.len)) != NULL)) {
        line = (size_t)(nl - s->buf.data) + 1;
        msg  = json_loadb(s->buf.data, line - 1, 0, NULL);
        if (msg == NULL) {
            orc_store_error("etcd stream: a line that is not JSON");
            return 0;
        }
        s->done = s->on_message(s->arg, msg);
        json_decref(msg);
        memmove(s->buf.data, s->buf.data + line, s->buf.len - line + 1);
        s->buf.len -= line;
    }
    return s->done ? 0 : len;
}

void orc_etcd_wake(orc_etcd_t *etcd)
{
    pthread_mutex_lock(&etcd->stream_lock);
    if (etcd->stream != NULL) {
        curl_multi_wakeup(etcd->stream);
    }
    pthread_mutex_unlock(&etcd->stream_lock);
}

/* Run the stream's transfer until it ends or the owner stops it */
static void orc_etcd_stream_run(orc_etcd_t *etcd, CURLM *multi,
                                orc_etcd_stream_ctx_t *s)
{
    int running = 1;

    pthread_mutex_lock(&etcd->stream_lock);
    etcd->stream = multi;
    pthread_mutex_unlock(&etcd->stream_lock);
    while (running && !s->stopped(s->arg)) {
        if ((curl_multi_perform(multi, &running) != CURLM_OK) ||
            (running &&
             (curl_multi_poll(multi, NULL, 0, 1000, NULL) != CURLM_OK))) {
            break;
        }
    }
    pthread_mutex_lock(&etcd->stream_lock);
    etcd->stream = NULL;
    pthread_mutex_unlock(&etcd->stream_lock);
}

int orc_etcd_stream(orc_etcd_t *etcd, const char *path, json_t *body,
                    int (*on_message)(void *arg, json_t *msg),
                    int (*stopped)(void *arg), void *arg)
{
    orc_etcd_stream_ctx_t s = {{.max = ORC_ETCD_REPLY_MAX},
                               on_message,
                               stopped,
                               arg,
                               0};
    struct curl_slist *headers;
    char url[1024], *text;
    CURLM *multi;
    CURL *curl;

    text = (body != NULL) ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    curl    = orc_etcd_handle_get(etcd);
    headers = orc_etcd_headers(etcd, path);
    multi   = curl_multi_init();
    if ((text == NULL) || (curl == NULL) || (headers == NULL) ||
        (multi == NULL)) {
        free(text);
        curl_slist_free_all(headers);
        if (curl != NULL) {
            orc_etcd_handle_put(etcd, curl, 0);
        }
        if (multi != NULL) {
            curl_multi_cleanup(multi);
        }
        return ORC_STORE_EUNAVAIL;
    }
    snprintf(url, sizeof(url), "%s%s",
             etcd->endpoints[atomic_load(&etcd->current) % etcd->nendpoints],
             path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)strlen(text));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, orc_etcd_stream_cb);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 0L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)etcd->timeout_ms);
    if (curl_multi_add_handle(multi, curl) == CURLM_OK) {
        orc_etcd_stream_run(etcd, multi, &s);
        curl_multi_remove_handle(multi, curl);
    }
    curl_multi_cleanup(multi);
    /* a stream's connection is not worth reusing */
    orc_etcd_handle_put(etcd, curl, 0);
    curl_slist_free_all(headers);
    free(s.buf.data);
    free(text);
    return s.done ? ORC_STORE_OK : ORC_STORE_EUNAVAIL;
}

/* --------------------------------------------------------------- lifetime */

static char *orc_etcd_strdup(const char *s, int *failed)
{
    char *copy = (s != NULL) ? strdup(s) : NULL;

    *failed |= ((s != NULL) && (copy == NULL));
    return copy;
}

/* Does some endpoint answer (and take the user)? */
static int orc_etcd_probe(orc_etcd_t *etcd, char *err, size_t errlen)
{
    orc_etcd_reason_t reason = {""};
    orc_etcd_outcome_t out;
    json_t *reply = NULL;
    size_t i;
    int status;

    for (i = 0; i < etcd->nendpoints; ++i) {
        if ((etcd->username != NULL) &&
            orc_etcd_authenticate(etcd, i, err, errlen)) {
            continue;
        }
        out = orc_etcd_post(etcd, i, "/v3/maintenance/status", "{}",
                            etcd->timeout_ms, &status, &reply, &reason);
        if ((out == ORC_ETCD_DONE) && (status == ORC_STORE_OK)) {
            json_decref(reply);
            atomic_store(&etcd->current, i);
            return 0;
        }
        snprintf(err, errlen, "%s: %s", etcd->endpoints[i],
                 (out == ORC_ETCD_DONE) ? orc_store_status_str(status)
                                        : reason.text);
    }
    return -1;
}

int orc_etcd_open(const orc_etcd_params_t *params, orc_etcd_t **etcd_p,
                  char *err, size_t errlen)
{
    orc_etcd_t *etcd;
    int failed = 0;
    size_t i;

    pthread_once(&orc_etcd_once, orc_etcd_global_init);
    if (params->nendpoints == 0) {
        snprintf(err, errlen, "no etcd endpoint");
        return -1;
    }
    etcd = calloc(1, sizeof(*etcd));
    if (etcd == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    etcd->endpoints = calloc(params->nendpoints, sizeof(char *));
    failed |= (etcd->endpoints == NULL);
    for (i = 0; !failed && (i < params->nendpoints); ++i) {
        etcd->endpoints[i] = orc_etcd_strdup(params->endpoints[i], &failed);
        etcd->nendpoints   = i + 1;
    }
    etcd->ca_file    = orc_etcd_strdup(params->ca_file, &failed);
    etcd->cert_file  = orc_etcd_strdup(params->cert_file, &failed);
    etcd->key_file   = orc_etcd_strdup(params->key_file, &failed);
    etcd->username   = orc_etcd_strdup(params->username, &failed);
    etcd->password   = orc_etcd_strdup(params->password, &failed);
    etcd->timeout_ms = (params->timeout_ms > 0) ? params->timeout_ms : 5000;
    pthread_mutex_init(&etcd->pool_lock, NULL);
    pthread_mutex_init(&etcd->stream_lock, NULL);
    pthread_rwlock_init(&etcd->token_lock, NULL);
    if (failed) {
        snprintf(err, errlen, "out of memory");
        goto err_close;
    }
    if (orc_etcd_probe(etcd, err, errlen)) {
        goto err_close;
    }
    *etcd_p = etcd;
    return 0;

err_close:
    orc_etcd_close(etcd);
    return -1;
}

void orc_etcd_close(orc_etcd_t *etcd)
{
    size_t i;

    if (etcd == NULL) {
        return;
    }
    for (i = 0; i < etcd->npool; ++i) {
        curl_easy_cleanup(etcd->pool[i]);
    }
    for (i = 0; i < etcd->nendpoints; ++i) {
        free(etcd->endpoints[i]);
    }
    if (etcd->password != NULL) {
        memset(etcd->password, 0, strlen(etcd->password));
    }
    if (etcd->token != NULL) {
        memset(etcd->token, 0, strlen(etcd->token));
    }
    free(etcd->endpoints);
    free(etcd->ca_file);
    free(etcd->cert_file);
    free(etcd->key_file);
    free(etcd->username);
    free(etcd->password);
    free(etcd->token);
    pthread_rwlock_destroy(&etcd->token_lock);
    pthread_mutex_destroy(&etcd->stream_lock);
    pthread_mutex_destroy(&etcd->pool_lock);
    free(etcd);
}
