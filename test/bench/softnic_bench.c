/*
 * softnic_bench: softnic WRITE/READ/SEND latency, bandwidth and message rate
 * between two processes, printed beside references measured in the same
 * run:
 *
 *   same host      raw process_vm_writev/readv between the same processes
 *   two namespaces plain TCP between the same two namespaces: a stream, and
 *                  the best 8-byte ping-pong this machine does (TCP_NODELAY
 *                  on both ends, both ends busy-polling non-blocking
 *                  sockets, as softnic's pollers do); and two floors of
 *                  softnic's ping-pongs, plain TCP ping-pongs that do the
 *                  one thing softnic cannot leave out: "+ ACK write" writes
 *                  a 32-byte ACK (MSG_MORE) before each answer, as softnic
 *                  puts each receive's ACK in its socket before the receive
 *                  completes (sn_int.h, "ACK coalescing"), and "2 conns +
 *                  ACK" does it with the request and the answer on two
 *                  connections, one per direction, as softnic's QPs send
 *                  today (each end writes the ACK into the connection the
 *                  message came on, where it waits for a full segment);
 *                  "woken reader" has each end's bytes read by a thread
 *                  sleeping in epoll_wait that stores them where the main
 *                  thread spins, as softnic's service thread places a WRITE
 *                  for an application that spins on its memory
 *
 * Every figure is printed as a ratio against its reference, with the goals
 * (issues 2 and 12) marked PASS/MISS; a row against a floor has no goal.
 * The ping-pong rows mirror perftest's ib_send_lat (both ends poll their
 * CQ for the peer's SEND) and ib_write_lat (both ends spin on their memory
 * for the peer's WRITE, and on their CQ for their own WRITE's completion;
 * on QPs that never take a receive, as ib_write_lat's);
 * their figure is one way (half the round trip). This is a benchmark, not a test: it always exits
 * 0 when it could measure (1 when it could not).
 *
 * Usage: softnic_bench [-d seconds] [-a netns -b netns [-i ip_b]]
 *   -d  duration of each bandwidth or rate measurement (default 0.7 s)
 *   -a/-b  run the cross-namespace part between these two existing network
 *          namespaces, each with an interface "orc0" (see softnic-bench.sh)
 *   -i  address of orc0 in namespace b (default 198.18.0.2)
 * The softnic devices take their settings from SOFTNIC_NO_CMA,
 * SOFTNIC_NO_RING and SOFTNIC_LOG (softnic_config_from_env).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "softnic/softnic.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_BUF_LEN    (2u << 20)
#define BENCH_LAT_ITERS  20000
#define BENCH_LAT_WARMUP 2000
#define BENCH_DEPTH      8
#define BENCH_RATE_DEPTH 128 /* 8-byte WRITEs in flight for the rate */
#define BENCH_CQ_LEN     (2 * BENCH_RATE_DEPTH)
#define BENCH_RECVS      4
#define BENCH_ROUNDS     3
#define BENCH_ACK_LEN    32 /* softnic's ACK frame (sn_rsp_t) */
/* ping-pong area at the end of each buffer: the peer's WRITEs land at
 * BENCH_PP_DST, SENDs are received at BENCH_PP_RECV, own data at
 * BENCH_PP_SRC */
#define BENCH_PP_DST  (BENCH_BUF_LEN - 4096)
#define BENCH_PP_SRC  (BENCH_BUF_LEN - 2048)
#define BENCH_PP_RECV (BENCH_BUF_LEN - 1024)

/* What the target tells the initiator (over a socketpair). */
typedef struct bench_info {
    pid_t pid;
    uint64_t addr;
    uint32_t rkey;
    uint32_t qpn;
    uint32_t wqpn; /* of wqp */
    uint8_t dev_addr[SOFTNIC_ADDR_LEN];
    uint16_t tcp_port;
} bench_info_t;

typedef struct bench_ep {
    softnic_dev_t *dev;
    softnic_pd_t *pd;
    softnic_cq_t *cq;
    softnic_mr_t *mr;
    softnic_qp_t *qp;
    /* the WRITE ping-pong's QP, as ib_write_lat's: no receive is ever
     * posted to it (so the peer's WRITEs wait for no look of its service
     * thread: sn_int.h, "Polling") */
    softnic_qp_t *wqp;
    uint8_t *buf;
    int sends_out;    /* signaled WRs not completed yet */
    int recvs_posted; /* receives not completed yet */
    int recvs_done;
} bench_ep_t;

/* Commands of the initiator to the target (one byte on the control socket;
 * the target answers each with one byte when it is ready, and another when
 * it is done). EOF ends the target. */
enum {
    BENCH_CMD_SEND_PP  = 's', /* SEND ping-pong */
    BENCH_CMD_WRITE_PP = 'w'  /* WRITE ping-pong */
};

/* Result slots, filled by the initiator and printed by the parent. */
enum {
    R_SH_W_LAT,
    R_SH_R_LAT,
    R_SH_W_64K,
    R_SH_W_1M,
    R_SH_R_64K,
    R_SH_R_1M,
    R_SH_W_RATE,
    R_CMA_W_LAT,
    R_CMA_R_LAT,
    R_CMA_W_64K,
    R_CMA_W_1M,
    R_CMA_R_64K,
    R_CMA_R_1M,
    R_CMA_W_RATE,
    R_NS_W_LAT,
    R_NS_R_LAT,
    R_NS_W_64K,
    R_NS_W_1M,
    R_NS_R_64K,
    R_NS_R_1M,
    R_NS_SEND_PP,
    R_NS_WRITE_PP,
    R_TCP_64K,
    R_TCP_1M,
    R_TCP_RTT,
    R_TCP_ACK_RTT,
    R_TCP_ACK2_RTT,
    R_TCP_WAKE_RTT,
    R_LAST
};

static double bench_duration = 0.7;

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bench_full_io(int fd, void *buf, size_t len, int do_write)
{
    size_t done = 0;
    ssize_t r;

    while (done < len) {
        r = do_write ? write(fd, (char *)buf + done, len - done)
                     : read(fd, (char *)buf + done, len - done);
        if (r <= 0) {
            if ((r < 0) && (errno == EINTR)) {
                continue;
            }
            return -1;
        }
        done += (size_t)r;
    }
    return 0;
}

/* Like bench_full_io on a non-blocking socket, spinning (no sleep) until
 * done: the busy-polling end of a ping-pong; more: a write with MSG_MORE.
 * Gives up after 10 s. */
