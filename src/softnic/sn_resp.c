/*
 * softnic's responder (sn_wire.h): a target connection's requests, checked
 * against the target QP and the MR table and executed (WRITE and SEND
 * payloads placed, READs answered frame by frame, atomics), each answered
 * in order with an ACK, a NAK, READ_DATA or an atomic's original value.
 *
 * A request goes through a chain of steps, as in a NIC's receive path: each
 * step checks or does one thing and returns the next step (sn_resp_steps
 * below lists them with the QP lock each one runs under). When its header
 * arrives: check the header, the sequence, that the answers to our
 * requests it acknowledges were read (else it waits), the QP; take a
 * receive (SEND, WRITE_IMM); check the SEND's length against it or the
 * remote key and access; execute (an atomic, the start of a READ, or a
 * place for the payload, where a small payload read with the header goes
 * at once, in the same run). When its payload is complete (a payload
 * longer than a frame: when its last REQ_DATA frame is in, sn_wire.h;
 * the request waits on its channel meanwhile): check that the QP
 * is still ready and the payload was placed, acknowledge (the ACK is in
 * the socket before the receive completes; a small request's receive
 * waits for the one ACK of the pass over what the read returned, see
 * sn_resp_batch_flush; in a poller's step that ACK is held
 * back there until the QP's next request frame carries it or it is due:
 * sn_int.h, "ACK coalescing"), complete the receive. A failed
 * check answers with the NAK the initiator turns into its completion
 * status; an RNR or "not ready" NAK leaves the request to be resent, any
 * other answer counts it as executed (expected_seq), and after such a NAK
 * the connection executes nothing more (the initiator flushed it). A QP
 * in ERR answers nothing, as an IB responder in error drops the packets:
 * the request is dropped (not executed, not counted; those behind it
 * fail the sequence check) and the initiator's transport timer ends the
 * WR.
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

typedef enum sn_resp_state {
    /* the request's header arrived */
    SN_RESP_CHECK_HEADER,
    SN_RESP_CHECK_SEQ,
    SN_RESP_CHECK_ACKED,
    SN_RESP_CHECK_QP,
    SN_RESP_GET_RECV,
    SN_RESP_CHECK_LENGTH,
    SN_RESP_CHECK_RKEY,
    SN_RESP_EXECUTE,
    SN_RESP_WAIT_PAYLOAD,
    SN_RESP_READ,
    SN_RESP_ATOMIC_REPLY,
    /* its payload is complete */
    SN_RESP_PAYLOAD_DONE,
    SN_RESP_CHECK_STATE,
    SN_RESP_CHECK_PLACED,
    SN_RESP_COMPLETE_RECV,
    /* answers */
    SN_RESP_ACK,
    SN_RESP_RECV_ERROR,
    SN_RESP_NAK,
    /* the end */
    SN_RESP_DONE,
    SN_RESP_HOLD, /* not taken yet: read again when resumed */
    SN_RESP_CLOSE
} sn_resp_state_t;

/* One request on its way through the steps */
typedef struct sn_resp {
    sn_inst_t *inst;
    sn_chan_t *chan;     /* the target QP's channel */
    sn_stream_t *stream; /* chan's stream: the request's header, payload */
    sn_qp_t *qp;         /* the target QP */
    sn_req_t *req;       /* stream->hdr.req, host order once checked */
    int qp_locked;
    int ret;           /* 0, or -1: an answer found the stream dead */
    sn_mr_snap_t snap; /* the region the request touches */
    uint8_t nak;       /* SN_NAK_* to answer with */
    enum ibv_wc_status recv_status; /* a receive completing in error */
    uint64_t value;                 /* an atomic's original value */
    int whole; /* the run took the payload with the header */
} sn_resp_t;

/* ---- frames ------------------------------------------------------------ */

/* Does an answer count its request as executed? All but an RNR or "not
 * ready" NAK do (the initiator resends those) */
static int sn_resp_is_executed(uint8_t type, uint8_t code)
{
    return (type != SN_RSP_NAK) ||
           ((code != SN_NAK_RNR) && (code != SN_NAK_NOT_READY));
}

/* The QP's next request frames report chan's answers (sn_qp_t.rx_ack) */
static void sn_resp_publish(sn_chan_t *chan)
{
    __atomic_store_n(&chan->qp->rx_ack,
                     ((uint64_t)chan->ack_end << 32) | chan->expected_seq,
                     __ATOMIC_RELEASE);
}

/* Answers below end left in frames of chan */
static void sn_resp_framed(sn_chan_t *chan, uint32_t end)
{
    if ((int32_t)(end - chan->ack_end) > 0) {
        chan->ack_end = end;
    }
}

/* One response frame (READ_DATA: see the READ pump); flags: MSG_MORE for
 * an ACK held back (see "ACK coalescing" in sn_int.h), else the frame
 * goes out with the ACKs held back before it */
static int sn_resp_send(sn_inst_t *inst, sn_chan_t *chan, uint8_t type,
                        uint8_t code, uint32_t seq, uint64_t value, int flags)
{
    sn_rsp_t rsp;

    memset(&rsp, 0, sizeof(rsp));
    rsp.type  = type;
    rsp.code  = code;
    rsp.seq   = htole32(seq);
    rsp.value = htole64(value);
    rsp.chan  = htole32(chan->peer_chan);
    if ((type == SN_RSP_NAK) && sn_resp_is_executed(type, code)) {
        chan->nak_stopped = SN_RULE_NAK_STOPS;
    }
    if ((type == SN_RSP_NAK) && (code == SN_NAK_RNR)) {
        pthread_mutex_lock(&chan->qp->lock);
        rsp.rnr_timer = chan->qp->attr.min_rnr_timer;
        pthread_mutex_unlock(&chan->qp->lock);
    }
    if (sn_stream_outf(inst, chan->stream, &rsp, sizeof(rsp), NULL, 0, flags) !=
        0) {
        return -1;
    }
    if (flags == 0) {
        sn_resp_framed(chan, sn_resp_is_executed(type, code) ? seq + 1 : seq);
    }
    return 0;
}

/* ---- coalesced ACKs (sn_int.h, "ACK coalescing") ------------------------ */

/* chan's answers that left in no frame: neither on chan nor carried by a
 * request frame of its QP (an `ack_carried` beyond what chan answered
 * belongs to an earlier sequence of the peer's, and is no help) */
