/*
 * softnic as a libibverbs device: an rdma-core provider (provider ABI of the
 * rdma-core source it is built against) that serves libibverbs' ops from a
 * softnic device. Types shared by the provider's files.
 *
 * Devices. A device is a directory of the sysfs tree that
 * contrib/softnic-run prepares (class/infiniband/soft_<ifname>, with its
 * uverbs twin under class/infiniband_verbs); libibverbs reads it through
 * SYSFS_PATH and matches it to this provider by name (soft_*). Opening the
 * device opens one softnic device (an instance: service thread, listener,
 * MR table) for the context. GIDs, pkeys and the node GUID are read by
 * libibverbs itself from the sysfs tree, which softnic-run fills from the
 * same interface softnic uses.
 *
 * The kernel is never asked anything: no ibv_cmd_* call, and the context's
 * cmd_fd is replaced by a descriptor on which a stray kernel command fails
 * (EBADF) instead of "succeeding" on the /dev/null twin the device node is.
 * Completion channels and async events are served through the interposer
 * (snv_preload.h) from the provider's event queues.
 *
 * Objects. Every verbs object wraps the softnic object it stands for; the
 * verbs-visible numbers (QPN, lkey, rkey) are softnic's own, so completions
 * and wire addresses need no translation. RC and UD QPs; a UD send's
 * address handle is translated to softnic's (snv_ud.c).
 *
 * Thread safety: libibverbs' contract (every verb may be called from any
 * thread; destroying an object in use is the caller's error). Shared
 * provider state is listed with its lock below.
 */
#ifndef SNV_H_
#define SNV_H_

#include <infiniband/driver.h>
#include <net/if.h>
#include <pthread.h>
#include <stdint.h>

#include "softnic/softnic.h"

#define SNV_NAME_PREFIX "soft_"
#define SNV_ABI_VERSION 6 /* the uverbs ABI softnic-run writes */
#define SNV_MAX_AH      (1 << 20)
/*
 * Verbs programs exchange GIDs and QPNs, nothing else: a softnic device
 * opened by the provider addresses QPs by QPN (softnic_config_t's
 * qpn_port_base): its listener takes a TCP port of [4791, 4791 + 1024) and
 * every QPN names it. 4791 is RoCE v2's UDP port; every host of a fabric
 * uses the same range.
 */
#define SNV_QPN_PORT_BASE 4791

/*
 * An event queue (snv_event.c): the provider's stand-in for a kernel event
 * file. lock protects the list and stale; fd is an eventfd (semaphore mode)
 * counting queued plus stale records.
 */
typedef struct snv_ev {
    struct snv_ev *next;
    uint64_t element;
    uint32_t type;
    const void *owner; /* the object the record names, for drop */
} snv_ev_t;

typedef struct snv_evq {
    pthread_mutex_t lock;
    int fd;
    uint64_t stale; /* counts of dropped records still in fd */
    snv_ev_t *head, **tail;
} snv_evq_t;

int snv_evq_init(snv_evq_t *evq);
void snv_evq_cleanup(snv_evq_t *evq);
/* queue a record; any thread, never blocks */
int snv_evq_push(snv_evq_t *evq, uint32_t type, uint64_t element,
                 const void *owner);
/* called with the queue's lock held on the record being taken, so that a
 * drop of its owner (under the same lock) finds it either queued or seen */
typedef void (*snv_evq_take_fn_t)(uint32_t type, uint64_t element);
/* take the oldest record; blocks unless fd is non-blocking (then EAGAIN) */
int snv_evq_pop(snv_evq_t *evq, snv_evq_take_fn_t take, uint32_t *type_p,
                uint64_t *element_p);
/* drop the records of owner */
void snv_evq_drop(snv_evq_t *evq, const void *owner);

typedef struct snv_device {
    struct verbs_device vdev;
    char ifname[IF_NAMESIZE];
} snv_device_t;

/*
 * A context = one softnic device instance; async_fd is async.fd. The CQs of
 * the context are known to softnic by a number of their own (cq_context),
 * never reused, so that a completion or async event of a CQ destroyed
 * before it was read names no live CQ and is dropped, as the kernel drops
 * it: cq_lock protects cqs and next_cq_id (lock order: softnic's locks ->
 * cq_lock -> the event queue's lock -> the mutex of an ibv_cq, ibv_qp or
 * ibv_srq).
 */
typedef struct snv_context {
    struct verbs_context vctx;
    softnic_dev_t *dev;
    snv_evq_t async;
    pthread_mutex_t cq_lock;
    struct snv_cq *cqs;
    uint64_t next_cq_id;
} snv_context_t;

typedef struct snv_pd {
    struct ibv_pd pd;
    softnic_pd_t *spd;
} snv_pd_t;

typedef struct snv_mr {
    struct verbs_mr vmr;
    softnic_mr_t *smr;
} snv_mr_t;

/* An ibv_comp_channel served by the provider: a softnic channel, whose
 * event records are the numbers of the context's CQs. */
typedef struct snv_channel {
    struct ibv_comp_channel channel;
    softnic_comp_channel_t *sch;
} snv_channel_t;

/*
 * events_reported: completion events handed to the application by
 * ibv_get_cq_event, under cq.mutex (libibverbs' ibv_ack_cq_events counts the
 * acknowledged ones under the same mutex); destroy waits until all are
 * acknowledged, as the kernel does.
 */
