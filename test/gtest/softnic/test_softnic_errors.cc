/*
 * softnic error semantics across two processes (same host and two hosts):
 * flushing in posting order once a QP is in ERR, and dead peers (killed
 * process, destroyed QP, unreachable host) and target QPs in ERR
 * completing outstanding WRs with IBV_WC_RETRY_EXC_ERR as a NIC does: once
 * the QP's retry budget (timeout, retry_cnt) has run out, never before,
 * and within a bound.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "softnic_harness.h"

#include <cmath>
#include <string>

#include <unistd.h>

using namespace softnic_test;

namespace
{

class softnic_errors : public softnic_topo
{
  protected:
    void SetUp() override
    {
        softnic_topo::SetUp();
        if (IsSkipped() || HasFatalFailure())
            return;
        m_a = &spawn('a');
        m_b = &spawn('b');
        ASSERT_FALSE(HasFailure());
        m_la = reg_mr(*m_a, 1, 1 << 20);
        m_rb = reg_mr(*m_b, 1, 1 << 20);
        ASSERT_FALSE(HasFailure());
    }

    std::string remote(uint64_t off = 0) const
    {
        return m_rb.remote(off);
    }

    /* IB: the local ACK timeout is 4.096 us * 2^timeout, retried
     * retry_cnt times. */
    /* The QP under test waits 4.096 us * 2^16 = 268 ms per attempt for an
     * answer, 4 attempts: a dead peer fails it in about 1 s, a live one
     * descheduled on a loaded machine (ASan, many builds beside) does not
     * (with 2^12, 80 ms in all, a healthy WRITE failed there). */
    static const int DEAD_PEER_TIMEOUT = 16;

    /* the options of a QP under test, whose peer dies */
    static conn_opts dead_peer_opts()
    {
        conn_opts o;
        o.timeout = DEAD_PEER_TIMEOUT;
        o.retry   = 3;
        return o;
    }

    static double retry_bound_ms(const conn_opts &o)
    {
        return 4.096e-3 * std::pow(2.0, o.timeout) * (o.retry + 1);
    }

    /* softnic stamps a QP's progress with a coarse clock, which may lag a
     * few ms (sn_stamp_ns) */
    static constexpr double STAMP_SLACK_MS = 20;

    /* A WR that waits for a dead peer fails once the QP's budget has run
     * out since the QP last made progress, which it made at the earliest
     * when its first WR was posted (at t0): a NIC cannot tell a dead peer
     * from a slow one. (softnic's 20 ms floor per attempt only lengthens
     * the budget.) */
    void expect_not_before_budget(double t0, const conn_opts &o)
    {
        EXPECT_GE(now_ms() - t0, retry_bound_ms(o) - STAMP_SLACK_MS)
            << "the WR failed before the QP's retry budget ran out";
    }

    void dead_peer(bool kill_process, bool delete_link);
    void transfer_at_error(bool write);
    void target_not_ready(int timeout);
    void target_in_error(const std::string &open_args);

    peer_proc *m_a = nullptr, *m_b = nullptr;
    mr_t m_la, m_rb;
};

TEST_P(softnic_errors, flush_in_posting_order)
{
    conn_opts ob;
    ob.min_rnr = 1;
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0, conn_opts(), ob));
    ASSERT_OK(m_a->cmd("recv qp=0 mr=1 off=0 len=256 wr=100 count=3"));
    /* the SEND has no receive and rnr_retry is 7: it stays outstanding,
     * and so does everything posted behind it */
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 len=64 wr=1 flags=S"));
    ASSERT_OK(
        m_a->cmd("post qp=0 op=WRITE mr=1 len=64 wr=2 flags=" + remote()));
    ASSERT_OK(
        m_a->cmd("post qp=0 op=WRITE mr=1 len=64 wr=3 flags=S" + remote(64)));
    ASSERT_OK(m_a->cmd("post qp=0 op=READ mr=1 off=4096 len=64 wr=4 flags=" +
                       remote(128)));
    ASSERT_OK(
        m_a->cmd("post qp=0 op=WRITE mr=1 len=64 wr=5 flags=" + remote(192)));
    std::vector<wc_t> early = poll(*m_a, "send", 1, 500);
    EXPECT_EQ(0u, early.size())
        << "a WR completed while the SEND before it waits for a receive: wr "
        << (early.empty() ? 0 : early[0].wr_id);

    ASSERT_OK(m_a->cmd("modify qp=0 state=ERR"));
    ASSERT_OK(
        m_a->cmd("post qp=0 op=WRITE mr=1 len=64 wr=6 flags=" + remote()));
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 len=64 wr=7 flags=S"));
    ASSERT_OK(m_a->cmd("recv qp=0 mr=1 off=8192 len=256 wr=103"));

    std::vector<wc_t> s = poll(*m_a, "send", 7);
    ASSERT_EQ(7u, s.size()) << "every outstanding and later WR, signaled or "
                               "not, must complete";
    for (size_t i = 0; i < s.size(); ++i) {
        EXPECT_EQ(i + 1, s[i].wr_id) << "posting order";
        EXPECT_EQ(IBV_WC_WR_FLUSH_ERR, s[i].status)
            << "wr " << s[i].wr_id << ": " << wc_status_name(s[i].status);
    }
    std::vector<wc_t> r = poll(*m_a, "recv", 4);
    ASSERT_EQ(4u, r.size());
    for (size_t i = 0; i < r.size(); ++i) {
        EXPECT_EQ(100 + i, r[i].wr_id) << "posting order";
        EXPECT_EQ(IBV_WC_WR_FLUSH_ERR, r[i].status)
            << wc_status_name(r[i].status);
    }
    /* nothing twice */
    EXPECT_EQ(0u, poll(*m_a, "send", 1, 200).size());
    EXPECT_EQ(0u, poll(*m_a, "recv", 1, 200).size());
    /* the peer saw none of the flushed data */
    reply_t g = m_b->cmd("get64 id=1 off=64");
    EXPECT_EQ(0u, g.u("val"));
}

