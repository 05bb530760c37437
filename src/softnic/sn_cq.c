/*
 * softnic completion queues and completion channels.
 *
 * A CQ is a mutex-protected ring of struct ibv_wc (locking contract in
 * sn_int.h); what an empty poll's own step completes skips the ring and
 * goes straight into the poll's array (sn_cq_taker_t). A completion channel is a pipe: an armed CQ that receives a
 * completion writes one 8-byte event record (its cq_context, see softnic.h)
 * into the pipe and disarms, so the channel fd is readable exactly while
 * events are pending, as with verbs.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A polling thread calls sched_yield() once it has spun this long on empty
 * CQs (see "Polling" in sn_int.h) */
#define SN_CQ_YIELD_NS 600000ull

softnic_comp_channel_t *softnic_comp_channel_create(softnic_dev_t *dev)
{
    sn_channel_t *channel;
    int fds[2];

    channel = calloc(1, sizeof(*channel));
    if (channel == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    if (pipe2(fds, O_CLOEXEC) < 0) {
        int err = errno;
        sn_log(sn_inst(dev), SOFTNIC_LOG_ERROR, "pipe2() failed: %m");
        free(channel);
        errno = err;
        return NULL;
    }
    /* the writer (any thread producing completions) must never block */
    fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
    channel->super.dev = dev;
    channel->super.fd  = fds[0];
    channel->wfd       = fds[1];
    return &channel->super;
}

int softnic_comp_channel_destroy(softnic_comp_channel_t *channel)
{
    sn_channel_t *ch = (sn_channel_t *)channel;
    sn_inst_t *inst  = sn_inst(channel->dev);

    pthread_mutex_lock(&inst->lock);
    if (ch->num_cqs > 0) {
        pthread_mutex_unlock(&inst->lock);
        return EBUSY;
    }
    pthread_mutex_unlock(&inst->lock);
    close(ch->super.fd);
    close(ch->wfd);
    free(ch);
    return 0;
}

softnic_cq_t *softnic_cq_create(softnic_dev_t *dev, int cqe, void *cq_context,
                                softnic_comp_channel_t *channel)
{
    sn_inst_t *inst = sn_inst(dev);
    sn_cq_t *cq;

    if ((cqe < 1) || (cqe > SN_MAX_CQE) ||
        ((channel != NULL) && (channel->dev != dev))) {
        errno = EINVAL;
        return NULL;
    }
    cq = calloc(1, sizeof(*cq));
    if (cq == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    cq->ring = calloc(cqe, sizeof(*cq->ring));
    if (cq->ring == NULL) {
        free(cq);
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_init(&cq->lock, NULL);
    pthread_mutex_init(&cq->qps_lock, NULL);
    cq->size             = cqe;
    cq->super.dev        = dev;
    cq->super.channel    = channel;
    cq->super.cq_context = cq_context;
    cq->super.cqe        = cqe;
    if (channel != NULL) {
        pthread_mutex_lock(&inst->lock);
        ((sn_channel_t *)channel)->num_cqs++;
        pthread_mutex_unlock(&inst->lock);
    }
    return &cq->super;
}

int softnic_cq_destroy(softnic_cq_t *cq)
{
    sn_cq_t *scq    = (sn_cq_t *)cq;
    sn_inst_t *inst = sn_inst(cq->dev);

    pthread_mutex_lock(&inst->lock);
    if (scq->num_qps > 0) {
        pthread_mutex_unlock(&inst->lock);
        return EBUSY;
    }
    if (cq->channel != NULL) {
        ((sn_channel_t *)cq->channel)->num_cqs--;
    }
    pthread_mutex_unlock(&inst->lock);
    pthread_mutex_destroy(&scq->lock);
    pthread_mutex_destroy(&scq->qps_lock);
    free(scq->qps);
    free(scq->ring);
    free(scq);
    return 0;
}

int sn_cq_add_qp(sn_cq_t *cq, sn_qp_t *qp)
{
    sn_qp_t **qps;

    pthread_mutex_lock(&cq->qps_lock);
    qps = realloc(cq->qps, sizeof(*qps) * (cq->nqps + 1));
    if (qps == NULL) {
        pthread_mutex_unlock(&cq->qps_lock);
        return ENOMEM;
    }
    qps[cq->nqps++] = qp;
    cq->qps         = qps;
    pthread_mutex_unlock(&cq->qps_lock);
    return 0;
}

void sn_cq_del_qp(sn_cq_t *cq, sn_qp_t *qp)
{
    int i;

    pthread_mutex_lock(&cq->qps_lock);
    for (i = 0; i < cq->nqps; ++i) {
        if (cq->qps[i] == qp) {
            cq->qps[i] = cq->qps[--cq->nqps];
            break;
        }
    }
    pthread_mutex_unlock(&cq->qps_lock);
}

void sn_cq_walks_lock(sn_qp_t *qp)
{
    sn_cq_t *first = qp->send_cq, *second = qp->recv_cq;

    if ((uintptr_t)first > (uintptr_t)second) {
        first  = qp->recv_cq;
        second = qp->send_cq;
    }
    pthread_mutex_lock(&first->qps_lock);
    if (second != first) {
        pthread_mutex_lock(&second->qps_lock);
    }
}

void sn_cq_walks_unlock(sn_qp_t *qp)
{
    if (qp->recv_cq != qp->send_cq) {
        pthread_mutex_unlock(&qp->recv_cq->qps_lock);
    }
    pthread_mutex_unlock(&qp->send_cq->qps_lock);
}

void sn_cq_flush_batches(sn_cq_t *cq, int wait)
{
    sn_qp_t *qp;
    int i;

    pthread_mutex_lock(&cq->qps_lock);
    for (i = 0; i < cq->nqps; ++i) {
        qp = cq->qps[i];
        /* unlocked peek: a batch started meanwhile is flushed by the next
         * poll (or the service thread's timer pass) */
        if ((__atomic_load_n(&qp->cma_batch, __ATOMIC_RELAXED) == 0) &&
            !__atomic_load_n(&qp->tx_corked, __ATOMIC_RELAXED)) {
            continue;
        }
        if (wait) {
            pthread_mutex_lock(&qp->lock);
        } else if (pthread_mutex_trylock(&qp->lock) != 0) {
            continue; /* its poster is at it: the next poll */
        }
        /* a polling loop that drains the CQ ends with one empty poll and
         * goes on streaming (a progress call may poll both CQs of the QP
         * once): the second empty poll of one CQ with no WRITE posted
         * since is waiting */
        if (wait || (++qp->batch_idle[cq != qp->send_cq] >= 2)) {
            sn_qp_cma_flush(qp);
            sn_req_push(qp);
        }
        pthread_mutex_unlock(&qp->lock);
    }
    pthread_mutex_unlock(&cq->qps_lock);
}

/*
 * The empty poll this thread runs now (softnic_cq_poll: its ring progress,
 * step and batch flush), NULL cq if none: a completion this thread pushes
 * into that CQ while the CQ is empty goes straight into the poll's wc array
 * (see sn_cq_t). Thread-local: no other thread reads or writes it.
 */
typedef struct sn_cq_taker {
    sn_cq_t *cq;
    struct ibv_wc *wc;
    int max; /* the poll's num_entries */
    int n;   /* taken so far */
} sn_cq_taker_t;

SN_TLS_IE sn_cq_taker_t sn_cq_taker; /* initial-exec: read at every empty
                                       poll */

/* CQ lock held: the completion wc goes in (into the poll of taker if this
 * thread runs an empty poll of cq and cq is empty), or the CQ overruns
 * (logged and reported once); returns whether an armed CQ fires for it */
static int sn_cq_put(sn_cq_t *cq, const struct ibv_wc *wc, int solicited,
                     sn_cq_taker_t *taker)
{
    int tail;

    if ((taker->cq == cq) && (cq->count == 0) && (taker->n < taker->max)) {
        taker->wc[taker->n++] = *wc; /* nothing is in the ring before it */
    } else if (cq->count == cq->size) {
        if (!cq->overrun) {
            sn_log(sn_inst(cq->super.dev), SOFTNIC_LOG_ERROR,
                   "cq %p overrun (capacity %d)", (void *)cq, cq->size);
            sn_event(sn_inst(cq->super.dev), IBV_EVENT_CQ_ERR,
                     cq->super.cq_context);
        }
        __atomic_store_n(&cq->overrun, 1, __ATOMIC_RELAXED);
    } else {
        tail = cq->head + cq->count;
        if (tail >= cq->size) {
            tail -= cq->size;
        }
        cq->ring[tail] = *wc;
        __atomic_store_n(&cq->count, cq->count + 1, __ATOMIC_RELEASE);
    }
    return (cq->armed == 1) ||
           ((cq->armed == 2) && (solicited || (wc->status != IBV_WC_SUCCESS)));
}

void sn_cq_push_n(sn_cq_t *cq, const struct ibv_wc *wc,
                  const uint8_t *solicited, int n)
{
    sn_cq_taker_t *taker = &sn_cq_taker;
    sn_channel_t *channel;
    int notify      = 0;
    uint64_t record = (uintptr_t)cq->super.cq_context;
    ssize_t ret;
    int i;

    pthread_mutex_lock(&cq->lock);
    for (i = 0; i < n; ++i) {
        if (sn_cq_put(cq, &wc[i], (solicited != NULL) && solicited[i], taker)) {
            cq->armed = 0; /* one event: it disarms the CQ */
            notify    = (cq->super.channel != NULL);
            cq->events += notify;
        }
    }
    pthread_mutex_unlock(&cq->lock);

    if (notify) {
        channel = (sn_channel_t *)cq->super.channel;
        do {
            ret = write(channel->wfd, &record, sizeof(record));
        } while ((ret < 0) && (errno == EINTR));
        /* a full pipe still reads as pending: nothing is lost but the
         * record, which a reader of a full pipe has plenty of */
    }
}

void sn_cq_push(sn_cq_t *cq, const struct ibv_wc *wc, int solicited)
{
    uint8_t sol = (uint8_t)(solicited != 0);

    sn_cq_push_n(cq, wc, &sol, 1);
}

/* An empty poll of scq: drive what fills it (see the header comment of
 * sn_int.h, "Polling"); returns how many completions this thread pushed into
 * it meanwhile straight into wc[0..num_entries-1] (sn_cq_taker_t) */
static int sn_cq_poll_empty(sn_cq_t *scq, int num_entries, struct ibv_wc *wc)
{
    sn_cq_taker_t *taker = &sn_cq_taker;
    sn_inst_t *inst      = sn_inst(scq->super.dev);
    /* a poll inside a poll (from a log callback) takes nothing: the outer
     * poll owns the hand-over */
    int own = (taker->cq == NULL);

    if (own) {
        taker->cq  = scq;
        taker->wc  = wc;
        taker->max = num_entries;
        taker->n   = 0;
    }
    /* same-host SEND rings are progressed by the polling thread, and so are
     * the sockets of TCP connections while it keeps polling */
    sn_cq_ring_progress(scq);
    if (sn_svc_poll(inst)) {
        sn_cq_run_end(); /* the step moved data: this thread is not idle */
    }
    /* the application waits: what it streamed must be under way */
    if (sn_cq_holds_writes(inst)) {
        sn_cq_flush_batches(scq, 0);
    }
    sn_ud_poll(inst);
    if (!own) {
        return 0;
    }
    taker->cq = NULL;
    return taker->n;
}

/* sn_int.h: this thread's run of empty polls; SN_CQ_RUN_UNTIMED = the run
 * has had one poll */
SN_TLS_IE uint64_t sn_cq_spin_since;
#define SN_CQ_RUN_UNTIMED 1

/* After a poll that returned n: a thread spinning on empty CQs starves, when
 * cores are scarce, the threads that will fill them (its service thread, a
 * peer process on its CPU): it gives the CPU away every SN_CQ_YIELD_NS of
 * empty polls in a row (see "Polling" in sn_int.h) */
static void sn_cq_pace(int n)
{
    uint64_t now;

    if (n != 0) {
        sn_cq_run_end();
        return;
    }
    if (sn_cq_spin_since == 0) {
        /* no clock for a run's first poll: a thread that posts and polls in
         * turn, each WR done within its post, reads none */
        sn_cq_spin_since = SN_CQ_RUN_UNTIMED;
        return;
    }
    now = sn_now_ns();
    if (sn_cq_spin_since == SN_CQ_RUN_UNTIMED) {
        sn_cq_spin_since = now;
    } else if (now - sn_cq_spin_since >= SN_CQ_YIELD_NS) {
        sn_cq_spin_since = now;
        sched_yield();
    }
}

/* softnic_cq_poll without the pacing */
static int sn_cq_poll_n(sn_cq_t *scq, int num_entries, struct ibv_wc *wc)
{
    int n;

    /* an empty poll does not take the lock: a thread spinning on an empty
     * CQ must not make the producer (often the service thread) queue for it.
     * count and overrun are only written under the lock; a stale zero just
     * means "empty right now", as with a hardware CQ. */
    if ((__atomic_load_n(&scq->count, __ATOMIC_ACQUIRE) == 0) &&
        !__atomic_load_n(&scq->overrun, __ATOMIC_RELAXED)) {
        n = sn_cq_poll_empty(scq, num_entries, wc);
        if (n > 0) {
            return n; /* what the ring got after them: the next poll */
        }
        if (__atomic_load_n(&scq->count, __ATOMIC_ACQUIRE) == 0) {
            /* posters read it (sn_qp_waited): no atomic add on this path */
            __atomic_store_n(&scq->empty_polls,
                             __atomic_load_n(&scq->empty_polls,
                                             __ATOMIC_RELAXED) +
                                 1,
                             __ATOMIC_RELAXED);
            return 0;
        }
    }
    pthread_mutex_lock(&scq->lock);
    for (n = 0; (n < num_entries) && (scq->count > 0); ++n) {
        wc[n] = scq->ring[scq->head];
        if (++scq->head == scq->size) {
            scq->head = 0;
        }
        __atomic_store_n(&scq->count, scq->count - 1, __ATOMIC_RELAXED);
    }
    if ((n == 0) && scq->overrun) {
        n = -EOVERFLOW;
    }
    pthread_mutex_unlock(&scq->lock);
    return n;
}

int softnic_cq_poll(softnic_cq_t *cq, int num_entries, struct ibv_wc *wc)
{
    int n;

    if (num_entries < 0) {
        return -EINVAL;
    }
    n = sn_cq_poll_n((sn_cq_t *)cq, num_entries, wc);
    sn_cq_pace(n);
    return n;
}

int softnic_cq_req_notify(softnic_cq_t *cq, int solicited_only)
{
    sn_cq_t *scq = (sn_cq_t *)cq;

    /* an application that arms its CQ is about to sleep: what it posted
     * must be under way */
    if (sn_cq_holds_writes(sn_inst(cq->dev))) {
        sn_cq_flush_batches(scq, 1);
    }
    pthread_mutex_lock(&scq->lock);
    scq->armed = solicited_only ? 2 : 1;
    pthread_mutex_unlock(&scq->lock);
    sn_svc_armed(sn_inst(cq->dev));
    return 0;
}

int softnic_cq_get_event(softnic_comp_channel_t *channel, void **cq_context_p)
{
    uint64_t record;
    ssize_t ret;

    do {
        ret = read(channel->fd, &record, sizeof(record));
    } while ((ret < 0) && (errno == EINTR));
    if (ret < 0) {
        return errno;
    }
    if (ret != sizeof(record)) {
        return EIO;
    }
    *cq_context_p = (void *)(uintptr_t)record;
    return 0;
}

void softnic_cq_ack_events(softnic_cq_t *cq, unsigned int nevents)
{
    sn_cq_t *scq = (sn_cq_t *)cq;

    pthread_mutex_lock(&scq->lock);
    scq->acked += nevents;
    pthread_mutex_unlock(&scq->lock);
}
