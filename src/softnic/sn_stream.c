/*
 * softnic's streams (sn_wire.h): the stream objects and their sockets,
 * accepting and connecting (with retries of a slow connect), the output
 * buffer, receiving frames and their payloads into checked memory
 * (sinks), the HELLO (the instances' identities), and a stream's events:
 * each frame, by its type byte, to the responder (sn_resp.c), the
 * requester (sn_req.c) or the channel (sn_chan.c).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_wire.h"

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* ---- epoll helpers ----------------------------------------------------- */

/* epoll_ctl(op) of the stream's socket in the instance's set, and in the
 * standby set too while the stream is a quiet one (sn_wire.h); returns
 * the first's result */
static int sn_stream_ctl(sn_inst_t *inst, sn_stream_t *stream, int op,
                         uint32_t events)
{
    struct epoll_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.events   = events;
    ev.data.ptr = stream;
    if (stream->quiet) {
        (void)epoll_ctl(inst->idle_epfd, op, stream->fd, &ev);
    }
    return epoll_ctl(inst->epoll_fd, op, stream->fd, &ev);
}

void sn_stream_set_events(sn_inst_t *inst, sn_stream_t *stream, uint32_t events)
{
    if (stream->events == events) {
        return;
    }
    if (sn_stream_ctl(inst, stream, EPOLL_CTL_MOD, events) == 0) {
        stream->events = events;
    }
}

