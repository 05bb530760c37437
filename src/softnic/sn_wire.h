/*
 * softnic's wire protocol and its connections: what the service loop
 * (sn_svc.c), the streams (sn_stream.c), the channels (sn_chan.c), the
 * responder (sn_resp.c) and the requester (sn_req.c) share. Private to
 * src/softnic.
 *
 * Connection = one TCP stream (sn_stream_t: the socket, its frame parser,
 * its output, its events) from an initiator QP to its destination QP's
 * softnic instance, carrying one channel (sn_chan_t: that pair of QPs, the
 * initiator's end or the target's end, with the per-pair state: sequence,
 * NAK stop, owed ACKs, the receive being filled, a READ being answered, a
 * same-host ring). Wire version 6. Byte 0 of every frame is its type, and
 * the type fixes its header's length and handler (sn_stream_rx_header;
 * unknown: malformed). After connect, the initiator sends HELLO and the
 * target answers HELLO_ACK (sn_hello_t, 72 bytes each: the instances'
 * identities; a HELLO of another version is answered EPROTONOSUPPORT and
 * the stream closes). Then the initiator's CHAN_OPEN names the QP pair and
 * the target's CHAN_ACK accepts it (a same-host target names a SEND ring
 * in it, see sn_ring.c) or refuses it (sn_chanf_t, 32 bytes; the
 * initiator sends its CHAN_OPEN behind its HELLO, without waiting). Then
 * the initiator sends requests (sn_req_t, 56 bytes, followed by `length`
 * payload bytes for WRITE, WRITE_IMM, SEND, SEND_IMM, at most SN_FRAME_MAX
 * of them: see below) and the target
 * answers each in order with a response (sn_rsp_t, 32 bytes; READ_DATA
 * responses are followed by `length` payload bytes, at most
 * SN_FRAME_MAX, the bound of every frame's payload). Every frame after
 * the HELLO names the receiver's id of its channel (see "Channel ids"): a frame naming a channel the stream
 * does not carry, a request to the initiator's end or a response to the
 * target's is malformed. A CHAN_CLOSE ends the channel and the stream.
 * All integers are little-endian.
 *
 * Requests longer than a frame: a WRITE, WRITE_IMM, SEND or SEND_IMM frame
 * carries at most SN_FRAME_MAX payload bytes (its `length` is the whole
 * payload's); the rest follows in REQ_DATA frames (sn_req_data_t, 32
 * bytes, each followed by its `length` bytes, at most SN_FRAME_MAX, at
 * `offset` in the payload), right behind it, in order, up to the
 * payload's end. No frame is longer than SN_FRAME_MAX payload bytes, so
 * once several channels share a stream, one channel's frame waits at
 * most one frame of another's. The target keeps the request in progress
 * (its header, where its payload goes, the bytes still due) on the
 * channel; the request is answered once its last frame is in. A request
 * that is dropped or NAKed (RNR included) at its header has its REQ_DATA
 * frames drained. A REQ_DATA frame that does not continue its channel's
 * request (none in progress, another sequence, another offset, longer
 * than a frame or than what is left), or a request frame while REQ_DATA
 * frames are due, is malformed: a WARN names which, the stream closes.
 *
 * A QP's two directions travel on two connections (its own initiator
 * connection, and its peer's), so a request frame also carries `acked`:
 * the sequence up to which (exclusive) the sending QP, as a responder, has
 * answered the receiving QP's requests, and `ack_new`: how many of the
 * last of those answers are plain ACKs that went out in no frame before
 * this one (coalesced, sn_resp.c): this frame carries them. The receiver
 * holds the request (sn_resp.c, check_acked) until its own connection has
 * delivered the answers below acked - ack_new, then completes its WRITEs
 * and SENDs below `acked` as ACKed: what the peer sends after taking a
 * SEND of ours completes after that SEND, as on a NIC, where the ACK
 * travels ahead on the one link. An `acked` beyond what the receiver ever
 * sent, or a carried ACK for anything but a WRITE or SEND, is a malformed
 * frame. ACK frames are cumulative: an ACK of seq s answers every request
 * up to s not answered yet (all of them plain ACKs, as the responder sends
 * what it owes ahead of any other answer); one for requests already
 * answered (the request frame carried it first) is a duplicate, ignored.
 *
 * Requests carry a per-channel sequence number. The target executes only
 * the request with the expected sequence and silently drops (drains) any
 * other: after an RNR or "not ready" NAK the initiator rewinds and resends
 * from the NAKed request (go-back-N, as IB does), so dropping what follows a
 * NAK keeps execution in posting order.
 *
 * Every header field is validated; a malformed frame, an unexpected response
 * or a lying length closes the connection (initiator side: the peer is a
 * dead one, sn_qp_peer_lost: the oldest WR fails with IBV_WC_RETRY_EXC_ERR
 * when the QP's budget runs out, the QP goes to ERR). Payload bytes are
 * only ever written to ranges that passed the MR check, each syscall or copy
 * bracketed by sn_mr_busy_begin/end so deregistration takes effect.
 *
 * Threads: everything in these files except sn_wire_send_req (sn_req.c),
 * sn_svc_want_tx (sn_stream.c), the command posters (sn_svc.c) and
 * sn_svc_start/stop runs under inst->svc_lock, on the service thread or on
 * a thread polling a CQ (sn_svc_poll); the lock holder alone owns the
 * streams and their channels (sn_stream_t, sn_chan_t). QP state is read and written under the
 * QP's lock, taken after svc_lock (sn_resp.c lists which responder step
 * holds it).
 */
