/*
 * orc endpoint: one initiator RC QP towards a peer iface.
 *
 * put = RDMA WRITE, get = RDMA READ, am = SEND into the peer's SRQ (credit
 * flow control: the peer grants credits when pairing and returns them with
 * explicit grants), atomics = verbs 64-bit fetch-add / compare-swap.
 *
 * An ep takes work from the moment it exists: while it pairs, the first
 * UCT_ORC_EP_SENDQ_MAX operations wait in its send queue (ep->sendq) and are
 * posted in order once it is connected, with their completions as usual.
 * After a failure every operation returns the failure status. While the ep
 * has pending requests, new operations return UCS_ERR_NO_RESOURCE (they
 * would overtake them), except from the pending callbacks themselves.
 */
#include "orc.h"

#include <ucs/debug/log.h>
#include <ucs/debug/memtrack_int.h>
#include <ucs/sys/string.h>
#include <ucs/type/class.h>
#include <uct/base/uct_iov.inl>

#include <string.h>

ucs_status_t uct_orc_wc_status(enum ibv_wc_status status)
{
    switch (status) {
    case IBV_WC_SUCCESS:
        return UCS_OK;
    case IBV_WC_RETRY_EXC_ERR:
    case IBV_WC_RNR_RETRY_EXC_ERR:
        return UCS_ERR_ENDPOINT_TIMEOUT;
    case IBV_WC_REM_ACCESS_ERR:
    case IBV_WC_LOC_PROT_ERR:
        return UCS_ERR_CONNECTION_RESET;
    default:
        return UCS_ERR_CONNECTION_RESET;
    }
}

static UCS_F_ALWAYS_INLINE uct_orc_iface_t *uct_orc_ep_iface(uct_orc_ep_t *ep)
{
    return ucs_derived_of(ep->super.super.iface, uct_orc_iface_t);
}

/* Send resources for one WR of the given type, now */
static UCS_F_ALWAYS_INLINE int
uct_orc_ep_can_post(uct_orc_ep_t *ep, uct_orc_iface_t *iface, uint8_t type)
{
    return (ep->sq_avail > 0) && (iface->tx_cq_avail > 0) &&
           ((type != UCT_ORC_OP_AM) || (ep->credits > 0));
}

/* Whether the next op must carry IBV_SEND_FENCE (consumes the fence) */
static UCS_F_ALWAYS_INLINE int uct_orc_ep_take_fence(uct_orc_ep_t *ep,
                                                     uct_orc_iface_t *iface)
{
    if (ucs_likely(ep->fence_beat == iface->fence_beat)) {
        return 0;
    }
    ep->fence_beat = iface->fence_beat;
    return 1;
}

/*
 * Whether an op of the given type is accepted now: UCS_OK with *queued 0
 * (post it) or 1 (it waits in the send queue), UCS_ERR_NO_RESOURCE, or the
 * ep's failure status. Ops queue while the ep pairs, behind other queued
 * ops, and behind a fence that waits for a swap (a loop of compare-swaps
 * the device cannot fence).
 */
static UCS_F_ALWAYS_INLINE ucs_status_t uct_orc_ep_admit(uct_orc_ep_t *ep,
                                                         uct_orc_iface_t *iface,
                                                         uint8_t type,
                                                         int *queued_p)
{
    int fence_waits = (ep->swaps > 0) && (ep->fence_beat != iface->fence_beat);

    if (ucs_unlikely(ep->state == UCT_ORC_EP_FAILED)) {
        return ep->status;
    }
    if (ucs_unlikely(!ucs_queue_is_empty(&ep->pending_q) && !ep->in_dispatch)) {
        return UCS_ERR_NO_RESOURCE; /* it would overtake them */
    }
    if (ucs_likely((ep->state == UCT_ORC_EP_CONNECTED) &&
                   ucs_queue_is_empty(&ep->sendq) && !fence_waits)) {
        *queued_p = 0;
        return uct_orc_ep_can_post(ep, iface, type) ? UCS_OK
                                                    : UCS_ERR_NO_RESOURCE;
    }
    if (ep->sendq_len >= UCT_ORC_EP_SENDQ_MAX) {
        return UCS_ERR_NO_RESOURCE;
    }
    *queued_p = 1;
    return UCS_OK;
}

static UCS_F_ALWAYS_INLINE uct_orc_op_t *
uct_orc_ep_get_op(uct_orc_iface_t *iface, ucs_mpool_t *mp, uint8_t type,
                  uct_completion_t *comp)
{
    uct_orc_op_t *op = ucs_mpool_get_inline(mp);

    if (ucs_unlikely(op == NULL)) {
        return NULL;
    }
    op->type   = type;
    op->done   = 0;
    op->queued = 0;
    op->fence  = 0;
    op->signal = 0;
    op->status = UCS_OK;
    op->sn     = 0;
    op->comp   = comp;
    op->ep     = NULL;
    return op;
}

/*
 * The ep's next WR (its number tx_pi + 1, in *wr_id_p): returns whether it
 * is signaled: when asked, or when tx_moderation - 1 WRs went unsignaled
 * before it, or when the send CQ runs low: only a signaled WR's completion
 * (or a failure's) returns the send queue and CQ entries of the WRs before
 * it. The WR is posted with *wr_id_p, IBV_SEND_SIGNALED if signaled.
 */
static UCS_F_ALWAYS_INLINE int uct_orc_ep_wr_next(uct_orc_ep_t *ep,
                                                  uct_orc_iface_t *iface,
                                                  int signal, uint64_t *wr_id_p)
{
    *wr_id_p = uct_orc_wr_id(ep->conn_id, (uint16_t)(ep->tx_pi + 1));
    return signal || (ep->unsignaled + 1 >= iface->config.tx_moderation) ||
           (iface->tx_cq_avail <= iface->config.tx_moderation);
}

/* wr as the ep's next WR (uct_orc_ep_wr_next); returns whether it is
 * signaled */
static UCS_F_ALWAYS_INLINE int uct_orc_ep_wr_prepare(uct_orc_ep_t *ep,
                                                     uct_orc_iface_t *iface,
                                                     struct ibv_send_wr *wr,
                                                     int signal)
{
    signal   = uct_orc_ep_wr_next(ep, iface, signal, &wr->wr_id);
    wr->next = NULL;
    if (signal) {
        wr->send_flags |= IBV_SEND_SIGNALED;
    }
    return signal;
}

static UCS_F_ALWAYS_INLINE ucs_status_t uct_orc_ep_post_failed(uct_orc_ep_t *ep,
                                                               int opcode,
                                                               int ret)
{
    ucs_error("orc: qp 0x%x: failed to post opcode %d: %s", ep->qp->qp_num,
              opcode, strerror(ret));
    return UCS_ERR_IO_ERROR;
}

/* The WR uct_orc_ep_wr_next() numbered is posted: it takes a send queue
 * and a CQ entry until a signaled completion returns them; op, if not
 * NULL, is what its completion needs */
static UCS_F_ALWAYS_INLINE void uct_orc_ep_wr_posted(uct_orc_ep_t *ep,
                                                     uct_orc_iface_t *iface,
                                                     uct_orc_op_t *op,
                                                     int signal)
{
    uint16_t sn = ep->tx_pi + 1;

    ep->tx_pi = sn;
    if (signal) {
        ep->unsignaled = 0;
        ep->tx_sig_sn  = sn;
        if (!ep->tx_sig_busy) {
            ep->tx_sig_busy = 1;
            ++iface->tx_signaled;
        }
    } else {
        ++ep->unsignaled;
    }
    --ep->sq_avail;
    --iface->tx_cq_avail;
    if (op != NULL) {
        ep->tx_ops[sn & ep->tx_ops_mask] = op;
    }
}

/* Post wr as the ep's next WR (uct_orc_ep_wr_next); op, if not NULL, is
 * what its completion needs */
static UCS_F_ALWAYS_INLINE ucs_status_t
uct_orc_ep_post_wr(uct_orc_ep_t *ep, uct_orc_iface_t *iface, uct_orc_op_t *op,
                   struct ibv_send_wr *wr, int signal)
{
    struct ibv_send_wr *bad_wr;
    int ret;

    signal = uct_orc_ep_wr_prepare(ep, iface, wr, signal);
    ret    = orc_post_send(ep->qp, wr, &bad_wr);
    if (ucs_unlikely(ret != 0)) {
        return uct_orc_ep_post_failed(ep, wr->opcode, ret);
    }
    uct_orc_ep_wr_posted(ep, iface, op, signal);
    return UCS_OK;
}

/* Whether op's WR must be signaled: its completion has work to do (a
 * callback, a result, another attempt), or a flush marker waits for it */
static UCS_F_ALWAYS_INLINE int uct_orc_op_needs_signal(const uct_orc_op_t *op)
{
    return (op->comp != NULL) || op->signal ||
           ((op->type != UCT_ORC_OP_PUT) && (op->type != UCT_ORC_OP_AM) &&
            (op->type != UCT_ORC_OP_ATOMIC_POST));
}

/* Post a WR for op; on success op joins the ep's tx queue (unless enqueue
 * is 0: a retried swap keeps its place) */
