/*
 * softnic same-host SEND rings.
 *
 * When both ends of a connection are on the same host, the target's service
 * thread creates a single-producer/single-consumer ring in shared memory
 * (/dev/shm/orc_soft.<pidns>.<pid>.<inst>.r<id>; the initiator unlinks the
 * name once it has mapped it) and names it in the CHAN_ACK. SEND and
 * SEND_WITH_IMM of up to SN_RING_DATA bytes and 64-bit atomics then
 * bypass the socket (an atomic slot carries key, address and operands, the
 * consumer executes it with a real atomic instruction and returns the old
 * value in the slot; a FENCEd WR waits until earlier ring atomics are
 * reaped):
 *
 *  - the initiator copies the message into the next slot (posting thread,
 *    QP lock held), only while nothing else of the QP is outstanding on the
 *    TCP connection, and it transmits nothing on TCP while ring SENDs are
 *    outstanding: the QP's operations stay in posting order;
 *  - the target consumes slots in order: in softnic_cq_poll() of its receive CQ
 *    (when that CQ is empty) and, so that a target that never polls still
 *    completes the sender's WR, in its service thread every millisecond.
 *    Consuming = claim a run of slots, take a posted receive for each and
 *    copy, move the tail past them, then push the receive completions;
 *  - the initiator reaps the slots the tail passed in softnic_cq_poll() of
 *    its send CQ and in
 *    its service thread: the send completion is produced only after the
 *    data was placed (RC semantics). A QP reaps its own slots before it
 *    consumes slots its peer posted after taking them (sn_ring_consume): a
 *    SEND completes before the answer to it, as on a NIC, where the ACK
 *    travels ahead of the peer's next request (programs that sleep on one
 *    channel for both CQs take the first event after a SEND for its own).
 *    Across paths: a SEND slot carries `acked`, the posting QP's rx_ack
 *    (the answers it queued on TCP to our requests, sn_wire.h), and is
 *    taken only once our QP has read those answers (sn_ring_answers_unread;
 *    sn_req.c consumes again when they come); the TCP responder reaps our
 *    slots before it takes a SEND (sn_resp.c).
 *
 * Memory ordering of a slot: the producer writes the payload and the header
 * fields (acked: rx_ack loaded with acquire, after the responder stored
 * it with release before the receive it answers completed), then state =
 * POSTED with the slot's number (release), then head (release; only a new
 * ring's zero head is read, by sn_ring_map). The consumer reads the state
 * of the slot at its tail and on (acquire: POSTED with that slot's number
 * is work, anything else the end of what was posted; the number tells an
 * earlier lap's slot, which a consumer that took it without a word left
 * POSTED). The consumer writes no slot it takes without a word: it
 * claims a run (claim = the run's end), fences (sequentially consistent)
 * and reads cancel_at; the initiator takes slots back when it gives up
 * (RNR retries exhausted, or its QP left RTS) by storing cancel_at,
 * fencing and reading claim, and a slot counts as taken back only when
 * claim is not beyond it (else the consumer finishes it). Of two that
 * race each sees the other's store or is seen by it, so no slot is both
 * taken back and taken; a slot taken back stays so, with all behind it
 * (the initiator's QP goes to ERR and the ring with its connection). The
 * consumer then takes the run with plain loads, writes status (and an
 * atomic's result) into a slot it finished otherwise than by a plain
 * SEND success with state = DONE and the slot's number, moves the tail
 * past the run (release) and lowers claim to the tail. The initiator
 * reaps up to the tail (acquire): a slot it passed is a success unless
 * it is DONE with that number (an atomic must be). Both sides validate
 * what they read: a slot length larger than the slot, an unknown status
 * or a tail beyond what was posted is treated as an error of that
 * message (or as nothing done), never trusted, and a consumer pass takes
 * at most the ring's size in slots.
 *
 * No posted receive: the slot stays POSTED and the consumer says so in
 * rnr_at; the initiator gives up after rnr_retry * the target's
 * min_rnr_timer (7 = never): it takes the slot back (unless the consumer
 * claimed it meanwhile: then it looks again later) and completes the WR
 * with IBV_WC_RNR_RETRY_EXC_ERR. A slot the target completes in error (an
 * atomic it refuses, a receive error) stops the ring: the target consumes
 * nothing behind it and the initiator reaps nothing behind it, its QP goes
 * to ERR and flushes those WRs, as the TCP responder executes nothing after
 * a NAK (rule SN_RULE_NAK_STOPS; a reconnect brings a new ring). A target
 * QP in ERR leaves the slots as they are and says nothing (rnr_at 0), as
 * an IB responder in error drops the packets without an ACK or a NAK: the
 * initiator's transport timer fails the oldest with IBV_WC_RETRY_EXC_ERR
 * once its retry budget is spent (sn_ring_awaits_answer, sn_qp_timers);
 * with timeout 0 it waits until its application moves it to ERR. The
 * initiator takes back the slots it has not reaped when it leaves RTS and
 * drops the connection, which detaches the ring.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SN_RING_MAGIC 0x52494e33u /* "RIN3": states carry the slot number */

/* A slot's state: what it holds and the number of the slot it is
 * (sn_slot_state): a slot taken without a word keeps the initiator's
 * POSTED, so a state of an earlier lap must not read as new work */
