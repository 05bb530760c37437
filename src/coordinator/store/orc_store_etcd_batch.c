/*
 * Group commit of the etcd store's transactions (see orc_store_etcd_int.h):
 * transactions that request threads make at the same time go to etcd
 * together, each as a nested txn in the success list of one outer txn
 * without compares, so that etcd proposes, commits and syncs them once.
 *
 * No timer and no thread of its own: a caller queues its txn and, while
 * fewer than the pipeline's depth of batches are on their way (the store's
 * `pipeline` parameter), sends what is queued at once (its own txn alone
 * when nothing else waits: no added latency). Otherwise it sleeps until a
 * batch returns; the caller whose batch returned, or the first one queued,
 * then sends the next batch with everything that waited meanwhile.
 *
 * etcd may apply batches on their way at the same time in either order:
 * their txns are concurrent (no caller of one had its answer when the other
 * was queued), so no write depends on one it may overtake; a write made
 * after another's answer is queued after it, and gets a later revision.
 * Each batch is one etcd txn: all of it or nothing, at one revision.
 *
 * A batch never holds two txns that touch a common key (compared, put or in
 * a deleted range): etcd evaluates every nested txn's compares before any
 * of the batch's writes, and refuses a txn that puts a key twice or puts
 * into a range it deletes. It stays within etcd's default --max-txn-ops
 * (as etcd counts: the outer txn's ops plus the widest nested list) and
 * well below its default request size. A batch etcd refuses as a whole
 * before applying anything (a put on a lease that is gone, or a request
 * etcd finds invalid) is sent again txn by txn, so each caller gets the
 * answer its txn gets alone; any other failure (etcd down, a timeout, a
 * leader change) is every caller's, as it would have been alone.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_store_etcd_int.h"
#include "coordinator/common/orc_util.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* etcd's default --max-txn-ops */
#define ORC_STORE_ETCD_TXN_OPS 128
/* etcd's default --max-request-bytes is 1.5 MiB: stay well below */
#define ORC_STORE_ETCD_TXN_BYTES (1024u * 1024)
/* bytes of a compare or op besides its key and value, at most */
#define ORC_STORE_ETCD_OP_BYTES 32

typedef enum orc_store_etcd_pending_state {
    ORC_STORE_ETCD_QUEUED, /* waiting in the queue */
    ORC_STORE_ETCD_SENT,   /* in a batch on its way */
    ORC_STORE_ETCD_DONE,   /* status (and reply) set */
    ORC_STORE_ETCD_ALONE,  /* its batch was refused whole: send it alone */
} orc_store_etcd_pending_state_t;

/* One caller's txn. Owned by the caller (on its stack); fields below
 * `state` are under the batcher's lock. */
struct orc_store_etcd_pending {
    json_t *body; /* the txn request: compare, success, failure */
    const orc_store_cmp_t *cmps;
    size_t ncmp;
    const orc_store_op_t *ops;
    size_t nops;
    size_t width;      /* its widest list (etcd's count of a nested txn) */
    size_t bytes;      /* its size, about */
    uint64_t deadline; /* monotonic ms: answered by then */
    uint64_t queued;   /* monotonic ns: when it was queued */
    pthread_cond_t cond;
    orc_store_etcd_pending_state_t state;
    int status;
    json_t *reply; /* on ORC_STORE_OK: shaped as a lone txn's answer */
    orc_store_etcd_pending_t *prev, *next;
};

void orc_store_etcd_batch_init(orc_store_etcd_batcher_t *b, unsigned depth)
{
    memset(b, 0, sizeof(*b));
    b->depth = depth;
    pthread_mutex_init(&b->lock, NULL);
}

void orc_store_etcd_batch_fini(orc_store_etcd_batcher_t *b)
{
    pthread_mutex_destroy(&b->lock);
}

void orc_store_etcd_batch_stats(orc_store_etcd_batcher_t *b,
                                orc_store_stats_t *stats)
{
    pthread_mutex_lock(&b->lock);
    stats->txn_batches      = b->batches;
    stats->txns_batched     = b->txns;
    stats->txn_batch_max    = b->max;
    stats->txns_waiting     = b->waiting;
    stats->txn_inflight_max = b->inflight_max;
    pthread_mutex_unlock(&b->lock);
}

/* ------------------------------------------------------------- the queue */

