/*
 * softnic's responder (sn_wire.h): a target connection's requests, checked
 * against the target QP and the MR table and executed (WRITE and SEND
 * payloads placed, READs answered chunk by chunk, atomics), each answered
 * in order with an ACK, a NAK, READ_DATA or an atomic's original value.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_wire.h"

#include <endian.h>
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

static int sn_tgt_rsp(sn_inst_t *inst, sn_conn_t *conn,
                      uint8_t type, uint8_t code, uint32_t seq,
                      uint64_t value)
{
    sn_rsp_t rsp;

    memset(&rsp, 0, sizeof(rsp));
    rsp.type  = type;
    rsp.code  = code;
    rsp.seq   = htole32(seq);
    rsp.value = htole64(value);
    if ((type == SN_RSP_NAK) && (code == SN_NAK_RNR)) {
        pthread_mutex_lock(&conn->qp->lock);
        rsp.rnr_timer = conn->qp->attr.min_rnr_timer;
        pthread_mutex_unlock(&conn->qp->lock);
    }
    return sn_conn_out(inst, conn, &rsp, sizeof(rsp), NULL, 0);
}

/* Answer the READ in progress, chunk by chunk, while the socket takes it.
 * Payload bytes go from the registered region straight to the socket, each
 * send() bracketed by busy_begin/end (no copy, even when the socket is
 * full). If the region is deregistered between two chunks the READ is
 * NAKed (REM_ACCESS); in the middle of a chunk the frame cannot be finished
 * honestly, so the connection is closed (the initiator sees a dead peer). */