static UCS_F_ALWAYS_INLINE ucs_status_t uct_orc_ep_post(uct_orc_ep_t *ep,
                                                        uct_orc_iface_t *iface,
                                                        uct_orc_op_t *op,
                                                        struct ibv_send_wr *wr,
                                                        int enqueue)
{
    ucs_status_t status;

    if (op->fence) {
        wr->send_flags |= IBV_SEND_FENCE;
    }
    if (op->type == UCT_ORC_OP_AM) {
        /* the receiver wakes for messages, not for credit grants */
        wr->send_flags |= IBV_SEND_SOLICITED;
    }

    status = uct_orc_ep_post_wr(ep, iface, op, wr, uct_orc_op_needs_signal(op));
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }

    op->sn = ep->tx_pi;
    op->ep = ep;
    if (enqueue) {
        ucs_queue_push(&ep->txq, &op->queue);
        if (op->type == UCT_ORC_OP_AM) {
            --ep->credits;
        } else if (op->type == UCT_ORC_OP_SWAP) {
            ++ep->swaps;
        }
    }
    return UCS_OK;
}

/* An op of the given type taken from mp for an operation the ep admitted
 * (queued: it waits in the send queue) */
static UCS_F_ALWAYS_INLINE ucs_status_t uct_orc_ep_op_take(
    uct_orc_ep_t *ep, uct_orc_iface_t *iface, ucs_mpool_t *mp, uint8_t type,
    uct_completion_t *comp, int queued, uct_orc_op_t **op_p)
{
    *op_p = uct_orc_ep_get_op(iface, mp, type, comp);
    if (ucs_unlikely(*op_p == NULL)) {
        return UCS_ERR_NO_RESOURCE;
    }
    (*op_p)->queued = queued;
    (*op_p)->fence  = uct_orc_ep_take_fence(ep, iface);
    return UCS_OK;
}

/* An op of the given type taken from mp, if the ep accepts it now */
static UCS_F_ALWAYS_INLINE ucs_status_t
uct_orc_ep_op_start(uct_orc_ep_t *ep, uct_orc_iface_t *iface, ucs_mpool_t *mp,
                    uint8_t type, uct_completion_t *comp, uct_orc_op_t **op_p)
{
    ucs_status_t status;
    int queued = 0;

    status = uct_orc_ep_admit(ep, iface, type, &queued);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }
    return uct_orc_ep_op_take(ep, iface, mp, type, comp, queued, op_p);
}

/*
 * A short operation posted now as the ep's next WR, its data inline
 * (orc_post_send_inline()): no op, nothing to do at completion (the WR
 * carries the data, the caller may reuse its buffers at once). wr holds
 * the opcode, its flags, remote part and data; its wr_id is set here.
 */
static UCS_F_ALWAYS_INLINE ucs_status_t uct_orc_ep_post_inline(
    uct_orc_ep_t *ep, uct_orc_iface_t *iface, softnic_inline_wr_t *wr)
{
    int signal = uct_orc_ep_wr_next(ep, iface, 0, &wr->wr_id);
    int ret;

    if (signal) {
        wr->send_flags |= IBV_SEND_SIGNALED;
    }
    if (uct_orc_ep_take_fence(ep, iface)) {
        wr->send_flags |= IBV_SEND_FENCE;
    }
    ret = orc_post_send_inline(ep->qp, wr);
    if (ucs_unlikely(ret != 0)) {
        return uct_orc_ep_post_failed(ep, wr->opcode, ret);
    }
    uct_orc_ep_wr_posted(ep, iface, NULL, signal);
    return UCS_OK;
}

/* A signaled empty WRITE with nothing to do at completion: posted behind
 * unsignaled WRs, its completion tells when they are done */
static ucs_status_t uct_orc_ep_post_nop(uct_orc_ep_t *ep,
                                        uct_orc_iface_t *iface)
{
    struct ibv_send_wr wr;
    struct ibv_sge sge;

    if (!uct_orc_ep_can_post(ep, iface, UCT_ORC_OP_PUT)) {
        return UCS_ERR_NO_RESOURCE;
    }
    memset(&sge, 0, sizeof(sge));
    wr.sg_list             = &sge;
    wr.num_sge             = 0;
    wr.opcode              = IBV_WR_RDMA_WRITE;
    wr.send_flags          = 0;
    wr.wr.rdma.remote_addr = 0;
    wr.wr.rdma.rkey        = 0;
    return uct_orc_ep_post_wr(ep, iface, NULL, &wr, 1);
}

/* One sge over the first length bytes of op's registered buffer; returns
 * the sge count a WR needs for it (0 for an empty transfer) */
static UCS_F_ALWAYS_INLINE int
uct_orc_ep_op_sge(uct_orc_op_t *op, size_t length, struct ibv_sge *sge)
{
    sge->addr   = (uintptr_t)op->data;
    sge->length = length;
    sge->lkey   = op->lkey;
    return (length > 0) ? 1 : 0;
}

/* Keep a WR (and its sges) in op, to post it later */
static void uct_orc_ep_save_wr(uct_orc_op_t *op, const struct ibv_send_wr *wr)
{
    int i;

    op->wr = *wr;
    for (i = 0; i < wr->num_sge; ++i) {
        op->sge[i] = wr->sg_list[i];
    }
    op->wr.sg_list = op->sge;
}

/* A new op: post its WR at the tail of the tx queue, or keep it at the tail
 * of the send queue; on failure the op goes back to its pool */
static UCS_F_ALWAYS_INLINE ucs_status_t
uct_orc_ep_post_new(uct_orc_ep_t *ep, uct_orc_iface_t *iface, uct_orc_op_t *op,
                    struct ibv_send_wr *wr)
{
    ucs_status_t status;

    if (ucs_unlikely(op->queued)) {
        uct_orc_ep_save_wr(op, wr);
        op->ep = ep;
        ucs_queue_push(&ep->sendq, &op->queue);
        ++ep->sendq_len;
        return UCS_OK;
    }

    status = uct_orc_ep_post(ep, iface, op, wr, 1);
    if (ucs_unlikely(status != UCS_OK)) {
        ucs_mpool_put_inline(op);
    }
    return status;
}

/* RDMA WRITE or READ between sge and the remote address */
static UCS_F_ALWAYS_INLINE ucs_status_t
uct_orc_ep_post_rdma(uct_orc_ep_t *ep, uct_orc_iface_t *iface, uct_orc_op_t *op,
                     enum ibv_wr_opcode opcode, struct ibv_sge *sge,
                     int num_sge, uint64_t remote_addr, uct_rkey_t rkey)
{
    struct ibv_send_wr wr;

    wr.sg_list             = sge;
    wr.num_sge             = num_sge;
    wr.opcode              = opcode;
    wr.send_flags          = 0;
    wr.wr.rdma.remote_addr = remote_addr;
    wr.wr.rdma.rkey        = (uint32_t)rkey;
    return uct_orc_ep_post_new(ep, iface, op, &wr);
}

/* The atomic described by op->atomic, its result landing in op->data */
static UCS_F_ALWAYS_INLINE ucs_status_t
uct_orc_ep_post_atomic(uct_orc_ep_t *ep, uct_orc_iface_t *iface,
                       uct_orc_op_t *op, enum ibv_wr_opcode opcode, int is_new)
{
    struct ibv_send_wr wr;
    struct ibv_sge sge;

    wr.num_sge               = uct_orc_ep_op_sge(op, sizeof(uint64_t), &sge);
    wr.sg_list               = &sge;
    wr.send_flags            = 0;
    wr.opcode                = opcode;
    wr.wr.atomic.remote_addr = op->atomic.remote_addr;
    wr.wr.atomic.rkey        = op->atomic.rkey;
    wr.wr.atomic.compare_add = op->atomic.compare;
    wr.wr.atomic.swap        = op->atomic.swap;
    return is_new ? uct_orc_ep_post_new(ep, iface, op, &wr)
                  : uct_orc_ep_post(ep, iface, op, &wr, 0);
}

static size_t uct_orc_ep_iov_to_sge(const uct_iov_t *iov, size_t iovcnt,
                                    struct ibv_sge *sge, int *num_sge_p)
{
    size_t total = 0, i, length;
    int num_sge  = *num_sge_p;

    for (i = 0; i < iovcnt; ++i) {
        length = uct_iov_get_length(&iov[i]);
        if (length == 0) {
            continue;
        }
        sge[num_sge].addr   = (uintptr_t)iov[i].buffer;
        sge[num_sge].length = length;
        sge[num_sge].lkey   = (iov[i].memh == UCT_MEM_HANDLE_NULL)
                                  ? 0
                                  : ((uct_orc_memh_t *)iov[i].memh)->mr->lkey;
        ++num_sge;
        total += length;
    }

    *num_sge_p = num_sge;
    return total;
}

/* The bytes of iov, one after the other, at dest */
static void uct_orc_ep_iov_copy(char *dest, const uct_iov_t *iov, size_t iovcnt)
{
    size_t i, len;

    for (i = 0; i < iovcnt; ++i) {
        len = uct_iov_get_length(&iov[i]);
        memcpy(dest, iov[i].buffer, len);
        dest += len;
    }
}

/* ------------------------------------------------------------------- put */