static void orc_store_etcd_enqueue(orc_store_etcd_batcher_t *b,
                                   orc_store_etcd_pending_t *p)
{
    p->prev = b->tail;
    p->next = NULL;
    if (b->tail != NULL) {
        b->tail->next = p;
    } else {
        b->head = p;
    }
    b->tail = p;
    ++b->waiting;
}

static void orc_store_etcd_unlink(orc_store_etcd_batcher_t *b,
                                  orc_store_etcd_pending_t *p)
{
    if (p->prev != NULL) {
        p->prev->next = p->next;
    } else {
        b->head = p->next;
    }
    if (p->next != NULL) {
        p->next->prev = p->prev;
    } else {
        b->tail = p->prev;
    }
    p->prev = p->next = NULL;
    --b->waiting;
}

/* Lock held: if a batch may start and txns wait, wake the first one to
 * send it */
static void orc_store_etcd_kick(orc_store_etcd_batcher_t *b)
{
    if ((b->head != NULL) && (b->inflight < b->depth)) {
        pthread_cond_signal(&b->head->cond);
    }
}

static void orc_store_etcd_finish(orc_store_etcd_pending_t *p, int status)
{
    p->state  = ORC_STORE_ETCD_DONE;
    p->status = status;
    pthread_cond_signal(&p->cond);
}

/* ------------------------------------------------------- what fits where */

/* Do [k1, e1) and [k2, e2) meet? e NULL: the single key; e "": the end of
 * the store's keys */
static int orc_store_etcd_meet(const char *k1, const char *e1, const char *k2,
                               const char *e2)
{
    if ((e1 == NULL) && (e2 == NULL)) {
        return !strcmp(k1, k2);
    }
    if (e1 == NULL) {
        return orc_store_etcd_meet(k2, e2, k1, e1);
    }
    if (e2 == NULL) {
        return (strcmp(k2, k1) >= 0) &&
               ((e1[0] == '\0') || (strcmp(k2, e1) < 0));
    }
    return ((e2[0] == '\0') || (strcmp(k1, e2) < 0)) &&
           ((e1[0] == '\0') || (strcmp(k2, e1) < 0));
}

/* The i-th key or range a txn touches: its compares, then its ops */
static const char *orc_store_etcd_touched(const orc_store_etcd_pending_t *p,
                                          size_t i, const char **end_p)
{
    if (i < p->ncmp) {
        *end_p = NULL;
        return p->cmps[i].key;
    }
    *end_p = (p->ops[i - p->ncmp].type == ORC_STORE_OP_DELETE_RANGE)
                 ? p->ops[i - p->ncmp].range_end
                 : NULL;
    return p->ops[i - p->ncmp].key;
}

/* Do two txns touch a common key? */
static int orc_store_etcd_conflict(const orc_store_etcd_pending_t *a,
                                   const orc_store_etcd_pending_t *b)
{
    const char *ka, *ea, *kb, *eb;
    size_t i, j;

    for (i = 0; i < a->ncmp + a->nops; ++i) {
        ka = orc_store_etcd_touched(a, i, &ea);
        for (j = 0; j < b->ncmp + b->nops; ++j) {
            kb = orc_store_etcd_touched(b, j, &eb);
            if (orc_store_etcd_meet(ka, ea, kb, eb)) {
                return 1;
            }
        }
    }
    return 0;
}

/* A txn's width and size as etcd counts them */
static void orc_store_etcd_measure(orc_store_etcd_t *s,
                                   orc_store_etcd_pending_t *p)
{
    const orc_store_op_t *op;
    size_t i;

    p->width = (p->ncmp > p->nops) ? p->ncmp : p->nops;
    p->bytes = 0;
    for (i = 0; i < p->ncmp; ++i) { /* the compare and the failure read */
        p->bytes +=
            2 * (s->plen + strlen(p->cmps[i].key) + ORC_STORE_ETCD_OP_BYTES);
    }
    for (i = 0; i < p->nops; ++i) {
        op = &p->ops[i];
        p->bytes +=
            s->plen + strlen(op->key) + op->value_len +
            ((op->range_end != NULL) ? s->plen + strlen(op->range_end) : 0) +
            ORC_STORE_ETCD_OP_BYTES;
    }
}

