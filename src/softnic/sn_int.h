/*
 * softnic: a userspace RDMA NIC with verbs (RC) semantics. The library's
 * private header: internal types and the contracts behind the public API
 * (softnic.h). Nothing outside src/softnic includes it.
 *
 * Model
 * -----
 * Every softnic_dev_open() creates one softnic *instance* in the
 * calling process: a service thread, a TCP listener bound to the interface's
 * IPv4 address (ephemeral port) and a shared-memory table
 * (/dev/shm/orc_soft.<pidns>.<pid>.<instance>, unlinked on close; tables of
 * dead processes of the pid namespace are reaped at every open and close)
 * holding the MRs and the QPs' access flags, readable by same-host peers.
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
 * Same host (equal boot id, pid and network namespaces and /dev/shm, exchanged
 * in the connection handshake) and nothing outstanding on the QP: RDMA WRITE
 * and READ are executed in the posting thread (or, for WRs that had to
 * queue, by whichever thread drains the queue) by one process_vm_writev/readv
 * call, after checking the target QP's access flags and the target's MR
 * table in shared memory. WRITE_WITH_IMM and anything posted behind an
 * outstanding TCP operation go through the connection, so an operation is
 * never overtaken by a later one of the same QP. SEND/SEND_WITH_IMM of up to
 * SN_RING_DATA bytes and 64-bit atomics go through a shared-memory
 * ring per connection (sn_ring.c), consumed in order at the target: by
 * its softnic_cq_poll() (SENDs are placed, atomics executed with __atomic
 * builtins on the target memory, after the same QP/MR/alignment checks as
 * on TCP) or, when the target application does not poll, by its service
 * thread's timer pass every millisecond (see "Polling": every
 * SN_RING_LOOK_NS while its application polls); the sender's
 * softnic_cq_poll() reaps the
 * completions (atomic results are copied to the local buffer then).
 * Larger SENDs and WRITE_WITH_IMM use the connection; across hosts atomics
 * are executed by the target's service thread.
 * If CMA fails with EPERM the QP falls back to TCP; ESRCH (the peer's
 * process is gone) makes the peer a dead one (below).
 *
 * Same-host WRITE batches, as a NIC takes several doorbells in one go:
 * consecutive WRITEs of at most SN_CMA_BATCH_LEN bytes, with nothing
 * transmitted or in a ring ahead of them, are collected in the QP's batch
 * (the WQEs [sq_tx, sq_tail)) and move in one process_vm_writev with one
 * remote iovec per WRITE, in posting order, with the same QP, MR and
 * deregistration checks per WRITE as a single one. A WRITE that passed
 * its checks and writes exactly the bytes of the batch's WRITE before it
 * takes that one's place in the copy (which would write those bytes and
 * then the same ones over them: the target's pages are pinned once per
 * remote iovec, the cost of a stream to one buffer); the WRITE it rewrote
 * completes, in its turn, once the rewriting one's bytes are placed, and
 * fails where that copy fails. A post list's WRITEs
 * form one batch, executed before softnic_post_send() returns. Only while
 * the application streams (its third post in a row, or later, that came
 * within SN_BATCH_GAP_NS of the previous post's return, or of its start
 * if all it did was add WRITEs to the batch; a post with no WRITE that may
 * join a batch ends the stream, and so does one that comes after the
 * second empty poll of one of the QP's CQs since the QP's previous such
 * post: the application waited for something, as a ping-pong waits
 * between its WRITEs, which then go at once, without reading the clock)
 * does the batch stay
 * pending after the call, until: the second empty poll of one of the QP's
 * CQs with no WRITE joining the batch in between (the first may end a
 * loop that drains the CQ between two posts; a progress call may poll
 * both CQs once) or an arming of any CQ of
 * the QP (softnic_cq_poll, softnic_cq_req_notify: an application that
 * waits for anything sees its WRITEs under way), a post that breaks the
 * stream or anything but a WRITE that may join (the batch goes first, so
 * nothing overtakes it and fences see it done), SN_CMA_BATCH WRITEs, a QP
 * state change (to ERR: flushed with IBV_WC_WR_FLUSH_ERR, never executed),
 * or the service thread's timer pass (~1 ms: batches stay pending only on
 * QPs with a same-host ring, whose instance's service thread runs the
 * timers every millisecond while a batch is pending). The cost: the last
 * WRITEs of a stream that is
 * followed neither by a post nor by a CQ poll wait for that pass. A WRITE
 * whose check fails completes with its error and the WRITEs behind it are
 * flushed, as when they run one by one; a WRITE's completion never
 * precedes its execution.
 *
 * RC semantics kept: completions in posting order; a SEND completes before
 * what its peer sends after taking it, as on a NIC, where the ACK travels
 * ahead on the one link: on the same-host ring the QP reaps its own slots
 * before it consumes the peer's (sn_ring.c); on TCP, where the ACK and the
 * answer come on two connections, the answer's frame says which of our
 * requests were answered before it and carries the ACKs that left in no
 * frame yet, and waits until the others were read (sn_wire.h, "ACK
 * coalescing" below); a target's ACK is in its socket before the receive
 * completes and on the wire within a bound ("ACK coalescing"); across the two paths (a SEND on the same-host ring
 * answered on TCP, or the reverse) the TCP responder reaps the QP's own
 * ring slots before it takes a SEND or WRITE_WITH_IMM, and a ring SEND
 * slot carries the same `acked` as a frame and waits until those answers
 * were read (sn_ring.c); a failed WR completes even when unsignaled
 * and moves the QP to ERR, every later WR is flushed (IBV_WC_WR_FLUSH_ERR),
 * posted receives of the QP's own RQ too (SRQ receives stay posted);
 * IBV_SEND_FENCE holds a WR until earlier READs and atomics completed; RNR
 * NAK -> retry after the responder's min_rnr_timer, IBV_WC_RNR_RETRY_EXC_ERR
 * after rnr_retry retries (7 = forever); a target
 * QP in ERR executes and answers nothing on every path, as an IB responder
 * in error drops the packets: the TCP responder drops the request (no ACK,
 * no NAK), the same-host ring leaves its slots, the CMA path finds the QP's
 * rights revoked (the QP table below) and sends the WR on TCP, so the
 * initiator's transport timer fails it with IBV_WC_RETRY_EXC_ERR once its
 * budget is spent (below); a target QP in RESET/INIT (or connected
 * elsewhere) NAKs "not ready": softnic's stand-in for the packet an IB
 * QP below RTR drops (IB has no such NAK), resent after the QP's timeout
 * (20 ms with timeout 0) and failed by the same transport budget as a
 * silent peer, counted from the first send (RETRY_EXC_ERR after
 * (retry_cnt + 1) attempts; timeout 0: never); CMA finds no rights below
 * RTR (the QP table) and sends the WR on TCP too. Access violations at the target NAK the WR
 * (REM_ACCESS_ERR, REM_INV_REQ_ERR for misaligned atomics or a SEND longer
 * than the receive, REM_OP_ERR for a receive with a bad lkey); the target QP
 * stays usable except for receive errors, which move it to ERR as in IB.
 * A NAK (but RNR and "not ready") ends the initiator's WR in error and
 * its QP goes to ERR, flushing the WRs behind it: the target executes
 * none of them, so a WR that completed with IBV_WC_WR_FLUSH_ERR never
 * touched the target (an IB responder goes to ERR at such a NAK and
 * executes nothing after it). On TCP, where those WRs may already be on
 * the wire, the responder drops whatever the connection brings after the
 * NAK, unanswered (rule switch SN_RULE_NAK_STOPS); a reconnected
 * initiator QP comes on a new connection. Same host, CMA checks a WRITE
 * or READ in the initiator before anything behind it runs; on the
 * shared-memory ring (SENDs, atomics) the target consumes no slot behind
 * one it completed in error, and the initiator reaps nothing behind that
 * slot (the same switch): its QP goes to ERR and flushes them, and a
 * reconnected QP comes with a new ring.
 *
 * Dead peer = silent peer, as on a NIC, which cannot tell a dead node from
 * a slow one: a peer whose host does not answer, whose connection closed,
 * was reset or refused, or whose process is gone (CMA ESRCH) gets nothing
 * more; what it executed before completes as such (ACKed WRs, SENDs and
 * atomics taken from the same-host ring), and once the oldest unfinished
 * WR has waited for an answer (or for the connection) through retry_cnt + 1
 * attempts of T each since the QP's last progress, T = 4.096 us *
 * 2^timeout but at least 20 ms (software peers get descheduled), it fails
 * with IBV_WC_RETRY_EXC_ERR (the rest flush, as on hardware). A WR in
 * the same-host ring waits for an answer too, unless the target's consumer
 * waits for a receive for it (then the RNR timer bounds it). Any
 * progress restarts the count. An attempt that ran out starts the
 * next one when the service thread sees it, as a NIC's retransmission
 * does: a QP whose own process or host was not scheduled for longer than
 * the whole budget spends one attempt on that, not all of them, and reads
 * the answers that arrived meanwhile. So two sides
 * that each stop at their own count, with WRs still posted to the other,
 * both end cleanly, as they do on hardware. While the QP's connection is
 * still being set up (no such step on hardware) the budget is at least
 * 5 s, and the QP's own budget starts once the connection is up.
 * timeout = 0 means infinite, as in the IB spec: such a QP waits for a dead
 * peer until the application moves it to ERR (which flushes) or destroys
 * it, as it would on hardware.
 *
 * UD QPs carry datagrams on one UDP socket per instance, on the device's
 * address and the listener's port number: sn_ud.c states that path's
 * threads and locks.
 *
 * Wire protocol: see sn_wire.h. Every header field is validated; a bad
 * frame closes the connection (initiator side: the peer is a dead one,
 * see above; target side: the peer sees a dead connection).
 *
 * Memory-region deregistration guarantee: once softnic_mr_dereg() returned,
 * nothing touches the region any more, as with an HCA. Same-host initiators
 * count themselves in the entry's `users` before checking it and leave after
 * their CMA copy; this process's service thread announces the region it is
 * about to touch (sn_inst_t.busy_mr). Dereg invalidates the entry and
 * then waits for both (one syscall at most; a user count left behind by a
 * process killed inside its copy is given up on after 2 s, with a log line).
 * A same-host READ that raced with dereg completes with REM_ACCESS_ERR; on
 * TCP a READ whose region goes away between two READ_DATA frames
 * (SN_FRAME_MAX) is NAKed (REM_ACCESS_ERR), within a frame the
 * connection is closed (a dead peer:
 * RETRY_EXC_ERR once the QP's budget runs out).
 *
 * Polling: softnic_cq_poll() on an empty CQ drives the same-host rings of the
 * CQ's QPs. A thread that has polled its CQs (any of them) for
 * SN_CQ_YIELD_NS (600 us) without getting anything calls sched_yield(), and
 * again after each further SN_CQ_YIELD_NS; a poll that returns anything (a
 * completion, an error) ends the run, and so does a WR the thread posted
 * that completed within its post (softnic_post_send_now()'s done, the
 * completion no CQ sees): a thread that puts and polls in turn, each put
 * one CMA copy, waits for nobody (yielding every 600 us, one-host put_bw
 * 64 KiB gave its CPU away about once per 110 puts); and so does an empty
 * poll whose step of the service loop (below) moved bytes on a connection
 * (a recv that got some, a send the socket took: sn_io_moved): a thread
 * that moves the data itself waits for nobody either (a two-host READ
 * target, which gets no completions while its steps send the READ data,
 * yielded 0.5 times per MiB of get_bw 1 MiB). The run is per thread
 * and timed from its second empty poll (sn_now_ns at each empty poll but
 * the first, so a thread that posts and polls in turn reads no clock), so a
 * thread polling two CQs in turn, or polls of any cost (a ring check, a
 * socket step), yield alike. So a spinning application does not starve
 * the threads it waits for when they share its CPU: its service thread, or
 * the peer process of a ping-pong
 * (UCX am_lat, both on one CPU: ~0.63 ms per round trip; it waited about a
 * look, ~0.9 ms, with a yield every 2048th empty poll of a CQ). Not
 * shorter: a yield lets any runnable task in, and with a yield after 64
 * empty polls in a row, or after 200 us, two unpinned peers on a loaded
 * host fell, in about half the rounds, into taking turns on one CPU
 * (~130 or ~200 us per round trip instead of ~15 us).
 * While the instance has connections that carry data on TCP (other hosts,
 * or config no_cma), an empty poll also runs one step of the service loop
 * itself (sn_svc_poll: the ready sockets, without blocking): a thread
 * that spins on its CQ then moves the bytes itself, as a kernel-bypass NIC
 * driver would, instead of spinning beside a service thread that waits for
 * the kernel to wake it (2 cores: +25 % cross-host put_bw, half the 8-byte
 * latency). Such a step reads the *hot* connection, the connection that
 * last brought a poller requests (a target connection) or READ data (an
 * initiator connection: a READ's later frames, and the next READ's, come
 * there, while a target connection of the same process may bring the
 * peer's rare requests), without asking epoll first
 * (one syscall, not two, for the request a ping-pong waits for), and asks
 * epoll for all of the instance's sockets at every SN_HOT_EPOLL-th step,
 * and at every step while no connection is hot (the others wait for
 * pollers' steps up to SN_HOT_EPOLL - 1 recv calls longer). The
 * service thread alone runs the timers, and stands back
 * from the sockets while a thread keeps polling: once, within a look
 * (SN_LOOK_NS), pollers stepped at least once, pollers' steps and posts
 * (softnic_post_send and _inline calls that queued WRs on an RC QP, one
 * sn_post_begin() .. sn_post_end() each) came to at least
 * SN_STANDBY_STEPS, and no CQ of the instance was armed meanwhile, it
 * waits only for commands, new connections, datagrams and the *quiet*
 * connections (below; idle_epfd), waking every look, so that a message
 * wakes nobody but the thread spinning for it (before, every message woke
 * the service thread too,
 * which then made the pollers keep off until it got the lock: a context
 * switch per message in each process). Posts count because a streaming
 * sender polls in bursts between runs of posts (when its send queue or
 * its credits run out): counting its steps alone, the service thread
 * served the sockets in the looks spent posting, woke for every ACK frame
 * and took the QP lock the poster held across its socket write (a futex
 * and a context switch every few messages on each side); now the
 * sender's next poll step reads the ACK frames that came meanwhile,
 * several with one read, as a NIC driver reaps completions when it is
 * next called. Posts alone never keep it back (a poster reads no
 * socket). It serves the sockets again (whoever gets to a ready socket
 * first handles it) from the first look in which pollers did not step,
 * or stepped and posted less, and at once when a CQ is armed
 * (softnic_cq_req_notify: an application about to sleep), so a socket
 * waits for nobody longer than about two looks, and only when its
 * application stopped polling without arming.
 * A quiet connection is the target connection of a QP that takes no
 * receives (no SRQ, none posted ever: sn_qp_takes_recvs): nothing that
 * comes there completes in a CQ, so no poller spins for it, but an
 * application may spin on its memory for a WRITE, as ib_write_lat does
 * between its own WRITEs' completions. The service thread serves those
 * at once, standing back or not (whoever gets there first: a poller's
 * step reads them too); left for a look, such a WRITE ping-pong took
 * 105-115 us one way where a thread woken by epoll for each message takes
 * 21-31 (softnic_bench, "WRITE pp, its floor"); served, 39-41. Where
 * pollers read such connections themselves (both ends of a bidirectional
 * ib_write_bw poll without pause) the service thread seldom wakes for
 * them: 6-147 times per 20000 64-byte WRITEs. A connection stops being
 * quiet at its first event after a receive was posted to its QP.
 * Standing back, the service thread only tries svc_lock for its own work
 * (the timer pass, its look at owed ACKs): a poller mid-step holds it,
 * and waiting for it would keep the pollers off (svc_want) from the step's
 * end until the kernel runs the woken service thread again, which on a
 * CPU a poller spins on can be most of a time slice; a poller that waits
 * SN_CQ_YIELD_NS then yields, and gets its CPU back a slice later
 * (two-host am_lat on a loaded host: round trips of 0.5 ms or more, most
 * with a yield, fell to about half). A pass it missed is tried again a
 * look later, and one that is SN_PASS_LATE_NS late waits for the lock;
 * the ACKs due are pushed at the end of the step it missed.
 * The same for the same-host rings: the service thread's timer pass
 * (which consumes the rings of a target that does not poll, and runs the
 * QPs' timers) comes every millisecond while the instance has rings, but
 * every SN_RING_LOOK_NS (5 ms; "ring standby") once a pass found that
 * pollers drove every ring it looked at since the pass before (an empty
 * poll of one of each ring QP's CQs, whose ring progress drives the QP's
 * rings; a QP whose lock a poster held counts), no CQ of the instance was
 * armed meanwhile and no QP holds a WRITE batch or request frames back
 * (the pass is their backstop: every millisecond while one waits). On a
 * pinned one-host put_bw of 1 MiB the service thread had woken every
 * millisecond, each time preempting the poster on its CPU within its CMA
 * copy (~4 % of the bandwidth). An arm ends the ring standby at once
 * (softnic_cq_req_notify wakes the service thread, with the same arm_gen
 * handshake as above): an application about to sleep has its rings
 * served at once. One that stops polling without arming has a SEND in
 * its ring consumed within about two SN_RING_LOOK_NS, and the pass comes
 * every millisecond again from the first pass that finds a ring QP whose
 * CQs nobody polled.
 *
 * ACK coalescing (TCP; rule switch SN_RULE_ACK_BOUND). The ACK of a WRITE,
 * SEND or WRITE_WITH_IMM that a target executed is written into its
 * connection's socket before the request's receive completes (before, not
 * after: an application that ends the moment it sees the receive, even by
 * _exit(), cannot take the ACK away from its sender: the kernel sends
 * what the socket holds when the process ends). Its price is a system
 * call on the receive's path, which softnic_bench's "+ ACK write" row
 * measures against the busy TCP ping-pong (1.4-1.7 us one way, +23-37 %,
 * on a VM where a system call takes 1-3 us). The receives of the
 * small requests (SENDs and WRITE_WITH_IMMs of at most SN_ACK_HOLD_LEN
 * bytes, on a connection without a same-host SEND ring) that one pass
 * over what a connection's read returned completes wait for one
 * cumulative ACK, written when the pass ends (or its SN_ACK_BATCH-th
 * receive, or before anything else of the connection is answered, before
 * another receive of the QP completes, and before ACKs the request frames
 * carry complete our WRs); then they complete, in order. What changed is
 * when the ACK goes on the wire. In a step of a poller the service thread left the
 * sockets to (see "Polling"), the ACK of a SEND or WRITE_WITH_IMM of at
 * most SN_ACK_HOLD_LEN bytes (the kind its application may answer at
 * once; a WRITE's sender, or a large SEND's, more likely waits for the
 * completion) is written with MSG_MORE: held back
 * in the socket, no segment. It is owed, and the QP's next request frame
 * to the sender carries it (sn_wire.h: `ack_new`), so that an application
 * answering a SEND at once sends one frame, and its peer reads one (an
 * ACK that joins owed ones already due leaves at once, without MSG_MORE:
 * the step's end would push it anyway, with one more syscall). An ACK
 * still owed is pushed (TCP_NODELAY set again: one segment for all the
 * ACKs the socket holds) once it is due: SN_ACK_MAX answers or
 * SN_ACK_BYTES of payload owed, or owed for SN_ACK_DELAY_NS; checked at the
 * end of every poller step and at each look of the service thread. Owed
 * for SN_ACK_DELAY_NS only, it waits for a step that moves no bytes
 * (sn_io_moved: its application waits for the peer then), or is
 * SN_ACK_BUSY_NS old: a step that reads a request neither sends its ACK
 * at once nor pushes because of age, so that the segment, and the peer's
 * TCP processing of it that the send runs, does not come between the
 * request's arrival and its receive's completion (two-host am_lat, the peer
 * answering on another QP: 1-10 % of the requests on each side; round
 * trips of 32 us or more, on a machine where the typical one took 25 us,
 * 24 % -> 15 %). So an ACK waits at most about SN_ACK_BUSY_NS while a
 * thread polls and about a look (SN_LOOK_NS) after polling stops; at once
 * when a CQ is armed (the service thread takes the sockets back and pushes
 * what is owed). Any
 * other frame on the connection (NAK, READ data, atomic answer, an ACK
 * sent at once) pushes the held-back ACKs ahead of it, in order. Every
 * other ACK is sent at once, as before: outside such steps (the service
 * thread serving the sockets), for WRITEs and larger requests, and on a
 * connection with a same-host SEND ring (whose slots carry no ACKs). The peer completes WRs at whichever comes first, the carried
 * ACK or the frame; the other is a duplicate it ignores. A carried ACK
 * that travels ahead of the answers sent before it would skip them: the
 * request waits until those were read (check_acked), then the carried
 * ACKs complete the WRs before anything of the request happens, so
 * "a SEND completes before what its peer sends after taking it" holds
 * as before. Without the rule (SN_MUTATE_NO_ACK_BOUND) an owed ACK is
 * pushed only by a frame, by SN_ACK_MAX more, or by the kernel's ~200 ms
 * cork limit: a sender whose target never answers runs out of its
 * transport budget with the data delivered.
 *
 * Request coalescing (TCP). While the application streams (its third post
 * in a row, or later, that came within SN_BATCH_GAP_NS of the previous
 * post's return, as for same-host WRITE batches; every softnic_post_send()
 * or softnic_post_send_inline() call counts, one of an empty list too),
 * the posting thread writes
 * the frames of small WRITEs and SENDs (at most SN_CORK_LEN bytes) that
 * carry no ACKs with MSG_MORE: into the socket, in order, but held back (no
 * segment) until a full segment's worth is there (or the kernel's TCP
 * sends them as an ACK of the peer's comes in), as a NIC takes several
 * doorbells in one go; per message the sender then makes no segment, and
 * the target reads many requests per read and ACKs them with one frame.
 * What is held back is pushed by any frame sent without MSG_MORE (a post
 * that does not stream, a frame that carries ACKs, a large one, one the
 * service thread resumes), by the second empty poll of one of the QP's
 * CQs with no frame held back in between (as for a WRITE batch), by an
 * arming of any CQ of the QP, and by the service thread's timer pass
 * (~1 ms): the last requests of a stream that is followed neither by a
 * post nor by a CQ poll wait for that pass. Nothing else changes: the
 * frames are written in posting order, a WR completes at its answer.
 *
 * Configuration (softnic_config_t, copied at open): no_cma, no_ring and the
 * log (level, callback) are per instance; see softnic.h.
 *
 * Address: softnic_dev_addr_pack() writes sn_addr_t (below). Unpacking
 * fills ah_attr with is_global=1, grh.dgid = the peer GID
 * (::ffff:a.b.c.d), dlid = the peer listener's TCP port (host order),
 * port_num = 1. A loopback address of another host or network namespace,
 * or a non-loopback address unpacked on soft_lo, gives EHOSTUNREACH.
 */