ucs_status_t uct_orc_ep_put_short(uct_ep_h tl_ep, const void *buffer,
                                  unsigned length, uint64_t remote_addr,
                                  uct_rkey_t rkey)
{
    uct_orc_ep_t *ep       = ucs_derived_of(tl_ep, uct_orc_ep_t);
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);
    softnic_inline_wr_t iwr;
    struct ibv_sge sge;
    ucs_status_t status;
    uct_orc_op_t *op;
    int queued = 0;

    UCT_CHECK_LENGTH(length, 0, iface->config.max_inline, "put_short");
    status = uct_orc_ep_admit(ep, iface, UCT_ORC_OP_PUT, &queued);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }

    if (ucs_likely(!queued && (length <= iface->config.max_inline_wr))) {
        iwr.opcode      = IBV_WR_RDMA_WRITE;
        iwr.send_flags  = 0;
        iwr.remote_addr = remote_addr;
        iwr.rkey        = (uint32_t)rkey;
        iwr.hdr_len     = 0;
        iwr.len         = length;
        iwr.hdr         = NULL;
        iwr.data        = buffer;
        status          = uct_orc_ep_post_inline(ep, iface, &iwr);
        if (ucs_likely(status == UCS_OK)) {
            UCT_TL_EP_STAT_OP(&ep->super, PUT, SHORT, length);
        }
        return status;
    }

    status = uct_orc_ep_op_take(ep, iface, &iface->tx_mp, UCT_ORC_OP_PUT, NULL,
                                queued, &op);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }

    memcpy(op->data, buffer, length);
    status = uct_orc_ep_post_rdma(ep, iface, op, IBV_WR_RDMA_WRITE, &sge,
                                  uct_orc_ep_op_sge(op, length, &sge),
                                  remote_addr, rkey);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }
    UCT_TL_EP_STAT_OP(&ep->super, PUT, SHORT, length);
    return UCS_OK;
}

ssize_t uct_orc_ep_put_bcopy(uct_ep_h tl_ep, uct_pack_callback_t pack_cb,
                             void *arg, uint64_t remote_addr, uct_rkey_t rkey)
{
    uct_orc_ep_t *ep       = ucs_derived_of(tl_ep, uct_orc_ep_t);
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);
    struct ibv_sge sge;
    ucs_status_t status;
    uct_orc_op_t *op;
    size_t length;

    status = uct_orc_ep_op_start(ep, iface, &iface->tx_mp, UCT_ORC_OP_PUT, NULL,
                                 &op);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }

    length = pack_cb(op->data, arg);
    ucs_assertv(length <= iface->config.seg_size, "length=%zu", length);
    status = uct_orc_ep_post_rdma(ep, iface, op, IBV_WR_RDMA_WRITE, &sge,
                                  uct_orc_ep_op_sge(op, length, &sge),
                                  remote_addr, rkey);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }
    UCT_TL_EP_STAT_OP(&ep->super, PUT, BCOPY, length);
    return length;
}

/*
 * A zero-copy WRITE or READ with a completion callback, posted while
 * nothing of the ep is outstanding: the device may finish it within the
 * post (softnic on one host: one CMA copy). Then it took no send queue or
 * CQ entry, op goes back to its pool and the operation returns UCS_OK
 * (comp is not called: the caller has its completion). Otherwise it is an
 * op of the tx queue as any other (UCS_INPROGRESS).
 */
static UCS_F_ALWAYS_INLINE ucs_status_t uct_orc_ep_post_rdma_now(
    uct_orc_ep_t *ep, uct_orc_iface_t *iface, uct_orc_op_t *op,
    enum ibv_wr_opcode opcode, struct ibv_sge *sge, int num_sge,
    uint64_t remote_addr, uct_rkey_t rkey)
{
    struct ibv_send_wr wr, *bad_wr;
    int done, signal, ret;

    wr.sg_list             = sge;
    wr.num_sge             = num_sge;
    wr.opcode              = opcode;
    wr.send_flags          = op->fence ? IBV_SEND_FENCE : 0;
    wr.wr.rdma.remote_addr = remote_addr;
    wr.wr.rdma.rkey        = (uint32_t)rkey;
    signal                 = uct_orc_ep_wr_prepare(ep, iface, &wr, 1);
    ret                    = orc_post_send_now(ep->qp, &wr, &bad_wr, &done);
    if (ucs_unlikely(ret != 0)) {
        ucs_mpool_put_inline(op);
        return uct_orc_ep_post_failed(ep, wr.opcode, ret);
    }
    if (done) {
        ucs_mpool_put_inline(op);
        return UCS_OK;
    }
    uct_orc_ep_wr_posted(ep, iface, op, signal);
    op->sn = ep->tx_pi;
    op->ep = ep;
    ucs_queue_push(&ep->txq, &op->queue);
    return UCS_INPROGRESS;
}

static ucs_status_t uct_orc_ep_rdma_zcopy(uct_orc_ep_t *ep, int is_read,
                                          const uct_iov_t *iov, size_t iovcnt,
                                          uint64_t remote_addr, uct_rkey_t rkey,
                                          uct_completion_t *comp)
{
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);
    struct ibv_sge sge[UCT_ORC_MAX_SGE];
    ucs_status_t status;
    uct_orc_op_t *op;
    int num_sge = 0;

    UCT_CHECK_IOV_SIZE(iovcnt, iface->config.max_iov,
                       is_read ? "orc_ep_get_zcopy" : "orc_ep_put_zcopy");
    status =
        uct_orc_ep_op_start(ep, iface, &iface->op_mp,
                            is_read ? UCT_ORC_OP_GET_ZCOPY : UCT_ORC_OP_PUT,
                            comp, &op);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }

    uct_orc_ep_iov_to_sge(iov, iovcnt, sge, &num_sge);
    if ((comp != NULL) && !op->queued && ucs_queue_is_empty(&ep->txq)) {
        return uct_orc_ep_post_rdma_now(ep, iface, op,
                                        is_read ? IBV_WR_RDMA_READ
                                                : IBV_WR_RDMA_WRITE,
                                        sge, num_sge, remote_addr, rkey);
    }
    status =
        uct_orc_ep_post_rdma(ep, iface, op,
                             is_read ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE,
                             sge, num_sge, remote_addr, rkey);
    return (status == UCS_OK) ? UCS_INPROGRESS : status;
}

ucs_status_t uct_orc_ep_put_zcopy(uct_ep_h tl_ep, const uct_iov_t *iov,
                                  size_t iovcnt, uint64_t remote_addr,
                                  uct_rkey_t rkey, uct_completion_t *comp)
{
    uct_orc_ep_t *ep = ucs_derived_of(tl_ep, uct_orc_ep_t);
    ucs_status_t status;

    status = uct_orc_ep_rdma_zcopy(ep, 0, iov, iovcnt, remote_addr, rkey, comp);
    UCT_TL_EP_STAT_OP_IF_SUCCESS(status, &ep->super, PUT, ZCOPY,
                                 uct_iov_total_length(iov, iovcnt));
    return status;
}

/* ------------------------------------------------------------------- get */

ucs_status_t uct_orc_ep_get_bcopy(uct_ep_h tl_ep,
                                  uct_unpack_callback_t unpack_cb, void *arg,
                                  size_t length, uint64_t remote_addr,
                                  uct_rkey_t rkey, uct_completion_t *comp)
{
    uct_orc_ep_t *ep       = ucs_derived_of(tl_ep, uct_orc_ep_t);
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);
    struct ibv_sge sge;
    ucs_status_t status;
    uct_orc_op_t *op;

    UCT_CHECK_LENGTH(length, 0, iface->config.seg_size, "get_bcopy");
    status = uct_orc_ep_op_start(ep, iface, &iface->tx_mp, UCT_ORC_OP_GET_BCOPY,
                                 comp, &op);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }

    op->get.cb     = unpack_cb;
    op->get.arg    = arg;
    op->get.length = length;
    status         = uct_orc_ep_post_rdma(ep, iface, op, IBV_WR_RDMA_READ, &sge,
                                          uct_orc_ep_op_sge(op, length, &sge),
                                          remote_addr, rkey);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }
    UCT_TL_EP_STAT_OP(&ep->super, GET, BCOPY, length);
    return UCS_INPROGRESS;
}

ucs_status_t uct_orc_ep_get_zcopy(uct_ep_h tl_ep, const uct_iov_t *iov,
                                  size_t iovcnt, uint64_t remote_addr,
                                  uct_rkey_t rkey, uct_completion_t *comp)
{
    uct_orc_ep_t *ep = ucs_derived_of(tl_ep, uct_orc_ep_t);
    ucs_status_t status;

    status = uct_orc_ep_rdma_zcopy(ep, 1, iov, iovcnt, remote_addr, rkey, comp);
    UCT_TL_EP_STAT_OP_IF_SUCCESS(status, &ep->super, GET, ZCOPY,
                                 uct_iov_total_length(iov, iovcnt));
    return status;
}

/* -------------------------------------------------------------------- am */

/* The op of an AM (queued: admitted to the send queue; -1: not admitted
 * yet) with its wire header */
static UCS_F_ALWAYS_INLINE ucs_status_t uct_orc_ep_am_prepare(
    uct_orc_ep_t *ep, uct_orc_iface_t *iface, uint8_t id, ucs_mpool_t *mp,
    uct_completion_t *comp, int queued, uct_orc_op_t **op_p)
{
    ucs_status_t status;
    uct_orc_hdr_t *hdr;
    uct_orc_op_t *op;

    status = (queued < 0)
                 ? uct_orc_ep_op_start(ep, iface, mp, UCT_ORC_OP_AM, comp, &op)
                 : uct_orc_ep_op_take(ep, iface, mp, UCT_ORC_OP_AM, comp,
                                      queued, &op);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }

    hdr           = (uct_orc_hdr_t *)op->data;
    hdr->am_id    = id;
    hdr->flags    = 0;
    hdr->credits  = 0;
    hdr->reserved = 0;
    *op_p         = op;
    return UCS_OK;
}

