/*
 * softnic's connections (sn_wire.h): the connection objects and their
 * sockets, accepting and connecting (with retries of a slow connect), the
 * HELLO handshake (same-host paths: MR table, SEND ring), the output
 * buffer, receiving frames and their payloads into checked memory
 * (sinks), and a connection's events, handing each frame to the responder
 * (sn_resp.c) or the requester (sn_req.c).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_wire.h"

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* ---- epoll helpers ----------------------------------------------------- */

void sn_conn_set_events(sn_inst_t *inst, sn_conn_t *conn, uint32_t events)
{
    struct epoll_event ev;

    if (conn->events == events) {
        return;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events   = events;
    ev.data.ptr = conn;
    if (epoll_ctl(inst->epoll_fd, EPOLL_CTL_MOD, conn->fd, &ev) == 0) {
        conn->events = events;
    }
}

void sn_svc_want_tx(sn_qp_t *qp)
{
    sn_inst_t *inst = sn_qp_inst(qp);
    struct epoll_event ev;

    if (qp->tx_blocked || (qp->conn == NULL)) {
        return;
    }
    qp->tx_blocked = 1;
    memset(&ev, 0, sizeof(ev));
    ev.events   = EPOLLIN | EPOLLOUT;
    ev.data.ptr = qp->conn;
    /* conn->events is the service thread's; it re-reads the real interest
     * from tx_blocked under the QP lock */
    epoll_ctl(inst->epoll_fd, EPOLL_CTL_MOD, qp->conn_fd, &ev);
}

/* ---- sinks ------------------------------------------------------------- */

/* Build a sink over [offset, offset + len) of a scatter list, checking every
 * segment against the local MR table (LOCAL_WRITE, pdn; a segment's
 * snapshot from an earlier sink stands while its entry is unchanged).
 * Returns 0 or -1. */
int sn_sink_from_sges(sn_inst_t *inst, sn_sink_t *sink,
                      const struct ibv_sge *sge, int num_sge, uint32_t pdn,
                      uint64_t offset, uint64_t len)
{
    uint64_t take;
    int i;

    sn_sink_reset(sink, 0);
    for (i = 0; (i < num_sge) && (len > 0); ++i) {
        if (offset >= sge[i].length) {
            offset -= sge[i].length;
            continue;
        }
        take = sge[i].length - offset;
        if (take > len) {
            take = len;
        }
        if (sn_mr_check_again(inst->mrs, sge[i].lkey, pdn, sge[i].addr + offset,
                              take, IBV_ACCESS_LOCAL_WRITE,
                              &sink->seg[sink->num].snap) != 0) {
            return -1;
        }
        sink->seg[sink->num].addr = sge[i].addr + offset;
        sink->seg[sink->num].len  = take;
        ++sink->num;
        len -= take;
        offset = 0;
    }
    return (len == 0) ? 0 : -1;
}

static void sn_sink_advance(sn_sink_t *sink, uint64_t n)
{
    sink->cur_off += n;
    if (sink->cur_off == sink->seg[sink->cur].len) {
        ++sink->cur;
        sink->cur_off = 0;
    }
}

/* A responder's sink whose QP left RTR/RTS (ERR, or RESET after it)
 * places nothing more: it fails, the rest of the payload is drained */
static int sn_sink_stopped(sn_inst_t *inst, sn_sink_t *sink)
{
    if (SN_RULE_ERR_STOPS && (sink->qpn != 0) &&
        !sn_qp_table_live(inst->mrs, sink->qpn)) {
        sink->failed = 1;
    }
    return sink->failed;
}

/* Copy n buffered bytes into the sink (or drop them). */
static void sn_sink_put(sn_inst_t *inst, sn_sink_t *sink, const uint8_t *data,
                        uint64_t n)
{
    uint64_t take;

    while ((n > 0) && !sn_sink_stopped(inst, sink) && (sink->cur < sink->num)) {
        take = sink->seg[sink->cur].len - sink->cur_off;
        if (take > n) {
            take = n;
        }
        if (sn_mr_busy_begin(inst, &sink->seg[sink->cur].snap) != 0) {
            sink->failed = 1;
            break;
        }
        memcpy((void *)(uintptr_t)(sink->seg[sink->cur].addr + sink->cur_off),
               data, take);
        sn_mr_busy_end(inst);
        sn_sink_advance(sink, take);
        data += take;
        n -= take;
    }
}

/* recv() at most max bytes straight into the sink (or the scratch buffer
 * when discarding). Returns recv()'s result. */
static ssize_t sn_sink_recv(sn_inst_t *inst, int fd, sn_sink_t *sink,
                            uint64_t max)
{
    uint64_t take;
    ssize_t ret;

    if (sn_sink_stopped(inst, sink) || (sink->cur >= sink->num)) {
        take = (max < SN_CHUNK) ? max : SN_CHUNK;
        return recv(fd, inst->scratch, take, MSG_DONTWAIT);
    }
    take = sink->seg[sink->cur].len - sink->cur_off;
    if (take > max) {
        take = max;
    }
    if ((sink->qpn != 0) && (take > SN_CHUNK)) {
        take = SN_CHUNK; /* the QP's state is looked at every chunk */
    }
    if (sn_mr_busy_begin(inst, &sink->seg[sink->cur].snap) != 0) {
        sink->failed = 1;
        take         = (max < SN_CHUNK) ? max : SN_CHUNK;
        return recv(fd, inst->scratch, take, MSG_DONTWAIT);
    }
    ret =
        recv(fd, (void *)(uintptr_t)(sink->seg[sink->cur].addr + sink->cur_off),
             take, MSG_DONTWAIT);
    sn_mr_busy_end(inst);
    if (ret > 0) {
        sn_sink_advance(sink, ret);
    }
    return ret;
}

/* ---- output (service-thread frames) ------------------------------------ */

/* Send a header and a payload (either may be empty) without blocking:
 * returns the bytes the socket took (0 when it is full) or -1 when the
 * connection is dead */
ssize_t sn_conn_send(int fd, const void *hdr, size_t hdr_len,
                     const void *payload, size_t payload_len)
{
    return sn_conn_sendf(fd, hdr, hdr_len, payload, payload_len, 0);
}

ssize_t sn_conn_sendf(int fd, const void *hdr, size_t hdr_len,
                      const void *payload, size_t payload_len, int flags)
{
    struct iovec iov[2];
    struct msghdr msg;
    ssize_t ret;
    int n = 0;

    if (hdr_len > 0) {
        iov[n].iov_base = (void *)hdr;
        iov[n].iov_len  = hdr_len;
        ++n;
    }
    if (payload_len > 0) {
        iov[n].iov_base = (void *)payload;
        iov[n].iov_len  = payload_len;
        ++n;
    }
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov    = iov;
    msg.msg_iovlen = n;
    do {
        ret = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT | flags);
    } while ((ret < 0) && (errno == EINTR));
    if (ret < 0) {
        return ((errno == EAGAIN) || (errno == EWOULDBLOCK)) ? 0 : -1;
    }
    return ret;
}