static uint32_t sn_resp_acks_owed(const sn_chan_t *chan)
{
    uint32_t carried =
        __atomic_load_n(&chan->qp->ack_carried, __ATOMIC_ACQUIRE);
    uint32_t ahead = chan->ack_end;

    if (((int32_t)(carried - ahead) > 0) &&
        ((int32_t)(carried - chan->expected_seq) <= 0)) {
        ahead = carried;
    }
    return ((int32_t)(chan->expected_seq - ahead) > 0)
               ? chan->expected_seq - ahead
               : 0;
}

static void sn_resp_ack_settled(sn_inst_t *inst, sn_chan_t *chan)
{
    if (chan->ack_owed) {
        chan->ack_owed = 0;
        __atomic_store_n(&inst->num_ack_owed, inst->num_ack_owed - 1,
                         __ATOMIC_RELAXED);
    }
    chan->ack_bytes = 0;
}

/* Due: SN_ACK_MAX answers or SN_ACK_BYTES owed, or owed for
 * SN_ACK_DELAY_NS (SN_ACK_BUSY_NS when busy: for a step that moves bytes);
 * or nothing owed any more (carried: settled at once, so that the next ACK
 * owed is timed from its own answer) */
int sn_resp_ack_due(const sn_chan_t *chan, uint64_t now, int busy)
{
    uint32_t owed;

    if (!chan->ack_owed) {
        return 0;
    }
    owed = sn_resp_acks_owed(chan);
    return (owed == 0) || (owed >= SN_ACK_MAX) ||
           (chan->ack_bytes >= SN_ACK_BYTES) ||
           (SN_RULE_ACK_BOUND && (now - chan->ack_since_ns >=
                                  (busy ? SN_ACK_BUSY_NS : SN_ACK_DELAY_NS)));
}

int sn_resp_ack_flush(sn_inst_t *inst, sn_chan_t *chan)
{
    if (!chan->ack_owed) {
        return 0;
    }
    sn_resp_ack_settled(inst, chan);
    if (sn_resp_acks_owed(chan) == 0) {
        return 0; /* a request frame carried them (the held-back bytes
                     go with the next frame or segment: duplicates) */
    }
    if (chan->stream->olen == chan->stream->opos) {
        sn_stream_push(chan->stream); /* (obuf goes out without MSG_MORE) */
    }
    sn_resp_framed(chan, chan->expected_seq);
    sn_resp_publish(chan);
    return 0;
}

static int sn_resp_needs_recv(uint8_t op);

/* Does r's receive wait for the one ACK of its pass (inst->ack_batch)?
 * Only a small request that completes a receive (its application may
 * answer it at once; a WRITE's or a large SEND's sender more likely waits
 * for the completion: its ACK goes at once), and not on a connection with
 * a same-host SEND ring (whose slots carry no ACKs) */
static int sn_resp_ack_batchable(const sn_resp_t *r)
{
    return (r->chan->ring == NULL) && sn_resp_needs_recv(r->req->op) &&
           (r->req->length <= SN_ACK_HOLD_LEN);
}

/* Would what is owed on chan, with the answer for bytes of payload just
 * counted in expected_seq, be due at once (sn_resp_ack_due) in the step
 * that read it? Then that answer's ACK goes without MSG_MORE: the step's
 * end would push it anyway, one setsockopt later. An ACK still owed by an
 * earlier step is due here once SN_ACK_BUSY_NS old; from SN_ACK_DELAY_NS
 * on it waits for a step that moves nothing (sn_int.h, "ACK coalescing"):
 * in a ping-pong whose peer answers on another QP, as orc's UCT endpoints
 * do, no request frame carries the ACKs, and sent here the segment would
 * delay the receive its application answers. */
static int sn_resp_ack_due_with(const sn_chan_t *chan, uint64_t bytes)
{
    return (sn_resp_acks_owed(chan) >= SN_ACK_MAX) ||
           (chan->ack_bytes + bytes >= SN_ACK_BYTES) ||
           (chan->ack_owed && sn_resp_ack_due(chan, sn_now_ns(), 1));
}

/* A plain ACK of the requests up to seq (cumulative), for bytes of
 * payload: held back (MSG_MORE, hold: in a step of a poller the service
 * thread left the sockets to) until the QP's next request frame carries
 * it or it is due; it leaves at once when not held, or when what is owed
 * with it is due already (one frame, no push) */
static int sn_resp_ack_write(sn_inst_t *inst, sn_chan_t *chan, uint32_t seq,
                             uint64_t bytes, int hold)
{
    if (hold && sn_resp_ack_due_with(chan, bytes)) {
        hold = 0;
    }
    if (!hold) {
        if (sn_resp_send(inst, chan, SN_RSP_ACK, 0, seq, 0, 0) != 0) {
            return -1;
        }
        if (sn_resp_acks_owed(chan) == 0) {
            sn_resp_ack_settled(inst, chan); /* the frame took them all */
        }
        return 0;
    }
    if (sn_resp_send(inst, chan, SN_RSP_ACK, 0, seq, 0, MSG_MORE) != 0) {
        return -1;
    }
    if (!chan->ack_owed) {
        chan->ack_owed     = 1;
        chan->ack_since_ns = sn_now_ns();
        __atomic_store_n(&inst->num_ack_owed, inst->num_ack_owed + 1,
                         __ATOMIC_RELAXED);
    }
    chan->ack_bytes += bytes;
    return 0;
}

/* ---- the pass's one ACK (sn_int.h, "ACK coalescing") --------------------- */

/* QP lock held (chan's target QP), svc_lock holder: the receives of the
 * pass so far complete, after their one ACK is in the socket. A QP that
 * left RTR/RTS since they were checked answers as check_state and
 * check_placed do: the receives are flushed and the requests count as not
 * executed (nothing behind them is answered: sn_resp_current), with a
 * "not ready" NAK to the first, or nothing from a QP in ERR. 0, or -1
 * when the answer found the connection dead. */
