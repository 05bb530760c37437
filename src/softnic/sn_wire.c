/*
 * softnic wire protocol and service thread.
 *
 * Connection = one TCP stream from an initiator QP to its destination QP's
 * softnic instance. After connect, the initiator sends HELLO and the target
 * answers HELLO_ACK (sn_hello_t, 72 bytes each; a same-host target names a
 * SEND ring in it, see sn_ring.c). Then the initiator sends requests
 * (sn_req_t, 48 bytes, followed by `length` payload
 * bytes for WRITE, WRITE_IMM, SEND, SEND_IMM) and the target answers each
 * in order with a response (sn_rsp_t, 32 bytes; READ_DATA responses
 * are followed by `length` payload bytes, at most SN_CHUNK).
 * All integers are little-endian.
 *
 * Requests carry a per-connection sequence number. The target executes only
 * the request with the expected sequence and silently drops (drains) any
 * other: after an RNR or "not ready" NAK the initiator rewinds and resends
 * from the NAKed request (go-back-N, as IB does), so dropping what follows a
 * NAK keeps execution in posting order.
 *
 * Every header field is validated; a malformed frame, an unexpected response
 * or a lying length closes the connection (initiator side: the oldest WR
 * fails with IBV_WC_RETRY_EXC_ERR, the QP goes to ERR). Payload bytes are
 * only ever written to ranges that passed the MR check, each syscall or copy
 * bracketed by sn_mr_busy_begin/end so deregistration takes effect.
 *
 * Threads: all functions here except sn_wire_send_req,
 * sn_svc_want_tx and the command posters run under inst->svc_lock, on
 * the service thread or on a thread polling a CQ (sn_svc_poll); the
 * lock holder alone owns the connection objects (sn_conn_t).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_int.h"

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define SN_HELLO_MAGIC   0x4f524348u /* "ORCH" */
#define SN_WIRE_VERSION  2
#define SN_RBUF_SIZE     (64 * 1024)
#define SN_DIRECT_MIN    (16 * 1024) /* recv straight into memory */
#define SN_TICK_NS       (20ull * 1000 * 1000)
#define SN_FRAMES_PER_EV 64

enum {
    SN_HELLO     = 1,
    SN_HELLO_ACK = 2
};

typedef struct sn_hello {
    uint32_t           magic;
    uint16_t           version;
    uint16_t           type;
    uint32_t           qpn_or_status; /* HELLO: src QPN; ACK: errno */
    uint32_t           qpn_or_pdn;    /* HELLO: dst QPN; ACK: PD of dst QP */
    sn_host_id_t host;
    uint32_t           pid;
    uint32_t           inst_id;
    uint32_t           ring_id;       /* ACK: same-host SEND ring, 0: none */
    uint32_t           ring_slots;    /* ACK: SN_RING_SLOTS */
} __attribute__((packed)) sn_hello_t;

/* request opcodes */
enum {
    SN_OP_WRITE = 1,
    SN_OP_WRITE_IMM,
    SN_OP_SEND,
    SN_OP_SEND_IMM,
    SN_OP_READ,
    SN_OP_CSWAP,
    SN_OP_FADD,
    SN_OP_LAST
};

#define SN_REQ_F_SOLICITED 0x1

typedef struct sn_req {
    uint8_t  op;
    uint8_t  flags;
    uint16_t reserved;
    uint32_t seq;
    uint32_t length;
    uint32_t rkey;
    uint64_t raddr;
    uint64_t compare_add;
    uint64_t swap;
    uint32_t imm;       /* as in ibv_send_wr: network order, not swapped */
    uint32_t reserved2;
} __attribute__((packed)) sn_req_t;

/* response types */
enum {
    SN_RSP_ACK = 1,
    SN_RSP_NAK,
    SN_RSP_READ_DATA,
    SN_RSP_ATOMIC,
    SN_RSP_LAST
};

/* NAK codes */
enum {
    SN_NAK_RNR = 1,      /* no receive posted: retry after rnr_timer */
    SN_NAK_NOT_READY,    /* target QP not in RTR/RTS, or not ours */
    SN_NAK_REM_ACCESS,
    SN_NAK_REM_INV_REQ,
    SN_NAK_REM_OP,
    SN_NAK_LAST
};

typedef struct sn_rsp {
    uint8_t  type;
    uint8_t  code;      /* NAK code */
    uint8_t  rnr_timer; /* NAK RNR: the responder's min_rnr_timer */
    uint8_t  reserved;
    uint32_t seq;
    uint32_t length;    /* READ_DATA payload bytes */
    uint32_t offset;    /* READ_DATA offset in the READ */
    uint64_t value;     /* ATOMIC: original value */
    uint64_t reserved2;
} __attribute__((packed)) sn_rsp_t;

typedef enum {
    SN_CMD_CONNECT,
    SN_CMD_DROP,
    SN_CMD_FORGET
} sn_cmd_type_t;

struct sn_cmd {
    struct sn_cmd *next;
    sn_cmd_type_t  type;
    sn_qp_t       *qp;
    uint64_t             conn_id;
    int                  on_stack; /* FORGET: owned by the waiting caller */
};

/* Where payload bytes go: up to SN_MAX_SGE checked local segments,
 * or nowhere (discard). */
typedef struct sn_sink {
    int                num;
    int                cur;
    uint64_t           cur_off;  /* offset in segment cur */
    int                failed;   /* a region went away: discard the rest */
    struct {
        uint64_t           addr;
        uint64_t           len;
        sn_mr_snap_t snap;
    } seg[SN_MAX_SGE];
} sn_sink_t;

enum {
    SN_ROLE_INI = 1,
    SN_ROLE_TGT
};

enum {
    SN_CS_CONNECTING = 1, /* INI: waiting for connect() */
    SN_CS_HELLO,          /* waiting for HELLO / HELLO_ACK */
    SN_CS_READY,
    SN_CS_CLOSING         /* TGT: flush obuf, then close */
};

enum {
    SN_RX_HDR = 0,
    SN_RX_PAYLOAD
};

/*
 * A connection. Owned by the service thread: only it reads or writes these
 * fields, except that an initiator QP's posting threads write to fd (under
 * the QP lock, once the QP lists the connection as READY) and change its
 * epoll registration (sn_svc_want_tx).
 */
struct sn_conn {
    sn_conn_t *next;
    uint64_t         id;
    int              fd;
    int              role;
    int              state;
    uint32_t         events;      /* current epoll interest */
    sn_qp_t   *qp;          /* INI: owner; TGT: the target QP */
    uint32_t         peer_qpn;    /* TGT: the initiator QPN */
    uint32_t         expected_seq;/* TGT */

    uint8_t         *rbuf;
    uint32_t         rpos, rlen;
    int              rx_state;
    union {
        sn_req_t req;
        sn_rsp_t rsp;
    } hdr;
    uint32_t         pay_left;
    sn_sink_t  sink;
    int              drop;        /* TGT: request dropped or answered */
    /* TGT: SEND / WRITE_IMM being received */
    int              have_recv;
    sn_recv_t  recv;
    /* INI: READ_DATA being received for WQE at SQ counter rd_index */
    uint32_t         rd_index;

