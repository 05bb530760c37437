/*
 * softnic's requester (sn_wire.h): an initiator QP's request frames on its
 * connection, and the responses to them: ACKs, NAKs (RNR and "not ready"
 * retries, errors), READ_DATA and atomic results completing the WQEs. A
 * response that does not fit the WQE it answers (its sequence, opcode,
 * offset or length) fails the connection like a dead peer.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_wire.h"

#include <endian.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* ---- requests ----------------------------------------------------------- */

static const uint8_t sn_req_ops[] = {
    [IBV_WR_RDMA_WRITE]           = SN_OP_WRITE,
    [IBV_WR_RDMA_WRITE_WITH_IMM]  = SN_OP_WRITE_IMM,
    [IBV_WR_SEND]                 = SN_OP_SEND,
    [IBV_WR_SEND_WITH_IMM]        = SN_OP_SEND_IMM,
    [IBV_WR_RDMA_READ]            = SN_OP_READ,
    [IBV_WR_ATOMIC_CMP_AND_SWP]   = SN_OP_CSWAP,
    [IBV_WR_ATOMIC_FETCH_AND_ADD] = SN_OP_FADD,
};

/* The request header of wqe (its `length`: the whole payload's) */
static void sn_req_header(sn_req_t *req, const sn_qp_t *qp, const sn_wqe_t *wqe)
{
    memset(req, 0, sizeof(*req));
    req->op          = sn_req_ops[wqe->opcode];
    req->flags       = wqe->solicited ? SN_REQ_F_SOLICITED : 0;
    req->seq         = htole32(wqe->seq);
    req->length      = htole32(wqe->length);
    req->rkey        = htole32(wqe->rkey);
    req->raddr       = htole64(wqe->raddr);
    req->compare_add = htole64(wqe->compare_add);
    req->swap        = htole64(wqe->swap);
    req->imm         = wqe->imm;
    req->acked       = htole32(wqe->acked);
    req->ack_new     = htole16(wqe->ack_new);
    req->chan        = htole32(qp->chan_id);
}

/* iovecs for [off, off + len) of wqe's gather list; their count */
static unsigned sn_req_gather(const sn_wqe_t *wqe, uint64_t off, uint64_t len,
                              struct iovec *iov)
{
    uint64_t take;
    unsigned n = 0, i;

    for (i = 0; (i < wqe->num_sge) && (len > 0); ++i) {
        if (off >= wqe->sge[i].length) {
            off -= wqe->sge[i].length;
            continue;
        }
        take = wqe->sge[i].length - off;
        if (take > len) {
            take = len;
        }
        iov[n].iov_base = (void *)(uintptr_t)(wqe->sge[i].addr + off);
        iov[n].iov_len  = take;
        ++n;
        len -= take;
        off = 0;
    }
    return n;
}

/* The frame of wqe as iovecs: its header (filled into req), then the
 * payload of a WRITE or SEND of at most SN_FRAME_MAX bytes (inline data
 * or the gather list). Returns the iovec count; *total_p = the frame's
 * bytes. */
static unsigned sn_req_frame(sn_req_t *req, const sn_qp_t *qp,
                             const sn_wqe_t *wqe, struct iovec *iov,
                             size_t *total_p)
{
    unsigned n = 0;

    sn_req_header(req, qp, wqe);
    iov[n].iov_base = req;
    iov[n].iov_len  = sizeof(*req);
    ++n;
    *total_p = sizeof(*req);
    if (!sn_req_has_payload(req->op) || (wqe->length == 0)) {
        return n;
    }
    if (wqe->is_inline) {
        iov[n].iov_base = (void *)wqe->inline_data;
        iov[n].iov_len  = wqe->length;
        ++n;
    } else {
        n += sn_req_gather(wqe, 0, wqe->length, &iov[n]);
    }
    *total_p += wqe->length;
    return n;
}

/* ---- requests longer than a frame (sn_wire.h, REQ_DATA) ------------------ */

/* A WRITE or SEND payload longer than SN_FRAME_MAX: the request frame
 * carries its first SN_FRAME_MAX bytes, REQ_DATA frames the rest, right
 * behind it; up to SN_REQ_SEND_FRAMES frames go in one sendmsg (a large
 * WRITE costs no extra send call). qp->tx_off counts the bytes of them
 * all. */