#ifndef SN_INT_H_
#define SN_INT_H_

#include "softnic.h"

#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <sys/types.h>

/* a function with two callers on a per-message path, inlined in both */
#define SN_ALWAYS_INLINE inline __attribute__((always_inline))

#define SN_ADDR_MAGIC     0x534f4643u /* "SOFC" */
#define SN_MAX_MR         16384       /* entries in the MR table */
#define SN_QP_INDEX_BITS  12
#define SN_MAX_QP         (1 << SN_QP_INDEX_BITS)
#define SN_MAX_QP_WR      4096
#define SN_MAX_SGE        8
#define SN_MAX_INLINE     256
#define SN_MAX_CQE        (1 << 20)
#define SN_MAX_MSG        (1u << 30)
#define SN_MAX_RD_ATOMIC  16
#define SN_KEY_INDEX_BITS 16

/* A payload placed from TCP goes in pieces of at most SN_CHUNK bytes per
 * recv() (the QP's state is looked at before each) and drains through a
 * scratch buffer of that size. SN_FRAME_MAX is the one bound on a frame's
 * payload (sn_wire.h): a READ response goes in READ_DATA frames of at most
 * that many bytes, each offered to the socket in one sendmsg (one frame
 * per READ of up to 1 MiB: every further frame is another send call,
 * another header for the initiator to read, and a later start of the next
 * READ); a WRITE's or SEND's request frame carries at most that many, the
 * rest follows in REQ_DATA frames right behind it, up to
 * SN_REQ_SEND_FRAMES (8) frames per sendmsg (sn_req.c: a large WRITE costs
 * no extra send call). */
