/*
 * orc device layer: one verbs-shaped API over two backends.
 *
 *   verbs  rdma-core's libibverbs (real HCAs, RoCE, SoftRoCE)
 *   soft   softnic, a userspace RDMA NIC with verbs semantics
 *
 * The API uses libibverbs' own types and status codes (struct ibv_send_wr,
 * struct ibv_wc, struct ibv_qp_attr, enum ibv_wc_status, IBV_ACCESS_*), so
 * code above it reads like verbs code and the verbs backend is a thin
 * pass-through. Only the object handles are orc's own, because a softnic
 * object is not an ibv object.
 *
 * Conventions (the same as libibverbs):
 *  - creators return NULL and set errno on failure;
 *  - other calls return 0 on success or a positive errno value;
 *  - orc_cq_poll() returns the number of completions (>= 0) or a negative
 *    errno value.
 *
 * Thread safety: every call is thread-safe, as with libibverbs. Objects may
 * be created, modified and destroyed from any thread (the transport's pairing
 * agent creates and connects QPs on its own thread). Destroying an object
 * while another thread still uses it is the caller's error, as with verbs.
 *
 * This layer does not depend on UCX. The soft backend (soft/orc_soft.c) is
 * an adapter to softnic's own library (src/softnic/softnic.h).
 */
#ifndef ORC_DEV_H_
#define ORC_DEV_H_

#include "softnic/softnic.h"

#include <errno.h>
#include <infiniband/verbs.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum orc_dev_backend {
    ORC_DEV_BACKEND_AUTO  = 0, /* verbs devices if any, else softnic */
    ORC_DEV_BACKEND_VERBS = 1,
    ORC_DEV_BACKEND_SOFT  = 2,
} orc_dev_backend_t;

/* "auto", "verbs", "soft" */
const char *orc_dev_backend_name(orc_dev_backend_t backend);

/* Parse "auto" | "verbs" | "soft"; returns 0 or EINVAL. */
int orc_dev_backend_parse(const char *str, orc_dev_backend_t *backend_p);

/*
 * Device-layer configuration. Zero-initialised means: backend auto, softnic
 * on every network interface that is up and has an IPv4 address, with its
 * defaults.
 */
typedef struct orc_dev_config {
    orc_dev_backend_t backend;
    /* softnic's device configuration (softnic.h): soft.ifaces selects the
     * network interfaces ("lo,eth0"; NULL or "" = every interface that is
     * up with an IPv4 address), then its knobs and its log callback. */
    softnic_config_t soft;
    /* verbs: GID table index used as the source GID of connections and
     * published in the packed address (RoCE: pick the RoCEv2 entry of the
     * wanted IP address). 0 when zero-initialised; at most 255. */
    unsigned verbs_gid_index;
} orc_dev_config_t;

#define ORC_DEV_NAME_MAX 64

typedef struct orc_dev_info {
    char name[ORC_DEV_NAME_MAX]; /* "mlx5_0", "soft_lo" */
    orc_dev_backend_t backend;   /* VERBS or SOFT, never AUTO */
    uint8_t num_ports;           /* ports are numbered from 1 */
    /* the network interface, for topology lookups (orc_topo.h): soft, the
     * one the device runs on ("lo", "eth0"); verbs, the one of the source
     * GID of port 1 on RoCE ("" on InfiniBand) */
    char netdev[ORC_DEV_NAME_MAX];
} orc_dev_info_t;

/*
 * List the devices of the configured backend. For AUTO: the verbs devices if
 * there is at least one, else the soft devices. No devices is not an error:
 * *count_p is 0 (this includes libibverbs failing with ENOSYS because the
 * kernel has no RDMA support). Free the list with orc_dev_list_free().
 */
int orc_dev_list(const orc_dev_config_t *config, orc_dev_info_t **list_p,
                 int *count_p);
void orc_dev_list_free(orc_dev_info_t *list);

/*
 * Object handles. Each backend allocates a larger structure that starts with
 * the public part below; the public fields may be read, never written.
 */
typedef struct orc_dev_ops orc_dev_ops_t;

typedef struct orc_dev {
    const orc_dev_ops_t *ops;
    orc_dev_backend_t backend;
    char name[ORC_DEV_NAME_MAX];
    /* orc_dev_info_t::netdev of the device, set by orc_dev_open() */
    char netdev[ORC_DEV_NAME_MAX];
} orc_dev_t;

