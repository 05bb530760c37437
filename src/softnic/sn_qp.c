/*
 * softnic RC queue pairs: state machine, send queue engine (in-order
 * completion, fence, retry/rewind, flush), the same-host CMA fast path, and
 * shared receive queues. Locking contract: sn_int.h (sn_qp).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

/* A per-attempt timeout below this would fire on a healthy but descheduled
 * peer of a loaded machine; hardware has no such floor, softnic does. */
#define SN_MIN_TIMEOUT_NS (20ull * 1000 * 1000)

/* Time a WR may wait for its QP's connection to be set up (TCP handshake,
 * HELLO and CHAN_OPEN) before it fails with IBV_WC_RETRY_EXC_ERR, if the
 * QP's own timeout * (retry_cnt + 1) is shorter. */
#define SN_CONNECT_BUDGET_NS (5ull * 1000 * 1000 * 1000)

/* IB spec table 45 (RNR timer field), in microseconds */
static const uint32_t sn_rnr_us[32] = {655360, 10,    20,     30,     40,
                                       60,     80,    120,    160,    240,
                                       320,    480,   640,    960,    1280,
                                       1920,   2560,  3840,   5120,   7680,
                                       10240,  15360, 20480,  30720,  40960,
                                       61440,  81920, 122880, 163840, 245760,
                                       327680, 491520};

uint64_t sn_rnr_timer_ns(uint8_t timer)
{
    return sn_rnr_us[timer & 31] * 1000ull;
}

uint64_t sn_qp_timeout_ns(const sn_qp_t *qp)
{
    uint64_t ns;

    if (qp->attr.timeout == 0) {
        return 0; /* infinite, as in the IB spec */
    }
    ns = 4096ull << qp->attr.timeout;
    return (ns < SN_MIN_TIMEOUT_NS) ? SN_MIN_TIMEOUT_NS : ns;
}

/* ---- receive queues ---------------------------------------------------- */

static int sn_rq_init(sn_rq_t *rq, uint32_t size)
{
    rq->ring = calloc((size > 0) ? size : 1, sizeof(*rq->ring));
    if (rq->ring == NULL) {
        return ENOMEM;
    }
    rq->size  = size;
    rq->head  = 0;
    rq->count = 0;
    return 0;
}

static inline int sn_rq_push(sn_rq_t *rq, const struct ibv_recv_wr *wr,
                             uint32_t max_sge)
{
    uint32_t index = rq->head + rq->count;
    sn_recv_t *recv;

    if ((wr->num_sge < 0) || ((uint32_t)wr->num_sge > max_sge) ||
        ((wr->num_sge > 0) && (wr->sg_list == NULL))) {
        return EINVAL;
    }
    if (rq->count == rq->size) {
        return ENOMEM;
    }
    if (index >= rq->size) { /* head < size, count < size: no division */
        index -= rq->size;
    }
    recv          = &rq->ring[index];
    recv->wr_id   = wr->wr_id;
    recv->num_sge = wr->num_sge;
    if (wr->num_sge == 1) { /* the common case: no call to memcpy */
        recv->sge[0] = wr->sg_list[0];
    } else if (wr->num_sge > 0) { /* sg_list may be NULL without entries */
        memcpy(recv->sge, wr->sg_list, sizeof(*wr->sg_list) * wr->num_sge);
    }
    ++rq->count;
    return 0;
}

int sn_rq_pop(sn_rq_t *rq, sn_recv_t *recv)
{
    if (rq->count == 0) {
        return -1;
    }
    *recv = *sn_rq_take(rq);
    return 0;
}

enum ibv_wc_status sn_qp_put_atomic_result(sn_qp_t *qp, const sn_wqe_t *wqe,
                                           uint64_t value, int in_svc)
{
    sn_inst_t *inst = sn_qp_inst(qp);
    sn_mr_snap_t snap;

    if ((sn_mr_check(inst->mrs, wqe->sge[0].lkey, qp->pdn, wqe->sge[0].addr, 8,
                     IBV_ACCESS_LOCAL_WRITE, &snap) != 0) ||
        (in_svc && (sn_mr_busy_begin(inst, &snap) != 0))) {
        return IBV_WC_LOC_PROT_ERR;
    }
    memcpy((void *)(uintptr_t)wqe->sge[0].addr, &value, 8);
    if (in_svc) {
        sn_mr_busy_end(inst);
    }
    return IBV_WC_SUCCESS;
}

sn_rq_t *sn_qp_recv_lock(sn_qp_t *qp)
{
    if (qp->srq == NULL) {
        return &qp->rq;
    }
    pthread_mutex_lock(&qp->srq->lock);
    return &qp->srq->rq;
}

void sn_qp_recv_unlock(sn_qp_t *qp)
{
    if (qp->srq != NULL) {
        pthread_mutex_unlock(&qp->srq->lock);
    }
}

int sn_qp_pop_recv(sn_qp_t *qp, sn_recv_t *recv)
{
    int ret;

    if (qp->srq == NULL) {
        return sn_rq_pop(&qp->rq, recv);
    }
    pthread_mutex_lock(&qp->srq->lock);
    ret = sn_rq_pop(&qp->srq->rq, recv);
    pthread_mutex_unlock(&qp->srq->lock);
    return ret;
}

/* ---- completions ------------------------------------------------------- */

enum ibv_wc_status sn_qp_place_recv(sn_qp_t *qp, const sn_recv_t *recv,
                                    const uint8_t *data, uint32_t len,
                                    int in_svc, sn_mr_snap_t *snap)
{
    sn_inst_t *inst = sn_qp_inst(qp);
    uint64_t room   = 0, take;
    uint32_t off    = 0;
    int i;

    for (i = 0; i < recv->num_sge; ++i) {
        room += recv->sge[i].length;
    }
    if (room < len) {
        return IBV_WC_LOC_LEN_ERR;
    }
    for (i = 0; (i < recv->num_sge) && (off < len); ++i) {
        take = recv->sge[i].length;
        if (take > len - off) {
            take = len - off;
        }
        if (take == 0) {
            continue;
        }
        if (sn_mr_check_again(inst->mrs, recv->sge[i].lkey, qp->pdn,
                              recv->sge[i].addr, take, IBV_ACCESS_LOCAL_WRITE,
                              snap) != 0) {
            return IBV_WC_LOC_PROT_ERR;
        }
        if (in_svc && (sn_mr_busy_begin(inst, snap) != 0)) {
            return IBV_WC_LOC_PROT_ERR;
        }
        memcpy((void *)(uintptr_t)recv->sge[i].addr, data + off, take);
        if (in_svc) {
            sn_mr_busy_end(inst);
        }
        off += take;
    }
    return IBV_WC_SUCCESS;
}

static enum ibv_wc_opcode sn_wc_opcode(uint8_t opcode)
{
    switch (opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
        return IBV_WC_RDMA_WRITE;
    case IBV_WR_RDMA_READ:
        return IBV_WC_RDMA_READ;
    case IBV_WR_ATOMIC_CMP_AND_SWP:
        return IBV_WC_COMP_SWAP;
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
        return IBV_WC_FETCH_ADD;
    default:
        return IBV_WC_SEND;
    }
}

static void sn_qp_push_send_wc(sn_qp_t *qp, const sn_wqe_t *wqe)
{
    struct ibv_wc wc;

    memset(&wc, 0, sizeof(wc));
    wc.wr_id    = wqe->wr_id;
    wc.status   = (enum ibv_wc_status)wqe->status;
    wc.opcode   = sn_wc_opcode(wqe->opcode);
    wc.byte_len = wqe->length;
    wc.qp_num   = qp->super.qp_num;
    sn_cq_push(qp->send_cq, &wc, 0);
}

static void sn_qp_push_recv_flush(sn_qp_t *qp, uint64_t wr_id)
{
    struct ibv_wc wc;

    memset(&wc, 0, sizeof(wc));
    wc.wr_id  = wr_id;
    wc.status = IBV_WC_WR_FLUSH_ERR;
    wc.opcode = IBV_WC_RECV;
    wc.qp_num = qp->super.qp_num;
    sn_cq_push(qp->recv_cq, &wc, 0);
}

void sn_qp_complete(sn_qp_t *qp)
{
    sn_wqe_t *wqe;

    while (qp->sq_head != qp->sq_tail) {
        wqe = &qp->sq[qp->sq_head % qp->sq_size];
        if (wqe->state != SN_WQE_DONE) {
            break;
        }
        if (wqe->signaled || (wqe->status != IBV_WC_SUCCESS)) {
            sn_qp_push_send_wc(qp, wqe);
        }
        if (qp->sq_tx == qp->sq_head) {
            ++qp->sq_tx; /* completed without transmission */
            qp->tx_off = 0;
        }
        ++qp->sq_head;
        if ((wqe->status != IBV_WC_SUCCESS) && (qp->state != IBV_QPS_ERR)) {
            sn_qp_to_error(qp);
        }
    }
}

void sn_qp_fail_oldest(sn_qp_t *qp, enum ibv_wc_status status)
{
    sn_wqe_t *wqe;
    uint32_t i;

    for (i = qp->sq_head; i != qp->sq_tail; ++i) {
        wqe = &qp->sq[i % qp->sq_size];
        if (wqe->state != SN_WQE_DONE) {
            if (wqe->state == SN_WQE_SENT) {
                --qp->sent_out;
            }
            wqe->state  = SN_WQE_DONE;
            wqe->status = status;
            return;
        }
    }
}

/* The QP's WRITE batch now holds n WQEs; inst->num_batched counts the QPs
 * with a batch */