enum {
    SN_SLOT_POSTED = 1, /* by the initiator: a SEND or atomic to take */
    SN_SLOT_DONE        /* by the consumer: status (and result) to read */
};

#define SN_SLOT_SEQ_SHIFT 2

static uint32_t sn_slot_state(uint32_t kind, uint64_t seq)
{
    return kind | ((uint32_t)seq << SN_SLOT_SEQ_SHIFT);
}

#define SN_SLOT_F_IMM       0x1
#define SN_SLOT_F_SOLICITED 0x2
#define SN_SLOT_F_FADD      0x4 /* 64-bit fetch-and-add, no payload */
#define SN_SLOT_F_CSWAP     0x8 /* 64-bit compare-and-swap */

/* One slot is 8 KiB. A SEND's payload starts right after the 24 bytes both
 * kinds of slot use, so that a small message (up to 40 bytes: an 8-byte
 * active message with orc's headers) shares its cache line with the state
 * the two sides hand over: one line moves between the cores per message
 * and per direction, not two. An atomic slot has no payload; its operands
 * take the payload's place. */
typedef struct sn_ring_slot {
    uint32_t state;
    uint32_t status; /* enum ibv_wc_status, valid when DONE */
    uint32_t length;
    uint32_t imm; /* network order, as in ibv_send_wr */
    uint32_t flags;
    uint32_t acked; /* SENDs: the initiator QP's rx_ack when posted */
    union {
        struct { /* atomics: target key, address, operands, result */
            uint32_t rkey;
            uint32_t reserved;
            uint64_t raddr;
            uint64_t compare_add;
            uint64_t swap;
            uint64_t result;
        };
        uint8_t data[8192 - 24]; /* SENDs: at most SN_RING_DATA bytes */
    };
} sn_ring_slot_t;

_Static_assert(sizeof(sn_ring_slot_t) == 8192, "a ring slot is 8 KiB");
_Static_assert(offsetof(sn_ring_slot_t, data) == 24,
               "a small payload shares the slot state's cache line");

struct sn_ring {
    uint32_t magic;
    uint32_t nslots;
    uint32_t rnr_timer; /* the target QP's min_rnr_timer */
    uint32_t reserved;
    uint64_t rnr_at; /* consumer: slot + 1 it waits on for a
                                       posted receive, 0 when not waiting */
    uint8_t pad0[40];
    uint64_t head; /* produced, written by the initiator */
    uint8_t pad1[56];
    uint64_t tail;  /* consumed, written by the target */
    uint64_t claim; /* the target may be taking the slots below it */
    uint8_t pad2[48];
    uint64_t cancel_at; /* slot + 1 from which on the initiator took its
                           WRs back, 0: none (sn_ring_take_back) */
    uint8_t pad3[56];
    sn_ring_slot_t slot[SN_RING_SLOTS];
};

_Static_assert(offsetof(struct sn_ring, slot) % 64 == 0,
               "the slots start on a cache line");

static uint32_t sn_ring_next_id = 1; /* atomic */

static void sn_ring_name(char *buf, size_t size, uint64_t pid_ns, pid_t pid,
                         uint32_t inst_id, uint32_t ring_id)
{
    snprintf(buf, size, "/orc_soft.%llu.%d.%u.r%u", (unsigned long long)pid_ns,
             (int)pid, inst_id, ring_id);
}

struct sn_ring *sn_ring_create(sn_inst_t *inst, uint32_t *id_p)
{
    struct sn_ring *ring;
    char name[96];
    uint32_t id;
    int fd;

    id = __atomic_fetch_add(&sn_ring_next_id, 1, __ATOMIC_RELAXED);
    sn_ring_name(name, sizeof(name), le64toh(inst->host.pid_ns), inst->pid,
                 inst->id, id);
    fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        sn_log(inst, SOFTNIC_LOG_WARN, "shm_open(%s) failed: %m", name);
        return NULL;
    }
    if (ftruncate(fd, sizeof(*ring)) < 0) {
        sn_log(inst, SOFTNIC_LOG_WARN, "ftruncate(%s) failed: %m", name);
        goto err_unlink;
    }
    ring = mmap(NULL, sizeof(*ring), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (ring == MAP_FAILED) {
        sn_log(inst, SOFTNIC_LOG_WARN, "mmap(%s) failed: %m", name);
        goto err_unlink;
    }
    close(fd);
    ring->magic  = SN_RING_MAGIC;
    ring->nslots = SN_RING_SLOTS;
    *id_p        = id;
    return ring;

err_unlink:
    shm_unlink(name);
    close(fd);
    return NULL;
}

void sn_ring_destroy(sn_inst_t *inst, struct sn_ring *ring, uint32_t id)
{
    char name[96];

    sn_ring_name(name, sizeof(name), le64toh(inst->host.pid_ns), inst->pid,
                 inst->id, id);
    shm_unlink(name); /* normally gone already: the initiator unlinks it */
    munmap(ring, sizeof(*ring));
}