static UCS_F_ALWAYS_INLINE ucs_status_t
uct_orc_ep_am_post(uct_orc_ep_t *ep, uct_orc_iface_t *iface, uct_orc_op_t *op,
                   struct ibv_sge *sge, int num_sge)
{
    struct ibv_send_wr wr;

    wr.sg_list    = sge;
    wr.num_sge    = num_sge;
    wr.opcode     = IBV_WR_SEND;
    wr.send_flags = 0;

    return uct_orc_ep_post_new(ep, iface, op, &wr);
}

/* A SEND posted now, inline: hdr_len bytes at hdr (their first
 * sizeof(uct_orc_hdr_t) are the wire header's place), then length bytes at
 * data */
static UCS_F_ALWAYS_INLINE ucs_status_t uct_orc_ep_am_post_inline(
    uct_orc_ep_t *ep, uct_orc_iface_t *iface, uint8_t id, void *hdr,
    size_t hdr_len, const void *data, size_t length)
{
    uct_orc_hdr_t *orc_hdr = (uct_orc_hdr_t *)hdr;
    softnic_inline_wr_t wr;
    ucs_status_t status;

    orc_hdr->am_id    = id;
    orc_hdr->flags    = 0;
    orc_hdr->credits  = 0;
    orc_hdr->reserved = 0;
    wr.opcode         = IBV_WR_SEND;
    /* the receiver wakes for messages, not for credit grants */
    wr.send_flags  = IBV_SEND_SOLICITED;
    wr.remote_addr = 0;
    wr.rkey        = 0;
    wr.hdr_len     = hdr_len;
    wr.len         = length;
    wr.hdr         = hdr;
    wr.data        = data;
    status         = uct_orc_ep_post_inline(ep, iface, &wr);
    if (ucs_likely(status == UCS_OK)) {
        --ep->credits;
    }
    return status;
}

ucs_status_t uct_orc_ep_am_short(uct_ep_h tl_ep, uint8_t id, uint64_t header,
                                 const void *payload, unsigned length)
{
    uct_orc_ep_t *ep       = ucs_derived_of(tl_ep, uct_orc_ep_t);
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);
    char hdr[sizeof(uct_orc_hdr_t) + sizeof(header)];
    struct ibv_sge sge;
    ucs_status_t status;
    uct_orc_op_t *op;
    int queued = 0;
    size_t total;

    UCT_CHECK_AM_ID(id);
    UCT_CHECK_LENGTH(sizeof(header) + length, 0,
                     ucs_min(iface->config.max_inline,
                             iface->config.seg_size - sizeof(uct_orc_hdr_t)),
                     "am_short");
    status = uct_orc_ep_admit(ep, iface, UCT_ORC_OP_AM, &queued);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }

    total = sizeof(uct_orc_hdr_t) + sizeof(header) + length;
    if (ucs_likely(!queued && (total <= iface->config.max_inline_wr))) {
        memcpy(hdr + sizeof(uct_orc_hdr_t), &header, sizeof(header));
        status = uct_orc_ep_am_post_inline(ep, iface, id, hdr, sizeof(hdr),
                                           payload, length);
        if (ucs_likely(status == UCS_OK)) {
            UCT_TL_EP_STAT_OP(&ep->super, AM, SHORT, sizeof(header) + length);
        }
        return status;
    }

    status =
        uct_orc_ep_am_prepare(ep, iface, id, &iface->tx_mp, NULL, queued, &op);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }

    /* not uct_am_short_fill_data(): payload may be NULL when length is 0 */
    memcpy(op->data + sizeof(uct_orc_hdr_t), &header, sizeof(header));
    if (length > 0) {
        memcpy(op->data + sizeof(uct_orc_hdr_t) + sizeof(header), payload,
               length);
    }
    status = uct_orc_ep_am_post(ep, iface, op, &sge,
                                uct_orc_ep_op_sge(op,
                                                  sizeof(uct_orc_hdr_t) +
                                                      sizeof(header) + length,
                                                  &sge));
    if (ucs_likely(status == UCS_OK)) {
        UCT_TL_EP_STAT_OP(&ep->super, AM, SHORT, sizeof(header) + length);
    }
    return status;
}

ucs_status_t uct_orc_ep_am_short_iov(uct_ep_h tl_ep, uint8_t id,
                                     const uct_iov_t *iov, size_t iovcnt)
{
    uct_orc_ep_t *ep       = ucs_derived_of(tl_ep, uct_orc_ep_t);
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);
    size_t length          = uct_iov_total_length(iov, iovcnt);
    char msg[UCT_ORC_MAX_INLINE_WR];
    struct ibv_sge sge;
    ucs_status_t status;
    uct_orc_op_t *op;
    int queued = 0;

    UCT_CHECK_AM_ID(id);
    UCT_CHECK_LENGTH(length, 0,
                     ucs_min(iface->config.max_inline,
                             iface->config.seg_size - sizeof(uct_orc_hdr_t)),
                     "am_short_iov");
    status = uct_orc_ep_admit(ep, iface, UCT_ORC_OP_AM, &queued);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }

    if (ucs_likely(!queued && (sizeof(uct_orc_hdr_t) + length <=
                               iface->config.max_inline_wr))) {
        uct_orc_ep_iov_copy(msg + sizeof(uct_orc_hdr_t), iov, iovcnt);
        status =
            uct_orc_ep_am_post_inline(ep, iface, id, msg,
                                      sizeof(uct_orc_hdr_t) + length, NULL, 0);
        if (ucs_likely(status == UCS_OK)) {
            UCT_TL_EP_STAT_OP(&ep->super, AM, SHORT, length);
        }
        return status;
    }

    status =
        uct_orc_ep_am_prepare(ep, iface, id, &iface->tx_mp, NULL, queued, &op);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }

    uct_orc_ep_iov_copy(op->data + sizeof(uct_orc_hdr_t), iov, iovcnt);
    status =
        uct_orc_ep_am_post(ep, iface, op, &sge,
                           uct_orc_ep_op_sge(op, sizeof(uct_orc_hdr_t) + length,
                                             &sge));
    if (ucs_likely(status == UCS_OK)) {
        UCT_TL_EP_STAT_OP(&ep->super, AM, SHORT, length);
    }
    return status;
}

ssize_t uct_orc_ep_am_bcopy(uct_ep_h tl_ep, uint8_t id,
                            uct_pack_callback_t pack_cb, void *arg,
                            unsigned flags)
{
    uct_orc_ep_t *ep       = ucs_derived_of(tl_ep, uct_orc_ep_t);
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);
    struct ibv_sge sge;
    ucs_status_t status;
    uct_orc_op_t *op;
    size_t length;

    UCT_CHECK_AM_ID(id);
    status = uct_orc_ep_am_prepare(ep, iface, id, &iface->tx_mp, NULL, -1, &op);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }

    length = pack_cb(op->data + sizeof(uct_orc_hdr_t), arg);
    ucs_assertv(length <= iface->config.seg_size - sizeof(uct_orc_hdr_t),
                "length=%zu", length);
    status =
        uct_orc_ep_am_post(ep, iface, op, &sge,
                           uct_orc_ep_op_sge(op, sizeof(uct_orc_hdr_t) + length,
                                             &sge));
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }
    UCT_TL_EP_STAT_OP(&ep->super, AM, BCOPY, length);
    return length;
}

ucs_status_t uct_orc_ep_am_zcopy(uct_ep_h tl_ep, uint8_t id, const void *header,
                                 unsigned header_length, const uct_iov_t *iov,
                                 size_t iovcnt, unsigned flags,
                                 uct_completion_t *comp)
{
    uct_orc_ep_t *ep       = ucs_derived_of(tl_ep, uct_orc_ep_t);
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);
    struct ibv_sge sge[UCT_ORC_MAX_SGE];
    ucs_status_t status;
    uct_orc_op_t *op;
    int num_sge;

    UCT_CHECK_AM_ID(id);
    UCT_CHECK_IOV_SIZE(iovcnt, iface->config.max_iov - 1, "orc_ep_am_zcopy");
    UCT_CHECK_LENGTH(header_length, 0,
                     ucs_min(128,
                             iface->config.seg_size - sizeof(uct_orc_hdr_t)),
                     "am_zcopy header");
    UCT_CHECK_LENGTH(header_length + uct_iov_total_length(iov, iovcnt), 0,
                     iface->config.seg_size - sizeof(uct_orc_hdr_t),
                     "am_zcopy");
    status = uct_orc_ep_am_prepare(ep, iface, id, &iface->tx_mp, comp, -1, &op);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }

    memcpy(op->data + sizeof(uct_orc_hdr_t), header, header_length);
    num_sge =
        uct_orc_ep_op_sge(op, sizeof(uct_orc_hdr_t) + header_length, &sge[0]);
    uct_orc_ep_iov_to_sge(iov, iovcnt, sge, &num_sge);

    status = uct_orc_ep_am_post(ep, iface, op, sge, num_sge);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }
    UCT_TL_EP_STAT_OP(&ep->super, AM, ZCOPY,
                      header_length + uct_iov_total_length(iov, iovcnt));
    return UCS_INPROGRESS;
}