#ifndef SN_WIRE_H_
#define SN_WIRE_H_

#include "sn_int.h"

#include <netinet/in.h>
#include <stdint.h>

#define SN_HELLO_MAGIC 0x4f524348u /* "ORCH" */
#define SN_WIRE_VERSION \
    6 /* 5: type byte, channel ids, CHAN_* frames;
                              6: REQ_DATA */
#define SN_RBUF_SIZE     (64 * 1024)
#define SN_DIRECT_MIN    (16 * 1024) /* recv straight into memory */
#define SN_TICK_NS       (20ull * 1000 * 1000)
#define SN_FRAMES_PER_EV 64

/* Frame types: byte 0 of every frame */
enum {
    /* requests (sn_req_t): the opcodes SN_OP_WRITE..SN_OP_FADD below */
    SN_FRAME_REQ_DATA  = 0x08, /* a request's payload (sn_req_data_t) */
    SN_FRAME_RSP_FIRST = 0x11, /* responses (sn_rsp_t): SN_RSP_* below */
    SN_FRAME_CHAN_OPEN = 0x21, /* channel frames (sn_chanf_t) */
    SN_FRAME_CHAN_ACK,
    SN_FRAME_CHAN_CLOSE,
    SN_FRAME_HELLO = 0x48 /* 'H', byte 0 of SN_HELLO_MAGIC (sn_hello_t) */
};

/* sn_hello_t.type */
enum {
    SN_HELLO     = 1,
    SN_HELLO_ACK = 2
};

/* The first frame of a stream each way: the instance's identity (a
 * stream's, not a channel's). magic and version sit where every version
 * had them, and status where v4 had its refusal, so that a peer of any
 * version can read the refusal of its version (EPROTONOSUPPORT). */
typedef struct sn_hello {
    uint32_t magic;
    uint16_t version;
    uint16_t type;   /* SN_HELLO, SN_HELLO_ACK */
    uint32_t status; /* ACK: 0 or an errno; HELLO: 0 */
    uint32_t flags;  /* 0 */
    sn_host_id_t host;
    uint32_t pid;
    uint32_t inst_id;
    uint32_t listen_ip;   /* the sender's listener, network order */
    uint16_t listen_port; /* network order */
    uint16_t reserved;
} __attribute__((packed)) sn_hello_t;

/* Channel ids: the receiver's id of a channel, named in every frame but
 * the HELLO; (generation << 16) | index in the stream's channels. A stream
 * carries one channel (index 0, generation 1): its id is SN_CHAN_ID_ONE at
 * both ends. 0 names no channel (a CHAN_OPEN's chan). */
#define SN_CHAN_ID_ONE (1u << 16)

/* Channel frames: OPEN (initiator to target: open a channel from QP
 * src_qpn to QP dst_qpn; peer_chan: the initiator's id), ACK (status 0:
 * peer_chan is the target's id, pdn its QP's PD, and a same-host SEND
 * ring is named; ENOENT: no such RC QP), CLOSE (either side: the channel
 * named is gone; the stream closes as well, one channel per stream) */