static void sn_qp_batch_set(sn_qp_t *qp, uint32_t n)
{
    sn_inst_t *inst = sn_qp_inst(qp);

    if (n > qp->cma_batch) { /* a WRITE joined: the polls count anew */
        qp->batch_idle[0] = qp->batch_idle[1] = 0;
    }
    if ((qp->cma_batch == 0) && (n > 0)) {
        __atomic_fetch_add(&inst->num_batched, 1, __ATOMIC_RELAXED);
    } else if ((qp->cma_batch > 0) && (n == 0)) {
        __atomic_fetch_sub(&inst->num_batched, 1, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&qp->cma_batch, n, __ATOMIC_RELAXED);
}

void sn_qp_peer_lost(sn_qp_t *qp, int in_svc)
{
    if (qp->stream_id != 0) {
        sn_svc_drop_stream(sn_qp_inst(qp), qp->stream_id);
    }
    __atomic_store_n(&qp->stream_id, 0, __ATOMIC_RELAXED);
    sn_req_set_corked(qp, 0); /* nothing more goes out */
    qp->stream     = NULL;
    qp->stream_fd  = -1;
    qp->conn_state = SN_CONN_FAILED;
    qp->tx_blocked = 0;
    /* SENDs and atomics the target took from the same-host ring were
     * executed: they complete as such (the ring stays mapped here) */
    if ((qp->ring != NULL) && (qp->ring_out > 0)) {
        sn_ring_progress(qp, in_svc);
    }
}

/* Reset the retry/transmit state and the connection of the QP. */
static void sn_qp_drop_conn(sn_qp_t *qp)
{
    sn_inst_t *inst = sn_qp_inst(qp);

    if (qp->ring != NULL) {
        sn_ring_cancel(qp);
        sn_ring_unmap(qp->ring);
        qp->ring = NULL;
        __atomic_fetch_sub(&inst->num_rings, 1, __ATOMIC_RELAXED);
    }
    qp->ring_prod       = 0;
    qp->ring_reaped     = 0;
    qp->ring_out        = 0;
    qp->ring_atomic_out = 0;
    sn_qp_batch_set(qp, 0); /* its WQEs are flushed or reset by the caller */
    if (qp->stream_id != 0) {
        sn_svc_drop_stream(inst, qp->stream_id);
    }
    __atomic_store_n(&qp->stream_id, 0, __ATOMIC_RELAXED);
    sn_req_set_corked(qp, 0); /* the socket is closed */
    qp->stream     = NULL;
    qp->stream_fd  = -1;
    qp->conn_state = SN_CONN_NONE;
    qp->same_host  = 0;
    qp->tx_blocked = 0;
    if (qp->peer_mrs != NULL) {
        sn_mr_table_unmap(qp->peer_mrs);
        qp->peer_mrs = NULL;
    }
}

/* Without the flush-order rule: what is outstanding completes newest first */
static void sn_qp_mutate_flush_order(sn_qp_t *qp)
{
    sn_wqe_t tmp, *a, *b;
    sn_recv_t rtmp;
    uint32_t i, n;

    for (i = 0, n = qp->sq_tail - qp->sq_head; i < n / 2; ++i) {
        a   = &qp->sq[(qp->sq_head + i) % qp->sq_size];
        b   = &qp->sq[(qp->sq_tail - 1 - i) % qp->sq_size];
        tmp = *a;
        *a  = *b;
        *b  = tmp;
    }
    for (i = 0, n = qp->rq.count; i < n / 2; ++i) {
        rtmp = qp->rq.ring[(qp->rq.head + i) % qp->rq.size];
        qp->rq.ring[(qp->rq.head + i) % qp->rq.size] =
            qp->rq.ring[(qp->rq.head + n - 1 - i) % qp->rq.size];
        qp->rq.ring[(qp->rq.head + n - 1 - i) % qp->rq.size] = rtmp;
    }
}

void sn_qp_to_error(sn_qp_t *qp)
{
    int entering = (qp->state != IBV_QPS_ERR);
    sn_recv_t recv;
    sn_wqe_t *wqe;
    uint32_t i;

    qp->state = IBV_QPS_ERR;
    /* same-host initiators execute nothing on it from now on (sn_int.h,
     * the QP table); a UD QP is not in the table's use */
    if (SN_RULE_CMA_ERR && (qp->super.qp_type == IBV_QPT_RC)) {
        sn_qp_table_set(sn_qp_inst(qp), qp->super.qp_num, SN_QPT_ERR);
    }
    sn_ring_cancel(qp);
    for (i = qp->sq_head; i != qp->sq_tail; ++i) {
        wqe = &qp->sq[i % qp->sq_size];
        if (wqe->state != SN_WQE_DONE) {
            wqe->state  = SN_WQE_DONE;
            wqe->status = IBV_WC_WR_FLUSH_ERR;
        }
    }
    qp->sq_tx          = qp->sq_tail;
    qp->tx_off         = 0;
    qp->sent_out       = 0;
    qp->rd_atomic_out  = 0;
    qp->rewind_pending = 0;
    qp->hold_until_ns  = 0;
    sn_qp_drop_conn(qp);
    if (!SN_RULE_FLUSH_ORDER) {
        sn_qp_mutate_flush_order(qp);
    }

    while (sn_rq_pop(&qp->rq, &recv) == 0) {
        sn_qp_push_recv_flush(qp, recv.wr_id);
    }
    sn_qp_complete(qp);
    /* its receives are the SRQ's: nothing more completes for it */
    if (entering && (qp->srq != NULL)) {
        sn_event(sn_qp_inst(qp), IBV_EVENT_QP_LAST_WQE_REACHED,
                 qp->super.qp_context);
    }
}

/* ---- transmission ------------------------------------------------------ */

/* sn_qp_cma: the CMA path is not usable (EPERM), the peer process is
 * gone (ESRCH), or the target QP is in ERR (its rights are revoked: the WR
 * goes on TCP, where the responder drops it, as a NIC in error does) or
 * below RTR (no rights yet: on TCP it is NAKed "not ready") */
#define SN_CMA_UNUSABLE   (-1)
#define SN_CMA_PEER_GONE  (-2)
#define SN_CMA_TARGET_ERR (-3)

static int sn_qp_cma(sn_qp_t *qp, const sn_wqe_t *wqe);

/* CMA found the peer's process gone: a dead peer (sn_qp_peer_lost) */
static void sn_qp_peer_gone(sn_qp_t *qp)
{
    sn_log(sn_qp_inst(qp), SOFTNIC_LOG_INFO, "qp 0x%x: peer process %d is gone",
           qp->super.qp_num, (int)qp->peer_pid);
    sn_qp_peer_lost(qp, 0);
}

/* Same host: run a WRITE/READ by CMA right now and mark it done; its
 * completion status, or -1 when it stays queued: the target QP is in ERR
 * (this WR goes on TCP), the peer turned out not to be reachable by CMA
 * (the QP uses TCP from then on), or its process is gone (the peer is
 * silent from then on, sn_qp_peer_lost). */
static int sn_qp_run_cma(sn_qp_t *qp, sn_wqe_t *wqe)
{
    int status = sn_qp_cma(qp, wqe);

    if (status == SN_CMA_TARGET_ERR) {
        return -1;
    }
    if (status == SN_CMA_PEER_GONE) {
        sn_qp_peer_gone(qp);
    }
    if (status < 0) {
        qp->same_host = 0;
        return -1;
    }
    wqe->state  = SN_WQE_DONE;
    wqe->status = status;
    return status;
}

static void sn_qp_apply_rewind(sn_qp_t *qp)
{
    sn_wqe_t *wqe;
    uint32_t i;

    for (i = qp->rewind_to; i != qp->sq_tx; ++i) {
        wqe = &qp->sq[i % qp->sq_size];
        if (wqe->state == SN_WQE_SENT) {
            wqe->state      = SN_WQE_QUEUED;
            wqe->done_bytes = 0;
            --qp->sent_out;
            qp->rd_atomic_out -= sn_opcode_is_rd_atomic(wqe->opcode);
        }
    }
    qp->sq_tx          = qp->rewind_to;
    qp->rewind_pending = 0;
}

/* QP lock held: the answers the frame of wqe reports (sn_wire.h): all the
 * QP has given its peer, and of those the ACKs that left in no frame yet
 * (neither on the target connection nor in an earlier request frame):
 * this frame carries them. The svc_lock holder sends what it owes once
 * SN_ACK_MAX answers or SN_ACK_BYTES wait (at the end of a step that took
 * at most SN_FRAMES_PER_EV frames per connection), so the count stays far
 * below ack_new's 16 bits. */
static void sn_qp_frame_acks(sn_qp_t *qp, sn_wqe_t *wqe)
{
    uint64_t word  = __atomic_load_n(&qp->rx_ack, __ATOMIC_ACQUIRE);
    uint32_t acked = (uint32_t)word, ahead = (uint32_t)(word >> 32);
    uint32_t carried = qp->ack_carried, owed;

    if (((int32_t)(carried - ahead) > 0) && ((int32_t)(carried - acked) <= 0)) {
        ahead = carried;
    }
    owed = ((int32_t)(acked - ahead) > 0) ? acked - ahead : 0;
    if (owed > 0xffff) { /* not reached, see above: report fewer */
        owed  = 0xffff;
        acked = ahead + owed;
    }
    wqe->acked   = acked;
    wqe->ack_new = (uint16_t)owed;
}

void sn_qp_tx(sn_qp_t *qp)
{
    int done_inline = 0;
    sn_wqe_t *wqe;
    uint64_t now = 0;
    int ret, status;

    if (qp->state != IBV_QPS_RTS) {
        return;
    }
    if (qp->conn_state != SN_CONN_READY) {
        return; /* connecting, or the peer is silent (sn_qp_timers) */
    }
    if (qp->cma_batch > 0) {
        sn_qp_cma_flush(qp); /* runs sn_qp_tx again for what is left */
        return;
    }

    for (;;) {
        if (qp->rewind_pending && (qp->tx_off == 0)) {
            sn_qp_apply_rewind(qp);
        }
        if (qp->sq_tx == qp->sq_tail) {
            break;
        }
        wqe = &qp->sq[qp->sq_tx % qp->sq_size];
        if (qp->tx_off == 0) {
            if (wqe->state == SN_WQE_DONE) {
                break; /* failed locally: nothing after it may start */
            }
            if (qp->hold_until_ns != 0) {
                now = sn_now_ns();
                if (now < qp->hold_until_ns) {
                    break;
                }
                qp->hold_until_ns = 0;
            }
            if (wqe->fence && (qp->rd_atomic_out > 0)) {
                break;
            }
            /* same host and nothing outstanding on TCP: a queued SEND may
             * join the ring, a queued WRITE/READ runs by CMA right here */
            if (qp->same_host && (!SN_RULE_PATH_ORDER || (qp->sent_out == 0)) &&
                !qp->rewind_pending) {
                if (sn_ring_post(qp, qp->sq_tx, 0)) {
                    continue;
                }
                if ((qp->sent_out == 0) && (qp->ring_out == 0) &&
                    ((wqe->opcode == IBV_WR_RDMA_WRITE) ||
                     (wqe->opcode == IBV_WR_RDMA_READ))) {
                    status = sn_qp_run_cma(qp, wqe);
                    if (status >= 0) {
                        ++qp->sq_tx;
                        done_inline = 1;
                        if (status != IBV_WC_SUCCESS) {
                            break; /* the QP goes to ERR: nothing more */
                        }
                        continue;
                    }
                    if (qp->conn_state != SN_CONN_READY) {
                        break; /* the peer process is gone */
                    }
                }
            }
            if (SN_RULE_PATH_ORDER && (qp->ring_out > 0)) {
                break; /* ring SENDs first: sn_ring_reap resumes */
            }
            if (!wqe->has_seq) {
                wqe->seq     = qp->tx_seq++;
                wqe->has_seq = 1;
            }
            sn_qp_frame_acks(qp, wqe);
            if ((qp->sent_out == 0) &&
                (!SN_RULE_NR_BUDGET || (qp->retry_count == 0))) {
                /* waiting starts (a resend after "not ready" NAKs goes on
                 * with the budget of the first send, sn_req.c) */
                qp->last_progress_ns = (now != 0) ? now : sn_now_ns();
            }
        }
        ret = sn_wire_send_req(qp, wqe);
        if (ret < 0) {
            break; /* the connection failed: the peer is silent */
        }
        if (ret == 0) {
            sn_svc_want_tx(qp);
            break;
        }
        qp->tx_off = 0;
        ++qp->sq_tx;
        if (wqe->state == SN_WQE_DONE) {
            continue; /* NAKed while it was written (sn_req_finish) */
        }
        wqe->state = SN_WQE_SENT;
        ++qp->sent_out;
        qp->rd_atomic_out += sn_opcode_is_rd_atomic(wqe->opcode);
    }
    if (done_inline) {
        sn_qp_complete(qp);
    }
}

uint64_t sn_qp_timers(sn_qp_t *qp, uint64_t now)
{
    uint64_t next = 0, limit, timeout;

    if (qp->state != IBV_QPS_RTS) {
        return 0;
    }
    next = sn_ring_timers(qp, now);
    if (qp->state != IBV_QPS_RTS) {
        return 0;
    }
    if (SN_RULE_BATCH_FLUSH && (qp->cma_batch > 0)) {
        sn_qp_cma_flush(qp); /* nobody polled: the backstop */
        if (qp->state != IBV_QPS_RTS) {
            return 0;
        }
    }
    if (SN_RULE_BATCH_FLUSH) {
        sn_req_push(qp); /* the same for frames held back */
    }
    if (qp->hold_until_ns != 0) {
        if (now >= qp->hold_until_ns) {
            sn_qp_tx(qp);
        }
        if ((qp->hold_until_ns != 0) &&
            ((next == 0) || (qp->hold_until_ns < next))) {
            next = qp->hold_until_ns;
        }
    }
    /* waiting for answers, for the connection, or for a peer that is
     * gone (silent: only the budget ends the wait, as on hardware) */
    if ((qp->sent_out > 0) || sn_ring_awaits_answer(qp) ||
        (SN_RULE_NR_BUDGET && (qp->retry_count > 0)) ||
        (((qp->conn_state == SN_CONN_CONNECTING) ||
          (qp->conn_state == SN_CONN_FAILED)) &&
         (qp->sq_head != qp->sq_tail))) {
        timeout = sn_qp_timeout_ns(qp);
        if (!SN_RULE_RETRY_BUDGET && (qp->conn_state == SN_CONN_FAILED)) {
            timeout = 1; /* without the rule: a dead peer fails at once */
        }
        if (timeout != 0) {
            if (qp->conn_state == SN_CONN_CONNECTING) {
                /* setting up the connection (no such step on hardware)
                 * gets a budget of its own, in one go; the QP's starts
                 * when it is up */
                timeout *= qp->attr.retry_cnt + 1;
                if (timeout < SN_CONNECT_BUDGET_NS) {
                    timeout = SN_CONNECT_BUDGET_NS;
                }
            }
            if (qp->tmo_progress_ns != qp->last_progress_ns) {
                /* progress since: the count starts over */
                qp->tmo_progress_ns = qp->last_progress_ns;
                qp->tmo_start_ns    = qp->last_progress_ns;
                qp->tmo_count       = 0;
            }
            limit = qp->tmo_start_ns + timeout;
            if (now < limit) {
                if ((next == 0) || (limit < next)) {
                    next = limit;
                }
            } else if ((qp->conn_state != SN_CONN_CONNECTING) &&
                       (qp->tmo_count < qp->attr.retry_cnt)) {
                /* one attempt ran out unanswered: as a NIC retransmits,
                 * the next one gets a whole timeout from now, however
                 * late this expiry is seen (this process, or the host,
                 * was not scheduled: the answer may be waiting unread) */
                ++qp->tmo_count;
                qp->tmo_start_ns = now;
                if ((next == 0) || (now + timeout < next)) {
                    next = now + timeout;
                }
            } else {
                sn_log(sn_qp_inst(qp), SOFTNIC_LOG_INFO,
                       "qp 0x%x: transport "
                       "retry counter exceeded",
                       qp->super.qp_num);
                sn_qp_fail_oldest(qp, IBV_WC_RETRY_EXC_ERR);
                sn_qp_complete(qp);
            }
        }
    } else if (SN_RULE_RNR_RENEW && (qp->ring != NULL) && (qp->ring_out > 0)) {
        /* the target's ring consumer waits for a receive for our SEND:
         * as a NIC's RNR NAKs, that renews the transport timer */
        qp->tmo_progress_ns = qp->last_progress_ns;
        qp->tmo_start_ns    = now;
        qp->tmo_count       = 0;
    }
    return next;
}

/* ---- same-host fast path ----------------------------------------------- */

/* QP lock held. Execute an RDMA WRITE/READ by one CMA call. Returns the
 * completion status, or SN_CMA_UNUSABLE / SN_CMA_PEER_GONE. */
static int sn_qp_cma_copy(sn_qp_t *qp, const sn_wqe_t *wqe, int access);

static int sn_qp_cma(sn_qp_t *qp, const sn_wqe_t *wqe)
{
    int access = (wqe->opcode == IBV_WR_RDMA_WRITE) ? IBV_ACCESS_REMOTE_WRITE
                                                    : IBV_ACCESS_REMOTE_READ;
    sn_mr_entry_t *entry;
    int status;

    if (wqe->length == 0) {
        return IBV_WC_SUCCESS;
    }
    switch (sn_qp_table_check(qp->peer_mrs, qp->attr.dest_qp_num, access)) {
    case SN_QPT_SILENT:
    case SN_QPT_NOT_READY:
        return SN_CMA_TARGET_ERR;
    case SN_QPT_DENIED:
        return IBV_WC_REM_ACCESS_ERR;
    default:
        break;
    }
    /* counted in the entry's users before the check: the target's dereg
     * cannot return while this copy is in flight */
    entry = sn_mr_enter(qp->peer_mrs, wqe->rkey);
    if (entry == NULL) {
        return IBV_WC_REM_ACCESS_ERR;
    }
    status = sn_qp_cma_copy(qp, wqe, access);
    sn_mr_leave(entry);
    return status;
}

/* Drop the first n bytes of the iovec array (*iov, *cnt) */
static void sn_iov_advance(struct iovec **iov, unsigned *cnt, size_t n)
{
    while ((*cnt > 0) && (n >= (*iov)->iov_len)) {
        n -= (*iov)->iov_len;
        ++*iov;
        --*cnt;
    }
    if (*cnt > 0) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + n;
        (*iov)->iov_len -= n;
    }
}

