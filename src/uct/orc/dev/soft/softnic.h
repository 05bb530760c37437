/*
 * softnic: a userspace RDMA NIC with verbs (RC) semantics. Internal types and
 * contracts of the "soft" backend of the orc device layer (orc_dev.h).
 *
 * Model
 * -----
 * Every orc_dev_open() of a soft device creates one softnic *instance* in the
 * calling process: a service thread, a TCP listener bound to the interface's
 * IPv4 address (ephemeral port) and a shared-memory table
 * (/dev/shm/orc_soft.<pidns>.<pid>.<instance>, unlinked on close; tables of
 * dead processes are reaped at the next open) holding the MRs and the QPs'
 * access flags, readable by same-host peers.
 *
 * Every connected RC QP owns one outgoing TCP connection ("initiator
 * connection") to the softnic instance of its destination QP, opened by the
 * service thread when the QP reaches RTR (RTR never blocks; WRs posted before
 * the connection is up wait in the send queue). Requests of the QP travel on
 * it in posting order, the target's service thread executes them in order
 * and answers on the same connection. The peer's QP, in turn, owns its own
 * connection to us ("target connection" on our side). A connection therefore
 * serves exactly one (initiator QP, target QP) pair. TCP_NODELAY is set. A
 * connect() still pending after 200 ms is retried on a fresh socket.
 *
 * Same host (equal boot id and pid, network and mount namespaces, exchanged
 * in the connection handshake) and nothing outstanding on the QP: RDMA WRITE
 * and READ are executed in the posting thread (or, for WRs that had to
 * queue, by whichever thread drains the queue) by one process_vm_writev/readv
 * call, after checking the target QP's access flags and the target's MR
 * table in shared memory. WRITE_WITH_IMM and anything posted behind an
 * outstanding TCP operation go through the connection, so an operation is
 * never overtaken by a later one of the same QP. SEND/SEND_WITH_IMM of up to
 * ORC_SOFT_RING_DATA bytes and 64-bit atomics go through a shared-memory
 * ring per connection (soft_ring.c), consumed in order at the target: by
 * its orc_cq_poll() (SENDs are placed, atomics executed with __atomic
 * builtins on the target memory, after the same QP/MR/alignment checks as
 * on TCP) or, when the target application does not poll, by its service
 * thread every millisecond; the sender's orc_cq_poll() reaps the
 * completions (atomic results are copied to the local buffer then).
 * Larger SENDs and WRITE_WITH_IMM use the connection; across hosts atomics
 * are executed by the target's service thread.
 * If CMA fails with EPERM the QP falls back to TCP; ESRCH (peer gone)
 * completes the WR with IBV_WC_RETRY_EXC_ERR.
 *
 * RC semantics kept: completions in posting order; a failed WR completes even
 * when unsignaled and moves the QP to ERR, every later WR is flushed
 * (IBV_WC_WR_FLUSH_ERR), posted receives of the QP's own RQ too (SRQ
 * receives stay posted); IBV_SEND_FENCE holds a WR until earlier READs and
 * atomics completed; RNR NAK -> retry after the responder's min_rnr_timer,
 * IBV_WC_RNR_RETRY_EXC_ERR after rnr_retry retries (7 = forever); a target
 * QP not in RTR/RTS (or connected elsewhere) NAKs "not ready", retried
 * retry_cnt times. Access violations at the target NAK the WR
 * (REM_ACCESS_ERR, REM_INV_REQ_ERR for misaligned atomics or a SEND longer
 * than the receive, REM_OP_ERR for a receive with a bad lkey); the target QP
 * stays usable except for receive errors, which move it to ERR as in IB.
 *
 * Dead peer: a closed or reset connection fails the oldest outstanding WR
 * with IBV_WC_RETRY_EXC_ERR at once (the rest flush, as on hardware). A
 * silent peer (host unreachable): once a WR waits for an answer (or for the
 * connection) longer than T * (retry_cnt + 1), T = 4.096 us * 2^timeout but
 * at least 20 ms (software peers get descheduled), it fails the same way.
 * While the QP's connection is still being set up (no such step on
 * hardware) the budget is at least 5 s, and the QP's own budget starts once
 * the connection is up. timeout = 0 means infinite, as in the IB spec.
 *
 * Wire protocol: see soft_wire.c. Every header field is validated; a bad
 * frame closes the connection (initiator side: the QP goes to ERR with
 * IBV_WC_RETRY_EXC_ERR / flush, like a dead peer; target side: the peer sees
 * a dead connection).
 *
 * Memory-region deregistration guarantee: once orc_mr_dereg() returned,
 * nothing touches the region any more, as with an HCA. Same-host initiators
 * count themselves in the entry's `users` before checking it and leave after
 * their CMA copy; this process's service thread announces the region it is
 * about to touch (orc_soft_inst_t.busy_mr). Dereg invalidates the entry and
 * then waits for both (one syscall at most; a user count left behind by a
 * process killed inside its copy is given up on after 2 s, with a log line).
 * A same-host READ that raced with dereg completes with REM_ACCESS_ERR; on
 * TCP a READ whose region goes away between two 256 KiB chunks is NAKed
 * (REM_ACCESS_ERR), within a chunk the connection is closed (RETRY_EXC_ERR).
 *
 * Polling: orc_cq_poll() on an empty CQ drives the same-host rings of the
 * CQ's QPs, and every 2048 empty polls in a row it calls sched_yield(), so a
 * spinning application does not starve the service threads it waits for.
 * While the instance has connections that carry data on TCP (other hosts,
 * or ORC_SOFT_NO_CMA), an empty poll also runs one step of the service loop
 * itself (orc_soft_svc_poll: the ready sockets, without blocking): a thread
 * that spins on its CQ then moves the bytes itself, as a kernel-bypass NIC
 * driver would, instead of spinning beside a service thread that waits for
 * the kernel to wake it (2 cores: +25 % cross-host put_bw, half the 8-byte
 * latency). The service thread goes on serving the sockets too (whoever
 * gets to a ready socket first handles it) and alone runs the timers.
 *
 * Environment (read once when a device is opened):
 *   ORC_SOFT_LOG=1       log connection and QP errors to stderr
 *   ORC_SOFT_NO_CMA=1    never use the same-host CMA path nor SEND rings
 *                        (everything on TCP)
 *   ORC_SOFT_NO_RING=1   same-host SENDs on TCP instead of shared-memory rings
 *
 * Address: orc_dev_addr_pack() writes orc_soft_addr_t (below). Unpacking fills
 * ah_attr with is_global=1, grh.dgid = the peer GID (::ffff:a.b.c.d),
 * dlid = the peer listener's TCP port (host order), port_num = 1. A verbs
 * address gives EHOSTUNREACH, so does a loopback address of another host or
 * network namespace, or a non-loopback address unpacked on soft_lo.
 */