/* --------------------------------------------------------------- atomics */

/* Re-post the compare-swap of a swap that lost a race (keeps its place in
 * the tx queue) */
static ucs_status_t uct_orc_ep_swap_retry(uct_orc_ep_t *ep,
                                          uct_orc_iface_t *iface,
                                          uct_orc_op_t *op)
{
    return uct_orc_ep_post_atomic(ep, iface, op, IBV_WR_ATOMIC_CMP_AND_SWP, 0);
}

static ucs_status_t uct_orc_ep_atomic(uct_orc_ep_t *ep, uint8_t type,
                                      int is_cswap, uint64_t compare_add,
                                      uint64_t swap, uint64_t remote_addr,
                                      uct_rkey_t rkey, uint64_t *result,
                                      uct_completion_t *comp)
{
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);
    ucs_status_t status;
    uct_orc_op_t *op;

    if (ucs_unlikely(remote_addr % sizeof(uint64_t))) {
        ucs_error("orc: 64-bit atomic at unaligned remote address 0x%" PRIx64,
                  remote_addr);
        return UCS_ERR_INVALID_PARAM;
    }
    status = uct_orc_ep_op_start(ep, iface, &iface->tx_mp, type, comp, &op);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }

    op->atomic.result      = result;
    op->atomic.compare     = compare_add;
    op->atomic.swap        = swap;
    op->atomic.remote_addr = remote_addr;
    op->atomic.rkey        = (uint32_t)rkey;
    op->atomic.retries     = 0;

    status = uct_orc_ep_post_atomic(ep, iface, op,
                                    is_cswap ? IBV_WR_ATOMIC_CMP_AND_SWP
                                             : IBV_WR_ATOMIC_FETCH_AND_ADD,
                                    1);
    if (ucs_unlikely(status != UCS_OK)) {
        return status;
    }
    UCT_TL_EP_STAT_ATOMIC(&ep->super);
    return UCS_OK;
}

ucs_status_t uct_orc_ep_atomic64_post(uct_ep_h tl_ep, unsigned opcode,
                                      uint64_t value, uint64_t remote_addr,
                                      uct_rkey_t rkey)
{
    uct_orc_ep_t *ep = ucs_derived_of(tl_ep, uct_orc_ep_t);

    if (opcode != UCT_ATOMIC_OP_ADD) {
        return UCS_ERR_UNSUPPORTED;
    }
    return uct_orc_ep_atomic(ep, UCT_ORC_OP_ATOMIC_POST, 0, value, 0,
                             remote_addr, rkey, NULL, NULL);
}

ucs_status_t uct_orc_ep_atomic64_fetch(uct_ep_h tl_ep, unsigned opcode,
                                       uint64_t value, uint64_t *result,
                                       uint64_t remote_addr, uct_rkey_t rkey,
                                       uct_completion_t *comp)
{
    uct_orc_ep_t *ep = ucs_derived_of(tl_ep, uct_orc_ep_t);
    ucs_status_t status;

    switch (opcode) {
    case UCT_ATOMIC_OP_ADD:
        status = uct_orc_ep_atomic(ep, UCT_ORC_OP_ATOMIC_FETCH, 0, value, 0,
                                   remote_addr, rkey, result, comp);
        break;
    case UCT_ATOMIC_OP_SWAP:
        /* First guess 0; each failed attempt retries with the value seen */
        status = uct_orc_ep_atomic(ep, UCT_ORC_OP_SWAP, 1, 0, value,
                                   remote_addr, rkey, result, comp);
        break;
    default:
        return UCS_ERR_UNSUPPORTED;
    }
    return (status == UCS_OK) ? UCS_INPROGRESS : status;
}

ucs_status_t uct_orc_ep_atomic_cswap64(uct_ep_h tl_ep, uint64_t compare,
                                       uint64_t swap, uint64_t remote_addr,
                                       uct_rkey_t rkey, uint64_t *result,
                                       uct_completion_t *comp)
{
    uct_orc_ep_t *ep = ucs_derived_of(tl_ep, uct_orc_ep_t);
    ucs_status_t status;

    status = uct_orc_ep_atomic(ep, UCT_ORC_OP_ATOMIC_FETCH, 1, compare, swap,
                               remote_addr, rkey, result, comp);
    return (status == UCS_OK) ? UCS_INPROGRESS : status;
}

/* ------------------------------------------------------------ completion */

/* Whether WR number sn of the ep completed (WRs complete in order) */
static UCS_F_ALWAYS_INLINE int uct_orc_ep_sn_done(const uct_orc_ep_t *ep,
                                                  uint16_t sn)
{
    return (int16_t)(ep->tx_ci - sn) >= 0;
}

/*
 * Pop from the head of the tx queue the done ops and the flush markers whose
 * WRs all completed. Those with a callback move to *done: callbacks run only
 * after the ep is no longer touched, because a callback may destroy it.
 */
static void uct_orc_ep_txq_advance(uct_orc_ep_t *ep, ucs_queue_head_t *done)
{
    uct_orc_op_t *op;

    while (!ucs_queue_is_empty(&ep->txq)) {
        op = ucs_queue_head_elem_non_empty(&ep->txq, uct_orc_op_t, queue);
        if (op->type == UCT_ORC_OP_FLUSH) {
            if (!uct_orc_ep_sn_done(ep, op->sn)) {
                break;
            }
            op->status = (ep->state == UCT_ORC_EP_FAILED) ? ep->status : UCS_OK;
        } else if (!op->done) {
            break;
        }
        ucs_queue_pull_non_empty(&ep->txq);
        if (op->comp != NULL) {
            ucs_queue_push(done, &op->queue);
        } else {
            ucs_mpool_put(op);
        }
    }
}

/* Every op (and flush marker) of queue completes with status: to *done */
static void uct_orc_ep_queue_take(ucs_queue_head_t *queue, ucs_status_t status,
                                  ucs_queue_head_t *done)
{
    uct_orc_op_t *op;

    ucs_queue_for_each(op, queue, queue) {
        op->status = status;
    }
    ucs_queue_splice(done, queue);
}

/* Everything in the send queue moves to *done with status (the ep failed
 * or goes) */
static void uct_orc_ep_sendq_take(uct_orc_ep_t *ep, ucs_status_t status,
                                  ucs_queue_head_t *done)
{
    uct_orc_ep_queue_take(&ep->sendq, status, done);
    ep->sendq_len = 0;
}

/* Invoke the completions of the ops (and flush markers) in *done, each with
 * its status, and free them */
static void uct_orc_ep_complete(ucs_queue_head_t *done)
{
    uct_completion_t *comp;
    ucs_status_t status;
    uct_orc_op_t *op;

    ucs_queue_for_each_extract(op, done, queue, 1) {
        comp   = op->comp;
        status = (ucs_status_t)op->status;
        ucs_mpool_put(op);
        if (comp != NULL) {
            uct_invoke_completion(comp, status);
        }
    }
}

/* The result of a compare-swap of a swap: UCS_INPROGRESS when another
 * attempt was posted (the op keeps its place in the tx queue) */
static ucs_status_t uct_orc_ep_swap_attempted(uct_orc_ep_t *ep,
                                              uct_orc_iface_t *iface,
                                              uct_orc_op_t *op)
{
    uint64_t value;

    memcpy(&value, op->data, sizeof(value));
    if (value == op->atomic.compare) {
        /* this attempt exchanged: value is the old one */
        *op->atomic.result = value;
        return UCS_OK;
    }

    if (++op->atomic.retries >= UCT_ORC_SWAP_MAX_RETRY) {
        ucs_error("orc: swap at 0x%" PRIx64 " lost %u compare-swap races",
                  op->atomic.remote_addr, op->atomic.retries);
        return UCS_ERR_IO_ERROR;
    }

    /* send resources for the retry: this completion just freed a slot */
    op->atomic.compare = value;
    if ((ep->state != UCT_ORC_EP_CONNECTED) ||
        !uct_orc_ep_can_post(ep, iface, UCT_ORC_OP_SWAP) ||
        (uct_orc_ep_swap_retry(ep, iface, op) != UCS_OK)) {
        return UCS_ERR_IO_ERROR;
    }
    return UCS_INPROGRESS;
}

/* The result of a successful get or fetching atomic, to its destination */
static UCS_F_ALWAYS_INLINE void uct_orc_ep_op_result(uct_orc_op_t *op)
{
    if (op->type == UCT_ORC_OP_GET_BCOPY) {
        op->get.cb(op->get.arg, op->data, op->get.length);
    } else if (op->type == UCT_ORC_OP_ATOMIC_FETCH) {
        memcpy(op->atomic.result, op->data, sizeof(uint64_t));
    }
}

/* The WR of op completed with status: the op's own work (its result), then
 * it is done, unless it posted another attempt (a swap) */
static void uct_orc_ep_op_done(uct_orc_ep_t *ep, uct_orc_iface_t *iface,
                               uct_orc_op_t *op, ucs_status_t status)
{
    if (status == UCS_OK) {
        switch (op->type) {
        case UCT_ORC_OP_GET_BCOPY:
        case UCT_ORC_OP_ATOMIC_FETCH:
            uct_orc_ep_op_result(op);
            break;
        case UCT_ORC_OP_SWAP:
            status = uct_orc_ep_swap_attempted(ep, iface, op);
            if (status == UCS_INPROGRESS) {
                return;
            }
            break;
        default:
            break;
        }
    }

    if (op->type == UCT_ORC_OP_SWAP) {
        --ep->swaps; /* a fence waiting for it may go */
    }
    op->status = status;
    op->done   = 1;
}