typedef struct orc_pd {
    orc_dev_t *dev;
} orc_pd_t;

typedef struct orc_mr {
    orc_pd_t *pd;
    void *addr;
    size_t length;
    int access; /* IBV_ACCESS_* */
    uint32_t lkey;
    uint32_t rkey;
} orc_mr_t;

typedef struct orc_comp_channel {
    orc_dev_t *dev;
    int fd; /* readable when a completion event is pending */
} orc_comp_channel_t;

/*
 * The data-path objects (CQ, SRQ, QP) also hold the backend's own object,
 * exactly one of ibv (verbs backend) and nic (soft backend), set by the
 * create call and never changed: the data-path calls below reach the
 * backend through it, without a call in between.
 */
typedef struct orc_cq {
    orc_dev_t *dev;
    orc_comp_channel_t *channel; /* may be NULL */
    void *cq_context;
    int cqe; /* actual capacity */
    struct ibv_cq *ibv;
    softnic_cq_t *nic;
} orc_cq_t;

typedef struct orc_srq {
    orc_pd_t *pd;
    void *srq_context;
    struct ibv_srq *ibv;
    softnic_srq_t *nic;
} orc_srq_t;

typedef struct orc_qp {
    orc_pd_t *pd;
    void *qp_context;
    uint32_t qp_num;
    struct ibv_qp *ibv;
    softnic_qp_t *nic;
} orc_qp_t;

/* struct ibv_qp_init_attr with orc handles in place of ibv ones. Only
 * IBV_QPT_RC is supported by both backends. */
typedef struct orc_qp_init_attr {
    void *qp_context;
    orc_cq_t *send_cq;
    orc_cq_t *recv_cq;
    orc_srq_t *srq; /* NULL: the QP has its own receive queue */
    struct ibv_qp_cap cap;
    enum ibv_qp_type qp_type;
    int sq_sig_all;
} orc_qp_init_attr_t;

/* Devices */
orc_dev_t *orc_dev_open(const orc_dev_config_t *config, const char *name);
int orc_dev_close(orc_dev_t *dev);
int orc_dev_query(orc_dev_t *dev, struct ibv_device_attr *attr);
int orc_dev_query_port(orc_dev_t *dev, uint8_t port_num,
                       struct ibv_port_attr *attr);
int orc_dev_query_gid(orc_dev_t *dev, uint8_t port_num, int index,
                      union ibv_gid *gid);

/*
 * The address a peer needs to connect a QP to this device's port: packed by
 * the local side, shipped to the peer (through orcd), unpacked there into the
 * ah_attr of the RTR transition. The packed form starts with the backend and
 * is self-describing; unpacking an address of the other backend, or one that
 * this device cannot reach, fails with EHOSTUNREACH. Malformed input fails
 * with EINVAL.
 */
size_t orc_dev_addr_len(orc_dev_t *dev, uint8_t port_num);
int orc_dev_addr_pack(orc_dev_t *dev, uint8_t port_num, void *buf, size_t len);
int orc_dev_addr_unpack(orc_dev_t *dev, uint8_t port_num, const void *buf,
                        size_t len, struct ibv_ah_attr *ah_attr);

/* Protection domains and memory regions */
orc_pd_t *orc_pd_alloc(orc_dev_t *dev);
int orc_pd_dealloc(orc_pd_t *pd);
orc_mr_t *orc_mr_reg(orc_pd_t *pd, void *addr, size_t length, int access);
int orc_mr_dereg(orc_mr_t *mr);

/* Completion channels and queues */
orc_comp_channel_t *orc_comp_channel_create(orc_dev_t *dev);
int orc_comp_channel_destroy(orc_comp_channel_t *channel);
orc_cq_t *orc_cq_create(orc_dev_t *dev, int cqe, void *cq_context,
                        orc_comp_channel_t *channel);
int orc_cq_destroy(orc_cq_t *cq);
static inline int orc_cq_poll(orc_cq_t *cq, int num_entries, struct ibv_wc *wc);
int orc_cq_req_notify(orc_cq_t *cq, int solicited_only);
/* Blocks unless the channel fd was made non-blocking (then EAGAIN). */
int orc_cq_get_event(orc_comp_channel_t *channel, orc_cq_t **cq_p,
                     void **cq_context_p);
void orc_cq_ack_events(orc_cq_t *cq, unsigned int nevents);