void sn_sock_push(int fd)
{
    int one = 1;

    /* Linux sends what MSG_MORE held back when TCP_NODELAY is set (again) */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void sn_conn_push(sn_conn_t *conn)
{
    sn_sock_push(conn->fd);
}

/* Send data (header + optional payload) on a target connection; what the
 * socket does not take is copied to obuf. Returns 0 or -1 (dead). */
int sn_conn_out(sn_inst_t *inst, sn_conn_t *conn, const void *hdr,
                size_t hdr_len, const void *payload, size_t payload_len)
{
    return sn_conn_outf(inst, conn, hdr, hdr_len, payload, payload_len, 0);
}

int sn_conn_outf(sn_inst_t *inst, sn_conn_t *conn, const void *hdr,
                 size_t hdr_len, const void *payload, size_t payload_len,
                 int flags)
{
    size_t total = hdr_len + payload_len, need;
    ssize_t ret  = 0;
    uint8_t *tmp;

    if (conn->olen == conn->opos) {
        conn->opos = conn->olen = 0;
        ret =
            sn_conn_sendf(conn->fd, hdr, hdr_len, payload, payload_len, flags);
        if (ret < 0) {
            return -1;
        }
        if ((size_t)ret == total) {
            return 0;
        }
    }

    need = conn->olen + total - ret;
    if (need > conn->ocap) {
        tmp = realloc(conn->obuf, need);
        if (tmp == NULL) {
            return -1;
        }
        conn->obuf = tmp;
        conn->ocap = need;
    }
    if ((size_t)ret < hdr_len) {
        memcpy(conn->obuf + conn->olen, (const uint8_t *)hdr + ret,
               hdr_len - ret);
        conn->olen += hdr_len - ret;
        ret = 0;
    } else {
        ret -= hdr_len;
    }
    if (payload_len > (size_t)ret) {
        memcpy(conn->obuf + conn->olen, (const uint8_t *)payload + ret,
               payload_len - ret);
        conn->olen += payload_len - ret;
    }
    sn_conn_set_events(inst, conn, EPOLLOUT);
    return 0;
}

/* Returns 1 when obuf is empty, 0 when still pending, -1 when dead. */
int sn_conn_flush(sn_conn_t *conn)
{
    ssize_t ret;

    while (conn->opos < conn->olen) {
        ret = send(conn->fd, conn->obuf + conn->opos, conn->olen - conn->opos,
                   MSG_NOSIGNAL | MSG_DONTWAIT);
        if (ret < 0) {
            if (errno == EINTR) {
                continue;
            }
            return ((errno == EAGAIN) || (errno == EWOULDBLOCK)) ? 0 : -1;
        }
        conn->opos += ret;
    }
    conn->opos = conn->olen = 0;
    return 1;
}

/* ---- connections ------------------------------------------------------- */

static sn_conn_t *sn_conn_new(sn_inst_t *inst, int fd, int role,
                              uint32_t events)
{
    struct epoll_event ev;
    sn_conn_t *conn;
    int one = 1;

    conn = calloc(1, sizeof(*conn));
    if (conn == NULL) {
        return NULL;
    }
    conn->rbuf = malloc(SN_RBUF_SIZE);
    if (conn->rbuf == NULL) {
        free(conn);
        return NULL;
    }
    conn->id     = ++inst->next_conn_id;
    conn->fd     = fd;
    conn->role   = role;
    conn->events = events;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    memset(&ev, 0, sizeof(ev));
    ev.events   = events;
    ev.data.ptr = conn;
    if (epoll_ctl(inst->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        sn_log(inst, SOFTNIC_LOG_ERROR, "epoll_ctl(ADD) failed: %m");
        free(conn->rbuf);
        free(conn);
        return NULL;
    }
    conn->next  = inst->conns;
    inst->conns = conn;
    return conn;
}

void sn_conn_close(sn_inst_t *inst, sn_conn_t *conn)
{
    sn_conn_t **pp;

    if (inst->hot_conn == conn) {
        inst->hot_conn = NULL;
    }
    for (pp = &inst->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == conn) {
            *pp = conn->next;
            break;
        }
    }
    if ((conn->role == SN_ROLE_TGT) && (conn->qp != NULL) &&
        (conn->have_recv || (conn->ring_att != NULL))) {
        sn_ring_att_t **pp;

        /* the CQ polls' peek goes before the ring is unmapped below */
        sn_cq_walks_lock(conn->qp);
        pthread_mutex_lock(&conn->qp->lock);
        if (conn->have_recv) {
            sn_resp_unpop_recv(conn->qp, &conn->recv);
        }
        for (pp = &conn->qp->rings; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == conn->ring_att) {
                *pp = conn->ring_att->next;
                break;
            }
        }
        pthread_mutex_unlock(&conn->qp->lock);
        sn_cq_walks_unlock(conn->qp);
    }
    if (conn->ack_owed) {
        /* what was executed is acknowledged: QP destroyed, the instance
         * closing (a dead connection just takes them along) */
        (void)sn_resp_ack_flush(inst, conn);
    }
    if (conn->tcp_data) {
        __atomic_fetch_sub(&inst->num_tcp_conns, 1, __ATOMIC_RELAXED);
    }
    if (conn->held) {
        --inst->num_held;
    }
    if (conn->ring != NULL) {
        sn_ring_destroy(inst, conn->ring, conn->ring_id);
        __atomic_fetch_sub(&inst->num_rings, 1, __ATOMIC_RELAXED);
    }
    free(conn->ring_att);
    epoll_ctl(inst->epoll_fd, EPOLL_CTL_DEL, conn->fd, NULL);
    close(conn->fd);
    free(conn->rbuf);
    free(conn->obuf);
    free(conn);
}