static void uct_orc_ep_fail(uct_orc_ep_t *ep, ucs_status_t status,
                            ucs_queue_head_t *done);

/* The last signaled WR completed: the send CQ need not be polled for it */
static UCS_F_ALWAYS_INLINE void uct_orc_ep_sig_check(uct_orc_ep_t *ep,
                                                     uct_orc_iface_t *iface)
{
    if (ep->tx_sig_busy && uct_orc_ep_sn_done(ep, ep->tx_sig_sn)) {
        ep->tx_sig_busy = 0;
        --iface->tx_signaled;
    }
}

/*
 * The common completion of a get, an atomic or a flush's last WR, what
 * uct_orc_ep_tx_completed() does for it without its general bookkeeping:
 * WR sn succeeded, it is the next WR to complete (no unsignaled one before
 * it), and its op (not a swap: one may try again) is alone in the tx queue,
 * so no other op and no flush marker is released with it. Returns 0,
 * having done nothing, when it is not that case.
 */
static UCS_F_ALWAYS_INLINE int
uct_orc_ep_tx_completed_one(uct_orc_ep_t *ep, uct_orc_iface_t *iface,
                            uint16_t sn)
{
    uct_orc_op_t **slot = &ep->tx_ops[sn & ep->tx_ops_mask];
    uct_orc_op_t *op    = *slot;
    uct_completion_t *comp;

    /* an op in the slot: sn is in flight (completed WRs leave theirs NULL) */
    if (((uint16_t)(ep->tx_ci + 1) != sn) || (op == NULL) ||
        (op->type == UCT_ORC_OP_SWAP) || (ep->txq.head != &op->queue) ||
        !ucs_queue_is_tail(&ep->txq, &op->queue)) {
        return 0;
    }

    ep->tx_ci = sn;
    ++ep->sq_avail;
    ++iface->tx_cq_avail;
    *slot = NULL;
    uct_orc_ep_op_result(op);
    uct_orc_ep_sig_check(ep, iface);
    ucs_queue_head_init(&ep->txq);
    if (uct_orc_ep_has_work(ep)) {
        uct_orc_iface_schedule_pending(iface, ep);
    }
    /* the user callback last: it may destroy the ep */
    comp = op->comp;
    ucs_mpool_put_inline(op);
    if (comp != NULL) {
        uct_invoke_completion(comp, UCS_OK);
    }
    return 1;
}

/* Whether sn is a WR in flight: after tx_ci, at most tx_pi */
static UCS_F_ALWAYS_INLINE int uct_orc_ep_sn_in_flight(const uct_orc_ep_t *ep,
                                                       uint16_t sn)
{
    uint16_t count = sn - ep->tx_ci;

    return (count != 0) && (count <= (uint16_t)(ep->tx_pi - ep->tx_ci));
}

/*
 * The completion of a stream of short operations, what
 * uct_orc_ep_tx_completed() does for it without its walk over the WRs: WR
 * sn succeeded and the tx queue is empty, so no WR up to sn has an op (a
 * posted op sits in the tx queue until its WR completed: these WRs were
 * posted inline) and no flush marker waits. They only return their send
 * queue and CQ entries, all at once. Returns 0, having done nothing, when it
 * is not that case.
 */
static UCS_F_ALWAYS_INLINE int
uct_orc_ep_tx_completed_inline(uct_orc_ep_t *ep, uct_orc_iface_t *iface,
                               uint16_t sn)
{
    uint16_t count = sn - ep->tx_ci;

    if (!ucs_queue_is_empty(&ep->txq) || !uct_orc_ep_sn_in_flight(ep, sn)) {
        return 0;
    }

    ep->tx_ci = sn;
    ep->sq_avail += count;
    iface->tx_cq_avail += count;
    uct_orc_ep_sig_check(ep, iface);
    if (uct_orc_ep_has_work(ep)) {
        uct_orc_iface_schedule_pending(iface, ep);
    }
    return 1;
}

/*
 * WR number sn completed with wc_status, and with it every earlier WR not
 * completed yet: RC completes in order, so those before it succeeded (a
 * failed WR completes even when unsignaled, and every WR after it is
 * flushed, each with its own completion). Each returns its send queue and
 * CQ entries, and its op, if any, is done.
 */
void uct_orc_ep_tx_completed(uct_orc_ep_t *ep, uint16_t sn,
                             enum ibv_wc_status wc_status)
{
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);
    uct_orc_op_t **slot;
    ucs_queue_head_t done;
    ucs_status_t status;
    uct_orc_op_t *op;

    if (ucs_likely(wc_status == IBV_WC_SUCCESS) &&
        (uct_orc_ep_tx_completed_one(ep, iface, sn) ||
         uct_orc_ep_tx_completed_inline(ep, iface, sn))) {
        return;
    }

    if (!uct_orc_ep_sn_in_flight(ep, sn)) {
        ucs_error("orc: ep %p qp 0x%x: completion of WR %u, outside %u..%u", ep,
                  ep->qp->qp_num, sn, (uint16_t)(ep->tx_ci + 1), ep->tx_pi);
        return;
    }

    status =
        (wc_status == IBV_WC_SUCCESS) ? UCS_OK : uct_orc_wc_status(wc_status);
    ucs_queue_head_init(&done);
    if ((status != UCS_OK) && (ep->state != UCT_ORC_EP_FAILED)) {
        ucs_debug("orc: ep %p qp 0x%x: WR %u: %s", ep, ep->qp->qp_num, sn,
                  ibv_wc_status_str(wc_status));
        uct_orc_ep_fail(ep, status, &done);
    }

    /* one WR at a time: a swap's next attempt may take a freed entry */
    while (ep->tx_ci != sn) {
        ++ep->tx_ci;
        ++ep->sq_avail;
        ++iface->tx_cq_avail;
        slot = &ep->tx_ops[ep->tx_ci & ep->tx_ops_mask];
        op   = *slot;
        if (op != NULL) {
            *slot = NULL;
            uct_orc_ep_op_done(ep, iface, op,
                               (ep->tx_ci == sn) ? status : UCS_OK);
        }
    }
    uct_orc_ep_sig_check(ep, iface);

    uct_orc_ep_txq_advance(ep, &done);
    if (uct_orc_ep_has_work(ep)) {
        uct_orc_iface_schedule_pending(iface, ep);
    }
    /* user callbacks last: they may destroy the ep */
    uct_orc_ep_complete(&done);
}

/* ------------------------------------------------------- pending & flush */

/* Whether the ep would take any op now (then pending_add says BUSY) */
static int uct_orc_ep_takes_work(uct_orc_ep_t *ep, uct_orc_iface_t *iface)
{
    if (!ucs_queue_is_empty(&ep->pending_q)) {
        return 0;
    }
    if (ep->state == UCT_ORC_EP_PAIRING) {
        return ep->sendq_len < UCT_ORC_EP_SENDQ_MAX;
    }
    return (ep->state == UCT_ORC_EP_CONNECTED) &&
           ucs_queue_is_empty(&ep->sendq) &&
           uct_orc_ep_can_post(ep, iface, UCT_ORC_OP_AM);
}

ucs_status_t uct_orc_ep_pending_add(uct_ep_h tl_ep, uct_pending_req_t *req,
                                    unsigned flags)
{
    uct_orc_ep_t *ep       = ucs_derived_of(tl_ep, uct_orc_ep_t);
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);

    if (ep->peer_left) {
        /* nothing the peer does will dispatch it */
        uct_orc_ep_set_failed(ep, UCS_ERR_CONNECTION_RESET);
    }
    if (ep->state == UCT_ORC_EP_FAILED) {
        return ep->status; /* it would never be dispatched */
    }
    if (uct_orc_ep_takes_work(ep, iface)) {
        return UCS_ERR_BUSY;
    }

    uct_pending_req_queue_push(&ep->pending_q, req);
    if (ep->state == UCT_ORC_EP_CONNECTED) {
        uct_orc_iface_schedule_pending(iface, ep);
    }
    UCT_TL_EP_STAT_PEND(&ep->super);
    return UCS_OK;
}

void uct_orc_ep_pending_purge(uct_ep_h tl_ep, uct_pending_purge_callback_t cb,
                              void *arg)
{
    uct_orc_ep_t *ep = ucs_derived_of(tl_ep, uct_orc_ep_t);
    uct_pending_req_priv_queue_t *priv;

    uct_pending_queue_purge(priv, &ep->pending_q, 1, cb, arg);
    if (ep->in_pending_list && !uct_orc_ep_has_work(ep)) {
        ucs_list_del(&ep->pending_list);
        ep->in_pending_list = 0;
    }
}

static void uct_orc_ep_pending_run(uct_pending_req_t *req, void *arg)
{
    (void)req->func(req);
}

void uct_orc_ep_pending_fail(uct_orc_ep_t *ep)
{
    uct_pending_req_priv_queue_t *priv;
    ucs_queue_head_t reqs;

    /* off the ep first: a request may destroy it */
    ucs_queue_head_init(&reqs);
    ucs_queue_splice(&reqs, &ep->pending_q);
    uct_pending_queue_purge(priv, &reqs, 1, uct_orc_ep_pending_run, NULL);
}