TEST_P(softnic_errors, flush_srq_receives_stay_posted)
{
    /* receives posted to an SRQ belong to the SRQ, not to a QP in ERR:
     * another QP still consumes them */
    ASSERT_OK(m_b->cmd("srq max_wr=16"));
    ASSERT_NO_FATAL_FAILURE(
        connect(*m_a, 0, *m_b, 0, conn_opts(), conn_opts(), true));
    ASSERT_NO_FATAL_FAILURE(
        connect(*m_a, 1, *m_b, 1, conn_opts(), conn_opts(), true));
    ASSERT_OK(m_b->cmd("recv srq=1 mr=1 len=256 wr=40 count=2"));
    ASSERT_OK(m_b->cmd("modify qp=0 state=ERR"));
    wc_t wc = post_wait(*m_a, "qp=1 op=SEND mr=1 len=32 wr=1");
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    std::vector<wc_t> r = poll(*m_b, "recv", 1);
    ASSERT_EQ(1u, r.size());
    EXPECT_EQ(40u, r[0].wr_id);
    EXPECT_EQ(IBV_WC_SUCCESS, r[0].status) << wc_status_name(r[0].status);
}

void softnic_errors::dead_peer(bool kill_process, bool delete_link)
{
    conn_opts oa = dead_peer_opts(), ob;
    ob.min_rnr   = 1;
    /* Warm the path up first with default (long) timeouts: in a fresh
     * namespace the first TCP SYN can be lost (ARP, carrier), which the
     * short timeout of the QP under test would take for a dead peer. */
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 9, *m_b, 9));
    wc_t wc = post_wait(*m_a, "qp=9 op=WRITE mr=1 len=64 wr=1" + remote());
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);

    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0, oa, ob));
    wc = post_wait(*m_a, "qp=0 op=WRITE mr=1 len=64 wr=1" + remote());
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);

    /* outstanding before the peer dies: a SEND stuck in RNR (rnr_retry 7) */
    double t0 = now_ms();
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 len=64 wr=2"));
    if (kill_process) {
        m_b->kill9();
        ASSERT_FALSE(m_b->alive());
    } else {
        ASSERT_TRUE(m_ns->cut_link(delete_link));
    }
    ASSERT_OK(
        m_a->cmd("post qp=0 op=WRITE mr=1 len=4096 wr=3 flags=" + remote()));
    ASSERT_OK(m_a->cmd("post qp=0 op=READ mr=1 len=4096 wr=4" + remote()));

    /* generous slack on top of the protocol bound */
    double bound_ms = 2 * retry_bound_ms(oa) + 5000;
    reply_t r       = m_a->cmd("poll cq=send n=3 timeout=" +
                               std::to_string((int)bound_ms + 20000));
    ASSERT_TRUE(r.ok) << r.line;
    ASSERT_EQ(3u, r.wcs.size())
        << "outstanding WRs never completed: " << r.line;
    double ms = strtod(r.s("ms").c_str(), NULL);
    EXPECT_LE(ms, bound_ms) << "dead peer detected too late";
    expect_not_before_budget(t0, oa);
    EXPECT_EQ(2u, r.wcs[0].wr_id);
    EXPECT_EQ(IBV_WC_RETRY_EXC_ERR, r.wcs[0].status)
        << wc_status_name(r.wcs[0].status);
    for (size_t i = 1; i < r.wcs.size(); ++i) {
        EXPECT_EQ(2 + i, r.wcs[i].wr_id);
        EXPECT_TRUE((r.wcs[i].status == IBV_WC_RETRY_EXC_ERR) ||
                    (r.wcs[i].status == IBV_WC_WR_FLUSH_ERR))
            << wc_status_name(r.wcs[i].status);
    }
    reply_t st = m_a->cmd("query qp=0");
    EXPECT_EQ(IBV_QPS_ERR, (int)st.u("state")) << st.line;
    EXPECT_OK(m_a->cmd("ping"));
}

TEST_P(softnic_errors, dead_peer_killed)
{
    dead_peer(true, false);
}

TEST_P(softnic_errors, dead_peer_host_unreachable_link_deleted)
{
    if (!two_hosts()) {
        GTEST_SKIP() << "an unreachable host needs the two_hosts topology";
    }
    dead_peer(false, true);
}

TEST_P(softnic_errors, dead_peer_host_unreachable_link_down)
{
    if (!two_hosts()) {
        GTEST_SKIP() << "an unreachable host needs the two_hosts topology";
    }
    dead_peer(false, false);
}

/* Losing the peer fails every QP to it, each by its own budget (rule
 * SN_RULE_RETRY_BUDGET, as dead_peer_killed for one QP): three QPs to b
 * with timeouts 14, 16 and 18 and retry counts 3, 3 and 1 (budgets of
 * 4 x 67 ms, 4 x 268 ms and 2 x 1.07 s: the design's timeouts, the last
 * QP's budget halved to keep the test within 10 s) each have a SEND
 * waiting for a receive (RNR) and a WRITE and a READ behind it when b's
 * process dies. Each QP's SEND ends RETRY_EXC_ERR no earlier
 * than its own budget after its post and the WRITE and READ behind it
 * follow (RETRY_EXC_ERR or WR_FLUSH_ERR), the QPs in the order of their
 * budgets. Once QPs share a stream to b, its loss must keep each QP's
 * budget: none may fail by another's. */