#define SN_CHUNK     (256 * 1024)
#define SN_FRAME_MAX (1024 * 1024)

/* Same-host WRITE batches (sn_qp_cma_flush): at most this many WQEs, each
 * of at most SN_CMA_BATCH_LEN bytes, move in one process_vm_writev */
#define SN_CMA_BATCH     64
#define SN_CMA_BATCH_LEN 4096
/* posts this close are a stream; a measurement build under valgrind, where
 * every gap is ~50 times longer, may set it higher (-DSN_BATCH_GAP_NS=) */
#ifndef SN_BATCH_GAP_NS
#define SN_BATCH_GAP_NS 1000
#endif
#define SN_BATCH_STREAK 2 /* from the third post of a stream on */
/* Request coalescing (see the header comment): frames of at most this many
 * bytes may be held back */
#define SN_CORK_LEN 4096

/* The service thread stands back from the sockets (see "Polling" above)
 * while pollers step this often per look */
#define SN_STANDBY_STEPS 16
#define SN_LOOK_NS       1000000ull
/* The service thread's timer pass: every millisecond (see "Polling") */
#define SN_PASS_NS   1000000ull
#define SN_NS_PER_MS 1000000ull
/* Standing back, the service thread tries svc_lock for its timer pass
 * (see "Polling"); a pass this late waits for it */
#define SN_PASS_LATE_NS (20 * SN_LOOK_NS)
/* The timer pass's pace while pollers drive every same-host ring of the
 * instance (see "Polling"): instead of every millisecond */
#define SN_RING_LOOK_NS 5000000ull
/* A poller's step reads the hot connection at once (see "Polling"); every
 * this many steps it asks epoll instead */
#define SN_HOT_EPOLL 4

/* ACK coalescing (see "ACK coalescing" above): an owed ACK is due after
 * this long (SN_ACK_BUSY_NS in steps that move bytes), or after this many
 * answers or payload bytes */
#define SN_ACK_DELAY_NS 50000ull
#define SN_ACK_BUSY_NS  (2 * SN_ACK_DELAY_NS)
#define SN_ACK_MAX      16
#define SN_ACK_BYTES    (64 * 1024)
#define SN_ACK_HOLD_LEN 4096 /* larger requests are ACKed at once */
#define SN_ACK_BATCH    32   /* receives of one pass under one ACK */

/* Host identity: equal on two instances <=> CMA and /dev/shm are usable. */
typedef struct sn_host_id {
    uint8_t boot_id[16];
    uint64_t pid_ns;  /* inode of /proc/self/ns/pid */
    uint64_t net_ns;  /* inode of /proc/self/ns/net */
    uint64_t shm_dev; /* st_dev of /dev/shm: the tables' names resolve to
                         the same files (not the mount namespace: two
                         namespaces may share /dev/shm, contrib/softnic-run's
                         do) */
} sn_host_id_t;

/* Packed device address (softnic_dev_addr_pack; little-endian fields). */
typedef struct sn_addr {
    uint8_t version; /* 1 */
    uint16_t tcp_port;
    uint32_t magic; /* SN_ADDR_MAGIC */
    uint8_t gid[16];
    sn_host_id_t host;
} __attribute__((packed)) sn_addr_t;