/* Shared receive queues */
orc_srq_t *orc_srq_create(orc_pd_t *pd, struct ibv_srq_init_attr *attr);
int orc_srq_destroy(orc_srq_t *srq);
static inline int orc_post_srq_recv(orc_srq_t *srq, struct ibv_recv_wr *wr,
                                    struct ibv_recv_wr **bad_wr);

/* Queue pairs (RC) */
orc_qp_t *orc_qp_create(orc_pd_t *pd, orc_qp_init_attr_t *attr);
int orc_qp_modify(orc_qp_t *qp, struct ibv_qp_attr *attr, int attr_mask);
int orc_qp_query(orc_qp_t *qp, struct ibv_qp_attr *attr, int attr_mask,
                 orc_qp_init_attr_t *init_attr);
int orc_qp_destroy(orc_qp_t *qp);
static inline int orc_post_send(orc_qp_t *qp, struct ibv_send_wr *wr,
                                struct ibv_send_wr **bad_wr);
/* orc_post_send() of one WR whose completion the caller takes at once if
 * the device finished it within the call (*done_p 1: no completion entry
 * comes, softnic_post_send_now()); a verbs device never does (*done_p 0) */
static inline int orc_post_send_now(orc_qp_t *qp, struct ibv_send_wr *wr,
                                    struct ibv_send_wr **bad_wr, int *done_p);
/* One inline SEND or WRITE of wr's two parts (softnic_post_send_inline());
 * on a verbs device one IBV_SEND_INLINE WR with a gather entry per
 * non-empty part (the QP has at least 2): no copy of the data before the
 * provider's */
static inline int orc_post_send_inline(orc_qp_t *qp,
                                       const softnic_inline_wr_t *wr);
int orc_post_recv(orc_qp_t *qp, struct ibv_recv_wr *wr,
                  struct ibv_recv_wr **bad_wr);

/*
 * The backend ops table. Every slot is filled by both backends; a backend
 * that cannot do something returns EOPNOTSUPP from the slot.
 */
struct orc_dev_ops {
    size_t size; /* sizeof(orc_dev_ops_t) the backend was built with */

    int (*list)(const orc_dev_config_t *config, orc_dev_info_t **list_p,
                int *count_p);
    orc_dev_t *(*open)(const orc_dev_config_t *config, const char *name);
    int (*close)(orc_dev_t *dev);
    int (*query)(orc_dev_t *dev, struct ibv_device_attr *attr);
    int (*query_port)(orc_dev_t *dev, uint8_t port_num,
                      struct ibv_port_attr *attr);
    int (*query_gid)(orc_dev_t *dev, uint8_t port_num, int index,
                     union ibv_gid *gid);
    size_t (*addr_len)(orc_dev_t *dev, uint8_t port_num);
    int (*addr_pack)(orc_dev_t *dev, uint8_t port_num, void *buf, size_t len);
    int (*addr_unpack)(orc_dev_t *dev, uint8_t port_num, const void *buf,
                       size_t len, struct ibv_ah_attr *ah_attr);

    orc_pd_t *(*pd_alloc)(orc_dev_t *dev);
    int (*pd_dealloc)(orc_pd_t *pd);
    orc_mr_t *(*mr_reg)(orc_pd_t *pd, void *addr, size_t length, int access);
    int (*mr_dereg)(orc_mr_t *mr);

    orc_comp_channel_t *(*comp_channel_create)(orc_dev_t *dev);
    int (*comp_channel_destroy)(orc_comp_channel_t *channel);
    orc_cq_t *(*cq_create)(orc_dev_t *dev, int cqe, void *cq_context,
                           orc_comp_channel_t *channel);
    int (*cq_destroy)(orc_cq_t *cq);
    int (*cq_req_notify)(orc_cq_t *cq, int solicited_only);
    int (*cq_get_event)(orc_comp_channel_t *channel, orc_cq_t **cq_p,
                        void **cq_context_p);
    void (*cq_ack_events)(orc_cq_t *cq, unsigned int nevents);

    orc_srq_t *(*srq_create)(orc_pd_t *pd, struct ibv_srq_init_attr *attr);
    int (*srq_destroy)(orc_srq_t *srq);