/* The local iovecs of a WRITE or READ, appended at local + *n */
static void sn_wqe_local_iov(const sn_wqe_t *wqe, struct iovec *local,
                             unsigned *n)
{
    unsigned i;

    if (wqe->is_inline) {
        local[*n].iov_base = (void *)wqe->inline_data;
        local[*n].iov_len  = wqe->length;
        ++*n;
        return;
    }
    for (i = 0; i < wqe->num_sge; ++i) {
        if (wqe->sge[i].length > 0) {
            local[*n].iov_base = (void *)(uintptr_t)wqe->sge[i].addr;
            local[*n].iov_len  = wqe->sge[i].length;
            ++*n;
        }
    }
}

/* Move total bytes between the local and the remote iovecs (consumed) by
 * CMA; *done_p: the bytes moved. Returns IBV_WC_SUCCESS, the status of the
 * operation the copy stopped in, SN_CMA_UNUSABLE when CMA is not permitted
 * or SN_CMA_PEER_GONE when the peer's process is gone. A partial
 * transfer (rare) stops at a remote iovec that could not be accessed: the
 * next call starts there and fails or goes on. */
static int sn_qp_cma_rw(sn_qp_t *qp, int access, struct iovec *local,
                        unsigned nlocal, struct iovec *remote, unsigned nremote,
                        uint64_t total, uint64_t *done_p)
{
    ssize_t ret;

    for (*done_p = 0; *done_p < total;) {
        if (access == IBV_ACCESS_REMOTE_WRITE) {
            ret = process_vm_writev(qp->peer_pid, local, nlocal, remote,
                                    nremote, 0);
        } else {
            ret = process_vm_readv(qp->peer_pid, local, nlocal, remote, nremote,
                                   0);
        }
        if ((ret < 0) && (errno == EINTR)) {
            continue;
        }
        if ((ret < 0) && (errno == EPERM)) {
            sn_log(sn_qp_inst(qp), SOFTNIC_LOG_INFO,
                   "qp 0x%x: CMA to pid %d "
                   "not permitted, using TCP",
                   qp->super.qp_num, (int)qp->peer_pid);
            return SN_CMA_UNUSABLE;
        }
        if (ret < 0) {
            return (errno == ESRCH) ? SN_CMA_PEER_GONE : IBV_WC_REM_ACCESS_ERR;
        }
        if (ret == 0) {
            return IBV_WC_REM_ACCESS_ERR;
        }
        *done_p += ret;
        sn_iov_advance(&local, &nlocal, ret);
        sn_iov_advance(&remote, &nremote, ret);
    }
    return IBV_WC_SUCCESS;
}