/* Can p join the n txns of batch (widest list width, bytes in all)? */
static int orc_store_etcd_fits(orc_store_etcd_pending_t *const *batch, size_t n,
                               size_t width, size_t bytes,
                               const orc_store_etcd_pending_t *p)
{
    size_t i;

    width = (p->width > width) ? p->width : width;
    if ((n + 1 + width > ORC_STORE_ETCD_TXN_OPS) ||
        (bytes + p->bytes > ORC_STORE_ETCD_TXN_BYTES)) {
        return 0;
    }
    for (i = 0; i < n; ++i) {
        if (orc_store_etcd_conflict(batch[i], p)) {
            return 0;
        }
    }
    return 1;
}

/* Lock held: take the next batch out of the queue (oldest first; a txn
 * that does not fit waits for the next one). Txns past their deadline are
 * answered unavailable (never sent). The number taken. */
static size_t orc_store_etcd_take(orc_store_etcd_t *s,
                                  orc_store_etcd_pending_t **batch)
{
    orc_store_etcd_batcher_t *b = &s->batcher;
    uint64_t now_ns             = orc_util_now_ns();
    uint64_t now                = now_ns / 1000000;
    size_t n = 0, width = 0, bytes = 0;
    orc_store_etcd_pending_t *p, *next;

    for (p = b->head; (p != NULL) && (n < ORC_STORE_ETCD_TXN_OPS); p = next) {
        next = p->next;
        if (p->deadline <= now) {
            orc_store_etcd_unlink(b, p);
            orc_store_etcd_finish(p, ORC_STORE_EUNAVAIL);
        } else if ((n == 0) || orc_store_etcd_fits(batch, n, width, bytes, p)) {
            orc_store_etcd_unlink(b, p);
            p->state   = ORC_STORE_ETCD_SENT;
            batch[n++] = p;
            orc_store_etcd_stage_add(s, ORC_STORE_STAGE_QUEUE,
                                     (now_ns - p->queued) / 1000);
            width = (p->width > width) ? p->width : width;
            bytes += p->bytes;
        }
    }
    return n;
}

/* ------------------------------------------------------------ to etcd */

/* Send a batch: one txn as it is, several nested in one. The status of
 * the call, *reply_p on ORC_STORE_OK. */
static int orc_store_etcd_send(orc_store_etcd_t *s,
                               orc_store_etcd_pending_t *const *batch, size_t n,
                               json_t **reply_p)
{
    uint64_t deadline = batch[0]->deadline;
    json_t *success, *body;
    size_t i;
    int failed;

    if (n == 1) {
        return orc_etcd_call_until(s->etcd, "/v3/kv/txn",
                                   json_incref(batch[0]->body), 0, deadline,
                                   reply_p);
    }
    success = json_array();
    failed  = (success == NULL);
    for (i = 0; !failed && (i < n); ++i) {
        failed =
            json_array_append_new(success, json_pack("{s:O}", "request_txn",
                                                     batch[i]->body));
        deadline =
            (batch[i]->deadline < deadline) ? batch[i]->deadline : deadline;
    }
    body = failed ? NULL : json_pack("{s:o}", "success", success);
    if (body == NULL) {
        json_decref(success);
        return ORC_STORE_ENOMEM;
    }
    return orc_etcd_call_until(s->etcd, "/v3/kv/txn", body, 0, deadline,
                               reply_p);
}

/* Lock held: hand each txn of a batch its answer (reply: the batch's, on
 * ORC_STORE_OK; reference stolen). Each caller gets its own nested answer,
 * with the batch's header in it: read-only from then on, shared by the
 * callers (jansson's reference counts are atomic). */
static void orc_store_etcd_answer(orc_store_etcd_pending_t *const *batch,
                                  size_t n, int status, json_t *reply)
{
    json_t *header = json_object_get(reply, "header"), *responses, *r;
    size_t i;

    if ((status == ORC_STORE_OK) && (n == 1)) {
        batch[0]->reply = reply;
        orc_store_etcd_finish(batch[0], status);
        return;
    }
    responses = json_object_get(reply, "responses");
    for (i = 0; i < n; ++i) {
        if ((n > 1) &&
            ((status == ORC_STORE_ENOENT) || (status == ORC_STORE_EINVAL))) {
            /* refused before anything was applied */
            batch[i]->state = ORC_STORE_ETCD_ALONE;
            pthread_cond_signal(&batch[i]->cond);
            continue;
        }
        r = json_object_get(json_array_get(responses, i), "response_txn");
        if ((status == ORC_STORE_OK) &&
            (!json_is_object(r) || !json_is_object(header) ||
             json_object_set(r, "header", header))) {
            orc_store_error("etcd: a batch's answer lacks txn %zu of %zu", i,
                            n);
            orc_store_etcd_finish(batch[i], ORC_STORE_EIO);
            continue;
        }
        batch[i]->reply = (status == ORC_STORE_OK) ? json_incref(r) : NULL;
        orc_store_etcd_finish(batch[i], status);
    }
    json_decref(reply);
}