struct sn_ring *sn_ring_map(uint64_t pid_ns, pid_t pid, uint32_t inst_id,
                            uint32_t ring_id)
{
    struct sn_ring *ring;
    struct stat st;
    char name[96];
    int fd;

    sn_ring_name(name, sizeof(name), pid_ns, pid, inst_id, ring_id);
    fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        return NULL;
    }
    if ((fstat(fd, &st) < 0) || ((size_t)st.st_size != sizeof(*ring))) {
        close(fd);
        return NULL;
    }
    ring = mmap(NULL, sizeof(*ring), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    shm_unlink(name);
    if (ring == MAP_FAILED) {
        return NULL;
    }
    if ((ring->magic != SN_RING_MAGIC) || (ring->nslots != SN_RING_SLOTS) ||
        (ring->head != 0)) {
        munmap(ring, sizeof(*ring));
        return NULL;
    }
    return ring;
}

void sn_ring_unmap(struct sn_ring *ring)
{
    munmap(ring, sizeof(*ring));
}

void sn_ring_set_rnr_timer(struct sn_ring *ring, uint8_t timer)
{
    __atomic_store_n(&ring->rnr_timer, timer, __ATOMIC_RELAXED);
}

/* ---- initiator --------------------------------------------------------- */

int sn_ring_post(sn_qp_t *qp, uint32_t index, int may_reap)
{
    sn_wqe_t *wqe        = &qp->sq[index % qp->sq_size];
    struct sn_ring *ring = qp->ring;
    sn_ring_slot_t *slot;
    uint32_t off = 0;
    int i;

    int atomic = sn_opcode_is_atomic(wqe->opcode);

    if ((ring == NULL) || (wqe->state != SN_WQE_QUEUED) ||
        ((wqe->opcode != IBV_WR_SEND) &&
         (wqe->opcode != IBV_WR_SEND_WITH_IMM) && !atomic) ||
        (!atomic && (wqe->length > SN_RING_DATA)) ||
        (wqe->fence && (qp->ring_atomic_out > 0)) ||
        (qp->conn_state != SN_CONN_READY) || (qp->sq_tx != index) ||
        (SN_RULE_PATH_ORDER && (qp->sent_out != 0)) || qp->rewind_pending) {
        return 0;
    }
    if (qp->ring_prod - qp->ring_reaped >= SN_RING_SLOTS) {
        if (!may_reap) {
            return 0;
        }
        sn_ring_progress(qp, 0);
        if ((qp->ring == NULL) ||
            (qp->ring_prod - qp->ring_reaped >= SN_RING_SLOTS)) {
            return 0; /* full: the WR waits in the send queue */
        }
    }

    slot = &ring->slot[qp->ring_prod % SN_RING_SLOTS];
    if (atomic) {
        slot->length      = 8;
        slot->flags       = (wqe->opcode == IBV_WR_ATOMIC_FETCH_AND_ADD)
                                ? SN_SLOT_F_FADD
                                : SN_SLOT_F_CSWAP;
        slot->rkey        = wqe->rkey;
        slot->raddr       = wqe->raddr;
        slot->compare_add = wqe->compare_add;
        slot->swap        = wqe->swap;
        ++qp->ring_atomic_out;
        goto publish;
    }
    if (wqe->is_inline) {
        memcpy(slot->data, wqe->inline_data, wqe->length); /* may be 0 */
    } else {
        for (i = 0; i < wqe->num_sge; ++i) {
            if (wqe->sge[i].length > 0) {
                memcpy(slot->data + off, (void *)(uintptr_t)wqe->sge[i].addr,
                       wqe->sge[i].length);
                off += wqe->sge[i].length;
            }
        }
    }
    slot->length = wqe->length;
    slot->imm    = wqe->imm;
    slot->flags  = ((wqe->opcode == IBV_WR_SEND_WITH_IMM) ? SN_SLOT_F_IMM : 0) |
                  (wqe->solicited ? SN_SLOT_F_SOLICITED : 0);
    /* the answers our QP (as a responder) queued on TCP to the peer's
     * requests: the peer takes this SEND only once it read them */
    slot->acked = (uint32_t)__atomic_load_n(&qp->rx_ack, __ATOMIC_ACQUIRE);
publish:
    __atomic_store_n(&slot->state, sn_slot_state(SN_SLOT_POSTED, qp->ring_prod),
                     __ATOMIC_RELEASE);
    __atomic_store_n(&ring->head, qp->ring_prod + 1, __ATOMIC_RELEASE);

    wqe->seq   = (uint32_t)qp->ring_prod;
    wqe->state = SN_WQE_RING;
    qp->sq_tx  = index + 1; /* "transmitted" through the ring */
    ++qp->ring_prod;
    if (qp->ring_out++ == 0) {
        qp->last_progress_ns = sn_stamp_ns();
        qp->rnr_count        = 0;
    }
    return 1;
}

static int sn_ring_status_valid(uint32_t status)
{
    return (status == IBV_WC_SUCCESS) || (status == IBV_WC_REM_INV_REQ_ERR) ||
           (status == IBV_WC_REM_OP_ERR) || (status == IBV_WC_RETRY_EXC_ERR) ||
           (status == IBV_WC_REM_ACCESS_ERR);
}

/* The status of a slot the consumer is done with: what it wrote there
 * (DONE), else success (a SEND taken without a word); an atomic always
 * has its result written */