/* An initiator connection died, was refused or misbehaved: the QP's peer
 * is silent from now on (sn_qp_peer_lost). */
static void sn_conn_ini_fail(sn_inst_t *inst, sn_conn_t *conn)
{
    sn_qp_t *qp = conn->qp;

    pthread_mutex_lock(&qp->lock);
    if (qp->conn_id == conn->id) {
        sn_log(inst, SOFTNIC_LOG_INFO, "qp 0x%x: connection to qp 0x%x lost",
               qp->super.qp_num, qp->attr.dest_qp_num);
        __atomic_store_n(&qp->conn_id, 0, __ATOMIC_RELAXED); /* closed here */
        sn_qp_peer_lost(qp, 1);
    }
    pthread_mutex_unlock(&qp->lock);
    sn_conn_close(inst, conn);
}

static void sn_conn_fail(sn_inst_t *inst, sn_conn_t *conn)
{
    if (conn->role == SN_ROLE_INI) {
        sn_conn_ini_fail(inst, conn);
    } else {
        sn_conn_close(inst, conn);
    }
}

/* ---- handshake ---------------------------------------------------------- */

/* The connection carries data on TCP: pollers may serve it */
static void sn_conn_count_tcp(sn_inst_t *inst, sn_conn_t *conn)
{
    conn->tcp_data = 1;
    __atomic_fetch_add(&inst->num_tcp_conns, 1, __ATOMIC_RELAXED);
}

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

/* TGT: a HELLO for a QP that does not exist is refused (ENOENT); the
 * connection closes once the answer is out */
static void sn_conn_refuse(sn_inst_t *inst, sn_conn_t *conn, uint32_t qpn)
{
    sn_hello_t ack;

    sn_log(inst, SOFTNIC_LOG_INFO, "hello for unknown qp 0x%x", qpn);
    sn_hello_fill(inst, &ack, SN_HELLO_ACK, ENOENT, 0);
    sn_conn_out(inst, conn, &ack, sizeof(ack), NULL, 0);
    conn->state = SN_CS_CLOSING;
    sn_conn_set_events(inst, conn, EPOLLOUT);
}