/*
 * One entry of the MR table, in shared memory. Seqlock: the owner process
 * (holding sn_inst_t.mr_lock) makes seq odd, writes the fields, makes
 * seq even (release). Readers (any process) load seq (acquire), the fields,
 * then seq again and retry if it changed or was odd. key == 0: free entry.
 * All field accesses use __atomic builtins (relaxed) because other processes
 * read them concurrently.
 */
typedef struct sn_mr_entry {
    uint32_t seq;
    uint32_t key; /* lkey == rkey: (generation << 16) | index */
    uint64_t addr;
    uint64_t length;
    uint32_t access;
    uint32_t pdn;
    uint32_t users; /* same-host CMA copies in flight (any process):
                         incremented (seq_cst) before the entry is checked,
                         decremented after the copy; dereg waits for 0 */
    uint32_t reserved;
} sn_mr_entry_t;

/*
 * After the MR entries, the shared memory holds one 64-bit word per QP slot:
 * (qpn << 32) | qp_access_flags in RTR and RTS, (qpn << 32) | SN_QPT_ERR
 * while the QP is in ERR, (qpn << 32) | SN_QPT_BELOW_RTR in RESET and
 * INIT, 0 for a free slot. Written with one atomic store (seq_cst) by
 * the owner under the QP lock, read with one atomic load (acquire) by
 * same-host initiators before every CMA WRITE/READ (and WRITE batch), so
 * that the target QP's access flags and its ERR state are enforced on the
 * CMA path exactly as on the TCP path.
 * ERR revokes the rights at the transition: sn_qp_to_error() stores the ERR
 * word before it flushes anything, so before softnic_qp_modify() (or the
 * failure that moved the QP to ERR) returns. A CMA access whose load comes
 * after that store executes nothing (the initiator sends the WR on TCP,
 * where the responder drops it: RETRY_EXC_ERR after the initiator's retry
 * budget). An access that loaded the word before the store was already
 * executing at the transition, as a packet a NIC had begun to place: its
 * copy may still finish after it (the transition does not wait for it, as
 * deregistration waits for MR users).
 * The TCP responder loads the same word (acquire) before each piece of a
 * WRITE or SEND payload it places and each READ response send call
 * (sn_qp_table_live): from the transition on it places and sends nothing
 * more of a request it had begun (a NIC responder in error drops the
 * packets still coming and stops answering); what it placed or sent
 * before stays (at most one recv() or READ send call after the store).
 */
#define SN_QPT_ERR 0x80000000u /* the QP is in ERR: nothing executes */
/* The QP is in RESET or INIT: it grants nothing yet (rights start at RTR,
 * as on a NIC, whose QP below RTR takes no packet); a CMA WRITE/READ goes
 * on TCP, whose responder NAKs it "not ready" (sn_req.c: retried, the
 * transport budget decides) */
#define SN_QPT_BELOW_RTR 0x40000000u
enum {
    SN_QPT_ALLOWED = 0, /* sn_qp_table_check: the QP grants the access */
    SN_QPT_DENIED,      /* no such QP, or the right is missing */
    SN_QPT_SILENT,      /* the QP is in ERR: no execution, no answer */
    SN_QPT_NOT_READY    /* RESET/INIT: not ready for requests */
};

/* A consistent copy of an entry. */
typedef struct sn_mr_snap {
    uint32_t seq;
    uint32_t key;
    uint64_t addr;
    uint64_t length;
    uint32_t access;
    uint32_t pdn;
} sn_mr_snap_t;

typedef struct sn_inst sn_inst_t;
typedef struct sn_stream sn_stream_t;
typedef struct sn_chan sn_chan_t;
typedef struct sn_qp sn_qp_t;

/*
 * A soft device handle = one softnic instance.
 * Immutable after open: config, ifname, ip, gid, host, pid, id, listen_port,
 * mrs.
 * lock protects: qp list, pdn/qpn counters, use counts. mr_lock serialises
 * MR table writers (reg/dereg) of this process. busy_mr is written only by
 * the service thread (seq_cst), read by dereg (see header comment).
 */
/* The receives of the pass under way over one target connection's
 * requests (sn_stream_rx) that wait for the pass's one ACK, written before
 * they complete (sn_resp.c, "ACK coalescing"): requests first_seq ..
 * first_seq + num - 1 of chan, executed, their completions in wc[] in
 * order; empty (num 0) outside a pass. A pass reads one connection and
 * sn_stream_rx ends every pass with sn_resp_batch_end: the batch never holds
 * two connections' receives (the run of a payload after which the pass
 * ends, sn_stream_spent, writes it already, under the QP lock it holds). */
typedef struct sn_ack_batch {
    sn_chan_t *chan;
    int num;
    uint32_t first_seq;
    uint64_t bytes;
    struct ibv_wc wc[SN_ACK_BATCH];
    uint8_t solicited[SN_ACK_BATCH];
} sn_ack_batch_t;

struct sn_inst {
    softnic_dev_t super;
    softnic_config_t config; /* as opened, ifaces = NULL */
    char ifname[32];
    struct in_addr ip;
    union ibv_gid gid;
    sn_host_id_t host;
    pid_t pid;
    uint32_t id; /* per-process instance number */
    uint16_t listen_port;
    int listen_fd;
    int epoll_fd;  /* the listener, cmd_fd, ud_fd and the connections */
    int idle_epfd; /* the same with the quiet connections only */
    int cmd_fd;    /* eventfd waking the service thread */
    pthread_t thread;
    int thread_started;
    int stopping; /* service thread: exit */
    /* The service loop's body (socket events, commands, timers) runs under
     * svc_lock, on the service thread or on a polling thread
     * (sn_svc_poll, trylock only); "service thread only" below means
     * "svc_lock holder". Taken before any other lock; a thread holding
     * another softnic lock never waits for it. svc_gen (written under
     * svc_lock, read atomically) counts pollers' steps that handled events,
     * so that the service thread knows when the events it waited for may
     * be stale.
     * svc_want (atomic): the service thread waits for svc_lock, pollers
     * keep off (standing back, it only tries: "Polling").
     * num_tcp_streams (atomic, written under svc_lock): ready
     * connections carrying data on TCP; without any, pollers do not step.
     * poll_steps (written under svc_lock, read atomically): pollers' steps,
     * whether they found events or not. posts (atomic add by any poster,
     * relaxed; read by the service thread): post calls (sn_post_end) that
     * queued WRs on an RC QP while num_tcp_streams > 0 (see "Polling":
     * without TCP connections pollers do not step and nothing stands back). arm_gen (atomic add, seq_cst):
     * arms of the instance's CQs. svc_standby (service thread writes,
     * seq_cst): it waits on idle_epfd, not on the sockets; an armer that
     * sees it set wakes the service thread (cmd_fd), and the service
     * thread, after setting it, loads arm_gen again (seq_cst both sides:
     * either the armer sees the flag or the service thread sees the arm).
     * ring_standby (service thread writes, seq_cst): its timer pass, which
     * consumes the same-host rings of targets that do not poll, comes
     * every SN_RING_LOOK_NS instead of every millisecond ("Polling"); an
     * armer that sees it set wakes the service thread, with the same
     * handshake on arm_gen. */
    pthread_mutex_t svc_lock;
    uint64_t svc_gen;
    int svc_want;
    int num_tcp_streams;
    uint64_t poll_steps;
    uint64_t posts;
    uint64_t arm_gen;
    int svc_standby;
    int ring_standby;

    pthread_mutex_t lock;
    sn_qp_t *qps;       /* all QPs of the instance */
    sn_qp_t **qp_slots; /* QPN -> QP (index bits) */
    uint16_t *qp_gen;   /* per slot generation */
    uint32_t next_pdn;
    int num_qps;
    /* commands for the service thread: cmd_lock (a leaf lock, may be taken
     * under any other lock) protects the queue and cmd_done; cmd_cond is
     * signalled when cmd_done advances */
    pthread_mutex_t cmd_lock;
    struct sn_cmd *cmd_head, *cmd_tail;
    pthread_cond_t cmd_cond;
    uint64_t cmd_posted;
    uint64_t cmd_done;
    uint64_t next_stream_id; /* service thread only */

    /* MR table */
    pthread_mutex_t mr_lock;
    char shm_name[64];
    sn_mr_entry_t *mrs; /* shared memory, SN_MAX_MR
                                          entries, then the QP table */
    uint16_t *mr_gen;   /* per entry generation, private */
    int num_rings;      /* attached rings (both roles),
                                          atomic */
    int busy_mr;        /* entry index the svc_lock holder
                                          is touching, or -1 */
    int num_batched;    /* QPs with a same-host WRITE batch,
                                          atomic (written under their QP
                                          locks): pollers skip the search
                                          while it is 0 */
    int num_corked;     /* QPs with request frames held back
                                          in their sockets (tx_corked), the
                                          same way */

    sn_stream_t *streams; /* service thread only */
    int num_ack_owed;     /* channels with ack_owed: written by the svc_lock
                         holder, read atomically by the service thread */
    int ack_hold;         /* svc_lock holder only: the step under way may hold
                         ACKs back (a poller's, the service thread standing
                         back from the sockets) */
    int num_held;         /* service thread only: streams holding a request */
    uint8_t *scratch;     /* service thread only, CHUNK bytes */
    /* svc_lock holder only: the connection a poller's step reads without
     * asking epoll ("Polling"), or NULL */
    sn_stream_t *hot_stream;
    int polling; /* svc_lock holder only: the events being handled are
                    a poller's step's (sn_svc_dispatch, sn_svc_poll) */