    uint8_t         *obuf;
    uint32_t         opos, olen, ocap;

    /* INI: where to connect, and when the current attempt started */
    struct sockaddr_in remote;
    uint64_t           connect_ns;

    int                tcp_data;  /* counted in inst->num_tcp_conns */

    /* TGT: same-host SEND ring attached to conn->qp */
    struct sn_ring *ring;
    uint32_t              ring_id;
    sn_ring_att_t  *ring_att;

    /* TGT: READ being answered */
    int                rd_active;
    uint32_t           rd_seq;
    sn_mr_snap_t rd_snap;
    uint64_t           rd_addr;
    uint32_t           rd_total, rd_off;  /* rd_off: payload bytes sent */
    uint32_t           rd_chunk_left;     /* of the current chunk */
};

static char sn_listen_tag, sn_cmd_tag;

static void sn_conn_close(sn_inst_t *inst, sn_conn_t *conn);

/* ---- commands ----------------------------------------------------------- */

static void sn_svc_post(sn_inst_t *inst, struct sn_cmd *cmd,
                        uint64_t *ticket_p)
{
    uint64_t one = 1;
    ssize_t ret;

    cmd->next = NULL;
    pthread_mutex_lock(&inst->cmd_lock);
    if (inst->cmd_tail == NULL) {
        inst->cmd_head = cmd;
    } else {
        inst->cmd_tail->next = cmd;
    }
    inst->cmd_tail = cmd;
    if (ticket_p != NULL) {
        *ticket_p = ++inst->cmd_posted;
    } else {
        ++inst->cmd_posted;
    }
    pthread_mutex_unlock(&inst->cmd_lock);
    ret = write(inst->cmd_fd, &one, sizeof(one));
    (void)ret; /* an eventfd write fails only when the counter saturates */
}

void sn_svc_wake(sn_inst_t *inst)
{
    uint64_t one = 1;
    ssize_t ret;

    ret = write(inst->cmd_fd, &one, sizeof(one));
    (void)ret;
}

int sn_svc_connect(sn_inst_t *inst, sn_qp_t *qp)
{
    struct sn_cmd *cmd = calloc(1, sizeof(*cmd));

    if (cmd == NULL) {
        return ENOMEM;
    }
    cmd->type = SN_CMD_CONNECT;
    cmd->qp   = qp;
    sn_svc_post(inst, cmd, NULL);
    return 0;
}

void sn_svc_drop_conn(sn_inst_t *inst, uint64_t conn_id)
{
    struct sn_cmd *cmd = calloc(1, sizeof(*cmd));

    /* without memory the connection lingers until the service thread
     * notices that its QP no longer lists it */
    if (cmd != NULL) {
        cmd->type    = SN_CMD_DROP;
        cmd->conn_id = conn_id;
        sn_svc_post(inst, cmd, NULL);
    }
}

void sn_svc_forget_qp(sn_inst_t *inst, sn_qp_t *qp)
{
    struct sn_cmd cmd;
    uint64_t ticket;

    memset(&cmd, 0, sizeof(cmd));
    cmd.type     = SN_CMD_FORGET;
    cmd.qp       = qp;
    cmd.on_stack = 1;
    sn_svc_post(inst, &cmd, &ticket);
    pthread_mutex_lock(&inst->cmd_lock);
    while (inst->cmd_done < ticket) {
        pthread_cond_wait(&inst->cmd_cond, &inst->cmd_lock);
    }
    pthread_mutex_unlock(&inst->cmd_lock);
}

/* ---- epoll helpers ----------------------------------------------------- */

static void sn_conn_set_events(sn_inst_t *inst,
                               sn_conn_t *conn, uint32_t events)
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
 * segment against the local MR table (LOCAL_WRITE, pdn). Returns 0 or -1. */
