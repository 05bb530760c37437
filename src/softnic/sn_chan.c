/*
 * softnic's channels (sn_wire.h): one (initiator QP, target QP) pair on a
 * stream, one channel per stream. Opening one (the initiator's CHAN_OPEN
 * names the QP pair; the target's CHAN_ACK accepts it or refuses it), the
 * same-host paths the handshake sets up (MR table, SEND ring), and its
 * close: what a target channel gives back, how an initiator channel's
 * loss fails its QP. The socket side, and the HELLO that names the
 * instances, are the stream's (sn_stream.c).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_wire.h"

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

/* ---- the channel object ------------------------------------------------- */

sn_chan_t *sn_chan_new(sn_stream_t *stream, int role)
{
    sn_chan_t *chan = calloc(1, sizeof(*chan));

    if (chan != NULL) {
        chan->stream = stream;
        chan->role   = role;
        chan->id     = SN_CHAN_ID_ONE;
    }
    return chan;
}

/* TGT: the receive taken and the ring attached go back to the QP */
static void sn_chan_tgt_detach(sn_chan_t *chan)
{
    sn_qp_t *qp = chan->qp;
    sn_ring_att_t **pp;

    /* the CQ polls' peek goes before the ring is unmapped (sn_chan_close) */
    sn_cq_walks_lock(qp);
    pthread_mutex_lock(&qp->lock);
    if (chan->have_recv) {
        sn_resp_unpop_recv(qp, &chan->recv);
    }
    for (pp = &qp->rings; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == chan->ring_att) {
            *pp = chan->ring_att->next;
            break;
        }
    }
    pthread_mutex_unlock(&qp->lock);
    sn_cq_walks_unlock(qp);
}

void sn_chan_close(sn_inst_t *inst, sn_chan_t *chan)
{
    if ((chan->role == SN_ROLE_TGT) && (chan->qp != NULL) &&
        (chan->have_recv || (chan->ring_att != NULL))) {
        sn_chan_tgt_detach(chan);
    }
    if (chan->ack_owed) {
        /* what was executed is acknowledged: QP destroyed, the instance
         * closing (a dead stream just takes them along) */
        (void)sn_resp_ack_flush(inst, chan);
    }
    if (chan->ring != NULL) {
        sn_ring_destroy(inst, chan->ring, chan->ring_id);
        __atomic_fetch_sub(&inst->num_rings, 1, __ATOMIC_RELAXED);
    }
    free(chan->ring_att);
    free(chan);
}

void sn_chan_ini_fail(sn_inst_t *inst, sn_chan_t *chan)
{
    sn_stream_t *stream = chan->stream;
    sn_qp_t *qp         = chan->qp;

    pthread_mutex_lock(&qp->lock);
    if (qp->stream_id == stream->id) {
        sn_log(inst, SOFTNIC_LOG_INFO, "qp 0x%x: connection to qp 0x%x lost",
               qp->super.qp_num, qp->attr.dest_qp_num);
        __atomic_store_n(&qp->stream_id, 0, __ATOMIC_RELAXED); /* closed
                                                                  here */
        sn_qp_peer_lost(qp, 1);
    }
    pthread_mutex_unlock(&qp->lock);
    sn_stream_close(inst, stream);
}

/* ---- channel frames ---------------------------------------------------- */

static void sn_chanf_fill(sn_chanf_t *f, uint8_t type, uint16_t status,
                          uint32_t chan, uint32_t peer_chan)
{
    memset(f, 0, sizeof(*f));
    f->type      = type;
    f->status    = htole16(status);
    f->chan      = htole32(chan);
    f->peer_chan = htole32(peer_chan);
}

/* Does the channel frame f (host order) hold what its type says, and
 * zeros elsewhere? (its type is a CHAN_* one: the parser's type switch) */
static int sn_chanf_valid(const sn_chanf_t *f)
{
    int no_ack_fields =
        (f->pdn == 0) && (f->ring_id == 0) && (f->ring_slots == 0);
    int no_qpns = (f->src_qpn == 0) && (f->dst_qpn == 0);

    if (f->flags != 0) {
        return 0;
    }
    switch (f->type) {
    case SN_FRAME_CHAN_OPEN:
        return (f->status == 0) && (f->peer_chan != 0) && no_ack_fields;
    case SN_FRAME_CHAN_ACK: /* a refusal names no channel */
        return no_qpns && ((f->status == 0) == (f->peer_chan != 0));
    default: /* CLOSE */
        return (f->status == 0) && (f->peer_chan == 0) && no_qpns &&
               no_ack_fields;
    }
}