#ifndef ORC_SOFTNIC_H_
#define ORC_SOFTNIC_H_

#include "orc_dev.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#define ORC_SOFT_PREFIX          "soft_"
#define ORC_SOFT_ADDR_MAGIC      0x534f4643u /* "SOFC" */
#define ORC_SOFT_MAX_MR          16384       /* entries in the MR table */
#define ORC_SOFT_QP_INDEX_BITS   12
#define ORC_SOFT_MAX_QP          (1 << ORC_SOFT_QP_INDEX_BITS)
#define ORC_SOFT_MAX_QP_WR       4096
#define ORC_SOFT_MAX_SGE         8
#define ORC_SOFT_MAX_INLINE      256
#define ORC_SOFT_MAX_CQE         (1 << 20)
#define ORC_SOFT_MAX_MSG         (1u << 30)
#define ORC_SOFT_MAX_RD_ATOMIC   16
#define ORC_SOFT_CHUNK           (256 * 1024) /* READ response chunk */
#define ORC_SOFT_KEY_INDEX_BITS  16

/* Host identity: equal on two instances <=> CMA and /dev/shm are usable. */
typedef struct orc_soft_host_id {
    uint8_t  boot_id[16];
    uint64_t pid_ns;  /* inode of /proc/self/ns/pid */
    uint64_t net_ns;  /* inode of /proc/self/ns/net */
    uint64_t mnt_ns;  /* inode of /proc/self/ns/mnt */
} orc_soft_host_id_t;

