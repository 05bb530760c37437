/*
 * softnic, in-process tests: the RC QP state machine with the IB
 * specification's required/allowed attribute masks, and thread safety of
 * create/modify/destroy while another thread posts.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "send_wr.h"
#include "softnic_harness.h"
#include "softnic_inproc.h"

#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace softnic_test;

/* This thread's sched_yield() calls while yield_counting is set, and its
 * CLOCK_MONOTONIC while fake_clock is set: fake_ns (clock_reads counts the
 * reads; coarse_reads those of CLOCK_MONOTONIC_COARSE, not faked). Defined
 * in the executable, they take the place of libc's for the softnic code
 * linked into it, too. */
static __thread bool yield_counting, fake_clock;
static __thread int yield_count, clock_reads, coarse_reads;
static __thread uint64_t fake_ns;
/* While svc_frozen_ns is not 0, a service thread's CLOCK_MONOTONIC stands
 * at svc_frozen_ns, or at the last time it read if that was later: its
 * look never ends (a service thread is a thread that waited in epoll_wait
 * with a timeout: svc_thread, set by epoll_wait below) */
static std::atomic<uint64_t> svc_frozen_ns{0};
static __thread bool svc_thread;
static __thread uint64_t svc_read_ns;

/* The service threads' clock stopped for the object's life (a failed
 * assertion inside its scope restarts it too) */
struct svc_clock_stopped {
    svc_clock_stopped()
    {
        svc_frozen_ns = (uint64_t)(now_ms() * 1e6);
    }
    ~svc_clock_stopped()
    {
        svc_frozen_ns = 0;
    }
};

extern "C" int sched_yield(void) noexcept
{
    yield_count += yield_counting;
    return (int)syscall(SYS_sched_yield);
}

extern "C" int clock_gettime(clockid_t id, struct timespec *ts) noexcept
{
    static auto real =
        (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT,
                                                     "clock_gettime");

    if (fake_clock && (id == CLOCK_MONOTONIC_COARSE)) {
        ++coarse_reads;
    }
    if (svc_thread && (id == CLOCK_MONOTONIC)) {
        int ret         = real(id, ts);
        uint64_t frozen = svc_frozen_ns.load();
        svc_read_ns = (frozen == 0) ? ts->tv_sec * 1000000000ull + ts->tv_nsec
                                    : std::max(frozen, svc_read_ns);
        ts->tv_sec  = svc_read_ns / 1000000000;
        ts->tv_nsec = svc_read_ns % 1000000000;
        return ret;
    }
    if (!fake_clock || (id != CLOCK_MONOTONIC)) {
        return real(id, ts);
    }
    ++clock_reads;
    ts->tv_sec  = fake_ns / 1000000000;
    ts->tv_nsec = fake_ns % 1000000000;
    return 0;
}

/* The service thread's waits: the last epoll_wait with a timeout (pollers'
 * steps ask with 0) took timeout_ms svc_wait_ms and returned svc_wait_ret;
 * svc_waits counts those that returned. Read by the tests of the timer
 * pass's pace, whose instance is the process's only one. While hold_us is
 * set, this thread's next epoll_wait without a timeout (a poller's step,
 * under svc_lock) first sleeps that long (holding is set meanwhile), and
 * held_blocks counts the pthread_mutex_lock calls of any thread that found
 * their mutex locked while a step was held. */
static std::atomic<int> svc_wait_ms{-1}, svc_wait_ret{-1};
static std::atomic<unsigned> svc_waits{0}, held_blocks{0};
static std::atomic<bool> holding{false};
static __thread int hold_us;

extern "C" int pthread_mutex_lock(pthread_mutex_t *mutex) noexcept
{
    static auto real =
        (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_lock");

    if (holding && (pthread_mutex_trylock(mutex) == 0)) {
        return 0;
    }
    held_blocks += holding;
    return real(mutex);
}

extern "C" int epoll_wait(int epfd, struct epoll_event *events, int max,
                          int timeout_ms)
{
    static auto real = (int (*)(int, struct epoll_event *, int,
                                int))dlsym(RTLD_NEXT, "epoll_wait");
    int ret;

    if ((timeout_ms == 0) && (hold_us > 0)) {
        holding = true;
        usleep(hold_us);
        holding = false;
        hold_us = 0;
    }
    if (timeout_ms == 0) {
        return real(epfd, events, max, timeout_ms);
    }
    svc_thread   = true;
    svc_wait_ms  = timeout_ms;
    ret          = real(epfd, events, max, timeout_ms);
    svc_wait_ret = ret;
    ++svc_waits;
    return ret;
}

/* Answer frames and pushes (sn_int.h, "ACK coalescing") while acks_watched
 * is set: a sendmsg shorter than a request frame's header is an answer (an
 * ACK in these tests); this thread's are counted in acks_held when MSG_MORE
 * holds them back and in acks_sent when they leave at once, its setsockopt
 * TCP_NODELAY calls (what pushes held-back ACKs out) in pushes; any other
 * thread's answers and pushes in other_acks. */
static const size_t ANSWER_MAX = 48;
static std::atomic<bool> acks_watched{false};
static std::atomic<unsigned> other_acks{0};
static __thread bool acks_mine;
static __thread int acks_held, acks_sent, pushes;

extern "C" ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    static auto real = (ssize_t(*)(int, const struct msghdr *,
                                   int))dlsym(RTLD_NEXT, "sendmsg");
    size_t len       = 0;

    for (size_t i = 0; i < msg->msg_iovlen; ++i) {
        len += msg->msg_iov[i].iov_len;
    }
    if (acks_watched && (len < ANSWER_MAX)) {
        if (!acks_mine) {
            ++other_acks;
        } else if (flags & MSG_MORE) {
            ++acks_held;
        } else {
            ++acks_sent;
        }
    }
    return real(fd, msg, flags);
}

extern "C" int setsockopt(int fd, int level, int name, const void *val,
                          socklen_t len) noexcept
{
    static auto real = (int (*)(int, int, int, const void *,
                                socklen_t))dlsym(RTLD_NEXT, "setsockopt");

    if (acks_watched && (level == IPPROTO_TCP) && (name == TCP_NODELAY)) {
        if (acks_mine) {
            ++pushes;
        } else {
            ++other_acks;
        }
    }
    return real(fd, level, name, val, len);
}

namespace
{

/* softnic_inproc with the churn test shared by two configurations, and a
 * connected pair */
class softnic_local : public softnic_inproc
{
  protected:
    void churn_while_posting();
    void leaves_a_qp_that_takes_receives(bool recv_first);

    /* A WRITE of the first half of buf (len bytes, registered as mr) over
     * its second half, through qp */
    static int post_half_write(softnic_qp_t *qp, softnic_mr_t *mr,
                               std::vector<uint8_t> &buf, uint64_t id,
                               int flags)
    {
        size_t len     = buf.size() / 2;
        ibv_sge sge    = {(uintptr_t)buf.data(), (uint32_t)len, mr->lkey};
        ibv_send_wr wr = rdma_wr(&sge, IBV_WR_RDMA_WRITE, id, flags,
                                 (uintptr_t)&buf[len], mr->rkey);
        ibv_send_wr *bad;
        return softnic_post_send(qp, &wr, &bad);
    }

    /* The first half of buf filled with pattern seed; then: is it
     * written over the second half (a post_half_write placed) within
     * ms? */
    static void fill_half(std::vector<uint8_t> &buf, int seed)
    {
        for (size_t i = 0; i < buf.size() / 2; ++i) {
            buf[i] = pattern_byte(seed, i);
        }
    }
    static bool placed_within(const std::vector<uint8_t> &buf, double ms)
    {
        size_t len = buf.size() / 2;
        for (double end = now_ms() + ms;; usleep(1000)) {
            if (memcmp(buf.data(), &buf[len], len) == 0) {
                return true;
            }
            if (now_ms() >= end) {
                return false;
            }
        }
    }

    /* The next completion of m_cq (10 s of polls): wr_id's, successful */
    void expect_completion(uint64_t wr_id)
    {
        ibv_wc wc;
        int n = 0;
        for (double end = now_ms() + 10000;
             ((n = softnic_cq_poll(m_cq, 1, &wc)) == 0) && (now_ms() < end);) {
        }
        ASSERT_EQ(1, n);
        EXPECT_EQ(wr_id, wc.wr_id);
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status);
    }

    /* The connection of qp up (one signaled WRITE, polled for), then
     * 100 ms of spinning on the empty CQ: the service thread stands back
     * (sn_int.h, "Polling"; thousands of steps per look) */
    void connect_then_spin(softnic_qp_t *qp, softnic_mr_t *mr,
                           std::vector<uint8_t> &buf)
    {
        ibv_wc wc;
        int n          = 0;
        double timeout = now_ms() + 10000;

        ASSERT_EQ(0, post_half_write(qp, mr, buf, 1, IBV_SEND_SIGNALED));
        while (((n = softnic_cq_poll(m_cq, 1, &wc)) == 0) &&
               (now_ms() < timeout)) {
        }
        ASSERT_EQ(1, n);
        ASSERT_EQ(IBV_WC_SUCCESS, wc.status);
        spin_empty(100);
    }