/* The channel frame in the stream's hdr, in host order and checked: 0, or
 * -1 for a malformed one (the stream closes) */
static int sn_chanf_check(sn_inst_t *inst, sn_chanf_t *f)
{
    f->status     = le16toh(f->status);
    f->peer_chan  = le32toh(f->peer_chan);
    f->src_qpn    = le32toh(f->src_qpn);
    f->dst_qpn    = le32toh(f->dst_qpn);
    f->pdn        = le32toh(f->pdn);
    f->ring_id    = le32toh(f->ring_id);
    f->ring_slots = le32toh(f->ring_slots);
    if (sn_chanf_valid(f)) {
        return 0;
    }
    sn_log(inst, SOFTNIC_LOG_WARN,
           "malformed channel frame (type 0x%x status %u)", f->type, f->status);
    return -1;
}

/* ---- target side -------------------------------------------------------- */

/* TGT: a CHAN_OPEN for a QP that does not exist is refused (CHAN_ACK
 * ENOENT); the stream closes once the answer is out */
static void sn_chan_refuse(sn_inst_t *inst, sn_chan_t *chan,
                           const sn_chanf_t *open)
{
    sn_stream_t *stream = chan->stream;
    sn_chanf_t ack;

    sn_log(inst, SOFTNIC_LOG_INFO, "channel open for unknown qp 0x%x",
           open->dst_qpn);
    sn_chanf_fill(&ack, SN_FRAME_CHAN_ACK, ENOENT, open->peer_chan, 0);
    sn_stream_out(inst, stream, &ack, sizeof(ack), NULL, 0);
    stream->state = SN_CS_CLOSING;
    sn_stream_set_events(inst, stream, EPOLLOUT);
}

/* TGT, same host: offer the initiator a shared-memory ring for its SENDs
 * (the ACK names it); without one, its SENDs stay on TCP */
static void sn_chan_offer_ring(sn_inst_t *inst, sn_chan_t *chan,
                               sn_chanf_t *ack)
{
    sn_qp_t *qp = chan->qp;

    chan->ring_att = calloc(1, sizeof(*chan->ring_att));
    if (chan->ring_att != NULL) {
        chan->ring = sn_ring_create(inst, &chan->ring_id);
    }
    if (chan->ring == NULL) {
        free(chan->ring_att);
        chan->ring_att = NULL;
        return;
    }
    chan->ring_att->ring    = chan->ring;
    chan->ring_att->src_qpn = chan->peer_qpn;
    sn_cq_walks_lock(qp);
    pthread_mutex_lock(&qp->lock);
    sn_ring_set_rnr_timer(chan->ring, qp->attr.min_rnr_timer);
    chan->ring_att->next = qp->rings;
    qp->rings            = chan->ring_att;
    pthread_mutex_unlock(&qp->lock);
    sn_cq_walks_unlock(qp);
    __atomic_fetch_add(&inst->num_rings, 1, __ATOMIC_RELAXED);
    ack->ring_id    = htole32(chan->ring_id);
    ack->ring_slots = htole32(SN_RING_SLOTS);
}

/* TGT: the RC QP qpn names, or NULL; its PD in *pdn */
static sn_qp_t *sn_chan_find_qp(sn_inst_t *inst, uint32_t qpn, uint32_t *pdn)
{
    sn_qp_t *qp;

    pthread_mutex_lock(&inst->lock);
    qp = sn_qp_find(inst, qpn);
    if ((qp != NULL) && (qp->super.qp_type != IBV_QPT_RC)) {
        qp = NULL; /* a UD QP takes no connection */
    }
    if (qp != NULL) {
        *pdn = qp->pdn;
    }
    pthread_mutex_unlock(&inst->lock);
    return qp;
}