    orc_qp_t *(*qp_create)(orc_pd_t *pd, orc_qp_init_attr_t *attr);
    int (*qp_modify)(orc_qp_t *qp, struct ibv_qp_attr *attr, int attr_mask);
    int (*qp_query)(orc_qp_t *qp, struct ibv_qp_attr *attr, int attr_mask,
                    orc_qp_init_attr_t *init_attr);
    int (*qp_destroy)(orc_qp_t *qp);
    int (*post_recv)(orc_qp_t *qp, struct ibv_recv_wr *wr,
                     struct ibv_recv_wr **bad_wr);
};

/* The two backends' tables (verbs/orc_verbs.c, soft/orc_soft.c). */
extern const orc_dev_ops_t orc_dev_verbs_ops;
extern const orc_dev_ops_t orc_dev_soft_ops;

/* A libibverbs call's failure (not 0) as a positive errno value: some
 * return -1 with errno set (cleared before the call), some providers a
 * negative errno value (verbs/orc_verbs.c) */
int orc_dev_verbs_err(int ret);

/*
 * The data-path calls, inline, straight into the backend's own object (the
 * handles' ibv or nic): for verbs, libibverbs' inline call, which makes the
 * one indirect call into its provider; for soft, softnic's call. No ops
 * table and no wrapper in between: they run for every operation and every
 * poll of a waiting loop.
 */
static inline int orc_cq_poll(orc_cq_t *cq, int num_entries, struct ibv_wc *wc)
{
    int ret;

    if (cq->nic != NULL) {
        return softnic_cq_poll(cq->nic, num_entries, wc);
    }
    ret = ibv_poll_cq(cq->ibv, num_entries, wc);
    /* a provider's negative value is not an errno value */
    return (ret < 0) ? -EIO : ret;
}

static inline int orc_post_srq_recv(orc_srq_t *srq, struct ibv_recv_wr *wr,
                                    struct ibv_recv_wr **bad_wr)
{
    int ret;

    if (srq->nic != NULL) {
        return softnic_post_srq_recv(srq->nic, wr, bad_wr);
    }
    errno = 0;
    ret   = ibv_post_srq_recv(srq->ibv, wr, bad_wr);
    return (ret == 0) ? 0 : orc_dev_verbs_err(ret);
}

static inline int orc_post_send(orc_qp_t *qp, struct ibv_send_wr *wr,
                                struct ibv_send_wr **bad_wr)
{
    int ret;

    if (qp->nic != NULL) {
        return softnic_post_send(qp->nic, wr, bad_wr);
    }
    errno = 0;
    ret   = ibv_post_send(qp->ibv, wr, bad_wr);
    return (ret == 0) ? 0 : orc_dev_verbs_err(ret);
}

static inline int orc_post_send_now(orc_qp_t *qp, struct ibv_send_wr *wr,
                                    struct ibv_send_wr **bad_wr, int *done_p)
{
    if (qp->nic != NULL) {
        return softnic_post_send_now(qp->nic, wr, bad_wr, done_p);
    }
    *done_p = 0;
    return orc_post_send(qp, wr, bad_wr);
}

static inline int orc_post_send_inline(orc_qp_t *qp,
                                       const softnic_inline_wr_t *wr)
{
    struct ibv_send_wr vwr, *bad_wr;
    struct ibv_sge sge[2];

    if (qp->nic != NULL) {
        return softnic_post_send_inline(qp->nic, wr);
    }
    vwr.wr_id               = wr->wr_id;
    vwr.next                = NULL;
    vwr.sg_list             = sge;
    vwr.num_sge             = 0;
    vwr.opcode              = wr->opcode;
    vwr.send_flags          = wr->send_flags | IBV_SEND_INLINE;
    vwr.wr.rdma.remote_addr = wr->remote_addr;
    vwr.wr.rdma.rkey        = wr->rkey;
    if (wr->hdr_len > 0) {
        sge[vwr.num_sge].addr   = (uintptr_t)wr->hdr;
        sge[vwr.num_sge].length = wr->hdr_len;
        sge[vwr.num_sge++].lkey = 0;
    }
    if (wr->len > 0) {
        sge[vwr.num_sge].addr   = (uintptr_t)wr->data;
        sge[vwr.num_sge].length = wr->len;
        sge[vwr.num_sge++].lkey = 0;
    }
    return orc_post_send(qp, &vwr, &bad_wr);
}

#ifdef __cplusplus
}
#endif

#endif /* ORC_DEV_H_ */
