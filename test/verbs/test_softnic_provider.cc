/*
 * The softnic provider through libibverbs' own API (soft_lo), where the
 * judges (perftest, UCX, rdma-core's examples) do not look: async events and
 * their acknowledgement, completion channels (events of a destroyed CQ are
 * dropped, as the kernel drops them), the verbs the provider refuses, and
 * softnic's rules seen through verbs (the state machine, remote access, UD's
 * qkey, drop, MTU and receive-length rules).
 *
 * Run under contrib/softnic-run: without soft devices the binary runs itself
 * again under it (it needs root, as softnic-run does).
 */
#include "gtest/softnic/send_wr.h"

#include <gtest/gtest.h>
#include <infiniband/verbs.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

using namespace softnic_test;

namespace
{

double now_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

bool fd_readable(int fd, int timeout_ms)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    return poll(&pfd, 1, timeout_ms) == 1;
}

void set_nonblock(int fd)
{
    ASSERT_EQ(0, fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK));
}

/* soft_lo opened, a PD, a registered buffer, and helpers for RC QPs
 * connected to each other on the same device */
class provider : public ::testing::Test
{
  protected:
    void SetUp() override
    {
        int n                    = 0;
        struct ibv_device **list = ibv_get_device_list(&n);
        for (int i = 0; (list != NULL) && (i < n); ++i) {
            if (!strcmp(ibv_get_device_name(list[i]), "soft_lo")) {
                m_ctx = ibv_open_device(list[i]);
            }
        }
        if (list != NULL) {
            ibv_free_device_list(list);
        }
        ASSERT_NE(nullptr, m_ctx) << "soft_lo: " << strerror(errno);
        m_pd = ibv_alloc_pd(m_ctx);
        ASSERT_NE(nullptr, m_pd);
        m_buf.assign(8192, 0);
        m_mr = ibv_reg_mr(m_pd, m_buf.data(), m_buf.size(),
                          IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                              IBV_ACCESS_REMOTE_READ);
        ASSERT_NE(nullptr, m_mr) << strerror(errno);
        m_cq = ibv_create_cq(m_ctx, 64, NULL, NULL, 0);
        ASSERT_NE(nullptr, m_cq);
        ASSERT_EQ(0, ibv_query_gid(m_ctx, 1, 0, &m_gid));
    }

    void TearDown() override
    {
        for (ibv_qp *qp : m_qps) {
            EXPECT_EQ(0, ibv_destroy_qp(qp));
        }
        if (m_cq != NULL) {
            EXPECT_EQ(0, ibv_destroy_cq(m_cq));
        }
        if (m_mr != NULL) {
            EXPECT_EQ(0, ibv_dereg_mr(m_mr));
        }
        if (m_pd != NULL) {
            EXPECT_EQ(0, ibv_dealloc_pd(m_pd));
        }
        if (m_ctx != NULL) {
            EXPECT_EQ(0, ibv_close_device(m_ctx));
        }
    }

    ibv_qp *qp(ibv_cq *cq = NULL, ibv_srq *srq = NULL, bool track = true)
    {
        ibv_qp_init_attr a = {};
        a.send_cq = a.recv_cq = cq ? cq : m_cq;
        a.srq                 = srq;
        a.cap.max_send_wr = a.cap.max_recv_wr = 16;
        a.cap.max_send_sge = a.cap.max_recv_sge = 1;
        a.qp_type                               = IBV_QPT_RC;
        ibv_qp *q                               = ibv_create_qp(m_pd, &a);
        EXPECT_NE(nullptr, q) << strerror(errno);
        if ((q != NULL) && track) {
            m_qps.push_back(q);
        }
        return q;
    }

    /* an SRQ of max_wr one-SGE receives */
    ibv_srq *srq(uint32_t max_wr)
    {
        ibv_srq_init_attr sa = {};
        sa.attr.max_wr       = max_wr;
        sa.attr.max_sge      = 1;
        ibv_srq *q           = ibv_create_srq(m_pd, &sa);
        EXPECT_NE(nullptr, q) << strerror(errno);
        return q;
    }

    /* RESET -> INIT -> RTR -> RTS towards dest_qpn, the way verbs programs
     * do it on RoCE: GID and QPN only */
    void connect(ibv_qp *q, uint32_t dest_qpn, int access)
    {
        ibv_qp_attr a     = {};
        a.qp_state        = IBV_QPS_INIT;
        a.port_num        = 1;
        a.qp_access_flags = access;
        ASSERT_EQ(0, ibv_modify_qp(q, &a,
                                   IBV_QP_STATE | IBV_QP_PKEY_INDEX |
                                       IBV_QP_PORT | IBV_QP_ACCESS_FLAGS));
        memset(&a, 0, sizeof(a));
        a.qp_state              = IBV_QPS_RTR;
        a.path_mtu              = IBV_MTU_1024;
        a.dest_qp_num           = dest_qpn;
        a.max_dest_rd_atomic    = 1;
        a.min_rnr_timer         = 12;
        a.ah_attr.is_global     = 1;
        a.ah_attr.grh.dgid      = m_gid;
        a.ah_attr.grh.hop_limit = 1;
        a.ah_attr.port_num      = 1;
        ASSERT_EQ(0, ibv_modify_qp(q, &a,
                                   IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
                                       IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                       IBV_QP_MAX_DEST_RD_ATOMIC |
                                       IBV_QP_MIN_RNR_TIMER));
        memset(&a, 0, sizeof(a));
        a.qp_state      = IBV_QPS_RTS;
        a.timeout       = 14;
        a.retry_cnt     = 7;
        a.rnr_retry     = 7;
        a.max_rd_atomic = 1;
        ASSERT_EQ(0,
                  ibv_modify_qp(q, &a,
                                IBV_QP_STATE | IBV_QP_TIMEOUT |
                                    IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                                    IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC));
    }