#define SN_REQ_SEND_FRAMES 8
#define SN_REQ_IOV         (SN_REQ_SEND_FRAMES * (SN_MAX_SGE + 1))

static int sn_req_segmented(const sn_wqe_t *wqe)
{
    return (wqe->length > SN_FRAME_MAX) &&
           ((wqe->opcode == IBV_WR_RDMA_WRITE) ||
            (wqe->opcode == IBV_WR_RDMA_WRITE_WITH_IMM) ||
            (wqe->opcode == IBV_WR_SEND) ||
            (wqe->opcode == IBV_WR_SEND_WITH_IMM));
}

/* Where frame k (0: the request frame) starts in the request's wire
 * bytes */
static size_t sn_req_frame_start(uint32_t k)
{
    return (k == 0)
               ? 0
               : sizeof(sn_req_t) + SN_FRAME_MAX +
                     (size_t)(k - 1) * (sizeof(sn_req_data_t) + SN_FRAME_MAX);
}

/* The payload bytes of frame k of a payload of length bytes */
static uint32_t sn_req_frame_payload(uint32_t length, uint32_t k)
{
    uint64_t left = length - (uint64_t)k * SN_FRAME_MAX;

    return (left < SN_FRAME_MAX) ? (uint32_t)left : SN_FRAME_MAX;
}

/* The frame tx_off is in */
static uint32_t sn_req_frame_at(size_t tx_off)
{
    size_t first = sizeof(sn_req_t) + SN_FRAME_MAX;

    return (tx_off < first)
               ? 0
               : 1 + (uint32_t)((tx_off - first) /
                                (sizeof(sn_req_data_t) + SN_FRAME_MAX));
}

/* The REQ_DATA header of frame k */
static void sn_req_data_header(sn_req_data_t *d, const sn_qp_t *qp,
                               const sn_wqe_t *wqe, uint32_t k)
{
    memset(d, 0, sizeof(*d));
    d->type   = SN_FRAME_REQ_DATA;
    d->seq    = htole32(wqe->seq);
    d->length = htole32(sn_req_frame_payload(wqe->length, k));
    d->offset = htole32(k * SN_FRAME_MAX);
    d->chan   = htole32(qp->chan_id);
}

/* The frames of a segmented request from the one qp->tx_off is in, at
 * most SN_REQ_SEND_FRAMES, as iovecs (headers filled into req and data);
 * *start_p = where the first of them starts, *total_p = the wire bytes of
 * the whole request. Returns the iovec count. */
static unsigned sn_req_frames(sn_req_t *req, sn_req_data_t *data,
                              const sn_qp_t *qp, const sn_wqe_t *wqe,
                              struct iovec *iov, size_t *start_p,
                              size_t *total_p)
{
    uint32_t num = (wqe->length + SN_FRAME_MAX - 1) / SN_FRAME_MAX;
    uint32_t k   = sn_req_frame_at(qp->tx_off), end;
    unsigned n   = 0;

    *start_p = sn_req_frame_start(k);
    *total_p = sn_req_frame_start(num - 1) + sizeof(sn_req_data_t) +
               sn_req_frame_payload(wqe->length, num - 1);
    end = (num - k > SN_REQ_SEND_FRAMES) ? k + SN_REQ_SEND_FRAMES : num;
    do { /* (k < end: tx_off is below the request's end) */
        if (k == 0) {
            sn_req_header(req, qp, wqe);
            iov[n].iov_base = req;
            iov[n].iov_len  = sizeof(*req);
        } else {
            sn_req_data_header(data, qp, wqe, k);
            iov[n].iov_base = data;
            iov[n].iov_len  = sizeof(*data);
        }
        ++n;
        n += sn_req_gather(wqe, (uint64_t)k * SN_FRAME_MAX,
                           sn_req_frame_payload(wqe->length, k), &iov[n]);
        ++data;
    } while (++k < end);
    return n;
}

/* QP lock held: writing to the connection failed (errno): the peer is
 * silent from now on */