static int sn_resp_batch_flush(sn_inst_t *inst)
{
    sn_ack_batch_t *b = &inst->ack_batch;
    sn_chan_t *chan   = b->chan;
    sn_qp_t *qp       = chan->qp;
    int ready = (qp->state == IBV_QPS_RTR) || (qp->state == IBV_QPS_RTS);
    int num = b->num, ret = 0, i;

    if (num == 0) {
        return 0;
    }
    b->num = 0;
    if (ready) {
        ret = sn_resp_ack_write(inst, chan, b->first_seq + num - 1, b->bytes,
                                inst->ack_hold);
        if (ret == 0) {
            sn_resp_publish(chan);
        }
    } else {
        chan->expected_seq = b->first_seq;
        if (!SN_RULE_TCP_ERR_SILENT || (qp->state != IBV_QPS_ERR)) {
            ret = sn_resp_send(inst, chan, SN_RSP_NAK, SN_NAK_NOT_READY,
                               b->first_seq, 0, 0);
        }
    }
    for (i = 0; !ready && (i < num); ++i) {
        b->wc[i].status   = IBV_WC_WR_FLUSH_ERR;
        b->wc[i].opcode   = IBV_WC_RECV;
        b->wc[i].byte_len = 0;
        b->wc[i].wc_flags = 0;
    }
    sn_cq_push_n(qp->recv_cq, b->wc, ready ? b->solicited : NULL, num);
    b->bytes = 0;
    return ret;
}

int sn_resp_batch_end(sn_inst_t *inst)
{
    sn_qp_t *qp;
    int ret;

    if (inst->ack_batch.num == 0) {
        return 0;
    }
    qp = inst->ack_batch.chan->qp;
    pthread_mutex_lock(&qp->lock);
    ret = sn_resp_batch_flush(inst);
    pthread_mutex_unlock(&qp->lock);
    return ret;
}

/* QP lock held: the batch goes out before anything else of r's */
static void sn_resp_batch_out(sn_resp_t *r)
{
    if ((r->inst->ack_batch.num > 0) && (sn_resp_batch_flush(r->inst) != 0)) {
        r->ret = -1;
    }
}

/* Is r still the request its connection expects? Not once the batch
 * ahead of it was found not executed (sn_resp_batch_flush): the initiator
 * resends from there, and r gets no answer */
static int sn_resp_current(const sn_resp_t *r)
{
    return !SN_RULE_PSN_ORDER || (r->req->seq == r->chan->expected_seq);
}

void sn_resp_unpop_recv(sn_qp_t *qp, const sn_recv_t *recv)
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

/* ---- READ --------------------------------------------------------------- */

/* A READ is answered frame by frame (READ_DATA frames of up to
 * SN_FRAME_MAX bytes) while the socket takes it. Payload bytes go from the
 * registered region straight to the socket, each send bracketed by
 * busy_begin/end (no copy, even when the socket is full). If the region is
 * deregistered between two frames the READ is NAKed (REM_ACCESS); in the
 * middle of a frame it cannot be finished honestly, so the connection is closed
 * (the initiator sees a dead peer). The functions below return 1 to go on,
 * 0 to wait for the socket (or when the READ ended in a NAK), -1 when the
 * connection is dead. */

/* The target QP left RTR/RTS (ERR, or RESET after it) while its READ was
 * answered: like a NIC responder in error, it sends no more of it (the
 * initiator's transport timer ends the READ) */
static int sn_resp_read_stopped(sn_inst_t *inst, const sn_chan_t *chan)
{
    return SN_RULE_ERR_STOPS &&
           !sn_qp_table_live(inst->mrs, chan->qp->super.qp_num);
}

/* What an earlier frame left in the stream's obuf goes first */
static int sn_resp_read_flush(sn_inst_t *inst, sn_stream_t *stream)
{
    int ret;

    if (stream->olen == stream->opos) {
        return 1;
    }
    ret = sn_stream_flush(stream);
    if (ret == 0) {
        sn_stream_set_events(inst, stream, EPOLLOUT);
    }
    return ret;
}

/* The next frame: its header and as much payload as the socket takes */
static int sn_resp_read_frame(sn_inst_t *inst, sn_chan_t *chan)
{
    uint32_t frame = chan->rd_total - chan->rd_off;
    size_t payload_sent;
    sn_rsp_t rsp;
    ssize_t ret;

    if (sn_resp_read_stopped(inst, chan)) {
        chan->rd_active = 0; /* silent: no more data, no NAK */
        return 0;
    }
    if (frame > SN_FRAME_MAX) {
        frame = SN_FRAME_MAX;
    }
    memset(&rsp, 0, sizeof(rsp));
    rsp.type   = SN_RSP_READ_DATA;
    rsp.seq    = htole32(chan->rd_seq);
    rsp.length = htole32(frame);
    rsp.offset = htole32(chan->rd_off);
    rsp.chan   = htole32(chan->peer_chan);
    if ((frame > 0) && (sn_mr_busy_begin(inst, &chan->rd_snap) != 0)) {
        chan->rd_active = 0;
        return sn_resp_send(inst, chan, SN_RSP_NAK, SN_NAK_REM_ACCESS,
                            chan->rd_seq, 0, 0);
    }
    ret = sn_stream_send(chan->stream->fd, &rsp, sizeof(rsp),
                         (void *)(uintptr_t)(chan->rd_addr + chan->rd_off),
                         frame);
    if (frame > 0) {
        sn_mr_busy_end(inst);
    }
    if (ret < 0) {
        return -1;
    }
    if ((size_t)ret < sizeof(rsp)) {
        /* the header remainder waits in obuf (tiny copy) */
        if (sn_stream_out(inst, chan->stream, (uint8_t *)&rsp + ret,
                          sizeof(rsp) - ret, NULL, 0) != 0) {
            return -1;
        }
        payload_sent = 0;
    } else {
        payload_sent = ret - sizeof(rsp);
    }
    chan->rd_frame_left = frame - payload_sent;
    chan->rd_off += payload_sent;
    return 1;
}