TEST_P(softnic_errors, peer_loss_fails_every_qp)
{
    const int nqp = 3, timeouts[nqp] = {14, 16, 18}, retries[nqp] = {3, 3, 1};
    conn_opts oa[nqp], ob;
    ob.min_rnr = 1;
    /* warm the path up (dead_peer) */
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 9, *m_b, 9));
    wc_t wc = post_wait(*m_a, "qp=9 op=WRITE mr=1 len=64 wr=1" + remote());
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    for (int q = 0; q < nqp; ++q) {
        oa[q].timeout = timeouts[q];
        oa[q].retry   = retries[q];
        ASSERT_NO_FATAL_FAILURE(connect(*m_a, q, *m_b, q, oa[q], ob));
        wc = post_wait(*m_a, "qp=" + std::to_string(q) +
                                 " op=WRITE mr=1 len=64 wr=1" + remote());
        ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    }
    double t0[nqp];
    for (int q = 0; q < nqp; ++q) {
        t0[q] = now_ms();
        ASSERT_OK(
            m_a->cmd("post qp=" + std::to_string(q) +
                     " op=SEND mr=1 len=64 wr=" + std::to_string(10 * q)));
    }
    m_b->kill9();
    ASSERT_FALSE(m_b->alive());
    for (int q = 0; q < nqp; ++q) {
        const std::string qw = "qp=" + std::to_string(q) + " mr=1 len=4096 wr=";
        ASSERT_OK(m_a->cmd("post " + qw + std::to_string(10 * q + 1) +
                           " op=WRITE flags=" + remote()));
        ASSERT_OK(m_a->cmd("post " + qw + std::to_string(10 * q + 2) +
                           " op=READ" + remote()));
    }
    for (int q = 0; q < nqp; ++q) {
        SCOPED_TRACE("qp " + std::to_string(q));
        double bound_ms = 2 * retry_bound_ms(oa[q]) + 5000;
        reply_t r       = m_a->cmd("poll cq=send n=3 timeout=" +
                                   std::to_string((int)bound_ms + 20000));
        ASSERT_EQ(3u, r.wcs.size()) << r.line;
        expect_not_before_budget(t0[q], oa[q]);
        EXPECT_LE(now_ms() - t0[q], bound_ms) << "dead peer detected too late";
        EXPECT_EQ(10u * q, r.wcs[0].wr_id) << "QPs fail by their own budgets";
        EXPECT_EQ(IBV_WC_RETRY_EXC_ERR, r.wcs[0].status)
            << wc_status_name(r.wcs[0].status);
        for (size_t i = 1; i < r.wcs.size(); ++i) {
            EXPECT_EQ(10u * q + i, r.wcs[i].wr_id);
            EXPECT_TRUE((r.wcs[i].status == IBV_WC_RETRY_EXC_ERR) ||
                        (r.wcs[i].status == IBV_WC_WR_FLUSH_ERR))
                << wc_status_name(r.wcs[i].status);
        }
        EXPECT_EQ(IBV_QPS_ERR,
                  (int)m_a->cmd("query qp=" + std::to_string(q)).u("state"));
    }
}

/* The peer dies while large WRITEs and READs are in flight (on TCP: in
 * the middle of a frame). */
TEST_P(softnic_errors, dead_peer_mid_transfer)
{
    conn_opts oa = dead_peer_opts();
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0, oa));
    wc_t wc = post_wait(*m_a, "qp=0 op=WRITE mr=1 len=64 wr=0" + remote());
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    /* The peer stops answering before the transfer starts, so that no WR
     * can complete (WRITEs complete on the responder's ACK, READs on its
     * data) however fast the link is; it dies while the bytes are in
     * flight. Without the freeze, 12 MiB over veth can finish before the
     * kill lands on a fast machine. */
    m_b->freeze();
    ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 len=1048576 wr=1 count=6" +
                       remote()));
    ASSERT_OK(
        m_a->cmd("post qp=0 op=READ mr=1 len=1048576 wr=7 count=6" + remote()));
    usleep(20000);
    m_b->kill9();
    double bound_ms = 2 * retry_bound_ms(oa) + 5000;
    reply_t r       = m_a->cmd("poll cq=send n=12 timeout=" +
                               std::to_string((int)bound_ms + 20000));
    ASSERT_TRUE(r.ok) << r.line;
    ASSERT_EQ(12u, r.wcs.size()) << r.line;
    EXPECT_LE(strtod(r.s("ms").c_str(), NULL), bound_ms);
    bool failed = false;
    for (size_t i = 0; i < r.wcs.size(); ++i) {
        EXPECT_EQ(i + 1, r.wcs[i].wr_id) << "posting order";
        if (r.wcs[i].status == IBV_WC_SUCCESS) {
            EXPECT_FALSE(failed) << "success after an error completion";
            continue;
        }
        if (!failed) {
            EXPECT_EQ(IBV_WC_RETRY_EXC_ERR, r.wcs[i].status)
                << "first failure: " << wc_status_name(r.wcs[i].status);
        } else {
            EXPECT_TRUE((r.wcs[i].status == IBV_WC_RETRY_EXC_ERR) ||
                        (r.wcs[i].status == IBV_WC_WR_FLUSH_ERR))
                << wc_status_name(r.wcs[i].status);
        }
        failed = true;
    }
    if (two_hosts()) {
        /* (same host: the CMA path may legitimately finish all before the
         * kill lands) */
        EXPECT_TRUE(failed) << "every WR succeeded although the peer died";
    }
    EXPECT_OK(m_a->cmd("ping"));
}