/* Post the queued ops in order while resources last; flush markers between
 * them join the tx queue. Returns the status to fail the ep with, if a post
 * failed (*failed_op: its op, to complete with that status). */
static ucs_status_t uct_orc_ep_sendq_post(uct_orc_ep_t *ep,
                                          uct_orc_iface_t *iface,
                                          uct_orc_op_t **failed_op)
{
    ucs_status_t status;
    uct_orc_op_t *op;

    while (!ucs_queue_is_empty(&ep->sendq)) {
        op = ucs_queue_head_elem_non_empty(&ep->sendq, uct_orc_op_t, queue);
        if (op->type != UCT_ORC_OP_FLUSH) {
            if ((op->fence && (ep->swaps > 0)) ||
                !uct_orc_ep_can_post(ep, iface, op->type)) {
                break;
            }
            --ep->sendq_len;
        }
        ucs_queue_pull_non_empty(&ep->sendq);
        if (op->type == UCT_ORC_OP_FLUSH) {
            /* the op before it was posted signaled */
            op->sn = ep->tx_pi;
            ucs_queue_push(&ep->txq, &op->queue);
            continue;
        }

        status = uct_orc_ep_post(ep, iface, op, &op->wr, 1);
        if (status != UCS_OK) {
            *failed_op = op;
            return status;
        }
    }
    return UCS_OK;
}

void uct_orc_ep_dispatch_pending(uct_orc_ep_t *ep)
{
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);
    uct_pending_req_priv_queue_t *priv;
    uct_orc_op_t *failed_op = NULL;
    ucs_queue_head_t done;
    ucs_status_t status;

    if (ep->state != UCT_ORC_EP_CONNECTED) {
        return;
    }

    ucs_queue_head_init(&done);
    status = uct_orc_ep_sendq_post(ep, iface, &failed_op);
    if (status != UCS_OK) {
        failed_op->status = status;
        ucs_queue_push(&done, &failed_op->queue);
        uct_orc_ep_set_failed(ep, status);
        uct_orc_ep_complete(&done);
        return;
    }
    uct_orc_ep_txq_advance(ep, &done); /* markers the queue released */

    if (ucs_queue_is_empty(&ep->sendq)) {
        ep->in_dispatch = 1;
        uct_pending_queue_dispatch(priv, &ep->pending_q,
                                   (ep->state == UCT_ORC_EP_CONNECTED) &&
                                       ucs_queue_is_empty(&ep->sendq) &&
                                       (ep->sq_avail > 0) &&
                                       (iface->tx_cq_avail > 0));
        ep->in_dispatch = 0;
    }

    /* blocked by the shared CQ: no completion of ours will wake us */
    if (uct_orc_ep_has_work(ep) && (iface->tx_cq_avail == 0)) {
        uct_orc_iface_schedule_pending(iface, ep);
    }
    uct_orc_ep_complete(&done);
}

ucs_status_t uct_orc_ep_flush(uct_ep_h tl_ep, unsigned flags,
                              uct_completion_t *comp)
{
    uct_orc_ep_t *ep       = ucs_derived_of(tl_ep, uct_orc_ep_t);
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);
    ucs_queue_head_t *queue;
    uct_orc_op_t *op;

    if (ep->state == UCT_ORC_EP_FAILED) {
        return ep->status;
    }
    if (!ucs_queue_is_empty(&ep->pending_q) && !ep->in_dispatch) {
        /* the pending requests go first: flush through the pending queue */
        return UCS_ERR_NO_RESOURCE;
    }

    if (!ucs_queue_is_empty(&ep->sendq)) {
        /* its last element is an op, or a marker behind one: that op's WR
         * will be signaled, its completion completes the markers */
        op = ucs_queue_tail_elem_non_empty(&ep->sendq, uct_orc_op_t, queue);
        if (op->type != UCT_ORC_OP_FLUSH) {
            op->signal = 1;
        }
        queue = &ep->sendq;
    } else if (uct_orc_ep_tx_busy(ep)) {
        /* unsignaled WRs last: only a signaled one after them completes */
        if ((ep->unsignaled > 0) &&
            (uct_orc_ep_post_nop(ep, iface) != UCS_OK)) {
            return UCS_ERR_NO_RESOURCE;
        }
        queue = &ep->txq;
    } else {
        UCT_TL_EP_STAT_FLUSH(&ep->super);
        return UCS_OK;
    }

    if (comp != NULL) {
        op = uct_orc_ep_get_op(iface, &iface->op_mp, UCT_ORC_OP_FLUSH, comp);
        if (op == NULL) {
            return UCS_ERR_NO_RESOURCE;
        }
        op->ep = ep;
        op->sn = ep->tx_pi; /* in the send queue: set when it leaves it */
        ucs_queue_push(queue, &op->queue);
    }
    UCT_TL_EP_STAT_FLUSH_WAIT(&ep->super);
    return UCS_INPROGRESS;
}

ucs_status_t uct_orc_ep_fence(uct_ep_h tl_ep, unsigned flags)
{
    uct_orc_ep_t *ep       = ucs_derived_of(tl_ep, uct_orc_ep_t);
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);

    /* the next WR waits for earlier READs and atomics (IBV_SEND_FENCE), and
     * for a swap in progress (uct_orc_ep_admit); RC keeps everything else
     * in order already */
    ep->fence_beat = iface->fence_beat - 1;
    UCT_TL_EP_STAT_FENCE(&ep->super);
    return UCS_OK;
}

ucs_status_t uct_orc_ep_check(uct_ep_h tl_ep, unsigned flags,
                              uct_completion_t *comp)
{
    uct_orc_ep_t *ep       = ucs_derived_of(tl_ep, uct_orc_ep_t);
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);
    struct ibv_sge sge;
    ucs_status_t status;
    uct_orc_op_t *op;

    UCT_ORC_COMPAT_EP_CHECK_PARAM(flags, comp);

    if (ep->state != UCT_ORC_EP_CONNECTED) {
        /* failed: already reported; pairing: bounded by PAIR_TIMEOUT */
        return UCS_OK;
    }

    status = uct_orc_ep_op_start(ep, iface, &iface->op_mp, UCT_ORC_OP_CHECK,
                                 NULL, &op);
    if (status != UCS_OK) {
        return status;
    }

    /* A zero-length WRITE needs no remote buffer but a live peer QP: a dead
     * peer turns it into RETRY_EXC (or an access error) and the ep fails.
     * The sge is unused, but never NULL for a device. */
    memset(&sge, 0, sizeof(sge));
    return uct_orc_ep_post_rdma(ep, iface, op, IBV_WR_RDMA_WRITE, &sge, 0, 0,
                                0);
}

int uct_orc_ep_is_peer(uct_ep_h tl_ep, const uct_device_addr_t *dev_addr,
                       const uct_iface_addr_t *iface_addr)
{
    uct_orc_ep_t *ep                 = ucs_derived_of(tl_ep, uct_orc_ep_t);
    const uct_orc_iface_addr_t *peer = (const uct_orc_iface_addr_t *)iface_addr;

    return (uct_orc_iface_addr_unreachable(uct_orc_ep_iface(ep),
                                           (const uct_orc_dev_addr_t *)dev_addr,
                                           peer) == NULL) &&
           (peer->node_id == ep->peer_node) &&
           (peer->iface_id == ep->peer_iface);
}

/* ------------------------------------------------------- state changes */

void uct_orc_ep_connected(uct_orc_ep_t *ep, unsigned credits)
{
    uct_orc_iface_t *iface = uct_orc_ep_iface(ep);

    if (ep->state != UCT_ORC_EP_PAIRING) {
        return;
    }

    ep->state    = UCT_ORC_EP_CONNECTED;
    ep->credits  = credits;
    ep->sq_avail = iface->config.tx_queue_len;
    ucs_debug("orc: ep %p connected to node %" PRIu64 " iface %u: qp 0x%x, "
              "%u credits, %u ops queued",
              ep, ep->peer_node, ep->peer_iface, ep->qp->qp_num, credits,
              ep->sendq_len);
    /* the queued ops go out from the iface's progress */
    uct_orc_iface_schedule_pending(iface, ep);
}

/* Whether an iface flush waits for the ep; its unsignaled WRs, if last,
 * get a signaled one behind them (when resources allow: the flush is asked
 * again until it is done) */
int uct_orc_ep_signal_tail(uct_orc_ep_t *ep)
{
    if ((ep->state == UCT_ORC_EP_FAILED) || !uct_orc_ep_tx_busy(ep)) {
        return 0;
    }
    if ((ep->state == UCT_ORC_EP_CONNECTED) && (ep->unsignaled > 0) &&
        ucs_queue_is_empty(&ep->sendq)) {
        (void)uct_orc_ep_post_nop(ep, uct_orc_ep_iface(ep));
    }
    return 1;
}

/* The ep fails with status: what never reached the QP (the send queue)
 * moves to *done with it; ops in flight complete through the QP */
static void uct_orc_ep_fail(uct_orc_ep_t *ep, ucs_status_t status,
                            ucs_queue_head_t *done)
{
    ucs_debug("orc: ep %p to node %" PRIu64 " failed: %s", ep, ep->peer_node,
              ucs_status_string(status));
    ep->state  = UCT_ORC_EP_FAILED;
    ep->status = status;
    if (ep->in_pending_list) {
        ucs_list_del(&ep->pending_list);
        ep->in_pending_list = 0;
    }
    uct_orc_ep_sendq_take(ep, status, done);
    uct_orc_iface_ep_failed(uct_orc_ep_iface(ep), ep, status);
}

