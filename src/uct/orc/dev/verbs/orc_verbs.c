/*
 * Device layer, verbs backend: a thin pass-through to rdma-core's libibverbs.
 *
 * Every orc object is a small wrapper that starts with the public orc_* part
 * (member "super") and holds the ibv object. Where libibverbs hands back an
 * ibv object in place of ours (CQ events, qp_query), the ibv object's context
 * pointer is the wrapper, and the caller's context lives in the wrapper.
 *
 * Thread safety is libibverbs' own: the wrappers are written only by the
 * create call that allocates them and freed only by the destroy call, so no
 * lock is needed here beyond what libibverbs provides.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_dev.h"
#include "orc_verbs_addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct orc_verbs_dev {
    orc_dev_t super;
    struct ibv_context *ctx;
    uint8_t gid_index; /* source GID index, from configuration */
} orc_verbs_dev_t;

typedef struct orc_verbs_pd {
    orc_pd_t super;
    struct ibv_pd *pd;
} orc_verbs_pd_t;

typedef struct orc_verbs_mr {
    orc_mr_t super;
    struct ibv_mr *mr;
} orc_verbs_mr_t;

typedef struct orc_verbs_comp_channel {
    orc_comp_channel_t super;
    struct ibv_comp_channel *channel;
} orc_verbs_comp_channel_t;

typedef struct orc_verbs_cq {
    orc_cq_t super; /* super.ibv->cq_context is this wrapper */
} orc_verbs_cq_t;

typedef struct orc_verbs_srq {
    orc_srq_t super; /* super.ibv->srq_context is this wrapper */
} orc_verbs_srq_t;

typedef struct orc_verbs_qp {
    orc_qp_t super; /* super.ibv->qp_context is this wrapper */
    orc_cq_t *send_cq;
    orc_cq_t *recv_cq;
    orc_srq_t *srq;
} orc_verbs_qp_t;

/* clang-format would take "(_ptr) - x" for a cast */
/* clang-format off */
#define orc_verbs_derived_of(_ptr, _type) \
    ((_type *)((char *)(_ptr) - offsetof(_type, super)))
/* clang-format on */

/*
 * libibverbs calls return 0 or a positive errno value, but some return -1
 * with errno set (ibv_query_gid, ibv_get_cq_event) and some providers return
 * a negative errno value. Normalise to the positive errno convention; callers
 * clear errno before a call that may return -1.
 */
int orc_dev_verbs_err(int ret)
{
    if (ret == 0) {
        return 0;
    } else if (ret > 0) {
        return ret;
    } else if (ret == -1) {
        return (errno > 0) ? errno : EIO;
    }
    return -ret;
}

/* IBV_LINK_LAYER_UNSPECIFIED is reported by old drivers for IB ports. */
static uint8_t orc_verbs_link_layer(uint8_t link_layer)
{
    return (link_layer == IBV_LINK_LAYER_UNSPECIFIED)
               ? IBV_LINK_LAYER_INFINIBAND
               : link_layer;
}

static int orc_verbs_gid_is_zero(const union ibv_gid *gid)
{
    return (gid->global.subnet_prefix == 0) && (gid->global.interface_id == 0);
}

int orc_verbs_addr_encode(const orc_verbs_port_addr_t *addr, void *buf,
                          size_t len)
{
    uint8_t *p = buf;
    uint8_t link_layer;
    uint16_t lid_be;

    if (len < ORC_VERBS_ADDR_LEN) {
        return ENOSPC;
    }

    link_layer = orc_verbs_link_layer(addr->link_layer);
    switch (link_layer) {
    case IBV_LINK_LAYER_ETHERNET:
        if (orc_verbs_gid_is_zero(&addr->gid)) {
            return EINVAL; /* RoCE is addressed by GID only */
        }
        break;
    case IBV_LINK_LAYER_INFINIBAND:
        if ((addr->lid == 0) || (addr->lid >= 0xc000)) {
            return EINVAL; /* not a unicast LID: port has no SM-assigned LID */
        }
        break;
    default:
        return EINVAL;
    }

    lid_be = htons(addr->lid);
    p[0]   = ORC_DEV_BACKEND_VERBS;
    p[1]   = link_layer;
    memcpy(p + 2, &lid_be, sizeof(lid_be));
    memcpy(p + 4, addr->gid.raw, sizeof(addr->gid.raw));
    return 0;
}