static int sn_qp_cma_copy(sn_qp_t *qp, const sn_wqe_t *wqe, int access)
{
    struct iovec local[SN_MAX_SGE], remote;
    sn_mr_snap_t snap;
    unsigned n = 0;
    uint64_t done;
    int status;

    if (sn_mr_check(qp->peer_mrs, wqe->rkey, qp->peer_pdn, wqe->raddr,
                    wqe->length, access, &snap) != 0) {
        return IBV_WC_REM_ACCESS_ERR;
    }
    sn_wqe_local_iov(wqe, local, &n);
    remote.iov_base = (void *)(uintptr_t)wqe->raddr;
    remote.iov_len  = wqe->length;
    status = sn_qp_cma_rw(qp, access, local, n, &remote, 1, wqe->length, &done);
    if ((status == IBV_WC_SUCCESS) && (access == IBV_ACCESS_REMOTE_READ) &&
        !sn_mr_still_valid(qp->peer_mrs, &snap)) {
        return IBV_WC_REM_ACCESS_ERR; /* deregistered during the copy */
    }
    return status;
}

/* A batch being executed: its WRITEs that passed their checks (the first
 * num of the batch), their entries entered, and the iovecs */
typedef struct sn_cma_batch {
    unsigned num;
    sn_mr_entry_t *entry[SN_CMA_BATCH];
    uint64_t end[SN_CMA_BATCH]; /* byte offset where WRITE i ends */
    uint64_t rewritten;         /* bit i: WRITE i is not copied (below) */
    struct iovec local[SN_CMA_BATCH * SN_MAX_SGE];
    struct iovec remote[SN_CMA_BATCH];
    unsigned nlocal, nremote;
    /* the last WRITE appended: where its local iovecs start, and whether
     * its remote range extended the previous iovec */
    unsigned last_local;
    int last_extended;
    int status; /* of WRITE num, if it failed; SN_CMA_TARGET_ERR: none ran */
} sn_cma_batch_t;

/* Append the iovecs of wqe; a remote range that continues the previous one
 * extends it (the kernel pins pages per remote iovec: a stream of WRITEs
 * to consecutive addresses costs as one) */
static void sn_cma_batch_append(sn_cma_batch_t *b, const sn_wqe_t *wqe)
{
    struct iovec *last;

    b->last_local = b->nlocal;
    sn_wqe_local_iov(wqe, b->local, &b->nlocal);
    if (b->nremote > 0) {
        last = &b->remote[b->nremote - 1];
        if ((uintptr_t)last->iov_base + last->iov_len == wqe->raddr) {
            last->iov_len += wqe->length;
            b->last_extended = 1;
            return;
        }
    }
    b->remote[b->nremote].iov_base = (void *)(uintptr_t)wqe->raddr;
    b->remote[b->nremote].iov_len  = wqe->length;
    ++b->nremote;
    b->last_extended = 0;
}

/* wqe passed its checks and writes exactly the bytes that prev, the
 * batch's WRITE before it, writes: the one copy would write prev's bytes
 * and then wqe's over them, so prev's iovecs leave the batch (the kernel
 * pins the target's pages once per remote iovec, the cost of a stream of
 * WRITEs to one buffer). prev completes when wqe's bytes are placed: its
 * end becomes wqe's (sn_cma_batch_prepare). Returns prev's length. */
static uint64_t sn_cma_batch_rewrite(sn_cma_batch_t *b, const sn_wqe_t *prev,
                                     const sn_wqe_t *wqe)
{
    if ((prev->length == 0) || (prev->raddr != wqe->raddr) ||
        (prev->length != wqe->length)) {
        return 0;
    }
    b->nlocal = b->last_local;
    if (b->last_extended) {
        b->remote[b->nremote - 1].iov_len -= prev->length;
    } else {
        --b->nremote;
    }
    b->rewritten |= 1ull << (b->num - 1);
    return prev->length;
}

/* Check and enter the batch's WRITEs in order, up to the first that fails
 * its checks (b->status then says why) */
static void sn_cma_batch_prepare(sn_qp_t *qp, sn_cma_batch_t *b)
{
    const sn_wqe_t *wqe, *prev = NULL;
    sn_mr_snap_t snap;
    uint64_t total = 0;
    unsigned i;

    b->nlocal = b->nremote = 0;
    b->num                 = 0;
    b->rewritten           = 0;
    b->status              = IBV_WC_SUCCESS;
    switch (sn_qp_table_check(qp->peer_mrs, qp->attr.dest_qp_num,
                              IBV_ACCESS_REMOTE_WRITE)) {
    case SN_QPT_SILENT:
    case SN_QPT_NOT_READY:
        b->status = SN_CMA_TARGET_ERR;
        return;
    case SN_QPT_DENIED:
        b->status = IBV_WC_REM_ACCESS_ERR;
        return;
    default:
        break;
    }
    for (b->num = 0; b->num < qp->cma_batch; ++b->num) {
        wqe              = &qp->sq[(qp->sq_tx + b->num) % qp->sq_size];
        b->entry[b->num] = NULL;
        if (wqe->length > 0) {
            /* counted in the entry's users before the check, as a single
             * WRITE: the target's dereg waits for the whole batch */
            b->entry[b->num] = sn_mr_enter(qp->peer_mrs, wqe->rkey);
            if ((b->entry[b->num] == NULL) ||
                (sn_mr_check(qp->peer_mrs, wqe->rkey, qp->peer_pdn, wqe->raddr,
                             wqe->length, IBV_ACCESS_REMOTE_WRITE,
                             &snap) != 0)) {
                if (b->entry[b->num] != NULL) {
                    sn_mr_leave(b->entry[b->num]);
                }
                b->status = IBV_WC_REM_ACCESS_ERR;
                break;
            }
            if (b->num > 0) {
                total -= sn_cma_batch_rewrite(b, prev, wqe);
            }
            sn_cma_batch_append(b, wqe);
        }
        total += wqe->length;
        b->end[b->num] = total;
        prev           = wqe;
    }
    /* a rewritten WRITE ends where the WRITE that rewrites it ends */
    for (i = b->num; i-- > 0;) {
        if (b->rewritten & (1ull << i)) {
            b->end[i] = b->end[i + 1];
        }
    }
}

void sn_qp_cma_flush(sn_qp_t *qp)
{
    sn_cma_batch_t b;
    sn_wqe_t *wqe;
    uint64_t done;
    unsigned i;
    int status;

    if (qp->cma_batch == 0) {
        return;
    }
    sn_cma_batch_prepare(qp, &b);
    status =
        sn_qp_cma_rw(qp, IBV_ACCESS_REMOTE_WRITE, b.local, b.nlocal, b.remote,
                     b.nremote, (b.num > 0) ? b.end[b.num - 1] : 0, &done);
    for (i = 0; i < b.num; ++i) {
        if (b.entry[i] != NULL) {
            sn_mr_leave(b.entry[i]);
        }
    }
    sn_qp_batch_set(qp, 0);

    /* the WRITEs the copy finished completed; the one it stopped in, or
     * the one that failed its checks, fails; those behind it stay queued
     * and are flushed when the failure moves the QP to ERR */
    for (i = 0; i < b.num; ++i) {
        if (done < b.end[i]) {
            break;
        }
        wqe         = &qp->sq[qp->sq_tx++ % qp->sq_size];
        wqe->state  = SN_WQE_DONE;
        wqe->status = IBV_WC_SUCCESS;
    }
    if (i < b.num) {
        if (status == SN_CMA_PEER_GONE) {
            sn_qp_peer_gone(qp); /* the rest waits for the budget */
        }
        if (status < 0) {
            qp->same_host = 0; /* the rest goes on TCP */
        } else {
            wqe         = &qp->sq[qp->sq_tx++ % qp->sq_size];
            wqe->state  = SN_WQE_DONE;
            wqe->status = status;
        }
    } else if (b.status == SN_CMA_TARGET_ERR) {
        /* nothing executed: the WRITEs stay queued and go on TCP */
    } else if (b.status != IBV_WC_SUCCESS) {
        wqe         = &qp->sq[qp->sq_tx++ % qp->sq_size];
        wqe->state  = SN_WQE_DONE;
        wqe->status = b.status;
    }
    sn_qp_complete(qp);
    if ((qp->state == IBV_QPS_RTS) && (qp->sq_tx != qp->sq_tail)) {
        sn_qp_tx(qp); /* fell back to TCP */
    }
}

/* QP lock held: may wqe (QUEUED, at sq_tail) join the QP's WRITE batch
 * instead of being executed now? See the header comment. */
static int sn_qp_may_batch(sn_qp_t *qp, const sn_wqe_t *wqe)
{
    return (wqe->opcode == IBV_WR_RDMA_WRITE) &&
           (wqe->state == SN_WQE_QUEUED) && (wqe->length <= SN_CMA_BATCH_LEN) &&
           qp->same_host && (qp->conn_state == SN_CONN_READY) &&
           !qp->rewind_pending && (qp->sent_out == 0) && (qp->ring_out == 0) &&
           (qp->cma_batch < SN_CMA_BATCH) &&
           (qp->sq_tx + qp->cma_batch == qp->sq_tail);
}

/* ---- post send / recv -------------------------------------------------- */

/* wqe's fields every send WQE sets (the inline and gather parts aside) */
static void sn_wqe_init(sn_qp_t *qp, sn_wqe_t *wqe, uint64_t wr_id,
                        enum ibv_wr_opcode opcode, unsigned send_flags,
                        uint64_t length)
{
    memset(wqe, 0, offsetof(sn_wqe_t, sge));
    wqe->wr_id  = wr_id;
    wqe->opcode = opcode;
    wqe->state  = SN_WQE_QUEUED;
    wqe->status = IBV_WC_SUCCESS;
    wqe->signaled =
        qp->init_attr.sq_sig_all || (send_flags & IBV_SEND_SIGNALED);
    wqe->fence     = SN_RULE_FENCE && (send_flags & IBV_SEND_FENCE);
    wqe->solicited = !!(send_flags & IBV_SEND_SOLICITED);
    wqe->length    = (uint32_t)length;
}