typedef struct snv_cq {
    struct ibv_cq cq;
    softnic_cq_t *scq;
    uint32_t events_reported;
    uint32_t async_reported; /* async events read, under cq.mutex */
    uint64_t id;             /* softnic's cq_context */
    struct snv_cq *next;     /* in the context's cqs, cq_lock */
} snv_cq_t;

/* async_reported: async events the application read, under the object's
 * mutex; libibverbs' ibv_ack_async_event counts the acknowledged ones in
 * events_completed, and destroy waits for both to be equal. */
typedef struct snv_srq {
    struct ibv_srq srq;
    softnic_srq_t *ssrq;
    struct ibv_srq_attr attr; /* as created */
    uint32_t async_reported;
} snv_srq_t;

/* softnic knows the QP by its qp_context, the snv_qp_t */
typedef struct snv_qp {
    struct verbs_qp vqp;
    softnic_qp_t *sqp;
    uint32_t async_reported;
} snv_qp_t;

/* An address handle: softnic's, which UD sends name, and the attributes as
 * created */
typedef struct snv_ah {
    struct ibv_ah ah;
    struct ibv_ah_attr attr;
    softnic_ah_t *sah;
} snv_ah_t;

static inline snv_context_t *snv_ctx(struct ibv_context *context)
{
    return container_of(verbs_get_ctx(context), snv_context_t, vctx);
}

static inline snv_device_t *snv_dev(struct ibv_device *device)
{
    return container_of(verbs_get_device(device), snv_device_t, vdev);
}

#define snv_of(_ptr, _type, _member) container_of(_ptr, _type, _member)

/* snv_device.c */
extern const struct verbs_device_ops snv_device_ops;
int snv_owns_context(struct ibv_context *context);

/* snv_event.c: async events */
/* queue an async event for the application; element: the QP/CQ/SRQ (then
 * also the owner) or a port number (owner NULL) */
void snv_async_event(snv_context_t *ctx, enum ibv_event_type type,
                     uint64_t element, const void *owner);
int snv_get_async_event(struct ibv_context *context,
                        struct ibv_async_event *event);
/* softnic's event callback (softnic_event_fn_t) of a context */
void snv_softnic_event(void *arg, enum ibv_event_type type, void *context);
/* destroy: drop the object's unread events and wait until every event the
 * application read is acknowledged (mutex/cond/completed: the object's) */
void snv_async_quiesce(snv_context_t *ctx, const void *owner,
                       pthread_mutex_t *mutex, pthread_cond_t *cond,
                       const uint32_t *completed, const uint32_t *reported);

/* snv_mr.c: PD, MR, AH */
struct ibv_pd *snv_alloc_pd(struct ibv_context *context);
int snv_dealloc_pd(struct ibv_pd *pd);
struct ibv_mr *snv_reg_mr(struct ibv_pd *pd, void *addr, size_t length,
                          uint64_t hca_va, int access);
int snv_dereg_mr(struct verbs_mr *vmr);
struct ibv_ah *snv_create_ah(struct ibv_pd *pd, struct ibv_ah_attr *attr);
int snv_destroy_ah(struct ibv_ah *ah);

/* snv_cq.c: CQs and completion channels */
struct ibv_cq *snv_create_cq(struct ibv_context *context, int cqe,
                             struct ibv_comp_channel *channel, int comp_vector);
int snv_destroy_cq(struct ibv_cq *cq);
int snv_poll_cq(struct ibv_cq *cq, int num_entries, struct ibv_wc *wc);
int snv_req_notify_cq(struct ibv_cq *cq, int solicited_only);
void snv_cq_event(struct ibv_cq *cq);
/* the live CQ of the context with softnic's cq_context id, or NULL; under
 * cq_lock, which the caller holds */
snv_cq_t *snv_cq_find_locked(snv_context_t *ctx, uint64_t id);
struct ibv_comp_channel *snv_create_comp_channel(struct ibv_context *context);
int snv_destroy_comp_channel(struct ibv_comp_channel *channel);
int snv_get_cq_event(struct ibv_comp_channel *channel, struct ibv_cq **cq,
                     void **cq_context);

/* snv_qp.c: QPs and SRQs */
struct ibv_qp *snv_create_qp(struct ibv_pd *pd, struct ibv_qp_init_attr *attr);
struct ibv_qp *snv_create_qp_ex(struct ibv_context *context,
                                struct ibv_qp_init_attr_ex *attr);
int snv_modify_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr, int attr_mask);
int snv_query_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr, int attr_mask,
                 struct ibv_qp_init_attr *init_attr);
int snv_destroy_qp(struct ibv_qp *qp);
int snv_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr,
                  struct ibv_send_wr **bad_wr);

/* snv_ud.c: UD sends */
int snv_post_send_ud(snv_qp_t *qp, struct ibv_send_wr *wr,
                     struct ibv_send_wr **bad_wr);
int snv_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr,
                  struct ibv_recv_wr **bad_wr);
struct ibv_srq *snv_create_srq(struct ibv_pd *pd,
                               struct ibv_srq_init_attr *attr);
int snv_query_srq(struct ibv_srq *srq, struct ibv_srq_attr *attr);
int snv_destroy_srq(struct ibv_srq *srq);
int snv_post_srq_recv(struct ibv_srq *srq, struct ibv_recv_wr *wr,
                      struct ibv_recv_wr **bad_wr);

#endif /* SNV_H_ */