/* Packed device address (little-endian fields). */
typedef struct orc_soft_addr {
    uint8_t            backend;   /* ORC_DEV_BACKEND_SOFT */
    uint8_t            version;   /* 1 */
    uint16_t           tcp_port;
    uint32_t           magic;     /* ORC_SOFT_ADDR_MAGIC */
    uint8_t            gid[16];
    orc_soft_host_id_t host;
} __attribute__((packed)) orc_soft_addr_t;

/*
 * One entry of the MR table, in shared memory. Seqlock: the owner process
 * (holding orc_soft_inst_t.mr_lock) makes seq odd, writes the fields, makes
 * seq even (release). Readers (any process) load seq (acquire), the fields,
 * then seq again and retry if it changed or was odd. key == 0: free entry.
 * All field accesses use __atomic builtins (relaxed) because other processes
 * read them concurrently.
 */
typedef struct orc_soft_mr_entry {
    uint32_t seq;
    uint32_t key;     /* lkey == rkey: (generation << 16) | index */
    uint64_t addr;
    uint64_t length;
    uint32_t access;
    uint32_t pdn;
    uint32_t users;   /* same-host CMA copies in flight (any process):
                         incremented (seq_cst) before the entry is checked,
                         decremented after the copy; dereg waits for 0 */
    uint32_t reserved;
} orc_soft_mr_entry_t;

/*
 * After the MR entries, the shared memory holds one 64-bit word per QP slot:
 * (qpn << 32) | qp_access_flags, 0 for a free slot. Written with one atomic
 * store by the owner (under the QP lock), read with one atomic load by
 * same-host initiators, so that the target QP's access flags are enforced on
 * the CMA path exactly as on the TCP path.
 */

/* A consistent copy of an entry. */
typedef struct orc_soft_mr_snap {
    uint32_t seq;
    uint32_t key;
    uint64_t addr;
    uint64_t length;
    uint32_t access;
    uint32_t pdn;
} orc_soft_mr_snap_t;

typedef struct orc_soft_inst orc_soft_inst_t;
typedef struct orc_soft_conn orc_soft_conn_t;
typedef struct orc_soft_qp orc_soft_qp_t;

/*
 * A soft device handle = one softnic instance.
 * Immutable after open: ifname, ip, gid, host, pid, id, listen_port, mrs.
 * lock protects: qp list, pdn/qpn counters, use counts. mr_lock serialises
 * MR table writers (reg/dereg) of this process. busy_mr is written only by
 * the service thread (seq_cst), read by dereg (see header comment).
 */
struct orc_soft_inst {
    orc_dev_t            super;
    char                 ifname[32];
    struct in_addr       ip;
    union ibv_gid        gid;
    orc_soft_host_id_t   host;
    pid_t                pid;
    uint32_t             id;           /* per-process instance number */
    uint16_t             listen_port;
    int                  listen_fd;
    int                  epoll_fd;
    int                  cmd_fd;       /* eventfd waking the service thread */
    pthread_t            thread;
    int                  thread_started;
    int                  stopping;     /* service thread: exit */
    /* The service loop's body (socket events, commands, timers) runs under
     * svc_lock, on the service thread or on a polling thread
     * (orc_soft_svc_poll, trylock only); "service thread only" below means
     * "svc_lock holder". Taken before any other lock; a thread holding
     * another softnic lock never waits for it. svc_gen (written under
     * svc_lock, read atomically) counts pollers' steps that handled events,
     * so that the service thread knows when the events it waited for may
     * be stale.
     * svc_want (atomic): the service thread waits for svc_lock, pollers
     * keep off. num_tcp_conns (atomic, written under svc_lock): ready
     * connections carrying data on TCP; without any, pollers do not step. */
    pthread_mutex_t      svc_lock;
    uint64_t             svc_gen;
    int                  svc_want;
    int                  num_tcp_conns;
    int                  no_cma;
    int                  log;

    pthread_mutex_t      lock;
    orc_soft_qp_t       *qps;          /* all QPs of the instance */
    orc_soft_qp_t      **qp_slots;     /* QPN -> QP (index bits) */
    uint16_t            *qp_gen;       /* per slot generation */
    uint32_t             next_pdn;
    int                  num_qps;
    /* commands for the service thread: cmd_lock (a leaf lock, may be taken
     * under any other lock) protects the queue and cmd_done; cmd_cond is
     * signalled when cmd_done advances */
    pthread_mutex_t      cmd_lock;
    struct orc_soft_cmd *cmd_head, *cmd_tail;
    pthread_cond_t       cmd_cond;
    uint64_t             cmd_posted;
    uint64_t             cmd_done;
    uint64_t             next_conn_id; /* service thread only */