typedef struct sn_chanf {
    uint8_t type;
    uint8_t flags; /* 0 */
    uint16_t status;
    uint32_t chan;       /* the receiver's id; 0 in OPEN */
    uint32_t peer_chan;  /* the sender's id; 0 in CLOSE and a refusal */
    uint32_t src_qpn;    /* OPEN */
    uint32_t dst_qpn;    /* OPEN */
    uint32_t pdn;        /* ACK */
    uint32_t ring_id;    /* ACK: same-host SEND ring, 0: none */
    uint32_t ring_slots; /* ACK: SN_RING_SLOTS */
} __attribute__((packed)) sn_chanf_t;

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

/* 56 bytes while `acked` and `ack_new` are carried (the merged stream's
 * step 6 drops them: 48 bytes) */
typedef struct sn_req {
    uint8_t op;
    uint8_t flags;
    uint16_t ack_new; /* of `acked`, the last ones this frame carries */
    uint32_t seq;
    uint32_t length;
    uint32_t rkey;
    uint64_t raddr;
    uint64_t compare_add;
    uint64_t swap;
    uint32_t imm;   /* as in ibv_send_wr: network order, not swapped */
    uint32_t acked; /* the peer's requests answered (see above) */
    uint32_t chan;  /* the target's channel id */
    uint32_t reserved;
} __attribute__((packed)) sn_req_t;

/* response types */
enum {
    SN_RSP_ACK = SN_FRAME_RSP_FIRST,
    SN_RSP_NAK,
    SN_RSP_READ_DATA,
    SN_RSP_ATOMIC,
    SN_RSP_LAST
};

/* NAK codes */
enum {
    SN_NAK_RNR = 1,   /* no receive posted: retry after rnr_timer */
    SN_NAK_NOT_READY, /* target QP not in RTR/RTS, or not ours */
    SN_NAK_REM_ACCESS,
    SN_NAK_REM_INV_REQ,
    SN_NAK_REM_OP,
    SN_NAK_LAST
};

typedef struct sn_rsp {
    uint8_t type;
    uint8_t code;      /* NAK code */
    uint8_t rnr_timer; /* NAK RNR: the responder's min_rnr_timer */
    uint8_t reserved;
    uint32_t seq;
    uint32_t length; /* READ_DATA payload bytes */
    uint32_t offset; /* READ_DATA offset in the READ */
    uint64_t value;  /* ATOMIC: original value */
    uint32_t chan;   /* the initiator's channel id */
    uint32_t reserved2;
} __attribute__((packed)) sn_rsp_t;

/* REQ_DATA: the next `length` bytes (at most SN_FRAME_MAX) of the payload
 * of the request seq of channel chan, from `offset` on; follows the
 * request frame (which carries the first SN_FRAME_MAX bytes of a longer
 * payload) or the REQ_DATA frame before it, nothing of that channel in
 * between (see "Requests longer than a frame" above) */
typedef struct sn_req_data {
    uint8_t type; /* SN_FRAME_REQ_DATA */
    uint8_t flags;
    uint16_t reserved;
    uint32_t seq;
    uint32_t length;
    uint32_t offset;
    uint64_t reserved2;
    uint32_t chan; /* the target's channel id */
    uint32_t reserved3;
} __attribute__((packed)) sn_req_data_t;

_Static_assert(sizeof(sn_hello_t) == 72, "HELLO keeps its size");
_Static_assert(sizeof(sn_chanf_t) == 32, "channel frame");
_Static_assert(sizeof(sn_req_t) == 56, "request header");
_Static_assert(sizeof(sn_rsp_t) == 32, "response header");
_Static_assert(sizeof(sn_req_data_t) == 32, "request data header");

/* The shortest header after the HELLO */
#define SN_FRAME_HDR_MIN sizeof(sn_rsp_t)

/* Where payload bytes go: up to SN_MAX_SGE checked local segments,
 * or nowhere (discard). Only the first num segments are read: a reset
 * (sn_sink_reset) leaves the others, whose snapshots sn_sink_from_sges
 * checks again (sn_mr_check_again) instead of reading the MR table. */
typedef struct sn_sink {
    int num;
    int cur;
    uint64_t cur_off; /* offset in segment cur */
    int failed;       /* a region went away: discard the rest */
    uint32_t qpn;     /* a responder's sink: its QP, whose ERR (or RESET)
                         stops the placing (sn_qp_table_live); 0: none */
    struct {
        uint64_t addr;
        uint64_t len;
        sn_mr_snap_t snap;
    } seg[SN_MAX_SGE];
} sn_sink_t;