/* Lock held (released while the batch is on its way): send the next
 * batch, if any */
static void orc_store_etcd_lead(orc_store_etcd_t *s)
{
    orc_store_etcd_pending_t *batch[ORC_STORE_ETCD_TXN_OPS];
    orc_store_etcd_batcher_t *b = &s->batcher;
    json_t *reply               = NULL;
    uint64_t t0;
    size_t n;
    int status;

    n = orc_store_etcd_take(s, batch);
    if (n == 0) {
        return;
    }
    ++b->inflight;
    b->inflight_max =
        (b->inflight > b->inflight_max) ? b->inflight : b->inflight_max;
    ++b->batches;
    b->txns += n;
    b->max = (n > b->max) ? n : b->max;
    orc_store_etcd_kick(b); /* txns that did not fit: another batch */
    pthread_mutex_unlock(&b->lock);
    t0     = orc_util_now_ns();
    status = orc_store_etcd_send(s, batch, n, &reply);
    orc_store_etcd_stage_add(s, ORC_STORE_STAGE_ETCD,
                             (orc_util_now_ns() - t0) / 1000);
    pthread_mutex_lock(&b->lock);
    orc_store_etcd_answer(batch, n, status, reply);
    --b->inflight;
    orc_store_etcd_kick(b);
}

/* Lock held: wait for p's answer, sending batches when it is our turn */
static void orc_store_etcd_wait(orc_store_etcd_t *s,
                                orc_store_etcd_pending_t *p)
{
    orc_store_etcd_batcher_t *b = &s->batcher;
    struct timespec ts;

    ts.tv_sec  = (time_t)(p->deadline / 1000);
    ts.tv_nsec = (long)(p->deadline % 1000) * 1000000L;
    while ((p->state == ORC_STORE_ETCD_QUEUED) ||
           (p->state == ORC_STORE_ETCD_SENT)) {
        if ((p->state == ORC_STORE_ETCD_QUEUED) && (b->inflight < b->depth)) {
            orc_store_etcd_lead(s);
        } else if (p->state == ORC_STORE_ETCD_SENT) {
            /* its batch's call ends by the batch's deadline, p's or
             * earlier */
            pthread_cond_wait(&p->cond, &b->lock);
        } else if ((pthread_cond_timedwait(&p->cond, &b->lock, &ts) ==
                    ETIMEDOUT) &&
                   (p->state == ORC_STORE_ETCD_QUEUED)) {
            /* never sent: the batches before it took all its time */
            orc_store_etcd_unlink(b, p);
            orc_store_etcd_finish(p, ORC_STORE_EUNAVAIL);
            orc_store_etcd_kick(b);
        }
    }
}

int orc_store_etcd_batch_txn(orc_store_etcd_t *s, json_t *body,
                             const orc_store_cmp_t *cmps, size_t ncmp,
                             const orc_store_op_t *ops, size_t nops,
                             json_t **reply_p)
{
    orc_store_etcd_pending_t p = {.body     = body,
                                  .cmps     = cmps,
                                  .ncmp     = ncmp,
                                  .ops      = ops,
                                  .nops     = nops,
                                  .deadline = orc_util_now_ms() +
                                              orc_etcd_timeout_ms(s->etcd),
                                  .queued = orc_util_now_ns()};
    pthread_condattr_t attr;

    orc_store_etcd_measure(s, &p);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p.cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_lock(&s->batcher.lock);
    orc_store_etcd_enqueue(&s->batcher, &p);
    orc_store_etcd_wait(s, &p);
    pthread_mutex_unlock(&s->batcher.lock);
    pthread_cond_destroy(&p.cond);
    if (p.state == ORC_STORE_ETCD_ALONE) {
        p.status = orc_etcd_call_until(s->etcd, "/v3/kv/txn", json_incref(body),
                                       0, p.deadline, &p.reply);
    }
    json_decref(body);
    *reply_p = p.reply;
    return p.status;
}
