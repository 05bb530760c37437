/*
 * Device layer dispatch: backend selection and the verbs-shaped entry points.
 * Each call forwards to the ops table of the backend that owns the object.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_dev.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *orc_dev_backend_names[] = {
    [ORC_DEV_BACKEND_AUTO]  = "auto",
    [ORC_DEV_BACKEND_VERBS] = "verbs",
    [ORC_DEV_BACKEND_SOFT]  = "soft",
};

const char *orc_dev_backend_name(orc_dev_backend_t backend)
{
    if ((unsigned)backend >=
        sizeof(orc_dev_backend_names) / sizeof(orc_dev_backend_names[0])) {
        return "unknown";
    }
    return orc_dev_backend_names[backend];
}

int orc_dev_backend_parse(const char *str, orc_dev_backend_t *backend_p)
{
    unsigned i;

    for (i = 0;
         i < sizeof(orc_dev_backend_names) / sizeof(orc_dev_backend_names[0]);
         ++i) {
        if ((str != NULL) && !strcmp(str, orc_dev_backend_names[i])) {
            *backend_p = (orc_dev_backend_t)i;
            return 0;
        }
    }
    return EINVAL;
}

static const orc_dev_ops_t *orc_dev_backend_ops(orc_dev_backend_t backend)
{
    switch (backend) {
    case ORC_DEV_BACKEND_VERBS:
        return &orc_dev_verbs_ops;
    case ORC_DEV_BACKEND_SOFT:
        return &orc_dev_soft_ops;
    default:
        return NULL;
    }
}

/* The backends in the order "auto" tries them: verbs devices first. */
static const orc_dev_backend_t orc_dev_auto_order[] = {ORC_DEV_BACKEND_VERBS,
                                                       ORC_DEV_BACKEND_SOFT};

int orc_dev_list(const orc_dev_config_t *config, orc_dev_info_t **list_p,
                 int *count_p)
{
    static const orc_dev_config_t default_config;
    const orc_dev_ops_t *ops;
    unsigned i;
    int ret;

    if (config == NULL) {
        config = &default_config;
    }

    *list_p  = NULL;
    *count_p = 0;

    if (config->backend != ORC_DEV_BACKEND_AUTO) {
        ops = orc_dev_backend_ops(config->backend);
        return (ops == NULL) ? EINVAL : ops->list(config, list_p, count_p);
    }

    for (i = 0; i < sizeof(orc_dev_auto_order) / sizeof(orc_dev_auto_order[0]);
         ++i) {
        ops = orc_dev_backend_ops(orc_dev_auto_order[i]);
        ret = ops->list(config, list_p, count_p);
        if (ret != 0) {
            return ret;
        }
        if (*count_p > 0) {
            return 0;
        }
        orc_dev_list_free(*list_p);
        *list_p = NULL;
    }
    return 0;
}

void orc_dev_list_free(orc_dev_info_t *list)
{
    free(list);
}

orc_dev_t *orc_dev_open(const orc_dev_config_t *config, const char *name)
{
    static const orc_dev_config_t default_config;
    orc_dev_info_t *list;
    orc_dev_t *dev;
    int i, count, ret, err;

    if (name == NULL) {
        errno = EINVAL;
        return NULL;
    }
    if (config == NULL) {
        config = &default_config;
    }

    /* Open by name among the devices the configuration selects */
    ret = orc_dev_list(config, &list, &count);
    if (ret != 0) {
        errno = ret;
        return NULL;
    }

    dev = NULL;
    err = ENODEV;
    for (i = 0; i < count; ++i) {
        if (!strcmp(list[i].name, name)) {
            dev = orc_dev_backend_ops(list[i].backend)->open(config, name);
            err = errno;
            if (dev != NULL) {
                memcpy(dev->netdev, list[i].netdev, sizeof(dev->netdev));
            }
            break;
        }
    }
    orc_dev_list_free(list);
    if (dev == NULL) {
        errno = err; /* the backend's reason, not whatever free() left */
    }
    return dev;
}

int orc_dev_close(orc_dev_t *dev)
{
    return dev->ops->close(dev);
}