TEST_P(softnic_errors, dead_peer_idle_qp_then_post)
{
    /* the peer dies while nothing is outstanding; the next WR fails */
    conn_opts oa = dead_peer_opts();
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0, oa));
    /* the connection is up (the WRITE completed) before the peer dies */
    wc_t wc = post_wait(*m_a, "qp=0 op=WRITE mr=1 len=64 wr=0" + remote());
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    m_b->kill9();
    double bound_ms = 2 * retry_bound_ms(oa) + 5000;
    /* same host: CMA finds the process gone (ESRCH), or the connection's
     * end was seen first; both make the peer a silent one */
    double t0 = now_ms();
    ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 len=64 wr=1" + remote()));
    reply_t r = m_a->cmd("poll cq=send n=1 timeout=" +
                         std::to_string((int)bound_ms + 20000));
    ASSERT_EQ(1u, r.wcs.size()) << r.line;
    EXPECT_EQ(IBV_WC_RETRY_EXC_ERR, r.wcs[0].status)
        << wc_status_name(r.wcs[0].status);
    EXPECT_LE(strtod(r.s("ms").c_str(), NULL), bound_ms);
    expect_not_before_budget(t0, oa);
}

/* The peer process lives on but destroys its QP, with SENDs of ours still
 * coming: what it executed before completes successfully, in order, and
 * the SEND it never took fails only when the budget has run out, as on a
 * NIC (where a program's two sides each end at their own count while the
 * other still has WRs posted to it: ibv_srq_pingpong). */
TEST_P(softnic_errors, dead_peer_qp_destroyed)
{
    conn_opts oa = dead_peer_opts();
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0, oa));
    ASSERT_OK(m_b->cmd("recv qp=0 mr=1 len=256 wr=10 count=4"));
    double t0 = now_ms();
    /* 1..4 are taken; 5 finds no receive (RNR, rnr_retry 7) */
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 len=64 wr=1 flags=S count=5"));
    std::vector<wc_t> rx = poll(*m_b, "recv", 4);
    ASSERT_EQ(4u, rx.size());
    ASSERT_OK(m_b->cmd("destroyqp qp=0"));

    double bound_ms = 2 * retry_bound_ms(oa) + 5000;
    reply_t r       = m_a->cmd("poll cq=send n=5 timeout=" +
                               std::to_string((int)bound_ms + 20000));
    ASSERT_TRUE(r.ok) << r.line;
    ASSERT_EQ(5u, r.wcs.size()) << r.line;
    EXPECT_LE(strtod(r.s("ms").c_str(), NULL), bound_ms)
        << "dead peer detected too late";
    expect_not_before_budget(t0, oa);
    for (size_t i = 0; i < 4; ++i) {
        EXPECT_EQ(i + 1, r.wcs[i].wr_id) << "posting order";
        EXPECT_EQ(IBV_WC_SUCCESS, r.wcs[i].status)
            << "wr " << r.wcs[i].wr_id << ": "
            << wc_status_name(r.wcs[i].status);
    }
    EXPECT_EQ(5u, r.wcs[4].wr_id);
    EXPECT_EQ(IBV_WC_RETRY_EXC_ERR, r.wcs[4].status)
        << wc_status_name(r.wcs[4].status);
    reply_t st = m_a->cmd("query qp=0");
    EXPECT_EQ(IBV_QPS_ERR, (int)st.u("state")) << st.line;
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 len=64 wr=6 flags=S"));
    std::vector<wc_t> late = poll(*m_a, "send", 1);
    ASSERT_EQ(1u, late.size());
    EXPECT_EQ(IBV_WC_WR_FLUSH_ERR, late[0].status)
        << wc_status_name(late[0].status);
}

/* A slow peer is not a dead one: with WRs outstanding the peer answers
 * nothing for three of the QP's timeouts (its process is stopped, as a
 * process descheduled on a loaded machine is), less than its whole budget
 * (timeout * (retry_cnt + 1)); then it runs on and answers, and every WR
 * completes successfully: a NIC retries a request whose answer is late
 * and gives up only once its retries are spent. */
TEST_P(softnic_errors, slow_peer_is_not_dead)
{
    conn_opts oa          = dead_peer_opts();
    oa.timeout            = 17; /* 537 ms per attempt, 8 attempts: 4.3 s */
    oa.retry              = 7;
    const double T_ms     = retry_bound_ms(oa) / (oa.retry + 1);
    const double stall_ms = 3 * T_ms;
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0, oa));
    ASSERT_OK(m_b->cmd("recv qp=0 mr=1 len=256 wr=10"));
    wc_t wc = post_wait(*m_a, "qp=0 op=WRITE mr=1 len=64 wr=0" + remote());
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);

    m_b->freeze();
    double t0 = now_ms();
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 len=64 wr=1"));
    ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 len=4096 wr=2" + remote()));
    ASSERT_OK(m_a->cmd("post qp=0 op=READ mr=1 len=4096 wr=3" + remote()));
    usleep((useconds_t)(stall_ms * 1000));
    m_b->thaw();
    double stalled_ms = now_ms() - t0;

    reply_t r = m_a->cmd("poll cq=send n=3 timeout=30000");
    ASSERT_TRUE(r.ok) << r.line;
    ASSERT_EQ(3u, r.wcs.size()) << r.line;
    for (size_t i = 0; i < r.wcs.size(); ++i) {
        EXPECT_EQ(i + 1, r.wcs[i].wr_id) << "posting order";
        EXPECT_EQ(IBV_WC_SUCCESS, r.wcs[i].status)
            << "wr " << r.wcs[i].wr_id << " after the peer was silent for "
            << stalled_ms << " ms (budget " << retry_bound_ms(oa)
            << " ms): " << wc_status_name(r.wcs[i].status);
    }
    std::vector<wc_t> rx = poll(*m_b, "recv", 1);
    ASSERT_EQ(1u, rx.size());
    EXPECT_EQ(IBV_WC_SUCCESS, rx[0].status) << wc_status_name(rx[0].status);
    reply_t st = m_a->cmd("query qp=0");
    EXPECT_EQ(IBV_QPS_RTS, (int)st.u("state")) << st.line;
    wc = post_wait(*m_a, "qp=0 op=WRITE mr=1 len=64 wr=4" + remote());
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
}