int orc_verbs_addr_decode(const void *buf, size_t len, uint8_t local_link_layer,
                          uint8_t port_num, uint8_t sgid_index,
                          struct ibv_ah_attr *ah_attr)
{
    const uint8_t *p = buf;
    struct ibv_ah_attr attr;
    union ibv_gid gid;
    uint16_t lid_be, lid;
    uint8_t link_layer;

    if ((buf == NULL) || (len < 1)) {
        return EINVAL;
    }
    if (p[0] == ORC_DEV_BACKEND_SOFT) {
        return EHOSTUNREACH; /* a softnic peer: not reachable over verbs */
    }
    if ((p[0] != ORC_DEV_BACKEND_VERBS) || (len != ORC_VERBS_ADDR_LEN)) {
        return EINVAL;
    }

    link_layer = p[1];
    memcpy(&lid_be, p + 2, sizeof(lid_be));
    lid = ntohs(lid_be);
    memcpy(gid.raw, p + 4, sizeof(gid.raw));

    switch (link_layer) {
    case IBV_LINK_LAYER_ETHERNET:
        if ((lid != 0) || orc_verbs_gid_is_zero(&gid)) {
            return EINVAL;
        }
        break;
    case IBV_LINK_LAYER_INFINIBAND:
        if ((lid == 0) || (lid >= 0xc000)) {
            return EINVAL;
        }
        break;
    default:
        return EINVAL; /* the packer never writes UNSPECIFIED */
    }

    if (link_layer != orc_verbs_link_layer(local_link_layer)) {
        return EHOSTUNREACH; /* no path between IB and Ethernet ports */
    }

    memset(&attr, 0, sizeof(attr));
    attr.dlid     = lid;
    attr.port_num = port_num;
    if ((link_layer == IBV_LINK_LAYER_ETHERNET) ||
        !orc_verbs_gid_is_zero(&gid)) {
        attr.is_global      = 1;
        attr.grh.dgid       = gid;
        attr.grh.sgid_index = sgid_index;
        attr.grh.hop_limit  = ORC_VERBS_ADDR_HOP_LIMIT;
    }

    *ah_attr = attr;
    return 0;
}

/*
 * The network interface of a RoCE device's source GID (config's GID index on
 * port 1), where topology finds a device that hwloc does not know by its
 * verbs name (orc_topo.h); "" on InfiniBand ports (no interface) or if the
 * entry cannot be read.
 */
static void orc_verbs_gid_netdev(struct ibv_context *ctx, unsigned gid_index,
                                 char *netdev)
{
    struct ibv_gid_entry entry;
    char ifname[IF_NAMESIZE];

    netdev[0] = '\0';
    if ((ibv_query_gid_ex(ctx, 1, gid_index, &entry, 0) == 0) &&
        (entry.ndev_ifindex != 0) &&
        (if_indextoname(entry.ndev_ifindex, ifname) != NULL)) {
        snprintf(netdev, ORC_DEV_NAME_MAX, "%s", ifname);
    }
}

/* Fill *info for ib_dev; -1 if it cannot be opened or queried (e.g. no
 * permission on its uverbs node): such a device is not usable. */
static int orc_verbs_dev_info(struct ibv_device *ib_dev, unsigned gid_index,
                              orc_dev_info_t *info)
{
    struct ibv_device_attr dev_attr;
    struct ibv_context *ctx;
    const char *name;
    int ret;

    name = ibv_get_device_name(ib_dev);
    if ((name == NULL) || (strlen(name) >= ORC_DEV_NAME_MAX)) {
        return -1;
    }
    ctx = ibv_open_device(ib_dev);
    if (ctx == NULL) {
        return -1;
    }
    ret = ibv_query_device(ctx, &dev_attr);
    if (ret == 0) {
        memset(info, 0, sizeof(*info));
        strcpy(info->name, name);
        info->backend   = ORC_DEV_BACKEND_VERBS;
        info->num_ports = dev_attr.phys_port_cnt;
        orc_verbs_gid_netdev(ctx, gid_index, info->netdev);
    }
    ibv_close_device(ctx);
    return (ret == 0) ? 0 : -1;
}