/* The rest of the current frame's payload */
static int sn_resp_read_frame_rest(sn_inst_t *inst, sn_chan_t *chan)
{
    ssize_t ret;

    if (sn_resp_read_stopped(inst, chan)) {
        /* the frame cannot end honestly: the initiator sees the
         * connection close, as silent as the QP */
        sn_log(inst, SOFTNIC_LOG_INFO, "qp 0x%x: left RTS during a READ to it",
               chan->qp->super.qp_num);
        return -1;
    }
    if (sn_mr_busy_begin(inst, &chan->rd_snap) != 0) {
        sn_log(inst, SOFTNIC_LOG_INFO,
               "qp 0x%x: region deregistered during a READ", chan->peer_qpn);
        return -1;
    }
    ret = sn_stream_send(chan->stream->fd, NULL, 0,
                         (void *)(uintptr_t)(chan->rd_addr + chan->rd_off),
                         chan->rd_frame_left);
    sn_mr_busy_end(inst);
    if (ret <= 0) {
        if (ret == 0) {
            sn_stream_set_events(inst, chan->stream, EPOLLOUT);
        }
        return (int)ret;
    }
    chan->rd_frame_left -= ret;
    chan->rd_off += ret;
    return 1;
}

int sn_resp_read_pump(sn_inst_t *inst, sn_chan_t *chan)
{
    int ret;

    while (chan->rd_active) {
        ret = sn_resp_read_flush(inst, chan->stream);
        if (ret <= 0) {
            return ret;
        }
        ret = (chan->rd_frame_left == 0) ? sn_resp_read_frame(inst, chan)
                                         : sn_resp_read_frame_rest(inst, chan);
        if (ret <= 0) {
            return ret;
        }
        if ((chan->rd_frame_left == 0) && (chan->rd_off == chan->rd_total)) {
            chan->rd_active = 0; /* the last header may still be in obuf */
        } else if ((chan->rd_frame_left > 0) ||
                   (chan->stream->olen > chan->stream->opos)) {
            sn_stream_set_events(inst, chan->stream, EPOLLOUT);
            return 0;
        }
    }
    return 0;
}

/* ---- the steps ---------------------------------------------------------- */

static sn_resp_state_t sn_resp_nak(sn_resp_t *r, uint8_t code)
{
    r->nak = code;
    return SN_RESP_NAK;
}

/* The payload is drained unless a step gives it a place */
static void sn_resp_discard_payload(sn_chan_t *chan)
{
    sn_sink_reset(&chan->sink, 1);
}

static int sn_resp_needs_recv(uint8_t op)
{
    return (op == SN_OP_SEND) || (op == SN_OP_SEND_IMM) ||
           (op == SN_OP_WRITE_IMM);
}

/* Every field, in host order: a malformed request closes the connection
 * (its op is one of SN_OP_*: the parser's type switch, sn_stream.c) */
static sn_resp_state_t sn_resp_check_header(sn_resp_t *r)
{
    sn_req_t *req = r->req;

    req->seq         = le32toh(req->seq);
    req->length      = le32toh(req->length);
    req->rkey        = le32toh(req->rkey);
    req->raddr       = le64toh(req->raddr);
    req->compare_add = le64toh(req->compare_add);
    req->swap        = le64toh(req->swap);
    req->acked       = le32toh(req->acked);
    req->ack_new     = le16toh(req->ack_new);
    if ((req->flags & ~SN_REQ_F_SOLICITED) || (req->reserved != 0) ||
        (req->length > SN_MAX_MSG) ||
        (((req->op == SN_OP_CSWAP) || (req->op == SN_OP_FADD)) &&
         (req->length != 8))) {
        sn_log(r->inst, SOFTNIC_LOG_WARN,
               "malformed request (op %u flags 0x%x length %u) "
               "from qp 0x%x",
               req->op, req->flags, req->length, r->chan->peer_qpn);
        return SN_RESP_CLOSE;
    }
    sn_resp_discard_payload(r->chan);
    r->stream->pay_left = sn_req_has_payload(req->op) ? req->length : 0;
    r->chan->have_recv  = 0;
    r->chan->drop       = 1;
    return SN_RESP_CHECK_ACKED;
}

/* After an RNR or "not ready" NAK the initiator resends from the NAKed
 * request: what it sent behind that one is dropped (no answer) until the
 * resend arrives. After any other NAK it resends nothing (its QP is in
 * ERR, the WRs behind the NAKed one flushed): everything behind it is
 * dropped, so a flushed WR never touches the target, as on an IB
 * responder, which goes to ERR at such a NAK */
static sn_resp_state_t sn_resp_check_seq(sn_resp_t *r)
{
    if (r->chan->nak_stopped) {
        return SN_RESP_DONE;
    }
    return (!SN_RULE_PSN_ORDER || (r->req->seq == r->chan->expected_seq))
               ? SN_RESP_CHECK_QP
               : SN_RESP_DONE;
}

/* What the peer sent after answering requests of ours comes after those
 * answers, as on a NIC's one link (sn_wire.h): until our own connection
 * has delivered the answers the frame does not carry (rsp_seq reaches
 * acked - ack_new), the request stays unread and the connection waits
 * (sn_stream_resume); then the ACKs it carries complete our WRITEs and
 * SENDs below acked, before anything of the request happens. This comes
 * before the sequence check: a request dropped for its sequence still
 * carries its ACKs. Only a QP that has a live connection of its own
 * waits; a peer acknowledging more than was ever sent to it (tx_seq), or
 * carrying an ACK for a READ or an atomic, lies: the connection closes. */
static sn_resp_state_t sn_resp_check_acked(sn_resp_t *r)
{
    sn_qp_t *qp    = r->qp;
    uint32_t acked = r->req->acked;

    if (!sn_resp_ack_batchable(r)) {
        sn_resp_batch_out(r); /* r joins no batch: what is ahead goes */
    }
    if ((qp->state != IBV_QPS_RTS) || (qp->conn_state != SN_CONN_READY) ||
        (qp->attr.dest_qp_num != r->chan->peer_qpn)) {
        return SN_RESP_CHECK_SEQ;
    }
    if ((int32_t)(acked - qp->tx_seq) > 0) {
        sn_log(r->inst, SOFTNIC_LOG_WARN,
               "qp 0x%x: qp 0x%x acknowledges %u requests, %u were sent",
               qp->super.qp_num, r->chan->peer_qpn, acked, qp->tx_seq);
        return SN_RESP_CLOSE;
    }
    if (!SN_RULE_TCP_ACK_FIRST) {
        r->chan->late_ack     = 1; /* without the rule: after the request */
        r->chan->late_ack_end = acked;
        return SN_RESP_CHECK_SEQ;
    }
    if ((int32_t)(acked - r->req->ack_new - qp->rsp_seq) > 0) {
        return SN_RESP_HOLD;
    }
    if ((int32_t)(acked - qp->rsp_seq) > 0) {
        sn_resp_batch_out(r); /* our receives complete before our WRs */
    }
    if (sn_req_acked(qp, acked) != 0) {
        return SN_RESP_CLOSE;
    }
    /* SENDs of ours in the same-host ring that the peer took before it
     * sent this are done (the peer marks a slot done before its receive
     * completes): they complete first */
    if (SN_RULE_MIXED_ACK_FIRST && (qp->ring != NULL) && (qp->ring_out > 0) &&
        sn_resp_needs_recv(r->req->op)) {
        sn_resp_batch_out(r);
        sn_ring_reap(qp, 1);
    }
    return SN_RESP_CHECK_SEQ;
}

