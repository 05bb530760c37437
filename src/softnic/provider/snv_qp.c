/*
 * The softnic provider's queue pairs and shared receive queues. softnic
 * enforces every rule (state machine, attribute checks, access, ordering);
 * this file maps verbs objects to softnic ones and back.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "snv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- shared receive queues ---------------------------------------------- */

struct ibv_srq *snv_create_srq(struct ibv_pd *ibpd,
                               struct ibv_srq_init_attr *attr)
{
    snv_pd_t *pd = snv_of(ibpd, snv_pd_t, pd);
    snv_srq_t *srq;

    srq = calloc(1, sizeof(*srq));
    if (srq == NULL) {
        return NULL;
    }
    srq->ssrq = softnic_srq_create(pd->spd, attr);
    if (srq->ssrq == NULL) {
        int err = errno;
        free(srq);
        errno = err;
        return NULL;
    }
    srq->attr = attr->attr;
    return &srq->srq;
}

int snv_query_srq(struct ibv_srq *ibsrq, struct ibv_srq_attr *attr)
{
    *attr = snv_of(ibsrq, snv_srq_t, srq)->attr;
    return 0;
}

int snv_destroy_srq(struct ibv_srq *ibsrq)
{
    snv_srq_t *srq = snv_of(ibsrq, snv_srq_t, srq);
    int ret;

    ret = softnic_srq_destroy(srq->ssrq);
    if (ret != 0) {
        return ret;
    }
    snv_async_quiesce(snv_ctx(ibsrq->context), srq, &ibsrq->mutex, &ibsrq->cond,
                      &ibsrq->events_completed, &srq->async_reported);
    free(srq);
    return 0;
}

int snv_post_srq_recv(struct ibv_srq *ibsrq, struct ibv_recv_wr *wr,
                      struct ibv_recv_wr **bad_wr)
{
    return softnic_post_srq_recv(snv_of(ibsrq, snv_srq_t, srq)->ssrq, wr,
                                 bad_wr);
}

/* ---- queue pairs -------------------------------------------------------- */

static softnic_cq_t *snv_scq(struct ibv_cq *cq)
{
    return (cq != NULL) ? snv_of(cq, snv_cq_t, cq)->scq : NULL;
}

/* every object of a QP must come from the QP's context */
static int snv_qp_objects_ok(struct ibv_context *context,
                             const struct ibv_qp_init_attr_ex *attr)
{
    return (attr->send_cq != NULL) && (attr->recv_cq != NULL) &&
           (attr->send_cq->context == context) &&
           (attr->recv_cq->context == context) &&
           ((attr->srq == NULL) || (attr->srq->context == context));
}

static struct ibv_qp *snv_qp_create_sn(struct ibv_context *context,
                                       struct ibv_qp_init_attr_ex *attr)
{
    snv_pd_t *pd                 = snv_of(attr->pd, snv_pd_t, pd);
    softnic_qp_init_attr_t sattr = {
        .qp_context = NULL,
        .send_cq    = snv_scq(attr->send_cq),
        .recv_cq    = snv_scq(attr->recv_cq),
        .srq     = (attr->srq != NULL) ? snv_of(attr->srq, snv_srq_t, srq)->ssrq
                                       : NULL,
        .cap     = attr->cap,
        .qp_type = attr->qp_type,
        .sq_sig_all = attr->sq_sig_all,
    };
    struct ibv_qp *ibqp;
    snv_qp_t *qp;

    qp = calloc(1, sizeof(*qp));
    if (qp == NULL) {
        return NULL;
    }
    sattr.qp_context = qp;
    qp->sqp          = softnic_qp_create(pd->spd, &sattr);
    if (qp->sqp == NULL) {
        int err = errno;
        free(qp);
        errno = err;
        return NULL;
    }
    attr->cap = sattr.cap; /* the actual capacities */

    ibqp                   = &qp->vqp.qp;
    ibqp->context          = context;
    ibqp->qp_context       = attr->qp_context;
    ibqp->pd               = attr->pd;
    ibqp->send_cq          = attr->send_cq;
    ibqp->recv_cq          = attr->recv_cq;
    ibqp->srq              = attr->srq;
    ibqp->qp_num           = qp->sqp->qp_num;
    ibqp->state            = IBV_QPS_RESET;
    ibqp->qp_type          = attr->qp_type;
    ibqp->events_completed = 0;
    pthread_mutex_init(&ibqp->mutex, NULL);
    pthread_cond_init(&ibqp->cond, NULL);
    return ibqp;
}