    int to_state(ibv_qp *q, ibv_qp_state s)
    {
        ibv_qp_attr a = {};
        a.qp_state    = s;
        return ibv_modify_qp(q, &a, IBV_QP_STATE);
    }

    int post_write(ibv_qp *q, uint64_t wr_id, uint32_t rkey)
    {
        ibv_sge sge = {(uintptr_t)m_buf.data(), 64, m_mr->lkey};
        ibv_send_wr wr =
            rdma_wr(&sge, IBV_WR_RDMA_WRITE, wr_id, IBV_SEND_SIGNALED,
                    (uintptr_t)m_buf.data() + 4096, rkey);
        ibv_send_wr *bad;
        return ibv_post_send(q, &wr, &bad);
    }

    /* the next completion event of ch (its fd non-blocking), bounded */
    bool get_cq_event(ibv_comp_channel *ch, ibv_cq **cq, void **cq_context)
    {
        for (double end = now_ms() + 10000; now_ms() < end;) {
            if (!fd_readable(ch->fd, 100)) {
                continue;
            }
            if (ibv_get_cq_event(ch, cq, cq_context) == 0) {
                return true;
            }
            if (errno != EAGAIN) { /* EAGAIN: a dropped event's wakeup */
                return false;
            }
        }
        return false;
    }

    bool wait_wc(ibv_cq *cq, ibv_wc *wc)
    {
        for (double end = now_ms() + 10000; now_ms() < end;) {
            int n = ibv_poll_cq(cq, 1, wc);
            if (n != 0) {
                return n == 1;
            }
        }
        return false;
    }

    ibv_context *m_ctx = nullptr;
    ibv_pd *m_pd       = nullptr;
    ibv_mr *m_mr       = nullptr;
    ibv_cq *m_cq       = nullptr;
    union ibv_gid m_gid;
    std::vector<uint8_t> m_buf;
    std::vector<ibv_qp *> m_qps;
};

const int ALL_ACCESS = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                       IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;

/* A QP on an SRQ entering ERR: IBV_EVENT_QP_LAST_WQE_REACHED on the async
 * fd, once; nothing for a QP with its own receive queue; ibv_destroy_qp
 * returns once the event read is acknowledged. */
TEST_F(provider, async_last_wqe_reached)
{
    set_nonblock(m_ctx->async_fd);
    ibv_async_event ev;
    EXPECT_EQ(-1, ibv_get_async_event(m_ctx, &ev));
    EXPECT_EQ(EAGAIN, errno);

    ibv_srq *srq = this->srq(16);
    ASSERT_NE(nullptr, srq);
    ibv_qp *a = qp(NULL, srq, false), *b = qp();
    ASSERT_TRUE(a && b);
    connect(a, b->qp_num, ALL_ACCESS);
    connect(b, a->qp_num, ALL_ACCESS);

    ASSERT_EQ(0, to_state(b, IBV_QPS_ERR));
    EXPECT_FALSE(fd_readable(m_ctx->async_fd, 100)) << "event without SRQ";
    ASSERT_EQ(0, to_state(a, IBV_QPS_ERR));
    ASSERT_TRUE(fd_readable(m_ctx->async_fd, 10000));
    ASSERT_EQ(0, ibv_get_async_event(m_ctx, &ev));
    EXPECT_EQ(IBV_EVENT_QP_LAST_WQE_REACHED, ev.event_type);
    EXPECT_EQ(a, ev.element.qp);
    ASSERT_EQ(0, to_state(a, IBV_QPS_ERR));
    EXPECT_FALSE(fd_readable(m_ctx->async_fd, 100)) << "a second event";
    ibv_ack_async_event(&ev);
    EXPECT_EQ(0, ibv_destroy_qp(a));
    EXPECT_EQ(0, ibv_destroy_srq(srq));
}

/* An unread event of a destroyed QP is dropped with it: the application
 * never reads a pointer to a freed QP. */