    /* UD (sn_ud.c). ud_fd: the UDP socket of the device's address and
     * listener port, opened with the listener, immutable while open; any
     * thread sends on it (one sendto per datagram), only the svc_lock
     * holder receives from it into ud_rxbuf (svc_lock holder only).
     * num_ud_qps (atomic): UD QPs of the instance; while there are any, an
     * empty CQ poll also receives datagrams (sn_ud_poll). */
    int ud_fd;
    uint8_t *ud_rxbuf;
    int num_ud_qps;
    sn_ack_batch_t ack_batch; /* svc_lock holder only */
};

/* Has any QP of the instance a WRITE batch or request frames held back? */
static inline int sn_cq_holds_writes(sn_inst_t *inst)
{
    return __atomic_load_n(&inst->num_batched, __ATOMIC_RELAXED) ||
           __atomic_load_n(&inst->num_corked, __ATOMIC_RELAXED);
}

typedef struct sn_pd {
    softnic_pd_t super;
    uint32_t pdn;
} sn_pd_t;

typedef struct sn_mr {
    softnic_mr_t super;
    int index;
} sn_mr_t;

/*
 * Completion channel. The pipe carries one 8-byte event record per event:
 * the cq_context of the CQ (see softnic.h). num_cqs under the instance lock.
 */
typedef struct sn_channel {
    softnic_comp_channel_t super;
    int wfd;
    int num_cqs;
} sn_channel_t;

/*
 * CQ: a ring of ibv_wc. lock protects ring, head, count, armed, overrun.
 * Producers: posting threads and the service thread; consumer: cq_poll.
 * count and overrun are stored atomically (under the lock) so that cq_poll
 * may peek at them without the lock and return 0 for an empty CQ.
 * A completion that a thread pushes into an empty CQ (count 0) while that
 * thread runs an empty cq_poll of it (the poll's ring progress, step, batch
 * flush: a ping-pong's request) goes, under the lock as any push, straight
 * into that poll's wc array, which the poll returns; it never enters the
 * ring, so the poll takes no lock for it. Order holds: nothing is in the
 * ring before it, and what the ring gets after it is for the next poll.
 * The poll's array is known to its own thread only (thread-local
 * sn_cq_taker in sn_cq.c), so no other thread writes it.
 * Lock order: QP lock -> SRQ lock -> CQ lock.
 */
typedef struct sn_cq {
    softnic_cq_t super;
    pthread_mutex_t lock;
    struct ibv_wc *ring;
    int size; /* ring capacity */
    int head;
    int count;
    int armed; /* 0, 1 = any, 2 = solicited only */
    int overrun;
    unsigned events; /* delivered events, under lock */
    unsigned acked;
    int num_qps; /* QPs using the CQ, under instance lock */
    /* QPs using the CQ (send or recv), for poll-driven ring progress.
     * qps_lock protects qps/nqps; cq_poll holds it while it trylocks QPs.
     * Lock order: qps_lock -> QP lock -> SRQ lock -> CQ lock. */
    pthread_mutex_t qps_lock;
    sn_qp_t **qps;
    int nqps;
    /* empty polls of the CQ so far (sn_cq_poll_n): a poster's sign that its
     * application waited (sn_qp_waited). Written by the pollers, read by the
     * posters of the CQ's QPs, both relaxed, no lock: an increment lost to
     * a concurrent poller or a stale read only moves a stream's start by a
     * post. */
    uint32_t empty_polls;
} sn_cq_t;

/* A posted receive (RQ or SRQ). */
typedef struct sn_recv {
    uint64_t wr_id;
    int num_sge;
    struct ibv_sge sge[SN_MAX_SGE];
} sn_recv_t;

/* Bounded FIFO of receives. */
typedef struct sn_rq {
    sn_recv_t *ring;
    uint32_t size;
    uint32_t head;
    uint32_t count;
} sn_rq_t;

/* SRQ: lock protects rq and limit. */
typedef struct sn_srq {
    softnic_srq_t super;
    pthread_mutex_t lock;
    sn_rq_t rq;
    uint32_t max_sge;
    int num_qps; /* under instance lock */
} sn_srq_t;

typedef enum sn_wqe_state {
    SN_WQE_QUEUED = 0, /* not transmitted yet */
    SN_WQE_SENT,       /* transmitted, waiting for the answer */
    SN_WQE_DONE,       /* status final, waiting to complete in order */
    SN_WQE_RING        /* SEND in the same-host ring (seq = slot) */
} sn_wqe_state_t;

/* A send WQE: a private copy of the ibv_send_wr. */
typedef struct sn_wqe {
    uint64_t wr_id;
    uint32_t seq;   /* request sequence on the wire */
    uint8_t opcode; /* enum ibv_wr_opcode */
    uint8_t state;
    uint8_t status; /* enum ibv_wc_status when DONE */
    uint8_t signaled;
    uint8_t fence;
    uint8_t solicited;
    uint8_t num_sge;
    uint8_t is_inline;
    uint32_t length; /* total bytes */
    uint32_t imm;    /* network order */
    uint32_t rkey;
    uint64_t raddr;
    uint64_t compare_add;
    uint64_t swap;
    uint32_t done_bytes; /* READ: bytes received so far */
    uint32_t acked;      /* the frame's `acked` and `ack_new` (sn_wire.h),
                            from rx_ack when the frame starts */
    uint16_t ack_new;
    uint8_t has_seq; /* seq assigned (transmitted once) */
    struct ibv_sge sge[SN_MAX_SGE];
    uint8_t inline_data[SN_MAX_INLINE];
} sn_wqe_t;

/*
 * RC QP.
 * lock protects every field below it (state, attributes, queues, tx and
 * retry state, connection fields). It is taken by posting threads,
 * modify/query, and the service thread (responses, connection setup,
 * timers, target-side execution). Lock order: instance lock -> QP lock ->
 * SRQ lock -> CQ lock. A thread holding a QP lock never waits for the
 * service thread.
 */
struct sn_qp {
    softnic_qp_t super;
    sn_qp_t *next; /* instance list, instance lock */
    pthread_mutex_t lock;
    enum ibv_qp_state state;
    struct ibv_qp_attr attr;          /* current attributes */
    softnic_qp_init_attr_t init_attr; /* with the actual caps */
    uint32_t pdn;
    sn_cq_t *send_cq;
    sn_cq_t *recv_cq;
    sn_srq_t *srq;
    sn_rq_t rq; /* own receive queue if srq == NULL */
    /* a receive was posted to rq, ever (softnic_post_recv, under the QP
     * lock; atomic store); read without the lock by the svc_lock holder
     * (sn_qp_takes_recvs: a stale 0 keeps a stream quiet one event longer) */
    int rq_used;

    /* Send queue: WQEs [sq_head, sq_tail) in posting order (free-running
     * counters, index % sq_size). [sq_head, sq_tx) are transmitted (SENT) or
     * DONE, [sq_tx, sq_tail) are QUEUED or failed locally (DONE). */
    sn_wqe_t *sq;
    uint32_t sq_size;
    uint32_t sq_head, sq_tx, sq_tail;
    uint32_t tx_seq;  /* next wire sequence to assign */
    uint32_t rsp_seq; /* every request below it has had its answer */
    /* the peer's requests this QP has answered (low 32 bits: its target
     * connection's expected sequence) and (high 32 bits) how many of them
     * were answered in frames of that connection (the rest: coalesced
     * ACKs, see "ACK coalescing"): one word written by the svc_lock
     * holder (release, the QP lock not needed), read under the QP lock
     * (acquire) into each request frame (sn_wire.h: acked, ack_new) and
     * ring SEND slot (the low half) */
    uint64_t rx_ack;
    /* the `acked` of the last request frame whose header went out with
     * ACKs in it (ack_new > 0): written under the QP lock (release) by
     * the thread writing the frame, read by the svc_lock holder
     * (acquire), which then owes the peer no frame for those */
    uint32_t ack_carried;
    uint32_t tx_off;   /* bytes of sq[sq_tx]'s frames sent */
    int tx_blocked;    /* EPOLLOUT requested */
    int rd_atomic_out; /* READ/atomics SENT, not DONE */
    int sent_out;      /* WQEs SENT, not DONE */
    /* the application streams on the QP (see the header comment: same-host
     * WRITE batches and request coalescing on TCP; a QP has at most one of
     * them at a time, one needs the peer on this host, the other on
     * another), posting thread, under the QP lock: post_streak: posts in a
     * row that came within SN_BATCH_GAP_NS of the previous one's return,
     * from SN_BATCH_STREAK on a stream; post_end_ns: when the last one
     * returned (when it started, if all it did was add WRITEs to the
     * batch). Posts that count: on a same-host QP those with a WRITE that
     * may join the batch (read at the first such WRITE), on a QP whose
     * requests go on TCP all made while it is connected (read at the
     * post's start); any other post ends the stream (both 0, no clock
     * read), and so does a same-host post whose WRITE comes after a wait
     * (polls_seen) */
    uint64_t post_end_ns;
    int post_streak;
    /* the empty_polls of the send CQ [0] and of the receive CQ [1] at the
     * last same-host post with a WRITE that may join the batch (posting
     * thread, under the QP lock; sn_qp_waited) */
    uint32_t polls_seen[2];
    /* the same at the service thread's last timer pass over the QP (under
     * the QP lock; sn_svc_qp_driven): did a poller drive its rings since */
    uint32_t svc_polls_seen[2];
    /* request coalescing: tx_stream: the post under way streams on TCP,
     * its small frames may be held back; tx_corked: frames of the QP wait
     * in its socket for a push (written under the QP lock, atomically: CQ
     * pollers peek at it without the lock; inst->num_corked counts such
     * QPs); the empty polls that saw them are counted in batch_idle, as
     * those that saw a batch */
    int tx_stream;
    int tx_corked;
    /* same-host WRITE batch (see the header comment): the WQEs
     * [sq_tx, sq_tx + cma_batch) == [sq_tx, sq_tail), QUEUED WRITEs
     * (written atomically: CQ pollers peek at it without the lock);
     * batch_idle: empty polls that saw the batch since the last WRITE
     * joined it, of the send CQ [0] and of the receive CQ [1] (when it is
     * another one) */
    uint32_t cma_batch;
    int batch_idle[2];