/* The QP takes requests in RTR and RTS, from its own peer only; in ERR
 * it drops them without an answer (the payload is drained) */
static sn_resp_state_t sn_resp_check_qp(sn_resp_t *r)
{
    if (SN_RULE_TCP_ERR_SILENT && (r->qp->state == IBV_QPS_ERR)) {
        return SN_RESP_DONE;
    }
    if (((r->qp->state != IBV_QPS_RTR) && (r->qp->state != IBV_QPS_RTS)) ||
        (r->qp->attr.dest_qp_num != r->chan->peer_qpn)) {
        return sn_resp_nak(r, SN_NAK_NOT_READY);
    }
    return SN_RESP_GET_RECV;
}

/* SEND and WRITE_IMM consume a receive: none posted is an RNR NAK */
static sn_resp_state_t sn_resp_get_recv(sn_resp_t *r)
{
    if (!sn_resp_needs_recv(r->req->op)) {
        return SN_RESP_CHECK_LENGTH;
    }
    if (sn_qp_pop_recv(r->qp, &r->chan->recv) != 0) {
        return sn_resp_nak(r, SN_NAK_RNR);
    }
    r->chan->have_recv = 1;
    return SN_RESP_CHECK_LENGTH;
}

/* A SEND's payload goes to its receive's scatter list, which must hold it
 * (else LOC_LEN_ERR here, REM_INV_REQ there) with valid lkeys (else
 * LOC_PROT_ERR here, REM_OP there) */
static sn_resp_state_t sn_resp_check_length(sn_resp_t *r)
{
    sn_chan_t *chan = r->chan;
    uint64_t room   = 0;
    int i;

    if ((r->req->op != SN_OP_SEND) && (r->req->op != SN_OP_SEND_IMM)) {
        return SN_RESP_CHECK_RKEY;
    }
    if (sn_sink_from_sges(r->inst, &r->chan->sink, chan->recv.sge,
                          chan->recv.num_sge, r->qp->pdn, 0,
                          r->req->length) == 0) {
        r->chan->sink.qpn = r->qp->super.qp_num;
        return SN_RESP_CHECK_RKEY;
    }
    for (i = 0; i < chan->recv.num_sge; ++i) {
        room += chan->recv.sge[i].length;
    }
    if (room < r->req->length) {
        r->recv_status = IBV_WC_LOC_LEN_ERR;
        r->nak         = SN_NAK_REM_INV_REQ;
    } else {
        r->recv_status = IBV_WC_LOC_PROT_ERR;
        r->nak         = SN_NAK_REM_OP;
    }
    return SN_RESP_RECV_ERROR;
}

/* The request may not touch the region: a WRITE_IMM's receive goes back */
static sn_resp_state_t sn_resp_access_error(sn_resp_t *r)
{
    if (r->chan->have_recv) {
        sn_resp_unpop_recv(r->qp, &r->chan->recv);
        r->chan->have_recv = 0;
    }
    return sn_resp_nak(r, SN_NAK_REM_ACCESS);
}

/* RDMA and atomics: an atomic's address must be 8-byte aligned; the QP
 * must grant the access and the rkey's region hold the range (nothing to
 * check for 0 bytes). r->snap: the region. */
static sn_resp_state_t sn_resp_check_rkey(sn_resp_t *r)
{
    sn_req_t *req = r->req;
    int access;

    switch (req->op) {
    case SN_OP_SEND:
    case SN_OP_SEND_IMM:
        return SN_RESP_EXECUTE;
    case SN_OP_WRITE:
    case SN_OP_WRITE_IMM:
        access = IBV_ACCESS_REMOTE_WRITE;
        break;
    case SN_OP_READ:
        access = IBV_ACCESS_REMOTE_READ;
        break;
    default:
        if (req->raddr & 7) {
            return sn_resp_nak(r, SN_NAK_REM_INV_REQ);
        }
        access = IBV_ACCESS_REMOTE_ATOMIC;
        break;
    }
    if ((req->length > 0) &&
        ((SN_RULE_ACCESS && !(r->qp->attr.qp_access_flags & access)) ||
         (sn_mr_check(r->inst->mrs, req->rkey, r->qp->pdn, req->raddr,
                      req->length, access, &r->snap) != 0))) {
        return sn_resp_access_error(r);
    }
    return SN_RESP_EXECUTE;
}

/* The atomic on the checked 8 bytes, announced to deregistration */
static sn_resp_state_t sn_resp_atomic(sn_resp_t *r)
{
    uint64_t *target = (uint64_t *)(uintptr_t)r->req->raddr;

    if (sn_mr_busy_begin(r->inst, &r->snap) != 0) {
        return sn_resp_access_error(r);
    }
    r->value = sn_atomic_exec(target, r->req->op == SN_OP_FADD,
                              r->req->compare_add, r->req->swap);
    sn_mr_busy_end(r->inst);
    return SN_RESP_ATOMIC_REPLY;
}

/* WRITE, WRITE_IMM: the payload goes to the checked range */
static void sn_resp_sink_region(sn_resp_t *r)
{
    sn_sink_t *sink = &r->chan->sink;

    sn_sink_reset(sink, 0);
    if (r->req->length > 0) {
        sink->num         = 1;
        sink->seg[0].addr = r->req->raddr;
        sink->seg[0].len  = r->req->length;
        sink->seg[0].snap = r->snap;
    }
    sink->qpn = r->qp->super.qp_num;
}

/* Atomics happen here; a WRITE's payload gets its place (a SEND's has it
 * already); a READ is answered next */