static int orc_verbs_dev_list(const orc_dev_config_t *config,
                              orc_dev_info_t **list_p, int *count_p)
{
    struct ibv_device **ib_list;
    orc_dev_info_t *list;
    unsigned gid_index;
    int i, num, count, ret;

    *list_p   = NULL;
    *count_p  = 0;
    gid_index = (config != NULL) ? config->verbs_gid_index : 0;

    errno   = 0;
    ib_list = ibv_get_device_list(&num);
    if (ib_list == NULL) {
        /* ENOSYS: the kernel has no RDMA support, so there are no devices */
        return (errno == ENOSYS) ? 0 : ((errno > 0) ? errno : EIO);
    }

    if (num <= 0) {
        ret = 0;
        goto out_free_ib_list;
    }

    list = calloc(num, sizeof(*list));
    if (list == NULL) {
        ret = ENOMEM;
        goto out_free_ib_list;
    }

    /* a device that is not usable is not listed; "auto" then falls through
     * to softnic as if the device did not exist */
    count = 0;
    for (i = 0; i < num; ++i) {
        if (orc_verbs_dev_info(ib_list[i], gid_index, &list[count]) == 0) {
            ++count;
        }
    }

    if (count == 0) {
        free(list);
    } else {
        *list_p  = list;
        *count_p = count;
    }
    ret = 0;

out_free_ib_list:
    ibv_free_device_list(ib_list);
    return ret;
}

static orc_dev_t *orc_verbs_dev_open(const orc_dev_config_t *config,
                                     const char *name)
{
    static const orc_dev_config_t default_config;
    struct ibv_device **ib_list;
    struct ibv_device *ib_dev;
    orc_verbs_dev_t *dev;
    const char *ib_name;
    int i, num, err;

    if (config == NULL) {
        config = &default_config;
    }
    if ((name == NULL) || (config->verbs_gid_index > UINT8_MAX)) {
        errno = EINVAL;
        return NULL;
    }

    errno   = 0;
    ib_list = ibv_get_device_list(&num);
    if (ib_list == NULL) {
        errno = (errno == ENOSYS) ? ENODEV : ((errno > 0) ? errno : EIO);
        return NULL;
    }

    ib_dev = NULL;
    for (i = 0; i < num; ++i) {
        ib_name = ibv_get_device_name(ib_list[i]);
        if ((ib_name != NULL) && !strcmp(ib_name, name)) {
            ib_dev = ib_list[i];
            break;
        }
    }
    if ((ib_dev == NULL) || (strlen(name) >= ORC_DEV_NAME_MAX)) {
        err = ENODEV;
        goto err_free_ib_list;
    }

    dev = calloc(1, sizeof(*dev));
    if (dev == NULL) {
        err = ENOMEM;
        goto err_free_ib_list;
    }

    errno    = 0;
    dev->ctx = ibv_open_device(ib_dev);
    if (dev->ctx == NULL) {
        err = (errno > 0) ? errno : ENODEV;
        goto err_free_dev;
    }

    dev->super.ops     = &orc_dev_verbs_ops;
    dev->super.backend = ORC_DEV_BACKEND_VERBS;
    strcpy(dev->super.name, name);
    dev->gid_index = (uint8_t)config->verbs_gid_index;

    /* the context keeps its own reference to the device */
    ibv_free_device_list(ib_list);
    return &dev->super;

err_free_dev:
    free(dev);
err_free_ib_list:
    ibv_free_device_list(ib_list);
    errno = err;
    return NULL;
}

static int orc_verbs_dev_close(orc_dev_t *orc_dev)
{
    orc_verbs_dev_t *dev = orc_verbs_derived_of(orc_dev, orc_verbs_dev_t);
    int ret;

    errno = 0;
    ret   = orc_dev_verbs_err(ibv_close_device(dev->ctx));
    if (ret != 0) {
        return ret;
    }
    free(dev);
    return 0;
}

static int orc_verbs_dev_query(orc_dev_t *orc_dev, struct ibv_device_attr *attr)
{
    orc_verbs_dev_t *dev = orc_verbs_derived_of(orc_dev, orc_verbs_dev_t);

    errno = 0;
    return orc_dev_verbs_err(ibv_query_device(dev->ctx, attr));
}

static int orc_verbs_dev_query_port(orc_dev_t *orc_dev, uint8_t port_num,
                                    struct ibv_port_attr *attr)
{
    orc_verbs_dev_t *dev = orc_verbs_derived_of(orc_dev, orc_verbs_dev_t);