TEST_F(provider, async_event_of_destroyed_qp_dropped)
{
    ibv_srq *srq = this->srq(4);
    ASSERT_NE(nullptr, srq);
    ibv_qp *a = qp(NULL, srq, false);
    ASSERT_NE(nullptr, a);
    ASSERT_EQ(0, to_state(a, IBV_QPS_ERR));
    ASSERT_TRUE(fd_readable(m_ctx->async_fd, 10000));
    EXPECT_EQ(0, ibv_destroy_qp(a)); /* its event unread */
    set_nonblock(m_ctx->async_fd);
    ibv_async_event ev;
    EXPECT_EQ(-1, ibv_get_async_event(m_ctx, &ev));
    EXPECT_EQ(EAGAIN, errno);
    EXPECT_EQ(0, ibv_destroy_srq(srq));
}

/* A CQ that overruns: IBV_EVENT_CQ_ERR naming it */
TEST_F(provider, async_cq_err_on_overrun)
{
    ibv_cq *cq = ibv_create_cq(m_ctx, 1, NULL, NULL, 0);
    ASSERT_NE(nullptr, cq);
    ibv_qp *q = qp(cq, NULL, false);
    ASSERT_NE(nullptr, q);
    ASSERT_EQ(0, to_state(q, IBV_QPS_ERR));
    /* flushed WRs: more completions than the CQ holds */
    for (int i = 0; i <= cq->cqe + 1; ++i) {
        ASSERT_EQ(0, post_write(q, i, m_mr->rkey));
    }
    ASSERT_TRUE(fd_readable(m_ctx->async_fd, 10000));
    ibv_async_event ev;
    ASSERT_EQ(0, ibv_get_async_event(m_ctx, &ev));
    EXPECT_EQ(IBV_EVENT_CQ_ERR, ev.event_type);
    EXPECT_EQ(cq, ev.element.cq);
    ibv_ack_async_event(&ev);
    EXPECT_EQ(0, ibv_destroy_qp(q));
    EXPECT_EQ(0, ibv_destroy_cq(cq));
}

/* A completion channel: one event per arming, naming the CQ and its
 * context; an unread event of a destroyed CQ is dropped. */
TEST_F(provider, completion_channel)
{
    ibv_comp_channel *ch = ibv_create_comp_channel(m_ctx);
    ASSERT_NE(nullptr, ch) << strerror(errno);
    set_nonblock(ch->fd);
    int ctx1, ctx2;
    ibv_cq *cq1 = ibv_create_cq(m_ctx, 16, &ctx1, ch, 0);
    ibv_cq *cq2 = ibv_create_cq(m_ctx, 16, &ctx2, ch, 0);
    ASSERT_TRUE(cq1 && cq2);
    EXPECT_EQ(EBUSY, ibv_destroy_comp_channel(ch));
    ibv_qp *q1 = qp(cq1, NULL, false), *q2 = qp(cq2, NULL, false);
    ASSERT_TRUE(q1 && q2);
    connect(q1, q2->qp_num, ALL_ACCESS);
    connect(q2, q1->qp_num, ALL_ACCESS);

    ibv_wc wc;
    ASSERT_EQ(0, ibv_req_notify_cq(cq1, 0));
    ASSERT_EQ(0, post_write(q1, 1, m_mr->rkey));
    ASSERT_TRUE(wait_wc(cq1, &wc));
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status);
    ibv_cq *ecq = NULL;
    void *ectx  = NULL;
    ASSERT_TRUE(get_cq_event(ch, &ecq, &ectx));
    EXPECT_EQ(cq1, ecq);
    EXPECT_EQ(&ctx1, ectx);
    ibv_ack_cq_events(cq1, 1);

    /* cq1 fires, is destroyed unread; then cq2 fires: cq2's event only */
    ASSERT_EQ(0, ibv_req_notify_cq(cq1, 0));
    ASSERT_EQ(0, post_write(q1, 2, m_mr->rkey));
    ASSERT_TRUE(wait_wc(cq1, &wc));
    ASSERT_TRUE(fd_readable(ch->fd, 10000));
    EXPECT_EQ(0, ibv_destroy_qp(q1));
    EXPECT_EQ(0, ibv_destroy_cq(cq1));
    ASSERT_EQ(0, ibv_req_notify_cq(cq2, 0));
    ASSERT_EQ(0, post_write(q2, 3, m_mr->rkey));
    ASSERT_TRUE(wait_wc(cq2, &wc));
    ASSERT_TRUE(get_cq_event(ch, &ecq, &ectx));
    EXPECT_EQ(cq2, ecq);
    EXPECT_EQ(&ctx2, ectx);
    ibv_ack_cq_events(cq2, 1);
    EXPECT_EQ(-1, ibv_get_cq_event(ch, &ecq, &ectx));
    EXPECT_EQ(EAGAIN, errno);

    EXPECT_EQ(0, ibv_destroy_qp(q2));
    EXPECT_EQ(0, ibv_destroy_cq(cq2));
    EXPECT_EQ(0, ibv_destroy_comp_channel(ch));
}

void spin_us(double us)
{
    for (double end = now_ms() + us / 1e3; now_ms() < end;) {
    }
}