int sn_tgt_read_pump(sn_inst_t *inst, sn_conn_t *conn)
{
    sn_rsp_t rsp;
    uint32_t chunk;
    size_t payload_sent;
    ssize_t ret;

    while (conn->rd_active) {
        if (conn->olen > conn->opos) {
            ret = sn_conn_flush(conn);
            if (ret <= 0) {
                if (ret == 0) {
                    sn_conn_set_events(inst, conn, EPOLLOUT);
                }
                return (int)ret;
            }
        }

        if (conn->rd_chunk_left == 0) {
            /* next chunk: header and as much payload as the socket takes */
            chunk = conn->rd_total - conn->rd_off;
            if (chunk > SN_CHUNK) {
                chunk = SN_CHUNK;
            }
            memset(&rsp, 0, sizeof(rsp));
            rsp.type   = SN_RSP_READ_DATA;
            rsp.seq    = htole32(conn->rd_seq);
            rsp.length = htole32(chunk);
            rsp.offset = htole32(conn->rd_off);
            if ((chunk > 0) &&
                (sn_mr_busy_begin(inst, &conn->rd_snap) != 0)) {
                conn->rd_active = 0;
                return sn_tgt_rsp(inst, conn, SN_RSP_NAK,
                                  SN_NAK_REM_ACCESS, conn->rd_seq,
                                  0);
            }
            {
                struct iovec iov[2];
                struct msghdr msg;

                iov[0].iov_base = &rsp;
                iov[0].iov_len  = sizeof(rsp);
                iov[1].iov_base = (void *)(uintptr_t)(conn->rd_addr +
                                                      conn->rd_off);
                iov[1].iov_len  = chunk;
                memset(&msg, 0, sizeof(msg));
                msg.msg_iov    = iov;
                msg.msg_iovlen = (chunk > 0) ? 2 : 1;
                do {
                    ret = sendmsg(conn->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
                } while ((ret < 0) && (errno == EINTR));
            }
            if (chunk > 0) {
                sn_mr_busy_end(inst);
            }
            if (ret < 0) {
                if ((errno != EAGAIN) && (errno != EWOULDBLOCK)) {
                    return -1;
                }
                ret = 0;
            }
            if ((size_t)ret < sizeof(rsp)) {
                /* the header remainder waits in obuf (tiny copy) */
                if (sn_conn_out(inst, conn, (uint8_t *)&rsp + ret,
                                sizeof(rsp) - ret, NULL, 0) != 0) {
                    return -1;
                }
                payload_sent = 0;
            } else {
                payload_sent = ret - sizeof(rsp);
            }
            conn->rd_chunk_left = chunk - payload_sent;
            conn->rd_off       += payload_sent;
        } else {
            if (sn_mr_busy_begin(inst, &conn->rd_snap) != 0) {
                sn_log(inst, SOFTNIC_LOG_INFO,
               "qp 0x%x: region deregistered during a "
                       "READ", conn->peer_qpn);
                return -1;
            }
            do {
                ret = send(conn->fd,
                           (void *)(uintptr_t)(conn->rd_addr + conn->rd_off),
                           conn->rd_chunk_left, MSG_NOSIGNAL | MSG_DONTWAIT);
            } while ((ret < 0) && (errno == EINTR));
            sn_mr_busy_end(inst);
            if (ret < 0) {
                if ((errno != EAGAIN) && (errno != EWOULDBLOCK)) {
                    return -1;
                }
                sn_conn_set_events(inst, conn, EPOLLOUT);
                return 0;
            }
            conn->rd_chunk_left -= ret;
            conn->rd_off        += ret;
        }

        if ((conn->rd_chunk_left == 0) && (conn->rd_off == conn->rd_total)) {
            conn->rd_active = 0; /* the last header may still be in obuf */
        } else if ((conn->rd_chunk_left > 0) || (conn->olen > conn->opos)) {
            sn_conn_set_events(inst, conn, EPOLLOUT);
            return 0;
        }
    }
    return 0;
}

/* ---- target side: requests ---------------------------------------------- */

static void sn_tgt_push_recv_wc(sn_qp_t *qp,
                                const sn_recv_t *recv,
                                enum ibv_wc_status status,
                                enum ibv_wc_opcode opcode,
                                uint32_t byte_len, int with_imm,
                                uint32_t imm, uint32_t src_qp,
                                int solicited)
{
    struct ibv_wc wc;

    memset(&wc, 0, sizeof(wc));
    wc.wr_id    = recv->wr_id;
    wc.status   = status;
    wc.opcode   = opcode;
    wc.byte_len = byte_len;
    wc.qp_num   = qp->super.qp_num;
    wc.src_qp   = src_qp;
    if (with_imm) {
        wc.wc_flags = IBV_WC_WITH_IMM;
        wc.imm_data = imm;
    }
    sn_cq_push(qp->recv_cq, &wc, solicited);
}

/* Put a receive taken for an unfinished message back at the queue head. */
void sn_tgt_unpop_recv(sn_qp_t *qp,
                       const sn_recv_t *recv)
{
    sn_rq_t *rq;

    if (qp->srq != NULL) {
        pthread_mutex_lock(&qp->srq->lock);
        rq = &qp->srq->rq;
    } else {
        rq = &qp->rq;
    }
    if (rq->count < rq->size) {
        rq->head           = (rq->head + rq->size - 1) % rq->size;
        rq->ring[rq->head] = *recv;
        ++rq->count;
    }
    if (qp->srq != NULL) {
        pthread_mutex_unlock(&qp->srq->lock);
    }
}

/* Decide what to do with a request; returns -1 to close the connection.
 * On return, conn->pay_left/sink say where the payload goes, and responses
 * that do not depend on the payload were sent. */
int sn_tgt_req(sn_inst_t *inst, sn_conn_t *conn)
{
    sn_req_t *req = &conn->hdr.req;
    sn_qp_t *qp   = conn->qp;
    sn_mr_snap_t snap = {0};
    uint64_t value, raddr;
    uint32_t length, seq;
    int nak = 0, access;

    /* validate and convert */
    req->seq         = le32toh(req->seq);
    req->length      = le32toh(req->length);
    req->rkey        = le32toh(req->rkey);
    req->raddr       = le64toh(req->raddr);
    req->compare_add = le64toh(req->compare_add);
    req->swap        = le64toh(req->swap);
    if ((req->op == 0) || (req->op >= SN_OP_LAST) ||
        (req->flags & ~SN_REQ_F_SOLICITED) || (req->reserved != 0) ||
        (req->reserved2 != 0) || (req->length > SN_MAX_MSG) ||
        (((req->op == SN_OP_CSWAP) || (req->op == SN_OP_FADD)) &&
         (req->length != 8))) {
        sn_log(inst, SOFTNIC_LOG_WARN,
               "malformed request (op %u flags 0x%x length %u) "
               "from qp 0x%x", req->op, req->flags, req->length,
               conn->peer_qpn);
        return -1;
    }
    length = req->length;
    seq    = req->seq;
    raddr  = req->raddr;

    memset(&conn->sink, 0, sizeof(conn->sink));
    conn->sink.failed = 1; /* discard unless a sink is set up below */
    conn->pay_left    = sn_req_has_payload(req->op) ? length : 0;
    conn->have_recv   = 0;
    conn->drop        = 1;

    if (seq != conn->expected_seq) {
        return 0; /* after a NAK: dropped until the resend arrives */
    }

    pthread_mutex_lock(&qp->lock);
    if (((qp->state != IBV_QPS_RTR) && (qp->state != IBV_QPS_RTS)) ||
        (qp->attr.dest_qp_num != conn->peer_qpn)) {
        nak = SN_NAK_NOT_READY;
        goto out_nak;
    }

    switch (req->op) {
    case SN_OP_WRITE_IMM:
    case SN_OP_SEND:
    case SN_OP_SEND_IMM:
        if (sn_qp_pop_recv(qp, &conn->recv) != 0) {
            nak = SN_NAK_RNR;
            goto out_nak;
        }
        conn->have_recv = 1;
        if (req->op == SN_OP_WRITE_IMM) {
            goto write;
        }
        if (sn_sink_from_sges(inst, &conn->sink, conn->recv.sge,
                              conn->recv.num_sge, qp->pdn, 0,
                              length) != 0) {
            /* too long for the receive, or a bad lkey: the receive
             * completes in error and the responder QP goes to ERR */
            uint64_t room = 0;
            int i;

            for (i = 0; i < conn->recv.num_sge; ++i) {
                room += conn->recv.sge[i].length;
            }
            sn_tgt_push_recv_wc(qp, &conn->recv,
                                (room < length) ? IBV_WC_LOC_LEN_ERR :
                                IBV_WC_LOC_PROT_ERR,
                                IBV_WC_RECV, 0, 0, 0, conn->peer_qpn,
                                0);
            nak = (room < length) ? SN_NAK_REM_INV_REQ :
                                    SN_NAK_REM_OP;
            conn->have_recv = 0;
            memset(&conn->sink, 0, sizeof(conn->sink));
            conn->sink.failed = 1;
            sn_qp_to_error(qp);
            goto out_nak;
        }
        break;
    case SN_OP_WRITE:
write:
        if (length == 0) {
            memset(&conn->sink, 0, sizeof(conn->sink));
            break;
        }
        if (!(qp->attr.qp_access_flags & IBV_ACCESS_REMOTE_WRITE) ||
            (sn_mr_check(inst->mrs, req->rkey, qp->pdn, raddr, length,
                         IBV_ACCESS_REMOTE_WRITE, &snap) != 0)) {
            if (conn->have_recv) {
                sn_tgt_unpop_recv(qp, &conn->recv);
                conn->have_recv = 0;
            }
            nak = SN_NAK_REM_ACCESS;
            goto out_nak;
        }
        memset(&conn->sink, 0, sizeof(conn->sink));
        conn->sink.num         = 1;
        conn->sink.seg[0].addr = raddr;
        conn->sink.seg[0].len  = length;
        conn->sink.seg[0].snap = snap;
        break;
    case SN_OP_READ:
        if ((length > 0) &&
            (!(qp->attr.qp_access_flags & IBV_ACCESS_REMOTE_READ) ||
             (sn_mr_check(inst->mrs, req->rkey, qp->pdn, raddr, length,
                          IBV_ACCESS_REMOTE_READ, &snap) != 0))) {
            nak = SN_NAK_REM_ACCESS;
            goto out_nak;
        }
        pthread_mutex_unlock(&qp->lock);
        ++conn->expected_seq;
        conn->rd_active = 1;
        conn->rd_seq    = seq;
        conn->rd_snap   = snap;
        conn->rd_addr   = raddr;
        conn->rd_total  = length;
        conn->rd_off    = 0;
        conn->rd_chunk_left = 0;
        return sn_tgt_read_pump(inst, conn);
    default: /* atomics */
        if (raddr & 7) {
            nak = SN_NAK_REM_INV_REQ;
            goto out_nak;
        }
        access = IBV_ACCESS_REMOTE_ATOMIC;
        if (!(qp->attr.qp_access_flags & IBV_ACCESS_REMOTE_ATOMIC) ||
            (sn_mr_check(inst->mrs, req->rkey, qp->pdn, raddr, 8,
                         access, &snap) != 0) ||
            (sn_mr_busy_begin(inst, &snap) != 0)) {
            nak = SN_NAK_REM_ACCESS;
            goto out_nak;
        }
        if (req->op == SN_OP_FADD) {
            value = __atomic_fetch_add((uint64_t *)(uintptr_t)raddr,
                                       req->compare_add, __ATOMIC_SEQ_CST);
        } else {
            value = req->compare_add;
            __atomic_compare_exchange_n((uint64_t *)(uintptr_t)raddr, &value,
                                        req->swap, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST);
        }
        sn_mr_busy_end(inst);
        pthread_mutex_unlock(&qp->lock);
        ++conn->expected_seq;
        return sn_tgt_rsp(inst, conn, SN_RSP_ATOMIC, 0, seq,
                          value);
    }
    pthread_mutex_unlock(&qp->lock);
    conn->drop = 0;
    return 0; /* payload next; answered when it is complete */

out_nak:
    pthread_mutex_unlock(&qp->lock);
    if ((nak != SN_NAK_RNR) && (nak != SN_NAK_NOT_READY)) {
        ++conn->expected_seq; /* executed (in error) */
    }
    return sn_tgt_rsp(inst, conn, SN_RSP_NAK, nak, seq, 0);
}

/* The payload of the current request is complete. */
int sn_tgt_req_done(sn_inst_t *inst, sn_conn_t *conn)
{
    sn_req_t *req = &conn->hdr.req;
    sn_qp_t *qp   = conn->qp;
    int imm             = (req->op == SN_OP_WRITE_IMM) ||
                          (req->op == SN_OP_SEND_IMM);
    int failed          = conn->sink.failed;

    if (conn->drop) {
        return 0; /* dropped, or answered when the header arrived */
    }
    ++conn->expected_seq;

    pthread_mutex_lock(&qp->lock);
    if (conn->have_recv) {
        conn->have_recv = 0;
        if ((qp->state != IBV_QPS_RTR) && (qp->state != IBV_QPS_RTS)) {
            /* the QP left RTR/RTS meanwhile: the receive is flushed */
            sn_tgt_push_recv_wc(qp, &conn->recv, IBV_WC_WR_FLUSH_ERR,
                                IBV_WC_RECV, 0, 0, 0, conn->peer_qpn, 0);
            pthread_mutex_unlock(&qp->lock);
            --conn->expected_seq;
            return sn_tgt_rsp(inst, conn, SN_RSP_NAK,
                              SN_NAK_NOT_READY, req->seq, 0);
        }
        if (failed) {
            sn_tgt_push_recv_wc(qp, &conn->recv, IBV_WC_LOC_PROT_ERR,
                                IBV_WC_RECV, 0, 0, 0, conn->peer_qpn, 0);
            sn_qp_to_error(qp);
        } else {
            /* the ACK leaves before the receive completes: an application
             * that ends the moment it sees the receive cannot take the
             * acknowledgement of what was placed away from its sender */
            int ret = sn_tgt_rsp(inst, conn, SN_RSP_ACK, 0, req->seq, 0);

            sn_tgt_push_recv_wc(qp, &conn->recv, IBV_WC_SUCCESS,
                                (req->op == SN_OP_WRITE_IMM) ?
                                IBV_WC_RECV_RDMA_WITH_IMM : IBV_WC_RECV,
                                req->length, imm, req->imm,
                                conn->peer_qpn,
                                req->flags & SN_REQ_F_SOLICITED);
            pthread_mutex_unlock(&qp->lock);
            return ret;
        }
    }
    pthread_mutex_unlock(&qp->lock);

    if (failed) {
        return sn_tgt_rsp(inst, conn, SN_RSP_NAK,
                          (req->op == SN_OP_WRITE) ?
                          SN_NAK_REM_ACCESS : SN_NAK_REM_OP,
                          req->seq, 0);
    }
    return sn_tgt_rsp(inst, conn, SN_RSP_ACK, 0, req->seq, 0);
}
