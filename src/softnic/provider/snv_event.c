/*
 * Event queues, and the async events of a context that go through one.
 *
 * An event queue is what the kernel's uverbs event files are to a hardware
 * provider. An event queue is a list of records and an eventfd in
 * semaphore mode counting them, so the fd the application polls is readable
 * while events are queued (blocking reads block, non-blocking ones fail with
 * EAGAIN, as on a kernel event file). Records of a destroyed object are
 * dropped, as the kernel drops them, so an application never reads a
 * pointer to a freed object. The eventfd's count of a dropped record stays
 * (the application owns the fd's blocking mode, so it cannot be taken back
 * without risking to block): it is counted as stale and skipped by the next
 * reader, so after a drop the fd may read as ready once for an EAGAIN.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "snv.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

int snv_evq_init(snv_evq_t *evq)
{
    evq->fd = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
    if (evq->fd < 0) {
        return errno;
    }
    pthread_mutex_init(&evq->lock, NULL);
    evq->stale = 0;
    evq->head  = NULL;
    evq->tail  = &evq->head;
    return 0;
}

void snv_evq_cleanup(snv_evq_t *evq)
{
    snv_ev_t *ev, *next;

    for (ev = evq->head; ev != NULL; ev = next) {
        next = ev->next;
        free(ev);
    }
    pthread_mutex_destroy(&evq->lock);
    if (evq->fd >= 0) {
        close(evq->fd);
    }
}

int snv_evq_push(snv_evq_t *evq, uint32_t type, uint64_t element,
                 const void *owner)
{
    uint64_t one = 1;
    snv_ev_t *ev = malloc(sizeof(*ev));
    ssize_t ret;

    if (ev == NULL) {
        return ENOMEM;
    }
    ev->next    = NULL;
    ev->type    = type;
    ev->element = element;
    ev->owner   = owner;
    pthread_mutex_lock(&evq->lock);
    *evq->tail = ev;
    evq->tail  = &ev->next;
    do {
        /* cannot block nor overflow: the counter is at most the number
         * of queued records */
        ret = write(evq->fd, &one, sizeof(one));
    } while ((ret < 0) && (errno == EINTR));
    pthread_mutex_unlock(&evq->lock);
    return 0;
}