/* The race rounds: fire an event on a new object and destroy the object at
 * once, then wait for the reader; bounded in rounds and time. The test waits
 * before its destroy and the reader before its read for delays that sweep
 * their offsets over each other's (0 to 32 us, 0 to 48 us). */
const int RACE_ROUNDS     = 100000;
const double RACE_TIME_MS = 15000;

double race_delay_us(int step, int steps)
{
    return (step % steps) * 0.5;
}

/*
 * A thread that reads events off fd as UCX's async thread does (wait for the
 * fd, read one, acknowledge it) while the test fires events and destroys
 * their objects at once. read() reads one event and returns the object it
 * names (NULL: none, the fd being non-blocking); ack() acknowledges it.
 * verbs' contract: a destroy returns only once every event read of its
 * object was acknowledged, so every object read must still be the live one
 * (stale: an event read of an object whose destroy had returned).
 * live, in_read and the counters are shared with the test's thread: atomics.
 */
class event_reader
{
  public:
    event_reader(int fd, std::function<void *()> read,
                 std::function<void()> ack) :
        m_fd(fd),
        m_read(read), m_ack(ack)
    {
        m_thread = std::thread([this] { loop(); });
    }

    ~event_reader()
    {
        m_stop = true;
        m_thread.join();
    }

    void set_live(void *obj)
    {
        m_live = obj;
    }

    /* after a destroy: wait for a read that was under way to end (a read
     * that began later finds the object's events dropped) */
    bool settle()
    {
        for (double end = now_ms() + 10000; m_in_read;) {
            if (now_ms() > end) {
                return false;
            }
        }
        return true;
    }

    int events() const
    {
        return m_events;
    }
    int stale() const
    {
        return m_stale;
    }

  private:
    void loop()
    {
        while (!m_stop) {
            if (!fd_readable(m_fd, 1)) {
                continue;
            }
            m_in_read = true;
            spin_us(race_delay_us(++m_wakes, 97));
            void *obj = m_read();
            if (obj != NULL) {
                m_stale += (obj != m_live.load());
                ++m_events;
                m_ack();
            }
            m_in_read = false;
        }
    }

    int m_fd;
    std::function<void *()> m_read;
    std::function<void()> m_ack;
    std::atomic<void *> m_live{nullptr};
    std::atomic<bool> m_in_read{false}, m_stop{false};
    std::atomic<int> m_events{0}, m_stale{0};
    int m_wakes = 0;
    std::thread m_thread;
};

/* The race rounds against r (RACE_ROUNDS, for RACE_TIME_MS at most): make
 * an object and set it live, fire its event, wait, destroy the object at
 * once and wait for the reader; then no event read may have named an object
 * whose destroy had returned (what: the kind, for the message) */
void race(event_reader &r, const char *what, std::function<void *()> make,
          std::function<int(void *, int)> fire,
          std::function<int(void *)> destroy)
{
    int rounds = 0;

    for (double end = now_ms() + RACE_TIME_MS;
         (rounds < RACE_ROUNDS) && (now_ms() < end); ++rounds) {
        void *obj = make();
        ASSERT_NE(nullptr, obj);
        r.set_live(obj);
        ASSERT_EQ(0, fire(obj, rounds));
        spin_us(race_delay_us(rounds, 65));
        ASSERT_EQ(0, destroy(obj));
        r.set_live(NULL);
        ASSERT_TRUE(r.settle());
    }
    EXPECT_EQ(0, r.stale())
        << "of " << r.events() << " events read in " << rounds
        << " rounds, named " << what << " whose destroy had returned";
    EXPECT_GT(r.events(), 0) << "no event read: nothing raced";
}

/* Async events read while their QP is destroyed: LAST_WQE_REACHED of a QP on
 * an SRQ entering ERR, the QP destroyed at once (as UCX destroys its QPs). */
TEST_F(provider, async_event_read_while_its_qp_is_destroyed)
{
    ibv_srq *srq = this->srq(4);
    ASSERT_NE(nullptr, srq);
    set_nonblock(m_ctx->async_fd);
    ibv_async_event ev;
    {
        event_reader r(
            m_ctx->async_fd,
            [&]() -> void * {
                return ibv_get_async_event(m_ctx, &ev) ? NULL : ev.element.qp;
            },
            [&] { ibv_ack_async_event(&ev); });
        race(
            r, "a QP", [&]() -> void * { return qp(NULL, srq, false); },
            [&](void *q, int) { return to_state((ibv_qp *)q, IBV_QPS_ERR); },
            [&](void *q) { return ibv_destroy_qp((ibv_qp *)q); });
    }
    EXPECT_EQ(0, ibv_destroy_srq(srq));
}

/* Completion events read while their CQ is destroyed: a flushed WR on an
 * armed CQ, its QP and CQ destroyed at once. */