/* The whole host stalls (both processes stopped, as when a loaded machine
 * or its VM is not scheduled) for longer than the initiator's whole retry
 * budget, with WRs outstanding that the peer has not answered yet. The
 * initiator runs on first, the peer a moment later: an attempt ran out
 * while nobody ran, and the peer answers within the next ones, so every WR
 * completes successfully. A NIC's retry timer counts retransmissions the
 * peer could answer, not wall time its own host spent stopped. */
TEST_P(softnic_errors, stalled_host_is_not_a_dead_peer)
{
    conn_opts oa = dead_peer_opts();
    oa.timeout   = 16; /* 268 ms per attempt, 8 attempts: 2.1 s */
    oa.retry     = 7;
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0, oa));
    ASSERT_OK(m_b->cmd("recv qp=0 mr=1 len=256 wr=10"));
    wc_t wc = post_wait(*m_a, "qp=0 op=WRITE mr=1 len=64 wr=0" + remote());
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);

    m_b->freeze();
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 len=64 wr=1"));
    ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 len=4096 wr=2" + remote()));
    ASSERT_OK(m_a->cmd("post qp=0 op=READ mr=1 len=4096 wr=3" + remote()));
    m_a->freeze();
    usleep((useconds_t)(1.5 * retry_bound_ms(oa) * 1000));
    m_a->thaw();
    /* the peer is still stopped for a part of one attempt */
    usleep(100000);
    m_b->thaw();

    reply_t r = m_a->cmd("poll cq=send n=3 timeout=30000");
    ASSERT_TRUE(r.ok) << r.line;
    ASSERT_EQ(3u, r.wcs.size()) << r.line;
    for (size_t i = 0; i < r.wcs.size(); ++i) {
        EXPECT_EQ(i + 1, r.wcs[i].wr_id) << "posting order";
        EXPECT_EQ(IBV_WC_SUCCESS, r.wcs[i].status)
            << "wr " << r.wcs[i].wr_id << ": "
            << wc_status_name(r.wcs[i].status);
    }
    std::vector<wc_t> rx = poll(*m_b, "recv", 1);
    ASSERT_EQ(1u, rx.size());
    EXPECT_EQ(IBV_WC_SUCCESS, rx[0].status) << wc_status_name(rx[0].status);
    reply_t st = m_a->cmd("query qp=0");
    EXPECT_EQ(IBV_QPS_RTS, (int)st.u("state")) << st.line;
}

/*
 * A target QP in ERR executes and answers nothing, as an IB responder in
 * error drops the packets: a SEND, WRITE, READ and fetch-add to it fail
 * with IBV_WC_RETRY_EXC_ERR only once the initiator's whole retry budget,
 * (retry_cnt + 1) * timeout, has run out (a "not ready" NAK would end it
 * a timeout earlier), the WRs posted behind each are flushed in posting
 * order, and neither side's memory changes. Each operation on a QP pair of
 * its own, all four at once. open_args select the paths: on one host the
 * ring (SEND, fetch-add) and CMA (WRITE, READ) unless no_ring / no_cma;
 * across hosts TCP.
 */
/*
 * A READ or WRITE that is under way when its target QP goes to ERR moves
 * no more data: a NIC responder in error drops the WRITE's packets still
 * coming and sends no more of the READ's response. b is frozen while the
 * request arrives, then a while b starts on it (so that most of its 48 MB
 * is still to come: the sockets hold about 10 MB in flight), then b goes
 * to ERR. The WR ends with RETRY_EXC_ERR once a's budget has run out, and
 * the last 8 MB of the destination never change. Over TCP (one host:
 * no_cma).
 */
void softnic_errors::transfer_at_error(bool write)
{
    const std::string args = two_hosts() ? "" : "no_cma=1";
    peer_proc &a           = args.empty() ? *m_a : spawn('a', MNT_SAME, args);
    peer_proc &b           = args.empty() ? *m_b : spawn('b', MNT_SAME, args);
    ASSERT_FALSE(HasFailure());
    const size_t len = 48 << 20, tail = 8 << 20;
    reg_mr(a, 2, len);
    mr_t rb = reg_mr(b, 2, len);
    ASSERT_FALSE(HasFailure());
    conn_opts oa;
    oa.timeout = 16; /* 268 ms per attempt */
    oa.retry   = 1;
    ASSERT_NO_FATAL_FAILURE(connect(a, 0, b, 0, oa));
    wc_t wc = post_wait(a, "qp=0 op=WRITE mr=2 len=64 wr=9" + rb.remote());
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    ASSERT_OK(a.cmd("fill id=2 seed=11"));
    ASSERT_OK(b.cmd("fill id=2 seed=22"));

    b.freeze();
    ASSERT_OK(a.cmd(std::string("post qp=0 mr=2 wr=1 op=") +
                    (write ? "WRITE" : "READ") + " len=" + std::to_string(len) +
                    rb.remote()));
    usleep(30000); /* the request is in b's socket (a WRITE's first MBs) */
    a.freeze();
    b.thaw();
    usleep(150000); /* b takes what is in flight and waits for a */
    ASSERT_OK(b.cmd("modify qp=0 state=ERR"));
    a.thaw();
    std::vector<wc_t> wcs = poll(a, "send", 1, 10000);
    ASSERT_EQ(1u, wcs.size());
    EXPECT_EQ(IBV_WC_RETRY_EXC_ERR, wcs[0].status)
        << wc_status_name(wcs[0].status)
        << ": the target went on with the transfer in ERR";
    const std::string end = " off=" + std::to_string(len - tail) +
                            " pos=" + std::to_string(len - tail) +
                            " len=" + std::to_string(tail);
    if (write) {
        EXPECT_OK(b.cmd("check id=2 seed=22" + end))
            << "the target placed a WRITE's payload while in ERR";
    } else {
        EXPECT_OK(a.cmd("check id=2 seed=11" + end))
            << "the target sent READ data while in ERR";
    }
}