    errno = 0;
    return orc_dev_verbs_err(ibv_query_port(dev->ctx, port_num, attr));
}

static int orc_verbs_dev_query_gid(orc_dev_t *orc_dev, uint8_t port_num,
                                   int index, union ibv_gid *gid)
{
    orc_verbs_dev_t *dev = orc_verbs_derived_of(orc_dev, orc_verbs_dev_t);

    errno = 0;
    return orc_dev_verbs_err(ibv_query_gid(dev->ctx, port_num, index, gid));
}

static size_t orc_verbs_addr_len(orc_dev_t *orc_dev, uint8_t port_num)
{
    (void)orc_dev;
    (void)port_num;
    return ORC_VERBS_ADDR_LEN;
}

static int orc_verbs_addr_pack(orc_dev_t *orc_dev, uint8_t port_num, void *buf,
                               size_t len)
{
    orc_verbs_dev_t *dev = orc_verbs_derived_of(orc_dev, orc_verbs_dev_t);
    struct ibv_port_attr port_attr;
    orc_verbs_port_addr_t addr;
    int ret;

    ret = orc_verbs_dev_query_port(orc_dev, port_num, &port_attr);
    if (ret != 0) {
        return ret;
    }

    ret = orc_verbs_dev_query_gid(orc_dev, port_num, dev->gid_index, &addr.gid);
    if (ret != 0) {
        return ret;
    }

    addr.lid        = port_attr.lid;
    addr.link_layer = port_attr.link_layer;
    return orc_verbs_addr_encode(&addr, buf, len);
}

static int orc_verbs_addr_unpack(orc_dev_t *orc_dev, uint8_t port_num,
                                 const void *buf, size_t len,
                                 struct ibv_ah_attr *ah_attr)
{
    orc_verbs_dev_t *dev = orc_verbs_derived_of(orc_dev, orc_verbs_dev_t);
    struct ibv_port_attr port_attr;
    int ret;

    ret = orc_verbs_dev_query_port(orc_dev, port_num, &port_attr);
    if (ret != 0) {
        return ret;
    }

    return orc_verbs_addr_decode(buf, len, port_attr.link_layer, port_num,
                                 dev->gid_index, ah_attr);
}

static orc_pd_t *orc_verbs_pd_alloc(orc_dev_t *orc_dev)
{
    orc_verbs_dev_t *dev = orc_verbs_derived_of(orc_dev, orc_verbs_dev_t);
    orc_verbs_pd_t *pd;
    int err;

    pd = calloc(1, sizeof(*pd));
    if (pd == NULL) {
        errno = ENOMEM;
        return NULL;
    }

    errno  = 0;
    pd->pd = ibv_alloc_pd(dev->ctx);
    if (pd->pd == NULL) {
        err = (errno > 0) ? errno : ENOMEM;
        free(pd);
        errno = err;
        return NULL;
    }

    pd->super.dev = orc_dev;
    return &pd->super;
}

static int orc_verbs_pd_dealloc(orc_pd_t *orc_pd)
{
    orc_verbs_pd_t *pd = orc_verbs_derived_of(orc_pd, orc_verbs_pd_t);
    int ret;

    errno = 0;
    ret   = orc_dev_verbs_err(ibv_dealloc_pd(pd->pd));
    if (ret != 0) {
        return ret;
    }
    free(pd);
    return 0;
}

static orc_mr_t *orc_verbs_mr_reg(orc_pd_t *orc_pd, void *addr, size_t length,
                                  int access)
{
    orc_verbs_pd_t *pd = orc_verbs_derived_of(orc_pd, orc_verbs_pd_t);
    orc_verbs_mr_t *mr;
    int err;

    mr = calloc(1, sizeof(*mr));
    if (mr == NULL) {
        errno = ENOMEM;
        return NULL;
    }

    errno  = 0;
    mr->mr = ibv_reg_mr(pd->pd, addr, length, access);
    if (mr->mr == NULL) {
        err = (errno > 0) ? errno : EINVAL;
        free(mr);
        errno = err;
        return NULL;
    }

    mr->super.pd     = orc_pd;
    mr->super.addr   = mr->mr->addr;
    mr->super.length = mr->mr->length;
    mr->super.access = access;
    mr->super.lkey   = mr->mr->lkey;
    mr->super.rkey   = mr->mr->rkey;
    return &mr->super;
}