    /* ms of polls of the CQ, each finding it empty */
    void spin_empty(double ms)
    {
        ibv_wc wc;

        for (double end = now_ms() + ms; now_ms() < end;) {
            ASSERT_EQ(0, softnic_cq_poll(m_cq, 1, &wc));
        }
    }

    /* a -> b, two QPs of this instance (on TCP in softnic_local_tcp), up
     * and spun as above (the service thread stands back), buf registered as the returned region
     * (NULL on failure, reported); a's send queue holds
     * max_send_wr */
    softnic_mr_t *spun_pair(std::vector<uint8_t> &buf, softnic_qp_t **a_p,
                            uint32_t max_send_wr = 64, bool b_recv = false)
    {
        softnic_mr_t *mr =
            softnic_mr_reg(m_pd, buf.data(), buf.size(),
                           IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
        EXPECT_NE(nullptr, mr) << strerror(errno);
        softnic_qp_t *a = tracked_qp(NULL, NULL, max_send_wr);
        softnic_qp_t *b = tracked_qp();
        if ((mr == NULL) || (a == NULL) || (b == NULL)) {
            ADD_FAILURE() << "no region or QP";
            return NULL;
        }
        if (b_recv) {
            /* b takes a receive before a's connection comes */
            bring_to(b, IBV_QPS_RTS, a->qp_num);
            ibv_recv_wr rwr = {}, *bad;
            EXPECT_EQ(0, softnic_post_recv(b, &rwr, &bad));
        }
        if (!HasFatalFailure()) {
            bring_to(a, IBV_QPS_RTS, b->qp_num);
        }
        if (!HasFatalFailure() && !b_recv) {
            bring_to(b, IBV_QPS_RTS, a->qp_num);
        }
        if (!HasFatalFailure()) {
            connect_then_spin(a, mr, buf);
        }
        *a_p = a;
        return HasFatalFailure() ? NULL : mr;
    }
};

class softnic_local_tcp : public softnic_local
{
  protected:
    bool tcp_only() const override
    {
        return true;
    }
};

const char *state_name(int s)
{
    static const char *names[] = {"RESET", "INIT", "RTR", "RTS",
                                  "SQD",   "SQE",  "ERR"};
    return ((s >= 0) && (s < 7)) ? names[s] : "?";
}

TEST_F(softnic_local, qp_state_legal_path)
{
    softnic_qp_t *qp = tracked_qp();
    ASSERT_NE(nullptr, qp);
    EXPECT_EQ(IBV_QPS_RESET, state(qp));
    ASSERT_EQ(0, modify(qp, IBV_QPS_INIT, INIT_REQ));
    EXPECT_EQ(IBV_QPS_INIT, state(qp));

    /* INIT->INIT may change the access flags */
    ibv_qp_attr a;
    softnic_qp_init_attr_t init;
    fill_attr(&a, IBV_QPS_INIT, qp->qp_num);
    a.qp_access_flags = IBV_ACCESS_REMOTE_READ;
    ASSERT_EQ(0, softnic_qp_modify(qp, &a, IBV_QP_STATE | IBV_QP_ACCESS_FLAGS));
    memset(&a, 0, sizeof(a));
    ASSERT_EQ(0, softnic_qp_query(qp, &a, IBV_QP_STATE | IBV_QP_ACCESS_FLAGS,
                                  &init));
    EXPECT_EQ(IBV_QPS_INIT, a.qp_state);
    EXPECT_EQ(IBV_ACCESS_REMOTE_READ, a.qp_access_flags);

    ASSERT_EQ(0, modify(qp, IBV_QPS_RTR, RTR_REQ));
    EXPECT_EQ(IBV_QPS_RTR, state(qp));
    /* optional attributes of INIT->RTR are accepted too */
    ASSERT_EQ(0, modify(qp, IBV_QPS_RTS, RTS_REQ | IBV_QP_MIN_RNR_TIMER));
    EXPECT_EQ(IBV_QPS_RTS, state(qp));
    ASSERT_EQ(0, modify(qp, IBV_QPS_RTS,
                        IBV_QP_STATE | IBV_QP_MIN_RNR_TIMER |
                            IBV_QP_ACCESS_FLAGS));
    EXPECT_EQ(IBV_QPS_RTS, state(qp));

    memset(&a, 0, sizeof(a));
    ASSERT_EQ(0,
              softnic_qp_query(qp, &a,
                               IBV_QP_STATE | IBV_QP_DEST_QPN | IBV_QP_TIMEOUT |
                                   IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY,
                               &init));
    EXPECT_EQ(qp->qp_num, a.dest_qp_num);
    EXPECT_EQ(14, a.timeout);
    EXPECT_EQ(7, a.retry_cnt);
    EXPECT_EQ(7, a.rnr_retry);
    EXPECT_EQ(IBV_QPT_RC, init.qp_type);
}

struct transition_t {
    ibv_qp_state from, to;
    int required;
};

const transition_t transitions[] = {
    {IBV_QPS_RESET, IBV_QPS_INIT, INIT_REQ},
    {IBV_QPS_INIT, IBV_QPS_RTR, RTR_REQ},
    {IBV_QPS_RTR, IBV_QPS_RTS, RTS_REQ},
};

TEST_F(softnic_local, qp_state_missing_required_attr)
{
    for (const transition_t &t : transitions) {
        for (int bit = 1; bit < (1 << 21); bit <<= 1) {
            if (!(t.required & bit) || (bit == IBV_QP_STATE)) {
                continue;
            }
            softnic_qp_t *qp = tracked_qp();
            ASSERT_NE(nullptr, qp);
            ASSERT_NO_FATAL_FAILURE(bring_to(qp, t.from));
            EXPECT_EQ(EINVAL, modify(qp, t.to, t.required & ~bit))
                << state_name(t.from) << "->" << state_name(t.to)
                << " without mask bit 0x" << std::hex << bit;
            EXPECT_EQ(t.from, state(qp))
                << "failed modify changed the state, missing bit 0x" << std::hex
                << bit;
            /* and the QP is still usable */
            EXPECT_EQ(0, modify(qp, t.to, t.required))
                << state_name(t.from) << "->" << state_name(t.to);
        }
    }
}

TEST_F(softnic_local, qp_state_disallowed_attr)
{
    struct {
        ibv_qp_state from, to;
        int mask;
    } cases[] = {
        {IBV_QPS_RESET, IBV_QPS_INIT, INIT_REQ | IBV_QP_SQ_PSN},
        {IBV_QPS_RESET, IBV_QPS_INIT, INIT_REQ | IBV_QP_DEST_QPN},
        {IBV_QPS_RESET, IBV_QPS_INIT, INIT_REQ | IBV_QP_AV},
        {IBV_QPS_INIT, IBV_QPS_INIT, IBV_QP_STATE | IBV_QP_PATH_MTU},
        {IBV_QPS_INIT, IBV_QPS_RTR, RTR_REQ | IBV_QP_SQ_PSN},
        {IBV_QPS_INIT, IBV_QPS_RTR, RTR_REQ | IBV_QP_TIMEOUT},
        {IBV_QPS_INIT, IBV_QPS_RTR, RTR_REQ | IBV_QP_RETRY_CNT},
        {IBV_QPS_INIT, IBV_QPS_RTR, RTR_REQ | IBV_QP_RNR_RETRY},
        {IBV_QPS_RTR, IBV_QPS_RTS, RTS_REQ | IBV_QP_DEST_QPN},
        {IBV_QPS_RTR, IBV_QPS_RTS, RTS_REQ | IBV_QP_PATH_MTU},
        {IBV_QPS_RTR, IBV_QPS_RTS, RTS_REQ | IBV_QP_RQ_PSN},
        {IBV_QPS_RTR, IBV_QPS_RTS, RTS_REQ | IBV_QP_AV},
        {IBV_QPS_RTS, IBV_QPS_RTS, IBV_QP_STATE | IBV_QP_DEST_QPN},
        {IBV_QPS_RTS, IBV_QPS_RTS, IBV_QP_STATE | IBV_QP_AV},
        {IBV_QPS_RTS, IBV_QPS_RTS,
         IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_RQ_PSN},
    };
    for (auto &c : cases) {
        softnic_qp_t *qp = tracked_qp();
        ASSERT_NE(nullptr, qp);
        ASSERT_NO_FATAL_FAILURE(bring_to(qp, c.from));
        EXPECT_EQ(EINVAL, modify(qp, c.to, c.mask))
            << state_name(c.from) << "->" << state_name(c.to) << " with mask 0x"
            << std::hex << c.mask;
        EXPECT_EQ(c.from, state(qp));
    }

    /* A rejected modify changes nothing, not even the valid attributes
     * that came with it. */
    softnic_qp_t *qp = tracked_qp();
    ASSERT_NE(nullptr, qp);
    ASSERT_NO_FATAL_FAILURE(bring_to(qp, IBV_QPS_INIT));
    ibv_qp_attr a;
    softnic_qp_init_attr_t init;
    fill_attr(&a, IBV_QPS_INIT, qp->qp_num);
    a.qp_access_flags = IBV_ACCESS_REMOTE_ATOMIC;
    EXPECT_EQ(EINVAL, softnic_qp_modify(qp, &a,
                                        IBV_QP_STATE | IBV_QP_ACCESS_FLAGS |
                                            IBV_QP_SQ_PSN));
    memset(&a, 0, sizeof(a));
    ASSERT_EQ(0, softnic_qp_query(qp, &a, IBV_QP_STATE | IBV_QP_ACCESS_FLAGS,
                                  &init));
    EXPECT_EQ(IBV_QPS_INIT, a.qp_state);
    EXPECT_EQ(IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ,
              a.qp_access_flags);
}

TEST_F(softnic_local, qp_state_illegal_transitions)
{
    struct {
        ibv_qp_state from, to;
        int mask;
    } cases[] = {
        {IBV_QPS_RESET, IBV_QPS_RTR, RTR_REQ},
        {IBV_QPS_RESET, IBV_QPS_RTR, RTR_REQ | INIT_REQ},
        {IBV_QPS_RESET, IBV_QPS_RTS, RTS_REQ},
        {IBV_QPS_RESET, IBV_QPS_RTS, RTS_REQ | RTR_REQ | INIT_REQ},
        {IBV_QPS_INIT, IBV_QPS_RTS, RTS_REQ},
        {IBV_QPS_RTR, IBV_QPS_INIT, IBV_QP_STATE},
        {IBV_QPS_RTR, IBV_QPS_RTR, IBV_QP_STATE},
        {IBV_QPS_RTS, IBV_QPS_INIT, IBV_QP_STATE},
        {IBV_QPS_RTS, IBV_QPS_RTR, RTR_REQ},
        {IBV_QPS_ERR, IBV_QPS_INIT, INIT_REQ},
        {IBV_QPS_ERR, IBV_QPS_RTR, RTR_REQ},
        {IBV_QPS_ERR, IBV_QPS_RTS, RTS_REQ},
    };
    for (auto &c : cases) {
        softnic_qp_t *qp = tracked_qp();
        ASSERT_NE(nullptr, qp);
        ASSERT_NO_FATAL_FAILURE(bring_to(qp, c.from));
        EXPECT_EQ(EINVAL, modify(qp, c.to, c.mask))
            << state_name(c.from) << "->" << state_name(c.to);
        EXPECT_EQ(c.from, state(qp)) << "after rejected " << state_name(c.from)
                                     << "->" << state_name(c.to);
    }
}

TEST_F(softnic_local, qp_state_to_err_and_reset_from_every_state)
{
    const ibv_qp_state states[] = {IBV_QPS_RESET, IBV_QPS_INIT, IBV_QPS_RTR,
                                   IBV_QPS_RTS};
    for (ibv_qp_state s : states) {
        softnic_qp_t *qp = tracked_qp();
        ASSERT_NE(nullptr, qp);
        ASSERT_NO_FATAL_FAILURE(bring_to(qp, s));
        EXPECT_EQ(0, modify(qp, IBV_QPS_ERR, IBV_QP_STATE))
            << state_name(s) << "->ERR";
        EXPECT_EQ(IBV_QPS_ERR, state(qp));
        EXPECT_EQ(0, modify(qp, IBV_QPS_RESET, IBV_QP_STATE)) << "ERR->RESET";
        EXPECT_EQ(IBV_QPS_RESET, state(qp));
        /* a reset QP walks the path again */
        ASSERT_NO_FATAL_FAILURE(bring_to(qp, IBV_QPS_RTS));
        EXPECT_EQ(IBV_QPS_RTS, state(qp));

        softnic_qp_t *qp2 = tracked_qp();
        ASSERT_NE(nullptr, qp2);
        ASSERT_NO_FATAL_FAILURE(bring_to(qp2, s));
        EXPECT_EQ(0, modify(qp2, IBV_QPS_RESET, IBV_QP_STATE))
            << state_name(s) << "->RESET";
        EXPECT_EQ(IBV_QPS_RESET, state(qp2));
    }
}

/*
 * Thread safety: several threads create QP pairs, connect them to each
 * other, move data, and destroy them, while another thread keeps posting on
 * a long-lived QP pair of the same device.
 */
void softnic_local::churn_while_posting()
{
    const int nthreads = 3, iters = 20;
    const size_t len = 4096;
    std::atomic<bool> stop(false);
    std::atomic<int> errors(0);
    /* Thread contract: stop and errors are atomics; msgs[t] is written
     * only by thread t (the poster is thread nthreads) and read by the
     * main thread after join(); mrs/bufs are set up before the threads
     * start and each thread touches only its own buffer. */
    std::vector<std::string> msgs(nthreads + 1);

    auto wait_one = [](softnic_cq_t *cq, ibv_wc *wc) {
        double deadline = now_ms() + 10000;
        while (now_ms() < deadline) {
            int n = softnic_cq_poll(cq, 1, wc);
            if (n != 0)
                return n;
            std::this_thread::yield();
        }
        return 0;
    };

    auto pair_up = [&](softnic_qp_t *a, softnic_qp_t *b) {
        return modify(a, IBV_QPS_INIT, INIT_REQ) ||
               modify(b, IBV_QPS_INIT, INIT_REQ) ||
               modify(a, IBV_QPS_RTR, RTR_REQ, b->qp_num) ||
               modify(b, IBV_QPS_RTR, RTR_REQ, a->qp_num) ||
               modify(a, IBV_QPS_RTS, RTS_REQ, b->qp_num) ||
               modify(b, IBV_QPS_RTS, RTS_REQ, a->qp_num);
    };

    auto write_once = [&](softnic_qp_t *qp, softnic_cq_t *cq, softnic_mr_t *mr,
                          uint32_t seed, std::string *msg) {
        uint8_t *src = (uint8_t *)mr->addr, *dst = src + len;
        for (size_t i = 0; i < len; ++i) {
            src[i] = pattern_byte(seed, i);
        }
        ibv_sge sge    = {(uintptr_t)src, (uint32_t)len, mr->lkey};
        ibv_send_wr wr = rdma_wr(&sge, IBV_WR_RDMA_WRITE, seed,
                                 IBV_SEND_SIGNALED, (uintptr_t)dst, mr->rkey);
        ibv_send_wr *bad;
        int ret = softnic_post_send(qp, &wr, &bad);
        if (ret) {
            *msg = "post_send: " + std::string(strerror(ret));
            return false;
        }
        ibv_wc wc;
        if (wait_one(cq, &wc) != 1 || wc.status != IBV_WC_SUCCESS) {
            *msg = "write did not complete successfully";
            return false;
        }
        if (memcmp(src, dst, len)) {
            *msg = "data not placed";
            return false;
        }
        return true;
    };

    std::vector<softnic_mr_t *> mrs;
    std::vector<std::vector<uint8_t>> bufs(nthreads + 1,
                                           std::vector<uint8_t>(2 * len));
    for (auto &b : bufs) {
        softnic_mr_t *mr =
            softnic_mr_reg(m_pd, b.data(), b.size(),
                           IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                               IBV_ACCESS_REMOTE_READ);
        ASSERT_NE(nullptr, mr) << strerror(errno);
        mrs.push_back(mr);
    }

    /* the long-lived poster */
    softnic_cq_t *pcq = softnic_cq_create(m_dev, 256, NULL, NULL);
    ASSERT_NE(nullptr, pcq);
    softnic_qp_t *pa = new_qp(pcq), *pb = new_qp(pcq);
    ASSERT_TRUE(pa && pb);
    ASSERT_EQ(0, pair_up(pa, pb));
    std::atomic<int> posted(0);
    std::thread poster([&] {
        uint32_t seed = 1;
        while (!stop.load()) {
            if (!write_once(pa, pcq, mrs[nthreads], seed++, &msgs[nthreads])) {
                ++errors;
                return;
            }
            ++posted;
        }
    });
    /* the churn starts once the poster is posting (under load its thread
     * may start late: the churn alone would then end before its first
     * WRITE, and nothing would have posted beside it) */
    for (double end = now_ms() + 10000;
         (posted.load() == 0) && (errors.load() == 0) && (now_ms() < end);) {
        std::this_thread::yield();
    }

    std::vector<std::thread> workers;
    for (int t = 0; t < nthreads; ++t) {
        workers.emplace_back([&, t] {
            softnic_cq_t *cq = softnic_cq_create(m_dev, 64, NULL, NULL);
            if (cq == NULL) {
                msgs[t] = "cq_create failed";
                ++errors;
                return;
            }
            for (int i = 0; (i < iters) && !errors.load(); ++i) {
                softnic_qp_t *a = new_qp(cq), *b = new_qp(cq);
                if (!a || !b || pair_up(a, b)) {
                    msgs[t] = "create/connect failed";
                    ++errors;
                } else if (!write_once(a, cq, mrs[t], 1000 * t + i, &msgs[t])) {
                    ++errors;
                }
                if ((a && softnic_qp_destroy(a)) ||
                    (b && softnic_qp_destroy(b))) {
                    msgs[t] = "qp_destroy failed";
                    ++errors;
                }
            }
            softnic_cq_destroy(cq);
        });
    }
    for (auto &w : workers) {
        w.join();
    }
    stop = true;
    poster.join();

    for (int t = 0; t <= nthreads; ++t) {
        EXPECT_TRUE(msgs[t].empty()) << "thread " << t << ": " << msgs[t];
    }
    EXPECT_EQ(0, errors.load());
    EXPECT_GT(posted.load(), 0);
    EXPECT_EQ(0, softnic_qp_destroy(pa));
    EXPECT_EQ(0, softnic_qp_destroy(pb));
    EXPECT_EQ(0, softnic_cq_destroy(pcq));
    for (softnic_mr_t *mr : mrs) {
        EXPECT_EQ(0, softnic_mr_dereg(mr));
    }
}

TEST_F(softnic_local, thread_safety_create_modify_destroy_while_posting)
{
    churn_while_posting();
}

/* The same on TCP: every thread polling a CQ also runs service-loop steps
 * (sn_svc_poll) on the connections that the other threads open and
 * close, beside the service thread. */
TEST_F(softnic_local_tcp, thread_safety_pollers_serve_while_qps_churn)
{
    churn_while_posting();
}

/* While a thread keeps polling, the service thread leaves the sockets to
 * it (sn_int.h, "Polling"); once nobody polls, it serves them again: a
 * WRITE posted after a long spin on an empty CQ lands, and completes,
 * while nobody polls. A service thread that went on standing back would
 * leave the request unread for good. */
TEST_F(softnic_local_tcp, service_thread_serves_again_when_polling_stops)
{
    std::vector<uint8_t> buf(2 * 4096, 0);
    softnic_qp_t *a  = NULL;
    softnic_mr_t *mr = spun_pair(buf, &a);
    ASSERT_NE(nullptr, mr);
    fill_half(buf, 7);
    ASSERT_EQ(0, post_half_write(a, mr, buf, 2, IBV_SEND_SIGNALED));
    /* nobody polls: only the service thread reads the request and the ACK */
    EXPECT_TRUE(placed_within(buf, 10000))
        << "the WRITE was not placed with nobody polling";
    ASSERT_NO_FATAL_FAILURE(expect_completion(2));
    EXPECT_EQ(0, softnic_mr_dereg(mr));
}

/* sn_int.h, "Polling": standing back, the service thread still serves the
 * connections of QPs that take no receives (no SRQ, none ever posted):
 * nothing that comes there completes in a CQ, so no poller waits for it,
 * and an application may spin on its memory for it, as ib_write_lat does.
 * After the spin (the service thread stands back), its clock stops: its
 * look never ends, so it stands back for good. A WRITE a -> b, b without
 * receives, nobody polling, is placed all the same; a service thread that
 * left b's connection to the pollers would leave it unread. The converse
 * below. */
TEST_F(softnic_local_tcp, standing_back_serves_a_qp_that_takes_no_receives)
{
    std::vector<uint8_t> buf(2 * 4096, 0);
    softnic_qp_t *a  = NULL;
    softnic_mr_t *mr = spun_pair(buf, &a);
    ASSERT_NE(nullptr, mr);
    fill_half(buf, 8);
    bool placed;
    {
        svc_clock_stopped stop;
        ASSERT_EQ(0, post_half_write(a, mr, buf, 2, IBV_SEND_SIGNALED));
        placed = placed_within(buf, 10000);
    }
    EXPECT_TRUE(placed)
        << "a WRITE to a QP without receives waited for the pollers";
    ASSERT_NO_FATAL_FAILURE(expect_completion(2));
    EXPECT_EQ(0, softnic_mr_dereg(mr));
}

/* The converse: a QP that takes receives may have a poller waiting for a
 * SEND on its connection, which is left to the pollers while the service
 * thread stands back (it would wake, and take a CPU from them, for every
 * message). b takes a receive before a's connection comes (recv_first), or
 * after it (then the first request b's connection brings after the
 * receive, one WRITE polled for, ends its quiet). With the service
 * thread's clock stopped, a WRITE a -> b stays unread for 300 ms; once the
 * clock runs, the look ends (no poller stepped) and the service thread
 * places it. */
void softnic_local::leaves_a_qp_that_takes_receives(bool recv_first)
{
    std::vector<uint8_t> buf(2 * 4096, 0);
    softnic_qp_t *a  = NULL;
    softnic_mr_t *mr = spun_pair(buf, &a, 64, recv_first);
    ASSERT_NE(nullptr, mr);
    if (!recv_first) {
        ibv_recv_wr rwr = {}, *bad;
        ASSERT_EQ(0, softnic_post_recv(m_qps.back(), &rwr, &bad)); /* b */
        ASSERT_NO_FATAL_FAILURE(connect_then_spin(a, mr, buf));
    }
    fill_half(buf, 9);
    bool placed;
    {
        svc_clock_stopped stop;
        ASSERT_EQ(0, post_half_write(a, mr, buf, 2, IBV_SEND_SIGNALED));
        usleep(300000);
        placed = placed_within(buf, 0);
    }
    EXPECT_FALSE(placed) << "the service thread served the connection of a "
                            "QP that takes receives while standing back";
    EXPECT_TRUE(placed_within(buf, 10000));
    ASSERT_NO_FATAL_FAILURE(expect_completion(2));
    EXPECT_EQ(0, softnic_mr_dereg(mr));
}

TEST_F(softnic_local_tcp, standing_back_leaves_a_qp_that_takes_receives)
{
    leaves_a_qp_that_takes_receives(true);
}

TEST_F(softnic_local_tcp, standing_back_leaves_a_qp_that_took_a_receive_since)
{
    leaves_a_qp_that_takes_receives(false);
}

/* Posts count as polling for the service thread's standby (sn_int.h,
 * "Polling"), but posts alone never keep it back: a poster reads no
 * socket. After a long spin on an empty CQ (the service thread stands
 * back), a thread posts 3 x 4096 WRITEs on a TCP QP, one every 10 us or
 * more, and never polls: only the service thread reads the requests and
 * their ACKs, so the send queue (4096 WRs) keeps room and every post
 * succeeds. A service thread that stood back while posts came would leave
 * the ACKs unread until the queue filled. Counted, not timed: a loaded
 * machine posts fewer per second (20 s at most). */
TEST_F(softnic_local_tcp,
       service_thread_serves_while_the_application_only_posts)
{
    const size_t len = 64;
    std::vector<uint8_t> buf(2 * len, 0);
    softnic_qp_t *a  = NULL;
    softnic_mr_t *mr = spun_pair(buf, &a, 4096);
    ASSERT_NE(nullptr, mr);
    /* posts only, one every 10 us, unsignaled: nothing enters the CQ */
    const int want = 3 * 4096;
    int posted = 0, ret = 0;
    for (double end = now_ms() + 20000;
         (posted < want) && (now_ms() < end) && (ret == 0);) {
        ret = post_half_write(a, mr, buf, 2, 0);
        posted += (ret == 0);
        for (double next = now_ms() + 0.01; now_ms() < next;) {
        }
    }
    EXPECT_EQ(0, ret) << "post " << posted + 1 << " failed (" << strerror(ret)
                      << "): the ACKs were not read";
    /* the last one signaled: it completes after all the others */
    ASSERT_EQ(0, post_half_write(a, mr, buf, 3, IBV_SEND_SIGNALED));
    ibv_wc wc;
    int n          = 0;
    double timeout = now_ms() + 10000;
    while (((n = softnic_cq_poll(m_cq, 1, &wc)) == 0) && (now_ms() < timeout)) {
    }
    ASSERT_EQ(1, n);
    EXPECT_EQ(3u, wc.wr_id);
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status);
    EXPECT_EQ(want, posted) << "too few posts to tell within 20 s";
    EXPECT_EQ(0, softnic_mr_dereg(mr));
}