static uint32_t sn_ring_slot_status(const sn_ring_slot_t *slot, uint32_t seq,
                                    int atomic)
{
    uint32_t status;

    if (__atomic_load_n(&slot->state, __ATOMIC_RELAXED) !=
        sn_slot_state(SN_SLOT_DONE, seq)) {
        return atomic ? IBV_WC_REM_OP_ERR : IBV_WC_SUCCESS;
    }
    status = slot->status;
    return sn_ring_status_valid(status) ? status : IBV_WC_REM_OP_ERR;
}

void sn_ring_reap(sn_qp_t *qp, int in_svc)
{
    sn_ring_slot_t *slot;
    sn_wqe_t *wqe;
    uint32_t i, status;
    uint64_t tail;
    int progress = 0, atomic;

    /* the consumer moves the tail past the slots it is done with (acquire:
     * a DONE slot's status and result, written before); a tail beyond
     * what we posted is garbage and finishes nothing */
    tail = __atomic_load_n(&qp->ring->tail, __ATOMIC_ACQUIRE);
    if (tail - qp->ring_reaped > qp->ring_prod - qp->ring_reaped) {
        return;
    }
    for (i = qp->sq_head; (i != qp->sq_tx) && (qp->ring_out > 0); ++i) {
        wqe = &qp->sq[i % qp->sq_size];
        if (wqe->state != SN_WQE_RING) {
            continue;
        }
        if ((int32_t)((uint32_t)tail - wqe->seq) <= 0) {
            break; /* not done yet */
        }
        slot   = &qp->ring->slot[wqe->seq % SN_RING_SLOTS];
        atomic = sn_opcode_is_atomic(wqe->opcode);
        status = sn_ring_slot_status(slot, wqe->seq, atomic);
        if (atomic) {
            --qp->ring_atomic_out;
            if (status == IBV_WC_SUCCESS) {
                status = sn_qp_put_atomic_result(qp, wqe, slot->result, in_svc);
            }
        }
        wqe->state  = SN_WQE_DONE;
        wqe->status = status;
        --qp->ring_out;
        ++qp->ring_reaped;
        progress = 1;
        if (SN_RULE_NAK_STOPS && (status != IBV_WC_SUCCESS)) {
            break; /* the QP goes to ERR: what is behind is flushed */
        }
    }
    if (progress) {
        qp->last_progress_ns = sn_stamp_ns();
        qp->rnr_count        = 0;
        sn_qp_complete(qp);
        /* SENDs that waited for a free slot go into the ring now */
        while ((qp->ring != NULL) && (qp->sq_tx != qp->sq_tail) &&
               sn_ring_post(qp, qp->sq_tx, 0)) {
        }
        if ((qp->ring_out == 0) && (qp->state == IBV_QPS_RTS)) {
            sn_qp_tx(qp); /* WRs queued behind the ring SENDs */
        }
    }
}

/* Take the slots from seq on back from the consumer, unless it may be
 * taking seq already (its claim is beyond seq): then the WRs stay its and
 * 0 is returned. Each side stores, fences, then loads what the other
 * stored (sn_ring_claim): of two that race, at least one sees the other,
 * so no slot is both taken back and taken. */
