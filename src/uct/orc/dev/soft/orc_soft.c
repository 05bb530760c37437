/*
 * Device layer, soft backend: a thin adapter from the orc_dev ops table to
 * softnic's API (src/softnic/softnic.h).
 *
 * Every orc object is a small wrapper that starts with the public orc_* part
 * (member "super") and holds the softnic object. Where softnic hands back a
 * context in place of our object (CQ events), that context is the wrapper,
 * and the caller's context lives in the wrapper.
 *
 * The packed address is one byte ORC_DEV_BACKEND_SOFT followed by softnic's
 * own address (SOFTNIC_ADDR_LEN bytes).
 *
 * Thread safety is softnic's own: a wrapper is written only by the create
 * call that allocates it and freed only by the destroy call.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_dev.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct orc_soft_dev {
    orc_dev_t super;
    softnic_dev_t *nic;
} orc_soft_dev_t;

typedef struct orc_soft_pd {
    orc_pd_t super;
    softnic_pd_t *nic;
} orc_soft_pd_t;

typedef struct orc_soft_mr {
    orc_mr_t super;
    softnic_mr_t *nic;
} orc_soft_mr_t;

typedef struct orc_soft_channel {
    orc_comp_channel_t super;
    softnic_comp_channel_t *nic;
} orc_soft_channel_t;

typedef struct orc_soft_cq {
    orc_cq_t super; /* super.nic->cq_context is this wrapper */
} orc_soft_cq_t;

typedef struct orc_soft_srq {
    orc_srq_t super;
} orc_soft_srq_t;

typedef struct orc_soft_qp {
    orc_qp_t super;
    orc_cq_t *send_cq;
    orc_cq_t *recv_cq;
    orc_srq_t *srq;
} orc_soft_qp_t;

/* clang-format would take "(_ptr) - x" for a cast */
/* clang-format off */
#define orc_soft_derived_of(_ptr, _type) \
    ((_type *)((char *)(_ptr) - offsetof(_type, super)))
/* clang-format on */

#define orc_soft_dev(_dev) orc_soft_derived_of(_dev, orc_soft_dev_t)->nic
#define orc_soft_pd(_pd)   orc_soft_derived_of(_pd, orc_soft_pd_t)->nic
#define orc_soft_cq(_cq)   ((_cq)->nic)
#define orc_soft_srq(_srq) ((_srq)->nic)
#define orc_soft_qp(_qp)   ((_qp)->nic)

/* A wrapper of size bytes, or NULL with errno = ENOMEM */
static void *orc_soft_wrapper(size_t size)
{
    void *wrapper = calloc(1, size);

    if (wrapper == NULL) {
        errno = ENOMEM;
    }
    return wrapper;
}

/* Free a wrapper whose softnic object could not be created, keeping the
 * errno of the failure. */
static void *orc_soft_wrapper_failed(void *wrapper)
{
    int err = errno;

    free(wrapper);
    errno = err;
    return NULL;
}

static int orc_soft_dev_list(const orc_dev_config_t *config,
                             orc_dev_info_t **list_p, int *count_p)
{
    softnic_dev_info_t *nic_list;
    orc_dev_info_t *list;
    int i, count, ret;

    ret = softnic_dev_list((config != NULL) ? &config->soft : NULL, &nic_list,
                           &count);
    if (ret != 0) {
        return ret;
    }
    list = calloc((count > 0) ? count : 1, sizeof(*list));
    if (list == NULL) {
        softnic_dev_list_free(nic_list);
        return ENOMEM;
    }
    for (i = 0; i < count; ++i) {
        snprintf(list[i].name, sizeof(list[i].name), "%s", nic_list[i].name);
        list[i].backend   = ORC_DEV_BACKEND_SOFT;
        list[i].num_ports = 1;
        snprintf(list[i].netdev, sizeof(list[i].netdev), "%s",
                 nic_list[i].ifname);
    }
    softnic_dev_list_free(nic_list);
    *list_p  = list;
    *count_p = count;
    return 0;
}

static orc_dev_t *orc_soft_dev_open(const orc_dev_config_t *config,
                                    const char *name)
{
    orc_soft_dev_t *dev = orc_soft_wrapper(sizeof(*dev));

    if (dev == NULL) {
        return NULL;
    }
    dev->nic = softnic_dev_open(name, (config != NULL) ? &config->soft : NULL);
    if (dev->nic == NULL) {
        return orc_soft_wrapper_failed(dev);
    }
    dev->super.ops     = &orc_dev_soft_ops;
    dev->super.backend = ORC_DEV_BACKEND_SOFT;
    snprintf(dev->super.name, sizeof(dev->super.name), "%s", dev->nic->name);
    return &dev->super;
}