TEST_P(softnic_errors, read_response_stops_when_target_goes_to_error)
{
    transfer_at_error(false);
}

TEST_P(softnic_errors, write_payload_not_placed_after_target_error)
{
    transfer_at_error(true);
}

/* Rights start at RTR, on the same-host CMA path as on TCP: a WRITE and a
 * READ to a target QP still in INIT execute nothing (they go on TCP, whose
 * responder NAKs them "not ready"; a is resending) and execute once the
 * target reaches RTR. */
TEST_P(softnic_errors, target_in_init_executes_nothing_until_rtr)
{
    if (two_hosts()) {
        GTEST_SKIP() << "CMA is a same-host path";
    }
    qp_ep_t ea = create_qp(*m_a, 0), eb = create_qp(*m_b, 0);
    ASSERT_FALSE(HasFailure());
    conn_opts oa;
    oa.timeout = 16; /* resent every 268 ms; 2.1 s in all */
    ASSERT_OK(m_b->cmd("connect qp=0 upto=INIT addr=" + ea.addr +
                       " qpn=" + std::to_string(ea.qpn)));
    ASSERT_OK(m_a->cmd("connect qp=0 addr=" + eb.addr +
                       " qpn=" + std::to_string(eb.qpn) + oa.str()));
    ASSERT_OK(m_a->cmd("fill id=1 off=0 len=4096 seed=6"));
    ASSERT_OK(m_a->cmd("fill id=1 off=65536 len=4096 seed=7"));
    ASSERT_OK(m_b->cmd("fill id=1 off=0 len=4096 seed=5"));
    ASSERT_OK(m_b->cmd("fill id=1 off=65536 len=4096 seed=8"));
    ASSERT_OK(
        m_a->cmd("post qp=0 op=WRITE mr=1 len=4096 wr=1 flags=" + remote()));
    ASSERT_OK(m_a->cmd("post qp=0 op=READ mr=1 off=65536 len=4096 wr=2" +
                       remote(65536)));
    std::vector<wc_t> early = poll(*m_a, "send", 1, 150);
    EXPECT_EQ(0u, early.size()) << "a WR completed while the target is in INIT";
    EXPECT_OK(m_b->cmd("check id=1 off=0 len=4096 seed=5"))
        << "a WRITE executed on a target in INIT";
    EXPECT_OK(m_a->cmd("check id=1 off=65536 len=4096 seed=7"))
        << "a READ executed on a target in INIT";

    ASSERT_OK(m_b->cmd("connect qp=0 addr=" + ea.addr +
                       " qpn=" + std::to_string(ea.qpn)));
    std::vector<wc_t> wcs = poll(*m_a, "send", 1, 5000);
    ASSERT_EQ(1u, wcs.size());
    EXPECT_EQ(2u, wcs[0].wr_id);
    EXPECT_EQ(IBV_WC_SUCCESS, wcs[0].status) << wc_status_name(wcs[0].status);
    EXPECT_OK(m_b->cmd("check id=1 off=0 len=4096 seed=6"));
    EXPECT_OK(m_a->cmd("check id=1 off=65536 len=4096 seed=8"));
}

/*
 * A target QP below RTR takes nothing: an IB QP in RESET or INIT drops
 * what comes (IB has no "not ready" NAK), so the initiator's transport
 * budget decides, as for a silent peer: RETRY_EXC_ERR once (retry_cnt + 1)
 * attempts of T have run out since the first send, never before; with
 * timeout 0 never (the WR waits until its QP goes to ERR). The target's
 * QP stays in RESET.
 */
void softnic_errors::target_not_ready(int timeout)
{
    qp_ep_t ea = create_qp(*m_a, 0), eb = create_qp(*m_b, 0);
    ASSERT_FALSE(HasFailure());
    conn_opts oa;
    oa.timeout = timeout;
    oa.retry   = 1;
    ASSERT_OK(m_a->cmd("connect qp=0 addr=" + eb.addr +
                       " qpn=" + std::to_string(eb.qpn) + oa.str()));
    double t0 = now_ms();
    ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 len=64 wr=1" + remote()));
    if (timeout == 0) {
        EXPECT_EQ(0u, poll(*m_a, "send", 1, 1500).size())
            << "with timeout 0 (infinite) a WR failed";
        ASSERT_OK(m_a->cmd("modify qp=0 state=ERR"));
    }
    std::vector<wc_t> wcs = poll(*m_a, "send", 1, 10000);
    ASSERT_EQ(1u, wcs.size());
    EXPECT_EQ(timeout ? IBV_WC_RETRY_EXC_ERR : IBV_WC_WR_FLUSH_ERR,
              wcs[0].status)
        << wc_status_name(wcs[0].status);
    if (timeout != 0) {
        expect_not_before_budget(t0, oa);
    }
    (void)ea;
}

TEST_P(softnic_errors, target_not_ready_gets_whole_budget)
{
    target_not_ready(16);
}

TEST_P(softnic_errors, target_not_ready_infinite_timeout_waits)
{
    target_not_ready(0);
}

