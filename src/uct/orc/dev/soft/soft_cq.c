/*
 * softnic completion queues and completion channels.
 *
 * A CQ is a mutex-protected ring of struct ibv_wc (locking contract in
 * softnic.h). A completion channel is a pipe: an armed CQ that receives a
 * completion writes its own pointer into the pipe once and disarms, so the
 * channel fd is readable exactly while events are pending, as with verbs.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "softnic.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* empty polls in a row between two sched_yield() calls */
#define ORC_SOFT_CQ_YIELD_POLLS 2048

orc_comp_channel_t *orc_soft_channel_create(orc_dev_t *dev)
{
    orc_soft_channel_t *channel;
    int fds[2];

    channel = calloc(1, sizeof(*channel));
    if (channel == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    if (pipe2(fds, O_CLOEXEC) < 0) {
        int err = errno;
        orc_soft_log(orc_soft_inst(dev), "pipe2() failed: %m");
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

int orc_soft_channel_destroy(orc_comp_channel_t *channel)
{
    orc_soft_channel_t *ch  = (orc_soft_channel_t *)channel;
    orc_soft_inst_t *inst   = orc_soft_inst(channel->dev);

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

orc_cq_t *orc_soft_cq_create(orc_dev_t *dev, int cqe, void *cq_context,
                             orc_comp_channel_t *channel)
{
    orc_soft_inst_t *inst = orc_soft_inst(dev);
    orc_soft_cq_t *cq;

    if ((cqe < 1) || (cqe > ORC_SOFT_MAX_CQE) ||
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
        ((orc_soft_channel_t *)channel)->num_cqs++;
        pthread_mutex_unlock(&inst->lock);
    }
    return &cq->super;
}

int orc_soft_cq_destroy(orc_cq_t *cq)
{
    orc_soft_cq_t *scq    = (orc_soft_cq_t *)cq;
    orc_soft_inst_t *inst = orc_soft_inst(cq->dev);

    pthread_mutex_lock(&inst->lock);
    if (scq->num_qps > 0) {
        pthread_mutex_unlock(&inst->lock);
        return EBUSY;
    }
    if (cq->channel != NULL) {
        ((orc_soft_channel_t *)cq->channel)->num_cqs--;
    }
    pthread_mutex_unlock(&inst->lock);
    pthread_mutex_destroy(&scq->lock);
    pthread_mutex_destroy(&scq->qps_lock);
    free(scq->qps);
    free(scq->ring);
    free(scq);
    return 0;
}

int orc_soft_cq_add_qp(orc_soft_cq_t *cq, orc_soft_qp_t *qp)
{
    orc_soft_qp_t **qps;

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

void orc_soft_cq_del_qp(orc_soft_cq_t *cq, orc_soft_qp_t *qp)
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

void orc_soft_cq_push(orc_soft_cq_t *cq, const struct ibv_wc *wc,
                      int solicited)
{
    orc_soft_channel_t *channel;
    int notify = 0;
    void *ptr  = cq;
    ssize_t ret;

    pthread_mutex_lock(&cq->lock);
    if (cq->count == cq->size) {
        if (!cq->overrun) {
            orc_soft_log(NULL, "cq %p overrun (capacity %d)", (void *)cq,
                         cq->size);
        }
        __atomic_store_n(&cq->overrun, 1, __ATOMIC_RELAXED);
    } else {
        cq->ring[(cq->head + cq->count) % cq->size] = *wc;
        __atomic_store_n(&cq->count, cq->count + 1, __ATOMIC_RELEASE);
    }
    if ((cq->armed == 1) ||
        ((cq->armed == 2) && (solicited || (wc->status != IBV_WC_SUCCESS)))) {
        cq->armed = 0;
        notify    = (cq->super.channel != NULL);
        cq->events += notify;
    }
    pthread_mutex_unlock(&cq->lock);

    if (notify) {
        channel = (orc_soft_channel_t *)cq->super.channel;
        do {
            ret = write(channel->wfd, &ptr, sizeof(ptr));
        } while ((ret < 0) && (errno == EINTR));
        /* a full pipe still reads as pending: nothing is lost but the
         * CQ pointer, which a reader of a full pipe has plenty of */
    }
}

int orc_soft_cq_poll(orc_cq_t *cq, int num_entries, struct ibv_wc *wc)
{
    orc_soft_cq_t *scq = (orc_soft_cq_t *)cq;
    int n;

    if (num_entries < 0) {
        return -EINVAL;
    }
    /* an empty poll does not take the lock: a thread spinning on an empty
     * CQ must not make the producer (often the service thread) queue for it.
     * count and overrun are only written under the lock; a stale zero just
     * means "empty right now", as with a hardware CQ. */
    if ((__atomic_load_n(&scq->count, __ATOMIC_ACQUIRE) == 0) &&
        !__atomic_load_n(&scq->overrun, __ATOMIC_RELAXED)) {
        /* same-host SEND rings are progressed by the polling thread, and
         * so are the sockets of TCP connections while it keeps polling */
        orc_soft_cq_ring_progress(scq);
        orc_soft_svc_poll(orc_soft_inst(cq->dev));
        if (__atomic_load_n(&scq->count, __ATOMIC_ACQUIRE) == 0) {
            /* a thread spinning on an empty CQ starves the service threads
             * (and same-host peers) that will fill it, when cores are
             * scarce: give the CPU away now and then */
            if (__atomic_add_fetch(&scq->empty_polls, 1, __ATOMIC_RELAXED) %
                ORC_SOFT_CQ_YIELD_POLLS == 0) {
                sched_yield();
            }
            return 0;
        }
    }
    pthread_mutex_lock(&scq->lock);
    for (n = 0; (n < num_entries) && (scq->count > 0); ++n) {
        wc[n]     = scq->ring[scq->head];
        scq->head = (scq->head + 1) % scq->size;
        __atomic_store_n(&scq->count, scq->count - 1, __ATOMIC_RELAXED);
    }
    if ((n == 0) && scq->overrun) {
        n = -EOVERFLOW;
    }
    pthread_mutex_unlock(&scq->lock);
    return n;
}

int orc_soft_cq_req_notify(orc_cq_t *cq, int solicited_only)
{
    orc_soft_cq_t *scq = (orc_soft_cq_t *)cq;

    pthread_mutex_lock(&scq->lock);
    scq->armed = solicited_only ? 2 : 1;
    pthread_mutex_unlock(&scq->lock);
    return 0;
}

int orc_soft_cq_get_event(orc_comp_channel_t *channel, orc_cq_t **cq_p,
                          void **cq_context_p)
{
    orc_soft_cq_t *cq;
    ssize_t ret;

    do {
        ret = read(channel->fd, &cq, sizeof(cq));
    } while ((ret < 0) && (errno == EINTR));
    if (ret < 0) {
        return errno;
    }
    if (ret != sizeof(cq)) {
        return EIO;
    }
    *cq_p         = &cq->super;
    *cq_context_p = cq->super.cq_context;
    return 0;
}

void orc_soft_cq_ack_events(orc_cq_t *cq, unsigned int nevents)
{
    orc_soft_cq_t *scq = (orc_soft_cq_t *)cq;

    pthread_mutex_lock(&scq->lock);
    scq->acked += nevents;
    pthread_mutex_unlock(&scq->lock);
}