static int orc_soft_dev_close(orc_dev_t *orc_dev)
{
    int ret = softnic_dev_close(orc_soft_dev(orc_dev));

    if (ret == 0) {
        free(orc_soft_derived_of(orc_dev, orc_soft_dev_t));
    }
    return ret;
}

static int orc_soft_dev_query(orc_dev_t *dev, struct ibv_device_attr *attr)
{
    return softnic_dev_query(orc_soft_dev(dev), attr);
}

static int orc_soft_dev_query_port(orc_dev_t *dev, uint8_t port_num,
                                   struct ibv_port_attr *attr)
{
    return softnic_dev_query_port(orc_soft_dev(dev), port_num, attr);
}

static int orc_soft_dev_query_gid(orc_dev_t *dev, uint8_t port_num, int index,
                                  union ibv_gid *gid)
{
    return softnic_dev_query_gid(orc_soft_dev(dev), port_num, index, gid);
}

static size_t orc_soft_addr_len(orc_dev_t *dev, uint8_t port_num)
{
    (void)dev;
    (void)port_num;
    return 1 + SOFTNIC_ADDR_LEN;
}

static int orc_soft_addr_pack(orc_dev_t *dev, uint8_t port_num, void *buf,
                              size_t len)
{
    if ((port_num != 1) || (len < 1 + SOFTNIC_ADDR_LEN)) {
        return EINVAL;
    }
    *(uint8_t *)buf = ORC_DEV_BACKEND_SOFT;
    return softnic_dev_addr_pack(orc_soft_dev(dev), (uint8_t *)buf + 1,
                                 len - 1);
}

static int orc_soft_addr_unpack(orc_dev_t *dev, uint8_t port_num,
                                const void *buf, size_t len,
                                struct ibv_ah_attr *ah_attr)
{
    if ((port_num != 1) || (buf == NULL) || (len < 1)) {
        return EINVAL;
    }
    if (*(const uint8_t *)buf != ORC_DEV_BACKEND_SOFT) {
        /* another backend's address (or garbage claiming to be one) */
        return (*(const uint8_t *)buf == ORC_DEV_BACKEND_VERBS) ? EHOSTUNREACH
                                                                : EINVAL;
    }
    return softnic_dev_addr_unpack(orc_soft_dev(dev), (const uint8_t *)buf + 1,
                                   len - 1, ah_attr);
}

static orc_pd_t *orc_soft_pd_alloc(orc_dev_t *dev)
{
    orc_soft_pd_t *pd = orc_soft_wrapper(sizeof(*pd));

    if (pd == NULL) {
        return NULL;
    }
    pd->nic = softnic_pd_alloc(orc_soft_dev(dev));
    if (pd->nic == NULL) {
        return orc_soft_wrapper_failed(pd);
    }
    pd->super.dev = dev;
    return &pd->super;
}

static int orc_soft_pd_dealloc(orc_pd_t *orc_pd)
{
    int ret = softnic_pd_dealloc(orc_soft_pd(orc_pd));

    if (ret == 0) {
        free(orc_soft_derived_of(orc_pd, orc_soft_pd_t));
    }
    return ret;
}

static orc_mr_t *orc_soft_mr_reg(orc_pd_t *pd, void *addr, size_t length,
                                 int access)
{
    orc_soft_mr_t *mr = orc_soft_wrapper(sizeof(*mr));

    if (mr == NULL) {
        return NULL;
    }
    mr->nic = softnic_mr_reg(orc_soft_pd(pd), addr, length, access);
    if (mr->nic == NULL) {
        return orc_soft_wrapper_failed(mr);
    }
    mr->super.pd     = pd;
    mr->super.addr   = mr->nic->addr;
    mr->super.length = mr->nic->length;
    mr->super.access = mr->nic->access;
    mr->super.lkey   = mr->nic->lkey;
    mr->super.rkey   = mr->nic->rkey;
    return &mr->super;
}

static int orc_soft_mr_dereg(orc_mr_t *orc_mr)
{
    orc_soft_mr_t *mr = orc_soft_derived_of(orc_mr, orc_soft_mr_t);
    int ret           = softnic_mr_dereg(mr->nic);

    if (ret == 0) {
        free(mr);
    }
    return ret;
}