static int sn_ring_take_back(struct sn_ring *ring, uint64_t seq)
{
    __atomic_store_n(&ring->cancel_at, seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if ((int32_t)((uint32_t)__atomic_load_n(&ring->claim, __ATOMIC_RELAXED) -
                  (uint32_t)seq) <= 0) {
        return 1;
    }
    __atomic_store_n(&ring->cancel_at, 0, __ATOMIC_RELAXED);
    return 0;
}

void sn_ring_cancel(sn_qp_t *qp)
{
    /* every slot not reaped: those the consumer claimed it finishes, the
     * rest it never takes (the connection and the ring go next) */
    if ((qp->ring != NULL) && (qp->ring_out > 0)) {
        __atomic_store_n(&qp->ring->cancel_at, qp->ring_reaped + 1,
                         __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    }
}

int sn_ring_awaits_answer(const sn_qp_t *qp)
{
    /* rnr_at names a slot of this ring only: the consumer waits for a
     * receive for one of our SENDs, which the RNR timer bounds */
    return (qp->ring != NULL) && (qp->ring_out > 0) &&
           (__atomic_load_n(&qp->ring->rnr_at, __ATOMIC_RELAXED) == 0);
}

uint64_t sn_ring_timers(sn_qp_t *qp, uint64_t now)
{
    sn_wqe_t *wqe;
    uint64_t limit;
    uint32_t i;

    if ((qp->ring == NULL) || (qp->ring_out == 0) ||
        (SN_RULE_RNR && (qp->attr.rnr_retry == 7))) {
        return 0;
    }
    limit = !SN_RULE_RNR
                ? 0
                : qp->last_progress_ns +
                      sn_rnr_timer_ns(__atomic_load_n(&qp->ring->rnr_timer,
                                                      __ATOMIC_RELAXED) &
                                      31) *
                          (qp->attr.rnr_retry + 1);
    if (now < limit) {
        return limit;
    }
    for (i = qp->sq_head; i != qp->sq_tx; ++i) {
        wqe = &qp->sq[i % qp->sq_size];
        if (wqe->state != SN_WQE_RING) {
            continue;
        }
        if ((uint32_t)__atomic_load_n(&qp->ring->rnr_at, __ATOMIC_RELAXED) !=
            wqe->seq + 1) {
            break; /* pending, but not for lack of a receive */
        }
        if (sn_ring_take_back(qp->ring, wqe->seq)) {
            wqe->state  = SN_WQE_DONE;
            wqe->status = IBV_WC_RNR_RETRY_EXC_ERR;
            --qp->ring_out;
            sn_qp_complete(qp); /* -> ERR, flushes the rest */
            return 0;
        }
        break; /* being consumed right now: look again soon */
    }
    return now + 1000000ull;
}

/* ---- target ------------------------------------------------------------ */

/* A run of SEND slots taken one after the other under one hold of the
 * receive queue's lock (sn_ring_take), then completed together
 * (sn_ring_deliver): per message, no lock round trip of its own. Lives on
 * the consumer's stack, under the QP lock. */
typedef struct sn_ring_run {
    uint64_t tail; /* the next slot to look at */
    int n;         /* slots taken, in ring order */
    sn_ring_slot_t *slot[SN_RING_SLOTS];
    struct ibv_wc wc[SN_RING_SLOTS]; /* their receive completions */
    uint8_t solicited[SN_RING_SLOTS];
} sn_ring_run_t;

/* What ended a run */
enum {
    SN_RUN_END,     /* nothing more to take now (the end of what was
                        posted, a slot that waits for our answers to be
                        read, the pass's bound) */
    SN_RUN_ATOMIC,  /* an atomic slot, executed on its own */
    SN_RUN_RNR,     /* no posted receive: the slot waits */
    SN_RUN_BAD_LEN, /* the slot at tail, claimed, is longer than a slot */
    SN_RUN_RECV_ERR /* the run's last receive failed (its slot: at tail) */
};

/* The receive completion of a message taken into the run; the slot's
 * fields are read now, while it is still ours */
static void sn_ring_run_add(sn_qp_t *qp, const sn_ring_att_t *att,
                            sn_ring_run_t *run, const sn_recv_t *recv,
                            sn_ring_slot_t *slot, enum ibv_wc_status status,
                            uint32_t len)
{
    struct ibv_wc *wc = &run->wc[run->n];
    uint32_t flags    = (status == IBV_WC_SUCCESS) ? slot->flags : 0;

    memset(wc, 0, sizeof(*wc));
    wc->wr_id    = recv->wr_id;
    wc->status   = status;
    wc->opcode   = IBV_WC_RECV;
    wc->byte_len = (status == IBV_WC_SUCCESS) ? len : 0;
    wc->qp_num   = qp->super.qp_num;
    wc->src_qp   = att->src_qpn;
    if (flags & SN_SLOT_F_IMM) {
        wc->wc_flags = IBV_WC_WITH_IMM;
        wc->imm_data = slot->imm;
    }
    run->solicited[run->n] = (flags & SN_SLOT_F_SOLICITED) != 0;
    run->slot[run->n++]    = slot;
}

/* QP lock held: execute an atomic slot on our memory, as the TCP path does:
 * the QP's and the MR's REMOTE_ATOMIC right, 8-byte alignment, a real
 * atomic instruction. The MR is entered (users count) so that a concurrent
 * dereg of another thread waits for it. Returns the slot status. */
static uint32_t sn_ring_atomic(sn_qp_t *qp, sn_ring_slot_t *slot,
                               uint32_t flags)
{
    sn_inst_t *inst = sn_qp_inst(qp);
    uint64_t raddr  = slot->raddr, value;
    uint32_t rkey   = slot->rkey;
    sn_mr_entry_t *entry;
    sn_mr_snap_t snap;

    if (raddr & 7) {
        return IBV_WC_REM_INV_REQ_ERR;
    }
    if (SN_RULE_ACCESS &&
        !(qp->attr.qp_access_flags & IBV_ACCESS_REMOTE_ATOMIC)) {
        return IBV_WC_REM_ACCESS_ERR;
    }
    entry = sn_mr_enter(inst->mrs, rkey);
    if (entry == NULL) {
        return IBV_WC_REM_ACCESS_ERR;
    }
    if (sn_mr_check(inst->mrs, rkey, qp->pdn, raddr, 8,
                    IBV_ACCESS_REMOTE_ATOMIC, &snap) != 0) {
        sn_mr_leave(entry);
        return IBV_WC_REM_ACCESS_ERR;
    }
    value = sn_atomic_exec((uint64_t *)(uintptr_t)raddr, flags & SN_SLOT_F_FADD,
                           slot->compare_add, slot->swap);
    sn_mr_leave(entry);
    slot->result = value;
    return IBV_WC_SUCCESS;
}

/* The slot at tail - 1 has a status for the initiator to read, and the
 * tail moves past it */
static void sn_ring_slot_done(struct sn_ring *ring, sn_ring_slot_t *slot,
                              uint32_t status, uint64_t tail)
{
    slot->status = status;
    __atomic_store_n(&slot->state, sn_slot_state(SN_SLOT_DONE, tail - 1),
                     __ATOMIC_RELAXED);
    __atomic_store_n(&ring->tail, tail, __ATOMIC_RELEASE);
}

/* Whether the initiator took the slot seq back (sn_ring_take_back,
 * sn_ring_cancel): it and every slot behind it are not the consumer's */
static int sn_ring_taken_back(const struct sn_ring *ring, uint64_t seq)
{
    uint64_t at = __atomic_load_n(&ring->cancel_at, __ATOMIC_RELAXED);

    return (at != 0) && ((int32_t)((uint32_t)seq - (uint32_t)(at - 1)) >= 0);
}

/* QP lock held: before it takes the n slots from tail on, the consumer
 * says so (claim), then looks whether the initiator took some of them
 * back (the other half of sn_ring_take_back). Returns how many it may
 * take. */
static uint64_t sn_ring_claim(struct sn_ring *ring, uint64_t tail, uint64_t n)
{
    uint64_t i;

    __atomic_store_n(&ring->claim, tail + n, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    for (i = 0; (i < n) && !sn_ring_taken_back(ring, tail + i); ++i) {
    }
    if (i < n) {
        __atomic_store_n(&ring->claim, tail + i, __ATOMIC_RELAXED);
    }
    return i;
}

/* QP lock held: mark a slot the consumer took DONE with status; a failed
 * slot ends the initiator's WR in error and its QP goes to ERR, flushing
 * the slots behind it, so the ring is consumed no further (as the TCP
 * responder stops after a NAK, rule SN_RULE_NAK_STOPS). Returns 1 when
 * the ring stopped. */
static int sn_ring_slot_finish(sn_ring_att_t *att, sn_ring_slot_t *slot,
                               uint32_t status, uint64_t tail)
{
    sn_ring_slot_done(att->ring, slot, status, tail);
    if (status != IBV_WC_SUCCESS) {
        att->stopped = SN_RULE_NAK_STOPS;
    }
    return att->stopped;
}

/* QP lock held: did the peer post this SEND after it answered TCP requests
 * of ours whose answers we have not read yet (slot->acked beyond rsp_seq)?
 * Then the slot waits: what the peer sends after taking a SEND of ours
 * completes after that SEND, whichever path each took (the TCP responder's
 * check_acked does the same for request frames; sn_req.c consumes the
 * rings again once the answers are read). Only a QP with a live connection
 * of its own waits; an acked beyond what we ever sent is a broken producer
 * and is not waited on. */
static int sn_ring_answers_unread(const sn_qp_t *qp, const sn_ring_slot_t *slot)
{
    uint32_t acked = slot->acked;

    return SN_RULE_MIXED_ACK_FIRST && (qp->state == IBV_QPS_RTS) &&
           (qp->conn_state == SN_CONN_READY) &&
           ((int32_t)(acked - qp->rsp_seq) > 0) &&
           ((int32_t)(acked - qp->tx_seq) <= 0);
}

/* The consumer no longer waits for a receive. Written only when it
 * changes: the initiator reads this line on every poll while SENDs of its
 * are out, and a store would move the line to the consumer's core. */
static void sn_ring_rnr_clear(struct sn_ring *ring)
{
    if (__atomic_load_n(&ring->rnr_at, __ATOMIC_RELAXED) != 0) {
        __atomic_store_n(&ring->rnr_at, 0, __ATOMIC_RELAXED);
    }
}

/* Whether the initiator left a SEND or atomic for the consumer in slot
 * seq, this lap's (POSTED with its number), and has not taken it back.
 * Anything else is a slot the consumer is done with (or never saw): the
 * end of what was posted. The acquire pairs with the producer's release
 * of the state, after everything it wrote before. */
static int sn_ring_slot_pending(const struct sn_ring *ring, uint64_t seq)
{
    const sn_ring_slot_t *slot = &ring->slot[seq % SN_RING_SLOTS];

    return (__atomic_load_n(&slot->state, __ATOMIC_ACQUIRE) ==
            sn_slot_state(SN_SLOT_POSTED, seq)) &&
           !sn_ring_taken_back(ring, seq);
}

/* Whether the consumer has work at its tail (the tail is written by the
 * consumer only; read atomically, as a CQ poll peeks at it unlocked) */
static int sn_ring_tail_pending(const struct sn_ring *ring)
{
    return sn_ring_slot_pending(ring,
                                __atomic_load_n(&ring->tail, __ATOMIC_RELAXED));
}

/* QP lock held: how many slots from tail on (up to end) are SENDs to take
 * now, at most avail (the receives there are); *why: what ends them */
static uint64_t sn_ring_scan(const sn_qp_t *qp, const struct sn_ring *ring,
                             uint64_t tail, uint64_t end, uint64_t avail,
                             int *why)
{
    const sn_ring_slot_t *slot;
    uint64_t seq;

    *why = SN_RUN_END;
    for (seq = tail; seq != end; ++seq) {
        slot = &ring->slot[seq % SN_RING_SLOTS];
        if (!sn_ring_slot_pending(ring, seq) ||
            sn_ring_answers_unread(qp, slot)) {
            break; /* the end of what was posted, or a SEND that waits */
        }
        if (__atomic_load_n(&slot->flags, __ATOMIC_RELAXED) &
            (SN_SLOT_F_FADD | SN_SLOT_F_CSWAP)) {
            *why = SN_RUN_ATOMIC;
            break;
        }
        if (seq - tail == avail) {
            *why = SN_RUN_RNR;
            break;
        }
    }
    return seq - tail;
}

/* QP lock held, the receive queue's lock too (sn_qp_recv_lock: another
 * thread may be draining a QP of the same SRQ, so counting the receives,
 * claiming the messages they are for and taking them happen under one
 * hold): take the SEND slots from run->tail on, in order, up to end at
 * most, each into a receive of rq, placed there; the first that is not a
 * SEND to take now, or whose receive failed, ends the run. The slots are
 * claimed once for the run (sn_ring_claim) and read with plain loads. */
static int sn_ring_take_locked(sn_qp_t *qp, sn_ring_att_t *att, sn_rq_t *rq,
                               sn_ring_run_t *run, uint64_t end, int in_svc)
{
    sn_mr_snap_t snap = {.key = 0}; /* the region of the last placing */
    const sn_recv_t *recv;
    enum ibv_wc_status status;
    sn_ring_slot_t *slot;
    uint64_t n, last;
    uint32_t len;
    int why;

    n = sn_ring_scan(qp, att->ring, run->tail, end, rq->count, &why);
    if (n == 0) {
        return why;
    }
    sn_ring_rnr_clear(att->ring);
    last = run->tail + sn_ring_claim(att->ring, run->tail, n);
    if (last != run->tail + n) {
        why = SN_RUN_END; /* the initiator took the rest back */
    }
    for (; run->tail != last; ++run->tail) {
        slot = &att->ring->slot[run->tail % SN_RING_SLOTS];
        len  = slot->length;
        if (len > SN_RING_DATA) {
            return SN_RUN_BAD_LEN;
        }
        recv   = sn_rq_take(rq); /* scanned: count > 0 under the lock */
        status = sn_qp_place_recv(qp, recv, slot->data, len, in_svc, &snap);
        sn_ring_run_add(qp, att, run, recv, slot, status, len);
        if (status != IBV_WC_SUCCESS) {
            return SN_RUN_RECV_ERR;
        }
    }
    return why;
}

/* QP lock held: the run's slots are the sender's again (the tail past
 * them: taken without a word, a success) before their receives complete
 * (as the TCP path sends its ACK first), all in one CQ lock hold and in
 * ring order. A failed last receive completes too; its slot is left to
 * the caller (run->tail is at it). */
static void sn_ring_deliver(sn_qp_t *qp, sn_ring_att_t *att,
                            const sn_ring_run_t *run)
{
    if (run->tail != att->ring->tail) {
        __atomic_store_n(&att->ring->tail, run->tail, __ATOMIC_RELEASE);
    }
    if (run->n > 0) {
        sn_cq_push_n(qp->recv_cq, run->wc, run->solicited, run->n);
    }
}

/* QP lock held, the QP in RTR/RTS: consume a run of SEND slots from *tail_p
 * on (up to end) and what ended it; *tail_p moves past what was consumed.
 * Returns 1 when the caller goes on with the slot at *tail_p (an atomic,
 * or the one behind a failed slot without SN_RULE_NAK_STOPS). */
static int sn_ring_sends(sn_qp_t *qp, sn_ring_att_t *att, uint64_t *tail_p,
                         uint64_t end, int in_svc)
{
    enum ibv_wc_status status;
    sn_ring_run_t run;
    sn_rq_t *rq;
    int why;

    run.tail = *tail_p;
    run.n    = 0;
    rq       = sn_qp_recv_lock(qp);
    why      = sn_ring_take_locked(qp, att, rq, &run, end, in_svc);
    sn_qp_recv_unlock(qp);
    sn_ring_deliver(qp, att, &run);
    *tail_p = run.tail + ((why == SN_RUN_BAD_LEN) || (why == SN_RUN_RECV_ERR));
    /* what was claimed and not taken is the initiator's to take back */
    if (__atomic_load_n(&att->ring->claim, __ATOMIC_RELAXED) != *tail_p) {
        __atomic_store_n(&att->ring->claim, *tail_p, __ATOMIC_RELAXED);
    }
    switch (why) {
    case SN_RUN_ATOMIC:
        return 1;
    case SN_RUN_RNR:
        /* the slot waits; tell the sender why */
        __atomic_store_n(&att->ring->rnr_at, run.tail + 1, __ATOMIC_RELAXED);
        return 0;
    case SN_RUN_BAD_LEN:
        return !sn_ring_slot_finish(att,
                                    &att->ring->slot[run.tail % SN_RING_SLOTS],
                                    IBV_WC_REM_INV_REQ_ERR, *tail_p);
    case SN_RUN_RECV_ERR:
        /* completed in error (in the run): the responder QP goes to ERR */
        status = run.wc[run.n - 1].status;
        (void)sn_ring_slot_finish(att, run.slot[run.n - 1],
                                  (status == IBV_WC_LOC_LEN_ERR)
                                      ? IBV_WC_REM_INV_REQ_ERR
                                      : IBV_WC_REM_OP_ERR,
                                  *tail_p);
        sn_qp_to_error(qp);
        return !att->stopped;
    default:
        return 0;
    }
}

/* QP lock held, the QP in RTR/RTS: execute the atomic slot at tail (flags:
 * its kind). Returns 1 when the caller goes on with the next slot. */
static int sn_ring_atomic_slot(sn_qp_t *qp, sn_ring_att_t *att,
                               sn_ring_slot_t *slot, uint32_t flags,
                               uint64_t tail)
{
    if (sn_ring_claim(att->ring, tail, 1) == 0) {
        return 0; /* taken back */
    }
    return !sn_ring_slot_finish(att, slot, sn_ring_atomic(qp, slot, flags),
                                tail + 1);
}

/* The consumer finds what was posted from the slots' states, not from the
 * producer's head: it reads only the lines it must read anyway, and a small
 * SEND costs one cache line moving to the consumer (the slot) and one
 * moving back (the same slot, DONE), not two more for the head counter.
 * Bounded by the ring's size per call. SENDs are taken in runs
 * (sn_ring_sends); atomics, and slots met by a QP in ERR, one at a time. */
static void sn_ring_consume(sn_qp_t *qp, sn_ring_att_t *att, int in_svc)
{
    struct sn_ring *ring = att->ring;
    sn_ring_slot_t *slot;
    uint64_t end, tail;
    uint32_t flags;

    if (!sn_ring_tail_pending(ring)) {
        return;
    }
    /* the peer may have posted these after it took SENDs of ours (and
     * its application saw them): those complete first. The acquire of the
     * slot's state makes every slot the peer marked DONE before it posted
     * visible to the reap. */
    if (SN_RULE_ACK_FIRST && (qp->ring != NULL) && (qp->ring_out > 0)) {
        sn_ring_reap(qp, in_svc);
    }
    if (SN_RULE_ERR_SILENT && (qp->state == IBV_QPS_ERR)) {
        /* a responder in error drops what comes: no answer, not even an
         * RNR wait (the initiator's transport timer ends its WRs) */
        sn_ring_rnr_clear(ring);
        return;
    }
    if (att->stopped) {
        return; /* a slot failed: the initiator flushes the rest */
    }
    tail = ring->tail;
    end  = tail + SN_RING_SLOTS;
    while (tail != end) {
        slot = &ring->slot[tail % SN_RING_SLOTS];
        if (!sn_ring_slot_pending(ring, tail)) {
            return; /* the end of what was posted */
        }
        if (qp->state == IBV_QPS_ERR) { /* without the rule only */
            if (sn_ring_claim(ring, tail, 1) == 0) {
                return; /* taken back */
            }
            sn_ring_slot_done(ring, slot, IBV_WC_RETRY_EXC_ERR, tail + 1);
            ++tail;
            continue;
        }
        if (((qp->state != IBV_QPS_RTR) && (qp->state != IBV_QPS_RTS)) ||
            (qp->attr.dest_qp_num != att->src_qpn)) {
            return; /* not ready: the slot waits */
        }
        flags = __atomic_load_n(&slot->flags, __ATOMIC_RELAXED);
        if (flags & (SN_SLOT_F_FADD | SN_SLOT_F_CSWAP)) {
            if (!sn_ring_atomic_slot(qp, att, slot, flags, tail)) {
                return;
            }
            ++tail;
        } else if (!sn_ring_sends(qp, att, &tail, end, in_svc)) {
            return;
        }
    }
}

void sn_ring_progress(sn_qp_t *qp, int in_svc)
{
    sn_ring_att_t *att;

    for (att = qp->rings; att != NULL; att = att->next) {
        sn_ring_consume(qp, att, in_svc);
    }
    if ((qp->ring != NULL) && (qp->ring_out > 0)) {
        sn_ring_reap(qp, in_svc);
    }
}

/* Whether sn_ring_progress() has something to do on qp, without its lock:
 * a slot left at the tail of an attached ring (sn_ring_consume's first
 * check) or our own slots out. The caller holds the qps_lock of one of
 * qp's CQs, which keeps the attachments and their mappings in place; the
 * values it reads are hints (a miss is caught by the next poll). An empty
 * poll costs a few loads per QP instead of a lock round trip. */
static int sn_ring_has_work(const sn_qp_t *qp)
{
    const sn_ring_att_t *att;

    if ((qp->ring != NULL) &&
        (__atomic_load_n(&qp->ring_out, __ATOMIC_RELAXED) > 0)) {
        return 1;
    }
    for (att = qp->rings; att != NULL; att = att->next) {
        if (sn_ring_tail_pending(att->ring)) {
            return 1;
        }
    }
    return 0;
}

void sn_cq_ring_progress(sn_cq_t *cq)
{
    sn_inst_t *inst = sn_inst(cq->super.dev);
    sn_qp_t *qp;
    int i;

    if ((__atomic_load_n(&inst->num_rings, __ATOMIC_RELAXED) == 0) ||
        (pthread_mutex_trylock(&cq->qps_lock) != 0)) {
        return;
    }
    for (i = 0; i < cq->nqps; ++i) {
        qp = cq->qps[i];
        if (!sn_ring_has_work(qp) || (pthread_mutex_trylock(&qp->lock) != 0)) {
            continue; /* unlocked peek: a miss is caught by the next poll */
        }
        sn_ring_progress(qp, 0);
        pthread_mutex_unlock(&qp->lock);
    }
    pthread_mutex_unlock(&cq->qps_lock);
}