static sn_resp_state_t sn_resp_execute(sn_resp_t *r)
{
    switch (r->req->op) {
    case SN_OP_READ:
        return SN_RESP_READ;
    case SN_OP_CSWAP:
    case SN_OP_FADD:
        return sn_resp_atomic(r);
    case SN_OP_WRITE:
    case SN_OP_WRITE_IMM:
        sn_resp_sink_region(r);
        return SN_RESP_WAIT_PAYLOAD;
    default:
        return SN_RESP_WAIT_PAYLOAD;
    }
}

/* The payload comes next; the request is answered when it is complete.
 * A small one read already is placed now, under the QP lock the header's
 * steps hold: the request takes the lock once, not twice. */
static sn_resp_state_t sn_resp_wait_payload(sn_resp_t *r)
{
    r->chan->drop = 0;
    r->whole      = sn_stream_take_payload(r->inst, r->stream, SN_ACK_HOLD_LEN);
    return r->whole ? SN_RESP_PAYLOAD_DONE : SN_RESP_DONE;
}

/* The request was executed: it counts, and once its answer is queued
 * or owed the QP's next request frames say so (sn_qp_t.rx_ack) */
static void sn_resp_executed(sn_resp_t *r)
{
    ++r->chan->expected_seq;
}

static void sn_resp_answered(sn_resp_t *r)
{
    sn_resp_publish(r->chan);
}

/* The READ's data goes out with the ACKs held back before it */
static sn_resp_state_t sn_resp_read(sn_resp_t *r)
{
    sn_chan_t *chan = r->chan;

    if (!sn_resp_current(r)) {
        return SN_RESP_DONE;
    }
    sn_resp_executed(r);
    sn_resp_framed(chan, chan->expected_seq);
    chan->rd_active     = 1;
    chan->rd_seq        = r->req->seq;
    chan->rd_snap       = r->snap;
    chan->rd_addr       = r->req->raddr;
    chan->rd_total      = r->req->length;
    chan->rd_off        = 0;
    chan->rd_frame_left = 0;
    r->ret              = sn_resp_read_pump(r->inst, chan);
    sn_resp_answered(r); /* its data leaves ahead of later frames */
    return SN_RESP_DONE;
}

/* Answer the request: anything but an RNR or "not ready" NAK counts it as
 * executed, in success or in error (the initiator resends the others) */
static void sn_resp_answer(sn_resp_t *r, uint8_t type, uint8_t code,
                           uint64_t value)
{
    int executed = sn_resp_is_executed(type, code), ret;

    if (!sn_resp_current(r)) {
        return;
    }
    if (executed) {
        sn_resp_executed(r);
    }
    ret =
        (type == SN_RSP_ACK)
            ? sn_resp_ack_write(r->inst, r->chan, r->req->seq, 0, 0)
            : sn_resp_send(r->inst, r->chan, type, code, r->req->seq, value, 0);
    if (ret != 0) {
        r->ret = -1;
    } else if (executed) {
        sn_resp_answered(r);
    }
}

static sn_resp_state_t sn_resp_atomic_reply(sn_resp_t *r)
{
    sn_resp_answer(r, SN_RSP_ATOMIC, 0, r->value);
    return SN_RESP_DONE;
}

/* The payload is complete. Dropped requests and those answered at their
 * header are done; the others are looked at under the QP lock next. */
static sn_resp_state_t sn_resp_payload_done(sn_resp_t *r)
{
    return r->chan->drop ? SN_RESP_DONE : SN_RESP_CHECK_STATE;
}

/* r's receive completion */
static void sn_resp_recv_wc(const sn_resp_t *r, struct ibv_wc *wc,
                            enum ibv_wc_status status,
                            enum ibv_wc_opcode opcode, uint32_t byte_len,
                            int with_imm)
{
    memset(wc, 0, sizeof(*wc));
    wc->wr_id    = r->chan->recv.wr_id;
    wc->status   = status;
    wc->opcode   = opcode;
    wc->byte_len = byte_len;
    wc->qp_num   = r->qp->super.qp_num;
    wc->src_qp   = r->chan->peer_qpn;
    if (with_imm) {
        wc->wc_flags = IBV_WC_WITH_IMM;
        wc->imm_data = r->req->imm;
    }
}

/* QP lock held: r's receive completes now, after the batch's */
static void sn_resp_push_recv_wc(sn_resp_t *r, enum ibv_wc_status status,
                                 enum ibv_wc_opcode opcode, uint32_t byte_len,
                                 int with_imm, int solicited)
{
    struct ibv_wc wc;

    sn_resp_batch_out(r);
    sn_resp_recv_wc(r, &wc, status, opcode, byte_len, with_imm);
    sn_cq_push(r->qp->recv_cq, &wc, solicited);
    r->chan->have_recv = 0;
}

/* QP lock held: r (executed, its payload placed) joins the pass's batch:
 * its receive completes after the batch's one ACK (sn_resp_batch_flush) */
static void sn_resp_batch_add(sn_resp_t *r, enum ibv_wc_opcode opcode,
                              int with_imm, int solicited)
{
    sn_ack_batch_t *b = &r->inst->ack_batch;

    if (b->num == 0) { /* the batch is of r's connection (sn_ack_batch_t) */
        b->chan      = r->chan;
        b->first_seq = r->req->seq;
    }
    sn_resp_executed(r);
    sn_resp_recv_wc(r, &b->wc[b->num], IBV_WC_SUCCESS, opcode, r->req->length,
                    with_imm);
    b->solicited[b->num] = (uint8_t)solicited;
    b->bytes += r->req->length;
    r->chan->have_recv = 0;
    if (++b->num == SN_ACK_BATCH) {
        sn_resp_batch_out(r);
    }
}

/* A QP that went to ERR while the payload came answers nothing (its
 * receive, taken at the header, is flushed); else a receive completes
 * next; a WRITE whose region went away meanwhile is NAKed. */