void uct_orc_ep_set_failed(uct_orc_ep_t *ep, ucs_status_t status)
{
    ucs_queue_head_t done;

    if (ep->state == UCT_ORC_EP_FAILED) {
        return;
    }
    /* flush markers whose WRs all completed complete now, and so does
     * everything that was never posted */
    ucs_queue_head_init(&done);
    uct_orc_ep_fail(ep, status, &done);
    uct_orc_ep_txq_advance(ep, &done);
    uct_orc_ep_complete(&done);
}

/*
 * The peer iface closed, or its process left the job, cleanly. Operations
 * in flight complete or fail through the QP; requests waiting for the peer
 * (queued, pending) never would: then the ep fails now. An idle ep stays
 * quiet, like a closed TCP connection, until it is used again.
 */
void uct_orc_ep_peer_left(uct_orc_ep_t *ep)
{
    ucs_debug("orc: ep %p: node %" PRIu64 " iface %u left", ep, ep->peer_node,
              ep->peer_iface);
    ep->peer_left = 1;
    if (uct_orc_ep_has_work(ep)) {
        uct_orc_ep_set_failed(ep, UCS_ERR_CONNECTION_RESET);
    }
}

void uct_orc_ep_add_credits(uct_orc_ep_t *ep, unsigned credits)
{
    ep->credits += credits;
    if (uct_orc_ep_has_work(ep)) {
        uct_orc_iface_schedule_pending(uct_orc_ep_iface(ep), ep);
    }
}

/* ------------------------------------------------------- create/destroy */

UCS_CLASS_INIT_FUNC(uct_orc_ep_t, const uct_ep_params_t *params)
{
    uct_orc_iface_t *iface = ucs_derived_of(params->iface, uct_orc_iface_t);
    const uct_orc_dev_addr_t *dev_addr;
    const uct_orc_iface_addr_t *iface_addr;
    const char *unreachable;
    uct_orc_qp_owner_t *owner;
    ucs_status_t status;
    khiter_t it;
    uint32_t psn;
    int ret;

    UCS_CLASS_CALL_SUPER_INIT(uct_base_ep_t, &iface->super);

    if (!(params->field_mask & UCT_EP_PARAM_FIELD_DEV_ADDR) ||
        !(params->field_mask & UCT_EP_PARAM_FIELD_IFACE_ADDR)) {
        ucs_error("orc: uct_ep_create() needs the peer's device and "
                  "interface address");
        return UCS_ERR_INVALID_PARAM;
    }

    dev_addr    = (const uct_orc_dev_addr_t *)params->dev_addr;
    iface_addr  = (const uct_orc_iface_addr_t *)params->iface_addr;
    unreachable = uct_orc_iface_addr_unreachable(iface, dev_addr, iface_addr);
    if (unreachable != NULL) {
        ucs_debug("%s: node %" PRIu64 " iface %u is unreachable (backend %d "
                  "domain 0x%x)",
                  unreachable, iface_addr->node_id, iface_addr->iface_id,
                  dev_addr->backend, dev_addr->domain);
        return UCS_ERR_UNREACHABLE;
    }

    /* UCS classes are not zero-allocated */
    memset(UCS_PTR_BYTE_OFFSET(self, sizeof(self->super)), 0,
           sizeof(*self) - sizeof(self->super));
    self->state      = UCT_ORC_EP_PAIRING;
    self->status     = UCS_OK;
    self->peer_node  = iface_addr->node_id;
    self->peer_iface = iface_addr->iface_id;
    self->fence_beat = iface->fence_beat;
    ucs_queue_head_init(&self->txq);
    ucs_queue_head_init(&self->sendq);
    ucs_queue_head_init(&self->pending_q);

    /* at most tx_queue_len WRs in flight, numbered modulo 2^16 */
    self->tx_ops_mask = ucs_roundup_pow2(iface->config.tx_queue_len) - 1;
    self->tx_ops =
        ucs_calloc(self->tx_ops_mask + 1, sizeof(*self->tx_ops), "orc tx ops");
    if (self->tx_ops == NULL) {
        return UCS_ERR_NO_MEMORY;
    }

    self->qp = uct_orc_agent_qp_create(&iface->agent, &psn);
    if (self->qp == NULL) {
        status = UCS_ERR_IO_ERROR;
        goto err_free_ops;
    }

    self->conn_id = ++iface->next_conn_id;
    it = kh_put(uct_orc_conn, &iface->conn_hash, self->conn_id, &ret);
    if (ret < 0) {
        status = UCS_ERR_NO_MEMORY;
        goto err_destroy_qp;
    }
    kh_val(&iface->conn_hash, it) = self;

    uct_orc_iface_qp_hash_changed(iface);
    it = kh_put(uct_orc_qp, &iface->qp_hash, self->qp->qp_num, &ret);
    if (ret < 0) {
        status = UCS_ERR_NO_MEMORY;
        goto err_del_conn;
    }
    owner          = &kh_val(&iface->qp_hash, it);
    owner->ep      = self;
    owner->passive = NULL;

    status = uct_orc_agent_pair(&iface->agent, self->conn_id, self->peer_node,
                                self->peer_iface, self->qp, psn);
    if (status != UCS_OK) {
        goto err_del_qp;
    }

    ucs_list_add_tail(&iface->ep_list, &self->list);
    ucs_debug("orc: ep %p: qp 0x%x pairing with node %" PRIu64 " iface %u",
              self, self->qp->qp_num, self->peer_node, self->peer_iface);
    return UCS_OK;

err_del_qp:
    uct_orc_iface_qp_hash_changed(iface);
    kh_del(uct_orc_qp, &iface->qp_hash,
           kh_get(uct_orc_qp, &iface->qp_hash, self->qp->qp_num));
err_del_conn:
    kh_del(uct_orc_conn, &iface->conn_hash,
           kh_get(uct_orc_conn, &iface->conn_hash, self->conn_id));
err_destroy_qp:
    orc_qp_destroy(self->qp);
err_free_ops:
    ucs_free(self->tx_ops);
    return status;
}

UCS_CLASS_CLEANUP_FUNC(uct_orc_ep_t)
{
    uct_orc_iface_t *iface = uct_orc_ep_iface(self);
    uint32_t qp_num        = self->qp->qp_num;
    ucs_queue_head_t canceled;
    uct_orc_op_t *op;
    khiter_t it;
    int ret;

    /* after this the agent no longer touches our QP */
    uct_orc_agent_cancel(&iface->agent, self->conn_id, self->peer_node,
                         self->peer_iface);

    ucs_list_del(&self->list);
    if (self->in_pending_list) {
        ucs_list_del(&self->pending_list);
    }
    if (self->in_failed_list) {
        ucs_list_del(&self->failed_list);
    }
    if (iface->reporting_ep == self) {
        iface->reporting_ep = NULL; /* destroyed by its error handler */
    }
    if (!ucs_queue_is_empty(&self->pending_q)) {
        ucs_warn("orc: ep %p destroyed with pending requests", self);
    }

    /* never posted: they complete as canceled */
    ucs_queue_head_init(&canceled);
    uct_orc_ep_sendq_take(self, UCS_ERR_CANCELED, &canceled);
    uct_orc_ep_complete(&canceled);

    /* completions still in the CQ find no ep from now on */
    if (iface->tx_last_ep == self) {
        iface->tx_last_ep = NULL;
    }
    it = kh_get(uct_orc_conn, &iface->conn_hash, self->conn_id);
    if (it != kh_end(&iface->conn_hash)) {
        kh_del(uct_orc_conn, &iface->conn_hash, it);
    }
    it = kh_get(uct_orc_qp, &iface->qp_hash, qp_num);
    if (it != kh_end(&iface->qp_hash)) {
        uct_orc_iface_qp_hash_changed(iface);
        kh_del(uct_orc_qp, &iface->qp_hash, it);
    }

    /* after this the device touches none of our ops' buffers, and adds no
     * completion of ours to the CQ: the CQ entries of our WRs in flight come
     * back once the CQ was found empty (those already in it are dropped) */
    ret = orc_qp_destroy(self->qp);
    if (ret != 0) {
        ucs_warn("orc: failed to destroy qp 0x%x: %s", qp_num, strerror(ret));
    }
    iface->tx_cq_held += (uint16_t)(self->tx_pi - self->tx_ci);
    if (self->tx_sig_busy) {
        --iface->tx_signaled;
    }

    /* like UCX's RC: outstanding operations complete as canceled (those
     * done already, behind one that is not, with their own status) */
    ucs_queue_head_init(&canceled);
    ucs_queue_for_each_extract(op, &self->txq, queue, 1) {
        if (!op->done) {
            op->status = UCS_ERR_CANCELED;
        }
        ucs_queue_push(&canceled, &op->queue);
    }
    uct_orc_ep_complete(&canceled);
    ucs_free(self->tx_ops);
}

UCS_CLASS_DEFINE(uct_orc_ep_t, uct_base_ep_t);
UCS_CLASS_DEFINE_NEW_FUNC(uct_orc_ep_t, uct_ep_t, const uct_ep_params_t *);
UCS_CLASS_DEFINE_DELETE_FUNC(uct_orc_ep_t, uct_ep_t);