TEST_F(provider, completion_event_read_while_its_cq_is_destroyed)
{
    ibv_comp_channel *ch = ibv_create_comp_channel(m_ctx);
    ASSERT_NE(nullptr, ch);
    set_nonblock(ch->fd);
    ibv_cq *ecq = NULL;
    void *ectx  = NULL;
    ibv_qp *q   = NULL; /* the live CQ's */
    {
        event_reader r(
            ch->fd,
            [&]() -> void * {
                return ibv_get_cq_event(ch, &ecq, &ectx) ? NULL : ecq;
            },
            [&] { ibv_ack_cq_events(ecq, 1); });
        race(
            r, "a CQ",
            [&]() -> void * {
                ibv_cq *cq = ibv_create_cq(m_ctx, 4, NULL, ch, 0);
                q          = (cq != NULL) ? qp(cq, NULL, false) : NULL;
                return ((q != NULL) && !to_state(q, IBV_QPS_ERR)) ? cq : NULL;
            },
            [&](void *cq, int round) {
            int ret = ibv_req_notify_cq((ibv_cq *)cq, 0);
            return ret ? ret : post_write(q, round, m_mr->rkey); /* flushed */
            },
            [&](void *cq) {
            int ret = ibv_destroy_qp(q);
            return ret ? ret : ibv_destroy_cq((ibv_cq *)cq);
        });
    }
    EXPECT_EQ(0, ibv_destroy_comp_channel(ch));
}

/* What the provider refuses, with the errno verbs documents */
TEST_F(provider, refused_verbs)
{
    /* an I/O virtual address other than the buffer's: no translation */
    EXPECT_EQ(nullptr, ibv_reg_mr_iova(m_pd, m_buf.data(), 4096, 0x1000,
                                       IBV_ACCESS_LOCAL_WRITE));
    EXPECT_EQ(EOPNOTSUPP, errno);
    /* extended QP creation beyond a PD */
    ibv_qp_init_attr_ex ax = {};
    ax.send_cq = ax.recv_cq = m_cq;
    ax.cap.max_send_wr = ax.cap.max_recv_wr = 1;
    ax.cap.max_send_sge = ax.cap.max_recv_sge = 1;
    ax.qp_type                                = IBV_QPT_RC;
    ax.pd                                     = m_pd;
    ax.comp_mask      = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS;
    ax.send_ops_flags = IBV_QP_EX_WITH_SEND;
    EXPECT_EQ(nullptr, ibv_create_qp_ex(m_ctx, &ax));
    EXPECT_EQ(EOPNOTSUPP, errno);
    ax.comp_mask = IBV_QP_INIT_ATTR_PD;
    ibv_qp *q    = ibv_create_qp_ex(m_ctx, &ax);
    ASSERT_NE(nullptr, q) << strerror(errno);
    m_qps.push_back(q);
    /* an address handle needs a GRH (RoCE) */
    ibv_ah_attr ah = {};
    ah.port_num    = 1;
    EXPECT_EQ(nullptr, ibv_create_ah(m_pd, &ah));
    ah.is_global = 1;
    ah.grh.dgid  = m_gid;
    ibv_ah *h    = ibv_create_ah(m_pd, &ah);
    ASSERT_NE(nullptr, h) << strerror(errno);
    EXPECT_EQ(0, ibv_destroy_ah(h));
}

/* softnic's rules hold through verbs: the RC state machine and the
 * target's access rights */
TEST_F(provider, rules_through_verbs)
{
    ibv_qp *a = qp(), *b = qp();
    ASSERT_TRUE(a && b);
    /* RESET -> RTR is not a transition */
    ibv_qp_attr at = {};
    at.qp_state    = IBV_QPS_RTR;
    EXPECT_EQ(EINVAL, ibv_modify_qp(a, &at, IBV_QP_STATE));
    ibv_qp_init_attr init;
    ASSERT_EQ(0, ibv_query_qp(a, &at, IBV_QP_STATE, &init));
    EXPECT_EQ(IBV_QPS_RESET, at.qp_state);
    EXPECT_GE(init.cap.max_send_wr, 16u);

    /* b grants no remote write: a's WRITE fails with REM_ACCESS_ERR */
    connect(a, b->qp_num, ALL_ACCESS);
    connect(b, a->qp_num, IBV_ACCESS_LOCAL_WRITE);
    ASSERT_EQ(0, post_write(a, 5, m_mr->rkey));
    ibv_wc wc;
    ASSERT_TRUE(wait_wc(m_cq, &wc));
    EXPECT_EQ(5u, wc.wr_id);
    EXPECT_EQ(IBV_WC_REM_ACCESS_ERR, wc.status) << ibv_wc_status_str(wc.status);
    ASSERT_EQ(0, ibv_query_qp(a, &at, IBV_QP_STATE, &init));
    EXPECT_EQ(IBV_QPS_ERR, at.qp_state);
}

/* Inline SENDs and WRITEs of one or two pieces (softnic_post_send() builds
 * them as its inline entry does, sn_wr_is_short()): their bytes arrive in
 * order, and what the general walk refuses is refused the same way, with
 * bad_wr set and nothing completed: more pieces than max_send_sge, more
 * bytes than max_inline_data, an inline READ. A chain of two goes alike. */