static void sn_req_send_failed(sn_qp_t *qp)
{
    sn_log(sn_qp_inst(qp), SOFTNIC_LOG_INFO, "qp 0x%x: send failed: %m",
           qp->super.qp_num);
    qp->tx_off = 0; /* nothing more goes out */
    sn_qp_peer_lost(qp, 0);
}

void sn_req_set_corked(sn_qp_t *qp, int corked)
{
    if (corked == qp->tx_corked) {
        return;
    }
    __atomic_add_fetch(&sn_qp_inst(qp)->num_corked, corked ? 1 : -1,
                       __ATOMIC_RELAXED);
    __atomic_store_n(&qp->tx_corked, corked, __ATOMIC_RELAXED);
}

void sn_req_push(sn_qp_t *qp)
{
    if (qp->tx_corked) {
        sn_sock_push(qp->stream_fd);
        sn_req_set_corked(qp, 0);
    }
}

/* May the frame of wqe (total bytes) be held back in the socket (sn_int.h,
 * "Request coalescing")? A small WRITE or SEND of a streaming post that
 * carries no ACKs (those leave within their own bound) */
static int sn_req_may_cork(const sn_qp_t *qp, const sn_wqe_t *wqe, size_t total)
{
    return qp->tx_stream && (wqe->ack_new == 0) && (total <= SN_CORK_LEN) &&
           ((wqe->opcode == IBV_WR_SEND) ||
            (wqe->opcode == IBV_WR_SEND_WITH_IMM) ||
            (wqe->opcode == IBV_WR_RDMA_WRITE) ||
            (wqe->opcode == IBV_WR_RDMA_WRITE_WITH_IMM));
}

int sn_wire_send_req(sn_qp_t *qp, const sn_wqe_t *wqe)
{
    struct iovec iov[SN_REQ_IOV];
    sn_req_data_t data[SN_REQ_SEND_FRAMES];
    struct msghdr msg;
    sn_req_t req;
    size_t skip = qp->tx_off, total, start;
    unsigned n, i;
    ssize_t ret;
    int more = 0;

    if (sn_req_segmented(wqe)) {
        n = sn_req_frames(&req, data, qp, wqe, iov, &start, &total);
        skip -= start;
    } else {
        n    = sn_req_frame(&req, qp, wqe, iov, &total);
        more = sn_req_may_cork(qp, wqe, total) ? MSG_MORE : 0;
    }
    /* skip what an earlier call sent */
    for (i = 0; (i < n) && (skip >= iov[i].iov_len); ++i) {
        skip -= iov[i].iov_len;
    }
    iov[i].iov_base = (char *)iov[i].iov_base + skip;
    iov[i].iov_len -= skip;

    memset(&msg, 0, sizeof(msg));
    msg.msg_iov    = &iov[i];
    msg.msg_iovlen = n - i;
    do {
        ret = sendmsg(qp->stream_fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT | more);
    } while ((ret < 0) && (errno == EINTR));
    if (ret < 0) {
        if ((errno == EAGAIN) || (errno == EWOULDBLOCK)) {
            return 0;
        }
        sn_req_send_failed(qp);
        return -1;
    }
    /* a send without MSG_MORE pushes what earlier ones held back */
    sn_req_set_corked(qp, more != 0);
    if (more) {
        qp->batch_idle[0] = qp->batch_idle[1] = 0;
    }
    if ((wqe->ack_new > 0) && (qp->tx_off < sizeof(req)) &&
        (qp->tx_off + (size_t)ret >= sizeof(req))) {
        /* the ACKs in the header are on their way: the responder side
         * owes no frame for them (sn_resp.c) */
        __atomic_store_n(&qp->ack_carried, wqe->acked, __ATOMIC_RELEASE);
    }
    qp->tx_off += ret;
    return (qp->tx_off == total) ? 1 : 0;
}

/* ---- responses ---------------------------------------------------------- */

/* QP lock held: the WQE a response must belong to: the oldest SENT one, or
 * else the one whose frame is being written (the target NAKs a request as
 * soon as it has its header, possibly before the payload is complete). */