static sn_resp_state_t sn_resp_check_state(sn_resp_t *r)
{
    if ((r->qp->state != IBV_QPS_RTR) && (r->qp->state != IBV_QPS_RTS)) {
        sn_resp_batch_out(r); /* may find the batch ahead not executed */
    }
    if (!sn_resp_current(r)) { /* behind requests not executed */
        if (r->chan->have_recv) {
            sn_resp_push_recv_wc(r, IBV_WC_WR_FLUSH_ERR, IBV_WC_RECV, 0, 0, 0);
        }
        return SN_RESP_DONE;
    }
    if (SN_RULE_TCP_ERR_SILENT && (r->qp->state == IBV_QPS_ERR)) {
        if (r->chan->have_recv) {
            sn_resp_push_recv_wc(r, IBV_WC_WR_FLUSH_ERR, IBV_WC_RECV, 0, 0, 0);
        }
        return SN_RESP_DONE;
    }
    if (r->chan->have_recv) {
        return SN_RESP_CHECK_PLACED;
    }
    if ((r->qp->state != IBV_QPS_RTR) && (r->qp->state != IBV_QPS_RTS)) {
        return sn_resp_nak(r, SN_NAK_NOT_READY); /* reset meanwhile */
    }
    return r->chan->sink.failed ? sn_resp_nak(r, SN_NAK_REM_ACCESS)
                                : SN_RESP_ACK;
}

/* A receive completes on a QP still in RTR/RTS (else it is flushed and the
 * request resent), in error if its payload could not all be placed */
static sn_resp_state_t sn_resp_check_placed(sn_resp_t *r)
{
    if ((r->qp->state != IBV_QPS_RTR) && (r->qp->state != IBV_QPS_RTS)) {
        sn_resp_push_recv_wc(r, IBV_WC_WR_FLUSH_ERR, IBV_WC_RECV, 0, 0, 0);
        return sn_resp_nak(r, SN_NAK_NOT_READY);
    }
    if (r->chan->sink.failed) {
        r->recv_status = IBV_WC_LOC_PROT_ERR;
        r->nak         = SN_NAK_REM_OP;
        return SN_RESP_RECV_ERROR;
    }
    return SN_RESP_COMPLETE_RECV;
}

/* The ACK is in the socket before the receive completes: an application
 * that ends the moment it sees the receive cannot take it away from its
 * sender (the kernel sends what the socket holds). A small request's
 * receive waits for the one ACK of the pass over what the connection's
 * read returned (sn_resp_batch_flush, at the latest when the pass ends);
 * held back in the socket in a poller's step, that ACK goes on the wire
 * in the QP's next request frame to the sender or is pushed when due,
 * within a bound (sn_int.h, "ACK coalescing"): an application that
 * answers a SEND at once sends one frame, and its peer reads one. */
static sn_resp_state_t sn_resp_complete_recv(sn_resp_t *r)
{
    int imm = (r->req->op == SN_OP_WRITE_IMM) || (r->req->op == SN_OP_SEND_IMM);
    enum ibv_wc_opcode opcode = (r->req->op == SN_OP_WRITE_IMM)
                                    ? IBV_WC_RECV_RDMA_WITH_IMM
                                    : IBV_WC_RECV;
    int solicited             = r->req->flags & SN_REQ_F_SOLICITED;

    if (sn_resp_ack_batchable(r)) {
        sn_resp_batch_add(r, opcode, imm, solicited);
        return SN_RESP_DONE;
    }
    sn_resp_answer(r, SN_RSP_ACK, 0, 0);
    sn_resp_push_recv_wc(r, IBV_WC_SUCCESS, opcode, r->req->length, imm,
                         solicited);
    return SN_RESP_DONE;
}

static sn_resp_state_t sn_resp_ack(sn_resp_t *r)
{
    sn_resp_answer(r, SN_RSP_ACK, 0, 0);
    return SN_RESP_DONE;
}

/* The receive completes in error (r->recv_status) and the responder QP goes
 * to ERR, as in IB; the initiator gets r->nak */
static sn_resp_state_t sn_resp_recv_error(sn_resp_t *r)
{
    sn_resp_push_recv_wc(r, r->recv_status, IBV_WC_RECV, 0, 0, 0);
    sn_resp_discard_payload(r->chan);
    sn_qp_to_error(r->qp);
    return SN_RESP_NAK;
}

static sn_resp_state_t sn_resp_send_nak(sn_resp_t *r)
{
    sn_resp_answer(r, SN_RSP_NAK, r->nak, 0);
    return SN_RESP_DONE;
}

/* ---- the chain ---------------------------------------------------------- */

typedef enum {
    SN_QP_UNLOCKED = 0,
    SN_QP_LOCKED   = 1,
    SN_QP_EITHER   = 2
} sn_resp_lock_t;

static const struct {
    sn_resp_state_t (*fn)(sn_resp_t *r);
    sn_resp_lock_t qp_lock; /* what the step runs under */
    int answers;            /* sends a frame: the batch goes first */
} sn_resp_steps[] = {
    [SN_RESP_CHECK_HEADER]  = {sn_resp_check_header, SN_QP_UNLOCKED, 0},
    [SN_RESP_CHECK_SEQ]     = {sn_resp_check_seq, SN_QP_EITHER, 0},
    [SN_RESP_CHECK_ACKED]   = {sn_resp_check_acked, SN_QP_LOCKED, 0},
    [SN_RESP_CHECK_QP]      = {sn_resp_check_qp, SN_QP_LOCKED, 0},
    [SN_RESP_GET_RECV]      = {sn_resp_get_recv, SN_QP_LOCKED, 0},
    [SN_RESP_CHECK_LENGTH]  = {sn_resp_check_length, SN_QP_LOCKED, 0},
    [SN_RESP_CHECK_RKEY]    = {sn_resp_check_rkey, SN_QP_LOCKED, 0},
    [SN_RESP_EXECUTE]       = {sn_resp_execute, SN_QP_LOCKED, 0},
    [SN_RESP_WAIT_PAYLOAD]  = {sn_resp_wait_payload, SN_QP_EITHER, 0},
    [SN_RESP_READ]          = {sn_resp_read, SN_QP_UNLOCKED, 1},
    [SN_RESP_ATOMIC_REPLY]  = {sn_resp_atomic_reply, SN_QP_UNLOCKED, 1},
    [SN_RESP_PAYLOAD_DONE]  = {sn_resp_payload_done, SN_QP_EITHER, 0},
    [SN_RESP_CHECK_STATE]   = {sn_resp_check_state, SN_QP_LOCKED, 0},
    [SN_RESP_CHECK_PLACED]  = {sn_resp_check_placed, SN_QP_LOCKED, 0},
    [SN_RESP_COMPLETE_RECV] = {sn_resp_complete_recv, SN_QP_LOCKED, 0},
    [SN_RESP_ACK]           = {sn_resp_ack, SN_QP_UNLOCKED, 1},
    [SN_RESP_RECV_ERROR]    = {sn_resp_recv_error, SN_QP_LOCKED, 0},
    [SN_RESP_NAK]           = {sn_resp_send_nak, SN_QP_UNLOCKED, 1},
};