/* TGT, same host: offer the initiator a shared-memory ring for its SENDs
 * (the ACK names it); without one, its SENDs stay on TCP */
static void sn_conn_offer_ring(sn_inst_t *inst, sn_conn_t *conn,
                               sn_hello_t *ack)
{
    sn_qp_t *qp = conn->qp;

    conn->ring_att = calloc(1, sizeof(*conn->ring_att));
    if (conn->ring_att != NULL) {
        conn->ring = sn_ring_create(inst, &conn->ring_id);
    }
    if (conn->ring == NULL) {
        free(conn->ring_att);
        conn->ring_att = NULL;
        return;
    }
    conn->ring_att->ring    = conn->ring;
    conn->ring_att->src_qpn = conn->peer_qpn;
    sn_cq_walks_lock(qp);
    pthread_mutex_lock(&qp->lock);
    sn_ring_set_rnr_timer(conn->ring, qp->attr.min_rnr_timer);
    conn->ring_att->next = qp->rings;
    qp->rings            = conn->ring_att;
    pthread_mutex_unlock(&qp->lock);
    sn_cq_walks_unlock(qp);
    __atomic_fetch_add(&inst->num_rings, 1, __ATOMIC_RELAXED);
    ack->ring_id    = htole32(conn->ring_id);
    ack->ring_slots = htole32(SN_RING_SLOTS);
}