static int sn_wqe_build(sn_qp_t *qp, const struct ibv_send_wr *wr,
                        sn_wqe_t *wqe)
{
    sn_inst_t *inst = sn_qp_inst(qp);
    sn_mr_snap_t snap;
    uint64_t length = 0;
    int i, local_access;

    if ((wr->num_sge < 0) ||
        ((uint32_t)wr->num_sge > qp->init_attr.cap.max_send_sge) ||
        ((wr->num_sge > 0) && (wr->sg_list == NULL))) {
        return EINVAL;
    }
    switch (wr->opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
    case IBV_WR_RDMA_READ:
        break;
    case IBV_WR_ATOMIC_CMP_AND_SWP:
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
        if ((wr->num_sge != 1) || (wr->sg_list[0].length != 8) ||
            (wr->send_flags & IBV_SEND_INLINE)) {
            return EINVAL;
        }
        break;
    default:
        return EINVAL;
    }
    for (i = 0; i < wr->num_sge; ++i) {
        length += wr->sg_list[i].length;
    }
    if (length > SN_MAX_MSG) {
        return EINVAL;
    }

    sn_wqe_init(qp, wqe, wr->wr_id, wr->opcode, wr->send_flags, length);
    wqe->num_sge = wr->num_sge;
    wqe->imm     = wr->imm_data;
    if (sn_opcode_is_atomic(wr->opcode)) {
        wqe->rkey        = wr->wr.atomic.rkey;
        wqe->raddr       = wr->wr.atomic.remote_addr;
        wqe->compare_add = wr->wr.atomic.compare_add;
        wqe->swap        = wr->wr.atomic.swap;
    } else if ((wr->opcode != IBV_WR_SEND) &&
               (wr->opcode != IBV_WR_SEND_WITH_IMM)) {
        wqe->rkey  = wr->wr.rdma.rkey;
        wqe->raddr = wr->wr.rdma.remote_addr;
    }

    if ((wr->send_flags & IBV_SEND_INLINE) && (length > 0)) {
        if ((wr->opcode == IBV_WR_RDMA_READ) ||
            (length > qp->init_attr.cap.max_inline_data)) {
            return EINVAL;
        }
        for (i = 0, length = 0; i < wr->num_sge; ++i) {
            if (wr->sg_list[i].length == 0) {
                continue; /* its address may be anything, even NULL */
            }
            memcpy(wqe->inline_data + length,
                   (void *)(uintptr_t)wr->sg_list[i].addr,
                   wr->sg_list[i].length);
            length += wr->sg_list[i].length;
        }
        wqe->is_inline = 1;
        return 0;
    }

    if (wr->num_sge > 0) { /* sg_list may be NULL without entries */
        memcpy(wqe->sge, wr->sg_list, sizeof(*wr->sg_list) * wr->num_sge);
    }
    local_access =
        sn_opcode_is_rd_atomic(wr->opcode) ? IBV_ACCESS_LOCAL_WRITE : 0;
    for (i = 0; i < wr->num_sge; ++i) {
        if ((wr->sg_list[i].length > 0) &&
            (sn_mr_check(inst->mrs, wr->sg_list[i].lkey, qp->pdn,
                         wr->sg_list[i].addr, wr->sg_list[i].length,
                         local_access, &snap) != 0)) {
            wqe->state  = SN_WQE_DONE;
            wqe->status = IBV_WC_LOC_PROT_ERR;
            break;
        }
    }
    return 0;
}

/* The WQE of softnic_post_send_inline() (see softnic.h): EINVAL for
 * another opcode or more than max_inline_data bytes */
static SN_ALWAYS_INLINE int
sn_wqe_build_inline(sn_qp_t *qp, const softnic_inline_wr_t *wr, sn_wqe_t *wqe)
{
    uint64_t length = (uint64_t)wr->hdr_len + wr->len;

    if (((wr->opcode != IBV_WR_SEND) && (wr->opcode != IBV_WR_RDMA_WRITE)) ||
        (length > qp->init_attr.cap.max_inline_data)) {
        return EINVAL;
    }
    sn_wqe_init(qp, wqe, wr->wr_id, wr->opcode, wr->send_flags, length);
    if (wr->opcode == IBV_WR_RDMA_WRITE) {
        wqe->rkey  = wr->rkey;
        wqe->raddr = wr->remote_addr;
    }
    if (wr->hdr_len > 0) { /* an empty part's address may be NULL */
        memcpy(wqe->inline_data, wr->hdr, wr->hdr_len);
    }
    if (wr->len > 0) {
        memcpy(wqe->inline_data + wr->hdr_len, wr->data, wr->len);
    }
    wqe->is_inline = 1;
    return 0;
}

/* Whether sn_post_send() takes wr as softnic_post_send_inline() takes its
 * pieces (sn_wqe_build_short()): an inline SEND or RDMA WRITE of one or two
 * pieces, not all empty, within max_send_sge (put_short's and am_short's
 * WR, one per post), for which sn_wqe_build() would build the same WQE by
 * its general walk; it refuses it alike (EINVAL: more than max_inline_data
 * bytes) */
static SN_ALWAYS_INLINE int sn_wr_is_short(const sn_qp_t *qp,
                                           const struct ibv_send_wr *wr)
{
    const struct ibv_sge *sg = wr->sg_list;

    if (!(wr->send_flags & IBV_SEND_INLINE) ||
        ((wr->opcode != IBV_WR_RDMA_WRITE) && (wr->opcode != IBV_WR_SEND)) ||
        (wr->num_sge < 1) || (wr->num_sge > 2) ||
        ((uint32_t)wr->num_sge > qp->init_attr.cap.max_send_sge) ||
        (sg == NULL)) {
        return 0;
    }
    return (sg[0].length > 0) || ((wr->num_sge == 2) && (sg[1].length > 0));
}

/* The WQE of wr (sn_wr_is_short()): its pieces as an inline WR's */
static SN_ALWAYS_INLINE int
sn_wqe_build_short(sn_qp_t *qp, const struct ibv_send_wr *wr, sn_wqe_t *wqe)
{
    const struct ibv_sge *sg = wr->sg_list;
    int two                  = (wr->num_sge == 2);
    softnic_inline_wr_t iwr;

    iwr.wr_id       = wr->wr_id;
    iwr.opcode      = wr->opcode;
    iwr.send_flags  = wr->send_flags;
    iwr.remote_addr = wr->wr.rdma.remote_addr;
    iwr.rkey        = wr->wr.rdma.rkey;
    iwr.hdr_len     = sg[0].length;
    iwr.hdr         = (const void *)(uintptr_t)sg[0].addr;
    iwr.len         = two ? sg[1].length : 0;
    iwr.data        = two ? (const void *)(uintptr_t)sg[1].addr : NULL;
    return sn_wqe_build_inline(qp, &iwr, wqe);
}

/* QP lock held: a post that counts for the stream started at start (see
 * sn_int.h, post_streak): does the application stream? */
static int sn_qp_streak(sn_qp_t *qp, uint64_t start)
{
    qp->post_streak =
        (start - qp->post_end_ns < SN_BATCH_GAP_NS) ? qp->post_streak + 1 : 0;
    return qp->post_streak >= SN_BATCH_STREAK;
}

/* sn_post_t.start of a same-host post whose first WRITE that may join the
 * batch came after a wait (sn_qp_waited): it ends the stream, as a post
 * that does not count, and reads no clock */
#define SN_POST_WAITED 1

/* QP lock held: a post starts. On a QP whose requests go on TCP every post
 * counts for the stream (sn_int.h, "Request coalescing"): returns the clock
 * at its start; else 0 (a same-host QP counts its posts at their first
 * WRITE that may join the batch, sn_qp_streak()) */
static uint64_t sn_qp_stream_begin(sn_qp_t *qp)
{
    uint64_t now;

    if (qp->same_host || (qp->conn_state != SN_CONN_READY)) {
        return 0;
    }
    now           = sn_now_ns();
    qp->tx_stream = sn_qp_streak(qp, now);
    return now;
}

/* QP lock held: the post that read the clock at start (0: never,
 * SN_POST_WAITED: it came after a wait) returns; batched_only: all it did
 * was add WRITEs to the batch */
static void sn_qp_stream_end(sn_qp_t *qp, uint64_t start, int batched_only)
{
    qp->tx_stream = 0; /* frames written outside a post are never held back */
    if (start <= SN_POST_WAITED) {
        /* it did not count (a same-host post with no WRITE for the batch,
         * a post before the connection is up) or came after a wait: the
         * stream, if any, ends here (and a same-host SEND or READ, or a
         * ping-pong's WRITE, reads no clock: ~50 ns each in a guest) */
        qp->post_streak = 0;
        qp->post_end_ns = 0;
    } else {
        /* a post that only added WRITEs to the batch took a fraction of
         * the gap: its start stands for its return (one clock read) */
        qp->post_end_ns = batched_only ? start : sn_now_ns();
    }
}

/* QP lock held: has the application waited since the QP's previous post
 * with a WRITE that may join the batch (the second empty poll of one of its
 * CQs since; see the header comment)? */
static SN_ALWAYS_INLINE int sn_qp_waited(sn_qp_t *qp)
{
    uint32_t polls[2];
    int waited;

    polls[0] = __atomic_load_n(&qp->send_cq->empty_polls, __ATOMIC_RELAXED);
    polls[1] = __atomic_load_n(&qp->recv_cq->empty_polls, __ATOMIC_RELAXED);
    waited   = (polls[0] - qp->polls_seen[0] >= 2) ||
             (polls[1] - qp->polls_seen[1] >= 2);
    qp->polls_seen[0] = polls[0];
    qp->polls_seen[1] = polls[1];
    return waited;
}

/* One post call on an RC QP, from sn_post_begin() to sn_post_end(): every
 * send entry (softnic_post_send(), _now(), _inline()) queues its WQEs
 * through sn_post_slot() and sn_post_wqe(), under the QP lock */
typedef struct sn_post {
    uint64_t start;   /* the clock when the post counted for the stream
                         (SN_POST_WAITED: it starts a new one) */
    int batched_only; /* all it did was add WRITEs to the batch */
    int *done_p;      /* softnic_post_send_now(), else NULL */
    int single;       /* the post has one WR */
    int posted;       /* WQEs queued or flushed */
    sn_wqe_t flushed; /* the WQE of a post to a QP in ERR */
} sn_post_t;

/* QP lock held: the post's first WRITE that may join the batch, on a
 * same-host QP: the post counts for the stream from here (post->start), or,
 * after a wait (sn_qp_waited), ends it (SN_POST_WAITED) */