static int bench_spin_io(int fd, void *buf, size_t len, int do_write, int more)
{
    double deadline = bench_now() + 10;
    size_t done     = 0;
    ssize_t r;

    while (done < len) {
        r = do_write ? send(fd, (char *)buf + done, len - done,
                            MSG_DONTWAIT | MSG_NOSIGNAL | (more ? MSG_MORE : 0))
                     : recv(fd, (char *)buf + done, len - done, MSG_DONTWAIT);
        if (r > 0) {
            done += (size_t)r;
        } else if ((r == 0) ||
                   ((errno != EAGAIN) && (errno != EWOULDBLOCK) &&
                    (errno != EINTR)) ||
                   (bench_now() > deadline)) {
            return -1;
        }
    }
    return 0;
}

static void bench_ep_close(bench_ep_t *ep)
{
    if (ep->qp != NULL)
        softnic_qp_destroy(ep->qp);
    if (ep->wqp != NULL)
        softnic_qp_destroy(ep->wqp);
    if (ep->mr != NULL)
        softnic_mr_dereg(ep->mr);
    if (ep->cq != NULL)
        softnic_cq_destroy(ep->cq);
    if (ep->pd != NULL)
        softnic_pd_dealloc(ep->pd);
    if (ep->dev != NULL)
        softnic_dev_close(ep->dev);
    if (ep->buf != NULL)
        munmap(ep->buf, BENCH_BUF_LEN);
}