static sn_wqe_t *sn_req_wqe(sn_qp_t *qp, uint32_t *index_p)
{
    sn_wqe_t *wqe;
    uint32_t i;

    for (i = qp->sq_head; i != qp->sq_tx; ++i) {
        wqe = &qp->sq[i % qp->sq_size];
        if (wqe->state == SN_WQE_SENT) {
            *index_p = i;
            return wqe;
        }
    }
    if ((qp->tx_off > 0) && (qp->sq_tx != qp->sq_tail)) {
        wqe = &qp->sq[qp->sq_tx % qp->sq_size];
        if ((wqe->state == SN_WQE_QUEUED) && wqe->has_seq) {
            *index_p = qp->sq_tx;
            return wqe;
        }
    }
    return NULL;
}

/* QP lock held: the WQE's answer is in (rsp_seq: the peer's requests
 * that acknowledge it may be taken, sn_resp.c) */
static void sn_req_finish(sn_qp_t *qp, sn_wqe_t *wqe, enum ibv_wc_status status)
{
    if ((int32_t)(wqe->seq + 1 - qp->rsp_seq) > 0) {
        qp->rsp_seq = wqe->seq + 1;
    }
    if (wqe->state == SN_WQE_SENT) {
        --qp->sent_out;
        if (sn_opcode_is_rd_atomic(wqe->opcode)) {
            --qp->rd_atomic_out;
        }
    }
    /* else: NAKed while its frame is still being written; sn_qp_tx
     * finishes the frame (the target drains it) and keeps it DONE */
    wqe->state  = SN_WQE_DONE;
    wqe->status = status;
}

/* QP lock held: retry the WQE at index after a NAK */
static void sn_req_rewind(sn_qp_t *qp, uint32_t index, uint64_t delay_ns)
{
    qp->rewind_pending = 1;
    qp->rewind_to      = index;
    qp->hold_until_ns  = sn_now_ns() + delay_ns;
}

/* Byte order, then every field; -1 for a malformed response (its type is
 * one of SN_RSP_*: the parser's type switch, sn_stream.c) */
static int sn_req_check_rsp(sn_inst_t *inst, sn_rsp_t *rsp)
{
    rsp->seq    = le32toh(rsp->seq);
    rsp->length = le32toh(rsp->length);
    rsp->offset = le32toh(rsp->offset);
    rsp->value  = le64toh(rsp->value);
    if ((rsp->reserved != 0) || (rsp->reserved2 != 0) ||
        ((rsp->type == SN_RSP_NAK) &&
         ((rsp->code == 0) || (rsp->code >= SN_NAK_LAST))) ||
        (rsp->length > SN_FRAME_MAX) ||
        ((rsp->type != SN_RSP_READ_DATA) && (rsp->length != 0))) {
        sn_log(inst, SOFTNIC_LOG_WARN,
               "malformed response (type %u code %u length %u)", rsp->type,
               rsp->code, rsp->length);
        return -1;
    }
    return 0;
}

/* QP lock held: a WRITE or SEND was executed */
static int sn_req_on_ack(sn_qp_t *qp, sn_wqe_t *wqe)
{
    if ((wqe->opcode != IBV_WR_RDMA_WRITE) &&
        (wqe->opcode != IBV_WR_RDMA_WRITE_WITH_IMM) &&
        (wqe->opcode != IBV_WR_SEND) && (wqe->opcode != IBV_WR_SEND_WITH_IMM)) {
        return -1;
    }
    qp->rnr_count = qp->retry_count = 0;
    sn_req_finish(qp, wqe, IBV_WC_SUCCESS);
    return 0;
}

/* QP lock held: an atomic's original value */
static int sn_req_on_atomic(sn_qp_t *qp, sn_wqe_t *wqe, uint64_t value)
{
    if (!sn_opcode_is_atomic(wqe->opcode)) {
        return -1;
    }
    qp->rnr_count = qp->retry_count = 0;
    sn_req_finish(qp, wqe, sn_qp_put_atomic_result(qp, wqe, value, 1));
    return 0;
}

/* QP lock held: the next frame of a READ, in order; its payload goes to the
 * WQE's scatter list (a bad lkey there: received, discarded, and the WQE
 * fails with LOC_PROT_ERR when the payload is complete) */