static SN_ALWAYS_INLINE void sn_qp_batch_streak(sn_qp_t *qp, sn_post_t *post)
{
    if (sn_qp_waited(qp)) {
        qp->post_streak = 0;
        post->start     = SN_POST_WAITED;
        return;
    }
    post->start = sn_now_ns();
    sn_qp_streak(qp, post->start);
}

/* Takes the QP lock: a post starts */
static SN_ALWAYS_INLINE void sn_post_begin(sn_qp_t *qp, sn_post_t *post,
                                           int *done_p, int single)
{
    pthread_mutex_lock(&qp->lock);
    if (qp->ring_out > 0) {
        sn_ring_progress(qp, 0); /* frees the fast paths if consumed */
    }
    post->start        = sn_qp_stream_begin(qp);
    post->batched_only = 1;
    post->done_p       = done_p;
    post->single       = single;
    post->posted       = 0;
}

/* QP lock held: where the post builds its next WQE: the send queue's tail
 * slot, or post->flushed on a QP in ERR (it completes flushed, in posting
 * order); NULL when the QP takes none: *ret is EINVAL (not RTS or ERR) or
 * ENOMEM (the send queue is full) */
static SN_ALWAYS_INLINE sn_wqe_t *sn_post_slot(sn_qp_t *qp, sn_post_t *post,
                                               int *ret)
{
    if (qp->state == IBV_QPS_ERR) {
        return &post->flushed;
    }
    if (qp->state != IBV_QPS_RTS) {
        *ret = EINVAL;
        return NULL;
    }
    if (qp->sq_tail - qp->sq_head == qp->sq_size) {
        *ret = ENOMEM;
        return NULL;
    }
    return &qp->sq[qp->sq_tail % qp->sq_size];
}

/* QP lock held: a WRITE that may join the batch counts for the stream
 * (sn_qp_batch_streak); returns whether it runs now instead, as a READ
 * does: the post's one WR, after a wait, with nothing before it (a batch
 * of its own, flushed at the post's end, would do the same with more
 * work) */
static SN_ALWAYS_INLINE int sn_post_alone(sn_qp_t *qp, sn_post_t *post)
{
    if (post->start == 0) {
        sn_qp_batch_streak(qp, post);
    }
    return post->single && (post->start == SN_POST_WAITED) &&
           (qp->cma_batch == 0) && (qp->sq_head == qp->sq_tail);
}

/* QP lock held: wqe, built where sn_post_slot() said, is queued: it joins
 * the WRITE batch, runs here (same host), goes into the ring or waits for
 * TCP; or completes at once (flushed, a failed local check) */
static SN_ALWAYS_INLINE void sn_post_wqe_run(sn_qp_t *qp, sn_post_t *post,
                                             sn_wqe_t *wqe)
{
    if (sn_qp_may_batch(qp, wqe) && !sn_post_alone(qp, post)) {
        ++qp->sq_tail;
        sn_qp_batch_set(qp, qp->cma_batch + 1);
        if (qp->cma_batch == SN_CMA_BATCH) {
            sn_qp_cma_flush(qp);
            post->batched_only = 0;
        }
        return;
    }
    post->batched_only = 0;
    if (qp->cma_batch > 0) {
        sn_qp_cma_flush(qp); /* nothing overtakes the batch */
        if (qp->state != IBV_QPS_RTS) {
            /* a WRITE of the batch failed: this WR comes after it */
            wqe->status = IBV_WC_WR_FLUSH_ERR;
            sn_qp_push_send_wc(qp, wqe);
            return;
        }
    }

    /* same host, nothing outstanding: WRITE/READ right here */
    if ((wqe->state == SN_WQE_QUEUED) && qp->same_host &&
        (qp->sq_head == qp->sq_tail) && !qp->rewind_pending &&
        (qp->conn_state == SN_CONN_READY) &&
        ((wqe->opcode == IBV_WR_RDMA_WRITE) ||
         (wqe->opcode == IBV_WR_RDMA_READ))) {
        /* -1: stays queued for TCP */
        if ((sn_qp_run_cma(qp, wqe) == IBV_WC_SUCCESS) &&
            (post->done_p != NULL)) {
            wqe->signaled = 0; /* the caller completes it: no entry */
            *post->done_p = 1;
            /* its completion came within the post: as one that a poll
             * returns, it ends the thread's run of empty polls (sn_int.h,
             * "Polling") */
            sn_cq_run_end();
        }
    } else if (sn_ring_post(qp, qp->sq_tail, 1)) {
        ++qp->sq_tail;
        return;
    }
    ++qp->sq_tail;
    if (qp->sq_head + 1 == qp->sq_tail) {
        sn_qp_complete(qp);
    }
}

/* sn_post_wqe_run, and a WR that stays outstanding on a QP that had none
 * starts the QP's transport budget (last_progress_ns, read by the timers
 * under the QP lock this post holds): a WR that completed within its post
 * (a same-host WRITE or READ run here) reads no clock */
static SN_ALWAYS_INLINE void sn_post_wqe(sn_qp_t *qp, sn_post_t *post,
                                         sn_wqe_t *wqe)
{
    int idle = (qp->sq_head == qp->sq_tail);

    ++post->posted;
    if (wqe == &post->flushed) {
        wqe->status = IBV_WC_WR_FLUSH_ERR;
        sn_qp_push_send_wc(qp, wqe);
        return;
    }
    sn_post_wqe_run(qp, post, wqe);
    if (idle && (qp->sq_head != qp->sq_tail)) {
        qp->last_progress_ns = sn_stamp_ns();
    }
}

/* QP lock held: the post ends (its WQEs go out), releases the lock */
static SN_ALWAYS_INLINE void sn_post_end(sn_qp_t *qp, sn_post_t *post)
{
    /* a batch waits for its flush only within a stream (see the header
     * comment) */
    if ((qp->cma_batch == 0) || (qp->post_streak < SN_BATCH_STREAK) ||
        (qp->ring == NULL)) {
        sn_qp_tx(qp); /* flushes the batch first */
        post->batched_only = 0;
    }
    sn_qp_complete(qp);
    sn_qp_stream_end(qp, post->start, post->batched_only);
    pthread_mutex_unlock(&qp->lock);
    if ((post->posted > 0) &&
        __atomic_load_n(&sn_qp_inst(qp)->num_tcp_streams, __ATOMIC_RELAXED)) {
        /* the service thread counts posts as polling (sn_int.h); only
         * with TCP connections, the one-host paths stay without the add */
        __atomic_fetch_add(&sn_qp_inst(qp)->posts, 1, __ATOMIC_RELAXED);
    }
}

/* softnic_post_send(); done_p (not NULL: one WR) as softnic_post_send_now()
 * says */
static int sn_post_send(sn_qp_t *qp, struct ibv_send_wr *wr,
                        struct ibv_send_wr **bad_wr, int *done_p)
{
    sn_post_t post;
    sn_wqe_t *wqe;
    int ret = 0;

    if (qp->super.qp_type == IBV_QPT_UD) {
        return sn_ud_post_send(qp, wr, bad_wr);
    }
    sn_post_begin(qp, &post, done_p, (wr != NULL) && (wr->next == NULL));
    for (; wr != NULL; wr = wr->next) {
        wqe = sn_post_slot(qp, &post, &ret);
        if (wqe == NULL) {
            break;
        }
        ret = sn_wr_is_short(qp, wr) ? sn_wqe_build_short(qp, wr, wqe)
                                     : sn_wqe_build(qp, wr, wqe);
        if (ret != 0) {
            break;
        }
        sn_post_wqe(qp, &post, wqe);
    }
    if (ret != 0) {
        *bad_wr = wr;
    }
    sn_post_end(qp, &post);
    return ret;
}

int softnic_post_send(softnic_qp_t *qp, struct ibv_send_wr *wr,
                      struct ibv_send_wr **bad_wr)
{
    return sn_post_send((sn_qp_t *)qp, wr, bad_wr, NULL);
}

int softnic_post_send_now(softnic_qp_t *qp, struct ibv_send_wr *wr,
                          struct ibv_send_wr **bad_wr, int *done_p)
{
    *done_p = 0;
    if ((wr == NULL) || (wr->next != NULL)) {
        *bad_wr = wr;
        return EINVAL;
    }
    return sn_post_send((sn_qp_t *)qp, wr, bad_wr, done_p);
}

int softnic_post_send_inline(softnic_qp_t *qp_h, const softnic_inline_wr_t *wr)
{
    sn_qp_t *qp = (sn_qp_t *)qp_h;
    sn_post_t post;
    sn_wqe_t *wqe;
    int ret = 0;

    if (qp->super.qp_type != IBV_QPT_RC) {
        return EINVAL;
    }
    sn_post_begin(qp, &post, NULL, 1);
    wqe = sn_post_slot(qp, &post, &ret);
    if (wqe != NULL) {
        ret = sn_wqe_build_inline(qp, wr, wqe);
        if (ret == 0) {
            sn_post_wqe(qp, &post, wqe);
        }
    }
    sn_post_end(qp, &post);
    return ret;
}

int softnic_post_recv(softnic_qp_t *qp_h, struct ibv_recv_wr *wr,
                      struct ibv_recv_wr **bad_wr)
{
    sn_qp_t *qp = (sn_qp_t *)qp_h;
    int ret     = 0;

    pthread_mutex_lock(&qp->lock);
    for (; wr != NULL; wr = wr->next) {
        if ((qp->srq != NULL) || (qp->state == IBV_QPS_RESET)) {
            ret = EINVAL;
            break;
        }
        if ((wr->num_sge < 0) ||
            ((uint32_t)wr->num_sge > qp->init_attr.cap.max_recv_sge)) {
            ret = EINVAL;
            break;
        }
        if (qp->state == IBV_QPS_ERR) {
            sn_qp_push_recv_flush(qp, wr->wr_id);
            continue;
        }
        ret = sn_rq_push(&qp->rq, wr, qp->init_attr.cap.max_recv_sge);
        if (ret != 0) {
            break;
        }
        __atomic_store_n(&qp->rq_used, 1, __ATOMIC_RELAXED);
    }
    if (ret != 0) {
        *bad_wr = wr;
    }
    pthread_mutex_unlock(&qp->lock);
    return ret;
}

/* ---- create / destroy / query ------------------------------------------ */