static int sn_sink_from_sges(sn_inst_t *inst, sn_sink_t *sink,
                             const struct ibv_sge *sge, int num_sge,
                             uint32_t pdn, uint64_t offset, uint64_t len)
{
    uint64_t take;
    int i;

    memset(sink, 0, sizeof(*sink));
    for (i = 0; (i < num_sge) && (len > 0); ++i) {
        if (offset >= sge[i].length) {
            offset -= sge[i].length;
            continue;
        }
        take = sge[i].length - offset;
        if (take > len) {
            take = len;
        }
        if (sn_mr_check(inst->mrs, sge[i].lkey, pdn,
                        sge[i].addr + offset, take,
                        IBV_ACCESS_LOCAL_WRITE,
                        &sink->seg[sink->num].snap) != 0) {
            return -1;
        }
        sink->seg[sink->num].addr = sge[i].addr + offset;
        sink->seg[sink->num].len  = take;
        ++sink->num;
        len   -= take;
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

/* Copy n buffered bytes into the sink (or drop them). */
static void sn_sink_put(sn_inst_t *inst, sn_sink_t *sink,
                        const uint8_t *data, uint64_t n)
{
    uint64_t take;

    while ((n > 0) && !sink->failed && (sink->cur < sink->num)) {
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
        n    -= take;
    }
}

/* recv() at most max bytes straight into the sink (or the scratch buffer
 * when discarding). Returns recv()'s result. */
static ssize_t sn_sink_recv(sn_inst_t *inst, int fd,
                            sn_sink_t *sink, uint64_t max)
{
    uint64_t take;
    ssize_t ret;

    if (sink->failed || (sink->cur >= sink->num)) {
        take = (max < SN_CHUNK) ? max : SN_CHUNK;
        return recv(fd, inst->scratch, take, MSG_DONTWAIT);
    }
    take = sink->seg[sink->cur].len - sink->cur_off;
    if (take > max) {
        take = max;
    }
    if (sn_mr_busy_begin(inst, &sink->seg[sink->cur].snap) != 0) {
        sink->failed = 1;
        take = (max < SN_CHUNK) ? max : SN_CHUNK;
        return recv(fd, inst->scratch, take, MSG_DONTWAIT);
    }
    ret = recv(fd,
               (void *)(uintptr_t)(sink->seg[sink->cur].addr + sink->cur_off),
               take, MSG_DONTWAIT);
    sn_mr_busy_end(inst);
    if (ret > 0) {
        sn_sink_advance(sink, ret);
    }
    return ret;
}

/* ---- output (service-thread frames) ------------------------------------ */

/* Send data (header + optional payload) on a target connection; what the
 * socket does not take is copied to obuf. Returns 0 or -1 (dead). */
static int sn_conn_out(sn_inst_t *inst, sn_conn_t *conn,
                       const void *hdr, size_t hdr_len,
                       const void *payload, size_t payload_len)
{
    struct iovec iov[2];
    struct msghdr msg;
    size_t total = hdr_len + payload_len, need;
    ssize_t ret  = 0;
    uint8_t *tmp;

    if (conn->olen == conn->opos) {
        conn->opos = conn->olen = 0;
        iov[0].iov_base = (void *)hdr;
        iov[0].iov_len  = hdr_len;
        iov[1].iov_base = (void *)payload;
        iov[1].iov_len  = payload_len;
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov    = iov;
        msg.msg_iovlen = (payload_len > 0) ? 2 : 1;
        do {
            ret = sendmsg(conn->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while ((ret < 0) && (errno == EINTR));
        if (ret < 0) {
            if ((errno != EAGAIN) && (errno != EWOULDBLOCK)) {
                return -1;
            }
            ret = 0;
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
static int sn_conn_flush(sn_conn_t *conn)
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
static int sn_tgt_read_pump(sn_inst_t *inst, sn_conn_t *conn)
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
static void sn_tgt_unpop_recv(sn_qp_t *qp,
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

static int sn_req_has_payload(uint8_t op)
{
    return (op == SN_OP_WRITE) || (op == SN_OP_WRITE_IMM) ||
           (op == SN_OP_SEND) || (op == SN_OP_SEND_IMM);
}

/* Decide what to do with a request; returns -1 to close the connection.
 * On return, conn->pay_left/sink say where the payload goes, and responses
 * that do not depend on the payload were sent. */
static int sn_tgt_req(sn_inst_t *inst, sn_conn_t *conn)
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
static int sn_tgt_req_done(sn_inst_t *inst, sn_conn_t *conn)
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

/* ---- initiator side: responses ----------------------------------------- */

/* QP lock held: the WQE a response must belong to: the oldest SENT one, or
 * else the one whose frame is being written (the target NAKs a request as
 * soon as it has its header, possibly before the payload is complete). */
static sn_wqe_t *sn_ini_wqe(sn_qp_t *qp, uint32_t *index_p)
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

/* QP lock held */
static void sn_ini_finish(sn_qp_t *qp, sn_wqe_t *wqe,
                          enum ibv_wc_status status)
{
    if (wqe->state == SN_WQE_SENT) {
        --qp->sent_out;
        if ((wqe->opcode == IBV_WR_RDMA_READ) ||
            (wqe->opcode == IBV_WR_ATOMIC_CMP_AND_SWP) ||
            (wqe->opcode == IBV_WR_ATOMIC_FETCH_AND_ADD)) {
            --qp->rd_atomic_out;
        }
    }
    /* else: NAKed while its frame is still being written; sn_qp_tx
     * finishes the frame (the target drains it) and keeps it DONE */
    wqe->state  = SN_WQE_DONE;
    wqe->status = status;
}

/* QP lock held: retry the WQE at index after a NAK */
static void sn_ini_rewind(sn_qp_t *qp, uint32_t index,
                          uint64_t delay_ns)
{
    qp->rewind_pending = 1;
    qp->rewind_to      = index;
    qp->hold_until_ns  = sn_now_ns() + delay_ns;
}

/* Handle a response header; returns -1 to fail the connection. */
static int sn_ini_rsp(sn_inst_t *inst, sn_conn_t *conn)
{
    sn_rsp_t *rsp = &conn->hdr.rsp;
    sn_qp_t *qp   = conn->qp;
    sn_wqe_t *wqe;
    uint64_t delay;
    uint32_t index;
    int ret = 0, op_ok;

    rsp->seq    = le32toh(rsp->seq);
    rsp->length = le32toh(rsp->length);
    rsp->offset = le32toh(rsp->offset);
    rsp->value  = le64toh(rsp->value);
    memset(&conn->sink, 0, sizeof(conn->sink));
    conn->sink.failed = 1;
    conn->pay_left    = 0;
    if ((rsp->type == 0) || (rsp->type >= SN_RSP_LAST) ||
        (rsp->reserved != 0) || (rsp->reserved2 != 0) ||
        ((rsp->type == SN_RSP_NAK) &&
         ((rsp->code == 0) || (rsp->code >= SN_NAK_LAST))) ||
        (rsp->length > SN_CHUNK) ||
        ((rsp->type != SN_RSP_READ_DATA) && (rsp->length != 0))) {
        sn_log(inst, SOFTNIC_LOG_WARN,
               "malformed response (type %u code %u length %u)",
               rsp->type, rsp->code, rsp->length);
        return -1;
    }

    pthread_mutex_lock(&qp->lock);
    wqe = sn_ini_wqe(qp, &index);
    if ((wqe == NULL) || (wqe->seq != rsp->seq)) {
        sn_log(inst, SOFTNIC_LOG_WARN,
               "qp 0x%x: unexpected response seq %u",
               qp->super.qp_num, rsp->seq);
        ret = -1;
        goto out;
    }
    qp->last_progress_ns = sn_stamp_ns();

    switch (rsp->type) {
    case SN_RSP_ACK:
        op_ok = (wqe->opcode == IBV_WR_RDMA_WRITE) ||
                (wqe->opcode == IBV_WR_RDMA_WRITE_WITH_IMM) ||
                (wqe->opcode == IBV_WR_SEND) ||
                (wqe->opcode == IBV_WR_SEND_WITH_IMM);
        if (!op_ok) {
            ret = -1;
            goto out;
        }
        qp->rnr_count = qp->retry_count = 0;
        sn_ini_finish(qp, wqe, IBV_WC_SUCCESS);
        break;
    case SN_RSP_ATOMIC:
        if ((wqe->opcode != IBV_WR_ATOMIC_CMP_AND_SWP) &&
            (wqe->opcode != IBV_WR_ATOMIC_FETCH_AND_ADD)) {
            ret = -1;
            goto out;
        }
        qp->rnr_count = qp->retry_count = 0;
        sn_ini_finish(qp, wqe,
                      sn_qp_put_atomic_result(qp, wqe, rsp->value,
                                              1));
        break;
    case SN_RSP_READ_DATA:
        if ((wqe->opcode != IBV_WR_RDMA_READ) ||
            (rsp->offset != wqe->done_bytes) ||
            (rsp->length > wqe->length - wqe->done_bytes) ||
            ((rsp->length == 0) && (wqe->length != 0))) {
            ret = -1;
            goto out;
        }
        qp->rnr_count = qp->retry_count = 0;
        if (rsp->length == 0) {
            sn_ini_finish(qp, wqe, IBV_WC_SUCCESS);
            break;
        }
        conn->pay_left = rsp->length;
        conn->rd_index = index;
        if (sn_sink_from_sges(inst, &conn->sink, wqe->sge, wqe->num_sge,
                              qp->pdn, rsp->offset, rsp->length) != 0) {
            memset(&conn->sink, 0, sizeof(conn->sink));
            conn->sink.failed = 1;
            conn->sink.num    = 1; /* marks "failed", see ini_read_done */
        }
        break;
    default: /* NAK */
        switch (rsp->code) {
        case SN_NAK_RNR:
            ++qp->rnr_count;
            if ((qp->attr.rnr_retry != 7) &&
                (qp->rnr_count > qp->attr.rnr_retry)) {
                sn_ini_finish(qp, wqe, IBV_WC_RNR_RETRY_EXC_ERR);
                break;
            }
            sn_ini_rewind(qp, index,
                          sn_rnr_timer_ns(rsp->rnr_timer & 31));
            break;
        case SN_NAK_NOT_READY:
            ++qp->retry_count;
            if (qp->retry_count > qp->attr.retry_cnt) {
                sn_ini_finish(qp, wqe, IBV_WC_RETRY_EXC_ERR);
                break;
            }
            delay = sn_qp_timeout_ns(qp);
            sn_ini_rewind(qp, index, (delay != 0) ? delay :
                                           SN_TICK_NS);
            break;
        case SN_NAK_REM_ACCESS:
            sn_ini_finish(qp, wqe, IBV_WC_REM_ACCESS_ERR);
            break;
        case SN_NAK_REM_INV_REQ:
            sn_ini_finish(qp, wqe, IBV_WC_REM_INV_REQ_ERR);
            break;
        default:
            sn_ini_finish(qp, wqe, IBV_WC_REM_OP_ERR);
            break;
        }
        break;
    }
    sn_qp_complete(qp);
    sn_qp_tx(qp);
out:
    pthread_mutex_unlock(&qp->lock);
    return ret;
}

/* READ_DATA payload complete */
static int sn_ini_read_done(sn_conn_t *conn)
{
    sn_rsp_t *rsp = &conn->hdr.rsp;
    sn_qp_t *qp   = conn->qp;
    sn_wqe_t *wqe;
    uint32_t index;

    pthread_mutex_lock(&qp->lock);
    if (qp->conn_id != conn->id) {
        pthread_mutex_unlock(&qp->lock);
        return -1;
    }
    wqe = sn_ini_wqe(qp, &index);
    if ((wqe != NULL) && (index == conn->rd_index) &&
        (wqe->seq == rsp->seq)) {
        if (conn->sink.failed) {
            sn_ini_finish(qp, wqe, IBV_WC_LOC_PROT_ERR);
        } else {
            wqe->done_bytes += rsp->length;
            if (wqe->done_bytes == wqe->length) {
                sn_ini_finish(qp, wqe, IBV_WC_SUCCESS);
            }
        }
        sn_qp_complete(qp);
        sn_qp_tx(qp);
    }
    pthread_mutex_unlock(&qp->lock);
    return 0;
}

/* ---- connections ------------------------------------------------------- */

static sn_conn_t *sn_conn_new(sn_inst_t *inst, int fd,
                              int role, uint32_t events)
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
        sn_log(inst, SOFTNIC_LOG_ERROR,
               "epoll_ctl(ADD) failed: %m");
        free(conn->rbuf);
        free(conn);
        return NULL;
    }
    conn->next  = inst->conns;
    inst->conns = conn;
    return conn;
}

static void sn_conn_close(sn_inst_t *inst, sn_conn_t *conn)
{
    sn_conn_t **pp;

    for (pp = &inst->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == conn) {
            *pp = conn->next;
            break;
        }
    }
    if ((conn->role == SN_ROLE_TGT) && (conn->qp != NULL) &&
        (conn->have_recv || (conn->ring_att != NULL))) {
        sn_ring_att_t **pp;

        pthread_mutex_lock(&conn->qp->lock);
        if (conn->have_recv) {
            sn_tgt_unpop_recv(conn->qp, &conn->recv);
        }
        for (pp = &conn->qp->rings; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == conn->ring_att) {
                *pp = conn->ring_att->next;
                break;
            }
        }
        pthread_mutex_unlock(&conn->qp->lock);
    }
    if (conn->tcp_data) {
        __atomic_fetch_sub(&inst->num_tcp_conns, 1, __ATOMIC_RELAXED);
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

/* An initiator connection died or misbehaved: fail the QP's oldest WR. */
static void sn_ini_fail(sn_inst_t *inst, sn_conn_t *conn)
{
    sn_qp_t *qp = conn->qp;

    pthread_mutex_lock(&qp->lock);
    if (qp->conn_id == conn->id) {
        sn_log(inst, SOFTNIC_LOG_INFO,
               "qp 0x%x: connection to qp 0x%x lost",
               qp->super.qp_num, qp->attr.dest_qp_num);
        qp->conn_id    = 0;
        qp->conn       = NULL;
        qp->conn_fd    = -1;
        qp->conn_state = SN_CONN_FAILED;
        qp->tx_blocked = 0;
        /* SENDs the target took from the same-host ring were executed:
         * they complete as such before the first unfinished WR fails */
        if ((qp->ring != NULL) && (qp->ring_out > 0)) {
            sn_ring_progress(qp, 1);
        }
        if (qp->sq_head != qp->sq_tail) {
            sn_qp_fail_oldest(qp, IBV_WC_RETRY_EXC_ERR);
            sn_qp_complete(qp);
        }
    }
    pthread_mutex_unlock(&qp->lock);
    sn_conn_close(inst, conn);
}

static void sn_conn_fail(sn_inst_t *inst, sn_conn_t *conn)
{
    if (conn->role == SN_ROLE_INI) {
        sn_ini_fail(inst, conn);
    } else {
        sn_conn_close(inst, conn);
    }
}

int sn_wire_send_req(sn_qp_t *qp, const sn_wqe_t *wqe)
{
    static const uint8_t ops[] = {
        [IBV_WR_RDMA_WRITE]           = SN_OP_WRITE,
        [IBV_WR_RDMA_WRITE_WITH_IMM]  = SN_OP_WRITE_IMM,
        [IBV_WR_SEND]                 = SN_OP_SEND,
        [IBV_WR_SEND_WITH_IMM]        = SN_OP_SEND_IMM,
        [IBV_WR_RDMA_READ]            = SN_OP_READ,
        [IBV_WR_ATOMIC_CMP_AND_SWP]   = SN_OP_CSWAP,
        [IBV_WR_ATOMIC_FETCH_AND_ADD] = SN_OP_FADD,
    };
    struct iovec iov[SN_MAX_SGE + 1];
    struct msghdr msg;
    sn_req_t req;
    size_t skip = qp->tx_off, total = sizeof(req);
    unsigned n = 0, i;
    ssize_t ret;

    memset(&req, 0, sizeof(req));
    req.op          = ops[wqe->opcode];
    req.flags       = wqe->solicited ? SN_REQ_F_SOLICITED : 0;
    req.seq         = htole32(wqe->seq);
    req.length      = htole32(wqe->length);
    req.rkey        = htole32(wqe->rkey);
    req.raddr       = htole64(wqe->raddr);
    req.compare_add = htole64(wqe->compare_add);
    req.swap        = htole64(wqe->swap);
    req.imm         = wqe->imm;

    iov[n].iov_base = &req;
    iov[n].iov_len  = sizeof(req);
    ++n;
    if (sn_req_has_payload(req.op) && (wqe->length > 0)) {
        if (wqe->is_inline) {
            iov[n].iov_base = (void *)wqe->inline_data;
            iov[n].iov_len  = wqe->length;
            ++n;
        } else {
            for (i = 0; i < wqe->num_sge; ++i) {
                if (wqe->sge[i].length > 0) {
                    iov[n].iov_base = (void *)(uintptr_t)wqe->sge[i].addr;
                    iov[n].iov_len  = wqe->sge[i].length;
                    ++n;
                }
            }
        }
        total += wqe->length;
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
        ret = sendmsg(qp->conn_fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while ((ret < 0) && (errno == EINTR));
    if (ret < 0) {
        if ((errno == EAGAIN) || (errno == EWOULDBLOCK)) {
            return 0;
        }
        sn_log(sn_qp_inst(qp), SOFTNIC_LOG_INFO, "qp 0x%x: send failed: %m",
               qp->super.qp_num);
        sn_svc_drop_conn(sn_qp_inst(qp), qp->conn_id);
        qp->conn_id    = 0;
        qp->conn       = NULL;
        qp->conn_fd    = -1;
        qp->conn_state = SN_CONN_FAILED;
        sn_qp_fail_oldest(qp, IBV_WC_RETRY_EXC_ERR);
        sn_qp_complete(qp);
        return -1;
    }
    qp->tx_off += ret;
    return (qp->tx_off == total) ? 1 : 0;
}

/* ---- handshake ---------------------------------------------------------- */

/* The connection carries data on TCP: pollers may serve it */
static void sn_conn_count_tcp(sn_inst_t *inst,
                              sn_conn_t *conn)
{
    conn->tcp_data = 1;
    __atomic_fetch_add(&inst->num_tcp_conns, 1, __ATOMIC_RELAXED);
}

static void sn_hello_fill(sn_inst_t *inst, sn_hello_t *h,
                          uint16_t type, uint32_t a, uint32_t b)
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

/* TGT: a HELLO arrived. Returns -1 to close. */
static int sn_tgt_hello(sn_inst_t *inst, sn_conn_t *conn,
                        const sn_hello_t *h)
{
    sn_hello_t ack;
    sn_qp_t *qp;
    uint32_t pdn = 0;

    if (!sn_hello_valid(h, SN_HELLO)) {
        sn_log(inst, SOFTNIC_LOG_WARN,
               "malformed hello");
        return -1;
    }
    pthread_mutex_lock(&inst->lock);
    qp = sn_qp_find(inst, le32toh(h->qpn_or_pdn));
    if (qp != NULL) {
        pdn = qp->pdn;
    }
    pthread_mutex_unlock(&inst->lock);

    if (qp == NULL) {
        sn_log(inst, SOFTNIC_LOG_INFO,
               "hello for unknown qp 0x%x",
               le32toh(h->qpn_or_pdn));
        sn_hello_fill(inst, &ack, SN_HELLO_ACK, ENOENT, 0);
        sn_conn_out(inst, conn, &ack, sizeof(ack), NULL, 0);
        conn->state = SN_CS_CLOSING;
        sn_conn_set_events(inst, conn, EPOLLOUT);
        return 0;
    }
    conn->qp       = qp;
    conn->peer_qpn = le32toh(h->qpn_or_status) & 0xffffff;
    conn->state    = SN_CS_READY;
    sn_log(inst, SOFTNIC_LOG_DEBUG, "qp 0x%x: connection from qp 0x%x",
           qp->super.qp_num, conn->peer_qpn);
    sn_hello_fill(inst, &ack, SN_HELLO_ACK, 0, pdn);
    if (inst->config.no_cma || memcmp(&h->host, &inst->host, sizeof(h->host))) {
        sn_conn_count_tcp(inst, conn);
    }

    /* same host: offer a shared-memory ring for SENDs */
    if (!inst->config.no_cma && !inst->config.no_ring &&
        !memcmp(&h->host, &inst->host, sizeof(h->host))) {
        conn->ring_att = calloc(1, sizeof(*conn->ring_att));
        if (conn->ring_att != NULL) {
            conn->ring = sn_ring_create(inst, &conn->ring_id);
        }
        if (conn->ring != NULL) {
            conn->ring_att->ring    = conn->ring;
            conn->ring_att->src_qpn = conn->peer_qpn;
            pthread_mutex_lock(&qp->lock);
            sn_ring_set_rnr_timer(conn->ring, qp->attr.min_rnr_timer);
            conn->ring_att->next = qp->rings;
            qp->rings            = conn->ring_att;
            pthread_mutex_unlock(&qp->lock);
            __atomic_fetch_add(&inst->num_rings, 1, __ATOMIC_RELAXED);
            ack.ring_id    = htole32(conn->ring_id);
            ack.ring_slots = htole32(SN_RING_SLOTS);
        } else {
            free(conn->ring_att);
            conn->ring_att = NULL;
        }
    }
    return sn_conn_out(inst, conn, &ack, sizeof(ack), NULL, 0);
}

/* INI: the HELLO_ACK arrived. Returns -1 to fail. */
static int sn_ini_hello_ack(sn_inst_t *inst, sn_conn_t *conn,
                            const sn_hello_t *h)
{
    sn_qp_t *qp = conn->qp;
    sn_mr_entry_t *table = NULL;
    struct sn_ring *ring       = NULL;
    int same_host;

    if (!sn_hello_valid(h, SN_HELLO_ACK) ||
        (le32toh(h->qpn_or_status) != 0)) {
        sn_log(inst, SOFTNIC_LOG_INFO,
               "qp 0x%x: connection refused by the peer (%u)",
               qp->super.qp_num, le32toh(h->qpn_or_status));
        return -1;
    }
    same_host = !inst->config.no_cma &&
                !memcmp(&h->host, &inst->host, sizeof(h->host));
    if (same_host) {
        table = sn_mr_table_map(le64toh(h->host.pid_ns),
                                (pid_t)le32toh(h->pid),
                                le32toh(h->inst_id));
        same_host = (table != NULL);
    }
    if (same_host && !inst->config.no_ring && (le32toh(h->ring_id) != 0) &&
        (le32toh(h->ring_slots) == SN_RING_SLOTS)) {
        ring = sn_ring_map(le64toh(h->host.pid_ns),
                           (pid_t)le32toh(h->pid), le32toh(h->inst_id),
                           le32toh(h->ring_id));
    }

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
    if (ring != NULL) {
        qp->ring        = ring;
        qp->ring_prod   = 0;
        qp->ring_reaped = 0;
        qp->ring_out    = 0;
        qp->ring_atomic_out = 0;
        __atomic_fetch_add(&inst->num_rings, 1, __ATOMIC_RELAXED);
    }
    conn->state    = SN_CS_READY;
    qp->conn_state = SN_CONN_READY;
    if (!same_host) {
        sn_conn_count_tcp(inst, conn);
    }
    qp->conn_fd    = conn->fd;
    qp->same_host  = same_host;
    qp->peer_mrs   = table;
    qp->peer_pid   = (pid_t)le32toh(h->pid);
    qp->peer_pdn   = le32toh(h->qpn_or_pdn);
    qp->last_progress_ns = sn_now_ns(); /* the QP's budget starts now */
    sn_log(inst, SOFTNIC_LOG_DEBUG, "qp 0x%x: connected to qp 0x%x (%s)",
           qp->super.qp_num, qp->attr.dest_qp_num,
           !same_host ? "TCP" : (ring != NULL) ? "same host, CMA and ring" :
                                                 "same host, CMA");
    sn_qp_tx(qp);
    pthread_mutex_unlock(&qp->lock);
    return 1;
}

/* ---- receive path ------------------------------------------------------ */

/* Make at least `need` bytes available in rbuf. Returns 1 when there,
 * 0 when the socket is empty, -1 on EOF/error. */
static int sn_conn_fill(sn_conn_t *conn, uint32_t need)
{
    ssize_t ret;

    if (conn->rlen - conn->rpos >= need) {
        return 1;
    }
    if (conn->rpos > 0) {
        memmove(conn->rbuf, conn->rbuf + conn->rpos, conn->rlen - conn->rpos);
        conn->rlen -= conn->rpos;
        conn->rpos  = 0;
    }
    do {
        ret = recv(conn->fd, conn->rbuf + conn->rlen,
                   SN_RBUF_SIZE - conn->rlen, MSG_DONTWAIT);
    } while ((ret < 0) && (errno == EINTR));
    if (ret == 0) {
        return -1;
    }
    if (ret < 0) {
        return ((errno == EAGAIN) || (errno == EWOULDBLOCK)) ? 0 : -1;
    }
    conn->rlen += ret;
    return (conn->rlen - conn->rpos >= need) ? 1 : 0;
}

/* Consume payload bytes; returns 1 when complete, 0 when waiting, -1 dead */
static int sn_conn_payload(sn_inst_t *inst, sn_conn_t *conn)
{
    uint32_t avail, take;
    ssize_t ret;

    while (conn->pay_left > 0) {
        avail = conn->rlen - conn->rpos;
        if (avail > 0) {
            take = (avail < conn->pay_left) ? avail : conn->pay_left;
            sn_sink_put(inst, &conn->sink, conn->rbuf + conn->rpos,
                        take);
            conn->rpos     += take;
            conn->pay_left -= take;
            continue;
        }
        conn->rpos = conn->rlen = 0;
        if (conn->pay_left >= SN_DIRECT_MIN) {
            ret = sn_sink_recv(inst, conn->fd, &conn->sink,
                               conn->pay_left);
            if (ret > 0) {
                conn->pay_left -= ret;
                continue;
            }
        } else {
            ret = recv(conn->fd, conn->rbuf, SN_RBUF_SIZE, MSG_DONTWAIT);
            if (ret > 0) {
                conn->rlen = ret;
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

/* Process input on a connection. Returns -1 when it must be failed. */
static int sn_conn_rx(sn_inst_t *inst, sn_conn_t *conn)
{
    sn_hello_t hello;
    uint32_t hdr_len;
    int frames, ret;

    for (frames = 0;; ++frames) {
        /* yield to other connections only when nothing is buffered here:
         * bytes already in rbuf would never be announced by epoll again */
        if ((frames >= SN_FRAMES_PER_EV) && (conn->rpos == conn->rlen)) {
            return 0;
        }
        if (conn->state == SN_CS_CLOSING) {
            return 0;
        }
        /* back-pressure: answer before reading more requests */
        if ((conn->role == SN_ROLE_TGT) &&
            ((conn->olen > conn->opos) || conn->rd_active)) {
            return 0;
        }
        if (conn->state == SN_CS_HELLO) {
            ret = sn_conn_fill(conn, sizeof(hello));
            if (ret <= 0) {
                return ret;
            }
            memcpy(&hello, conn->rbuf + conn->rpos, sizeof(hello));
            conn->rpos += sizeof(hello);
            if (conn->role == SN_ROLE_TGT) {
                ret = sn_tgt_hello(inst, conn, &hello);
            } else {
                ret = sn_ini_hello_ack(inst, conn, &hello);
                if (ret == 0) {
                    return 1; /* stale: conn was closed and freed */
                }
            }
            if (ret < 0) {
                return -1;
            }
            continue;
        }

        if (conn->rx_state == SN_RX_HDR) {
            hdr_len = (conn->role == SN_ROLE_TGT) ?
                      sizeof(sn_req_t) : sizeof(sn_rsp_t);
            ret = sn_conn_fill(conn, hdr_len);
            if (ret <= 0) {
                return ret;
            }
            memcpy(&conn->hdr, conn->rbuf + conn->rpos, hdr_len);
            conn->rpos += hdr_len;
            if (conn->role == SN_ROLE_TGT) {
                ret = sn_tgt_req(inst, conn);
            } else {
                ret = sn_ini_rsp(inst, conn);
            }
            if (ret < 0) {
                return -1;
            }
            conn->rx_state = SN_RX_PAYLOAD;
        }

        ret = sn_conn_payload(inst, conn);
        if (ret <= 0) {
            return ret;
        }
        conn->rx_state = SN_RX_HDR;
        if (conn->role == SN_ROLE_TGT) {
            if (sn_req_has_payload(conn->hdr.req.op) &&
                (sn_tgt_req_done(inst, conn) < 0)) {
                return -1;
            }
        } else if ((conn->hdr.rsp.type == SN_RSP_READ_DATA) &&
                   (conn->hdr.rsp.length > 0)) {
            if (sn_ini_read_done(conn) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* ---- events ------------------------------------------------------------- */

static void sn_svc_accept(sn_inst_t *inst)
{
    sn_conn_t *conn;
    int fd, i;

    for (i = 0; i < 16; ++i) {
        fd = accept4(inst->listen_fd, NULL, NULL,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if ((errno != EAGAIN) && (errno != EWOULDBLOCK) &&
                (errno != EINTR)) {
                sn_log(inst, SOFTNIC_LOG_ERROR,
               "accept failed: %m");
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
static int sn_ini_socket(sn_inst_t *inst,
                         const struct sockaddr_in *remote)
{
    struct sockaddr_in local;
    int fd, ret;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sn_log(inst, SOFTNIC_LOG_ERROR,
               "socket() failed: %m");
        return -1;
    }
    memset(&local, 0, sizeof(local));
    local.sin_family = AF_INET;
    local.sin_addr   = inst->ip;
    if (((remote->sin_addr.s_addr & htonl(0xff000000)) != htonl(0x7f000000)) &&
        (bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0)) {
        sn_log(inst, SOFTNIC_LOG_ERROR,
               "bind() failed: %m");
        close(fd);
        return -1;
    }
    ret = connect(fd, (const struct sockaddr *)remote, sizeof(*remote));
    if ((ret < 0) && (errno != EINPROGRESS)) {
        sn_log(inst, SOFTNIC_LOG_INFO,
               "connect() failed: %m");
        close(fd);
        return -1;
    }
    return fd;
}

/* A connect() still pending after this long is retried on a new socket:
 * a SYN lost while a link came up would otherwise wait for TCP's 1 s SYN
 * retransmission, longer than a short QP timeout. */
#define SN_CONNECT_RETRY_NS (200ull * 1000 * 1000)

static void sn_ini_reconnect(sn_inst_t *inst,
                             sn_conn_t *conn, uint64_t now)
{
    struct epoll_event ev;
    int fd;

    fd = sn_ini_socket(inst, &conn->remote);
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

static void sn_svc_conn_timers(sn_inst_t *inst, uint64_t now)
{
    sn_conn_t *conn;

    for (conn = inst->conns; conn != NULL; conn = conn->next) {
        if ((conn->role == SN_ROLE_INI) &&
            (conn->state == SN_CS_CONNECTING) &&
            (now - conn->connect_ns >= SN_CONNECT_RETRY_NS)) {
            sn_ini_reconnect(inst, conn, now);
        }
    }
}

static void sn_svc_connect_qp(sn_inst_t *inst, sn_qp_t *qp)
{
    struct sockaddr_in remote;
    sn_hello_t hello;
    sn_conn_t *conn;
    int fd;

    pthread_mutex_lock(&qp->lock);
    if ((qp->conn_state != SN_CONN_CONNECTING) || (qp->conn_id != 0)) {
        pthread_mutex_unlock(&qp->lock);
        return;
    }
    memset(&remote, 0, sizeof(remote));
    remote.sin_family = AF_INET;
    remote.sin_port   = htons((inst->config.qpn_port_base == 0) ?
                              qp->attr.ah_attr.dlid :
                              inst->config.qpn_port_base +
                              (qp->attr.dest_qp_num >> SOFTNIC_QPN_PORT_SHIFT));
    memcpy(&remote.sin_addr, &qp->attr.ah_attr.grh.dgid.raw[12], 4);
    sn_hello_fill(inst, &hello, SN_HELLO, qp->super.qp_num,
                  qp->attr.dest_qp_num);

    fd = sn_ini_socket(inst, &remote);
    if (fd < 0) {
        goto err;
    }
    conn = sn_conn_new(inst, fd, SN_ROLE_INI, EPOLLOUT);
    if (conn == NULL) {
        goto err_close;
    }
    conn->qp         = qp;
    conn->state      = SN_CS_CONNECTING;
    conn->remote     = remote;
    conn->connect_ns = sn_now_ns();
    qp->conn_id = conn->id;
    qp->conn    = conn;
    /* the HELLO waits in obuf until the connection is up */
    conn->obuf  = malloc(sizeof(hello));
    if (conn->obuf == NULL) {
        qp->conn_id = 0;
        qp->conn    = NULL;
        sn_conn_close(inst, conn);
        goto err;
    }
    memcpy(conn->obuf, &hello, sizeof(hello));
    conn->ocap = conn->olen = sizeof(hello);
    pthread_mutex_unlock(&qp->lock);
    return;

err_close:
    close(fd);
err:
    qp->conn_state = SN_CONN_FAILED;
    sn_qp_tx(qp); /* fails queued WRs, if any */
    pthread_mutex_unlock(&qp->lock);
}

static void sn_svc_commands(sn_inst_t *inst)
{
    struct sn_cmd *cmd, *next;
    sn_conn_t *conn, *conn_next;
    uint64_t count = 0, value;
    ssize_t ret;

    ret = read(inst->cmd_fd, &value, sizeof(value));
    (void)ret;
    pthread_mutex_lock(&inst->cmd_lock);
    cmd            = inst->cmd_head;
    inst->cmd_head = inst->cmd_tail = NULL;
    pthread_mutex_unlock(&inst->cmd_lock);

    for (; cmd != NULL; cmd = next) {
        next = cmd->next;
        ++count;
        switch (cmd->type) {
        case SN_CMD_CONNECT:
            sn_svc_connect_qp(inst, cmd->qp);
            break;
        case SN_CMD_DROP:
            for (conn = inst->conns; conn != NULL; conn = conn->next) {
                if (conn->id == cmd->conn_id) {
                    sn_conn_close(inst, conn);
                    break;
                }
            }
            break;
        case SN_CMD_FORGET:
            for (conn = inst->conns; conn != NULL; conn = conn_next) {
                conn_next = conn->next;
                if (conn->qp == cmd->qp) {
                    conn->have_recv = 0; /* the QP is going away */
                    sn_conn_close(inst, conn);
                }
            }
            break;
        }
        if (!cmd->on_stack) {
            free(cmd);
        }
    }

    pthread_mutex_lock(&inst->cmd_lock);
    inst->cmd_done += count;
    pthread_cond_broadcast(&inst->cmd_cond);
    pthread_mutex_unlock(&inst->cmd_lock);
}

static void sn_svc_writable(sn_inst_t *inst, sn_conn_t *conn)
{
    sn_qp_t *qp = conn->qp;
    int err = 0, ret;
    socklen_t len = sizeof(err);

    if (conn->state == SN_CS_CONNECTING) {
        if ((getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) ||
            (err != 0)) {
            errno = err;
            sn_log(inst, SOFTNIC_LOG_INFO,
               "qp 0x%x: connect failed: %m",
                   qp->super.qp_num);
            sn_ini_fail(inst, conn);
            return;
        }
        conn->state = SN_CS_HELLO;
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

    if ((conn->role == SN_ROLE_INI) &&
        (conn->state == SN_CS_READY)) {
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
        return;
    }

    if (conn->role == SN_ROLE_TGT) {
        if (sn_tgt_read_pump(inst, conn) < 0) {
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

static void sn_svc_event(sn_inst_t *inst, sn_conn_t *conn,
                         uint32_t events)
{
    sn_qp_t *qp;
    int stale;

    if (conn->role == SN_ROLE_INI) {
        qp = conn->qp;
        pthread_mutex_lock(&qp->lock);
        stale = (qp->conn_id != conn->id);
        pthread_mutex_unlock(&qp->lock);
        if (stale) {
            sn_conn_close(inst, conn);
            return;
        }
    }

    if (events & EPOLLOUT) {
        sn_svc_writable(inst, conn);
        return; /* the connection may be gone; EPOLLIN comes again */
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (sn_conn_rx(inst, conn) < 0) {
            sn_conn_fail(inst, conn);
        }
    }
}

static int sn_svc_conn_alive(sn_inst_t *inst,
                             sn_conn_t *conn)
{
    sn_conn_t *c;

    for (c = inst->conns; c != NULL; c = c->next) {
        if (c == conn) {
            return 1;
        }
    }
    return 0;
}

static uint64_t sn_svc_timers(sn_inst_t *inst)
{
    uint64_t now = sn_now_ns(), next = 0, t;
    sn_qp_t *qp;

    pthread_mutex_lock(&inst->lock);
    for (qp = inst->qps; qp != NULL; qp = qp->next) {
        /* never queue behind a posting thread (it would hand the lock over
         * on every post): a busy QP is looked at again in 5 ms */
        if (pthread_mutex_trylock(&qp->lock) != 0) {
            t = now + 5000000ull;
        } else {
            if ((qp->rings != NULL) || (qp->ring != NULL)) {
                sn_ring_progress(qp, 1);
            }
            t = sn_qp_timers(qp, now);
            pthread_mutex_unlock(&qp->lock);
        }
        if ((t != 0) && ((next == 0) || (t < next))) {
            next = t;
        }
    }
    pthread_mutex_unlock(&inst->lock);
    return next;
}

/* svc_lock held: handle a batch of epoll events */
static void sn_svc_dispatch(sn_inst_t *inst,
                            const struct epoll_event *events, int n)
{
    sn_conn_t *conn;
    int i;

    for (i = 0; i < n; ++i) {
        if (events[i].data.ptr == &sn_listen_tag) {
            sn_svc_accept(inst);
        } else if (events[i].data.ptr == &sn_cmd_tag) {
            sn_svc_commands(inst);
        } else {
            conn = events[i].data.ptr;
            /* an earlier event of this batch may have closed it */
            if (sn_svc_conn_alive(inst, conn)) {
                sn_svc_event(inst, conn, events[i].events);
            }
        }
    }
}

void sn_svc_poll(sn_inst_t *inst)
{
    struct epoll_event events[16];
    int n;

    if ((__atomic_load_n(&inst->num_tcp_conns, __ATOMIC_RELAXED) == 0) ||
        __atomic_load_n(&inst->svc_want, __ATOMIC_RELAXED) ||
        (pthread_mutex_trylock(&inst->svc_lock) != 0)) {
        return;
    }
    if (!__atomic_load_n(&inst->stopping, __ATOMIC_ACQUIRE)) {
        n = epoll_wait(inst->epoll_fd, events, 16, 0);
        if (n > 0) {
            sn_svc_dispatch(inst, events, n);
            /* after the step: events the service thread is holding may
             * name connections closed here */
            __atomic_store_n(&inst->svc_gen, inst->svc_gen + 1,
                             __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&inst->svc_lock);
}

/* The service thread takes svc_lock: pollers that spin on trylock would
 * otherwise keep taking it back before the woken waiter gets to it */
static void sn_svc_lock(sn_inst_t *inst)
{
    __atomic_store_n(&inst->svc_want, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&inst->svc_lock);
    __atomic_store_n(&inst->svc_want, 0, __ATOMIC_RELAXED);
}

static void *sn_svc_thread(void *arg)
{
    sn_inst_t *inst = arg;
    struct epoll_event events[64];
    uint64_t next = 0, now, last_timers = 0, gen;
    int n, timeout_ms;

    while (!__atomic_load_n(&inst->stopping, __ATOMIC_ACQUIRE)) {
        now = sn_now_ns();
        if ((now - last_timers >= 1000000ull) || ((next != 0) && (now >= next))) {
            sn_svc_lock(inst);
            next        = sn_svc_timers(inst);
            last_timers = now;
            sn_svc_conn_timers(inst, now);
            pthread_mutex_unlock(&inst->svc_lock);
        }
        timeout_ms = SN_TICK_NS / 1000000;
        if (__atomic_load_n(&inst->num_rings, __ATOMIC_RELAXED) > 0) {
            /* consume SEND rings of a target that does not poll */
            timeout_ms = 1;
            if ((next == 0) || (next > now + 1000000ull)) {
                next = now + 1000000ull;
            }
        }
        if ((next != 0) && (next - now < SN_TICK_NS)) {
            timeout_ms = (next <= now) ? 0 :
                         (int)((next - now + 999999) / 1000000);
        }
        gen = __atomic_load_n(&inst->svc_gen, __ATOMIC_ACQUIRE);
        n   = epoll_wait(inst->epoll_fd, events, 64, timeout_ms);
        if (n <= 0) {
            continue;
        }
        sn_svc_lock(inst);
        if (__atomic_load_n(&inst->svc_gen, __ATOMIC_ACQUIRE) != gen) {
            /* a poller ran meanwhile and may have closed connections
             * these events name: take fresh ones */
            n = epoll_wait(inst->epoll_fd, events, 64, 0);
        }
        if (n > 0) {
            sn_svc_dispatch(inst, events, n);
        }
        pthread_mutex_unlock(&inst->svc_lock);
    }
    return NULL;
}

/* A listening socket on addr (its port: 0 = any). */
static int sn_svc_listen_on(struct sockaddr_in *addr)
{
    int fd, one = 1;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if ((bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0) ||
        (listen(fd, 128) < 0)) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

/* The listener: any port, or the first free one of the QPN range. With
 * SO_REUSEADDR two processes may bind one port and only the first to
 * listen gets it: the other goes on with the next port. */
static int sn_svc_listen(sn_inst_t *inst, struct sockaddr_in *addr)
{
    unsigned base = inst->config.qpn_port_base, off;
    int fd;

    if (base == 0) {
        return sn_svc_listen_on(addr);
    }
    for (off = 0; (off < (1u << SOFTNIC_QPN_PORT_BITS)) &&
                  (base + off <= 65535); ++off) {
        addr->sin_port = htons(base + off);
        fd = sn_svc_listen_on(addr);
        if ((fd >= 0) || (errno != EADDRINUSE)) {
            return fd;
        }
    }
    errno = EADDRINUSE;
    return -1;
}

int sn_svc_start(sn_inst_t *inst)
{
    struct sockaddr_in addr;
    struct epoll_event ev;
    socklen_t len = sizeof(addr);
    int ret;

    inst->scratch = malloc(SN_CHUNK);
    if (inst->scratch == NULL) {
        return ENOMEM;
    }

    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr   = inst->ip;
    inst->listen_fd = sn_svc_listen(inst, &addr);
    if (inst->listen_fd < 0) {
        ret = errno;
        sn_log(inst, SOFTNIC_LOG_ERROR, "cannot listen on %s: %m",
               inet_ntoa(inst->ip));
        goto err_free;
    }
    if (getsockname(inst->listen_fd, (struct sockaddr *)&addr, &len) < 0) {
        ret = errno;
        goto err_close_listen;
    }
    inst->listen_port = ntohs(addr.sin_port);

    inst->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (inst->epoll_fd < 0) {
        ret = errno;
        goto err_close_listen;
    }
    inst->cmd_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (inst->cmd_fd < 0) {
        ret = errno;
        goto err_close_epoll;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events   = EPOLLIN;
    ev.data.ptr = &sn_listen_tag;
    if (epoll_ctl(inst->epoll_fd, EPOLL_CTL_ADD, inst->listen_fd, &ev) < 0) {
        ret = errno;
        goto err_close_cmd;
    }
    ev.data.ptr = &sn_cmd_tag;
    if (epoll_ctl(inst->epoll_fd, EPOLL_CTL_ADD, inst->cmd_fd, &ev) < 0) {
        ret = errno;
        goto err_close_cmd;
    }

    ret = pthread_create(&inst->thread, NULL, sn_svc_thread, inst);
    if (ret != 0) {
        goto err_close_cmd;
    }
    inst->thread_started = 1;
    return 0;

err_close_cmd:
    close(inst->cmd_fd);
err_close_epoll:
    close(inst->epoll_fd);
err_close_listen:
    close(inst->listen_fd);
err_free:
    free(inst->scratch);
    return ret;
}

void sn_svc_stop(sn_inst_t *inst)
{
    if (inst->thread_started) {
        __atomic_store_n(&inst->stopping, 1, __ATOMIC_RELEASE);
        sn_svc_wake(inst);
        pthread_join(inst->thread, NULL);
    }
    pthread_mutex_lock(&inst->svc_lock); /* a late poller has left */
    while (inst->conns != NULL) {
        sn_conn_close(inst, inst->conns);
    }
    pthread_mutex_unlock(&inst->svc_lock);
    close(inst->cmd_fd);
    close(inst->epoll_fd);
    close(inst->listen_fd);
    free(inst->scratch);
}