/* sn_int.h, "Polling": an empty poll whose step of the service loop moved
 * bytes ends the thread's run of empty polls, as a completion does: a
 * thread that moves the data itself is not idle. A try: 3 ms of spinning
 * on the empty CQ (the service thread stands back, nothing moves), then,
 * on this thread's fake clock, two empty polls at 0 us time the run, a
 * WRITE posted at 599 us puts its bytes into the target connection, and
 * the empty poll at 700 us, whose step reads them, does not yield. A try
 * whose step was kept off (the service thread's timer pass held svc_lock,
 * or it read the bytes first) moves nothing and yields: up to 50 tries.
 * Then, with nothing moving, the run is timed again and yields after
 * 600 us. */
TEST_F(softnic_local_tcp, a_poll_whose_step_moved_bytes_ends_the_run)
{
    const size_t len  = 64 * 1024;
    const uint64_t us = 1000;
    std::vector<uint8_t> buf(2 * len, 0);
    softnic_qp_t *a  = NULL;
    softnic_mr_t *mr = spun_pair(buf, &a);
    ASSERT_NE(nullptr, mr);
    ibv_wc wc;
    int n = 0;
    /* one poll at fake time t (us): its yields; n its result */
    auto poll_at = [&](uint64_t t) {
        fake_ns        = 1000000 * us + t * us;
        yield_count    = 0;
        fake_clock     = true;
        yield_counting = true;
        n              = softnic_cq_poll(m_cq, 1, &wc);
        yield_counting = false;
        fake_clock     = false;
        return yield_count;
    };
    auto wait_completion = [&]() {
        for (double end = now_ms() + 10000; (n == 0) && (now_ms() < end);) {
            n = softnic_cq_poll(m_cq, 1, &wc);
        }
        ASSERT_EQ(1, n);
        ASSERT_EQ(IBV_WC_SUCCESS, wc.status);
    };
    int tries, moved = 0;
    for (tries = 0; (tries < 50) && !moved; ++tries) {
        ASSERT_NO_FATAL_FAILURE(spin_empty(3));
        /* the spin's run was timed on the real clock, far from the fake
         * one: it yields here, and is timed from fake 0 us on */
        poll_at(0);
        ASSERT_EQ(0, n);
        EXPECT_EQ(0, poll_at(0));
        ASSERT_EQ(0, n);
        fake_ns    = 1000000 * us + 599 * us;
        fake_clock = true;
        ASSERT_EQ(0, post_half_write(a, mr, buf, 5, IBV_SEND_SIGNALED));
        fake_clock = false;
        moved      = (poll_at(700) == 0) && (n == 0);
        ASSERT_NO_FATAL_FAILURE(wait_completion());
    }
    EXPECT_TRUE(moved) << "a step that read a WRITE's bytes yielded, " << tries
                       << " tries";
    /* nothing moves now: the run is timed again, and yields */
    EXPECT_EQ(0, poll_at(1000));
    EXPECT_EQ(0, poll_at(1000));
    EXPECT_EQ(0, poll_at(1599));
    EXPECT_EQ(1, poll_at(1600)) << "an idle run did not yield";
    EXPECT_EQ(0, softnic_mr_dereg(mr));
}

