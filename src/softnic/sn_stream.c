/*
 * softnic's streams (sn_wire.h): the stream objects and their sockets,
 * accepting and connecting (with retries of a slow connect), the output
 * buffer, receiving frames and their payloads into checked memory
 * (sinks), and a stream's events, handing the HELLO to its channel
 * (sn_chan.c) and each frame to the responder (sn_resp.c) or the
 * requester (sn_req.c).
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

void sn_stream_set_events(sn_inst_t *inst, sn_stream_t *stream, uint32_t events)
{
    struct epoll_event ev;

    if (stream->events == events) {
        return;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events   = events;
    ev.data.ptr = stream;
    if (epoll_ctl(inst->epoll_fd, EPOLL_CTL_MOD, stream->fd, &ev) == 0) {
        stream->events = events;
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
    epoll_ctl(inst->epoll_fd, EPOLL_CTL_DEL, stream->fd, NULL);
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

/* Make at least `need` bytes available in rbuf. Returns 1 when there,
 * 0 when the socket is empty, -1 on EOF/error. */
static int sn_stream_fill(sn_stream_t *stream, uint32_t need)
{
    uint32_t want;
    ssize_t ret;

    if (stream->rlen - stream->rpos >= need) {
        return 1;
    }
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
    want =
        stream->hdr_alone ? need - stream->rlen : SN_RBUF_SIZE - stream->rlen;
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
    if (stream->rlen - stream->rpos >= need) {
        stream->hdr_alone = 0;
        return 1;
    }
    return 0;
}

/* take payload bytes buffered in rbuf */
static void sn_stream_put_buffered(sn_inst_t *inst, sn_stream_t *stream,
                                   uint32_t take)
{
    sn_sink_put(inst, &stream->sink, stream->rbuf + stream->rpos, take);
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
            ret =
                sn_sink_recv(inst, stream->fd, &stream->sink, stream->pay_left);
            if (ret > 0) {
                stream->pay_left -= ret;
                stream->hdr_alone = 1;
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

/* The HELLO (TGT) or HELLO_ACK (INI) in rbuf, for the stream's channel:
 * 1 go on, 0 the stream was stale (closed and freed), -1 fail it */
static int sn_stream_rx_hello(sn_inst_t *inst, sn_stream_t *stream)
{
    sn_hello_t hello;

    memcpy(&hello, stream->rbuf + stream->rpos, sizeof(hello));
    stream->rpos += sizeof(hello);
    return sn_chan_on_hello(inst, stream->chan, &hello);
}

/* TGT: the responder holds the request whose header is in rbuf (sn_resp.c,
 * check_acked): the connection is off the epoll set (its socket may hold
 * more, or have hung up) until sn_stream_resume reads it again */
static void sn_stream_hold(sn_inst_t *inst, sn_stream_t *stream)
{
    stream->held = 1;
    ++inst->num_held;
    epoll_ctl(inst->epoll_fd, EPOLL_CTL_DEL, stream->fd, NULL);
    stream->events = 0;
}

static void sn_stream_unhold(sn_inst_t *inst, sn_stream_t *stream)
{
    struct epoll_event ev;

    stream->held = 0;
    --inst->num_held;
    memset(&ev, 0, sizeof(ev));
    ev.events   = EPOLLIN;
    ev.data.ptr = stream;
    if (epoll_ctl(inst->epoll_fd, EPOLL_CTL_ADD, stream->fd, &ev) == 0) {
        stream->events = EPOLLIN;
    }
}

/* One frame, its header and then its payload, for the responder (TGT) or
 * the requester (INI): 1 done, 0 waiting for bytes (or held), -1 fail */
static int sn_stream_rx_frame(sn_inst_t *inst, sn_stream_t *stream)
{
    sn_chan_t *chan = stream->chan;
    uint32_t hdr_len =
        (chan->role == SN_ROLE_TGT) ? sizeof(sn_req_t) : sizeof(sn_rsp_t);
    int ret;

    if (stream->rx_state == SN_RX_HDR) {
        ret = sn_stream_fill(stream, hdr_len);
        if (ret <= 0) {
            return ret;
        }
        memcpy(&stream->hdr, stream->rbuf + stream->rpos, hdr_len);
        stream->rpos += hdr_len;
        ret = (chan->role == SN_ROLE_TGT) ? sn_resp_on_header(inst, chan)
                                          : sn_req_on_rsp(inst, chan);
        if (ret < 0) {
            return -1;
        }
        if (ret == 1) {
            stream->rpos -= hdr_len; /* still there: nothing was read since */
            sn_stream_hold(inst, stream);
            return 0;
        }
        if (ret == 2) {
            return 1; /* its payload came with it */
        }
        if ((chan->role == SN_ROLE_INI) &&
            (stream->hdr.rsp.type == SN_RSP_READ_DATA)) {
            sn_svc_hot(inst, stream); /* its READ's frames come next */
        }
        stream->rx_state = SN_RX_PAYLOAD;
    }

    ret = sn_stream_payload(inst, stream);
    if (ret <= 0) {
        return ret;
    }
    stream->rx_state = SN_RX_HDR;
    if (chan->role == SN_ROLE_TGT) {
        ret = sn_req_has_payload(stream->hdr.req.op)
                  ? sn_resp_on_payload(inst, chan)
                  : 0;
    } else {
        ret = ((stream->hdr.rsp.type == SN_RSP_READ_DATA) &&
               (stream->hdr.rsp.length > 0))
                  ? sn_req_on_payload(chan)
                  : 0;
    }
    return (ret < 0) ? -1 : 1;
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
                            const void *hello, size_t len)
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
    stream->obuf = malloc(len);
    if (stream->obuf == NULL) {
        sn_stream_close(inst, stream);
        return NULL;
    }
    memcpy(stream->obuf, hello, len);
    stream->ocap = stream->olen = len;
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

void sn_stream_acks(sn_inst_t *inst, int force)
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
             sn_resp_ack_due(stream->chan, now)) &&
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