void softnic_errors::target_in_error(const std::string &open_args)
{
    peer_proc &a = open_args.empty() ? *m_a : spawn('a', MNT_SAME, open_args);
    peer_proc &b = open_args.empty() ? *m_b : spawn('b', MNT_SAME, open_args);
    ASSERT_FALSE(HasFailure());
    mr_t rb = m_rb;
    if (!open_args.empty()) {
        reg_mr(a, 1, 1 << 20);
        rb = reg_mr(b, 1, 1 << 20);
        ASSERT_FALSE(HasFailure());
    }
    const size_t span = 65536; /* each operation's part of both regions */
    const char *ops[] = {"SEND", "WRITE", "READ", "FADD"};
    const int nops    = 4;
    conn_opts oa;
    oa.timeout = 17; /* 537 ms per attempt: a NAK'd end is 537 ms early */
    oa.retry   = 1;
    /* warm the path up with default timeouts (see dead_peer) */
    ASSERT_NO_FATAL_FAILURE(connect(a, 9, b, 9));
    wc_t wc =
        post_wait(a, "qp=9 op=WRITE mr=1 len=64 wr=1" + rb.remote(nops * span));
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    for (int k = 0; k < nops; ++k) {
        std::string q = "qp=" + std::to_string(k);
        ASSERT_NO_FATAL_FAILURE(connect(a, k, b, k, oa));
        /* the connection and the same-host paths are up */
        wc = post_wait(a, q + " op=WRITE mr=1 len=64 wr=900" +
                              rb.remote(nops * span));
        ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    }
    ASSERT_OK(a.cmd("fill id=1 off=0 len=" + std::to_string(nops * span) +
                    " seed=55"));
    ASSERT_OK(b.cmd("fill id=1 off=0 len=" + std::to_string(nops * span) +
                    " seed=77"));
    ASSERT_OK(b.cmd("recv qp=0 mr=1 off=0 len=256 wr=50"));
    for (int k = 0; k < nops; ++k) {
        ASSERT_OK(b.cmd("modify qp=" + std::to_string(k) + " state=ERR"));
    }
    /* B's receive was flushed by its QP's move to ERR */
    std::vector<wc_t> rx = poll(b, "recv", 1);
    ASSERT_EQ(1u, rx.size());
    EXPECT_EQ(50u, rx[0].wr_id);
    EXPECT_EQ(IBV_WC_WR_FLUSH_ERR, rx[0].status)
        << wc_status_name(rx[0].status);

    double t0 = now_ms();
    for (int k = 0; k < nops; ++k) {
        std::string q   = "qp=" + std::to_string(k);
        std::string off = std::to_string(k * span);
        std::string wr  = std::to_string(10 * k + 1);
        ASSERT_OK(a.cmd("post " + q + " op=" + ops[k] + " mr=1 off=" + off +
                        " len=" + (k == 3 ? "8" : "4096") + " wr=" + wr +
                        rb.remote(k * span)));
        /* behind it: an unsignaled WRITE and a SEND */
        ASSERT_OK(a.cmd("post " + q + " op=WRITE mr=1 off=" + off +
                        " len=64 flags= wr=" + std::to_string(10 * k + 2) +
                        rb.remote(k * span + 8192)));
        ASSERT_OK(a.cmd("post " + q + " op=SEND mr=1 off=" + off +
                        " len=64 wr=" + std::to_string(10 * k + 3)));
    }
    /* nothing completes before the budget has run out */
    double budget_ms = retry_bound_ms(oa);
    std::vector<wc_t> s =
        poll_until(a, "send", 1, t0 + budget_ms - STAMP_SLACK_MS);
    EXPECT_EQ(0u, s.size())
        << "a WR completed after " << now_ms() - t0
        << " ms, before the QP's retry budget of " << budget_ms
        << " ms ran out: wr " << (s.empty() ? 0 : s[0].wr_id) << " "
        << (s.empty() ? "" : wc_status_name(s[0].status));
    double bound_ms = 2 * budget_ms + 5000;
    reply_t r =
        a.cmd("poll cq=send n=" + std::to_string(3 * nops - (int)s.size()) +
                  " timeout=" + std::to_string((int)bound_ms),
              (int)bound_ms + 10000);
    ASSERT_TRUE(r.ok) << r.line;
    s.insert(s.end(), r.wcs.begin(), r.wcs.end());
    EXPECT_LE(now_ms() - t0, bound_ms) << "failed too late";
    ASSERT_EQ((size_t)(3 * nops), s.size()) << r.line;
    int next[nops] = {1, 1, 1, 1};
    for (const wc_t &w : s) {
        int k = (int)(w.wr_id / 10), i = (int)(w.wr_id % 10);
        ASSERT_TRUE((k < nops) && (i >= 1) && (i <= 3)) << "wr " << w.wr_id;
        SCOPED_TRACE(std::string(ops[k]) + ", wr " + std::to_string(w.wr_id));
        EXPECT_EQ(next[k]++, i) << "posting order";
        EXPECT_EQ((i == 1) ? IBV_WC_RETRY_EXC_ERR : IBV_WC_WR_FLUSH_ERR,
                  w.status)
            << wc_status_name(w.status);
    }
    for (int k = 0; k < nops; ++k) {
        reply_t st = a.cmd("query qp=" + std::to_string(k));
        EXPECT_EQ(IBV_QPS_ERR, (int)st.u("state")) << ops[k] << ": " << st.line;
    }
    /* nothing was placed, read, added or received */
    EXPECT_OK(b.cmd("check id=1 off=0 len=" + std::to_string(nops * span) +
                    " seed=77"))
        << "the target's memory changed";
    EXPECT_OK(a.cmd("check id=1 off=0 len=" + std::to_string(nops * span) +
                    " seed=55"))
        << "the initiator's memory changed (READ or fetch-add result)";
    EXPECT_EQ(0u, poll(b, "recv", 1, 200).size());
}

/* one host: SEND and fetch-add on the ring, WRITE and READ by CMA; two
 * hosts: TCP */
