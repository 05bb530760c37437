/*
 * The softnic provider's completion queues and completion channels.
 *
 * A channel is a softnic completion channel (its fd is the application's);
 * the event records name the context's CQs by number (snv_context_t).
 * Completion events follow libibverbs' kernel contract: an event handed out
 * by ibv_get_cq_event must be acknowledged (ibv_ack_cq_events) before
 * ibv_destroy_cq returns.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "snv.h"

#include <errno.h>
#include <stdlib.h>

struct ibv_comp_channel *snv_create_comp_channel(struct ibv_context *context)
{
    snv_channel_t *ch = calloc(1, sizeof(*ch));

    if (ch == NULL) {
        return NULL;
    }
    ch->sch = softnic_comp_channel_create(snv_ctx(context)->dev);
    if (ch->sch == NULL) {
        int err = errno;
        free(ch);
        errno = err;
        return NULL;
    }
    ch->channel.context = context;
    ch->channel.fd      = ch->sch->fd;
    ch->channel.refcnt  = 0;
    return &ch->channel;
}

int snv_destroy_comp_channel(struct ibv_comp_channel *channel)
{
    snv_channel_t *ch = snv_of(channel, snv_channel_t, channel);
    int ret;

    /* refcnt counts the CQs using the channel, under the context mutex
     * (libibverbs' ibv_create_cq/ibv_destroy_cq maintain it) */
    pthread_mutex_lock(&channel->context->mutex);
    ret =
        (channel->refcnt != 0) ? EBUSY : softnic_comp_channel_destroy(ch->sch);
    pthread_mutex_unlock(&channel->context->mutex);
    if (ret == 0) {
        free(ch);
    }
    return ret;
}

snv_cq_t *snv_cq_find_locked(snv_context_t *ctx, uint64_t id)
{
    snv_cq_t *cq;

    for (cq = ctx->cqs; (cq != NULL) && (cq->id != id); cq = cq->next) {
    }
    return cq;
}

int snv_get_cq_event(struct ibv_comp_channel *channel, struct ibv_cq **cq_p,
                     void **cq_context_p)
{
    snv_channel_t *ch  = snv_of(channel, snv_channel_t, channel);
    snv_context_t *ctx = snv_ctx(channel->context);
    void *record;
    snv_cq_t *cq;
    int ret;

    do {
        /* blocks unless the application made the fd non-blocking */
        ret = softnic_cq_get_event(ch->sch, &record);
        if (ret != 0) {
            errno = ret;
            return -1;
        }
        pthread_mutex_lock(&ctx->cq_lock);
        cq = snv_cq_find_locked(ctx, (uintptr_t)record);
        if (cq != NULL) {
            /* counted before cq_lock is released: destroy takes the CQ out
             * under cq_lock, then waits for the counted events' acks */
            snv_cq_event(&cq->cq);
        }
        pthread_mutex_unlock(&ctx->cq_lock);
    } while (cq == NULL); /* the event of a CQ destroyed meanwhile */
    *cq_p         = &cq->cq;
    *cq_context_p = cq->cq.cq_context;
    return 0;
}

void snv_cq_event(struct ibv_cq *ibcq)
{
    snv_cq_t *cq = snv_of(ibcq, snv_cq_t, cq);

    pthread_mutex_lock(&ibcq->mutex);
    ++cq->events_reported;
    pthread_mutex_unlock(&ibcq->mutex);
}

static void snv_cq_add(snv_context_t *ctx, snv_cq_t *cq)
{
    pthread_mutex_lock(&ctx->cq_lock);
    cq->id   = ctx->next_cq_id++;
    cq->next = ctx->cqs;
    ctx->cqs = cq;
    pthread_mutex_unlock(&ctx->cq_lock);
}

static void snv_cq_del(snv_context_t *ctx, snv_cq_t *cq)
{
    snv_cq_t **pp;

    pthread_mutex_lock(&ctx->cq_lock);
    for (pp = &ctx->cqs; (*pp != NULL) && (*pp != cq); pp = &(*pp)->next) {
    }
    if (*pp != NULL) {
        *pp = cq->next;
    }
    pthread_mutex_unlock(&ctx->cq_lock);
}

/*
 * A CQ holds at least the cqe entries asked for; like hardware CQs (mlx5:
 * the next power of two above cqe), it has room for a power of two of them,
 * of which cq->cqe = size - 1 are promised. Programs written against such
 * devices (perftest's latency tests with one-entry CQs) rely on the slack.
 */
static int snv_cq_size(int cqe)
{
    int size = 2;

    while ((size <= cqe) && (size < (1 << 30))) {
        size <<= 1;
    }
    return size;
}

struct ibv_cq *snv_create_cq(struct ibv_context *context, int cqe,
                             struct ibv_comp_channel *channel, int comp_vector)
{
    snv_channel_t *ch = NULL;
    struct ibv_device_attr attr;
    snv_cq_t *cq;
    int ret, size;

    if ((comp_vector < 0) || (comp_vector >= context->num_comp_vectors)) {
        errno = EINVAL;
        return NULL;
    }
    if (channel != NULL) {
        if (!snv_owns_context(channel->context) ||
            (channel->context != context)) {
            errno = EINVAL;
            return NULL;
        }
        ch = snv_of(channel, snv_channel_t, channel);
    }
    ret = softnic_dev_query(snv_ctx(context)->dev, &attr);
    if (ret != 0) {
        errno = ret;
        return NULL;
    }
    if ((cqe < 1) || (cqe > attr.max_cqe)) {
        errno = EINVAL;
        return NULL;
    }
    cq = calloc(1, sizeof(*cq));
    if (cq == NULL) {
        return NULL;
    }
    snv_cq_add(snv_ctx(context), cq);
    size    = snv_cq_size(cqe);
    cq->scq = softnic_cq_create(snv_ctx(context)->dev,
                                (size < attr.max_cqe) ? size : attr.max_cqe,
                                (void *)(uintptr_t)cq->id,
                                (ch != NULL) ? ch->sch : NULL);
    if (cq->scq == NULL) {
        int err = errno;
        snv_cq_del(snv_ctx(context), cq);
        free(cq);
        errno = err;
        return NULL;
    }
    cq->cq.cqe = (cq->scq->cqe > cqe) ? cq->scq->cqe - 1 : cq->scq->cqe;
    return &cq->cq;
}

int snv_destroy_cq(struct ibv_cq *ibcq)
{
    snv_cq_t *cq = snv_of(ibcq, snv_cq_t, cq);
    int ret;

    ret = softnic_cq_destroy(cq->scq);
    if (ret != 0) {
        return ret;
    }
    snv_cq_del(snv_ctx(ibcq->context), cq);
    /* every event handed out must have been acknowledged */
    snv_async_quiesce(snv_ctx(ibcq->context), cq, &ibcq->mutex, &ibcq->cond,
                      &ibcq->async_events_completed, &cq->async_reported);
    pthread_mutex_lock(&ibcq->mutex);
    while (ibcq->comp_events_completed != cq->events_reported) {
        pthread_cond_wait(&ibcq->cond, &ibcq->mutex);
    }
    pthread_mutex_unlock(&ibcq->mutex);
    free(cq);
    return 0;
}

int snv_poll_cq(struct ibv_cq *ibcq, int num_entries, struct ibv_wc *wc)
{
    return softnic_cq_poll(snv_of(ibcq, snv_cq_t, cq)->scq, num_entries, wc);
}

int snv_req_notify_cq(struct ibv_cq *ibcq, int solicited_only)
{
    return softnic_cq_req_notify(snv_of(ibcq, snv_cq_t, cq)->scq,
                                 solicited_only);
}