/* Empty the sink: nothing placed (failed: the payload is discarded), no
 * QP; the segments stay as they were (above) */
static inline void sn_sink_reset(sn_sink_t *sink, int failed)
{
    sink->num     = 0;
    sink->cur     = 0;
    sink->cur_off = 0;
    sink->failed  = failed;
    sink->qpn     = 0;
}

enum {
    SN_ROLE_INI = 1,
    SN_ROLE_TGT
};

enum {
    SN_CS_CONNECTING = 1, /* INI: waiting for connect() */
    SN_CS_HELLO,          /* waiting for HELLO / HELLO_ACK */
    SN_CS_READY,
    SN_CS_CLOSING /* TGT: flush obuf, then close */
};

enum {
    SN_RX_HDR = 0,
    SN_RX_PAYLOAD
};

/*
 * A stream: one TCP socket, its frame parser, its output and its epoll
 * events. It carries exactly one channel (chan, from creation to close:
 * the connecting end's INI channel, the accepting end's TGT channel).
 * Owned by the svc_lock holder (the service thread or a poller): only it
 * reads or writes these fields and the inst->streams list, except that an
 * initiator QP's posting threads write to fd (under the QP lock, once the
 * QP lists the stream as READY, through qp->stream_fd) and change its
 * epoll registration (sn_svc_want_tx; stream->events stays the owner's,
 * which re-reads qp->tx_blocked under the QP lock).
 */
struct sn_stream {
    sn_stream_t *next;
    uint64_t id;
    int fd;
    int state;
    uint32_t events; /* current epoll interest */
    sn_chan_t *chan; /* its one channel, never NULL */

    uint8_t *rbuf;
    uint32_t rpos, rlen;
    /* a recv() into rbuf during this sn_stream_rx() got less than it asked
     * for: the socket was empty then, so none is tried again until the
     * next read of the stream (epoll, level-triggered, says if more
     * came): one recv() per arrival, not one more that finds nothing */
    int drained;
    /* the last payload went from the socket straight to memory (a large
     * one, most likely followed by another: a READ's next frame, the next
     * large WRITE): the next header is read alone, so that no payload
     * behind it lands in rbuf only to be copied out again; the length
     * read is that frame's header length (0: read what comes) */
    uint32_t hdr_alone;
    int rx_state;
    union {
        sn_req_t req;
        sn_rsp_t rsp;
        sn_chanf_t chanf;
        sn_req_data_t data;
    } hdr;
    uint32_t hdr_len;    /* of the frame in hdr */
    int hdr_kind;        /* its handler: SN_ROLE_TGT (a request), SN_ROLE_INI
                            (a response), 0 (a channel frame) */
    sn_chan_t *cur_chan; /* the channel the frame in hdr names */
    uint32_t pay_left;   /* of the frame's payload (cur_chan->sink) */
    int held;            /* TGT: the request in rbuf waits (sn_stream_resume) */
    /* TGT: the target QP takes no receives (sn_qp_takes_recvs), so nothing
     * that comes here completes in a CQ, and no poller waits for it: the
     * socket is in idle_epfd too, where a service thread that stands back
     * still waits (sn_int.h, "Polling"); no more once the QP takes one */
    int quiet;

    uint8_t *obuf;
    uint32_t opos, olen, ocap;

    /* INI: where to connect, and when the current attempt started */
    struct sockaddr_in remote;
    uint64_t connect_ns;

    /* the peer instance, from its HELLO (READY) */
    sn_host_id_t peer_host;
    pid_t peer_pid;
    uint32_t peer_inst_id;

    int tcp_data; /* counted in inst->num_tcp_streams */
};

/*
 * A channel: one (initiator QP, target QP) pair on a stream (stream), the
 * initiator's (INI) or the target's (TGT) end. Owned by the svc_lock
 * holder, as its stream is; it lives as long as its stream.
 */