struct ibv_qp *snv_create_qp_ex(struct ibv_context *context,
                                struct ibv_qp_init_attr_ex *attr)
{
    if (!(attr->comp_mask & IBV_QP_INIT_ATTR_PD) ||
        (attr->comp_mask &
         ~(uint32_t)(IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_CREATE_FLAGS)) ||
        ((attr->comp_mask & IBV_QP_INIT_ATTR_CREATE_FLAGS) &&
         (attr->create_flags != 0))) {
        errno = EOPNOTSUPP;
        return NULL;
    }
    if ((attr->pd == NULL) || (attr->pd->context != context) ||
        !snv_qp_objects_ok(context, attr)) {
        errno = EINVAL;
        return NULL;
    }
    switch (attr->qp_type) {
    case IBV_QPT_RC:
    case IBV_QPT_UD:
        return snv_qp_create_sn(context, attr);
    default:
        errno = EOPNOTSUPP;
        return NULL;
    }
}

struct ibv_qp *snv_create_qp(struct ibv_pd *pd, struct ibv_qp_init_attr *attr)
{
    struct ibv_qp_init_attr_ex attr_ex;
    struct ibv_qp *qp;

    memset(&attr_ex, 0, sizeof(attr_ex));
    memcpy(&attr_ex, attr, sizeof(*attr));
    attr_ex.comp_mask = IBV_QP_INIT_ATTR_PD;
    attr_ex.pd        = pd;
    qp                = snv_create_qp_ex(pd->context, &attr_ex);
    if (qp != NULL) {
        attr->cap = attr_ex.cap;
    }
    return qp;
}

/* (a QP on an SRQ that enters ERR: softnic raises "last WQE reached") */
int snv_modify_qp(struct ibv_qp *ibqp, struct ibv_qp_attr *attr, int attr_mask)
{
    return softnic_qp_modify(snv_of(ibqp, snv_qp_t, vqp.qp)->sqp, attr,
                             attr_mask);
}

int snv_query_qp(struct ibv_qp *ibqp, struct ibv_qp_attr *attr, int attr_mask,
                 struct ibv_qp_init_attr *init_attr)
{
    snv_qp_t *qp = snv_of(ibqp, snv_qp_t, vqp.qp);
    softnic_qp_init_attr_t sinit;
    int ret;

    ret = softnic_qp_query(qp->sqp, attr, attr_mask, &sinit);
    if (ret != 0) {
        return ret;
    }
    if (init_attr != NULL) {
        memset(init_attr, 0, sizeof(*init_attr));
        init_attr->qp_context = ibqp->qp_context;
        init_attr->send_cq    = ibqp->send_cq;
        init_attr->recv_cq    = ibqp->recv_cq;
        init_attr->srq        = ibqp->srq;
        init_attr->cap        = sinit.cap;
        init_attr->qp_type    = ibqp->qp_type;
        init_attr->sq_sig_all = sinit.sq_sig_all;
    }
    return 0;
}

int snv_destroy_qp(struct ibv_qp *ibqp)
{
    snv_qp_t *qp = snv_of(ibqp, snv_qp_t, vqp.qp);
    int ret;

    ret = softnic_qp_destroy(qp->sqp);
    if (ret != 0) {
        return ret;
    }
    snv_async_quiesce(snv_ctx(ibqp->context), qp, &ibqp->mutex, &ibqp->cond,
                      &ibqp->events_completed, &qp->async_reported);
    free(qp);
    return 0;
}

int snv_post_send(struct ibv_qp *ibqp, struct ibv_send_wr *wr,
                  struct ibv_send_wr **bad_wr)
{
    snv_qp_t *qp = snv_of(ibqp, snv_qp_t, vqp.qp);

    if (ibqp->qp_type == IBV_QPT_UD) {
        return snv_post_send_ud(qp, wr, bad_wr);
    }
    return softnic_post_send(qp->sqp, wr, bad_wr);
}

int snv_post_recv(struct ibv_qp *ibqp, struct ibv_recv_wr *wr,
                  struct ibv_recv_wr **bad_wr)
{
    return softnic_post_recv(snv_of(ibqp, snv_qp_t, vqp.qp)->sqp, wr, bad_wr);
}
