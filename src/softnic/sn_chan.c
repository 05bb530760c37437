/*
 * softnic's channels (sn_wire.h): one (initiator QP, target QP) pair on a
 * stream, one channel per stream. Opening one (the initiator's HELLO names
 * the QP pair; the target's HELLO_ACK accepts it or refuses it), the
 * same-host paths the handshake sets up (MR table, SEND ring), and its
 * close: what a target channel gives back, how an initiator channel's
 * loss fails its QP. The socket side is the stream's (sn_stream.c).
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

/* ---- HELLO contents ----------------------------------------------------- */

static void sn_hello_fill(sn_inst_t *inst, sn_hello_t *h, uint16_t type,
                          uint32_t a, uint32_t b)
{
    memset(h, 0, sizeof(*h));
    h->magic         = htole32(SN_HELLO_MAGIC);
    h->version       = htole16(SN_WIRE_VERSION);
    h->type          = htole16(type);
    h->qpn_or_status = htole32(a);
    h->qpn_or_pdn    = htole32(b);
    h->host          = inst->host;
    h->pid           = htole32((uint32_t)inst->pid);
    h->inst_id       = htole32(inst->id);
}

static int sn_hello_valid(const sn_hello_t *h, uint16_t type)
{
    return (le32toh(h->magic) == SN_HELLO_MAGIC) &&
           (le16toh(h->version) == SN_WIRE_VERSION) &&
           (le16toh(h->type) == type);
}

/* ---- target side -------------------------------------------------------- */

/* TGT: a HELLO for a QP that does not exist is refused (ENOENT); the
 * stream closes once the answer is out */
static void sn_chan_refuse(sn_inst_t *inst, sn_chan_t *chan, uint32_t qpn)
{
    sn_stream_t *stream = chan->stream;
    sn_hello_t ack;

    sn_log(inst, SOFTNIC_LOG_INFO, "hello for unknown qp 0x%x", qpn);
    sn_hello_fill(inst, &ack, SN_HELLO_ACK, ENOENT, 0);
    sn_stream_out(inst, stream, &ack, sizeof(ack), NULL, 0);
    stream->state = SN_CS_CLOSING;
    sn_stream_set_events(inst, stream, EPOLLOUT);
}

/* TGT, same host: offer the initiator a shared-memory ring for its SENDs
 * (the ACK names it); without one, its SENDs stay on TCP */
static void sn_chan_offer_ring(sn_inst_t *inst, sn_chan_t *chan,
                               sn_hello_t *ack)
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