static int sn_req_on_read_data(sn_inst_t *inst, sn_chan_t *chan, sn_wqe_t *wqe,
                               uint32_t index)
{
    sn_stream_t *stream = chan->stream;
    sn_rsp_t *rsp       = &stream->hdr.rsp;
    sn_qp_t *qp         = chan->qp;

    if ((wqe->opcode != IBV_WR_RDMA_READ) || (rsp->offset != wqe->done_bytes) ||
        (rsp->length > wqe->length - wqe->done_bytes) ||
        ((rsp->length == 0) && (wqe->length != 0))) {
        return -1;
    }
    qp->rnr_count = qp->retry_count = 0;
    if (rsp->length == 0) {
        sn_req_finish(qp, wqe, IBV_WC_SUCCESS);
        return 0;
    }
    stream->pay_left = rsp->length;
    chan->rd_index   = index;
    if (sn_sink_from_sges(inst, &chan->sink, wqe->sge, wqe->num_sge, qp->pdn,
                          rsp->offset, rsp->length) != 0) {
        sn_sink_reset(&chan->sink, 1);
        chan->sink.num = 1; /* marks "failed", see sn_req_on_payload */
    }
    return 0;
}

/* QP lock held: RNR and "not ready" are retried from the NAKed WQE (after
 * the responder's RNR timer, or the QP's transport timeout; 20 ms with
 * timeout 0). RNR until rnr_retry runs out; "not ready" stands for the
 * packet an IB QP below RTR drops, so it is no progress: the transport
 * timer (sn_qp_timers) fails the WR once (retry_cnt + 1) timeouts have
 * passed since its first send, never with timeout 0. The others fail the
 * WQE. */
static void sn_req_on_nak(sn_qp_t *qp, sn_wqe_t *wqe, uint32_t index,
                          const sn_rsp_t *rsp)
{
    static const enum ibv_wc_status status[] = {
        [SN_NAK_REM_ACCESS]  = IBV_WC_REM_ACCESS_ERR,
        [SN_NAK_REM_INV_REQ] = IBV_WC_REM_INV_REQ_ERR,
        [SN_NAK_REM_OP]      = IBV_WC_REM_OP_ERR,
    };
    uint64_t delay;

    switch (rsp->code) {
    case SN_NAK_RNR:
        qp->retry_count = 0; /* the target is ready */
        ++qp->rnr_count;
        if (!SN_RULE_RNR || ((qp->attr.rnr_retry != 7) &&
                             (qp->rnr_count > qp->attr.rnr_retry))) {
            sn_req_finish(qp, wqe, IBV_WC_RNR_RETRY_EXC_ERR);
            break;
        }
        sn_req_rewind(qp, index, sn_rnr_timer_ns(rsp->rnr_timer & 31));
        break;
    case SN_NAK_NOT_READY:
        ++qp->retry_count;
        if (!SN_RULE_NR_BUDGET && (qp->retry_count > qp->attr.retry_cnt)) {
            sn_req_finish(qp, wqe, IBV_WC_RETRY_EXC_ERR);
            break;
        }
        delay = sn_qp_timeout_ns(qp);
        sn_req_rewind(qp, index, (delay != 0) ? delay : SN_TICK_NS);
        break;
    default: /* codes checked by sn_req_check_rsp */
        sn_req_finish(qp, wqe, status[rsp->code]);
        break;
    }
}

/* QP lock held: the response for wqe; -1 when it does not fit the WQE */
static int sn_req_dispatch(sn_inst_t *inst, sn_chan_t *chan, sn_wqe_t *wqe,
                           uint32_t index)
{
    sn_rsp_t *rsp = &chan->stream->hdr.rsp;

    switch (rsp->type) {
    case SN_RSP_ATOMIC:
        return sn_req_on_atomic(chan->qp, wqe, rsp->value);
    case SN_RSP_READ_DATA:
        return sn_req_on_read_data(inst, chan, wqe, index);
    default:
        sn_req_on_nak(chan->qp, wqe, index, rsp);
        return 0;
    }
}

/* QP lock held, svc_lock holder: answers were read (rsp_seq advanced from
 * before): SENDs the peer posted to our same-host ring after answering
 * them may be taken now (sn_ring.c waits for that) */
static void sn_req_answers_read(sn_qp_t *qp, uint32_t before)
{
    if ((qp->rsp_seq != before) && (qp->rings != NULL) &&
        (qp->state == IBV_QPS_RTS)) {
        sn_ring_progress(qp, 1);
    }
}