static void sn_resp_hold_qp(sn_resp_t *r, sn_resp_lock_t want)
{
    if ((want == SN_QP_EITHER) || ((int)want == r->qp_locked)) {
        return;
    }
    if (want == SN_QP_LOCKED) {
        pthread_mutex_lock(&r->qp->lock);
    } else {
        pthread_mutex_unlock(&r->qp->lock);
    }
    r->qp_locked = (want == SN_QP_LOCKED);
}

/* Run the steps of request req from first to the end; -1: close the
 * connection, 1: the request is held (not taken) */
static int sn_resp_run(sn_inst_t *inst, sn_chan_t *chan, sn_req_t *req,
                       const sn_resp_state_t first)
{
    sn_resp_state_t state = first;
    int frame_done;
    sn_resp_t r;

    memset(&r, 0, sizeof(r));
    r.inst   = inst;
    r.chan   = chan;
    r.stream = chan->stream;
    r.qp     = chan->qp;
    r.req    = req;
    while ((state != SN_RESP_DONE) && (state != SN_RESP_HOLD) &&
           (state != SN_RESP_CLOSE)) {
        if (sn_resp_steps[state].answers && (inst->ack_batch.num > 0)) {
            sn_resp_hold_qp(&r, SN_QP_LOCKED);
            sn_resp_batch_out(&r);
        }
        sn_resp_hold_qp(&r, sn_resp_steps[state].qp_lock);
        state = sn_resp_steps[state].fn(&r);
    }
    frame_done = (first == SN_RESP_PAYLOAD_DONE) || r.whole;
    if (chan->late_ack && (state == SN_RESP_DONE) &&
        (frame_done || !sn_req_has_payload(r.req->op))) {
        chan->late_ack = 0;
        sn_resp_hold_qp(&r, SN_QP_LOCKED);
        sn_resp_batch_out(&r); /* after the request's receive, too */
        if (sn_req_acked(r.qp, chan->late_ack_end) != 0) {
            state = SN_RESP_CLOSE;
        }
    }
    if (r.qp_locked && (state == SN_RESP_DONE) && frame_done &&
        sn_stream_spent(r.stream)) {
        /* the pass ends next: its one ACK goes now, under the lock held
         * already, not under sn_resp_batch_end's own */
        sn_resp_batch_out(&r);
    }
    sn_resp_hold_qp(&r, SN_QP_UNLOCKED);
    if (state == SN_RESP_HOLD) {
        return 1;
    }
    if ((state == SN_RESP_CLOSE) || (r.ret != 0)) {
        return -1;
    }
    return r.whole ? 2 : 0;
}

/* ---- requests longer than a frame (sn_wire.h) --------------------------- */

/* The request taken (its header's steps ran) has more payload than its
 * frame carries: the rest comes in REQ_DATA frames, the request waits on
 * the channel (its payload's sink is there already) */
static void sn_resp_segment(sn_chan_t *chan)
{
    sn_stream_t *stream = chan->stream;

    chan->msg        = stream->hdr.req;
    chan->msg_left   = stream->pay_left - SN_FRAME_MAX;
    chan->msg_off    = SN_FRAME_MAX;
    stream->pay_left = SN_FRAME_MAX;
}

int sn_resp_on_header(sn_inst_t *inst, sn_chan_t *chan)
{
    int ret;

    if (chan->msg_left != 0) {
        sn_log(inst, SOFTNIC_LOG_WARN,
               "qp 0x%x: a request while %u bytes of request %u are due in "
               "REQ_DATA frames",
               chan->peer_qpn, chan->msg_left, chan->msg.seq);
        return -1;
    }
    ret = sn_resp_run(inst, chan, &chan->stream->hdr.req, SN_RESP_CHECK_HEADER);
    if ((ret == 0) && (chan->stream->pay_left > SN_FRAME_MAX)) {
        sn_resp_segment(chan);
    }
    return ret;
}

/* Why the REQ_DATA frame d does not continue chan's request, or NULL */
static const char *sn_resp_data_refusal(const sn_chan_t *chan,
                                        const sn_req_data_t *d)
{
    if ((d->flags != 0) || (d->reserved != 0) || (d->reserved2 != 0) ||
        (d->reserved3 != 0)) {
        return "reserved fields set";
    }
    if (chan->msg_left == 0) {
        return "no request in progress";
    }
    if (d->seq != chan->msg.seq) {
        return "another request's";
    }
    if (d->offset != chan->msg_off) {
        return "not at the offset due";
    }
    if (d->length > SN_FRAME_MAX) {
        return "longer than a frame";
    }
    if (d->length > chan->msg_left) {
        return "longer than what is due";
    }
    return NULL;
}

int sn_resp_on_data(sn_inst_t *inst, sn_chan_t *chan)
{
    sn_stream_t *stream = chan->stream;
    sn_req_data_t *d    = &stream->hdr.data;
    const char *why;

    d->seq    = le32toh(d->seq);
    d->length = le32toh(d->length);
    d->offset = le32toh(d->offset);
    why       = sn_resp_data_refusal(chan, d);
    if (why != NULL) {
        sn_log(inst, SOFTNIC_LOG_WARN,
               "qp 0x%x: REQ_DATA (seq %u offset %u length %u): %s",
               chan->peer_qpn, d->seq, d->offset, d->length, why);
        return -1;
    }
    stream->pay_left = d->length;
    chan->msg_left -= d->length;
    chan->msg_off += d->length;
    return 0;
}

int sn_resp_on_payload(sn_inst_t *inst, sn_chan_t *chan)
{
    sn_stream_t *stream = chan->stream;

    if (chan->msg_left != 0) {
        return 0; /* REQ_DATA frames are due */
    }
    return sn_resp_run(inst, chan,
                       (stream->hdr.req.op == SN_FRAME_REQ_DATA)
                           ? &chan->msg
                           : &stream->hdr.req,
                       SN_RESP_PAYLOAD_DONE);
}