TEST_F(provider, inline_posts)
{
    ibv_qp_init_attr ia = {};
    ia.send_cq = ia.recv_cq = m_cq;
    ia.cap.max_send_wr = ia.cap.max_recv_wr = 16;
    ia.cap.max_send_sge                     = 2;
    ia.cap.max_recv_sge                     = 1;
    ia.cap.max_inline_data                  = 64;
    ia.qp_type                              = IBV_QPT_RC;
    ibv_qp *a = ibv_create_qp(m_pd, &ia), *b = ibv_create_qp(m_pd, &ia);
    ASSERT_TRUE(a && b) << strerror(errno);
    m_qps.push_back(a);
    m_qps.push_back(b);
    ia.cap.max_send_sge = 1;
    ibv_qp *c = ibv_create_qp(m_pd, &ia), *d = ibv_create_qp(m_pd, &ia);
    ASSERT_TRUE(c && d) << strerror(errno);
    m_qps.push_back(c);
    m_qps.push_back(d);
    connect(a, b->qp_num, ALL_ACCESS);
    connect(b, a->qp_num, ALL_ACCESS);
    connect(c, d->qp_num, ALL_ACCESS);
    connect(d, c->qp_num, ALL_ACCESS);

    const char hdr[] = "hdr", data[] = "payload";
    ibv_sge sg[2] = {{(uintptr_t)hdr, 3, 0}, {(uintptr_t)data, 7, 0}};
    uint8_t *dst = &m_buf[4096], *rx = &m_buf[6144];
    ibv_send_wr wr =
        rdma_wr(sg, IBV_WR_RDMA_WRITE, 1, IBV_SEND_SIGNALED | IBV_SEND_INLINE,
                (uintptr_t)dst, m_mr->rkey);
    ibv_send_wr *bad = NULL;
    ibv_wc wc;

    wr.num_sge = 2;
    ASSERT_EQ(0, ibv_post_send(a, &wr, &bad));
    ASSERT_TRUE(wait_wc(m_cq, &wc));
    EXPECT_EQ(1u, wc.wr_id);
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << ibv_wc_status_str(wc.status);
    EXPECT_EQ(0, memcmp(dst, "hdrpayload", 10));

    /* a SEND of the two pieces into b's receive */
    ibv_sge rsge    = {(uintptr_t)rx, 64, m_mr->lkey};
    ibv_recv_wr rwr = {}, *rbad;
    rwr.wr_id       = 7;
    rwr.sg_list     = &rsge;
    rwr.num_sge     = 1;
    ASSERT_EQ(0, ibv_post_recv(b, &rwr, &rbad));
    wr.opcode    = IBV_WR_SEND;
    wr.wr_id     = 2;
    sg[0].length = 2; /* "hd" */
    ASSERT_EQ(0, ibv_post_send(a, &wr, &bad));
    for (int got = 0; got < 2; ++got) {
        ASSERT_TRUE(wait_wc(m_cq, &wc));
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << ibv_wc_status_str(wc.status);
        if (wc.wr_id == 7) {
            EXPECT_EQ(9u, wc.byte_len);
            EXPECT_EQ(0, memcmp(rx, "hdpayload", 9));
        } else {
            EXPECT_EQ(2u, wc.wr_id);
        }
    }

    /* refused: two pieces on a QP of one, 65 bytes, an inline READ */
    wr.opcode = IBV_WR_RDMA_WRITE;
    bad       = NULL;
    EXPECT_EQ(EINVAL, ibv_post_send(c, &wr, &bad));
    EXPECT_EQ(&wr, bad);
    std::vector<uint8_t> big(65, 0x5a);
    ibv_sge one = {(uintptr_t)big.data(), 65, 0};
    ibv_send_wr wbig =
        rdma_wr(&one, IBV_WR_RDMA_WRITE, 3, IBV_SEND_SIGNALED | IBV_SEND_INLINE,
                (uintptr_t)dst, m_mr->rkey);
    bad = NULL;
    EXPECT_EQ(EINVAL, ibv_post_send(a, &wbig, &bad));
    EXPECT_EQ(&wbig, bad);
    wbig.opcode = IBV_WR_RDMA_READ;
    one.length  = 8;
    bad         = NULL;
    EXPECT_EQ(EINVAL, ibv_post_send(a, &wbig, &bad));
    EXPECT_EQ(&wbig, bad);
    EXPECT_EQ(0, ibv_poll_cq(m_cq, 1, &wc)) << "a refused WR completed";

    /* a chain of two inline WRITEs: both, in order */
    ibv_send_wr w1 = rdma_wr(&sg[1], IBV_WR_RDMA_WRITE, 4, IBV_SEND_INLINE,
                             (uintptr_t)dst, m_mr->rkey);
    ibv_send_wr w2 = rdma_wr(&sg[0], IBV_WR_RDMA_WRITE, 5,
                             IBV_SEND_SIGNALED | IBV_SEND_INLINE,
                             (uintptr_t)dst + 7, m_mr->rkey);
    w1.next        = &w2;
    ASSERT_EQ(0, ibv_post_send(c, &w1, &bad));
    ASSERT_TRUE(wait_wc(m_cq, &wc));
    EXPECT_EQ(5u, wc.wr_id);
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << ibv_wc_status_str(wc.status);
    EXPECT_EQ(0, memcmp(dst, "payloadhd", 9));
}