static int orc_verbs_mr_dereg(orc_mr_t *orc_mr)
{
    orc_verbs_mr_t *mr = orc_verbs_derived_of(orc_mr, orc_verbs_mr_t);
    int ret;

    errno = 0;
    ret   = orc_dev_verbs_err(ibv_dereg_mr(mr->mr));
    if (ret != 0) {
        return ret;
    }
    free(mr);
    return 0;
}

static orc_comp_channel_t *orc_verbs_comp_channel_create(orc_dev_t *orc_dev)
{
    orc_verbs_dev_t *dev = orc_verbs_derived_of(orc_dev, orc_verbs_dev_t);
    orc_verbs_comp_channel_t *channel;
    int err;

    channel = calloc(1, sizeof(*channel));
    if (channel == NULL) {
        errno = ENOMEM;
        return NULL;
    }

    errno            = 0;
    channel->channel = ibv_create_comp_channel(dev->ctx);
    if (channel->channel == NULL) {
        err = (errno > 0) ? errno : ENOMEM;
        free(channel);
        errno = err;
        return NULL;
    }

    channel->super.dev = orc_dev;
    channel->super.fd  = channel->channel->fd;
    return &channel->super;
}

static int orc_verbs_comp_channel_destroy(orc_comp_channel_t *orc_channel)
{
    orc_verbs_comp_channel_t *channel =
        orc_verbs_derived_of(orc_channel, orc_verbs_comp_channel_t);
    int ret;

    errno = 0;
    ret   = orc_dev_verbs_err(ibv_destroy_comp_channel(channel->channel));
    if (ret != 0) {
        return ret; /* EBUSY while CQs still use it */
    }
    free(channel);
    return 0;
}

static orc_cq_t *orc_verbs_cq_create(orc_dev_t *orc_dev, int cqe,
                                     void *cq_context,
                                     orc_comp_channel_t *orc_channel)
{
    orc_verbs_dev_t *dev = orc_verbs_derived_of(orc_dev, orc_verbs_dev_t);
    struct ibv_comp_channel *ib_channel = NULL;
    orc_verbs_cq_t *cq;
    int err;

    if (orc_channel != NULL) {
        if (orc_channel->dev != orc_dev) {
            errno = EINVAL;
            return NULL;
        }
        ib_channel = orc_verbs_derived_of(orc_channel, orc_verbs_comp_channel_t)
                         ->channel;
    }

    cq = calloc(1, sizeof(*cq));
    if (cq == NULL) {
        errno = ENOMEM;
        return NULL;
    }

    errno         = 0;
    cq->super.ibv = ibv_create_cq(dev->ctx, cqe, cq, ib_channel, 0);
    if (cq->super.ibv == NULL) {
        err = (errno > 0) ? errno : ENOMEM;
        free(cq);
        errno = err;
        return NULL;
    }

    cq->super.dev        = orc_dev;
    cq->super.channel    = orc_channel;
    cq->super.cq_context = cq_context;
    cq->super.cqe        = cq->super.ibv->cqe;
    return &cq->super;
}

static int orc_verbs_cq_destroy(orc_cq_t *orc_cq)
{
    orc_verbs_cq_t *cq = orc_verbs_derived_of(orc_cq, orc_verbs_cq_t);
    int ret;

    errno = 0;
    ret   = orc_dev_verbs_err(ibv_destroy_cq(cq->super.ibv));
    if (ret != 0) {
        return ret;
    }
    free(cq);
    return 0;
}


static int orc_verbs_cq_req_notify(orc_cq_t *orc_cq, int solicited_only)
{
    orc_verbs_cq_t *cq = orc_verbs_derived_of(orc_cq, orc_verbs_cq_t);

    errno = 0;
    return orc_dev_verbs_err(ibv_req_notify_cq(cq->super.ibv, solicited_only));
}

static int orc_verbs_cq_get_event(orc_comp_channel_t *orc_channel,
                                  orc_cq_t **cq_p, void **cq_context_p)
{
    orc_verbs_comp_channel_t *channel =
        orc_verbs_derived_of(orc_channel, orc_verbs_comp_channel_t);
    struct ibv_cq *ib_cq;
    orc_verbs_cq_t *cq;
    void *ib_cq_context;
    int ret;

    errno = 0;
    ret   = orc_dev_verbs_err(
          ibv_get_cq_event(channel->channel, &ib_cq, &ib_cq_context));
    if (ret != 0) {
        return ret; /* EAGAIN on a non-blocking channel without events */
    }

    cq            = ib_cq_context;
    *cq_p         = &cq->super;
    *cq_context_p = cq->super.cq_context;
    return 0;
}