int snv_evq_pop(snv_evq_t *evq, snv_evq_take_fn_t take, uint32_t *type_p,
                uint64_t *element_p)
{
    snv_ev_t *ev;
    uint64_t count;
    ssize_t ret;

    for (;;) {
        /* blocks unless the application made the fd non-blocking */
        ret = read(evq->fd, &count, sizeof(count));
        if (ret < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        pthread_mutex_lock(&evq->lock);
        ev = evq->head;
        if (ev != NULL) {
            evq->head = ev->next;
            if (evq->head == NULL) {
                evq->tail = &evq->head;
            }
            take(ev->type, ev->element);
        } else if (evq->stale > 0) {
            --evq->stale; /* the count of a dropped record */
        }
        pthread_mutex_unlock(&evq->lock);
        if (ev != NULL) {
            *type_p    = ev->type;
            *element_p = ev->element;
            free(ev);
            return 0;
        }
    }
}

void snv_evq_drop(snv_evq_t *evq, const void *owner)
{
    snv_ev_t **pp, *ev;

    pthread_mutex_lock(&evq->lock);
    for (pp = &evq->head; (ev = *pp) != NULL;) {
        if (ev->owner != owner) {
            pp = &ev->next;
            continue;
        }
        *pp = ev->next;
        free(ev);
        ++evq->stale;
    }
    evq->tail = pp;
    pthread_mutex_unlock(&evq->lock);
}

/* ---- async events of a context ----------------------------------------- */

void snv_softnic_event(void *arg, enum ibv_event_type type, void *context)
{
    snv_context_t *ctx = arg;
    snv_cq_t *cq;

    switch (type) {
    case IBV_EVENT_CQ_ERR:
        /* context: the CQ's number (snv_context_t) */
        pthread_mutex_lock(&ctx->cq_lock);
        cq = snv_cq_find_locked(ctx, (uintptr_t)context);
        if (cq != NULL) {
            snv_async_event(ctx, type, (uintptr_t)cq, cq);
        }
        pthread_mutex_unlock(&ctx->cq_lock);
        break;
    case IBV_EVENT_QP_LAST_WQE_REACHED:
        /* context: the snv_qp_t, alive while softnic raises its events */
        snv_async_event(ctx, type, (uintptr_t)context, context);
        break;
    default:
        verbs_err(&ctx->vctx, "softnic: unexpected async event %d\n", type);
        break;
    }
}

void snv_async_event(snv_context_t *ctx, enum ibv_event_type type,
                     uint64_t element, const void *owner)
{
    if (snv_evq_push(&ctx->async, type, element, owner) != 0) {
        verbs_err(&ctx->vctx, "softnic: async event %d lost: no memory\n",
                  type);
    }
}

typedef enum {
    SNV_ASYNC_PORT,
    SNV_ASYNC_CQ,
    SNV_ASYNC_QP,
    SNV_ASYNC_SRQ
} snv_async_kind_t;

/* what an async event's element is */
static snv_async_kind_t snv_async_kind(uint32_t type)
{
    switch (type) {
    case IBV_EVENT_CQ_ERR:
        return SNV_ASYNC_CQ;
    case IBV_EVENT_QP_FATAL:
    case IBV_EVENT_QP_REQ_ERR:
    case IBV_EVENT_QP_ACCESS_ERR:
    case IBV_EVENT_COMM_EST:
    case IBV_EVENT_SQ_DRAINED:
    case IBV_EVENT_PATH_MIG:
    case IBV_EVENT_PATH_MIG_ERR:
    case IBV_EVENT_QP_LAST_WQE_REACHED:
        return SNV_ASYNC_QP;
    case IBV_EVENT_SRQ_ERR:
    case IBV_EVENT_SRQ_LIMIT_REACHED:
        return SNV_ASYNC_SRQ;
    default:
        return SNV_ASYNC_PORT;
    }
}

/* count an event the application reads, under the object's mutex */
static void snv_async_reported(pthread_mutex_t *mutex, uint32_t *reported)
{
    pthread_mutex_lock(mutex);
    ++*reported;
    pthread_mutex_unlock(mutex);
}

/*
 * The event's object counts it as read while the event is taken from the
 * queue (snv_evq_take_fn_t): a destroy drops the object's queued events,
 * then waits until the read ones are acknowledged, so it can never free the
 * object between the take and the count.
 */
static void snv_async_take(uint32_t type, uint64_t element)
{
    void *obj = (void *)(uintptr_t)element;
    snv_cq_t *cq;
    snv_qp_t *qp;
    snv_srq_t *srq;

    switch (snv_async_kind(type)) {
    case SNV_ASYNC_CQ:
        cq = obj;
        snv_async_reported(&cq->cq.mutex, &cq->async_reported);
        break;
    case SNV_ASYNC_QP:
        qp = obj;
        snv_async_reported(&qp->vqp.qp.mutex, &qp->async_reported);
        break;
    case SNV_ASYNC_SRQ:
        srq = obj;
        snv_async_reported(&srq->srq.mutex, &srq->async_reported);
        break;
    case SNV_ASYNC_PORT:
        break;
    }
}

int snv_get_async_event(struct ibv_context *context,
                        struct ibv_async_event *event)
{
    snv_context_t *ctx = snv_ctx(context);
    uint64_t element;
    uint32_t type;
    void *obj;
    int ret;

    ret = snv_evq_pop(&ctx->async, snv_async_take, &type, &element);
    if (ret != 0) {
        errno = ret;
        return -1;
    }
    obj               = (void *)(uintptr_t)element;
    event->event_type = type;
    switch (snv_async_kind(type)) {
    case SNV_ASYNC_CQ:
        event->element.cq = &((snv_cq_t *)obj)->cq;
        break;
    case SNV_ASYNC_QP:
        event->element.qp = &((snv_qp_t *)obj)->vqp.qp;
        break;
    case SNV_ASYNC_SRQ:
        event->element.srq = &((snv_srq_t *)obj)->srq;
        break;
    case SNV_ASYNC_PORT:
        event->element.port_num = (int)element;
        break;
    }
    return 0;
}

void snv_async_quiesce(snv_context_t *ctx, const void *owner,
                       pthread_mutex_t *mutex, pthread_cond_t *cond,
                       const uint32_t *completed, const uint32_t *reported)
{
    snv_evq_drop(&ctx->async, owner);
    pthread_mutex_lock(mutex);
    while (*completed != *reported) {
        pthread_cond_wait(cond, mutex);
    }
    pthread_mutex_unlock(mutex);
}