static orc_comp_channel_t *orc_soft_channel_create(orc_dev_t *dev)
{
    orc_soft_channel_t *channel = orc_soft_wrapper(sizeof(*channel));

    if (channel == NULL) {
        return NULL;
    }
    channel->nic = softnic_comp_channel_create(orc_soft_dev(dev));
    if (channel->nic == NULL) {
        return orc_soft_wrapper_failed(channel);
    }
    channel->super.dev = dev;
    channel->super.fd  = channel->nic->fd;
    return &channel->super;
}

static int orc_soft_channel_destroy(orc_comp_channel_t *orc_channel)
{
    orc_soft_channel_t *channel =
        orc_soft_derived_of(orc_channel, orc_soft_channel_t);
    int ret = softnic_comp_channel_destroy(channel->nic);

    if (ret == 0) {
        free(channel);
    }
    return ret;
}

static orc_cq_t *orc_soft_cq_create(orc_dev_t *dev, int cqe, void *cq_context,
                                    orc_comp_channel_t *orc_channel)
{
    orc_soft_cq_t *cq               = orc_soft_wrapper(sizeof(*cq));
    softnic_comp_channel_t *channel = NULL;

    if (cq == NULL) {
        return NULL;
    }
    if (orc_channel != NULL) {
        channel = orc_soft_derived_of(orc_channel, orc_soft_channel_t)->nic;
    }
    cq->super.nic = softnic_cq_create(orc_soft_dev(dev), cqe, cq, channel);
    if (cq->super.nic == NULL) {
        return orc_soft_wrapper_failed(cq);
    }
    cq->super.dev        = dev;
    cq->super.channel    = orc_channel;
    cq->super.cq_context = cq_context;
    cq->super.cqe        = cq->super.nic->cqe;
    return &cq->super;
}

static int orc_soft_cq_destroy(orc_cq_t *orc_cq)
{
    int ret = softnic_cq_destroy(orc_soft_cq(orc_cq));

    if (ret == 0) {
        free(orc_soft_derived_of(orc_cq, orc_soft_cq_t));
    }
    return ret;
}


static int orc_soft_cq_req_notify(orc_cq_t *cq, int solicited_only)
{
    return softnic_cq_req_notify(orc_soft_cq(cq), solicited_only);
}

static int orc_soft_cq_get_event(orc_comp_channel_t *channel, orc_cq_t **cq_p,
                                 void **cq_context_p)
{
    void *context;
    orc_soft_cq_t *cq;
    int ret;

    ret = softnic_cq_get_event(
        orc_soft_derived_of(channel, orc_soft_channel_t)->nic, &context);
    if (ret != 0) {
        return ret;
    }
    cq            = context;
    *cq_p         = &cq->super;
    *cq_context_p = cq->super.cq_context;
    return 0;
}

static void orc_soft_cq_ack_events(orc_cq_t *cq, unsigned int nevents)
{
    softnic_cq_ack_events(orc_soft_cq(cq), nevents);
}

static orc_srq_t *orc_soft_srq_create(orc_pd_t *pd,
                                      struct ibv_srq_init_attr *attr)
{
    orc_soft_srq_t *srq = orc_soft_wrapper(sizeof(*srq));

    if (srq == NULL) {
        return NULL;
    }
    srq->super.nic = softnic_srq_create(orc_soft_pd(pd), attr);
    if (srq->super.nic == NULL) {
        return orc_soft_wrapper_failed(srq);
    }
    srq->super.pd          = pd;
    srq->super.srq_context = attr->srq_context;
    return &srq->super;
}

static int orc_soft_srq_destroy(orc_srq_t *orc_srq)
{
    int ret = softnic_srq_destroy(orc_soft_srq(orc_srq));

    if (ret == 0) {
        free(orc_soft_derived_of(orc_srq, orc_soft_srq_t));
    }
    return ret;
}


/* A CQ or SRQ handed to qp_create must be a soft object of the same device */
static int orc_soft_same_dev(orc_dev_t *qp_dev, orc_dev_t *obj_dev)
{
    return obj_dev == qp_dev;
}