int orc_dev_query(orc_dev_t *dev, struct ibv_device_attr *attr)
{
    return dev->ops->query(dev, attr);
}

int orc_dev_query_port(orc_dev_t *dev, uint8_t port_num,
                       struct ibv_port_attr *attr)
{
    return dev->ops->query_port(dev, port_num, attr);
}

int orc_dev_query_gid(orc_dev_t *dev, uint8_t port_num, int index,
                      union ibv_gid *gid)
{
    return dev->ops->query_gid(dev, port_num, index, gid);
}

size_t orc_dev_addr_len(orc_dev_t *dev, uint8_t port_num)
{
    return dev->ops->addr_len(dev, port_num);
}

int orc_dev_addr_pack(orc_dev_t *dev, uint8_t port_num, void *buf, size_t len)
{
    return dev->ops->addr_pack(dev, port_num, buf, len);
}

int orc_dev_addr_unpack(orc_dev_t *dev, uint8_t port_num, const void *buf,
                        size_t len, struct ibv_ah_attr *ah_attr)
{
    return dev->ops->addr_unpack(dev, port_num, buf, len, ah_attr);
}

orc_pd_t *orc_pd_alloc(orc_dev_t *dev)
{
    return dev->ops->pd_alloc(dev);
}

int orc_pd_dealloc(orc_pd_t *pd)
{
    return pd->dev->ops->pd_dealloc(pd);
}

orc_mr_t *orc_mr_reg(orc_pd_t *pd, void *addr, size_t length, int access)
{
    return pd->dev->ops->mr_reg(pd, addr, length, access);
}

int orc_mr_dereg(orc_mr_t *mr)
{
    return mr->pd->dev->ops->mr_dereg(mr);
}

orc_comp_channel_t *orc_comp_channel_create(orc_dev_t *dev)
{
    return dev->ops->comp_channel_create(dev);
}

int orc_comp_channel_destroy(orc_comp_channel_t *channel)
{
    return channel->dev->ops->comp_channel_destroy(channel);
}

orc_cq_t *orc_cq_create(orc_dev_t *dev, int cqe, void *cq_context,
                        orc_comp_channel_t *channel)
{
    return dev->ops->cq_create(dev, cqe, cq_context, channel);
}

int orc_cq_destroy(orc_cq_t *cq)
{
    return cq->dev->ops->cq_destroy(cq);
}

int orc_cq_req_notify(orc_cq_t *cq, int solicited_only)
{
    return cq->dev->ops->cq_req_notify(cq, solicited_only);
}

int orc_cq_get_event(orc_comp_channel_t *channel, orc_cq_t **cq_p,
                     void **cq_context_p)
{
    return channel->dev->ops->cq_get_event(channel, cq_p, cq_context_p);
}

void orc_cq_ack_events(orc_cq_t *cq, unsigned int nevents)
{
    cq->dev->ops->cq_ack_events(cq, nevents);
}

orc_srq_t *orc_srq_create(orc_pd_t *pd, struct ibv_srq_init_attr *attr)
{
    return pd->dev->ops->srq_create(pd, attr);
}

int orc_srq_destroy(orc_srq_t *srq)
{
    return srq->pd->dev->ops->srq_destroy(srq);
}

orc_qp_t *orc_qp_create(orc_pd_t *pd, orc_qp_init_attr_t *attr)
{
    return pd->dev->ops->qp_create(pd, attr);
}

int orc_qp_modify(orc_qp_t *qp, struct ibv_qp_attr *attr, int attr_mask)
{
    return qp->pd->dev->ops->qp_modify(qp, attr, attr_mask);
}

int orc_qp_query(orc_qp_t *qp, struct ibv_qp_attr *attr, int attr_mask,
                 orc_qp_init_attr_t *init_attr)
{
    return qp->pd->dev->ops->qp_query(qp, attr, attr_mask, init_attr);
}

int orc_qp_destroy(orc_qp_t *qp)
{
    return qp->pd->dev->ops->qp_destroy(qp);
}

int orc_post_recv(orc_qp_t *qp, struct ibv_recv_wr *wr,
                  struct ibv_recv_wr **bad_wr)
{
    return qp->pd->dev->ops->post_recv(qp, wr, bad_wr);
}