    /* MR table */
    pthread_mutex_t      mr_lock;
    char                 shm_name[64];
    orc_soft_mr_entry_t *mrs;          /* shared memory, ORC_SOFT_MAX_MR
                                          entries, then the QP table */
    uint16_t            *mr_gen;       /* per entry generation, private */
    int                  num_rings;    /* attached rings (both roles),
                                          atomic */
    int                  no_ring;
    int                  busy_mr;      /* entry index the svc_lock holder
                                          is touching, or -1 */

    orc_soft_conn_t     *conns;        /* service thread only */
    uint8_t             *scratch;      /* service thread only, CHUNK bytes */
};

typedef struct orc_soft_pd {
    orc_pd_t super;
    uint32_t pdn;
} orc_soft_pd_t;

typedef struct orc_soft_mr {
    orc_mr_t super;
    int      index;
} orc_soft_mr_t;

/*
 * Completion channel. The pipe carries one orc_soft_cq_t pointer per event.
 * num_cqs under the instance lock.
 */
typedef struct orc_soft_channel {
    orc_comp_channel_t super;
    int                wfd;
    int                num_cqs;
} orc_soft_channel_t;

/*
 * CQ: a ring of ibv_wc. lock protects ring, head, count, armed, overrun.
 * Producers: posting threads and the service thread; consumer: cq_poll.
 * count and overrun are stored atomically (under the lock) so that cq_poll
 * may peek at them without the lock and return 0 for an empty CQ.
 * Lock order: QP lock -> SRQ lock -> CQ lock.
 */
typedef struct orc_soft_cq {
    orc_cq_t        super;
    pthread_mutex_t lock;
    struct ibv_wc  *ring;
    int             size;      /* ring capacity */
    int             head;
    int             count;
    int             armed;     /* 0, 1 = any, 2 = solicited only */
    int             overrun;
    unsigned        events;    /* delivered events, under lock */
    unsigned        acked;
    int             num_qps;   /* QPs using the CQ, under instance lock */
    unsigned        empty_polls; /* atomic, only a yield pacing counter */
    /* QPs using the CQ (send or recv), for poll-driven ring progress.
     * qps_lock protects qps/nqps; cq_poll holds it while it trylocks QPs.
     * Lock order: qps_lock -> QP lock -> SRQ lock -> CQ lock. */
    pthread_mutex_t qps_lock;
    orc_soft_qp_t **qps;
    int             nqps;
} orc_soft_cq_t;

/* A posted receive (RQ or SRQ). */
typedef struct orc_soft_recv {
    uint64_t      wr_id;
    int           num_sge;
    struct ibv_sge sge[ORC_SOFT_MAX_SGE];
} orc_soft_recv_t;

/* Bounded FIFO of receives. */
typedef struct orc_soft_rq {
    orc_soft_recv_t *ring;
    uint32_t         size;
    uint32_t         head;
    uint32_t         count;
} orc_soft_rq_t;

/* SRQ: lock protects rq and limit. */
typedef struct orc_soft_srq {
    orc_srq_t       super;
    pthread_mutex_t lock;
    orc_soft_rq_t   rq;
    uint32_t        max_sge;
    int             num_qps;  /* under instance lock */
} orc_soft_srq_t;

typedef enum orc_soft_wqe_state {
    ORC_SOFT_WQE_QUEUED = 0, /* not transmitted yet */
    ORC_SOFT_WQE_SENT,       /* transmitted, waiting for the answer */
    ORC_SOFT_WQE_DONE,       /* status final, waiting to complete in order */
    ORC_SOFT_WQE_RING        /* SEND in the same-host ring (seq = slot) */
} orc_soft_wqe_state_t;