static orc_qp_t *orc_soft_qp_create(orc_pd_t *pd, orc_qp_init_attr_t *attr)
{
    softnic_qp_init_attr_t nic_attr;
    orc_soft_qp_t *qp;

    if ((attr->send_cq == NULL) || (attr->recv_cq == NULL) ||
        !orc_soft_same_dev(pd->dev, attr->send_cq->dev) ||
        !orc_soft_same_dev(pd->dev, attr->recv_cq->dev) ||
        ((attr->srq != NULL) &&
         !orc_soft_same_dev(pd->dev, attr->srq->pd->dev))) {
        errno = EINVAL;
        return NULL;
    }
    qp = orc_soft_wrapper(sizeof(*qp));
    if (qp == NULL) {
        return NULL;
    }

    memset(&nic_attr, 0, sizeof(nic_attr));
    nic_attr.qp_context = qp;
    nic_attr.send_cq    = orc_soft_cq(attr->send_cq);
    nic_attr.recv_cq    = orc_soft_cq(attr->recv_cq);
    nic_attr.srq        = (attr->srq == NULL) ? NULL : orc_soft_srq(attr->srq);
    nic_attr.cap        = attr->cap;
    nic_attr.qp_type    = attr->qp_type;
    nic_attr.sq_sig_all = attr->sq_sig_all;
    qp->super.nic       = softnic_qp_create(orc_soft_pd(pd), &nic_attr);
    if (qp->super.nic == NULL) {
        return orc_soft_wrapper_failed(qp);
    }

    attr->cap            = nic_attr.cap;
    qp->super.pd         = pd;
    qp->super.qp_context = attr->qp_context;
    qp->super.qp_num     = qp->super.nic->qp_num;
    qp->send_cq          = attr->send_cq;
    qp->recv_cq          = attr->recv_cq;
    qp->srq              = attr->srq;
    return &qp->super;
}

static int orc_soft_qp_modify(orc_qp_t *qp, struct ibv_qp_attr *attr,
                              int attr_mask)
{
    return softnic_qp_modify(orc_soft_qp(qp), attr, attr_mask);
}

static int orc_soft_qp_query(orc_qp_t *orc_qp, struct ibv_qp_attr *attr,
                             int attr_mask, orc_qp_init_attr_t *init_attr)
{
    orc_soft_qp_t *qp = orc_soft_derived_of(orc_qp, orc_soft_qp_t);
    softnic_qp_init_attr_t nic_init;
    int ret;

    ret = softnic_qp_query(qp->super.nic, attr, attr_mask, &nic_init);
    if ((ret != 0) || (init_attr == NULL)) {
        return ret;
    }
    memset(init_attr, 0, sizeof(*init_attr));
    init_attr->qp_context = orc_qp->qp_context;
    init_attr->send_cq    = qp->send_cq;
    init_attr->recv_cq    = qp->recv_cq;
    init_attr->srq        = qp->srq;
    init_attr->cap        = nic_init.cap;
    init_attr->qp_type    = nic_init.qp_type;
    init_attr->sq_sig_all = nic_init.sq_sig_all;
    return 0;
}

static int orc_soft_qp_destroy(orc_qp_t *orc_qp)
{
    int ret = softnic_qp_destroy(orc_soft_qp(orc_qp));

    if (ret == 0) {
        free(orc_soft_derived_of(orc_qp, orc_soft_qp_t));
    }
    return ret;
}


static int orc_soft_post_recv(orc_qp_t *qp, struct ibv_recv_wr *wr,
                              struct ibv_recv_wr **bad_wr)
{
    return softnic_post_recv(orc_soft_qp(qp), wr, bad_wr);
}

const orc_dev_ops_t orc_dev_soft_ops = {
    .size                 = sizeof(orc_dev_ops_t),
    .list                 = orc_soft_dev_list,
    .open                 = orc_soft_dev_open,
    .close                = orc_soft_dev_close,
    .query                = orc_soft_dev_query,
    .query_port           = orc_soft_dev_query_port,
    .query_gid            = orc_soft_dev_query_gid,
    .addr_len             = orc_soft_addr_len,
    .addr_pack            = orc_soft_addr_pack,
    .addr_unpack          = orc_soft_addr_unpack,
    .pd_alloc             = orc_soft_pd_alloc,
    .pd_dealloc           = orc_soft_pd_dealloc,
    .mr_reg               = orc_soft_mr_reg,
    .mr_dereg             = orc_soft_mr_dereg,
    .comp_channel_create  = orc_soft_channel_create,
    .comp_channel_destroy = orc_soft_channel_destroy,
    .cq_create            = orc_soft_cq_create,
    .cq_destroy           = orc_soft_cq_destroy,
    .cq_req_notify        = orc_soft_cq_req_notify,
    .cq_get_event         = orc_soft_cq_get_event,
    .cq_ack_events        = orc_soft_cq_ack_events,
    .srq_create           = orc_soft_srq_create,
    .srq_destroy          = orc_soft_srq_destroy,
    .qp_create            = orc_soft_qp_create,
    .qp_modify            = orc_soft_qp_modify,
    .qp_query             = orc_soft_qp_query,
    .qp_destroy           = orc_soft_qp_destroy,
    .post_recv            = orc_soft_post_recv,
};