struct sn_chan {
    sn_stream_t *stream;
    int role;
    uint32_t id;           /* ours, named by the peer's frames */
    uint32_t peer_chan;    /* the peer's id, named in our frames */
    int ready;             /* CHAN_ACK sent (TGT) or taken (INI) */
    sn_qp_t *qp;           /* INI: owner; TGT: the target QP (NULL until
                              the HELLO names it) */
    uint32_t peer_qpn;     /* TGT: the initiator QPN */
    uint32_t expected_seq; /* TGT */
    int drop;              /* TGT: request dropped or answered */
    /* TGT: a NAK that ends the initiator's WR in error (all but RNR and
     * "not ready") left: the initiator's QP is in ERR and flushes what it
     * sent behind that request, so nothing more of this channel is
     * executed (sn_resp.c, rule SN_RULE_NAK_STOPS) */
    int nak_stopped;
    /* TGT: the answers [ack_end, expected_seq) are ACKs that left in no
     * frame of this channel (coalesced, sn_resp.c); ack_owed: some may
     * be owed still (counted in inst->num_ack_owed) since ack_since_ns,
     * for ack_bytes of payload */
    uint32_t ack_end;
    int ack_owed;
    uint64_t ack_since_ns;
    uint64_t ack_bytes;
    /* TGT, built without SN_RULE_TCP_ACK_FIRST only: the ACKs the request
     * carries (up to late_ack_end) complete our WRs after the request */
    int late_ack;
    uint32_t late_ack_end;
    /* where the payload of the frame being read goes: a READ_DATA frame's
     * (INI), a request's and its REQ_DATA frames' (TGT) */
    sn_sink_t sink;
    /* TGT: the request whose REQ_DATA frames are due (msg_left > 0): its
     * header (host order, checked), the payload bytes still due and the
     * offset the next frame starts at */
    sn_req_t msg;
    uint32_t msg_left;
    uint32_t msg_off;
    /* TGT: SEND / WRITE_IMM being received */
    int have_recv;
    sn_recv_t recv;
    /* INI: READ_DATA being received for WQE at SQ counter rd_index */
    uint32_t rd_index;

    /* TGT: same-host SEND ring attached to chan->qp */
    struct sn_ring *ring;
    uint32_t ring_id;
    sn_ring_att_t *ring_att;

    /* TGT: READ being answered */
    int rd_active;
    uint32_t rd_seq;
    sn_mr_snap_t rd_snap;
    uint64_t rd_addr;
    uint32_t rd_total, rd_off; /* rd_off: payload bytes sent */
    uint32_t rd_frame_left;    /* of the current frame */
};

/* Does the pass over a stream's input (sn_stream_rx_pass) end at its next
 * frame: nothing buffered, and a recv() of this pass found the socket
 * empty? */
static inline int sn_stream_spent(const sn_stream_t *stream)
{
    return (stream->rpos == stream->rlen) && stream->drained;
}

static inline int sn_req_has_payload(uint8_t op)
{
    return (op == SN_OP_WRITE) || (op == SN_OP_WRITE_IMM) ||
           (op == SN_OP_SEND) || (op == SN_OP_SEND_IMM);
}

/* Streams (sn_stream.c) */
void sn_stream_set_events(sn_inst_t *inst, sn_stream_t *stream,
                          uint32_t events);
/* TGT: the stream becomes a quiet one, or stops being one (see `quiet`) */
void sn_stream_set_quiet(sn_inst_t *inst, sn_stream_t *stream, int quiet);
int sn_sink_from_sges(sn_inst_t *inst, sn_sink_t *sink,
                      const struct ibv_sge *sge, int num_sge, uint32_t pdn,
                      uint64_t offset, uint64_t len);
ssize_t sn_stream_send(int fd, const void *hdr, size_t hdr_len,
                       const void *payload, size_t payload_len);
int sn_stream_out(sn_inst_t *inst, sn_stream_t *stream, const void *hdr,
                  size_t hdr_len, const void *payload, size_t payload_len);
/* The same with send flags: MSG_MORE writes the bytes into the socket but
 * holds them back (no segment) until the next send without it, a push
 * (sn_stream_push), the close of the socket (also by the process's end),
 * or the kernel's ~200 ms cork limit */
ssize_t sn_stream_sendf(int fd, const void *hdr, size_t hdr_len,
                        const void *payload, size_t payload_len, int flags);
int sn_stream_outf(sn_inst_t *inst, sn_stream_t *stream, const void *hdr,
                   size_t hdr_len, const void *payload, size_t payload_len,
                   int flags);
void sn_stream_push(sn_stream_t *stream);
/* Send what MSG_MORE held back in socket fd */
void sn_sock_push(int fd);
int sn_stream_flush(sn_stream_t *stream);
/* A stream connecting to remote, its one channel INI, its HELLO and then
 * the len bytes of first (the channel's CHAN_OPEN) waiting in its output
 * until connect() completes; NULL on failure */
sn_stream_t *sn_stream_open(sn_inst_t *inst, const struct sockaddr_in *remote,
                            const void *first, size_t len);