/* A send WQE: a private copy of the ibv_send_wr. */
typedef struct orc_soft_wqe {
    uint64_t             wr_id;
    uint32_t             seq;        /* request sequence on the wire */
    uint8_t              opcode;     /* enum ibv_wr_opcode */
    uint8_t              state;
    uint8_t              status;     /* enum ibv_wc_status when DONE */
    uint8_t              signaled;
    uint8_t              fence;
    uint8_t              solicited;
    uint8_t              num_sge;
    uint8_t              is_inline;
    uint32_t             length;     /* total bytes */
    uint32_t             imm;        /* network order */
    uint32_t             rkey;
    uint64_t             raddr;
    uint64_t             compare_add;
    uint64_t             swap;
    uint32_t             done_bytes; /* READ: bytes received so far */
    uint8_t              has_seq;    /* seq assigned (transmitted once) */
    struct ibv_sge       sge[ORC_SOFT_MAX_SGE];
    uint8_t              inline_data[ORC_SOFT_MAX_INLINE];
} orc_soft_wqe_t;

/*
 * RC QP.
 * lock protects every field below it (state, attributes, queues, tx and
 * retry state, connection fields). It is taken by posting threads,
 * modify/query, and the service thread (responses, connection setup,
 * timers, target-side execution). Lock order: instance lock -> QP lock ->
 * SRQ lock -> CQ lock. A thread holding a QP lock never waits for the
 * service thread.
 */
struct orc_soft_qp {
    orc_qp_t            super;
    orc_soft_qp_t      *next;          /* instance list, instance lock */
    pthread_mutex_t     lock;
    enum ibv_qp_state   state;
    struct ibv_qp_attr  attr;          /* current attributes */
    orc_qp_init_attr_t  init_attr;     /* with the actual caps */
    uint32_t            pdn;
    orc_soft_cq_t      *send_cq;
    orc_soft_cq_t      *recv_cq;
    orc_soft_srq_t     *srq;
    orc_soft_rq_t       rq;            /* own receive queue if srq == NULL */

    /* Send queue: WQEs [sq_head, sq_tail) in posting order (free-running
     * counters, index % sq_size). [sq_head, sq_tx) are transmitted (SENT) or
     * DONE, [sq_tx, sq_tail) are QUEUED or failed locally (DONE). */
    orc_soft_wqe_t     *sq;
    uint32_t            sq_size;
    uint32_t            sq_head, sq_tx, sq_tail;
    uint32_t            tx_seq;        /* next wire sequence to assign */
    uint32_t            tx_off;        /* bytes of sq[sq_tx]'s frame sent */
    int                 tx_blocked;    /* EPOLLOUT requested */
    int                 rd_atomic_out; /* READ/atomics SENT, not DONE */
    int                 sent_out;      /* WQEs SENT, not DONE */

    /* retry state (RNR and not-ready NAKs) and the transport timer */
    int                 rewind_pending; /* go back to rewind_to at the next
                                           frame boundary */
    uint32_t            rewind_to;      /* SQ counter */
    uint64_t            hold_until_ns;  /* no new frame before (0: none) */
    int                 rnr_count;
    int                 retry_count;
    uint64_t            last_progress_ns;

    /* initiator connection; conn_fd valid only when conn_state == READY */
    int                 conn_state;    /* ORC_SOFT_CONN_* */
    int                 conn_fd;
    uint64_t            conn_id;       /* service thread's conn, 0: none */
    orc_soft_conn_t    *conn;          /* valid while conn_id != 0 */
    int                 same_host;     /* peer reachable by CMA */
    pid_t               peer_pid;
    uint32_t            peer_pdn;
    orc_soft_mr_entry_t *peer_mrs;     /* peer's table (shared map) */

    /* same-host SEND ring, initiator side (see soft_ring.c) */
    struct orc_soft_ring *ring;        /* mapped ring, or NULL */
    uint64_t            ring_prod;     /* slots produced */
    uint64_t            ring_reaped;   /* slots whose WQE completed */
    int                 ring_out;      /* WQEs in state RING */
    int                 ring_atomic_out; /* of which atomics (for FENCE) */
    /* target side: rings of initiators sending to this QP */
    struct orc_soft_ring_att *rings;
};

enum {
    ORC_SOFT_CONN_NONE = 0,
    ORC_SOFT_CONN_CONNECTING,
    ORC_SOFT_CONN_READY,
    ORC_SOFT_CONN_FAILED
};