/* TGT: a HELLO arrived. Returns -1 to close. */
static int sn_chan_on_open(sn_inst_t *inst, sn_chan_t *chan,
                           const sn_hello_t *h)
{
    int same_host = !memcmp(&h->host, &inst->host, sizeof(h->host));
    sn_hello_t ack;
    sn_qp_t *qp;
    uint32_t pdn = 0;

    if (!sn_hello_valid(h, SN_HELLO)) {
        sn_log(inst, SOFTNIC_LOG_WARN, "malformed hello");
        return -1;
    }
    qp = sn_chan_find_qp(inst, le32toh(h->qpn_or_pdn), &pdn);
    if (qp == NULL) {
        sn_chan_refuse(inst, chan, le32toh(h->qpn_or_pdn));
        return 0;
    }

    chan->qp            = qp;
    chan->peer_qpn      = le32toh(h->qpn_or_status) & 0xffffff;
    chan->stream->state = SN_CS_READY;
    pthread_mutex_lock(&qp->lock);
    if (qp->attr.dest_qp_num == chan->peer_qpn) {
        /* the peer starts its sequence over */
        __atomic_store_n(&qp->rx_ack, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&qp->ack_carried, 0, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&qp->lock);
    sn_log(inst, SOFTNIC_LOG_DEBUG, "qp 0x%x: connection from qp 0x%x",
           qp->super.qp_num, chan->peer_qpn);
    sn_hello_fill(inst, &ack, SN_HELLO_ACK, 0, pdn);
    if (inst->config.no_cma || !same_host) {
        sn_stream_count_tcp(inst, chan->stream);
    } else if (!inst->config.no_ring) {
        sn_chan_offer_ring(inst, chan, &ack);
    }
    return sn_stream_out(inst, chan->stream, &ack, sizeof(ack), NULL, 0);
}

/* ---- initiator side ----------------------------------------------------- */

/* INI: the same-host paths the target offers, mapped: its MR table (CMA)
 * and its SEND ring (NULL when not used). Returns whether CMA is used. */
static int sn_chan_map_peer(sn_inst_t *inst, const sn_hello_t *h,
                            sn_mr_entry_t **table_p, struct sn_ring **ring_p)
{
    int same_host =
        !inst->config.no_cma && !memcmp(&h->host, &inst->host, sizeof(h->host));

    *table_p = NULL;
    *ring_p  = NULL;
    if (same_host) {
        *table_p  = sn_mr_table_map(le64toh(h->host.pid_ns),
                                    (pid_t)le32toh(h->pid), le32toh(h->inst_id));
        same_host = (*table_p != NULL);
    }
    if (same_host && !inst->config.no_ring && (le32toh(h->ring_id) != 0) &&
        (le32toh(h->ring_slots) == SN_RING_SLOTS)) {
        *ring_p = sn_ring_map(le64toh(h->host.pid_ns), (pid_t)le32toh(h->pid),
                              le32toh(h->inst_id), le32toh(h->ring_id));
    }
    return same_host;
}

/* INI, QP lock held: the channel is up, the QP may transmit */
static void sn_chan_ini_ready(sn_inst_t *inst, sn_chan_t *chan,
                              const sn_hello_t *h, sn_mr_entry_t *table,
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
    chan->stream->state = SN_CS_READY;
    qp->conn_state      = SN_CONN_READY;
    if (!same_host) {
        sn_stream_count_tcp(inst, chan->stream);
    }
    qp->stream_fd        = chan->stream->fd;
    qp->same_host        = same_host;
    qp->peer_mrs         = table;
    qp->peer_pid         = (pid_t)le32toh(h->pid);
    qp->peer_pdn         = le32toh(h->qpn_or_pdn);
    qp->last_progress_ns = sn_now_ns(); /* the QP's budget starts now */
    sn_log(inst, SOFTNIC_LOG_DEBUG, "qp 0x%x: connected to qp 0x%x (%s)",
           qp->super.qp_num, qp->attr.dest_qp_num,
           !same_host       ? "TCP"
           : (ring != NULL) ? "same host, CMA and ring"
                            : "same host, CMA");
    sn_qp_tx(qp);
}

/* INI: the HELLO_ACK arrived. Returns 1 when the QP's channel is up,
 * -1 to fail it, 0 when the stream was stale (closed here). */
static int sn_chan_on_ack(sn_inst_t *inst, sn_chan_t *chan, const sn_hello_t *h)
{
    sn_qp_t *qp = chan->qp;
    sn_mr_entry_t *table;
    struct sn_ring *ring;
    int same_host;

    if (!sn_hello_valid(h, SN_HELLO_ACK) || (le32toh(h->qpn_or_status) != 0)) {
        sn_log(inst, SOFTNIC_LOG_INFO,
               "qp 0x%x: connection refused by the peer (%u)", qp->super.qp_num,
               le32toh(h->qpn_or_status));
        return -1;
    }
    same_host = sn_chan_map_peer(inst, h, &table, &ring);

    pthread_mutex_lock(&qp->lock);
    if (qp->stream_id != chan->stream->id) {
        pthread_mutex_unlock(&qp->lock);
        sn_mr_table_unmap(table);
        if (ring != NULL) {
            sn_ring_unmap(ring);
        }
        sn_stream_close(inst, chan->stream);
        return 0;
    }
    sn_chan_ini_ready(inst, chan, h, table, ring, same_host);
    pthread_mutex_unlock(&qp->lock);
    return 1;
}

int sn_chan_on_hello(sn_inst_t *inst, sn_chan_t *chan, const sn_hello_t *h)
{
    if (chan->role == SN_ROLE_TGT) {
        return (sn_chan_on_open(inst, chan, h) < 0) ? -1 : 1;
    }
    return sn_chan_on_ack(inst, chan, h);
}

/* QP lock held: a stream to the QP's peer carrying its INI channel, its
 * HELLO waiting in the output until connect() completes; NULL on failure */
static sn_stream_t *sn_chan_open_ini(sn_inst_t *inst, sn_qp_t *qp)
{
    struct sockaddr_in remote;
    sn_stream_t *stream;
    sn_hello_t hello;

    memset(&remote, 0, sizeof(remote));
    remote.sin_family = AF_INET;
    remote.sin_port =
        htons((inst->config.qpn_port_base == 0)
                  ? qp->attr.ah_attr.dlid
                  : inst->config.qpn_port_base +
                        (qp->attr.dest_qp_num >> SOFTNIC_QPN_PORT_SHIFT));
    memcpy(&remote.sin_addr, &qp->attr.ah_attr.grh.dgid.raw[12], 4);
    sn_hello_fill(inst, &hello, SN_HELLO, qp->super.qp_num,
                  qp->attr.dest_qp_num);
    stream = sn_stream_open(inst, &remote, &hello, sizeof(hello));
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