/* sn_int.h, "Polling": standing back, the service thread only tries
 * svc_lock for its timer pass and its look at owed ACKs, so that a poller
 * mid-step never makes the pollers wait for the service thread to be run
 * again. After the spin, 50 times: a poller's step that holds svc_lock
 * for 400 us (hold_us), then 1 ms of polling (the service thread keeps
 * standing back). Its pass, due every millisecond, comes within some of
 * those steps, about one in four: it must not wait for the lock
 * (held_blocks: any thread's pthread_mutex_lock that found its mutex
 * locked during a held step; the poller holds svc_lock alone then). A
 * test thread kept off its CPU for a look on a loaded host ends the
 * standing back, and the pass after it waits, as it should: up to 14 such
 * waits pass (without the rule 48-50 of the 50 held steps block). */
TEST_F(softnic_local_tcp, a_poller_mid_step_does_not_hold_the_service_thread)
{
    std::vector<uint8_t> buf(128, 0);
    softnic_qp_t *a  = NULL;
    softnic_mr_t *mr = spun_pair(buf, &a);
    ASSERT_NE(nullptr, mr);
    ibv_wc wc;
    unsigned waits = svc_waits;
    held_blocks    = 0;
    for (int cycle = 0; cycle < 50; ++cycle) {
        hold_us = 400;
        for (double end = now_ms() + 1000; (hold_us > 0) && (now_ms() < end);) {
            ASSERT_EQ(0, softnic_cq_poll(m_cq, 1, &wc));
        }
        ASSERT_EQ(0, hold_us) << "no step asked epoll within 1 s";
        ASSERT_NO_FATAL_FAILURE(spin_empty(1));
    }
    EXPECT_GE(svc_waits - waits, 20u) << "the service thread did not look";
    EXPECT_LT(held_blocks.load(), 15u)
        << held_blocks.load() << " waits: "
        << "the service thread waited for a poller's step to end";
    EXPECT_EQ(0, softnic_mr_dereg(mr));
}