/* The ops (soft_ops.c puts them in orc_dev_soft_ops) */
int orc_soft_dev_list(const orc_dev_config_t *config, orc_dev_info_t **list_p,
                      int *count_p);
orc_dev_t *orc_soft_dev_open(const orc_dev_config_t *config,
                             const char *name);
int orc_soft_dev_close(orc_dev_t *dev);
int orc_soft_dev_query(orc_dev_t *dev, struct ibv_device_attr *attr);
int orc_soft_dev_query_port(orc_dev_t *dev, uint8_t port_num,
                            struct ibv_port_attr *attr);
int orc_soft_dev_query_gid(orc_dev_t *dev, uint8_t port_num, int index,
                           union ibv_gid *gid);
size_t orc_soft_dev_addr_len(orc_dev_t *dev, uint8_t port_num);
int orc_soft_dev_addr_pack(orc_dev_t *dev, uint8_t port_num, void *buf,
                           size_t len);
int orc_soft_dev_addr_unpack(orc_dev_t *dev, uint8_t port_num,
                             const void *buf, size_t len,
                             struct ibv_ah_attr *ah_attr);
orc_pd_t *orc_soft_pd_alloc(orc_dev_t *dev);
int orc_soft_pd_dealloc(orc_pd_t *pd);
orc_mr_t *orc_soft_mr_reg(orc_pd_t *pd, void *addr, size_t length,
                          int access);
int orc_soft_mr_dereg(orc_mr_t *mr);
orc_comp_channel_t *orc_soft_channel_create(orc_dev_t *dev);
int orc_soft_channel_destroy(orc_comp_channel_t *channel);
orc_cq_t *orc_soft_cq_create(orc_dev_t *dev, int cqe, void *cq_context,
                             orc_comp_channel_t *channel);
int orc_soft_cq_destroy(orc_cq_t *cq);
int orc_soft_cq_poll(orc_cq_t *cq, int num_entries, struct ibv_wc *wc);
int orc_soft_cq_req_notify(orc_cq_t *cq, int solicited_only);
int orc_soft_cq_get_event(orc_comp_channel_t *channel, orc_cq_t **cq_p,
                          void **cq_context_p);
void orc_soft_cq_ack_events(orc_cq_t *cq, unsigned int nevents);
orc_srq_t *orc_soft_srq_create(orc_pd_t *pd, struct ibv_srq_init_attr *attr);
int orc_soft_srq_destroy(orc_srq_t *srq);
int orc_soft_post_srq_recv(orc_srq_t *srq, struct ibv_recv_wr *wr,
                           struct ibv_recv_wr **bad_wr);
orc_qp_t *orc_soft_qp_create(orc_pd_t *pd, orc_qp_init_attr_t *attr);
int orc_soft_qp_modify(orc_qp_t *qp, struct ibv_qp_attr *attr, int attr_mask);
int orc_soft_qp_query(orc_qp_t *qp, struct ibv_qp_attr *attr, int attr_mask,
                      orc_qp_init_attr_t *init_attr);
int orc_soft_qp_destroy(orc_qp_t *qp);
int orc_soft_post_send(orc_qp_t *qp, struct ibv_send_wr *wr,
                       struct ibv_send_wr **bad_wr);
int orc_soft_post_recv(orc_qp_t *qp, struct ibv_recv_wr *wr,
                       struct ibv_recv_wr **bad_wr);

/* Instance helpers (soft_dev.c) */
uint64_t orc_soft_now_ns(void);
/* Never earlier than orc_soft_now_ns() at the time of the call and at most
 * one coarse clock tick (~1-4 ms) later, at a sixth of the cost: for the
 * per-operation "last progress" stamps, which only start a timeout budget
 * (so a budget may end up to one tick late, never early). */