    /* retry state (RNR and not-ready NAKs) and the transport timer */
    int rewind_pending;     /* go back to rewind_to at the next
                                           frame boundary */
    uint32_t rewind_to;     /* SQ counter */
    uint64_t hold_until_ns; /* no new frame before (0: none) */
    int rnr_count;
    int retry_count; /* not-ready NAKs in a row */
    uint64_t last_progress_ns;
    /* the transport timer (sn_qp_timers): attempts that ran out since
     * last_progress_ns was tmo_progress_ns, the current one's start */
    uint64_t tmo_progress_ns;
    uint64_t tmo_start_ns;
    int tmo_count;

    /* initiator connection: the stream that carries the QP's initiator
     * channel (sn_wire.h); stream_fd (its socket) valid only when
     * conn_state == READY */
    int conn_state; /* SN_CONN_* */
    int stream_fd;
    uint32_t chan_id; /* the target's id of the channel, in each request
                         frame: valid as stream_fd */
    /* the service thread's stream, 0: none; written under the QP lock
     * (atomic stores), read under it, or by the svc_lock holder without it
     * (atomic load) to tell an event of a stale stream */
    uint64_t stream_id;
    sn_stream_t *stream; /* valid while stream_id != 0 */
    int same_host;       /* peer reachable by CMA */
    pid_t peer_pid;
    uint32_t peer_pdn;
    sn_mr_entry_t *peer_mrs; /* peer's table (shared map) */

    /* same-host SEND ring, initiator side (see sn_ring.c) */
    struct sn_ring *ring; /* mapped ring, or NULL */
    uint64_t ring_prod;   /* slots produced */
    uint64_t ring_reaped; /* slots whose WQE completed */
    int ring_out;         /* WQEs in state RING; written under the QP
                             lock, peeked at without it by a CQ poll (a
                             stale value delays a reap by one poll) */
    int ring_atomic_out;  /* of which atomics (for FENCE) */
    /* target side: rings of initiators sending to this QP; the list
     * changes under the QP lock and sn_cq_walks_lock(), so a CQ poll that
     * holds its qps_lock may read it, and the rings it names stay mapped */
    struct sn_ring_att *rings;
};

enum {
    SN_CONN_NONE = 0,
    SN_CONN_CONNECTING,
    SN_CONN_READY,
    SN_CONN_FAILED
};

/* Instance helpers (sn_dev.c) */
uint64_t sn_now_ns(void);
/* sn_now_ns() at the time of the call within a few ms, at a sixth of the
 * cost: the coarse clock plus one of its ticks (~1-4 ms). The coarse clock
 * lags by up to about a tick, more when the tick was deferred (tickless
 * idle CPUs; 6 ms seen with a 4 ms tick), so a stamp is usually later than
 * now, now and then a few ms earlier. For the per-operation "last
 * progress" stamps, which only start a timeout budget of at least 20 ms per
 * attempt: a budget may end a few ms late or early. */