sn_qp_t *sn_qp_find(sn_inst_t *inst, uint32_t qpn)
{
    sn_qp_t *qp = inst->qp_slots[qpn & (SN_MAX_QP - 1)];

    return ((qp != NULL) && (qp->super.qp_num == qpn)) ? qp : NULL;
}

static void sn_qp_reset_attr(sn_qp_t *qp)
{
    memset(&qp->attr, 0, sizeof(qp->attr));
    qp->attr.path_mtu       = IBV_MTU_4096;
    qp->attr.port_num       = 1;
    qp->attr.qp_state       = IBV_QPS_RESET;
    qp->attr.path_mig_state = IBV_MIG_MIGRATED;
}

softnic_qp_t *softnic_qp_create(softnic_pd_t *pd, softnic_qp_init_attr_t *attr)
{
    sn_inst_t *inst = sn_inst(pd->dev);
    sn_qp_t *qp;
    struct ibv_qp_cap *cap = &attr->cap;
    uint32_t slot, gen, gen_bits;

    if (((attr->qp_type != IBV_QPT_RC) && (attr->qp_type != IBV_QPT_UD)) ||
        (attr->send_cq == NULL) || (attr->recv_cq == NULL) ||
        (attr->send_cq->dev != pd->dev) || (attr->recv_cq->dev != pd->dev) ||
        ((attr->srq != NULL) && (attr->srq->pd->dev != pd->dev)) ||
        (cap->max_send_wr > SN_MAX_QP_WR) || (cap->max_send_sge > SN_MAX_SGE) ||
        (cap->max_inline_data > SN_MAX_INLINE) ||
        ((attr->srq == NULL) && ((cap->max_recv_wr > SN_MAX_QP_WR) ||
                                 (cap->max_recv_sge > SN_MAX_SGE)))) {
        errno = EINVAL;
        return NULL;
    }

    qp = calloc(1, sizeof(*qp));
    if (qp == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    qp->sq_size = (cap->max_send_wr > 0) ? cap->max_send_wr : 1;
    qp->sq      = calloc(qp->sq_size, sizeof(*qp->sq));
    if (qp->sq == NULL) {
        goto err_free_qp;
    }
    if (sn_rq_init(&qp->rq, (attr->srq == NULL) ? cap->max_recv_wr : 0) != 0) {
        goto err_free_sq;
    }

    pthread_mutex_init(&qp->lock, NULL);
    qp->super.pd         = pd;
    qp->super.qp_context = attr->qp_context;
    qp->super.qp_type    = attr->qp_type;
    qp->init_attr        = *attr;
    if (attr->srq != NULL) {
        qp->init_attr.cap.max_recv_wr  = 0;
        qp->init_attr.cap.max_recv_sge = 0;
    }
    qp->pdn       = ((sn_pd_t *)pd)->pdn;
    qp->send_cq   = (sn_cq_t *)attr->send_cq;
    qp->recv_cq   = (sn_cq_t *)attr->recv_cq;
    qp->srq       = (sn_srq_t *)attr->srq;
    qp->state     = IBV_QPS_RESET;
    qp->stream_fd = -1;
    sn_qp_reset_attr(qp);

    pthread_mutex_lock(&inst->lock);
    if (inst->num_qps >= SN_MAX_QP) {
        pthread_mutex_unlock(&inst->lock);
        errno = ENOMEM;
        goto err_destroy;
    }
    /* QPN = (generation << 12) | slot, generation never 0 (so neither is
     * the QPN, nor 1); addressed by QPN: the listener's port offset in the
     * top bits and a 2-bit generation */
    for (slot = 0; inst->qp_slots[slot] != NULL; ++slot) {
    }
    gen_bits             = (inst->config.qpn_port_base == 0)
                               ? 24 - SN_QP_INDEX_BITS
                               : SOFTNIC_QPN_PORT_SHIFT - SN_QP_INDEX_BITS;
    gen                  = (inst->qp_gen[slot] % ((1u << gen_bits) - 1)) + 1;
    inst->qp_gen[slot]   = gen;
    inst->qp_slots[slot] = qp;
    qp->super.qp_num     = ((uint32_t)gen << SN_QP_INDEX_BITS) | slot;
    if (inst->config.qpn_port_base != 0) {
        qp->super.qp_num |=
            (uint32_t)(inst->listen_port - inst->config.qpn_port_base)
            << SOFTNIC_QPN_PORT_SHIFT;
    }
    sn_qp_table_set(inst, qp->super.qp_num, SN_QPT_BELOW_RTR); /* RESET */
    if ((sn_cq_add_qp(qp->send_cq, qp) != 0) ||
        ((qp->recv_cq != qp->send_cq) &&
         (sn_cq_add_qp(qp->recv_cq, qp) != 0))) {
        sn_cq_del_qp(qp->send_cq, qp);
        inst->qp_slots[slot] = NULL;
        pthread_mutex_unlock(&inst->lock);
        errno = ENOMEM;
        goto err_destroy;
    }
    qp->next  = inst->qps;
    inst->qps = qp;
    ++inst->num_qps;
    if (qp->super.qp_type == IBV_QPT_UD) {
        __atomic_fetch_add(&inst->num_ud_qps, 1, __ATOMIC_RELAXED);
    }
    ++qp->send_cq->num_qps;
    ++qp->recv_cq->num_qps;
    if (qp->srq != NULL) {
        ++qp->srq->num_qps;
    }
    pthread_mutex_unlock(&inst->lock);

    attr->cap = qp->init_attr.cap;
    return &qp->super;

err_destroy:
    pthread_mutex_destroy(&qp->lock);
    free(qp->rq.ring);
err_free_sq:
    free(qp->sq);
err_free_qp:
    free(qp);
    if (errno != EINVAL) {
        errno = ENOMEM;
    }
    return NULL;
}

int softnic_qp_destroy(softnic_qp_t *qp_h)
{
    sn_qp_t *qp     = (sn_qp_t *)qp_h;
    sn_inst_t *inst = sn_qp_inst(qp);
    sn_qp_t **pp;

    pthread_mutex_lock(&inst->lock);
    for (pp = &inst->qps; (*pp != NULL) && (*pp != qp); pp = &(*pp)->next) {
    }
    if (*pp == NULL) {
        pthread_mutex_unlock(&inst->lock);
        return EINVAL;
    }
    *pp                                                = qp->next;
    inst->qp_slots[qp->super.qp_num & (SN_MAX_QP - 1)] = NULL;
    sn_cq_del_qp(qp->send_cq, qp);
    sn_cq_del_qp(qp->recv_cq, qp);
    sn_qp_table_set(inst, qp->super.qp_num, 0); /* no access */
    --inst->num_qps;
    if (qp->super.qp_type == IBV_QPT_UD) {
        __atomic_fetch_sub(&inst->num_ud_qps, 1, __ATOMIC_RELAXED);
    }
    --qp->send_cq->num_qps;
    --qp->recv_cq->num_qps;
    if (qp->srq != NULL) {
        --qp->srq->num_qps;
    }
    pthread_mutex_unlock(&inst->lock);

    pthread_mutex_lock(&qp->lock);
    qp->state = IBV_QPS_RESET;
    sn_qp_drop_conn(qp);
    pthread_mutex_unlock(&qp->lock);

    /* after this the service thread holds no reference to the QP */
    sn_svc_forget_qp(inst, qp);

    pthread_mutex_destroy(&qp->lock);
    free(qp->rq.ring);
    free(qp->sq);
    free(qp);
    return 0;
}

int softnic_qp_query(softnic_qp_t *qp_h, struct ibv_qp_attr *attr,
                     int attr_mask, softnic_qp_init_attr_t *init_attr)
{
    sn_qp_t *qp = (sn_qp_t *)qp_h;

    (void)attr_mask; /* everything is returned, as libibverbs providers do */
    pthread_mutex_lock(&qp->lock);
    *attr              = qp->attr;
    attr->qp_state     = qp->state;
    attr->cur_qp_state = qp->state;
    attr->cap          = qp->init_attr.cap;
    if (init_attr != NULL) {
        *init_attr = qp->init_attr;
    }
    pthread_mutex_unlock(&qp->lock);
    return 0;
}

/* ---- modify: the RC state machine --------------------------------------- */

#define SN_QP_PATH_OPT (IBV_QP_ALT_PATH | IBV_QP_PATH_MIG_STATE)

/* Required and optional attribute masks of an RC transition (IB spec
 * 11.2.5 / ibv_modify_qp(3)); returns -1 for an illegal transition. */
static int sn_qp_trans(enum ibv_qp_state cur, enum ibv_qp_state next,
                       int *req_p, int *opt_p)
{
    *req_p = IBV_QP_STATE;
    *opt_p = 0;
    if ((next == IBV_QPS_RESET) || (next == IBV_QPS_ERR)) {
        return 0; /* from any state */
    }
    switch (cur) {
    case IBV_QPS_RESET:
        if (next != IBV_QPS_INIT) {
            return -1;
        }
        *req_p |= IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;
        return 0;
    case IBV_QPS_INIT:
        if (next == IBV_QPS_INIT) {
            *req_p = 0;
            *opt_p = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                     IBV_QP_ACCESS_FLAGS;
            return 0;
        }
        if (next != IBV_QPS_RTR) {
            return -1;
        }
        *req_p |= IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                  IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
                  IBV_QP_MIN_RNR_TIMER;
        *opt_p = IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX;
        return 0;
    case IBV_QPS_RTR:
        if (next != IBV_QPS_RTS) {
            return -1;
        }
        *req_p |= IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                  IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC;
        *opt_p = IBV_QP_CUR_STATE | IBV_QP_ACCESS_FLAGS | IBV_QP_MIN_RNR_TIMER |
                 SN_QP_PATH_OPT;
        return 0;
    case IBV_QPS_RTS:
        if (next != IBV_QPS_RTS) {
            return -1;
        }
        *req_p = 0;
        *opt_p = IBV_QP_STATE | IBV_QP_CUR_STATE | IBV_QP_ACCESS_FLAGS |
                 IBV_QP_MIN_RNR_TIMER | SN_QP_PATH_OPT;
        return 0;
    default:
        return -1;
    }
}

static int sn_qp_check_values(const sn_qp_t *qp, const struct ibv_qp_attr *attr,
                              int mask)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0,    0,
                                         0, 0, 0, 0, 0xff, 0xff};
    const int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                       IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;

    if ((mask & IBV_QP_CUR_STATE) && (attr->cur_qp_state != qp->state)) {
        return -1;
    }
    if ((mask & IBV_QP_PKEY_INDEX) && (attr->pkey_index != 0)) {
        return -1;
    }
    if ((mask & IBV_QP_PORT) && (attr->port_num != 1)) {
        return -1;
    }
    if ((mask & IBV_QP_ACCESS_FLAGS) &&
        (attr->qp_access_flags & ~(unsigned)access)) {
        return -1;
    }
    if ((mask & IBV_QP_AV) &&
        (!attr->ah_attr.is_global ||
         ((attr->ah_attr.dlid == 0) &&
          (sn_qp_inst((sn_qp_t *)qp)->config.qpn_port_base == 0)) ||
         (attr->ah_attr.port_num != 1) ||
         memcmp(attr->ah_attr.grh.dgid.raw, v4mapped, sizeof(v4mapped)))) {
        return -1;
    }
    if ((mask & IBV_QP_PATH_MTU) &&
        ((attr->path_mtu < IBV_MTU_256) || (attr->path_mtu > IBV_MTU_4096))) {
        return -1;
    }
    if ((mask & IBV_QP_DEST_QPN) && (attr->dest_qp_num > 0xffffff)) {
        return -1;
    }
    if ((mask & IBV_QP_RQ_PSN) && (attr->rq_psn > 0xffffff)) {
        return -1;
    }
    if ((mask & IBV_QP_SQ_PSN) && (attr->sq_psn > 0xffffff)) {
        return -1;
    }
    if ((mask & IBV_QP_MAX_DEST_RD_ATOMIC) &&
        (attr->max_dest_rd_atomic > SN_MAX_RD_ATOMIC)) {
        return -1;
    }
    if ((mask & IBV_QP_MAX_QP_RD_ATOMIC) &&
        (attr->max_rd_atomic > SN_MAX_RD_ATOMIC)) {
        return -1;
    }
    if ((mask & IBV_QP_MIN_RNR_TIMER) && (attr->min_rnr_timer > 31)) {
        return -1;
    }
    if ((mask & IBV_QP_TIMEOUT) && (attr->timeout > 31)) {
        return -1;
    }
    if ((mask & IBV_QP_RETRY_CNT) && (attr->retry_cnt > 7)) {
        return -1;
    }
    if ((mask & IBV_QP_RNR_RETRY) && (attr->rnr_retry > 7)) {
        return -1;
    }
    if ((mask & IBV_QP_PATH_MIG_STATE) &&
        (attr->path_mig_state > IBV_MIG_ARMED)) {
        return -1;
    }
    return 0;
}