/* sn_int.h, "ACK coalescing": an ACK a poller's step holds back, and that
 * its age (SN_ACK_DELAY_NS) makes due while steps move bytes, waits for the
 * first step that moves none (its application waits for the peer then),
 * so that its segment is not sent between a request's arrival and its
 * receive's completion; once SN_ACK_BUSY_NS old it leaves in any step.
 * SENDs of 64 bytes a -> b on TCP, this thread posting and polling on its
 * fake clock (the service thread stands back): SEND 1 at 0 us (its ACK
 * held back: owed), SEND 2 at 60 us: the step that reads it holds its ACK
 * back too and pushes nothing, the next step, which reads nothing, pushes;
 * then again with SEND 2 at 100 us: its ACK leaves in the step that reads
 * it. A try in which another thread sent an answer or pushed (the
 * service thread's look), or SEND 1's ACK was not held back (the service
 * thread served the sockets again), does not count: up to 50 tries. */
TEST_F(softnic_local_tcp, a_due_ack_waits_for_a_step_that_moves_nothing)
{
    const size_t len  = 64;
    const uint64_t us = 1000;
    std::vector<uint8_t> buf(2 * len, 0);
    softnic_qp_t *a  = NULL;
    softnic_mr_t *mr = spun_pair(buf, &a);
    ASSERT_NE(nullptr, mr);
    softnic_qp_t *b = m_qps.back();
    ibv_sge ssge    = {(uintptr_t)buf.data(), (uint32_t)len, mr->lkey};
    ibv_sge rsge    = {(uintptr_t)&buf[len], (uint32_t)len, mr->lkey};
    uint64_t base   = 0;
    ibv_wc wc;
    int sends_done = 0;
    /* polls of m_cq, up to tries and 1 s, until one returns an entry: at
     * fake time t (us), or on the real clock (t < 0); this thread's. a's
     * SEND completions are counted in sends_done */
    auto poll_at = [&](int64_t t, int tries) {
        int n = 0;
        for (double end = now_ms() + 1000;
             (n == 0) && (tries-- > 0) && (now_ms() < end);) {
            fake_ns    = base + t * us;
            fake_clock = (t >= 0);
            acks_mine  = true;
            n          = softnic_cq_poll(m_cq, 1, &wc);
            fake_clock = acks_mine = false;
        }
        if ((n == 1) && (wc.opcode == IBV_WC_SEND)) {
            EXPECT_EQ(IBV_WC_SUCCESS, wc.status);
            ++sends_done;
        }
        return n;
    };
    /* SEND id posted at t, then polled at t until b's receive completes
     * (a's SENDs complete at ACKs: not before it while they are held back) */
    auto send_at = [&](int64_t t, uint64_t id) {
        ibv_recv_wr rwr = {}, *rbad;
        rwr.sg_list     = &rsge;
        rwr.num_sge     = 1;
        ASSERT_EQ(0, softnic_post_recv(b, &rwr, &rbad));
        ibv_send_wr wr = one_sge_wr(&ssge, IBV_WR_SEND, id, IBV_SEND_SIGNALED),
                    *bad;
        fake_ns    = base + t * us;
        fake_clock = acks_mine = true;
        ASSERT_EQ(0, softnic_post_send(a, &wr, &bad));
        fake_clock = acks_mine = false;
        do {
            ASSERT_EQ(1, poll_at(t, 1 << 30))
                << "SEND " << id << " not received";
        } while (wc.opcode != IBV_WC_RECV);
        ASSERT_EQ(IBV_WC_SUCCESS, wc.status);
    };
    /* a's two SENDs complete */
    auto drain = [&]() {
        for (double end = now_ms() + 10000;
             (sends_done < 2) && (now_ms() < end);) {
            poll_at(-1, 1);
        }
        ASSERT_EQ(2, sends_done) << "a SEND did not complete";
    };
    /* one try: SEND 1 at 0 and SEND 2 at gap us; valid: it counts; held2,
     * sent2, pushed2: the answer frames and pushes of the step that read
     * SEND 2, pushed_idle: the pushes of the steps after it */
    int held2 = 0, sent2 = 0, pushed2 = 0, pushed_idle = 0;
    bool valid   = false;
    auto try_gap = [&](int64_t gap) {
        ASSERT_NO_FATAL_FAILURE(spin_empty(5));
        base       = (uint64_t)(now_ms() * 1e6);
        sends_done = 0;
        other_acks = 0;
        acks_held = acks_sent = pushes = 0;
        acks_watched                   = true;
        ASSERT_NO_FATAL_FAILURE(send_at(0, 1));
        valid     = (acks_held == 1) && (acks_sent == 0) && (pushes == 0);
        acks_held = acks_sent = pushes = 0;
        ASSERT_NO_FATAL_FAILURE(send_at(gap, 2));
        held2   = acks_held;
        sent2   = acks_sent;
        pushed2 = pushes;
        pushes  = 0;
        poll_at(gap + 1, 16);
        pushed_idle  = pushes;
        acks_watched = false;
        valid        = valid && (other_acks == 0);
        ASSERT_NO_FATAL_FAILURE(drain());
    };
    int tries = 0;
    for (valid = false; !valid && (tries < 50); ++tries) {
        ASSERT_NO_FATAL_FAILURE(try_gap(60));
    }
    ASSERT_TRUE(valid) << "every try was disturbed";
    EXPECT_EQ(0, sent2) << "a due ACK was sent in the step that read a request";
    EXPECT_EQ(1, held2);
    EXPECT_EQ(0, pushed2) << "a due ACK was pushed by a step that moved bytes";
    EXPECT_GE(pushed_idle, 1) << "a step that moved nothing left a due ACK";
    for (valid = false, tries = 0; !valid && (tries < 50); ++tries) {
        ASSERT_NO_FATAL_FAILURE(try_gap(100));
    }
    ASSERT_TRUE(valid) << "every try was disturbed";
    EXPECT_EQ(1, sent2 + pushed2)
        << "an ACK SN_ACK_BUSY_NS old waited for a step that moves nothing";
    EXPECT_EQ(0, softnic_mr_dereg(mr));
}