static void orc_verbs_cq_ack_events(orc_cq_t *orc_cq, unsigned int nevents)
{
    orc_verbs_cq_t *cq = orc_verbs_derived_of(orc_cq, orc_verbs_cq_t);

    ibv_ack_cq_events(cq->super.ibv, nevents);
}

static orc_srq_t *orc_verbs_srq_create(orc_pd_t *orc_pd,
                                       struct ibv_srq_init_attr *attr)
{
    orc_verbs_pd_t *pd = orc_verbs_derived_of(orc_pd, orc_verbs_pd_t);
    struct ibv_srq_init_attr ib_attr;
    orc_verbs_srq_t *srq;
    int err;

    srq = calloc(1, sizeof(*srq));
    if (srq == NULL) {
        errno = ENOMEM;
        return NULL;
    }

    ib_attr             = *attr;
    ib_attr.srq_context = srq;

    errno          = 0;
    srq->super.ibv = ibv_create_srq(pd->pd, &ib_attr);
    if (srq->super.ibv == NULL) {
        err = (errno > 0) ? errno : ENOMEM;
        free(srq);
        errno = err;
        return NULL;
    }

    attr->attr             = ib_attr.attr; /* the actual sizes */
    srq->super.pd          = orc_pd;
    srq->super.srq_context = attr->srq_context;
    return &srq->super;
}

static int orc_verbs_srq_destroy(orc_srq_t *orc_srq)
{
    orc_verbs_srq_t *srq = orc_verbs_derived_of(orc_srq, orc_verbs_srq_t);
    int ret;

    errno = 0;
    ret   = orc_dev_verbs_err(ibv_destroy_srq(srq->super.ibv));
    if (ret != 0) {
        return ret;
    }
    free(srq);
    return 0;
}


/* A CQ or SRQ handed to qp_create must be a verbs object of the same device */
static int orc_verbs_qp_check_dev(orc_dev_t *qp_dev, orc_dev_t *obj_dev)
{
    return (obj_dev == qp_dev) ? 0 : EINVAL;
}

static orc_qp_t *orc_verbs_qp_create(orc_pd_t *orc_pd, orc_qp_init_attr_t *attr)
{
    orc_verbs_pd_t *pd = orc_verbs_derived_of(orc_pd, orc_verbs_pd_t);
    struct ibv_qp_init_attr ib_attr;
    orc_verbs_qp_t *qp;
    int err;

    if ((attr->qp_type != IBV_QPT_RC) || (attr->send_cq == NULL) ||
        (attr->recv_cq == NULL) ||
        orc_verbs_qp_check_dev(orc_pd->dev, attr->send_cq->dev) ||
        orc_verbs_qp_check_dev(orc_pd->dev, attr->recv_cq->dev) ||
        ((attr->srq != NULL) &&
         orc_verbs_qp_check_dev(orc_pd->dev, attr->srq->pd->dev))) {
        errno = EINVAL;
        return NULL;
    }

    qp = calloc(1, sizeof(*qp));
    if (qp == NULL) {
        errno = ENOMEM;
        return NULL;
    }

    memset(&ib_attr, 0, sizeof(ib_attr));
    ib_attr.qp_context = qp;
    ib_attr.send_cq    = attr->send_cq->ibv;
    ib_attr.recv_cq    = attr->recv_cq->ibv;
    ib_attr.srq        = (attr->srq == NULL) ? NULL : attr->srq->ibv;
    ib_attr.cap        = attr->cap;
    ib_attr.qp_type    = IBV_QPT_RC;
    ib_attr.sq_sig_all = attr->sq_sig_all;

    errno         = 0;
    qp->super.ibv = ibv_create_qp(pd->pd, &ib_attr);
    if (qp->super.ibv == NULL) {
        err = (errno > 0) ? errno : ENOMEM;
        free(qp);
        errno = err;
        return NULL;
    }

    attr->cap            = ib_attr.cap; /* the actual sizes */
    qp->super.pd         = orc_pd;
    qp->super.qp_context = attr->qp_context;
    qp->super.qp_num     = qp->super.ibv->qp_num;
    qp->send_cq          = attr->send_cq;
    qp->recv_cq          = attr->recv_cq;
    qp->srq              = attr->srq;
    return &qp->super;
}