/* TGT: a HELLO arrived. Returns -1 to close. */
static int sn_conn_on_hello(sn_inst_t *inst, sn_conn_t *conn,
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
    pthread_mutex_lock(&inst->lock);
    qp = sn_qp_find(inst, le32toh(h->qpn_or_pdn));
    if ((qp != NULL) && (qp->super.qp_type != IBV_QPT_RC)) {
        qp = NULL; /* a UD QP takes no connection */
    }
    if (qp != NULL) {
        pdn = qp->pdn;
    }
    pthread_mutex_unlock(&inst->lock);
    if (qp == NULL) {
        sn_conn_refuse(inst, conn, le32toh(h->qpn_or_pdn));
        return 0;
    }

    conn->qp       = qp;
    conn->peer_qpn = le32toh(h->qpn_or_status) & 0xffffff;
    conn->state    = SN_CS_READY;
    pthread_mutex_lock(&qp->lock);
    if (qp->attr.dest_qp_num == conn->peer_qpn) {
        /* the peer starts its sequence over */
        __atomic_store_n(&qp->rx_ack, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&qp->ack_carried, 0, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&qp->lock);
    sn_log(inst, SOFTNIC_LOG_DEBUG, "qp 0x%x: connection from qp 0x%x",
           qp->super.qp_num, conn->peer_qpn);
    sn_hello_fill(inst, &ack, SN_HELLO_ACK, 0, pdn);
    if (inst->config.no_cma || !same_host) {
        sn_conn_count_tcp(inst, conn);
    } else if (!inst->config.no_ring) {
        sn_conn_offer_ring(inst, conn, &ack);
    }
    return sn_conn_out(inst, conn, &ack, sizeof(ack), NULL, 0);
}

/* INI: the same-host paths the target offers, mapped: its MR table (CMA)
 * and its SEND ring (NULL when not used). Returns whether CMA is used. */
static int sn_conn_map_peer(sn_inst_t *inst, const sn_hello_t *h,
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

/* INI, QP lock held: the connection is up, the QP may transmit */
static void sn_conn_ini_ready(sn_inst_t *inst, sn_conn_t *conn,
                              const sn_hello_t *h, sn_mr_entry_t *table,
                              struct sn_ring *ring, int same_host)
{
    sn_qp_t *qp = conn->qp;

    if (ring != NULL) {
        qp->ring            = ring;
        qp->ring_prod       = 0;
        qp->ring_reaped     = 0;
        qp->ring_out        = 0;
        qp->ring_atomic_out = 0;
        __atomic_fetch_add(&inst->num_rings, 1, __ATOMIC_RELAXED);
    }
    conn->state    = SN_CS_READY;
    qp->conn_state = SN_CONN_READY;
    if (!same_host) {
        sn_conn_count_tcp(inst, conn);
    }
    qp->conn_fd          = conn->fd;
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

/* INI: the HELLO_ACK arrived. Returns 1 when the QP's connection is up,
 * -1 to fail it, 0 when the connection was stale (closed here). */
static int sn_conn_on_hello_ack(sn_inst_t *inst, sn_conn_t *conn,
                                const sn_hello_t *h)
{
    sn_qp_t *qp = conn->qp;
    sn_mr_entry_t *table;
    struct sn_ring *ring;
    int same_host;

    if (!sn_hello_valid(h, SN_HELLO_ACK) || (le32toh(h->qpn_or_status) != 0)) {
        sn_log(inst, SOFTNIC_LOG_INFO,
               "qp 0x%x: connection refused by the peer (%u)", qp->super.qp_num,
               le32toh(h->qpn_or_status));
        return -1;
    }
    same_host = sn_conn_map_peer(inst, h, &table, &ring);

    pthread_mutex_lock(&qp->lock);
    if (qp->conn_id != conn->id) {
        pthread_mutex_unlock(&qp->lock);
        sn_mr_table_unmap(table);
        if (ring != NULL) {
            sn_ring_unmap(ring);
        }
        sn_conn_close(inst, conn);
        return 0;
    }
    sn_conn_ini_ready(inst, conn, h, table, ring, same_host);
    pthread_mutex_unlock(&qp->lock);
    return 1;
}

/* ---- receive path ------------------------------------------------------ */

/* Make at least `need` bytes available in rbuf. Returns 1 when there,
 * 0 when the socket is empty, -1 on EOF/error. */
static int sn_conn_fill(sn_conn_t *conn, uint32_t need)
{
    uint32_t want;
    ssize_t ret;

    if (conn->rlen - conn->rpos >= need) {
        return 1;
    }
    if (conn->drained) {
        return 0;
    }
    if (conn->rpos > 0) {
        memmove(conn->rbuf, conn->rbuf + conn->rpos, conn->rlen - conn->rpos);
        conn->rlen -= conn->rpos;
        conn->rpos = 0;
    }
    /* after a large payload, just the header (see hdr_alone) */
    want = conn->hdr_alone ? need - conn->rlen : SN_RBUF_SIZE - conn->rlen;
    do {
        ret = recv(conn->fd, conn->rbuf + conn->rlen, want, MSG_DONTWAIT);
    } while ((ret < 0) && (errno == EINTR));
    if (ret == 0) {
        return -1;
    }
    if (ret < 0) {
        return ((errno == EAGAIN) || (errno == EWOULDBLOCK)) ? 0 : -1;
    }
    conn->drained = ((size_t)ret < want);
    conn->rlen += ret;
    if (conn->rlen - conn->rpos >= need) {
        conn->hdr_alone = 0;
        return 1;
    }
    return 0;
}

/* take payload bytes buffered in rbuf */
static void sn_conn_put_buffered(sn_inst_t *inst, sn_conn_t *conn,
                                 uint32_t take)
{
    sn_sink_put(inst, &conn->sink, conn->rbuf + conn->rpos, take);
    conn->rpos += take;
    conn->pay_left -= take;
}

int sn_conn_take_payload(sn_inst_t *inst, sn_conn_t *conn, uint32_t max)
{
    if ((conn->pay_left > max) || (conn->rlen - conn->rpos < conn->pay_left)) {
        return 0;
    }
    sn_conn_put_buffered(inst, conn, conn->pay_left);
    return 1;
}

/* Consume payload bytes; returns 1 when complete, 0 when waiting, -1 dead */
static int sn_conn_payload(sn_inst_t *inst, sn_conn_t *conn)
{
    uint32_t avail;
    ssize_t ret;

    while (conn->pay_left > 0) {
        avail = conn->rlen - conn->rpos;
        if (avail > 0) {
            sn_conn_put_buffered(inst, conn,
                                 (avail < conn->pay_left) ? avail
                                                          : conn->pay_left);
            continue;
        }
        conn->rpos = conn->rlen = 0;
        if (conn->pay_left >= SN_DIRECT_MIN) {
            ret = sn_sink_recv(inst, conn->fd, &conn->sink, conn->pay_left);
            if (ret > 0) {
                conn->pay_left -= ret;
                conn->hdr_alone = 1;
                continue;
            }
        } else {
            if (conn->drained) {
                return 0;
            }
            ret = recv(conn->fd, conn->rbuf, SN_RBUF_SIZE, MSG_DONTWAIT);
            if (ret > 0) {
                conn->rlen    = ret;
                conn->drained = (ret < SN_RBUF_SIZE);
                continue;
            }
        }
        if (ret == 0) {
            return -1;
        }
        if (errno == EINTR) {
            continue;
        }
        return ((errno == EAGAIN) || (errno == EWOULDBLOCK)) ? 0 : -1;
    }
    return 1;
}

/* The HELLO (TGT) or HELLO_ACK (INI) in rbuf: 1 go on, 0 the connection
 * was stale (closed and freed), -1 fail it */
static int sn_conn_rx_hello(sn_inst_t *inst, sn_conn_t *conn)
{
    sn_hello_t hello;

    memcpy(&hello, conn->rbuf + conn->rpos, sizeof(hello));
    conn->rpos += sizeof(hello);
    if (conn->role == SN_ROLE_TGT) {
        return (sn_conn_on_hello(inst, conn, &hello) < 0) ? -1 : 1;
    }
    return sn_conn_on_hello_ack(inst, conn, &hello);
}

/* TGT: the responder holds the request whose header is in rbuf (sn_resp.c,
 * check_acked): the connection is off the epoll set (its socket may hold
 * more, or have hung up) until sn_conn_resume reads it again */
static void sn_conn_hold(sn_inst_t *inst, sn_conn_t *conn)
{
    conn->held = 1;
    ++inst->num_held;
    epoll_ctl(inst->epoll_fd, EPOLL_CTL_DEL, conn->fd, NULL);
    conn->events = 0;
}

static void sn_conn_unhold(sn_inst_t *inst, sn_conn_t *conn)
{
    struct epoll_event ev;

    conn->held = 0;
    --inst->num_held;
    memset(&ev, 0, sizeof(ev));
    ev.events   = EPOLLIN;
    ev.data.ptr = conn;
    if (epoll_ctl(inst->epoll_fd, EPOLL_CTL_ADD, conn->fd, &ev) == 0) {
        conn->events = EPOLLIN;
    }
}

/* One frame, its header and then its payload, for the responder (TGT) or
 * the requester (INI): 1 done, 0 waiting for bytes (or held), -1 fail */
static int sn_conn_rx_frame(sn_inst_t *inst, sn_conn_t *conn)
{
    uint32_t hdr_len =
        (conn->role == SN_ROLE_TGT) ? sizeof(sn_req_t) : sizeof(sn_rsp_t);
    int ret;

    if (conn->rx_state == SN_RX_HDR) {
        ret = sn_conn_fill(conn, hdr_len);
        if (ret <= 0) {
            return ret;
        }
        memcpy(&conn->hdr, conn->rbuf + conn->rpos, hdr_len);
        conn->rpos += hdr_len;
        ret = (conn->role == SN_ROLE_TGT) ? sn_resp_on_header(inst, conn)
                                          : sn_req_on_rsp(inst, conn);
        if (ret < 0) {
            return -1;
        }
        if (ret == 1) {
            conn->rpos -= hdr_len; /* still there: nothing was read since */
            sn_conn_hold(inst, conn);
            return 0;
        }
        if (ret == 2) {
            return 1; /* its payload came with it */
        }
        if ((conn->role == SN_ROLE_INI) &&
            (conn->hdr.rsp.type == SN_RSP_READ_DATA)) {
            sn_svc_hot(inst, conn); /* its READ's frames come next */
        }
        conn->rx_state = SN_RX_PAYLOAD;
    }

    ret = sn_conn_payload(inst, conn);
    if (ret <= 0) {
        return ret;
    }
    conn->rx_state = SN_RX_HDR;
    if (conn->role == SN_ROLE_TGT) {
        ret = sn_req_has_payload(conn->hdr.req.op)
                  ? sn_resp_on_payload(inst, conn)
                  : 0;
    } else {
        ret = ((conn->hdr.rsp.type == SN_RSP_READ_DATA) &&
               (conn->hdr.rsp.length > 0))
                  ? sn_req_on_payload(conn)
                  : 0;
    }
    return (ret < 0) ? -1 : 1;
}

/* One pass over the input of a connection */
static int sn_conn_rx_pass(sn_inst_t *inst, sn_conn_t *conn)
{
    int frames, ret;

    conn->drained = 0;
    for (frames = 0;; ++frames) {
        /* yield to other connections only when nothing is buffered here:
         * bytes already in rbuf would never be announced by epoll again */
        if ((frames >= SN_FRAMES_PER_EV) && (conn->rpos == conn->rlen)) {
            return 0;
        }
        if ((conn->state == SN_CS_CLOSING) || conn->held) {
            return 0;
        }
        /* back-pressure: answer before reading more requests */
        if ((conn->role == SN_ROLE_TGT) &&
            ((conn->olen > conn->opos) || conn->rd_active)) {
            return 0;
        }
        if (conn->state == SN_CS_HELLO) {
            ret = sn_conn_fill(conn, sizeof(sn_hello_t));
            if (ret > 0) {
                ret = sn_conn_rx_hello(inst, conn);
                if (ret == 0) {
                    return 1; /* stale: conn was closed and freed */
                }
            }
        } else {
            ret = sn_conn_rx_frame(inst, conn);
        }
        if (ret <= 0) {
            return ret;
        }
    }
    return 0;
}

/* Process input on a connection; the receives its requests completed wait
 * for one ACK, written when the pass ends (sn_resp_batch_end). Returns -1
 * when it must be failed, 1 when it is gone. */
static int sn_conn_rx(sn_inst_t *inst, sn_conn_t *conn)
{
    int ret = sn_conn_rx_pass(inst, conn);

    if ((sn_resp_batch_end(inst) != 0) && (ret == 0)) {
        ret = -1;
    }
    return ret;
}

/* ---- events ------------------------------------------------------------- */

void sn_conn_accept(sn_inst_t *inst)
{
    sn_conn_t *conn;
    int fd, i;

    for (i = 0; i < 16; ++i) {
        fd = accept4(inst->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if ((errno != EAGAIN) && (errno != EWOULDBLOCK) &&
                (errno != EINTR)) {
                sn_log(inst, SOFTNIC_LOG_ERROR, "accept failed: %m");
            }
            return;
        }
        conn = sn_conn_new(inst, fd, SN_ROLE_TGT, EPOLLIN);
        if (conn == NULL) {
            close(fd);
            continue;
        }
        conn->state = SN_CS_HELLO;
    }
}

/* A non-blocking socket connecting to remote from this device's address
 * (not for loopback peers); returns the fd or -1. */
static int sn_conn_socket(sn_inst_t *inst, const struct sockaddr_in *remote)
{
    struct sockaddr_in local;
    int fd, ret;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sn_log(inst, SOFTNIC_LOG_ERROR, "socket() failed: %m");
        return -1;
    }
    memset(&local, 0, sizeof(local));
    local.sin_family = AF_INET;
    local.sin_addr   = inst->ip;
    if (((remote->sin_addr.s_addr & htonl(0xff000000)) != htonl(0x7f000000)) &&
        (bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0)) {
        sn_log(inst, SOFTNIC_LOG_ERROR, "bind() failed: %m");
        close(fd);
        return -1;
    }
    ret = connect(fd, (const struct sockaddr *)remote, sizeof(*remote));
    if ((ret < 0) && (errno != EINPROGRESS)) {
        sn_log(inst, SOFTNIC_LOG_INFO, "connect() failed: %m");
        close(fd);
        return -1;
    }
    return fd;
}

/* A connect() still pending after this long is retried on a new socket:
 * a SYN lost while a link came up would otherwise wait for TCP's 1 s SYN
 * retransmission, longer than a short QP timeout. */
#define SN_CONNECT_RETRY_NS (200ull * 1000 * 1000)

static void sn_conn_reconnect(sn_inst_t *inst, sn_conn_t *conn, uint64_t now)
{
    struct epoll_event ev;
    int fd;

    fd = sn_conn_socket(inst, &conn->remote);
    if (fd < 0) {
        return; /* keep waiting on the current attempt */
    }
    memset(&ev, 0, sizeof(ev));
    ev.events   = EPOLLOUT;
    ev.data.ptr = conn;
    if (epoll_ctl(inst->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        return;
    }
    epoll_ctl(inst->epoll_fd, EPOLL_CTL_DEL, conn->fd, NULL);
    close(conn->fd);
    conn->fd         = fd;
    conn->events     = EPOLLOUT;
    conn->connect_ns = now;
}

void sn_conn_timers(sn_inst_t *inst, uint64_t now)
{
    sn_conn_t *conn;

    for (conn = inst->conns; conn != NULL; conn = conn->next) {
        if ((conn->role == SN_ROLE_INI) && (conn->state == SN_CS_CONNECTING) &&
            (now - conn->connect_ns >= SN_CONNECT_RETRY_NS)) {
            sn_conn_reconnect(inst, conn, now);
        }
    }
}

/* QP lock held: a connection to the QP's peer, its HELLO waiting in obuf
 * until connect() completes; NULL on failure */
static sn_conn_t *sn_conn_open_ini(sn_inst_t *inst, sn_qp_t *qp)
{
    struct sockaddr_in remote;
    sn_conn_t *conn;
    int fd;

    memset(&remote, 0, sizeof(remote));
    remote.sin_family = AF_INET;
    remote.sin_port =
        htons((inst->config.qpn_port_base == 0)
                  ? qp->attr.ah_attr.dlid
                  : inst->config.qpn_port_base +
                        (qp->attr.dest_qp_num >> SOFTNIC_QPN_PORT_SHIFT));
    memcpy(&remote.sin_addr, &qp->attr.ah_attr.grh.dgid.raw[12], 4);
    fd = sn_conn_socket(inst, &remote);
    if (fd < 0) {
        return NULL;
    }
    conn = sn_conn_new(inst, fd, SN_ROLE_INI, EPOLLOUT);
    if (conn == NULL) {
        close(fd);
        return NULL;
    }
    conn->obuf = malloc(sizeof(sn_hello_t));
    if (conn->obuf == NULL) {
        sn_conn_close(inst, conn);
        return NULL;
    }
    sn_hello_fill(inst, (sn_hello_t *)conn->obuf, SN_HELLO, qp->super.qp_num,
                  qp->attr.dest_qp_num);
    conn->ocap = conn->olen = sizeof(sn_hello_t);
    conn->qp                = qp;
    conn->state             = SN_CS_CONNECTING;
    conn->remote            = remote;
    conn->connect_ns        = sn_now_ns();
    return conn;
}

void sn_conn_connect_qp(sn_inst_t *inst, sn_qp_t *qp)
{
    sn_conn_t *conn;

    pthread_mutex_lock(&qp->lock);
    if ((qp->conn_state == SN_CONN_CONNECTING) && (qp->conn_id == 0)) {
        conn = sn_conn_open_ini(inst, qp);
        if (conn != NULL) {
            __atomic_store_n(&qp->conn_id, conn->id, __ATOMIC_RELAXED);
            qp->conn = conn;
        } else {
            qp->conn_state = SN_CONN_FAILED;
            sn_qp_tx(qp); /* fails queued WRs, if any */
        }
    }
    pthread_mutex_unlock(&qp->lock);
}

/* INI: connect() completed. Returns 0 (the HELLO goes next), or -1 when it
 * failed (then the QP's oldest WR fails and conn is closed). */
static int sn_conn_connected(sn_inst_t *inst, sn_conn_t *conn)
{
    socklen_t len = sizeof(int);
    int err       = 0;

    if ((getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) ||
        (err != 0)) {
        errno = err;
        sn_log(inst, SOFTNIC_LOG_INFO, "qp 0x%x: connect failed: %m",
               conn->qp->super.qp_num);
        sn_conn_ini_fail(inst, conn);
        return -1;
    }
    conn->state = SN_CS_HELLO;
    return 0;
}

/* INI, ready: the QP's requests go on; EPOLLOUT off once they all went */
static void sn_conn_ini_writable(sn_inst_t *inst, sn_conn_t *conn)
{
    sn_qp_t *qp = conn->qp;

    pthread_mutex_lock(&qp->lock);
    if (qp->conn_id != conn->id) {
        pthread_mutex_unlock(&qp->lock);
        sn_conn_close(inst, conn);
        return;
    }
    qp->tx_blocked = 0;
    sn_qp_tx(qp);
    if (!qp->tx_blocked && (qp->conn_id == conn->id)) {
        conn->events = EPOLLIN | EPOLLOUT; /* force the MOD */
        sn_conn_set_events(inst, conn, EPOLLIN);
    }
    pthread_mutex_unlock(&qp->lock);
}

static void sn_conn_writable(sn_inst_t *inst, sn_conn_t *conn)
{
    int ret;

    if ((conn->state == SN_CS_CONNECTING) &&
        (sn_conn_connected(inst, conn) != 0)) {
        return;
    }
    if (conn->olen > conn->opos) {
        ret = sn_conn_flush(conn);
        if (ret < 0) {
            sn_conn_fail(inst, conn);
            return;
        }
        if (ret == 0) {
            return;
        }
    }
    if (conn->state == SN_CS_CLOSING) {
        sn_conn_close(inst, conn);
        return;
    }
    if ((conn->role == SN_ROLE_INI) && (conn->state == SN_CS_READY)) {
        sn_conn_ini_writable(inst, conn);
        return;
    }
    if (conn->role == SN_ROLE_TGT) {
        if (sn_resp_read_pump(inst, conn) < 0) {
            sn_conn_close(inst, conn);
            return;
        }
        if ((conn->olen > conn->opos) || conn->rd_active) {
            return;
        }
    }
    sn_conn_set_events(inst, conn, EPOLLIN);
    /* requests may be waiting in rbuf already */
    if (sn_conn_rx(inst, conn) < 0) {
        sn_conn_fail(inst, conn);
    }
}

void sn_conn_resume(sn_inst_t *inst)
{
    sn_conn_t *conn, *next;

    if (inst->num_held == 0) {
        return;
    }
    /* reading a connection closes at most that one */
    for (conn = inst->conns; conn != NULL; conn = next) {
        next = conn->next;
        if (conn->held) {
            sn_conn_unhold(inst, conn);
            if (sn_conn_rx(inst, conn) < 0) {
                sn_conn_fail(inst, conn);
            }
        }
    }
}

void sn_conn_acks(sn_inst_t *inst, int force)
{
    sn_conn_t *conn, *next;
    uint64_t now;

    if (inst->num_ack_owed == 0) {
        return;
    }
    now = sn_now_ns();
    /* a failed send closes at most that connection */
    for (conn = inst->conns; conn != NULL; conn = next) {
        next = conn->next;
        if (((SN_RULE_ACK_BOUND && force) || sn_resp_ack_due(conn, now)) &&
            (sn_resp_ack_flush(inst, conn) != 0)) {
            sn_conn_close(inst, conn);
        }
    }
}

void sn_conn_event(sn_inst_t *inst, sn_conn_t *conn, uint32_t events)
{
    sn_qp_t *qp;
    int stale;

    if (conn->role == SN_ROLE_INI) {
        /* without the QP lock (sn_qp_t.conn_id): a poster holds it while
         * it writes a frame, and this runs for every answer that comes */
        qp    = conn->qp;
        stale = (__atomic_load_n(&qp->conn_id, __ATOMIC_RELAXED) != conn->id);
        if (stale) {
            sn_conn_close(inst, conn);
            return;
        }
    }

    if (events & EPOLLOUT) {
        sn_conn_writable(inst, conn);
        return; /* the connection may be gone; EPOLLIN comes again */
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (sn_conn_rx(inst, conn) < 0) {
            sn_conn_fail(inst, conn);
        }
    }
}