static void sn_qp_apply_attr(sn_qp_t *qp, const struct ibv_qp_attr *attr,
                             int mask)
{
#define SN_QP_SET(_flag, _field)        \
    if (mask & (_flag)) {               \
        qp->attr._field = attr->_field; \
    }
    SN_QP_SET(IBV_QP_PKEY_INDEX, pkey_index);
    SN_QP_SET(IBV_QP_PORT, port_num);
    SN_QP_SET(IBV_QP_ACCESS_FLAGS, qp_access_flags);
    SN_QP_SET(IBV_QP_AV, ah_attr);
    SN_QP_SET(IBV_QP_PATH_MTU, path_mtu);
    SN_QP_SET(IBV_QP_DEST_QPN, dest_qp_num);
    SN_QP_SET(IBV_QP_RQ_PSN, rq_psn);
    SN_QP_SET(IBV_QP_SQ_PSN, sq_psn);
    SN_QP_SET(IBV_QP_MAX_DEST_RD_ATOMIC, max_dest_rd_atomic);
    SN_QP_SET(IBV_QP_MAX_QP_RD_ATOMIC, max_rd_atomic);
    SN_QP_SET(IBV_QP_MIN_RNR_TIMER, min_rnr_timer);
    SN_QP_SET(IBV_QP_TIMEOUT, timeout);
    SN_QP_SET(IBV_QP_RETRY_CNT, retry_cnt);
    SN_QP_SET(IBV_QP_RNR_RETRY, rnr_retry);
    SN_QP_SET(IBV_QP_PATH_MIG_STATE, path_mig_state);
    SN_QP_SET(IBV_QP_QKEY, qkey);
    if (mask & IBV_QP_ALT_PATH) {
        qp->attr.alt_ah_attr    = attr->alt_ah_attr;
        qp->attr.alt_pkey_index = attr->alt_pkey_index;
        qp->attr.alt_port_num   = attr->alt_port_num;
        qp->attr.alt_timeout    = attr->alt_timeout;
    }
#undef SN_QP_SET
}

/* QP lock held, the QP not in ERR (sn_qp_to_error stores that): its word in
 * the shared QP table. Rights start at RTR, as on a NIC, whose QP takes
 * no request below RTR; RESET and INIT grant nothing. */
static void sn_qp_table_publish(sn_qp_t *qp)
{
    uint32_t word = qp->attr.qp_access_flags;

    if (SN_RULE_CMA_RTR && (qp->state != IBV_QPS_RTR) &&
        (qp->state != IBV_QPS_RTS) && (qp->state != IBV_QPS_SQD)) {
        word = SN_QPT_BELOW_RTR;
    }
    sn_qp_table_set(sn_qp_inst(qp), qp->super.qp_num, word);
}

static void sn_qp_reset(sn_qp_t *qp)
{
    sn_qp_drop_conn(qp);
    qp->state = IBV_QPS_RESET;
    sn_qp_reset_attr(qp);
    qp->sq_head = qp->sq_tx = qp->sq_tail = 0;
    qp->tx_seq                            = 0;
    qp->rsp_seq                           = 0;
    qp->tx_off                            = 0;
    qp->sent_out                          = 0;
    qp->rd_atomic_out                     = 0;
    qp->rewind_pending                    = 0;
    qp->hold_until_ns                     = 0;
    qp->rnr_count                         = 0;
    qp->retry_count                       = 0;
    qp->rq.head                           = 0;
    qp->rq.count                          = 0;
    __atomic_store_n(&qp->rx_ack, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&qp->ack_carried, 0, __ATOMIC_RELAXED);
}

int softnic_qp_modify(softnic_qp_t *qp_h, struct ibv_qp_attr *attr, int mask)
{
    sn_qp_t *qp     = (sn_qp_t *)qp_h;
    sn_inst_t *inst = sn_qp_inst(qp);
    enum ibv_qp_state next;
    int req, opt, ret = 0;

    pthread_mutex_lock(&qp->lock);
    next = (mask & IBV_QP_STATE) ? attr->qp_state : qp->state;
    if ((next > IBV_QPS_ERR) ||
        (((qp->super.qp_type == IBV_QPT_UD)
              ? sn_ud_trans(qp->state, next, &req, &opt)
              : sn_qp_trans(qp->state, next, &req, &opt)) != 0) ||
        ((mask & req) != req) || (mask & ~(req | opt)) ||
        (sn_qp_check_values(qp, attr, mask) != 0)) {
        ret = EINVAL;
        goto out;
    }

    if (next == IBV_QPS_RESET) {
        sn_qp_reset(qp);
        sn_qp_table_publish(qp);
        goto out;
    }
    if (next == IBV_QPS_ERR) {
        if (qp->state != IBV_QPS_ERR) {
            sn_qp_to_error(qp);
        }
        goto out;
    }

    sn_qp_apply_attr(qp, attr, mask);
    if ((qp->state == IBV_QPS_INIT) && (next == IBV_QPS_RTR) &&
        (qp->super.qp_type == IBV_QPT_RC)) {
        /* the service thread connects; RTR does not wait for it */
        qp->state = IBV_QPS_RTR;
        sn_qp_table_publish(qp); /* the rights, from RTR on */
        qp->conn_state = SN_CONN_CONNECTING;
        ret            = sn_svc_connect(inst, qp);
        if (ret != 0) {
            qp->conn_state = SN_CONN_FAILED;
            ret = 0; /* a silent peer: the first WR fails (sn_qp_timers) */
        }
        goto out;
    }
    qp->state = next;
    sn_qp_table_publish(qp);
    sn_qp_tx(qp);

out:
    pthread_mutex_unlock(&qp->lock);
    return ret;
}

/* ---- shared receive queues --------------------------------------------- */

softnic_srq_t *softnic_srq_create(softnic_pd_t *pd,
                                  struct ibv_srq_init_attr *attr)
{
    sn_srq_t *srq;

    if ((attr->attr.max_wr == 0) || (attr->attr.max_wr > SN_MAX_QP_WR) ||
        (attr->attr.max_sge > SN_MAX_SGE) || (attr->attr.srq_limit != 0)) {
        errno = EINVAL;
        return NULL;
    }
    srq = calloc(1, sizeof(*srq));
    if (srq == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    if (sn_rq_init(&srq->rq, attr->attr.max_wr) != 0) {
        free(srq);
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_init(&srq->lock, NULL);
    srq->super.pd          = pd;
    srq->super.srq_context = attr->srq_context;
    srq->max_sge           = attr->attr.max_sge;
    return &srq->super;
}

int softnic_srq_destroy(softnic_srq_t *srq_h)
{
    sn_srq_t *srq   = (sn_srq_t *)srq_h;
    sn_inst_t *inst = sn_inst(srq_h->pd->dev);

    pthread_mutex_lock(&inst->lock);
    if (srq->num_qps > 0) {
        pthread_mutex_unlock(&inst->lock);
        return EBUSY;
    }
    pthread_mutex_unlock(&inst->lock);
    pthread_mutex_destroy(&srq->lock);
    free(srq->rq.ring);
    free(srq);
    return 0;
}

int softnic_post_srq_recv(softnic_srq_t *srq_h, struct ibv_recv_wr *wr,
                          struct ibv_recv_wr **bad_wr)
{
    sn_srq_t *srq = (sn_srq_t *)srq_h;
    int ret       = 0;

    pthread_mutex_lock(&srq->lock);
    for (; wr != NULL; wr = wr->next) {
        ret = sn_rq_push(&srq->rq, wr, srq->max_sge);
        if (ret != 0) {
            *bad_wr = wr;
            break;
        }
    }
    pthread_mutex_unlock(&srq->lock);
    return ret;
}