/* Close the stream and its channel (sn_chan_close) */
void sn_stream_close(sn_inst_t *inst, sn_stream_t *stream);
/* The stream carries data on TCP: pollers may serve it */
void sn_stream_count_tcp(sn_inst_t *inst, sn_stream_t *stream);
void sn_stream_accept(sn_inst_t *inst);
void sn_stream_timers(sn_inst_t *inst, uint64_t now);
void sn_stream_event(sn_inst_t *inst, sn_stream_t *stream, uint32_t events);
/* Read the streams whose request was held again (after a batch of
 * events, and at each timer pass) */
void sn_stream_resume(sn_inst_t *inst);
/* Send the ACKs the target channels owe: all (force), or those due (busy:
 * at the end of a poller's step that moved bytes) */
void sn_stream_acks(sn_inst_t *inst, int force, int busy);
/* TGT, the request's header taken: when its whole payload, at most max
 * bytes, is in rbuf already, it goes to the sink now (1), in the
 * responder's run of the header; else (0) it is read as it comes */
int sn_stream_take_payload(sn_inst_t *inst, sn_stream_t *stream, uint32_t max);

/* Channels (sn_chan.c) */
/* A channel of role for stream, no QP yet; NULL when out of memory */
sn_chan_t *sn_chan_new(sn_stream_t *stream, int role);
/* The channel ends with its stream: a TGT channel gives back the receive
 * it took and detaches its ring, and sends the ACKs it owes; freed */
void sn_chan_close(sn_inst_t *inst, sn_chan_t *chan);
void sn_chan_connect_qp(sn_inst_t *inst, sn_qp_t *qp);
/* The channel frame (CHAN_OPEN, CHAN_ACK, CHAN_CLOSE) in the stream's hdr,
 * for chan (sn_stream.c checked that it names it): 0 taken, -1 fail the
 * stream */
int sn_chan_on_frame(sn_inst_t *inst, sn_chan_t *chan);
/* INI: the stream died, was refused or misbehaved: the QP's peer is silent
 * from now on (sn_qp_peer_lost); the stream is closed */
void sn_chan_ini_fail(sn_inst_t *inst, sn_chan_t *chan);
/* INI, ready: the QP's requests go on; EPOLLOUT off once they all went */
void sn_chan_ini_writable(sn_inst_t *inst, sn_chan_t *chan);

/* Responder (sn_resp.c) */
/* -1: close, 0: taken, 1: held (the header stays to be read again), 2:
 * taken with its payload (sn_stream_take_payload) */
int sn_resp_on_header(sn_inst_t *inst, sn_chan_t *chan);
/* A REQ_DATA header: 0 taken (its payload is read next), -1 it does not
 * continue chan's request (a WARN names why): close */
int sn_resp_on_data(sn_inst_t *inst, sn_chan_t *chan);
/* The payload of the frame in the stream's hdr is in: the request's
 * (a request frame's, or its last REQ_DATA frame's) steps go on; 0 or
 * -1 (close) */
int sn_resp_on_payload(sn_inst_t *inst, sn_chan_t *chan);
int sn_resp_read_pump(sn_inst_t *inst, sn_chan_t *chan);
/* The ACKs chan owes as one cumulative ACK frame, unless a request frame
 * of its QP carried them; 0 or -1 (dead) */
int sn_resp_ack_flush(sn_inst_t *inst, sn_chan_t *chan);
/* The receives of the pass over a channel's requests complete, after
 * their one ACK is in the socket (inst->ack_batch; at the end of each
 * pass, sn_stream_rx); 0 or -1 (the stream is dead) */
int sn_resp_batch_end(sn_inst_t *inst);
/* Are chan's owed ACKs due (sn_int.h, "ACK coalescing")? busy: for a
 * poller's step that moved bytes */
int sn_resp_ack_due(const sn_chan_t *chan, uint64_t now, int busy);
void sn_resp_unpop_recv(sn_qp_t *qp, const sn_recv_t *recv);

/* Requester (sn_req.c) */
int sn_req_on_rsp(sn_inst_t *inst, sn_chan_t *chan);
int sn_req_on_payload(sn_chan_t *chan);
/* QP lock held: the peer answered every request below end with an ACK;
 * -1 when that cannot be (sn_req.c) */
int sn_req_acked(sn_qp_t *qp, uint32_t end);

#endif /* SN_WIRE_H_ */