void sn_stream_set_quiet(sn_inst_t *inst, sn_stream_t *stream, int quiet)
{
    struct epoll_event ev;

    if (stream->quiet == quiet) {
        return;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events     = stream->events;
    ev.data.ptr   = stream;
    stream->quiet = quiet;
    if (!quiet) {
        (void)epoll_ctl(inst->idle_epfd, EPOLL_CTL_DEL, stream->fd, NULL);
    } else if (!stream->held && (epoll_ctl(inst->idle_epfd, EPOLL_CTL_ADD,
                                           stream->fd, &ev) < 0)) {
        stream->quiet = 0; /* pollers and the looks serve it, as others */
    }
}

void sn_svc_want_tx(sn_qp_t *qp)
{
    sn_inst_t *inst = sn_qp_inst(qp);
    struct epoll_event ev;

    if (qp->tx_blocked || (qp->stream == NULL)) {
        return;
    }
    qp->tx_blocked = 1;
    memset(&ev, 0, sizeof(ev));
    ev.events   = EPOLLIN | EPOLLOUT;
    ev.data.ptr = qp->stream;
    /* stream->events is the service thread's; it re-reads the real interest
     * from tx_blocked under the QP lock */
    epoll_ctl(inst->epoll_fd, EPOLL_CTL_MOD, qp->stream_fd, &ev);
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
ssize_t sn_stream_send(int fd, const void *hdr, size_t hdr_len,
                       const void *payload, size_t payload_len)
{
    return sn_stream_sendf(fd, hdr, hdr_len, payload, payload_len, 0);
}

ssize_t sn_stream_sendf(int fd, const void *hdr, size_t hdr_len,
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
    sn_io_moved = 1;
    return ret;
}

void sn_sock_push(int fd)
{
    int one = 1;

    /* Linux sends what MSG_MORE held back when TCP_NODELAY is set (again) */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void sn_stream_push(sn_stream_t *stream)
{
    sn_sock_push(stream->fd);
}

/* Send data (header + optional payload) on a target connection; what the
 * socket does not take is copied to obuf. Returns 0 or -1 (dead). */
int sn_stream_out(sn_inst_t *inst, sn_stream_t *stream, const void *hdr,
                  size_t hdr_len, const void *payload, size_t payload_len)
{
    return sn_stream_outf(inst, stream, hdr, hdr_len, payload, payload_len, 0);
}

int sn_stream_outf(sn_inst_t *inst, sn_stream_t *stream, const void *hdr,
                   size_t hdr_len, const void *payload, size_t payload_len,
                   int flags)
{
    size_t total = hdr_len + payload_len, need;
    ssize_t ret  = 0;
    uint8_t *tmp;

    if (stream->olen == stream->opos) {
        stream->opos = stream->olen = 0;
        ret = sn_stream_sendf(stream->fd, hdr, hdr_len, payload, payload_len,
                              flags);
        if (ret < 0) {
            return -1;
        }
        if ((size_t)ret == total) {
            return 0;
        }
    }

    need = stream->olen + total - ret;
    if (need > stream->ocap) {
        tmp = realloc(stream->obuf, need);
        if (tmp == NULL) {
            return -1;
        }
        stream->obuf = tmp;
        stream->ocap = need;
    }
    if ((size_t)ret < hdr_len) {
        memcpy(stream->obuf + stream->olen, (const uint8_t *)hdr + ret,
               hdr_len - ret);
        stream->olen += hdr_len - ret;
        ret = 0;
    } else {
        ret -= hdr_len;
    }
    if (payload_len > (size_t)ret) {
        memcpy(stream->obuf + stream->olen, (const uint8_t *)payload + ret,
               payload_len - ret);
        stream->olen += payload_len - ret;
    }
    sn_stream_set_events(inst, stream, EPOLLOUT);
    return 0;
}

/* Returns 1 when obuf is empty, 0 when still pending, -1 when dead. */
int sn_stream_flush(sn_stream_t *stream)
{
    ssize_t ret;

    while (stream->opos < stream->olen) {
        ret = send(stream->fd, stream->obuf + stream->opos,
                   stream->olen - stream->opos, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (ret < 0) {
            if (errno == EINTR) {
                continue;
            }
            return ((errno == EAGAIN) || (errno == EWOULDBLOCK)) ? 0 : -1;
        }
        stream->opos += ret;
    }
    stream->opos = stream->olen = 0;
    return 1;
}

/* ---- streams ----------------------------------------------------------- */

/* A stream that never went into the instance's list, freed */
static void sn_stream_free(sn_stream_t *stream)
{
    free(stream->chan);
    free(stream->rbuf);
    free(stream);
}

static sn_stream_t *sn_stream_alloc(int role)
{
    sn_stream_t *stream = calloc(1, sizeof(*stream));

    if (stream == NULL) {
        return NULL;
    }
    stream->rbuf = malloc(SN_RBUF_SIZE);
    stream->chan = sn_chan_new(stream, role);
    if ((stream->rbuf == NULL) || (stream->chan == NULL)) {
        sn_stream_free(stream);
        return NULL;
    }
    return stream;
}

static sn_stream_t *sn_stream_new(sn_inst_t *inst, int fd, int role,
                                  uint32_t events)
{
    struct epoll_event ev;
    sn_stream_t *stream;
    int one = 1;

    stream = sn_stream_alloc(role);
    if (stream == NULL) {
        return NULL;
    }
    stream->id     = ++inst->next_stream_id;
    stream->fd     = fd;
    stream->events = events;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    memset(&ev, 0, sizeof(ev));
    ev.events   = events;
    ev.data.ptr = stream;
    if (epoll_ctl(inst->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        sn_log(inst, SOFTNIC_LOG_ERROR, "epoll_ctl(ADD) failed: %m");
        sn_stream_free(stream);
        return NULL;
    }
    stream->next  = inst->streams;
    inst->streams = stream;
    return stream;
}

void sn_stream_close(sn_inst_t *inst, sn_stream_t *stream)
{
    sn_stream_t **pp;

    if (inst->hot_stream == stream) {
        inst->hot_stream = NULL;
    }
    for (pp = &inst->streams; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == stream) {
            *pp = stream->next;
            break;
        }
    }
    sn_chan_close(inst, stream->chan); /* (its owed ACKs still go out) */
    if (stream->tcp_data) {
        __atomic_fetch_sub(&inst->num_tcp_streams, 1, __ATOMIC_RELAXED);
    }
    if (stream->held) {
        --inst->num_held;
    }
    sn_stream_ctl(inst, stream, EPOLL_CTL_DEL, 0);
    close(stream->fd);
    free(stream->rbuf);
    free(stream->obuf);
    free(stream);
}

static void sn_stream_fail(sn_inst_t *inst, sn_stream_t *stream)
{
    if (stream->chan->role == SN_ROLE_INI) {
        sn_chan_ini_fail(inst, stream->chan);
    } else {
        sn_stream_close(inst, stream);
    }
}

void sn_stream_count_tcp(sn_inst_t *inst, sn_stream_t *stream)
{
    stream->tcp_data = 1;
    __atomic_fetch_add(&inst->num_tcp_streams, 1, __ATOMIC_RELAXED);
}

/* ---- receive path ------------------------------------------------------ */

/* sn_stream_fill when fewer than `need` bytes are in rbuf: read more */
static int sn_stream_fill_more(sn_stream_t *stream, uint32_t need)
{
    uint32_t want;
    ssize_t ret;

    if (stream->drained) {
        return 0;
    }
    if (stream->rpos > 0) {
        memmove(stream->rbuf, stream->rbuf + stream->rpos,
                stream->rlen - stream->rpos);
        stream->rlen -= stream->rpos;
        stream->rpos = 0;
    }
    /* after a large payload, just the header (see hdr_alone) */
    want = SN_RBUF_SIZE - stream->rlen;
    if (stream->hdr_alone != 0) {
        want = ((need > stream->hdr_alone) ? need : stream->hdr_alone) -
               stream->rlen;
    }
    do {
        ret = recv(stream->fd, stream->rbuf + stream->rlen, want, MSG_DONTWAIT);
    } while ((ret < 0) && (errno == EINTR));
    if (ret == 0) {
        return -1;
    }
    if (ret < 0) {
        return ((errno == EAGAIN) || (errno == EWOULDBLOCK)) ? 0 : -1;
    }
    stream->drained = ((size_t)ret < want);
    stream->rlen += ret;
    sn_io_moved = 1;
    if (stream->rlen - stream->rpos >= need) {
        stream->hdr_alone = 0;
        return 1;
    }
    return 0;
}

/* Make at least `need` bytes available in rbuf. Returns 1 when there,
 * 0 when the socket is empty, -1 on EOF/error. Bytes already buffered
 * cost no call (a frame's header behind the previous one). */
static inline int sn_stream_fill(sn_stream_t *stream, uint32_t need)
{
    if (stream->rlen - stream->rpos >= need) {
        return 1;
    }
    return sn_stream_fill_more(stream, need);
}

/* take payload bytes buffered in rbuf */
static void sn_stream_put_buffered(sn_inst_t *inst, sn_stream_t *stream,
                                   uint32_t take)
{
    sn_sink_put(inst, &stream->cur_chan->sink, stream->rbuf + stream->rpos,
                take);
    stream->rpos += take;
    stream->pay_left -= take;
}

int sn_stream_take_payload(sn_inst_t *inst, sn_stream_t *stream, uint32_t max)
{
    if ((stream->pay_left > max) ||
        (stream->rlen - stream->rpos < stream->pay_left)) {
        return 0;
    }
    sn_stream_put_buffered(inst, stream, stream->pay_left);
    return 1;
}

/* Consume payload bytes; returns 1 when complete, 0 when waiting, -1 dead */
static int sn_stream_payload(sn_inst_t *inst, sn_stream_t *stream)
{
    uint32_t avail;
    ssize_t ret;

    while (stream->pay_left > 0) {
        avail = stream->rlen - stream->rpos;
        if (avail > 0) {
            sn_stream_put_buffered(inst, stream,
                                   (avail < stream->pay_left)
                                       ? avail
                                       : stream->pay_left);
            continue;
        }
        stream->rpos = stream->rlen = 0;
        if (stream->pay_left >= SN_DIRECT_MIN) {
            ret = sn_sink_recv(inst, stream->fd, &stream->cur_chan->sink,
                               stream->pay_left);
            if (ret > 0) {
                stream->pay_left -= ret;
                stream->hdr_alone = stream->hdr_len;
                sn_io_moved       = 1;
                continue;
            }
        } else {
            if (stream->drained) {
                return 0;
            }
            ret = recv(stream->fd, stream->rbuf, SN_RBUF_SIZE, MSG_DONTWAIT);
            if (ret > 0) {
                stream->rlen    = ret;
                stream->drained = (ret < SN_RBUF_SIZE);
                sn_io_moved     = 1;
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

/* ---- HELLO: the instances' identities ---------------------------------- */

static void sn_stream_hello_fill(sn_inst_t *inst, sn_hello_t *h, uint16_t type,
                                 uint32_t status)
{
    memset(h, 0, sizeof(*h));
    h->magic       = htole32(SN_HELLO_MAGIC);
    h->version     = htole16(SN_WIRE_VERSION);
    h->type        = htole16(type);
    h->status      = htole32(status);
    h->host        = inst->host;
    h->pid         = htole32((uint32_t)inst->pid);
    h->inst_id     = htole32(inst->id);
    h->listen_ip   = inst->ip.s_addr;
    h->listen_port = htons(inst->listen_port);
}

/* TGT: answer the HELLO with status; the stream closes once the answer
 * is out unless status is 0 */
static int sn_stream_hello_ack(sn_inst_t *inst, sn_stream_t *stream,
                               uint32_t status)
{
    sn_hello_t ack;

    sn_stream_hello_fill(inst, &ack, SN_HELLO_ACK, status);
    if (status != 0) {
        stream->state = SN_CS_CLOSING;
        sn_stream_set_events(inst, stream, EPOLLOUT);
    }
    return sn_stream_out(inst, stream, &ack, sizeof(ack), NULL, 0);
}

/* A HELLO of another wire version: refused, with a WARN naming both */
static int sn_stream_hello_version(sn_inst_t *inst, sn_stream_t *stream,
                                   const sn_hello_t *h)
{
    sn_log(inst, SOFTNIC_LOG_WARN,
           "peer speaks softnic wire version %u, this one %u: %s",
           le16toh(h->version), SN_WIRE_VERSION,
           (stream->chan->role == SN_ROLE_TGT) ? "refused" : "it refused us");
    if ((stream->chan->role == SN_ROLE_TGT) &&
        (sn_stream_hello_ack(inst, stream, EPROTONOSUPPORT) == 0)) {
        return 1;
    }
    return -1;
}

/* The HELLO (TGT) or HELLO_ACK (INI) in rbuf: 1 go on (READY, or closing
 * after a refusal), -1 fail the stream */
static int sn_stream_rx_hello(sn_inst_t *inst, sn_stream_t *stream)
{
    uint16_t type =
        (stream->chan->role == SN_ROLE_TGT) ? SN_HELLO : SN_HELLO_ACK;
    sn_hello_t h;

    memcpy(&h, stream->rbuf + stream->rpos, sizeof(h));
    stream->rpos += sizeof(h);
    /* magic and version first: they are where every version has them */
    if ((le32toh(h.magic) == SN_HELLO_MAGIC) &&
        (le16toh(h.version) != SN_WIRE_VERSION)) {
        return sn_stream_hello_version(inst, stream, &h);
    }
    if ((le32toh(h.magic) != SN_HELLO_MAGIC) || (le16toh(h.type) != type) ||
        (h.flags != 0)) {
        sn_log(inst, SOFTNIC_LOG_WARN, "malformed hello");
        return -1;
    }
    if ((type == SN_HELLO_ACK) && (le32toh(h.status) != 0)) {
        sn_log(inst, SOFTNIC_LOG_INFO,
               "qp 0x%x: connection refused by the "
               "peer (%u)",
               stream->chan->qp->super.qp_num, le32toh(h.status));
        return -1;
    }
    stream->peer_host    = h.host;
    stream->peer_pid     = (pid_t)le32toh(h.pid);
    stream->peer_inst_id = le32toh(h.inst_id);
    stream->state        = SN_CS_READY;
    if ((type == SN_HELLO) && (sn_stream_hello_ack(inst, stream, 0) != 0)) {
        return -1;
    }
    return 1;
}

/* TGT: the responder holds the request whose header is in rbuf (sn_resp.c,
 * check_acked): the connection is off the epoll set (its socket may hold
 * more, or have hung up) until sn_stream_resume reads it again */
static void sn_stream_hold(sn_inst_t *inst, sn_stream_t *stream)
{
    stream->held = 1;
    ++inst->num_held;
    sn_stream_ctl(inst, stream, EPOLL_CTL_DEL, 0);
    stream->events = 0;
}

static void sn_stream_unhold(sn_inst_t *inst, sn_stream_t *stream)
{
    stream->held = 0;
    --inst->num_held;
    if (sn_stream_ctl(inst, stream, EPOLL_CTL_ADD, EPOLLIN) == 0) {
        stream->events = EPOLLIN;
    }
}

/* The channel a channel frame (CHAN_OPEN, CHAN_ACK, CHAN_CLOSE) in hdr
 * names, id, is the stream's channel: OPEN goes to the target's end and
 * names none (0), ACK to the initiator's end; both find it not open yet.
 * CLOSE goes to either end, open. 1 yes, 0 the frame is malformed. */
static int sn_stream_chanf_names(const sn_stream_t *stream, uint32_t id)
{
    const sn_chan_t *chan = stream->chan;

    switch (stream->hdr.chanf.type) {
    case SN_FRAME_CHAN_OPEN:
        return (chan->role == SN_ROLE_TGT) && !chan->ready && (id == 0);
    case SN_FRAME_CHAN_ACK:
        return (chan->role == SN_ROLE_INI) && !chan->ready && (id == chan->id);
    default: /* SN_FRAME_CHAN_CLOSE */
        return chan->ready && (id == chan->id);
    }
}

/* The header of kind (SN_ROLE_TGT: a request, SN_ROLE_INI: a response, 0:
 * a channel frame), len bytes with the receiver's channel id at id_off,
 * from rbuf into hdr, its channel into cur_chan (sn_wire.h, "Channel
 * ids"): 1 there, 0 waiting for bytes, -1 a malformed frame. One channel
 * per stream: a request or a response names it, open and of its role, by
 * its id; any other id names a channel the stream does not carry. */
static inline int sn_stream_rx_hdr(sn_inst_t *inst, sn_stream_t *stream,
                                   int kind, uint32_t len, uint32_t id_off)
{
    sn_chan_t *chan = stream->chan;
    uint32_t id;
    int ret;

    if (len > SN_FRAME_HDR_MIN) { /* (sn_stream_rx_header has that many) */
        ret = sn_stream_fill(stream, len);
        if (ret <= 0) {
            return ret;
        }
    }
    memcpy(&stream->hdr, stream->rbuf + stream->rpos, len);
    memcpy(&id, (const uint8_t *)&stream->hdr + id_off, sizeof(id));
    id = le32toh(id);
    if ((kind != 0) ? ((chan->role != kind) || !chan->ready || (id != chan->id))
                    : !sn_stream_chanf_names(stream, id)) {
        sn_log(inst, SOFTNIC_LOG_WARN,
               "frame of type 0x%x for channel 0x%x: not one this stream "
               "carries (0x%x, %s)",
               stream->hdr.req.op, id, chan->id,
               chan->ready ? "open" : "opening");
        return -1;
    }
    stream->hdr_kind = kind;
    stream->hdr_len  = len;
    stream->cur_chan = chan;
    stream->rpos += len;
    return 1;
}

/* The next frame's header: its type byte (byte 0) picks its length and
 * its handler (sn_stream_rx_hdr). 1 there, 0 waiting for bytes, -1 a
 * malformed frame. */
static int sn_stream_rx_header(sn_inst_t *inst, sn_stream_t *stream)
{
    int ret;

    ret = sn_stream_fill(stream, SN_FRAME_HDR_MIN);
    if (ret <= 0) {
        return ret;
    }
    switch (stream->rbuf[stream->rpos]) {
    case SN_OP_WRITE:
    case SN_OP_WRITE_IMM:
    case SN_OP_SEND:
    case SN_OP_SEND_IMM:
    case SN_OP_READ:
    case SN_OP_CSWAP:
    case SN_OP_FADD:
        return sn_stream_rx_hdr(inst, stream, SN_ROLE_TGT, sizeof(sn_req_t),
                                offsetof(sn_req_t, chan));
    case SN_FRAME_REQ_DATA:
        return sn_stream_rx_hdr(inst, stream, SN_ROLE_TGT,
                                sizeof(sn_req_data_t),
                                offsetof(sn_req_data_t, chan));
    case SN_RSP_ACK:
    case SN_RSP_NAK:
    case SN_RSP_READ_DATA:
    case SN_RSP_ATOMIC:
        return sn_stream_rx_hdr(inst, stream, SN_ROLE_INI, sizeof(sn_rsp_t),
                                offsetof(sn_rsp_t, chan));
    case SN_FRAME_CHAN_OPEN:
    case SN_FRAME_CHAN_ACK:
    case SN_FRAME_CHAN_CLOSE:
        return sn_stream_rx_hdr(inst, stream, 0, sizeof(sn_chanf_t),
                                offsetof(sn_chanf_t, chan));
    default: /* (a HELLO after the HELLO is one) */
        sn_log(inst, SOFTNIC_LOG_WARN, "frame of unknown type 0x%x",
               stream->rbuf[stream->rpos]);
        return -1;
    }
}

/* The handler of the frame in hdr, by the kind its type picked: the
 * responder's (a request, a REQ_DATA frame), the requester's or the
 * channel's (as sn_resp_on_header) */
static int sn_stream_on_header(sn_inst_t *inst, sn_stream_t *stream)
{
    if (stream->hdr_kind == SN_ROLE_TGT) {
        return (stream->hdr.req.op != SN_FRAME_REQ_DATA)
                   ? sn_resp_on_header(inst, stream->cur_chan)
                   : sn_resp_on_data(inst, stream->cur_chan);
    }
    if (stream->hdr_kind == SN_ROLE_INI) {
        return sn_req_on_rsp(inst, stream->cur_chan);
    }
    return sn_chan_on_frame(inst, stream->cur_chan);
}

/* The payload of the frame in hdr is in: its handler */
static int sn_stream_on_payload(sn_inst_t *inst, sn_stream_t *stream)
{
    uint8_t type = stream->hdr.req.op;

    if (sn_req_has_payload(type) || (type == SN_FRAME_REQ_DATA)) {
        return sn_resp_on_payload(inst, stream->cur_chan);
    }
    if ((type == SN_RSP_READ_DATA) && (stream->hdr.rsp.length > 0)) {
        return sn_req_on_payload(stream->cur_chan);
    }
    return 0;
}

/* One frame, its header and then its payload: 1 done, 0 waiting for bytes
 * (or held), -1 fail */
static int sn_stream_rx_frame(sn_inst_t *inst, sn_stream_t *stream)
{
    int ret;

    if (stream->rx_state == SN_RX_HDR) {
        ret = sn_stream_rx_header(inst, stream);
        if (ret <= 0) {
            return ret;
        }
        ret = sn_stream_on_header(inst, stream);
        if (ret < 0) {
            return -1;
        }
        if (ret == 1) {
            /* still there: nothing was read since */
            stream->rpos -= stream->hdr_len;
            sn_stream_hold(inst, stream);
            return 0;
        }
        if (ret == 2) {
            return 1; /* its payload came with it */
        }
        if (stream->hdr.rsp.type == SN_RSP_READ_DATA) {
            sn_svc_hot(inst, stream); /* its READ's frames come next */
        }
        stream->rx_state = SN_RX_PAYLOAD;
    }

    ret = sn_stream_payload(inst, stream);
    if (ret <= 0) {
        return ret;
    }
    stream->rx_state = SN_RX_HDR;
    return (sn_stream_on_payload(inst, stream) < 0) ? -1 : 1;
}

/* One pass over the input of a stream */
static int sn_stream_rx_pass(sn_inst_t *inst, sn_stream_t *stream)
{
    int frames, ret;

    stream->drained = 0;
    for (frames = 0;; ++frames) {
        /* yield to other connections only when nothing is buffered here:
         * bytes already in rbuf would never be announced by epoll again */
        if ((frames >= SN_FRAMES_PER_EV) && (stream->rpos == stream->rlen)) {
            return 0;
        }
        if ((stream->state == SN_CS_CLOSING) || stream->held) {
            return 0;
        }
        /* back-pressure: answer before reading more requests */
        if ((stream->chan->role == SN_ROLE_TGT) &&
            ((stream->olen > stream->opos) || stream->chan->rd_active)) {
            return 0;
        }
        if (stream->state == SN_CS_HELLO) {
            ret = sn_stream_fill(stream, sizeof(sn_hello_t));
            if (ret > 0) {
                ret = sn_stream_rx_hello(inst, stream);
                if (ret == 0) {
                    return 1; /* stale: stream was closed and freed */
                }
            }
        } else {
            ret = sn_stream_rx_frame(inst, stream);
        }
        if (ret <= 0) {
            return ret;
        }
    }
    return 0;
}

/* Process input on a stream; the receives its requests completed wait
 * for one ACK, written when the pass ends (sn_resp_batch_end). Returns -1
 * when it must be failed, 1 when it is gone. */
static int sn_stream_rx(sn_inst_t *inst, sn_stream_t *stream)
{
    int ret = sn_stream_rx_pass(inst, stream);

    if ((sn_resp_batch_end(inst) != 0) && (ret == 0)) {
        ret = -1;
    }
    return ret;
}

/* ---- events ------------------------------------------------------------- */

void sn_stream_accept(sn_inst_t *inst)
{
    sn_stream_t *stream;
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
        stream = sn_stream_new(inst, fd, SN_ROLE_TGT, EPOLLIN);
        if (stream == NULL) {
            close(fd);
            continue;
        }
        stream->state = SN_CS_HELLO;
    }
}

/* A non-blocking socket connecting to remote from this device's address
 * (not for loopback peers); returns the fd or -1. */
static int sn_stream_socket(sn_inst_t *inst, const struct sockaddr_in *remote)
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

static void sn_stream_reconnect(sn_inst_t *inst, sn_stream_t *stream,
                                uint64_t now)
{
    struct epoll_event ev;
    int fd;

    fd = sn_stream_socket(inst, &stream->remote);
    if (fd < 0) {
        return; /* keep waiting on the current attempt */
    }
    memset(&ev, 0, sizeof(ev));
    ev.events   = EPOLLOUT;
    ev.data.ptr = stream;
    if (epoll_ctl(inst->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        return;
    }
    epoll_ctl(inst->epoll_fd, EPOLL_CTL_DEL, stream->fd, NULL);
    close(stream->fd);
    stream->fd         = fd;
    stream->events     = EPOLLOUT;
    stream->connect_ns = now;
}

void sn_stream_timers(sn_inst_t *inst, uint64_t now)
{
    sn_stream_t *stream;

    for (stream = inst->streams; stream != NULL; stream = stream->next) {
        if ((stream->chan->role == SN_ROLE_INI) &&
            (stream->state == SN_CS_CONNECTING) &&
            (now - stream->connect_ns >= SN_CONNECT_RETRY_NS)) {
            sn_stream_reconnect(inst, stream, now);
        }
    }
}

sn_stream_t *sn_stream_open(sn_inst_t *inst, const struct sockaddr_in *remote,
                            const void *first, size_t len)
{
    sn_stream_t *stream;
    int fd;

    fd = sn_stream_socket(inst, remote);
    if (fd < 0) {
        return NULL;
    }
    stream = sn_stream_new(inst, fd, SN_ROLE_INI, EPOLLOUT);
    if (stream == NULL) {
        close(fd);
        return NULL;
    }
    stream->obuf = malloc(sizeof(sn_hello_t) + len);
    if (stream->obuf == NULL) {
        sn_stream_close(inst, stream);
        return NULL;
    }
    sn_stream_hello_fill(inst, (sn_hello_t *)stream->obuf, SN_HELLO, 0);
    memcpy(stream->obuf + sizeof(sn_hello_t), first, len);
    stream->ocap = stream->olen = sizeof(sn_hello_t) + len;
    stream->state               = SN_CS_CONNECTING;
    stream->remote              = *remote;
    stream->connect_ns          = sn_now_ns();
    return stream;
}

/* INI: connect() completed. Returns 0 (the HELLO goes next), or -1 when it
 * failed (then the QP's oldest WR fails and stream is closed). */
static int sn_stream_connected(sn_inst_t *inst, sn_stream_t *stream)
{
    socklen_t len = sizeof(int);
    int err       = 0;

    if ((getsockopt(stream->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) ||
        (err != 0)) {
        errno = err;
        sn_log(inst, SOFTNIC_LOG_INFO, "qp 0x%x: connect failed: %m",
               stream->chan->qp->super.qp_num);
        sn_chan_ini_fail(inst, stream->chan);
        return -1;
    }
    stream->state = SN_CS_HELLO;
    return 0;
}

static void sn_stream_writable(sn_inst_t *inst, sn_stream_t *stream)
{
    int ret;

    if ((stream->state == SN_CS_CONNECTING) &&
        (sn_stream_connected(inst, stream) != 0)) {
        return;
    }
    if (stream->olen > stream->opos) {
        ret = sn_stream_flush(stream);
        if (ret < 0) {
            sn_stream_fail(inst, stream);
            return;
        }
        if (ret == 0) {
            return;
        }
    }
    if (stream->state == SN_CS_CLOSING) {
        sn_stream_close(inst, stream);
        return;
    }
    if ((stream->chan->role == SN_ROLE_INI) && (stream->state == SN_CS_READY)) {
        sn_chan_ini_writable(inst, stream->chan);
        return;
    }
    if (stream->chan->role == SN_ROLE_TGT) {
        if (sn_resp_read_pump(inst, stream->chan) < 0) {
            sn_stream_close(inst, stream);
            return;
        }
        if ((stream->olen > stream->opos) || stream->chan->rd_active) {
            return;
        }
    }
    sn_stream_set_events(inst, stream, EPOLLIN);
    /* requests may be waiting in rbuf already */
    if (sn_stream_rx(inst, stream) < 0) {
        sn_stream_fail(inst, stream);
    }
}

void sn_stream_resume(sn_inst_t *inst)
{
    sn_stream_t *stream, *next;

    if (inst->num_held == 0) {
        return;
    }
    /* reading a connection closes at most that one */
    for (stream = inst->streams; stream != NULL; stream = next) {
        next = stream->next;
        if (stream->held) {
            sn_stream_unhold(inst, stream);
            if (sn_stream_rx(inst, stream) < 0) {
                sn_stream_fail(inst, stream);
            }
        }
    }
}

void sn_stream_acks(sn_inst_t *inst, int force, int busy)
{
    sn_stream_t *stream, *next;
    uint64_t now;

    if (inst->num_ack_owed == 0) {
        return;
    }
    now = sn_now_ns();
    /* a failed send closes at most that connection */
    for (stream = inst->streams; stream != NULL; stream = next) {
        next = stream->next;
        if (((SN_RULE_ACK_BOUND && force) ||
             sn_resp_ack_due(stream->chan, now, busy)) &&
            (sn_resp_ack_flush(inst, stream->chan) != 0)) {
            sn_stream_close(inst, stream);
        }
    }
}

void sn_stream_event(sn_inst_t *inst, sn_stream_t *stream, uint32_t events)
{
    sn_qp_t *qp;
    int stale;

    if (stream->chan->role == SN_ROLE_INI) {
        /* without the QP lock (sn_qp_t.stream_id): a poster holds it while
         * it writes a frame, and this runs for every answer that comes */
        qp = stream->chan->qp;
        stale =
            (__atomic_load_n(&qp->stream_id, __ATOMIC_RELAXED) != stream->id);
        if (stale) {
            sn_stream_close(inst, stream);
            return;
        }
    } else if (stream->quiet && sn_qp_takes_recvs(stream->chan->qp)) {
        sn_stream_set_quiet(inst, stream, 0); /* a receive was posted */
    }

    if (events & EPOLLOUT) {
        sn_stream_writable(inst, stream);
        return; /* the connection may be gone; EPOLLIN comes again */
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (sn_stream_rx(inst, stream) < 0) {
            sn_stream_fail(inst, stream);
        }
    }
}