static int orc_verbs_qp_modify(orc_qp_t *orc_qp, struct ibv_qp_attr *attr,
                               int attr_mask)
{
    orc_verbs_qp_t *qp = orc_verbs_derived_of(orc_qp, orc_verbs_qp_t);

    errno = 0;
    return orc_dev_verbs_err(ibv_modify_qp(qp->super.ibv, attr, attr_mask));
}

static int orc_verbs_qp_query(orc_qp_t *orc_qp, struct ibv_qp_attr *attr,
                              int attr_mask, orc_qp_init_attr_t *init_attr)
{
    orc_verbs_qp_t *qp = orc_verbs_derived_of(orc_qp, orc_verbs_qp_t);
    struct ibv_qp_init_attr ib_init_attr;
    int ret;

    memset(&ib_init_attr, 0, sizeof(ib_init_attr));
    errno = 0;
    ret   = orc_dev_verbs_err(
          ibv_query_qp(qp->super.ibv, attr, attr_mask, &ib_init_attr));
    if ((ret != 0) || (init_attr == NULL)) {
        return ret;
    }

    /* the ibv handles in ib_init_attr are ours, so map back from the wrapper */
    init_attr->qp_context = qp->super.qp_context;
    init_attr->send_cq    = qp->send_cq;
    init_attr->recv_cq    = qp->recv_cq;
    init_attr->srq        = qp->srq;
    init_attr->cap        = ib_init_attr.cap;
    init_attr->qp_type    = IBV_QPT_RC;
    init_attr->sq_sig_all = ib_init_attr.sq_sig_all;
    return 0;
}

static int orc_verbs_qp_destroy(orc_qp_t *orc_qp)
{
    orc_verbs_qp_t *qp = orc_verbs_derived_of(orc_qp, orc_verbs_qp_t);
    int ret;

    errno = 0;
    ret   = orc_dev_verbs_err(ibv_destroy_qp(qp->super.ibv));
    if (ret != 0) {
        return ret;
    }
    free(qp);
    return 0;
}


static int orc_verbs_post_recv(orc_qp_t *orc_qp, struct ibv_recv_wr *wr,
                               struct ibv_recv_wr **bad_wr)
{
    orc_verbs_qp_t *qp = orc_verbs_derived_of(orc_qp, orc_verbs_qp_t);

    errno = 0;
    return orc_dev_verbs_err(ibv_post_recv(qp->super.ibv, wr, bad_wr));
}

const orc_dev_ops_t orc_dev_verbs_ops = {
    .size                 = sizeof(orc_dev_ops_t),
    .list                 = orc_verbs_dev_list,
    .open                 = orc_verbs_dev_open,
    .close                = orc_verbs_dev_close,
    .query                = orc_verbs_dev_query,
    .query_port           = orc_verbs_dev_query_port,
    .query_gid            = orc_verbs_dev_query_gid,
    .addr_len             = orc_verbs_addr_len,
    .addr_pack            = orc_verbs_addr_pack,
    .addr_unpack          = orc_verbs_addr_unpack,
    .pd_alloc             = orc_verbs_pd_alloc,
    .pd_dealloc           = orc_verbs_pd_dealloc,
    .mr_reg               = orc_verbs_mr_reg,
    .mr_dereg             = orc_verbs_mr_dereg,
    .comp_channel_create  = orc_verbs_comp_channel_create,
    .comp_channel_destroy = orc_verbs_comp_channel_destroy,
    .cq_create            = orc_verbs_cq_create,
    .cq_destroy           = orc_verbs_cq_destroy,
    .cq_req_notify        = orc_verbs_cq_req_notify,
    .cq_get_event         = orc_verbs_cq_get_event,
    .cq_ack_events        = orc_verbs_cq_ack_events,
    .srq_create           = orc_verbs_srq_create,
    .srq_destroy          = orc_verbs_srq_destroy,
    .qp_create            = orc_verbs_qp_create,
    .qp_modify            = orc_verbs_qp_modify,
    .qp_query             = orc_verbs_qp_query,
    .qp_destroy           = orc_verbs_qp_destroy,
    .post_recv            = orc_verbs_post_recv,
};