/* TGT: a CHAN_OPEN arrived (checked). Returns -1 to close. */
static int sn_chan_on_open(sn_inst_t *inst, sn_chan_t *chan,
                           const sn_chanf_t *open)
{
    sn_stream_t *stream = chan->stream;
    int same_host =
        !memcmp(&stream->peer_host, &inst->host, sizeof(inst->host));
    sn_chanf_t ack;
    sn_qp_t *qp;
    uint32_t pdn = 0;

    qp = sn_chan_find_qp(inst, open->dst_qpn, &pdn);
    if (qp == NULL) {
        sn_chan_refuse(inst, chan, open);
        return 0;
    }

    chan->qp        = qp;
    chan->peer_qpn  = open->src_qpn & 0xffffff;
    chan->peer_chan = open->peer_chan;
    chan->ready     = 1;
    pthread_mutex_lock(&qp->lock);
    if (qp->attr.dest_qp_num == chan->peer_qpn) {
        /* the peer starts its sequence over */
        __atomic_store_n(&qp->rx_ack, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&qp->ack_carried, 0, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&qp->lock);
    sn_log(inst, SOFTNIC_LOG_DEBUG, "qp 0x%x: connection from qp 0x%x",
           qp->super.qp_num, chan->peer_qpn);
    /* a QP that takes no receives waits for nothing from its peer in a
     * CQ: its requests are served even while the pollers keep the
     * service thread back (sn_int.h, "Polling") */
    sn_stream_set_quiet(inst, stream, !sn_qp_takes_recvs(qp));
    sn_chanf_fill(&ack, SN_FRAME_CHAN_ACK, 0, chan->peer_chan, chan->id);
    ack.pdn = htole32(pdn);
    if (inst->config.no_cma || !same_host) {
        sn_stream_count_tcp(inst, stream);
    } else if (!inst->config.no_ring) {
        sn_chan_offer_ring(inst, chan, &ack);
    }
    return sn_stream_out(inst, stream, &ack, sizeof(ack), NULL, 0);
}

/* ---- initiator side ----------------------------------------------------- */

/* INI: the same-host paths the target (the stream's peer) offers in its
 * CHAN_ACK, mapped: its MR table (CMA) and its SEND ring (NULL when not
 * used). Returns whether CMA is used. */
static int sn_chan_map_peer(sn_inst_t *inst, const sn_stream_t *stream,
                            const sn_chanf_t *ack, sn_mr_entry_t **table_p,
                            struct sn_ring **ring_p)
{
    int same_host =
        !inst->config.no_cma &&
        !memcmp(&stream->peer_host, &inst->host, sizeof(inst->host));
    uint64_t pid_ns = le64toh(stream->peer_host.pid_ns);

    *table_p = NULL;
    *ring_p  = NULL;
    if (same_host) {
        *table_p =
            sn_mr_table_map(pid_ns, stream->peer_pid, stream->peer_inst_id);
        same_host = (*table_p != NULL);
    }
    if (same_host && !inst->config.no_ring && (ack->ring_id != 0) &&
        (ack->ring_slots == SN_RING_SLOTS)) {
        *ring_p = sn_ring_map(pid_ns, stream->peer_pid, stream->peer_inst_id,
                              ack->ring_id);
    }
    return same_host;
}

/* INI, QP lock held: the channel is up, the QP may transmit */
static void sn_chan_ini_ready(sn_inst_t *inst, sn_chan_t *chan,
                              const sn_chanf_t *ack, sn_mr_entry_t *table,
                              struct sn_ring *ring, int same_host)
{
    sn_qp_t *qp = chan->qp;

    if (ring != NULL) {
        qp->ring            = ring;
        qp->ring_prod       = 0;
        qp->ring_reaped     = 0;
        qp->ring_out        = 0;
        qp->ring_atomic_out = 0;
        __atomic_fetch_add(&inst->num_rings, 1, __ATOMIC_RELAXED);
    }
    chan->peer_chan = ack->peer_chan;
    chan->ready     = 1;
    qp->conn_state  = SN_CONN_READY;
    if (!same_host) {
        sn_stream_count_tcp(inst, chan->stream);
    }
    qp->stream_fd        = chan->stream->fd;
    qp->chan_id          = ack->peer_chan;
    qp->same_host        = same_host;
    qp->peer_mrs         = table;
    qp->peer_pid         = chan->stream->peer_pid;
    qp->peer_pdn         = ack->pdn;
    qp->last_progress_ns = sn_now_ns(); /* the QP's budget starts now */
    sn_log(inst, SOFTNIC_LOG_DEBUG, "qp 0x%x: connected to qp 0x%x (%s)",
           qp->super.qp_num, qp->attr.dest_qp_num,
           !same_host       ? "TCP"
           : (ring != NULL) ? "same host, CMA and ring"
                            : "same host, CMA");
    sn_qp_tx(qp);
}

/* INI: the CHAN_ACK arrived (checked). Returns 0 when the QP's channel is
 * up, -1 to fail it (a stale stream, whose QP has moved on, just closes:
 * sn_chan_ini_fail) */
static int sn_chan_on_ack(sn_inst_t *inst, sn_chan_t *chan,
                          const sn_chanf_t *ack)
{
    sn_qp_t *qp = chan->qp;
    sn_mr_entry_t *table;
    struct sn_ring *ring;
    int same_host;

    if (ack->status != 0) {
        sn_log(inst, SOFTNIC_LOG_INFO,
               "qp 0x%x: connection refused by the peer (%u)", qp->super.qp_num,
               ack->status);
        return -1;
    }
    same_host = sn_chan_map_peer(inst, chan->stream, ack, &table, &ring);

    pthread_mutex_lock(&qp->lock);
    if (qp->stream_id != chan->stream->id) {
        pthread_mutex_unlock(&qp->lock);
        sn_mr_table_unmap(table);
        if (ring != NULL) {
            sn_ring_unmap(ring);
        }
        return -1;
    }
    sn_chan_ini_ready(inst, chan, ack, table, ring, same_host);
    pthread_mutex_unlock(&qp->lock);
    return 0;
}

int sn_chan_on_frame(sn_inst_t *inst, sn_chan_t *chan)
{
    sn_chanf_t *f = &chan->stream->hdr.chanf;

    if (sn_chanf_check(inst, f) != 0) {
        return -1;
    }
    switch (f->type) {
    case SN_FRAME_CHAN_OPEN:
        return sn_chan_on_open(inst, chan, f);
    case SN_FRAME_CHAN_ACK:
        return sn_chan_on_ack(inst, chan, f);
    default: /* CLOSE: the channel ends, as its stream's end ends it */
        sn_log(inst, SOFTNIC_LOG_DEBUG, "channel 0x%x closed by the peer",
               chan->id);
        return -1;
    }
}

/* QP lock held: a stream to the QP's peer carrying its INI channel, its
 * HELLO and CHAN_OPEN waiting in the output until connect() completes;
 * NULL on failure */
static sn_stream_t *sn_chan_open_ini(sn_inst_t *inst, sn_qp_t *qp)
{
    struct sockaddr_in remote;
    sn_stream_t *stream;
    sn_chanf_t open;

    memset(&remote, 0, sizeof(remote));
    remote.sin_family = AF_INET;
    remote.sin_port =
        htons((inst->config.qpn_port_base == 0)
                  ? qp->attr.ah_attr.dlid
                  : inst->config.qpn_port_base +
                        (qp->attr.dest_qp_num >> SOFTNIC_QPN_PORT_SHIFT));
    memcpy(&remote.sin_addr, &qp->attr.ah_attr.grh.dgid.raw[12], 4);
    /* one channel per stream: the INI channel's id is known before */
    sn_chanf_fill(&open, SN_FRAME_CHAN_OPEN, 0, 0, SN_CHAN_ID_ONE);
    open.src_qpn = htole32(qp->super.qp_num);
    open.dst_qpn = htole32(qp->attr.dest_qp_num);
    stream       = sn_stream_open(inst, &remote, &open, sizeof(open));
    if (stream != NULL) {
        stream->chan->qp = qp;
    }
    return stream;
}

void sn_chan_connect_qp(sn_inst_t *inst, sn_qp_t *qp)
{
    sn_stream_t *stream;

    pthread_mutex_lock(&qp->lock);
    if ((qp->conn_state == SN_CONN_CONNECTING) && (qp->stream_id == 0)) {
        stream = sn_chan_open_ini(inst, qp);
        if (stream != NULL) {
            __atomic_store_n(&qp->stream_id, stream->id, __ATOMIC_RELAXED);
            qp->stream = stream;
        } else {
            qp->conn_state = SN_CONN_FAILED;
            sn_qp_tx(qp); /* fails queued WRs, if any */
        }
    }
    pthread_mutex_unlock(&qp->lock);
}

void sn_chan_ini_writable(sn_inst_t *inst, sn_chan_t *chan)
{
    sn_stream_t *stream = chan->stream;
    sn_qp_t *qp         = chan->qp;

    pthread_mutex_lock(&qp->lock);
    if (qp->stream_id != stream->id) {
        pthread_mutex_unlock(&qp->lock);
        sn_stream_close(inst, stream);
        return;
    }
    qp->tx_blocked = 0;
    sn_qp_tx(qp);
    if (!qp->tx_blocked && (qp->stream_id == stream->id)) {
        stream->events = EPOLLIN | EPOLLOUT; /* force the MOD */
        sn_stream_set_events(inst, stream, EPOLLIN);
    }
    pthread_mutex_unlock(&qp->lock);
}