/* UD through verbs, as ibv_ud_pingpong and ud_verbs use it: an address
 * handle to the device's own GID, qkey checks, the GRH in front of each
 * receive. Silently dropped: a wrong qkey, a datagram with no receive
 * posted (the send still succeeds); a message longer than the MTU fails
 * the post; a receive too small for GRH + payload is LOC_LEN_ERR and puts
 * the QP in ERR. A drop is shown by a later datagram of the same sender:
 * one sender's datagrams arrive in order. */
class provider_ud : public provider
{
  protected:
    const uint32_t QKEY = 0x1ee7a330;

    void SetUp() override
    {
        provider::SetUp();
        if (HasFatalFailure()) {
            return;
        }
        ibv_ah_attr aa   = {};
        aa.is_global     = 1;
        aa.grh.dgid      = m_gid;
        aa.grh.hop_limit = 1;
        aa.port_num      = 1;
        m_ah             = ibv_create_ah(m_pd, &aa);
        ASSERT_NE(nullptr, m_ah) << strerror(errno);
    }

    void TearDown() override
    {
        if (m_ah != NULL) {
            EXPECT_EQ(0, ibv_destroy_ah(m_ah));
        }
        provider::TearDown();
    }

    ibv_qp *ud_qp()
    {
        ibv_qp_init_attr a = {};
        a.send_cq = a.recv_cq = m_cq;
        a.cap.max_send_wr = a.cap.max_recv_wr = 16;
        a.cap.max_send_sge = a.cap.max_recv_sge = 1;
        a.qp_type                               = IBV_QPT_UD;
        ibv_qp *q                               = ibv_create_qp(m_pd, &a);
        EXPECT_NE(nullptr, q) << strerror(errno);
        if (q == NULL) {
            return NULL;
        }
        m_qps.push_back(q);
        ibv_qp_attr at = {};
        at.qp_state    = IBV_QPS_INIT;
        at.port_num    = 1;
        at.qkey        = QKEY;
        EXPECT_EQ(0, ibv_modify_qp(q, &at,
                                   IBV_QP_STATE | IBV_QP_PKEY_INDEX |
                                       IBV_QP_PORT | IBV_QP_QKEY));
        EXPECT_EQ(0, to_state(q, IBV_QPS_RTR));
        at          = {};
        at.qp_state = IBV_QPS_RTS;
        EXPECT_EQ(0, ibv_modify_qp(q, &at, IBV_QP_STATE | IBV_QP_SQ_PSN));
        return q;
    }

    /* the bytes at off are the datagram of seed */
    void fill(size_t off, size_t len, uint8_t seed)
    {
        memset(&m_buf[off], seed, len);
    }

    int post_recv(ibv_qp *q, uint64_t wr_id, size_t off, uint32_t len)
    {
        ibv_sge sge    = {(uintptr_t)&m_buf[off], len, m_mr->lkey};
        ibv_recv_wr wr = {}, *bad;
        wr.wr_id       = wr_id;
        wr.sg_list     = &sge;
        wr.num_sge     = 1;
        return ibv_post_recv(q, &wr, &bad);
    }

    int send(ibv_qp *from, ibv_qp *to, uint64_t wr_id, size_t off, uint32_t len,
             uint32_t qkey)
    {
        ibv_sge sge    = {(uintptr_t)&m_buf[off], len, m_mr->lkey};
        ibv_send_wr wr = ud_wr(&sge, IBV_WR_SEND, wr_id, IBV_SEND_SIGNALED,
                               m_ah, to->qp_num, qkey);
        ibv_send_wr *bad;
        return ibv_post_send(from, &wr, &bad);
    }

    /* n completions (any order), by wr_id */
    std::vector<ibv_wc> wait_wcs(int n)
    {
        std::vector<ibv_wc> out;
        ibv_wc wc;
        while (((int)out.size() < n) && wait_wc(m_cq, &wc)) {
            out.push_back(wc);
        }
        EXPECT_EQ(n, (int)out.size()) << "completions missing";
        return out;
    }

    ibv_wc wc_of(const std::vector<ibv_wc> &wcs, uint64_t wr_id)
    {
        for (const ibv_wc &wc : wcs) {
            if (wc.wr_id == wr_id) {
                return wc;
            }
        }
        ADD_FAILURE() << "no completion of wr_id " << wr_id;
        ibv_wc none = {};
        none.status = IBV_WC_GENERAL_ERR;
        return none;
    }