uint64_t orc_soft_stamp_ns(void);
void orc_soft_log(orc_soft_inst_t *inst, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* MR table (soft_mr.c) */
int orc_soft_mr_table_init(orc_soft_inst_t *inst);
void orc_soft_mr_table_cleanup(orc_soft_inst_t *inst);
int orc_soft_mr_read(const orc_soft_mr_entry_t *table, uint32_t key,
                     orc_soft_mr_snap_t *snap);
int orc_soft_mr_still_valid(const orc_soft_mr_entry_t *table,
                            const orc_soft_mr_snap_t *snap);
/* 0 or an ibv_wc_status: check [addr, addr+len) against key in table. */
int orc_soft_mr_check(const orc_soft_mr_entry_t *table, uint32_t key,
                      uint32_t pdn, uint64_t addr, uint64_t len, int access,
                      orc_soft_mr_snap_t *snap);
/* Service thread: announce/stop touching a local MR; returns 0 if the entry
 * is still the one in snap (then the region may be touched until end). */
int orc_soft_mr_busy_begin(orc_soft_inst_t *inst,
                           const orc_soft_mr_snap_t *snap);
void orc_soft_mr_busy_end(orc_soft_inst_t *inst);
void orc_soft_qp_table_set(orc_soft_inst_t *inst, uint32_t qpn,
                           uint32_t access);
/* Does QP qpn of the table's owner exist and grant access? */
int orc_soft_qp_table_allows(const orc_soft_mr_entry_t *table, uint32_t qpn,
                             int access);
orc_soft_mr_entry_t *orc_soft_mr_table_map(uint64_t pid_ns, pid_t pid,
                                           uint32_t id);
void orc_soft_mr_table_unmap(const orc_soft_mr_entry_t *table);
/* same-host initiator: enter / leave an entry of a peer's table around a
 * check + CMA copy; enter returns the entry (NULL for an impossible key) */
orc_soft_mr_entry_t *orc_soft_mr_enter(orc_soft_mr_entry_t *table,
                                       uint32_t key);
void orc_soft_mr_leave(orc_soft_mr_entry_t *entry);

/* CQ (soft_cq.c) */
/* register / unregister a QP using the CQ (no QP lock held) */
int orc_soft_cq_add_qp(orc_soft_cq_t *cq, orc_soft_qp_t *qp);
void orc_soft_cq_del_qp(orc_soft_cq_t *cq, orc_soft_qp_t *qp);
void orc_soft_cq_push(orc_soft_cq_t *cq, const struct ibv_wc *wc,
                      int solicited);

/* QP (soft_qp.c); "QP lock held" where noted */
orc_soft_qp_t *orc_soft_qp_find(orc_soft_inst_t *inst, uint32_t qpn);
/* QP lock held: move to ERR, flush both queues, drop the connection */
void orc_soft_qp_to_error(orc_soft_qp_t *qp);
/* QP lock held: transmit what may be transmitted */
void orc_soft_qp_tx(orc_soft_qp_t *qp);
/* QP lock held: emit the completions of DONE WQEs at the head, in order */
void orc_soft_qp_complete(orc_soft_qp_t *qp);
/* QP lock held: the oldest unfinished WQE fails with status; the QP goes to
 * ERR when it completes */
void orc_soft_qp_fail_oldest(orc_soft_qp_t *qp, enum ibv_wc_status status);
/* QP lock held: lock the receive queue the QP consumes from and return it
 * (an SRQ's own lock; a plain RQ is under the QP lock already). QPs sharing
 * an SRQ are drained by different threads, so checking for a receive,
 * claiming the message it is for and popping it happen under one lock. */
orc_soft_rq_t *orc_soft_qp_recv_lock(orc_soft_qp_t *qp);
void orc_soft_qp_recv_unlock(orc_soft_qp_t *qp);
/* QP lock held: write an atomic's original value into the WR's 8-byte local
 * buffer. IBV_WC_LOC_PROT_ERR when its MR no longer allows that. in_svc: on
 * the service thread, which announces the region it touches (busy_mr) so
 * that a deregistration waits for it. */
enum ibv_wc_status orc_soft_qp_put_atomic_result(orc_soft_qp_t *qp,
                                                 const orc_soft_wqe_t *wqe,
                                                 uint64_t value, int in_svc);
/* Under orc_soft_qp_recv_lock(): take the next receive; -1 when empty */
int orc_soft_rq_pop(orc_soft_rq_t *rq, orc_soft_recv_t *recv);
/* QP lock held: take the next receive of the QP's RQ or SRQ */
int orc_soft_qp_pop_recv(orc_soft_qp_t *qp, orc_soft_recv_t *recv);
/* per-attempt transport timeout, 0 = infinite */
uint64_t orc_soft_qp_timeout_ns(const orc_soft_qp_t *qp);
uint64_t orc_soft_rnr_timer_ns(uint8_t timer);
/* QP lock held: service-thread timer work; returns the next deadline (ns,
 * 0 = none) */
uint64_t orc_soft_qp_timers(orc_soft_qp_t *qp, uint64_t now);

/* Same-host SEND rings (soft_ring.c) */
#define ORC_SOFT_RING_SLOTS 32
#define ORC_SOFT_RING_DATA  (8192 - 64)

typedef struct orc_soft_ring_att {
    struct orc_soft_ring_att *next;
    struct orc_soft_ring     *ring;
    uint32_t                  src_qpn;
} orc_soft_ring_att_t;

/* Target side (service thread): create a ring for a same-host initiator;
 * returns the mapping and its id, or NULL. */
struct orc_soft_ring *orc_soft_ring_create(orc_soft_inst_t *inst,
                                           uint32_t *id_p);
void orc_soft_ring_destroy(orc_soft_inst_t *inst, struct orc_soft_ring *ring,
                           uint32_t id);
/* Initiator side: map the target's ring (and unlink its name). */
struct orc_soft_ring *orc_soft_ring_map(uint64_t pid_ns, pid_t pid,
                                        uint32_t inst_id, uint32_t ring_id);
void orc_soft_ring_unmap(struct orc_soft_ring *ring);
void orc_soft_ring_set_rnr_timer(struct orc_soft_ring *ring, uint8_t timer);
/* QP lock held: put the SEND WQE at SQ counter index (== sq_tx, everything
 * before it transmitted) into the ring if allowed; returns 1 if done.
 * may_reap: reap completions first when the ring is full. */
int orc_soft_ring_post(orc_soft_qp_t *qp, uint32_t index, int may_reap);
/* QP lock held: consume incoming ring SENDs / reap own ring completions.
 * in_svc: called by the service thread (then the busy marker is used). */
void orc_soft_ring_progress(orc_soft_qp_t *qp, int in_svc);
/* QP lock held: cancel outstanding ring SENDs (QP leaves RTS) */
void orc_soft_ring_cancel(orc_soft_qp_t *qp);
/* QP lock held: ring RNR timer; returns next deadline or 0 */
uint64_t orc_soft_ring_timers(orc_soft_qp_t *qp, uint64_t now);
/* cq_poll found nothing: drive ring progress of the CQ's QPs */
void orc_soft_cq_ring_progress(orc_soft_cq_t *cq);

/* Service thread and wire (soft_wire.c) */
int orc_soft_svc_start(orc_soft_inst_t *inst);
/* cq_poll found nothing: run one non-blocking step of the service loop on
 * this thread if the instance has TCP data connections and nobody else is
 * running it */
void orc_soft_svc_poll(orc_soft_inst_t *inst);
void orc_soft_svc_stop(orc_soft_inst_t *inst);
/* Ask the service thread to connect qp (async). */
int orc_soft_svc_connect(orc_soft_inst_t *inst, orc_soft_qp_t *qp);
/* Make the service thread drop every reference to qp; waits. Call without
 * holding any lock. */
void orc_soft_svc_forget_qp(orc_soft_inst_t *inst, orc_soft_qp_t *qp);
/* Ask the service thread to close connection conn_id (async). */
void orc_soft_svc_drop_conn(orc_soft_inst_t *inst, uint64_t conn_id);
/* Wake the service thread (timers changed). */
void orc_soft_svc_wake(orc_soft_inst_t *inst);
/* QP lock held: ask for EPOLLOUT on the QP's connection. */
void orc_soft_svc_want_tx(orc_soft_qp_t *qp);
/* QP lock held: write the request frame of wqe from qp->tx_off on.
 * Returns 1 when the frame is complete, 0 when the socket is full (tx_off
 * advanced), -1 when the connection failed. */
int orc_soft_wire_send_req(orc_soft_qp_t *qp, const orc_soft_wqe_t *wqe);

static inline orc_soft_inst_t *orc_soft_inst(orc_dev_t *dev)
{
    return (orc_soft_inst_t *)dev;
}

static inline orc_soft_inst_t *orc_soft_qp_inst(orc_soft_qp_t *qp)
{
    return orc_soft_inst(qp->super.pd->dev);
}

#endif /* ORC_SOFTNIC_H_ */