TEST_P(softnic_errors, target_in_error_is_silent)
{
    target_in_error("");
}

/* one host: SEND and fetch-add on TCP, WRITE and READ by CMA */
TEST_P(softnic_errors, target_in_error_is_silent_no_ring)
{
    if (two_hosts()) {
        GTEST_SKIP() << "two hosts use TCP anyway";
    }
    target_in_error("no_ring=1");
}

/* one host: everything on TCP */
TEST_P(softnic_errors, target_in_error_is_silent_no_cma)
{
    if (two_hosts()) {
        GTEST_SKIP() << "two hosts use TCP anyway";
    }
    target_in_error("no_cma=1");
}

/* A SEND waits at the target for a receive (RNR, rnr_retry 7) for longer
 * than the initiator's whole retry budget; then the target goes to ERR.
 * The SEND fails only once the whole budget has run out since, as every
 * RNR NAK restarts a NIC's transport timer (on one host the ring's wait
 * for a receive stands for those NAKs). */
TEST_P(softnic_errors, target_in_error_after_rnr_wait_gets_whole_budget)
{
    conn_opts oa, ob;
    oa.timeout = 17; /* 537 ms per attempt, 2 attempts */
    oa.retry   = 1;
    ob.min_rnr = 14; /* 1.28 ms between RNR NAKs on TCP */
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0, oa, ob));
    wc_t wc = post_wait(*m_a, "qp=0 op=WRITE mr=1 len=64 wr=1" + remote());
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 len=64 wr=2"));
    double budget_ms    = retry_bound_ms(oa);
    std::vector<wc_t> s = poll(*m_a, "send", 1, (int)(1.5 * budget_ms));
    EXPECT_EQ(0u, s.size()) << "the SEND ended while waiting for a receive";
    double t0 = now_ms();
    ASSERT_OK(m_b->cmd("modify qp=0 state=ERR"));
    s = poll_until(*m_a, "send", 1, t0 + budget_ms - STAMP_SLACK_MS);
    EXPECT_EQ(0u, s.size()) << "the SEND failed " << now_ms() - t0
                            << " ms after its target went to ERR, before "
                               "the QP's retry budget of "
                            << budget_ms << " ms ran out";
    if (s.empty()) {
        double bound_ms = 2 * budget_ms + 5000;
        s               = poll(*m_a, "send", 1, (int)bound_ms);
        EXPECT_LE(now_ms() - t0, bound_ms) << "failed too late";
    }
    ASSERT_EQ(1u, s.size());
    EXPECT_EQ(2u, s[0].wr_id);
    EXPECT_EQ(IBV_WC_RETRY_EXC_ERR, s[0].status) << wc_status_name(s[0].status);
}

/* timeout 0 is infinite (IB spec): a WR to a target in ERR waits until
 * the application moves its own QP to ERR, which flushes it */
TEST_P(softnic_errors, target_in_error_infinite_timeout_waits)
{
    conn_opts oa;
    oa.timeout = 0;
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0, oa));
    wc_t wc = post_wait(*m_a, "qp=0 op=WRITE mr=1 len=64 wr=1" + remote());
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    ASSERT_OK(m_b->cmd("modify qp=0 state=ERR"));
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 len=64 wr=2"));
    ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 len=64 wr=3" + remote()));
    ASSERT_OK(m_a->cmd("post qp=0 op=READ mr=1 len=64 wr=4" + remote()));
    /* longer than softnic's shortest budget (20 ms per attempt, 8) */
    std::vector<wc_t> early = poll(*m_a, "send", 1, 1000);
    EXPECT_EQ(0u, early.size())
        << "a WR failed with timeout 0: "
        << (early.empty() ? "" : wc_status_name(early[0].status));
    ASSERT_OK(m_a->cmd("modify qp=0 state=ERR"));
    std::vector<wc_t> s = poll(*m_a, "send", 3 - (int)early.size());
    s.insert(s.begin(), early.begin(), early.end());
    ASSERT_EQ(3u, s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        EXPECT_EQ(i + 2, s[i].wr_id) << "posting order";
        EXPECT_EQ(IBV_WC_WR_FLUSH_ERR, s[i].status)
            << wc_status_name(s[i].status);
    }
}

TEST_P(softnic_errors, send_acked_before_target_exits)
{
    /* A SEND whose receive completed at the target was acknowledged: the
     * sender's WR completes successfully even when the target process ends
     * right after it polled the receive (the responder acknowledges what it
     * placed; the ACK is not its application's to give). The window is
     * short: a fresh target each round, several rounds. */
    for (int round = 0; round < 10; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        peer_proc &b = (round == 0) ? *m_b : spawn('b');
        if (round > 0) {
            reg_mr(b, 1, 4096);
        }
        ASSERT_FALSE(HasFailure());
        ASSERT_NO_FATAL_FAILURE(connect(*m_a, round, b, 0));
        ASSERT_OK(b.cmd("recv qp=0 mr=1 len=64 wr=7"));
        ASSERT_TRUE(b.send("poll cq=recv n=1 exit=1"));
        ASSERT_OK(m_a->cmd("post qp=" + std::to_string(round) +
                           " op=SEND mr=1 len=64 wr=1"));
        ASSERT_TRUE(b.wait_exit(CMD_TIMEOUT_MS));
        reply_t r = m_a->cmd("poll cq=send n=1 timeout=20000");
        ASSERT_EQ(1u, r.wcs.size()) << r.line;
        ASSERT_EQ(IBV_WC_SUCCESS, r.wcs[0].status)
            << wc_status_name(r.wcs[0].status);
    }
}

INSTANTIATE_TEST_SUITE_P(topo, softnic_errors,
                         ::testing::Values(TOPO_SAME_HOST, TOPO_TWO_HOSTS),
                         topology_name);

} /* namespace */