    ibv_ah *m_ah = nullptr;
};

const size_t GRH = 40;

TEST_F(provider_ud, rules_through_verbs)
{
    ibv_qp *a = ud_qp(), *b = ud_qp(), *marker = ud_qp();
    ASSERT_TRUE(a && b && marker);
    ASSERT_FALSE(HasFailure());
    fill(0, 100, 1);
    fill(100, 100, 2);
    fill(200, 100, 3);
    fill(300, 100, 4);

    /* a wrong qkey: dropped; the right one arrives, behind the GRH */
    ASSERT_EQ(0, post_recv(b, 10, 4096, GRH + 100));
    ASSERT_EQ(0, send(a, b, 1, 0, 100, QKEY + 1));
    ASSERT_EQ(0, send(a, b, 2, 100, 100, QKEY));
    std::vector<ibv_wc> wcs = wait_wcs(3);
    EXPECT_EQ(IBV_WC_SUCCESS, wc_of(wcs, 1).status) << "a dropped send";
    ibv_wc wc = wc_of(wcs, 10);
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << ibv_wc_status_str(wc.status);
    EXPECT_EQ(GRH + 100, wc.byte_len);
    EXPECT_EQ(a->qp_num, wc.src_qp);
    EXPECT_TRUE(wc.wc_flags & IBV_WC_GRH);
    EXPECT_EQ(2, m_buf[4096 + GRH]) << "the wrong-qkey datagram arrived";

    /* no receive posted at b: dropped (the marker's arrival shows it was
     * seen); the next receive gets the next datagram */
    ASSERT_EQ(0, post_recv(marker, 11, 5120, GRH + 100));
    ASSERT_EQ(0, send(a, b, 3, 200, 100, QKEY));
    ASSERT_EQ(0, send(a, marker, 4, 200, 100, QKEY));
    wcs = wait_wcs(3);
    EXPECT_EQ(IBV_WC_SUCCESS, wc_of(wcs, 3).status);
    EXPECT_EQ(IBV_WC_SUCCESS, wc_of(wcs, 11).status);
    ASSERT_EQ(0, post_recv(b, 12, 4096, GRH + 100));
    ASSERT_EQ(0, send(a, b, 5, 300, 100, QKEY));
    wcs = wait_wcs(2);
    EXPECT_EQ(IBV_WC_SUCCESS, wc_of(wcs, 12).status);
    EXPECT_EQ(4, m_buf[4096 + GRH]) << "a datagram without a receive was kept";

    /* longer than the 4096-byte MTU: the post fails */
    EXPECT_EQ(EINVAL, send(a, b, 6, 0, 4097, QKEY));

    /* room for the payload but not for the GRH: LOC_LEN_ERR, b in ERR */
    ASSERT_EQ(0, post_recv(b, 13, 4096, GRH + 100 - 1));
    ASSERT_EQ(0, send(a, b, 7, 0, 100, QKEY));
    wcs = wait_wcs(2);
    EXPECT_EQ(IBV_WC_SUCCESS, wc_of(wcs, 7).status);
    EXPECT_EQ(IBV_WC_LOC_LEN_ERR, wc_of(wcs, 13).status);
    ibv_qp_attr at;
    ibv_qp_init_attr init;
    ASSERT_EQ(0, ibv_query_qp(b, &at, IBV_QP_STATE, &init));
    EXPECT_EQ(IBV_QPS_ERR, at.qp_state);
    ASSERT_EQ(0, ibv_query_qp(a, &at, IBV_QP_STATE, &init));
    EXPECT_EQ(IBV_QPS_RTS, at.qp_state);
}

} /* namespace */

int main(int argc, char **argv)
{
    /* no soft devices here: run again under contrib/softnic-run */
    int n                    = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    bool have                = false;
    for (int i = 0; (list != NULL) && (i < n); ++i) {
        have = have || !strcmp(ibv_get_device_name(list[i]), "soft_lo");
    }
    if (list != NULL) {
        ibv_free_device_list(list);
    }
    const char *src = getenv("ORC_TOP_SRCDIR");
    if (!have && (geteuid() != 0)) {
        printf("SKIP: needs root (contrib/softnic-run makes a mount "
               "namespace)\n");
        return 77;
    }
    if (!have && (getenv("SNV_PROVIDER_TEST_INSIDE") == NULL) &&
        (src != NULL)) {
        std::string run          = std::string(src) + "/contrib/softnic-run";
        std::vector<char *> args = {(char *)run.c_str()};
        for (int i = 0; i < argc; ++i) {
            args.push_back(argv[i]);
        }
        args.push_back(NULL);
        setenv("SNV_PROVIDER_TEST_INSIDE", "1", 1);
        if (getenv("ORC_TOP_BUILDDIR") != NULL) { /* the provider's build */
            setenv("ORC_BUILDDIR", getenv("ORC_TOP_BUILDDIR"), 1);
        }
        execv(run.c_str(), args.data());
        perror(run.c_str());
        return 1;
    }
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