int sn_req_acked(sn_qp_t *qp, uint32_t end)
{
    uint32_t before = qp->rsp_seq, i;
    sn_wqe_t *wqe;

    if ((int32_t)(end - qp->rsp_seq) <= 0) {
        return 0; /* answered already: a duplicate */
    }
    for (i = qp->sq_head;
         (i != qp->sq_tx) && ((int32_t)(end - qp->rsp_seq) > 0); ++i) {
        wqe = &qp->sq[i % qp->sq_size];
        if (wqe->state != SN_WQE_SENT) {
            continue;
        }
        if (((int32_t)(wqe->seq - end) >= 0) || (sn_req_on_ack(qp, wqe) != 0)) {
            break;
        }
    }
    if ((int32_t)(end - qp->rsp_seq) > 0) {
        sn_log(sn_qp_inst(qp), SOFTNIC_LOG_WARN,
               "qp 0x%x: ACK up to %u does not fit the requests sent",
               qp->super.qp_num, end);
        return -1;
    }
    qp->last_progress_ns = sn_stamp_ns();
    sn_qp_complete(qp);
    sn_qp_tx(qp);
    sn_req_answers_read(qp, before);
    return 0;
}

int sn_req_on_rsp(sn_inst_t *inst, sn_chan_t *chan)
{
    sn_stream_t *stream = chan->stream;
    sn_rsp_t *rsp       = &stream->hdr.rsp;
    sn_qp_t *qp         = chan->qp;
    sn_wqe_t *wqe;
    uint32_t index, before;
    int ret;

    sn_sink_reset(&chan->sink, 1);
    stream->pay_left = 0;
    if (sn_req_check_rsp(inst, rsp) != 0) {
        return -1;
    }

    pthread_mutex_lock(&qp->lock);
    if (rsp->type == SN_RSP_ACK) { /* cumulative (sn_wire.h) */
        ret = sn_req_acked(qp, rsp->seq + 1);
        pthread_mutex_unlock(&qp->lock);
        return ret;
    }
    before = qp->rsp_seq;
    wqe    = sn_req_wqe(qp, &index);
    if ((wqe == NULL) || (wqe->seq != rsp->seq)) {
        sn_log(inst, SOFTNIC_LOG_WARN, "qp 0x%x: unexpected response seq %u",
               qp->super.qp_num, rsp->seq);
        ret = -1;
    } else {
        if (!SN_RULE_NR_BUDGET || (rsp->type != SN_RSP_NAK) ||
            (rsp->code != SN_NAK_NOT_READY)) {
            qp->last_progress_ns = sn_stamp_ns(); /* else see sn_req_on_nak */
        }
        ret = sn_req_dispatch(inst, chan, wqe, index);
        if (ret == 0) {
            sn_qp_complete(qp);
            sn_qp_tx(qp);
            sn_req_answers_read(qp, before);
        }
    }
    pthread_mutex_unlock(&qp->lock);
    return ret;
}

int sn_req_on_payload(sn_chan_t *chan)
{
    sn_stream_t *stream = chan->stream;
    sn_rsp_t *rsp       = &stream->hdr.rsp;
    sn_qp_t *qp         = chan->qp;
    sn_wqe_t *wqe;
    uint32_t index, before;

    pthread_mutex_lock(&qp->lock);
    if (qp->stream_id != stream->id) {
        pthread_mutex_unlock(&qp->lock);
        return -1;
    }
    before = qp->rsp_seq;
    wqe    = sn_req_wqe(qp, &index);
    if ((wqe != NULL) && (index == chan->rd_index) && (wqe->seq == rsp->seq)) {
        if (chan->sink.failed) {
            sn_req_finish(qp, wqe, IBV_WC_LOC_PROT_ERR);
        } else {
            wqe->done_bytes += rsp->length;
            if (wqe->done_bytes == wqe->length) {
                sn_req_finish(qp, wqe, IBV_WC_SUCCESS);
            }
        }
        sn_qp_complete(qp);
        sn_qp_tx(qp);
        sn_req_answers_read(qp, before);
    }
    pthread_mutex_unlock(&qp->lock);
    return 0;
}