static int bench_ep_open(bench_ep_t *ep, const char *dev, const char *ifaces,
                         bench_info_t *info)
{
    softnic_config_t cfg;
    softnic_qp_init_attr_t qp_attr;
    char why[256];

    /* SOFTNIC_NO_CMA=y measures the TCP path on one host, and so on */
    memset(&cfg, 0, sizeof(cfg));
    if (softnic_config_from_env(&cfg, "SOFTNIC_", why, sizeof(why)) != 0) {
        fprintf(stderr, "softnic_bench: %s\n", why);
        return -1;
    }
    cfg.ifaces = ifaces;
    memset(ep, 0, sizeof(*ep));
    memset(info, 0, sizeof(*info));
    ep->buf = mmap(NULL, BENCH_BUF_LEN, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (ep->buf == MAP_FAILED) {
        ep->buf = NULL;
        fprintf(stderr, "mmap: %m\n");
        return -1;
    }
    ep->dev = softnic_dev_open(dev, &cfg);
    if (ep->dev == NULL) {
        fprintf(stderr, "softnic_dev_open(%s): %m\n", dev);
        goto err_close;
    }
    ep->pd = softnic_pd_alloc(ep->dev);
    ep->cq = (ep->pd == NULL)
                 ? NULL
                 : softnic_cq_create(ep->dev, BENCH_CQ_LEN, NULL, NULL);
    if (ep->cq == NULL) {
        fprintf(stderr, "pd/cq: %m\n");
        goto err_close;
    }
    ep->mr = softnic_mr_reg(ep->pd, ep->buf, BENCH_BUF_LEN,
                            IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                IBV_ACCESS_REMOTE_READ);
    if (ep->mr == NULL) {
        fprintf(stderr, "softnic_mr_reg: %m\n");
        goto err_close;
    }
    memset(&qp_attr, 0, sizeof(qp_attr));
    qp_attr.send_cq             = ep->cq;
    qp_attr.recv_cq             = ep->cq;
    qp_attr.cap.max_send_wr     = BENCH_RATE_DEPTH;
    qp_attr.cap.max_recv_wr     = BENCH_RECVS;
    qp_attr.cap.max_send_sge    = 1;
    qp_attr.cap.max_recv_sge    = 1;
    qp_attr.cap.max_inline_data = 64;
    qp_attr.qp_type             = IBV_QPT_RC;
    ep->qp                      = softnic_qp_create(ep->pd, &qp_attr);
    ep->wqp = (ep->qp == NULL) ? NULL : softnic_qp_create(ep->pd, &qp_attr);
    if (ep->wqp == NULL) {
        fprintf(stderr, "softnic_qp_create: %m\n");
        goto err_close;
    }
    if (softnic_dev_addr_pack(ep->dev, info->dev_addr, SOFTNIC_ADDR_LEN)) {
        fprintf(stderr, "cannot pack the device address\n");
        goto err_close;
    }
    info->pid  = getpid();
    info->addr = (uintptr_t)ep->buf;
    info->rkey = ep->mr->rkey;
    info->qpn  = ep->qp->qp_num;
    info->wqpn = ep->wqp->qp_num;
    return 0;

err_close:
    bench_ep_close(ep);
    return -1;
}

static int bench_qp_connect(bench_ep_t *ep, softnic_qp_t *qp,
                            const bench_info_t *peer, uint32_t dest_qpn)
{
    struct ibv_port_attr port;
    struct ibv_qp_attr a;
    int ret;

    memset(&a, 0, sizeof(a));
    a.qp_state        = IBV_QPS_INIT;
    a.port_num        = 1;
    a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
    ret               = softnic_qp_modify(qp, &a,
                                          IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                                              IBV_QP_ACCESS_FLAGS);
    if (ret == 0) {
        ret = softnic_dev_query_port(ep->dev, 1, &port);
    }
    if (ret == 0) {
        memset(&a, 0, sizeof(a));
        ret = softnic_dev_addr_unpack(ep->dev, peer->dev_addr,
                                      sizeof(peer->dev_addr), &a.ah_attr);
    }
    if (ret == 0) {
        a.qp_state           = IBV_QPS_RTR;
        a.path_mtu           = port.active_mtu;
        a.dest_qp_num        = dest_qpn;
        a.max_dest_rd_atomic = BENCH_DEPTH;
        a.min_rnr_timer      = 12;
        ret                  = softnic_qp_modify(qp, &a,
                                                 IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
                                                     IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                                     IBV_QP_MAX_DEST_RD_ATOMIC |
                                                     IBV_QP_MIN_RNR_TIMER);
    }
    if (ret == 0) {
        memset(&a, 0, sizeof(a));
        a.qp_state = IBV_QPS_RTS;
        /* 0.54 s per attempt, 8 attempts: two busy-polling processes on a
         * loaded shared machine can each wait long for a core */
        a.timeout       = 17;
        a.retry_cnt     = 7;
        a.rnr_retry     = 7;
        a.max_rd_atomic = BENCH_DEPTH;
        ret             = softnic_qp_modify(qp, &a,
                                            IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT |
                                                IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                                                IBV_QP_MAX_QP_RD_ATOMIC);
    }
    if (ret != 0) {
        fprintf(stderr, "connecting the QP failed: %s\n", strerror(ret));
        return -1;
    }
    return 0;
}

static int bench_ep_connect(bench_ep_t *ep, const bench_info_t *peer)
{
    return bench_qp_connect(ep, ep->qp, peer, peer->qpn) ||
           bench_qp_connect(ep, ep->wqp, peer, peer->wqpn);
}

static int bench_post_at(bench_ep_t *ep, softnic_qp_t *qp,
                         const bench_info_t *peer, enum ibv_wr_opcode op,
                         uint64_t offset, size_t size, unsigned flags)
{
    struct ibv_sge sge = {(uintptr_t)ep->buf + offset, (uint32_t)size,
                          ep->mr->lkey};
    struct ibv_send_wr wr, *bad;
    int ret;

    memset(&wr, 0, sizeof(wr));
    wr.sg_list    = &sge;
    wr.num_sge    = 1;
    wr.opcode     = op;
    wr.send_flags = IBV_SEND_SIGNALED | flags;
    if (peer != NULL) { /* NULL for a SEND */
        wr.wr.rdma.remote_addr = peer->addr + offset;
        wr.wr.rdma.rkey        = peer->rkey;
    }
    ret = softnic_post_send(qp, &wr, &bad);
    if (ret != 0) {
        fprintf(stderr, "softnic_post_send: %s\n", strerror(ret));
        return -1;
    }
    ++ep->sends_out;
    return 0;
}

static int bench_post(bench_ep_t *ep, const bench_info_t *peer,
                      enum ibv_wr_opcode op, size_t size)
{
    return bench_post_at(ep, ep->qp, peer, op, 0, size, 0);
}

/* Keep BENCH_RECVS receives posted. */
static int bench_post_recv(bench_ep_t *ep)
{
    struct ibv_sge sge = {(uintptr_t)ep->buf + BENCH_PP_RECV, 64, ep->mr->lkey};
    struct ibv_recv_wr wr, *bad;
    int ret;

    memset(&wr, 0, sizeof(wr));
    wr.sg_list = &sge;
    wr.num_sge = 1;
    while (ep->recvs_posted < BENCH_RECVS) {
        ret = softnic_post_recv(ep->qp, &wr, &bad);
        if (ret != 0) {
            fprintf(stderr, "softnic_post_recv: %s\n", strerror(ret));
            return -1;
        }
        ++ep->recvs_posted;
    }
    return 0;
}

/* One poll of the CQ: counts send completions (sends_out) and receives
 * (recvs_done); returns the number of completions, -1 on an error. */
static int bench_poll_once(bench_ep_t *ep)
{
    struct ibv_wc wc[32];
    int n, i;

    n = softnic_cq_poll(ep->cq, 32, wc);
    if (n < 0) {
        fprintf(stderr, "softnic_cq_poll: %s\n", strerror(-n));
        return -1;
    }
    for (i = 0; i < n; ++i) {
        if (wc[i].status != IBV_WC_SUCCESS) {
            fprintf(stderr, "completion error: %s\n",
                    ibv_wc_status_str(wc[i].status));
            return -1;
        }
        if (wc[i].opcode & IBV_WC_RECV) {
            --ep->recvs_posted;
            ++ep->recvs_done;
        } else {
            --ep->sends_out;
        }
    }
    return n;
}

/* Poll until at most `left` sends are outstanding and at least `recvs`
 * receives completed, bounded by 10 s without progress. */
static int bench_wait(bench_ep_t *ep, int left, int recvs)
{
    double deadline = bench_now() + 10;
    int n;

    while ((ep->sends_out > left) || (ep->recvs_done < recvs)) {
        n = bench_poll_once(ep);
        if (n < 0) {
            return -1;
        }
        if (n > 0) {
            deadline = bench_now() + 10;
        } else if (bench_now() > deadline) {
            fprintf(stderr, "no completion within 10 s\n");
            return -1;
        }
    }
    return 0;
}

/* Average microseconds of post + poll to completion of one WR. */
static double bench_soft_lat(bench_ep_t *ep, const bench_info_t *peer,
                             enum ibv_wr_opcode op)
{
    double t0 = 0;
    int i;

    for (i = 0; i < BENCH_LAT_WARMUP + BENCH_LAT_ITERS; ++i) {
        if (i == BENCH_LAT_WARMUP) {
            t0 = bench_now();
        }
        if (bench_post(ep, peer, op, 8) || bench_wait(ep, 0, 0)) {
            return -1;
        }
    }
    return (bench_now() - t0) * 1e6 / BENCH_LAT_ITERS;
}

/* MB/s with `depth` WRs of `size` bytes in flight (or, for rate, WRs per
 * second when size is 8 and the caller divides by 8). */
static double bench_soft_stream(bench_ep_t *ep, const bench_info_t *peer,
                                enum ibv_wr_opcode op, size_t size, int depth,
                                unsigned flags, uint64_t *count_p)
{
    uint64_t posted = 0;
    double t0, end, t1;
    int n;

    /* warmup */
    for (n = 0; n < 8; ++n) {
        if (bench_post_at(ep, ep->qp, peer, op, 0, size, flags) ||
            bench_wait(ep, 0, 0)) {
            return -1;
        }
    }
    t0  = bench_now();
    end = t0 + bench_duration;
    do {
        while (ep->sends_out < depth) {
            if (bench_post_at(ep, ep->qp, peer, op, 0, size, flags)) {
                return -1;
            }
            ++posted;
        }
        if (bench_wait(ep, depth - 1, 0)) {
            return -1;
        }
    } while (bench_now() < end);
    if (bench_wait(ep, 0, 0)) {
        return -1;
    }
    t1       = bench_now();
    *count_p = posted;
    return t1 - t0;
}

/* MB/s with BENCH_DEPTH WRs in flight. */
static double bench_soft_bw(bench_ep_t *ep, const bench_info_t *peer,
                            enum ibv_wr_opcode op, size_t size)
{
    uint64_t count;
    double t = bench_soft_stream(ep, peer, op, size, BENCH_DEPTH, 0, &count);

    return (t < 0) ? -1 : count * (double)size / t / 1e6;
}

/* Million 8-byte inline WRITEs per second, BENCH_RATE_DEPTH in flight. */
static double bench_soft_rate(bench_ep_t *ep, const bench_info_t *peer)
{
    uint64_t count;
    double t = bench_soft_stream(ep, peer, IBV_WR_RDMA_WRITE, 8,
                                 BENCH_RATE_DEPTH, IBV_SEND_INLINE, &count);

    return (t < 0) ? -1 : count / t / 1e6;
}

/* SEND ping-pong (ib_send_lat): each end polls its CQ for the peer's SEND,
 * then answers with its own. The initiator starts. Microseconds one way. */
static double bench_send_pp(bench_ep_t *ep, int initiator)
{
    double t0 = 0;
    int i;

    for (i = 0; i < BENCH_LAT_WARMUP + BENCH_LAT_ITERS; ++i) {
        if (i == BENCH_LAT_WARMUP) {
            t0 = bench_now();
        }
        if (!initiator &&
            (bench_wait(ep, BENCH_RATE_DEPTH, i + 1) || bench_post_recv(ep))) {
            return -1;
        }
        if (bench_post_at(ep, ep->qp, NULL, IBV_WR_SEND, BENCH_PP_SRC, 8,
                          IBV_SEND_INLINE)) {
            return -1;
        }
        if (initiator &&
            (bench_wait(ep, BENCH_RATE_DEPTH, i + 1) || bench_post_recv(ep))) {
            return -1;
        }
    }
    if (bench_wait(ep, 0, 0)) {
        return -1;
    }
    return (bench_now() - t0) * 1e6 / BENCH_LAT_ITERS / 2;
}

/* Spin on the 8 bytes the peer WRITEs until they say `value` (10 s). */
static int bench_spin_mem(bench_ep_t *ep, uint64_t value)
{
    volatile uint64_t *p = (volatile uint64_t *)(ep->buf + BENCH_PP_DST);
    double deadline      = bench_now() + 10;

    while (*p != value) {
        if (bench_now() > deadline) {
            fprintf(stderr, "no WRITE from the peer within 10 s\n");
            return -1;
        }
    }
    return 0;
}

/* WRITE ping-pong (ib_write_lat): each end spins on its memory for the
 * peer's WRITE (without calling softnic), then WRITEs back and polls its
 * CQ until that WRITE completed. Microseconds one way. */
static double bench_write_pp(bench_ep_t *ep, const bench_info_t *peer,
                             int initiator)
{
    bench_info_t to = *peer;
    double t0       = 0;
    uint64_t i;

    /* the WRITE goes from our BENCH_PP_SRC to the peer's BENCH_PP_DST */
    to.addr = peer->addr + BENCH_PP_DST - BENCH_PP_SRC;
    for (i = 1; i <= BENCH_LAT_WARMUP + BENCH_LAT_ITERS; ++i) {
        if (i == BENCH_LAT_WARMUP + 1) {
            t0 = bench_now();
        }
        if (!initiator && bench_spin_mem(ep, i)) {
            return -1;
        }
        *(volatile uint64_t *)(ep->buf + BENCH_PP_SRC) = i;
        if (bench_post_at(ep, ep->wqp, &to, IBV_WR_RDMA_WRITE, BENCH_PP_SRC, 8,
                          IBV_SEND_INLINE) ||
            bench_wait(ep, 0, 0)) {
            return -1;
        }
        if (initiator && bench_spin_mem(ep, i)) {
            return -1;
        }
    }
    return (bench_now() - t0) * 1e6 / BENCH_LAT_ITERS / 2;
}

/* Keep the best value of the rounds (negative: failed, ignored). */
static void bench_keep(double *slot, int higher_better, double v)
{
    if (v < 0) {
        return;
    }
    if ((*slot < 0) || (higher_better ? (v > *slot) : (v < *slot))) {
        *slot = v;
    }
}

static ssize_t bench_cma(pid_t pid, void *local, uint64_t remote, size_t size,
                         int do_write)
{
    struct iovec l = {local, size};
    struct iovec r = {(void *)(uintptr_t)remote, size};

    return do_write ? process_vm_writev(pid, &l, 1, &r, 1, 0)
                    : process_vm_readv(pid, &l, 1, &r, 1, 0);
}

static double bench_cma_lat(bench_ep_t *ep, const bench_info_t *peer,
                            int do_write)
{
    double t0 = 0;
    int i;

    for (i = 0; i < BENCH_LAT_WARMUP + BENCH_LAT_ITERS; ++i) {
        if (i == BENCH_LAT_WARMUP) {
            t0 = bench_now();
        }
        if (bench_cma(peer->pid, ep->buf, peer->addr, 8, do_write) != 8) {
            fprintf(stderr, "process_vm_%sv: %m\n",
                    do_write ? "write" : "read");
            return -1;
        }
    }
    return (bench_now() - t0) * 1e6 / BENCH_LAT_ITERS;
}

/* Seconds spent moving count size-byte copies for the duration. */
static double bench_cma_stream(bench_ep_t *ep, const bench_info_t *peer,
                               size_t size, int do_write, uint64_t *count_p)
{
    uint64_t done = 0;
    double t0 = bench_now(), end = t0 + bench_duration;

    do {
        if (bench_cma(peer->pid, ep->buf, peer->addr, size, do_write) !=
            (ssize_t)size) {
            fprintf(stderr, "process_vm_%sv: %m\n",
                    do_write ? "write" : "read");
            return -1;
        }
        ++done;
    } while (bench_now() < end);
    *count_p = done;
    return bench_now() - t0;
}

static double bench_cma_bw(bench_ep_t *ep, const bench_info_t *peer,
                           size_t size, int do_write)
{
    uint64_t count;
    double t = bench_cma_stream(ep, peer, size, do_write, &count);

    return (t < 0) ? -1 : count * (double)size / t / 1e6;
}

/* Million 8-byte process_vm_writev calls per second. */
static double bench_cma_rate(bench_ep_t *ep, const bench_info_t *peer)
{
    uint64_t count;
    double t = bench_cma_stream(ep, peer, 8, 1, &count);

    return (t < 0) ? -1 : count / t / 1e6;
}

/* A TCP_NODELAY connection to the sink at ip:port, told its mode ('S'
 * stream, 'P', 'A' or 'W' ping-pong) in its first byte. Returns the fd,
 * or -1. */
static int bench_tcp_connect(const char *ip, uint16_t port, char mode)
{
    struct sockaddr_in sa;
    int fd, one = 1;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port   = htons(port);
    inet_pton(AF_INET, ip, &sa.sin_addr);
    if ((fd < 0) || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
        fprintf(stderr, "tcp connect %s:%u: %m\n", ip, port);
        goto err;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bench_full_io(fd, &mode, 1, 1)) {
        goto err;
    }
    return fd;

err:
    if (fd >= 0)
        close(fd);
    return -1;
}

/* TCP stream of size-byte writes for the duration; the sink answers with
 * the byte count at EOF, so the time covers delivery. */
static double bench_tcp_bw(const char *ip, uint16_t port, size_t size,
                           uint8_t *buf)
{
    uint64_t sent = 0, got = 0;
    double t0, end;
    int fd;

    fd = bench_tcp_connect(ip, port, 'S');
    if (fd < 0) {
        return -1;
    }
    t0  = bench_now();
    end = t0 + bench_duration;
    do {
        if (bench_full_io(fd, buf, size, 1)) {
            fprintf(stderr, "tcp send: %m\n");
            goto err;
        }
        sent += size;
    } while (bench_now() < end);
    shutdown(fd, SHUT_WR);
    if (bench_full_io(fd, &got, sizeof(got), 0) || (got != sent)) {
        fprintf(stderr, "tcp sink got %llu of %llu bytes\n",
                (unsigned long long)got, (unsigned long long)sent);
        goto err;
    }
    close(fd);
    return sent / (bench_now() - t0) / 1e6;

err:
    close(fd);
    return -1;
}

/* ---- TCP ping-pongs: the reference ('P'), softnic's floors ('A', 'D', 'W') */

/* An 'A' ping-pong end's answer: the 32-byte ACK of the message it just
 * read, written with MSG_MORE (held in the socket, as softnic holds a
 * receive's ACK), then 8 bytes, whose segment takes the ACK along */
static int bench_ack_answer(int fd, uint8_t *msg)
{
    return bench_spin_io(fd, msg, BENCH_ACK_LEN, 1, 1) ||
           bench_spin_io(fd, msg + BENCH_ACK_LEN, 8, 1, 0);
}

/* The reader thread of a 'W' ping-pong end: sleeps in epoll_wait until the
 * socket is readable, reads the peer's 8 bytes and stores them in value,
 * where the end's main thread spins; at EOF, an error or 10 s without a
 * message it sets done and ends. value and done are written by the reader
 * only and read by the main thread (release / acquire); the main thread
 * only sends on fd, the reader only reads. */
typedef struct {
    int fd;
    uint64_t value;
    int done;
} bench_waker_t;

static void *bench_waker(void *arg)
{
    bench_waker_t *w         = arg;
    struct epoll_event event = {.events = EPOLLIN};
    uint64_t msg;
    int epfd = epoll_create1(0);

    if ((epfd >= 0) && (epoll_ctl(epfd, EPOLL_CTL_ADD, w->fd, &event) == 0)) {
        while ((epoll_wait(epfd, &event, 1, 10000) == 1) &&
               !bench_spin_io(w->fd, &msg, sizeof(msg), 0, 0)) {
            __atomic_store_n(&w->value, msg, __ATOMIC_RELEASE);
        }
    }
    if (epfd >= 0) {
        close(epfd);
    }
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* A 'W' end's main thread: spin until the reader stored value (10 s) */
static int bench_waker_spin(bench_waker_t *w, uint64_t value)
{
    double deadline = bench_now() + 10;

    while (__atomic_load_n(&w->value, __ATOMIC_ACQUIRE) != value) {
        if (__atomic_load_n(&w->done, __ATOMIC_ACQUIRE) ||
            (bench_now() > deadline)) {
            return -1;
        }
    }
    return 0;
}

/* A 'D' ping-pong end's turn: the message read from in, its ACK written
 * into in with MSG_MORE, the answer sent on out; at every 64th turn the
 * ACKs the peer held in out are drained (they come a segment at a time) */
static int bench_ack2_turn(int in, int out, uint8_t *msg, uint64_t turn)
{
    static uint8_t acks[1 << 16];

    if (((turn % 64) == 0) &&
        (recv(out, acks, sizeof(acks), MSG_DONTWAIT) < 0) &&
        (errno != EAGAIN) && (errno != EWOULDBLOCK)) {
        return -1;
    }
    return bench_spin_io(in, msg + BENCH_ACK_LEN, 8, 0, 0) ||
           bench_spin_io(in, msg, BENCH_ACK_LEN, 1, 1) ||
           bench_spin_io(out, msg + BENCH_ACK_LEN, 8, 1, 0);
}

/* The initiator's round trip i of a ping-pong of the given mode (fd2: a
 * 'D' ping-pong's answer connection) */
static int bench_tcp_round_trip(int fd, int fd2, char mode, uint8_t *msg,
                                bench_waker_t *w, uint64_t i)
{
    switch (mode) {
    case 'D':
        /* the first request goes without an answer before it */
        return ((i == 1) && bench_spin_io(fd, msg + BENCH_ACK_LEN, 8, 1, 0)) ||
               bench_ack2_turn(fd2, fd, msg, i);
    case 'A':
        return bench_ack_answer(fd, msg) ||
               bench_spin_io(fd, msg, BENCH_ACK_LEN + 8, 0, 0);
    case 'W':
        return bench_spin_io(fd, &i, sizeof(i), 1, 0) || bench_waker_spin(w, i);
    default:
        return bench_spin_io(fd, msg, 8, 1, 0) ||
               bench_spin_io(fd, msg, 8, 0, 0);
    }
}

/* Average microseconds of one 8-byte TCP round trip: 'P' the reference,
 * both ends busy-polling non-blocking sockets; 'A' the same, each message
 * preceded by the ACK of the one before (bench_ack_answer); 'D' requests
 * and answers on two connections, each message's ACK held in the one it
 * came on (bench_ack2_turn); 'W' each end's bytes read by a woken thread
 * (bench_waker). */
static double bench_tcp_rtt(const char *ip, uint16_t port, char mode)
{
    uint8_t msg[BENCH_ACK_LEN + 8] = {0};
    bench_waker_t w                = {.fd = -1};
    double t0 = 0, ret = -1;
    pthread_t reader;
    int fd, fd2 = -1, started = 0, err = 0;
    uint64_t i;

    fd = bench_tcp_connect(ip, port, mode);
    if ((fd < 0) || (fcntl(fd, F_SETFL, O_NONBLOCK) < 0)) {
        goto out;
    }
    if ((mode == 'D') && (((fd2 = bench_tcp_connect(ip, port, 'd')) < 0) ||
                          (fcntl(fd2, F_SETFL, O_NONBLOCK) < 0))) {
        goto out;
    }
    w.fd = fd;
    if (mode == 'W') {
        if (pthread_create(&reader, NULL, bench_waker, &w) != 0) {
            goto out;
        }
        started = 1;
    }
    for (i = 1; !err && (i <= BENCH_LAT_WARMUP + BENCH_LAT_ITERS); ++i) {
        if (i == BENCH_LAT_WARMUP + 1) {
            t0 = bench_now();
        }
        err = bench_tcp_round_trip(fd, fd2, mode, msg, &w, i);
    }
    if (err) {
        fprintf(stderr, "tcp ping-pong '%c': %m\n", mode);
    } else {
        ret = (bench_now() - t0) * 1e6 / BENCH_LAT_ITERS;
    }

out:
    if (fd >= 0) {
        shutdown(fd, SHUT_RDWR); /* ends the reader */
    }
    if (started) {
        pthread_join(reader, NULL);
    }
    if (fd >= 0) {
        close(fd);
    }
    if (fd2 >= 0) {
        close(fd2);
    }
    return ret;
}

/* The sink's side of a ping-pong connection: TCP_NODELAY, non-blocking */
static int bench_tcp_pingpong_fd(int fd)
{
    int one = 1;

    return (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
            (fcntl(fd, F_SETFL, O_NONBLOCK) < 0))
               ? -1
               : 0;
}

/* A 'D' ping-pong's answer connection, which the initiator opens right
 * after the request connection (10 s), ready for the ping-pong; or -1 */
static int bench_tcp_accept_second(int lfd)
{
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    char mode;
    int fd;

    if ((poll(&pfd, 1, 10000) != 1) || ((fd = accept(lfd, NULL, NULL)) < 0)) {
        return -1;
    }
    if (bench_full_io(fd, &mode, 1, 0) || (mode != 'd') ||
        bench_tcp_pingpong_fd(fd)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The sink's end of a ping-pong of the given mode, until the initiator
 * closes (lfd: the listening socket, for a 'D' ping-pong's second
 * connection) */
static void bench_tcp_echo(int fd, int lfd, char mode, uint8_t *msg)
{
    bench_waker_t w = {.fd = fd};
    pthread_t reader;
    uint64_t i;
    int fd2;

    switch (mode) {
    case 'D':
        fd2 = bench_tcp_accept_second(lfd);
        if (fd2 >= 0) {
            for (i = 1; !bench_ack2_turn(fd, fd2, msg, i); ++i) {
            }
            close(fd2);
        }
        return;
    case 'A':
        while (!bench_spin_io(fd, msg, BENCH_ACK_LEN + 8, 0, 0) &&
               !bench_ack_answer(fd, msg)) {
        }
        return;
    case 'W':
        if (pthread_create(&reader, NULL, bench_waker, &w) != 0) {
            return;
        }
        for (i = 1; !bench_waker_spin(&w, i) &&
                    !bench_spin_io(fd, &i, sizeof(i), 1, 0);
             ++i) {
        }
        shutdown(fd, SHUT_RDWR);
        pthread_join(reader, NULL);
        return;
    default:
        while (!bench_spin_io(fd, msg, 8, 0, 0) &&
               !bench_spin_io(fd, msg, 8, 1, 0)) {
        }
    }
}

/* Serve one TCP connection of the sink (lfd: its listening socket). The
 * first byte says what the client wants: 'S' a counted stream, or a
 * ping-pong (TCP_NODELAY, non-blocking): 'P', 'A', 'D' or 'W'
 * (bench_tcp_rtt). */
static void bench_tcp_serve(int fd, int lfd)
{
    static uint8_t buf[1 << 20];
    uint64_t got;
    ssize_t r;

    if (bench_full_io(fd, buf, 1, 0)) {
        return;
    }
    if (memchr("PADW", buf[0], 4) != NULL) {
        if (bench_tcp_pingpong_fd(fd) == 0) {
            bench_tcp_echo(fd, lfd, (char)buf[0], buf);
        }
        return;
    }
    got = 0;
    while ((r = read(fd, buf, sizeof(buf))) > 0) {
        got += (uint64_t)r;
    }
    bench_full_io(fd, &got, sizeof(got), 1);
}

static int bench_setns(const char *ns)
{
    char path[256];
    int fd;

    if (ns == NULL) {
        return 0;
    }
    snprintf(path, sizeof(path), "/run/netns/%s", ns);
    fd = open(path, O_RDONLY);
    if ((fd < 0) || setns(fd, CLONE_NEWNET)) {
        fprintf(stderr, "setns %s: %m\n", path);
        return -1;
    }
    close(fd);
    return 0;
}

/* Target: run a ping-pong the initiator asked for; answers "ready" before
 * and "done" after. Returns 0, or -1 when it failed. */
static int bench_target_cmd(bench_ep_t *ep, const bench_info_t *peer, int ctl,
                            char cmd)
{
    char reply = 'r';
    double ret = -1;

    ep->recvs_done = 0;
    if ((cmd == BENCH_CMD_SEND_PP) && bench_post_recv(ep)) {
        return -1;
    }
    if (bench_full_io(ctl, &reply, 1, 1)) {
        return -1;
    }
    if (cmd == BENCH_CMD_SEND_PP) {
        ret = bench_send_pp(ep, 0);
    } else if (cmd == BENCH_CMD_WRITE_PP) {
        ret = bench_write_pp(ep, peer, 0);
    }
    reply = (ret < 0) ? 'f' : 'd';
    return bench_full_io(ctl, &reply, 1, 1) ? -1 : 0;
}

/* Target: serve one QP, ping-pong commands and a TCP sink (if tcp_ip) until
 * ctl closes. Outside the ping-pongs the target never calls the library:
 * softnic serves the one-sided operations. */
static int bench_target(int ctl, const char *dev, const char *ifaces,
                        const char *tcp_ip)
{
    struct sockaddr_in sa;
    socklen_t salen = sizeof(sa);
    bench_info_t mine, peer;
    bench_ep_t ep;
    fd_set rd;
    char cmd;
    int lfd = -1, fd, maxfd;

    if (bench_ep_open(&ep, dev, ifaces, &mine)) {
        return 1;
    }
    if (tcp_ip != NULL) {
        lfd = socket(AF_INET, SOCK_STREAM, 0);
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        inet_pton(AF_INET, tcp_ip, &sa.sin_addr);
        if ((lfd < 0) || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
            listen(lfd, 4) ||
            getsockname(lfd, (struct sockaddr *)&sa, &salen)) {
            fprintf(stderr, "tcp listen on %s: %m\n", tcp_ip);
            return 1;
        }
        mine.tcp_port = ntohs(sa.sin_port);
    }
    if (bench_full_io(ctl, &mine, sizeof(mine), 1) ||
        bench_full_io(ctl, &peer, sizeof(peer), 0) ||
        bench_ep_connect(&ep, &peer) || bench_full_io(ctl, "r", 1, 1)) {
        return 1;
    }
    for (;;) {
        FD_ZERO(&rd);
        FD_SET(ctl, &rd);
        maxfd = ctl;
        if (lfd >= 0) {
            FD_SET(lfd, &rd);
            maxfd = (lfd > ctl) ? lfd : ctl;
        }
        if (select(maxfd + 1, &rd, NULL, NULL, NULL) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        if (FD_ISSET(ctl, &rd)) {
            /* EOF: the initiator is done (or gone) */
            if ((read(ctl, &cmd, 1) != 1) ||
                bench_target_cmd(&ep, &peer, ctl, cmd)) {
                break;
            }
        }
        if ((lfd >= 0) && FD_ISSET(lfd, &rd)) {
            fd = accept(lfd, NULL, NULL);
            if (fd < 0) {
                break;
            }
            bench_tcp_serve(fd, lfd);
            close(fd);
        }
    }
    bench_ep_close(&ep);
    return 0;
}

/* Initiator: ask the target for a ping-pong and run our end. */
static double bench_pingpong(bench_ep_t *ep, const bench_info_t *peer, int ctl,
                             char cmd)
{
    double ret;
    char reply;

    ep->recvs_done = 0;
    if ((cmd == BENCH_CMD_SEND_PP) && bench_post_recv(ep)) {
        return -1;
    }
    if (bench_full_io(ctl, &cmd, 1, 1) || bench_full_io(ctl, &reply, 1, 0) ||
        (reply != 'r')) {
        return -1;
    }
    ret = (cmd == BENCH_CMD_SEND_PP) ? bench_send_pp(ep, 1)
                                     : bench_write_pp(ep, peer, 1);
    if (bench_full_io(ctl, &reply, 1, 0) || (reply != 'd')) {
        return -1;
    }
    return ret;
}

/* Initiator: connect to the target, measure, write results to out. */
static int bench_initiator(int ctl, int out, const char *dev,
                           const char *ifaces, int cross, const char *tcp_ip)
{
    double res[R_LAST];
    bench_info_t mine, peer;
    bench_ep_t ep;
    int base = cross ? R_NS_W_LAT : R_SH_W_LAT;
    char c;
    int i, round;

    for (i = 0; i < R_LAST; ++i) {
        res[i] = -1;
    }
    if (bench_ep_open(&ep, dev, ifaces, &mine) ||
        bench_full_io(ctl, &peer, sizeof(peer), 0) ||
        bench_full_io(ctl, &mine, sizeof(mine), 1) ||
        bench_ep_connect(&ep, &peer) || bench_full_io(ctl, &c, 1, 0)) {
        return 1;
    }
    memset(ep.buf, 0x5a, BENCH_BUF_LEN);
    /* Rounds interleave softnic and its reference, so that a burst of
     * load from elsewhere on the machine hits both; best of the rounds. */
    for (round = 0; round < BENCH_ROUNDS; ++round) {
        bench_keep(&res[base + 0], 0,
                   bench_soft_lat(&ep, &peer, IBV_WR_RDMA_WRITE));
        if (!cross) {
            bench_keep(&res[R_CMA_W_LAT], 0, bench_cma_lat(&ep, &peer, 1));
        } else {
            bench_keep(&res[R_TCP_RTT], 0,
                       bench_tcp_rtt(tcp_ip, peer.tcp_port, 'P'));
            bench_keep(&res[R_TCP_ACK_RTT], 0,
                       bench_tcp_rtt(tcp_ip, peer.tcp_port, 'A'));
            bench_keep(&res[R_TCP_ACK2_RTT], 0,
                       bench_tcp_rtt(tcp_ip, peer.tcp_port, 'D'));
            bench_keep(&res[R_TCP_WAKE_RTT], 0,
                       bench_tcp_rtt(tcp_ip, peer.tcp_port, 'W'));
            bench_keep(&res[R_NS_SEND_PP], 0,
                       bench_pingpong(&ep, &peer, ctl, BENCH_CMD_SEND_PP));
            bench_keep(&res[R_NS_WRITE_PP], 0,
                       bench_pingpong(&ep, &peer, ctl, BENCH_CMD_WRITE_PP));
        }
        bench_keep(&res[base + 1], 0,
                   bench_soft_lat(&ep, &peer, IBV_WR_RDMA_READ));
        if (!cross) {
            bench_keep(&res[R_CMA_R_LAT], 0, bench_cma_lat(&ep, &peer, 0));
            bench_keep(&res[R_SH_W_RATE], 1, bench_soft_rate(&ep, &peer));
            bench_keep(&res[R_CMA_W_RATE], 1, bench_cma_rate(&ep, &peer));
        }
        bench_keep(&res[base + 2], 1,
                   bench_soft_bw(&ep, &peer, IBV_WR_RDMA_WRITE, 65536));
        bench_keep(&res[base + 3], 1,
                   bench_soft_bw(&ep, &peer, IBV_WR_RDMA_WRITE, 1 << 20));
        if (!cross) {
            bench_keep(&res[R_CMA_W_64K], 1,
                       bench_cma_bw(&ep, &peer, 65536, 1));
            bench_keep(&res[R_CMA_W_1M], 1,
                       bench_cma_bw(&ep, &peer, 1 << 20, 1));
        } else {
            bench_keep(&res[R_TCP_64K], 1,
                       bench_tcp_bw(tcp_ip, peer.tcp_port, 65536, ep.buf));
            bench_keep(&res[R_TCP_1M], 1,
                       bench_tcp_bw(tcp_ip, peer.tcp_port, 1 << 20, ep.buf));
        }
        bench_keep(&res[base + 4], 1,
                   bench_soft_bw(&ep, &peer, IBV_WR_RDMA_READ, 65536));
        bench_keep(&res[base + 5], 1,
                   bench_soft_bw(&ep, &peer, IBV_WR_RDMA_READ, 1 << 20));
        if (!cross) {
            bench_keep(&res[R_CMA_R_64K], 1,
                       bench_cma_bw(&ep, &peer, 65536, 0));
            bench_keep(&res[R_CMA_R_1M], 1,
                       bench_cma_bw(&ep, &peer, 1 << 20, 0));
        }
    }
    bench_ep_close(&ep);
    return bench_full_io(out, res, sizeof(res), 1) ? 1 : 0;
}

/* Fork target and initiator (in the given namespaces), collect results. */
static int bench_run(const char *ns_a, const char *ns_b, const char *dev,
                     const char *ifaces, const char *tcp_ip, double *res)
{
    double part[R_LAST];
    int ctl[2], out[2], status, ok = 1, i;
    pid_t target, initiator;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, ctl) || pipe(out)) {
        perror("socketpair/pipe");
        return -1;
    }
    target = fork();
    if (target == 0) {
        close(ctl[0]);
        close(out[0]);
        close(out[1]);
        _exit(bench_setns(ns_b) ? 1
                                : bench_target(ctl[1], dev, ifaces, tcp_ip));
    }
    initiator = fork();
    if (initiator == 0) {
        close(ctl[1]);
        close(out[0]);
        _exit(bench_setns(ns_a) ? 1
                                : bench_initiator(ctl[0], out[1], dev, ifaces,
                                                  tcp_ip != NULL, tcp_ip));
    }
    close(ctl[0]);
    close(ctl[1]);
    close(out[1]);
    if (bench_full_io(out[0], part, sizeof(part), 0)) {
        fprintf(stderr, "%s: the initiator produced no results\n", dev);
        ok = 0;
    }
    close(out[0]);
    waitpid(initiator, &status, 0);
    waitpid(target, &status, 0);
    if (!ok) {
        return -1;
    }
    for (i = 0; i < R_LAST; ++i) {
        if (part[i] >= 0) {
            res[i] = part[i];
        }
    }
    return 0;
}

/* A row: softnic's figure, its reference, the ratio, and the goal: a ratio
 * (goal > 0), or an absolute figure for softnic itself (abs_goal > 0). */
static void bench_row(const char *name, double soft, double ref,
                      const char *ref_name, int higher_better, double goal,
                      double abs_goal)
{
    char goal_str[48] = "";
    double ratio;
    int ok;

    if ((soft < 0) || (ref <= 0)) {
        printf("%-26s %12s %12s %-16s %7s\n", name, (soft < 0) ? "n/a" : "",
               "n/a", ref_name, "");
        return;
    }
    ratio = soft / ref;
    if (goal > 0) {
        ok = higher_better ? (ratio >= goal) : (ratio <= goal);
        snprintf(goal_str, sizeof(goal_str), "%s %.2fx %s",
                 higher_better ? ">=" : "<=", goal, ok ? "PASS" : "MISS");
    } else if (abs_goal > 0) {
        ok = higher_better ? (soft >= abs_goal) : (soft <= abs_goal);
        snprintf(goal_str, sizeof(goal_str), "%s %g %s",
                 higher_better ? ">=" : "<=", abs_goal, ok ? "PASS" : "MISS");
    }
    printf("%-26s %12.2f %12.2f %-16s %6.*fx  %s\n", name, soft, ref, ref_name,
           (ratio >= 0.1) ? 2 : 4, ratio, goal_str);
}

int main(int argc, char **argv)
{
    const char *ns_a = NULL, *ns_b = NULL, *ip_b = "198.18.0.2";
    double res[R_LAST];
    int opt, i;

    while ((opt = getopt(argc, argv, "d:a:b:i:h")) != -1) {
        switch (opt) {
        case 'd':
            bench_duration = atof(optarg);
            if ((bench_duration <= 0) || (bench_duration > 30)) {
                fprintf(stderr, "-d: duration must be in (0, 30] s\n");
                return 1;
            }
            break;
        case 'a':
            ns_a = optarg;
            break;
        case 'b':
            ns_b = optarg;
            break;
        case 'i':
            ip_b = optarg;
            break;
        default:
            fprintf(stderr,
                    "usage: %s [-d seconds] [-a netns -b netns "
                    "[-i ip_b]]\n",
                    argv[0]);
            return 1;
        }
    }
    if ((ns_a == NULL) != (ns_b == NULL)) {
        fprintf(stderr, "-a and -b go together\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    for (i = 0; i < R_LAST; ++i) {
        res[i] = -1;
    }
    if (bench_run(NULL, NULL, "soft_lo", "lo", NULL, res)) {
        return 1;
    }
    if ((ns_a != NULL) &&
        bench_run(ns_a, ns_b, "soft_orc0", "orc0", ip_b, res)) {
        return 1;
    }

    printf("\nsoftnic benchmark (latency in us, lower is better; bandwidth "
           "in MB/s,\n%d WRs in flight; rate in million 8-byte WRITEs/s, %d "
           "in flight;\neach bandwidth or rate figure over %.1f s; best of %d "
           "rounds;\npp = ping-pong, one way)\n\n",
           BENCH_DEPTH, BENCH_RATE_DEPTH, bench_duration, BENCH_ROUNDS);
    printf("%-26s %12s %12s %-16s %7s  %s\n", "measure", "softnic", "reference",
           "(reference)", "ratio", "goal");
    bench_row("same-host WRITE 8B lat", res[R_SH_W_LAT], res[R_CMA_W_LAT],
              "CMA writev", 0, 2.0, 0);
    bench_row("same-host READ 8B lat", res[R_SH_R_LAT], res[R_CMA_R_LAT],
              "CMA readv", 0, 0, 0);
    bench_row("same-host WRITE 8B rate", res[R_SH_W_RATE], res[R_CMA_W_RATE],
              "CMA writev", 1, 0, 5.0);
    bench_row("same-host WRITE 64KiB", res[R_SH_W_64K], res[R_CMA_W_64K],
              "CMA writev", 1, 0.95, 0);
    bench_row("same-host WRITE 1MiB", res[R_SH_W_1M], res[R_CMA_W_1M],
              "CMA writev", 1, 0.9, 0);
    bench_row("same-host READ 64KiB", res[R_SH_R_64K], res[R_CMA_R_64K],
              "CMA readv", 1, 0, 0);
    bench_row("same-host READ 1MiB", res[R_SH_R_1M], res[R_CMA_R_1M],
              "CMA readv", 1, 0.9, 0);
    if (ns_a != NULL) {
        bench_row("cross-ns SEND 8B pp", res[R_NS_SEND_PP], res[R_TCP_RTT] / 2,
                  "TCP 8B pp busy", 0, 1.0, 0);
        bench_row("cross-ns WRITE 8B pp", res[R_NS_WRITE_PP],
                  res[R_TCP_RTT] / 2, "TCP 8B pp busy", 0, 1.0, 0);
        bench_row("  SEND pp, its floor", res[R_NS_SEND_PP],
                  res[R_TCP_ACK_RTT] / 2, "+ ACK write", 0, 0, 0);
        bench_row("  SEND pp, 2-conn floor", res[R_NS_SEND_PP],
                  res[R_TCP_ACK2_RTT] / 2, "2 conns + ACK", 0, 0, 0);
        bench_row("  WRITE pp, its floor", res[R_NS_WRITE_PP],
                  res[R_TCP_WAKE_RTT] / 2, "woken reader", 0, 0, 0);
        bench_row("cross-ns WRITE 8B lat", res[R_NS_W_LAT], res[R_TCP_RTT],
                  "TCP 8B rtt busy", 0, 0, 0);
        bench_row("cross-ns READ 8B lat", res[R_NS_R_LAT], res[R_TCP_RTT],
                  "TCP 8B rtt busy", 0, 0, 0);
        bench_row("cross-ns WRITE 64KiB", res[R_NS_W_64K], res[R_TCP_64K],
                  "TCP stream", 1, 0, 0);
        bench_row("cross-ns WRITE 1MiB", res[R_NS_W_1M], res[R_TCP_1M],
                  "TCP stream", 1, 0.8, 0);
        bench_row("cross-ns READ 64KiB", res[R_NS_R_64K], res[R_TCP_64K],
                  "TCP stream", 1, 0, 0);
        bench_row("cross-ns READ 1MiB", res[R_NS_R_1M], res[R_TCP_1M],
                  "TCP stream", 1, 0, 0);
    } else {
        printf("(cross-namespace part skipped: run softnic-bench.sh as root "
               "for it)\n");
    }
    return 0;
}