/* The timer pass's pace (sn_int.h, "Polling"): while a thread polls the
 * CQ of a same-host pair (its polls drive the pair's rings) the service
 * thread waits SN_RING_LOOK_NS (5 ms) between passes, not 1 ms; once
 * nobody polls it consumes the rings every millisecond again. Read from
 * the timeouts the service thread gives epoll_wait, not timed. */
TEST_F(softnic_local, timer_pass_paces_with_the_pollers)
{
    std::vector<uint8_t> buf(128, 0);
    softnic_qp_t *a  = NULL;
    softnic_mr_t *mr = spun_pair(buf, &a);
    ASSERT_NE(nullptr, mr);
    ASSERT_NO_FATAL_FAILURE(spin_empty(30));
    EXPECT_EQ(5, svc_wait_ms.load())
        << "the service thread looked at the rings every " << svc_wait_ms
        << " ms while a thread polled them";
    unsigned waits = svc_waits;
    for (double end = now_ms() + 10000;
         ((svc_waits - waits < 8) || (svc_wait_ms != 1)) && (now_ms() < end);) {
        usleep(1000);
    }
    EXPECT_EQ(1, svc_wait_ms.load())
        << "nobody polls: the rings wait for the service thread's pass";
    EXPECT_EQ(0, softnic_mr_dereg(mr));
}

/* An arm of a CQ wakes a service thread whose pass waits SN_RING_LOOK_NS
 * (sn_int.h, "Polling"): the application is about to sleep, the rings are
 * the service thread's at once. After a spin, the first wait of the service
 * thread that ends after the arm ends by the wake (events), not by its
 * timeout. Three tries: a wait may time out between the count and the
 * arm. */
TEST_F(softnic_local, an_arm_wakes_the_pacing_service_thread)
{
    std::vector<uint8_t> buf(128, 0);
    softnic_qp_t *a  = NULL;
    softnic_mr_t *mr = spun_pair(buf, &a);
    ASSERT_NE(nullptr, mr);
    int woken = 0;
    for (int i = 0; (i < 3) && !woken; ++i) {
        ASSERT_NO_FATAL_FAILURE(spin_empty(30));
        ASSERT_EQ(5, svc_wait_ms.load()) << "no pacing to wake from";
        unsigned waits = svc_waits;
        ASSERT_EQ(0, softnic_cq_req_notify(m_cq, 0));
        for (double end = now_ms() + 10000;
             (svc_waits == waits) && (now_ms() < end);) {
        }
        woken = (svc_wait_ret > 0);
    }
    EXPECT_TRUE(woken) << "the arm left the service thread asleep";
    EXPECT_EQ(0, softnic_mr_dereg(mr));
}

/* A completion that a poll's own step produces goes straight into the
 * poll's array (sn_int.h, sn_cq_t), never more than the poll asked for:
 * after the spin (the poller steps itself), 8 signaled WRITEs posted in one
 * list are ACKed together, and the step that reads the ACK completes them
 * all. Polls of 1 entry each return them one by one, in posting order, and
 * the array's next entry stays untouched. A hand-over past num_entries
 * writes it. */
TEST_F(softnic_local_tcp, poll_takes_at_most_num_entries_from_its_own_step)
{
    const size_t len = 64;
    const int num    = 8;
    std::vector<uint8_t> buf(2 * len, 0);
    softnic_qp_t *a  = NULL;
    softnic_mr_t *mr = spun_pair(buf, &a);
    ASSERT_NE(nullptr, mr);

    ibv_sge sge = {(uintptr_t)buf.data(), (uint32_t)len, mr->lkey};
    ibv_send_wr wr[num], *bad;
    for (int i = 0; i < num; ++i) {
        wr[i]      = rdma_wr(&sge, IBV_WR_RDMA_WRITE, 10 + i, IBV_SEND_SIGNALED,
                             (uintptr_t)&buf[len], mr->rkey);
        wr[i].next = (i + 1 < num) ? &wr[i + 1] : NULL;
    }
    ASSERT_EQ(0, softnic_post_send(a, wr, &bad));

    ibv_wc wc[2], canary;
    memset(&canary, 0xa5, sizeof(canary));
    uint64_t next  = 10;
    double timeout = now_ms() + 10000;
    while ((next < 10u + num) && (now_ms() < timeout)) {
        wc[1] = canary;
        int n = softnic_cq_poll(m_cq, 1, wc);
        ASSERT_LE(n, 1) << "more than num_entries";
        ASSERT_EQ(0, memcmp(&wc[1], &canary, sizeof(canary)))
            << "written past num_entries";
        if (n == 1) {
            EXPECT_EQ(next, wc[0].wr_id);
            EXPECT_EQ(IBV_WC_SUCCESS, wc[0].status);
            ++next;
        }
    }
    EXPECT_EQ(10u + num, next);
    EXPECT_EQ(0, softnic_mr_dereg(mr));
}

/* What a poll's own step completes goes straight into the poll's array
 * only while the CQ's ring is empty (sn_int.h, sn_cq_t): another thread
 * may push WR k of a QP into the ring after the poll found the CQ empty;
 * if the poll's step then completes WR k + 1, k + 1 goes behind k. QP a
 * sends into the same-host ring; its send CQ is m_cq, its receive CQ is
 * rcq, which b (the target) uses for both. A thread polling rcq reaps a's
 * slots (into m_cq's ring: it polls rcq, not m_cq) and consumes the next
 * ones into b's receives, while this thread polls m_cq, one entry at a
 * time, and reaps a's slots too, after passing 256 idle QPs of m_cq (its
 * ring progress walks the CQ's QPs in creation order): the other thread's
 * reap and consume fall between this poll's emptiness check and its reap
 * in most runs within milliseconds, with the condition dropped. The sender
 * keeps up to 3500 SENDs in flight (m_cq holds 4096), so it streams on
 * while this thread is descheduled. Every completion of a comes out in
 * posting order. Bounded: `total` SENDs or 3 s. */