uint64_t sn_stamp_ns(void);
/* A message of an instance, delivered per its config (softnic.h) */
void sn_log(sn_inst_t *inst, softnic_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* An asynchronous event of the instance's object, to its event callback */
static inline void sn_event(const sn_inst_t *inst, enum ibv_event_type type,
                            void *context)
{
    if (inst->config.event_fn != NULL) {
        inst->config.event_fn(inst->config.event_arg, type, context);
    }
}
/* A message before an instance exists (dev "-"); config may be NULL */
void sn_log_cfg(const softnic_config_t *config, softnic_log_level_t level,
                const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Rule switches. A build leaves a rule out only when compiled with
 * -DSN_MUTATE_NO_<RULE>: contrib/softnic-mutate does that, one rule at a
 * time, in a scratch build tree, to show that some test fails without the
 * rule (a test that passes either way tests nothing). No configure option
 * defines them; a shipped build keeps every rule.
 */
#ifdef SN_MUTATE_NO_ACCESS /* MR and QP access rights (not bounds) */
#define SN_RULE_ACCESS 0
#else
#define SN_RULE_ACCESS 1
#endif
#ifdef SN_MUTATE_NO_FENCE /* IBV_SEND_FENCE waits for READs/atomics */
#define SN_RULE_FENCE 0
#else
#define SN_RULE_FENCE 1
#endif
#ifdef SN_MUTATE_NO_RNR /* RNR NAK retried (rnr_retry, timer) */
#define SN_RULE_RNR 0
#else
#define SN_RULE_RNR 1
#endif
#ifdef SN_MUTATE_NO_FLUSH_ORDER /* flushed WRs complete in posting order */
#define SN_RULE_FLUSH_ORDER 0
#else
#define SN_RULE_FLUSH_ORDER 1
#endif
#ifdef SN_MUTATE_NO_ATOMICITY /* atomics are one indivisible access */
#define SN_RULE_ATOMICITY 0
#else
#define SN_RULE_ATOMICITY 1
#endif
#ifdef SN_MUTATE_NO_RKEY_INVAL /* a deregistered region's keys are dead */
#define SN_RULE_RKEY_INVAL 0
#else
#define SN_RULE_RKEY_INVAL 1
#endif
#ifdef SN_MUTATE_NO_PSN_ORDER /* requests execute in sequence only */
#define SN_RULE_PSN_ORDER 0
#else
#define SN_RULE_PSN_ORDER 1
#endif
#ifdef SN_MUTATE_NO_RETRY_BUDGET /* a dead peer: fail after the budget */
#define SN_RULE_RETRY_BUDGET 0
#else
#define SN_RULE_RETRY_BUDGET 1
#endif
#ifdef SN_MUTATE_NO_ACK_FIRST /* ring: a SEND completes before its answer */
#define SN_RULE_ACK_FIRST 0
#else
#define SN_RULE_ACK_FIRST 1
#endif
#ifdef SN_MUTATE_NO_TCP_ACK_FIRST /* TCP: a SEND completes before its answer */
#define SN_RULE_TCP_ACK_FIRST 0
#else
#define SN_RULE_TCP_ACK_FIRST 1
#endif
#ifdef SN_MUTATE_NO_ERR_SILENT /* ring: a target in ERR leaves the slots */
#define SN_RULE_ERR_SILENT 0
#else
#define SN_RULE_ERR_SILENT 1
#endif
#ifdef SN_MUTATE_NO_TCP_ERR_SILENT /* TCP: a target in ERR answers nothing */
#define SN_RULE_TCP_ERR_SILENT 0
#else
#define SN_RULE_TCP_ERR_SILENT 1
#endif
#ifdef SN_MUTATE_NO_RNR_RENEW /* ring: an RNR wait renews the transport timer */
#define SN_RULE_RNR_RENEW 0
#else
#define SN_RULE_RNR_RENEW 1
#endif
#ifdef SN_MUTATE_NO_CMA_ERR /* CMA: ERR revokes the target QP's rights */
#define SN_RULE_CMA_ERR 0
#else
#define SN_RULE_CMA_ERR 1
#endif
#ifdef SN_MUTATE_NO_PATH_ORDER /* ring and TCP never both carry WRs */
#define SN_RULE_PATH_ORDER 0
#else
#define SN_RULE_PATH_ORDER 1
#endif
#ifdef SN_MUTATE_NO_MIXED_ACK_FIRST /* ring/TCP: a SEND completes first */
#define SN_RULE_MIXED_ACK_FIRST 0
#else
#define SN_RULE_MIXED_ACK_FIRST 1
#endif
#ifdef SN_MUTATE_NO_ERR_STOPS /* ERR stops READ data and WRITE placing */
#define SN_RULE_ERR_STOPS 0
#else
#define SN_RULE_ERR_STOPS 1
#endif
#ifdef SN_MUTATE_NO_CMA_RTR /* CMA: no rights before RTR */
#define SN_RULE_CMA_RTR 0
#else
#define SN_RULE_CMA_RTR 1
#endif
#ifdef SN_MUTATE_NO_NR_BUDGET /* "not ready": the transport budget decides */
#define SN_RULE_NR_BUDGET 0
#else
#define SN_RULE_NR_BUDGET 1
#endif
#ifdef SN_MUTATE_NO_STANDBY_ENDS /* the service thread serves sockets again */
#define SN_RULE_STANDBY_ENDS 0
#else
#define SN_RULE_STANDBY_ENDS 1
#endif
#ifdef SN_MUTATE_NO_ACK_BOUND /* an owed ACK leaves without a frame back */
#define SN_RULE_ACK_BOUND 0
#else
#define SN_RULE_ACK_BOUND 1
#endif
#ifdef SN_MUTATE_NO_NAK_STOPS /* nothing executes behind a NAK/failed slot */
#define SN_RULE_NAK_STOPS 0
#else
#define SN_RULE_NAK_STOPS 1
#endif
#ifdef SN_MUTATE_NO_BATCH_FLUSH /* a pending WRITE batch (or held-back
                                  frames: "Request coalescing") runs
                                  unprompted */
#define SN_RULE_BATCH_FLUSH 0
#else
#define SN_RULE_BATCH_FLUSH 1
#endif

/* Is opcode (enum ibv_wr_opcode) one of the two 64-bit atomics? */
static inline int sn_opcode_is_atomic(int opcode)
{
    return (opcode == IBV_WR_ATOMIC_CMP_AND_SWP) ||
           (opcode == IBV_WR_ATOMIC_FETCH_AND_ADD);
}

/* Is opcode (enum ibv_wr_opcode) a READ or an atomic: a WR that counts
 * against max_rd_atomic (rd_atomic_out) and writes its local buffer? */
static inline int sn_opcode_is_rd_atomic(int opcode)
{
    return (opcode == IBV_WR_RDMA_READ) || sn_opcode_is_atomic(opcode);
}

/* The target side of an atomic on 8 checked bytes: fetch-add (fadd) or
 * compare-swap; returns the original value. Without the rule: a read and a
 * write with a yield between them, the window the rule closes. */
static inline uint64_t sn_atomic_exec(uint64_t *target, int fadd,
                                      uint64_t compare_add, uint64_t swap)
{
    uint64_t value = compare_add;

    if (!SN_RULE_ATOMICITY) {
        value = __atomic_load_n(target, __ATOMIC_RELAXED);
        sched_yield();
        if (fadd || (value == compare_add)) {
            __atomic_store_n(target, fadd ? value + compare_add : swap,
                             __ATOMIC_RELAXED);
        }
    } else if (fadd) {
        value = __atomic_fetch_add(target, compare_add, __ATOMIC_SEQ_CST);
    } else {
        __atomic_compare_exchange_n(target, &value, swap, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST);
    }
    return value;
}

/* MR table (sn_mr.c) */
int sn_mr_table_init(sn_inst_t *inst);
void sn_mr_table_cleanup(sn_inst_t *inst);
int sn_mr_read(const sn_mr_entry_t *table, uint32_t key, sn_mr_snap_t *snap);
int sn_mr_still_valid(const sn_mr_entry_t *table, const sn_mr_snap_t *snap);
/* 0 or an ibv_wc_status: check [addr, addr+len) against key in table. */
int sn_mr_check(const sn_mr_entry_t *table, uint32_t key, uint32_t pdn,
                uint64_t addr, uint64_t len, int access, sn_mr_snap_t *snap);
/* sn_mr_check() where snap holds the entry an earlier check read (key 0:
 * none): when it is key's and the entry's seq is still the one read, no
 * writer came since and the copy is what a new read would give, so only
 * the bounds and rights are checked (one load instead of a seqlock read);
 * else the entry is read again into snap (key 0 when that fails). */
int sn_mr_check_again(const sn_mr_entry_t *table, uint32_t key, uint32_t pdn,
                      uint64_t addr, uint64_t len, int access,
                      sn_mr_snap_t *snap);
/* Service thread: announce/stop touching a local MR; returns 0 if the entry
 * is still the one in snap (then the region may be touched until end). */
int sn_mr_busy_begin(sn_inst_t *inst, const sn_mr_snap_t *snap);
void sn_mr_busy_end(sn_inst_t *inst);
void sn_qp_table_set(sn_inst_t *inst, uint32_t qpn, uint32_t access);
/* Does QP qpn of the table's owner exist and grant access? SN_QPT_* */
int sn_qp_table_check(const sn_mr_entry_t *table, uint32_t qpn, int access);
/* Is QP qpn of the table's owner in RTR/RTS (not ERR, RESET, INIT)? */
static inline int sn_qp_table_live(const sn_mr_entry_t *table, uint32_t qpn)
{
    return sn_qp_table_check(table, qpn, 0) == SN_QPT_ALLOWED;
}
sn_mr_entry_t *sn_mr_table_map(uint64_t pid_ns, pid_t pid, uint32_t id);
void sn_mr_table_unmap(const sn_mr_entry_t *table);
/* same-host initiator: enter / leave an entry of a peer's table around a
 * check + CMA copy; enter returns the entry (NULL for an impossible key) */
sn_mr_entry_t *sn_mr_enter(sn_mr_entry_t *table, uint32_t key);
void sn_mr_leave(sn_mr_entry_t *entry);

/* CQ (sn_cq.c) */
/* register / unregister a QP using the CQ (no QP lock held) */
int sn_cq_add_qp(sn_cq_t *cq, sn_qp_t *qp);
void sn_cq_del_qp(sn_cq_t *cq, sn_qp_t *qp);
/* take / release the qps_lock of the QP's CQs (one lock when they are the
 * same CQ, else in address order): what a CQ poll peeks at without the QP
 * lock (sn_cq_ring_progress) changes only under them */
void sn_cq_walks_lock(sn_qp_t *qp);
void sn_cq_walks_unlock(sn_qp_t *qp);
/* Complete wc[0..n-1] on cq, in order, under one hold of its lock (lock
 * order above: taken under a QP or SRQ lock, never the other way round);
 * solicited[i] (NULL: none is) marks those that fire a CQ armed for
 * solicited events; an armed CQ fires at most once per call, as it
 * disarms. sn_cq_push: the same for one completion. */
void sn_cq_push_n(sn_cq_t *cq, const struct ibv_wc *wc,
                  const uint8_t *solicited, int n);
void sn_cq_push(sn_cq_t *cq, const struct ibv_wc *wc, int solicited);

/* QP (sn_qp.c); "QP lock held" where noted */
sn_qp_t *sn_qp_find(sn_inst_t *inst, uint32_t qpn);
/* QP lock held: move to ERR, flush both queues, drop the connection */
void sn_qp_to_error(sn_qp_t *qp);
/* QP lock held: transmit what may be transmitted */
void sn_qp_tx(sn_qp_t *qp);
/* QP lock held: emit the completions of DONE WQEs at the head, in order */
void sn_qp_complete(sn_qp_t *qp);
/* QP lock held: execute the QP's same-host WRITE batch (if any) and
 * complete what it finished */
void sn_qp_cma_flush(sn_qp_t *qp);
/* A CQ is polled or armed: flush the WRITE batches of its QPs and push the
 * request frames they hold back. wait: take every QP lock (else a QP whose
 * lock is busy is left to the next poll). */
void sn_cq_flush_batches(sn_cq_t *cq, int wait);
/* Thread-local, initial-exec: one %fs-relative access, where the model of a
 * shared library calls __tls_get_addr (~18 Ir); a dlopen()ed library takes
 * it from the static TLS surplus, which has room for a few words */
#define SN_TLS_IE \
    __thread __attribute__((tls_model("initial-exec"), visibility("hidden")))
/* When the timing of this thread's run of empty polls (of any CQ) began (its
 * second poll), or its last sched_yield() in that run; 0 = none: its last
 * poll returned something, or a WR it posted completed within the post
 * ("Polling"). Thread-local (sn_cq.c), no lock. */
extern SN_TLS_IE uint64_t sn_cq_spin_since;
/* Any thread: a completion came to it (a poll returned it, or its WR
 * completed within its post): its run of empty polls ends ("Polling") */
static inline void sn_cq_run_end(void)
{
    sn_cq_spin_since = 0;
}
/* QP lock held: the oldest unfinished WQE fails with status; the QP goes to
 * ERR when it completes */
void sn_qp_fail_oldest(sn_qp_t *qp, enum ibv_wc_status status);
/* QP lock held: the QP's connection is gone (closed, reset or refused by
 * the peer, a bad frame, a failed send) or the peer's process is (CMA
 * ESRCH): the peer is silent from now on, as a dead node is to a NIC.
 * Nothing more is transmitted; what the target executed from the same-host
 * ring completes as such; the transport timer (sn_qp_timers) fails the
 * oldest unfinished WR once the QP's budget runs out. Drops the
 * connection (by command) if the QP still names one. in_svc: called by
 * the svc_lock holder. */
void sn_qp_peer_lost(sn_qp_t *qp, int in_svc);
/* QP lock held: lock the receive queue the QP consumes from and return it
 * (an SRQ's own lock; a plain RQ is under the QP lock already). QPs sharing
 * an SRQ are drained by different threads, so checking for a receive,
 * claiming the message it is for and popping it happen under one lock; the
 * same-host ring holds it for a run of messages: it counts the receives,
 * claims the slots of as many messages at once and places each into its
 * receive (sn_ring.c), and pushes their completions once it let the lock
 * go. */
sn_rq_t *sn_qp_recv_lock(sn_qp_t *qp);
void sn_qp_recv_unlock(sn_qp_t *qp);
/* Can a request to the QP complete in one of its CQs? Only a SEND or a
 * WRITE_WITH_IMM, into a receive: an SRQ, or one posted ever (rq_used).
 * Without the QP lock (see rq_used). */
static inline int sn_qp_takes_recvs(const sn_qp_t *qp)
{
    return (qp->srq != NULL) || __atomic_load_n(&qp->rq_used, __ATOMIC_RELAXED);
}
/* QP lock held: write an atomic's original value into the WR's 8-byte local
 * buffer. IBV_WC_LOC_PROT_ERR when its MR no longer allows that. in_svc: on
 * the service thread, which announces the region it touches (busy_mr) so
 * that a deregistration waits for it. */
enum ibv_wc_status sn_qp_put_atomic_result(sn_qp_t *qp, const sn_wqe_t *wqe,
                                           uint64_t value, int in_svc);
/* Under sn_qp_recv_lock(), the queue not empty: take the next receive. The
 * entry returned stays as it is while the lock is held (a post takes it). */
static inline const sn_recv_t *sn_rq_take(sn_rq_t *rq)
{
    const sn_recv_t *recv = &rq->ring[rq->head];

    if (++rq->head == rq->size) {
        rq->head = 0;
    }
    --rq->count;
    return recv;
}
/* Under sn_qp_recv_lock(): take the next receive; -1 when empty */
int sn_rq_pop(sn_rq_t *rq, sn_recv_t *recv);
/* QP lock held: take the next receive of the QP's RQ or SRQ */
int sn_qp_pop_recv(sn_qp_t *qp, sn_recv_t *recv);
/* QP lock held: place a message of len bytes into a receive's buffers;
 * IBV_WC_LOC_LEN_ERR when they are too small, IBV_WC_LOC_PROT_ERR for a bad
 * lkey. in_svc: on the svc_lock holder, which announces each region it
 * writes (busy_mr) so that a deregistration waits for it. snap: the
 * caller's copy of the region last checked (key 0: none; sn_mr_check_again),
 * for a caller placing many messages in a row. */
enum ibv_wc_status sn_qp_place_recv(sn_qp_t *qp, const sn_recv_t *recv,
                                    const uint8_t *data, uint32_t len,
                                    int in_svc, sn_mr_snap_t *snap);
/* per-attempt transport timeout, 0 = infinite */
uint64_t sn_qp_timeout_ns(const sn_qp_t *qp);
uint64_t sn_rnr_timer_ns(uint8_t timer);
/* QP lock held: service-thread timer work; returns the next deadline (ns,
 * 0 = none) */
uint64_t sn_qp_timers(sn_qp_t *qp, uint64_t now);

/* Same-host SEND rings (sn_ring.c) */
#define SN_RING_SLOTS 32
#define SN_RING_DATA  (8192 - 64)

/* A target QP's attachment to one initiator's ring (one per connection),
 * read and written under the target QP's lock only */
typedef struct sn_ring_att {
    struct sn_ring_att *next;
    struct sn_ring *ring;
    uint32_t src_qpn;
    /* a slot of this ring failed at the target: the initiator's QP went
     * to ERR and flushes what it posted behind it, so no later slot is
     * consumed (rule SN_RULE_NAK_STOPS); a reconnected initiator QP comes
     * on a new connection with a new ring */
    int stopped;
} sn_ring_att_t;

/* Target side (service thread): create a ring for a same-host initiator;
 * returns the mapping and its id, or NULL. */
struct sn_ring *sn_ring_create(sn_inst_t *inst, uint32_t *id_p);
void sn_ring_destroy(sn_inst_t *inst, struct sn_ring *ring, uint32_t id);
/* Initiator side: map the target's ring (and unlink its name). */
struct sn_ring *sn_ring_map(uint64_t pid_ns, pid_t pid, uint32_t inst_id,
                            uint32_t ring_id);
void sn_ring_unmap(struct sn_ring *ring);
void sn_ring_set_rnr_timer(struct sn_ring *ring, uint8_t timer);
/* QP lock held: put the SEND WQE at SQ counter index (== sq_tx, everything
 * before it transmitted) into the ring if allowed; returns 1 if done.
 * may_reap: reap completions first when the ring is full. */
int sn_ring_post(sn_qp_t *qp, uint32_t index, int may_reap);
/* QP lock held: consume incoming ring SENDs / reap own ring completions.
 * in_svc: called by the service thread (then the busy marker is used). */
void sn_ring_progress(sn_qp_t *qp, int in_svc);
/* QP lock held: complete our ring SENDs (and atomics) the target is done
 * with, in order; the WRs queued behind them go out */
void sn_ring_reap(sn_qp_t *qp, int in_svc);
/* QP lock held: cancel outstanding ring SENDs (QP leaves RTS) */
void sn_ring_cancel(sn_qp_t *qp);
/* QP lock held: does a WR of ours wait in the ring for an answer the
 * transport timer bounds (the consumer is not waiting for a receive)? */
int sn_ring_awaits_answer(const sn_qp_t *qp);
/* QP lock held: ring RNR timer; returns next deadline or 0 */
uint64_t sn_ring_timers(sn_qp_t *qp, uint64_t now);
/* cq_poll found nothing: drive ring progress of the CQ's QPs */
void sn_cq_ring_progress(sn_cq_t *cq);

/* UD QPs (sn_ud.c) */
/* The UDP socket on the device's address and the port number of the bound
 * TCP listener tcp_fd (inst->ud_fd); -1 with errno (EADDRINUSE: the port is
 * taken for UDP) */
int sn_ud_open(sn_inst_t *inst, int tcp_fd);
void sn_ud_close(sn_inst_t *inst);
/* svc_lock held: receive and deliver the datagrams waiting (bounded) */
void sn_ud_rx(sn_inst_t *inst);
/* cq_poll found nothing: receive datagrams on this thread when the
 * instance has UD QPs and nobody else holds svc_lock */
void sn_ud_poll(sn_inst_t *inst);
/* The UD state machine (IB spec 11.2.5); -1 for an illegal transition */
int sn_ud_trans(enum ibv_qp_state cur, enum ibv_qp_state next, int *req_p,
                int *opt_p);
int sn_ud_post_send(sn_qp_t *qp, struct ibv_send_wr *wr,
                    struct ibv_send_wr **bad_wr);
/* Is gid an IPv4-mapped GID (::ffff:a.b.c.d)? Its address in *ip if so */
int sn_gid_ipv4(const union ibv_gid *gid, struct in_addr *ip);

/* Service loop (sn_svc.c), streams (sn_stream.c), requester (sn_req.c) */
int sn_svc_start(sn_inst_t *inst);
/* cq_poll found nothing: run one non-blocking step of the service loop on
 * this thread if the instance has TCP data connections and nobody else is
 * running it; nonzero when the step moved bytes (sn_io_moved). Without
 * TCP data connections (one host) it is one load, no call. */
int sn_svc_poll_step(sn_inst_t *inst);
static inline int sn_svc_poll(sn_inst_t *inst)
{
    return (__atomic_load_n(&inst->num_tcp_streams, __ATOMIC_RELAXED) != 0) &&
           sn_svc_poll_step(inst);
}
/* This thread's socket calls on softnic's connections took or gave bytes
 * (a recv that got some, a send that the socket took) since it last cleared
 * it: sn_svc_poll clears it before its step and reads it after, so that a
 * poller whose step moved data is not idle ("Polling"). Thread-local, no
 * lock. */
extern SN_TLS_IE int sn_io_moved;
/* svc_lock holder: stream brought what a poller waits for, requests (a
 * target connection) or READ data (an initiator's): in a poller's step it
 * becomes the hot connection ("Polling") */
void sn_svc_hot(sn_inst_t *inst, sn_stream_t *stream);
void sn_svc_stop(sn_inst_t *inst);
/* Ask the service thread to connect qp (async). */
int sn_svc_connect(sn_inst_t *inst, sn_qp_t *qp);
/* Make the service thread drop every reference to qp; waits. Call without
 * holding any lock. */
void sn_svc_forget_qp(sn_inst_t *inst, sn_qp_t *qp);
/* Ask the service thread to close stream stream_id (async). */
void sn_svc_drop_stream(sn_inst_t *inst, uint64_t stream_id);
/* Wake the service thread (timers changed). */
void sn_svc_wake(sn_inst_t *inst);
/* A CQ of the instance is armed: its application is about to sleep, the
 * service thread serves the sockets again (wakes it if it stood back). */
void sn_svc_armed(sn_inst_t *inst);
/* QP lock held: ask for EPOLLOUT on the QP's connection. */
void sn_svc_want_tx(sn_qp_t *qp);
/* QP lock held: frames of the QP are held back in its socket (corked) or
 * not (sn_int.h, "Request coalescing"); push: send them (no-op if none) */
void sn_req_set_corked(sn_qp_t *qp, int corked);
void sn_req_push(sn_qp_t *qp);
/* QP lock held: write the request frame of wqe, and the REQ_DATA frames
 * of a payload longer than SN_FRAME_MAX (sn_wire.h), from qp->tx_off on.
 * Returns 1 when they are complete, 0 when the socket is full (tx_off
 * advanced), -1 when the connection failed. */
int sn_wire_send_req(sn_qp_t *qp, const sn_wqe_t *wqe);

static inline sn_inst_t *sn_inst(softnic_dev_t *dev)
{
    return (sn_inst_t *)dev;
}

static inline sn_inst_t *sn_qp_inst(sn_qp_t *qp)
{
    return sn_inst(qp->super.pd->dev);
}

#endif /* SN_INT_H_ */