TEST_F(softnic_local, poll_takes_its_own_step_only_into_an_empty_cq)
{
    const int total = 2000000, in_flight = 3500, recvs = 4, idle = 256;
    const size_t len = 8;
    std::vector<uint8_t> buf(2 * len, 0);
    softnic_mr_t *mr =
        softnic_mr_reg(m_pd, buf.data(), buf.size(), IBV_ACCESS_LOCAL_WRITE);
    ASSERT_NE(nullptr, mr) << strerror(errno);
    softnic_cq_t *rcq = softnic_cq_create(m_dev, 4096, NULL, NULL);
    ASSERT_NE(nullptr, rcq) << strerror(errno);
    for (int i = 0; i < idle; ++i) {
        ASSERT_NE(nullptr, tracked_qp());
    }
    softnic_qp_t *a = tracked_qp(m_cq, rcq), *b = tracked_qp(rcq, rcq);
    ASSERT_TRUE(a && b);
    ASSERT_NO_FATAL_FAILURE(bring_to(a, IBV_QPS_RTS, b->qp_num));
    ASSERT_NO_FATAL_FAILURE(bring_to(b, IBV_QPS_RTS, a->qp_num));

    ibv_sge ssge   = {(uintptr_t)buf.data(), (uint32_t)len, mr->lkey};
    ibv_sge rsge   = {(uintptr_t)&buf[len], (uint32_t)len, mr->lkey};
    auto post_recv = [&]() {
        ibv_recv_wr wr = {}, *bad;
        wr.sg_list     = &rsge;
        wr.num_sge     = 1;
        return softnic_post_recv(b, &wr, &bad);
    };
    for (int i = 0; i < recvs; ++i) {
        ASSERT_EQ(0, post_recv());
    }
    /* Thread contract: done (completions of a seen so far, stored by this
     * thread), stop and errors are atomics; the target thread alone posts
     * on a and b and polls rcq, this thread alone polls m_cq. */
    std::atomic<int> done(0), errors(0);
    std::atomic<bool> stop(false);
    std::thread target([&] {
        int posted = 0;
        ibv_wc wc;
        while (!stop.load(std::memory_order_relaxed)) {
            while ((posted < total) && (posted - done.load() < in_flight)) {
                ibv_send_wr wr = one_sge_wr(&ssge, IBV_WR_SEND, posted,
                                            IBV_SEND_SIGNALED),
                            *bad;
                int ret = softnic_post_send(a, &wr, &bad);
                if (ret == ENOMEM) {
                    break; /* the send queue is full */
                } else if (ret != 0) {
                    ++errors;
                    return;
                }
                ++posted;
            }
            int n = softnic_cq_poll(rcq, 1, &wc);
            if ((n < 0) || ((n == 1) && ((wc.status != IBV_WC_SUCCESS) ||
                                         (post_recv() != 0)))) {
                ++errors;
                return;
            }
        }
    });

    int next = 0, n = 0;
    bool wrong = false;
    ibv_wc wc  = {};
    for (double end = now_ms() + 3000; (next < total) && (now_ms() < end) &&
                                       (errors.load() == 0) && !wrong;) {
        n     = softnic_cq_poll(m_cq, 1, &wc);
        wrong = (n < 0) || ((n == 1) && ((wc.wr_id != (uint64_t)next) ||
                                         (wc.status != IBV_WC_SUCCESS)));
        next += (n == 1) && !wrong;
        done.store(next);
    }
    stop = true;
    target.join();
    EXPECT_EQ(0, errors.load());
    EXPECT_FALSE(wrong) << "poll returned " << n << ", WR " << wc.wr_id
                        << " (status " << wc.status << ") where WR " << next
                        << " was next";
    EXPECT_GT(next, 1000) << "too few completions to tell";
    destroy_qps();
    EXPECT_EQ(0, softnic_cq_destroy(rcq));
    EXPECT_EQ(0, softnic_mr_dereg(mr));
}

/* sn_int.h, "Polling": a thread that has polled its CQs, any of them,
 * for 600 us (SN_CQ_YIELD_NS) without getting anything yields, and again
 * after each further 600 us; a poll that returns a completion ends the run.
 * The completions are receives flushed by a QP moved to ERR, in rcq; the
 * clock is this thread's fake one. */
TEST_F(softnic_local, empty_polls_yield_every_600us_in_a_row_per_thread)
{
    const int flushed = 2;
    const uint64_t us = 1000;
    softnic_cq_t *rcq = softnic_cq_create(m_dev, 64, NULL, NULL);
    ASSERT_NE(nullptr, rcq) << strerror(errno);
    softnic_qp_t *qp = tracked_qp(m_cq, rcq);
    ASSERT_NE(nullptr, qp);
    ASSERT_NO_FATAL_FAILURE(bring_to(qp, IBV_QPS_INIT));
    for (int i = 0; i < flushed; ++i) {
        ibv_recv_wr wr = {}, *bad;
        ASSERT_EQ(0, softnic_post_recv(qp, &wr, &bad));
    }
    ASSERT_EQ(0, modify(qp, IBV_QPS_ERR, IBV_QP_STATE));

    ibv_wc wc;
    /* one empty poll of cq at fake time t (us); the yields it made (and
     * its clock reads in clock_reads) */
    auto empty_poll_at = [&](softnic_cq_t *cq, uint64_t t) {
        fake_ns        = 1000000 * us + t * us;
        yield_count    = 0;
        clock_reads    = 0;
        fake_clock     = true;
        yield_counting = true;
        int n          = softnic_cq_poll(cq, 1, &wc);
        yield_counting = false;
        fake_clock     = false;
        EXPECT_EQ(0, n);
        return yield_count;
    };
    ASSERT_EQ(1, softnic_cq_poll(rcq, 1, &wc)); /* no run yet */
    EXPECT_EQ(0, empty_poll_at(m_cq, 0));       /* the run starts */
    EXPECT_EQ(0, clock_reads) << "a run's first poll read the clock";
    EXPECT_EQ(0, empty_poll_at(m_cq, 0)); /* its second: the timing starts */
    EXPECT_EQ(0, empty_poll_at(m_cq, 599));
    ASSERT_EQ(1, softnic_cq_poll(rcq, 1, &wc)); /* the run ends */
    EXPECT_EQ(0, empty_poll_at(m_cq, 700))
        << "a completion did not end the run";
    EXPECT_EQ(0, empty_poll_at(m_cq, 700));
    EXPECT_EQ(0, empty_poll_at(m_cq, 1299));
    EXPECT_EQ(1, empty_poll_at(m_cq, 1300));
    /* two CQs polled in turn (rcq is empty now): one run */
    EXPECT_EQ(0, empty_poll_at(rcq, 1400));
    EXPECT_EQ(0, empty_poll_at(m_cq, 1899));
    EXPECT_EQ(1, empty_poll_at(rcq, 1900)) << "the run is not per thread";
    EXPECT_EQ(0, empty_poll_at(m_cq, 2499));
    EXPECT_EQ(1, empty_poll_at(m_cq, 2600));
    destroy_qps();
    EXPECT_EQ(0, softnic_cq_destroy(rcq));
}

/* A WR that completed within its post (softnic_post_send_now()'s done: a
 * same-host WRITE on an idle QP, one CMA copy) ends the thread's run of
 * empty polls as a completion that a poll returns does: a thread that puts
 * and polls in turn waits for nobody and does not yield */
TEST_F(softnic_local, a_wr_done_within_its_post_ends_the_run_of_empty_polls)
{
    const uint64_t us = 1000;
    const size_t len  = 8192; /* larger than a WRITE that may wait in a batch */
    std::vector<uint8_t> buf(2 * len, 1);
    softnic_mr_t *mr =
        softnic_mr_reg(m_pd, buf.data(), buf.size(),
                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    ASSERT_NE(nullptr, mr) << strerror(errno);
    softnic_qp_t *a = tracked_qp(), *b = tracked_qp();
    ASSERT_TRUE(a && b);
    ASSERT_NO_FATAL_FAILURE(bring_to(a, IBV_QPS_RTS, b->qp_num));
    ASSERT_NO_FATAL_FAILURE(bring_to(b, IBV_QPS_RTS, a->qp_num));

    ibv_sge sge    = {(uintptr_t)buf.data(), (uint32_t)len, mr->lkey};
    ibv_send_wr wr = rdma_wr(&sge, IBV_WR_RDMA_WRITE, 0, IBV_SEND_SIGNALED,
                             (uintptr_t)&buf[len], mr->rkey),
                *bad;
    ibv_wc wc;
    int n           = 0;
    double deadline = now_ms() + 10000;
    /* the QP's connection up: its first WRITE completes */
    ASSERT_EQ(0, softnic_post_send(a, &wr, &bad));
    while ((n == 0) && (now_ms() < deadline)) {
        n = softnic_cq_poll(m_cq, 1, &wc);
    }
    ASSERT_EQ(1, n);
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status);

    /* at fake time t (us): an empty poll (returns its yields), a post */
    auto at = [&](uint64_t t) {
        fake_ns    = 1000000 * us + t * us;
        fake_clock = true;
    };
    auto empty_poll_at = [&](uint64_t t) {
        at(t);
        yield_count    = 0;
        clock_reads    = 0;
        yield_counting = true;
        EXPECT_EQ(0, softnic_cq_poll(m_cq, 1, &wc));
        yield_counting = false;
        fake_clock     = false;
        return yield_count;
    };
    EXPECT_EQ(0, empty_poll_at(0)); /* the run starts */
    EXPECT_EQ(0, empty_poll_at(0)); /* its timing starts */
    at(599);
    int done = 0;
    EXPECT_EQ(0, softnic_post_send_now(a, &wr, &bad, &done));
    fake_clock = false;
    ASSERT_EQ(1, done) << "a same-host WRITE on an idle QP";
    EXPECT_EQ(0, empty_poll_at(700)) << "a WR done in its post did not end "
                                        "the run";
    EXPECT_EQ(0, clock_reads) << "the poll after a put read the clock";
    EXPECT_EQ(0, empty_poll_at(700));
    EXPECT_EQ(0, empty_poll_at(1299));
    EXPECT_EQ(1, empty_poll_at(1300)) << "the run did not start again";
    destroy_qps();
    EXPECT_EQ(0, softnic_mr_dereg(mr));
}

/* sn_int.h, same-host WRITE batches: posts that come back to back stream
 * (their WRITEs wait in the batch), but a post that comes after the second
 * empty poll of one of the QP's CQs since the previous one starts a new
 * stream: the application waited (a ping-pong), and its WRITE runs within
 * the post, without a clock read. The clock stands still (fake): every post
 * comes within SN_BATCH_GAP_NS of the one before. */
TEST_F(softnic_local, a_write_after_a_wait_runs_within_its_post)
{
    const size_t len = 8, n = 5;
    std::vector<uint64_t> src(n), dst(n, 0);
    softnic_mr_t *lmr =
        softnic_mr_reg(m_pd, src.data(), n * len, IBV_ACCESS_LOCAL_WRITE);
    softnic_mr_t *rmr =
        softnic_mr_reg(m_pd, dst.data(), n * len,
                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    ASSERT_TRUE(lmr && rmr) << strerror(errno);
    softnic_qp_t *a = tracked_qp(), *b = tracked_qp();
    ASSERT_TRUE(a && b);
    ASSERT_NO_FATAL_FAILURE(bring_to(a, IBV_QPS_RTS, b->qp_num));
    ASSERT_NO_FATAL_FAILURE(bring_to(b, IBV_QPS_RTS, a->qp_num));
    ibv_send_wr *bad;
    ibv_wc wc;
    /* WRITE i of src[i] to dst[i], unsignaled */
    auto post = [&](size_t i) {
        ibv_sge sge    = {(uintptr_t)&src[i], (uint32_t)len, lmr->lkey};
        ibv_send_wr wr = rdma_wr(&sge, IBV_WR_RDMA_WRITE, i, 0,
                                 (uintptr_t)&dst[i], rmr->rkey);
        return softnic_post_send(a, &wr, &bad);
    };
    /* the QP's connection up: a first WRITE lands */
    src[0]          = 1;
    double deadline = now_ms() + 10000;
    ASSERT_EQ(0, post(0));
    while ((__atomic_load_n(&dst[0], __ATOMIC_ACQUIRE) != 1) &&
           (now_ms() < deadline)) {
        softnic_cq_poll(m_cq, 1, &wc);
    }
    ASSERT_EQ(1u, dst[0]);

    fake_ns    = 1000000000;
    fake_clock = true;
    /* the first comes after the polls above: a stream begins after it, and
     * from its third post on its WRITEs wait */
    for (size_t i = 0; i < 4; ++i) {
        src[i] = 10 + i;
        ASSERT_EQ(0, post(i));
    }
    ASSERT_NE(13u, dst[3]) << "a streamed WRITE did not wait in the batch: "
                              "nothing to tell a wait from";
    EXPECT_EQ(0, softnic_cq_poll(m_cq, 1, &wc));
    EXPECT_EQ(0, softnic_cq_poll(m_cq, 1, &wc)); /* flushes the batch */
    EXPECT_EQ(13u, dst[3]);
    src[4]       = 14;
    clock_reads  = 0;
    coarse_reads = 0;
    ASSERT_EQ(0, post(4));
    EXPECT_EQ(0, clock_reads) << "the post after a wait read the clock";
    EXPECT_EQ(0, coarse_reads) << "the WRITE done within its post started "
                                  "the QP's transport budget";
    fake_clock = false;
    EXPECT_EQ(14u, dst[4]) << "a WRITE posted after a wait did not run "
                              "within its post";
    destroy_qps();
    EXPECT_EQ(0, softnic_mr_dereg(lmr));
    EXPECT_EQ(0, softnic_mr_dereg(rmr));
}

/* Several threads post on the same QP at once (verbs calls are
 * thread-safe) while one thread polls: every WR completes once, and
 * every thread's data is placed. */
TEST_F(softnic_local, thread_safety_concurrent_post_same_qp)
{
    const int nthreads = 4, per_thread = 300;
    const size_t len = 1024;
    std::vector<uint8_t> buf(2 * nthreads * len);
    softnic_mr_t *mr =
        softnic_mr_reg(m_pd, buf.data(), buf.size(),
                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    ASSERT_NE(nullptr, mr) << strerror(errno);
    softnic_cq_t *cq =
        softnic_cq_create(m_dev, 4 * nthreads * per_thread, NULL, NULL);
    ASSERT_NE(nullptr, cq);
    softnic_qp_init_attr_t attr = {};
    attr.send_cq                = cq;
    attr.recv_cq                = cq;
    attr.cap.max_send_wr        = nthreads * per_thread;
    attr.cap.max_recv_wr        = 1;
    attr.cap.max_send_sge       = 1;
    attr.cap.max_recv_sge       = 1;
    attr.qp_type                = IBV_QPT_RC;
    softnic_qp_t *a             = softnic_qp_create(m_pd, &attr),
                 *b             = softnic_qp_create(m_pd, &attr);
    ASSERT_TRUE(a && b);
    ASSERT_NO_FATAL_FAILURE(bring_to(a, IBV_QPS_RTS, b->qp_num));
    ASSERT_NO_FATAL_FAILURE(bring_to(b, IBV_QPS_RTS, a->qp_num));

    for (int t = 0; t < nthreads; ++t) {
        for (size_t i = 0; i < len; ++i) {
            buf[t * len + i] = pattern_byte(40 + t, i);
        }
    }
    /* Thread contract: buf[t * len, (t + 1) * len) is read by poster t
     * (and the device), written before the threads start; the second half
     * is written only by the device; seen/total belong to the polling
     * (main) thread; post_errors is atomic. */
    std::atomic<int> post_errors(0);
    std::vector<std::thread> posters;
    for (int t = 0; t < nthreads; ++t) {
        posters.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                ibv_sge sge = {(uintptr_t)&buf[t * len], (uint32_t)len,
                               mr->lkey};
                ibv_send_wr wr =
                    rdma_wr(&sge, IBV_WR_RDMA_WRITE,
                            (uint64_t)t << 32 | (uint64_t)i, IBV_SEND_SIGNALED,
                            (uintptr_t)&buf[(nthreads + t) * len], mr->rkey);
                ibv_send_wr *bad;
                if (softnic_post_send(a, &wr, &bad)) {
                    ++post_errors;
                }
            }
        });
    }
    std::vector<int> seen(nthreads, 0);
    int total = 0, bad_status = 0, dup = 0;
    double deadline = now_ms() + 20000;
    while ((total < nthreads * per_thread) && (now_ms() < deadline)) {
        ibv_wc wc[32];
        int n = softnic_cq_poll(cq, 32, wc);
        ASSERT_GE(n, 0);
        for (int k = 0; k < n; ++k) {
            int t = (int)(wc[k].wr_id >> 32), i = (int)(wc[k].wr_id & ~0u);
            bad_status += (wc[k].status != IBV_WC_SUCCESS);
            /* one thread's WRs complete in its posting order */
            dup += ((t < 0) || (t >= nthreads) || (i != seen[t]));
            if ((t >= 0) && (t < nthreads)) {
                seen[t] = i + 1;
            }
        }
        total += n;
        if (n == 0) {
            std::this_thread::yield();
        }
    }
    for (auto &p : posters) {
        p.join();
    }
    EXPECT_EQ(0, post_errors.load());
    EXPECT_EQ(nthreads * per_thread, total);
    EXPECT_EQ(0, bad_status);
    EXPECT_EQ(0, dup) << "completions lost, duplicated or out of order";
    for (int t = 0; t < nthreads; ++t) {
        EXPECT_EQ(0, memcmp(&buf[t * len], &buf[(nthreads + t) * len], len))
            << "thread " << t;
    }
    EXPECT_EQ(0, softnic_qp_destroy(a));
    EXPECT_EQ(0, softnic_qp_destroy(b));
    EXPECT_EQ(0, softnic_cq_destroy(cq));
    EXPECT_EQ(0, softnic_mr_dereg(mr));
}

} /* namespace */
