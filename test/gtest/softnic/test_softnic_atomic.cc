/*
 * softnic atomics: fetch-add and compare-swap execute at the target and are
 * atomic against each other from several initiator processes at once.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "softnic_harness.h"

#include <algorithm>
#include <set>
#include <sstream>
#include <string>

using namespace softnic_test;

namespace
{

const int NINIT = 3;

class softnic_atomic : public softnic_topo
{
  protected:
    void SetUp() override
    {
        softnic_topo::SetUp();
        if (IsSkipped() || HasFatalFailure())
            return;
        m_t = &spawn('b');
        ASSERT_FALSE(HasFailure());
        m_rt = reg_mr(*m_t, 1, 4096, "LW,RW,RR,RA", 4096);
        ASSERT_FALSE(HasFailure());
    }

    void spawn_initiators(int n)
    {
        for (int i = 0; i < n; ++i) {
            peer_proc &p = spawn('a');
            ASSERT_FALSE(HasFailure());
            reg_mr(p, 1, 4096);
            ASSERT_NO_FATAL_FAILURE(connect(p, 0, *m_t, i));
            m_init.push_back(&p);
        }
    }

    std::string remote(uint64_t off = 0) const
    {
        return m_rt.remote(off);
    }

    /* Run "atomics" on every initiator concurrently with its own op. The
     * target polls its receive CQ meanwhile, as an application does: then
     * its polling thread executes atomics (same host: of the rings it
     * drives) while its service thread executes others. A SEND from the
     * first initiator ends the poll. */
    std::vector<reply_t> run_all(const std::vector<std::string> &ops, int n)
    {
        std::vector<reply_t> replies;
        EXPECT_OK(m_t->cmd("recv qp=0 mr=1 off=2048 len=64 wr=77"));
        EXPECT_TRUE(m_t->send("poll cq=recv n=1 timeout=120000"));
        for (size_t i = 0; i < m_init.size(); ++i) {
            EXPECT_TRUE(m_init[i]->send("atomics qp=0 mr=1 op=" + ops[i] +
                                        " n=" + std::to_string(n) + remote()));
        }
        for (peer_proc *p : m_init) {
            replies.push_back(p->recv(120000));
        }
        wc_t wc = post_wait(*m_init[0], "qp=0 op=SEND mr=1 len=8 wr=78");
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
        EXPECT_TRUE(m_t->recv(120000).ok) << "the target's poll";
        return replies;
    }

    peer_proc *m_t = nullptr;
    std::vector<peer_proc *> m_init;
    mr_t m_rt;
};

TEST_P(softnic_atomic, fetch_add_concurrent_initiators)
{
    const int n = 300;
    ASSERT_NO_FATAL_FAILURE(spawn_initiators(NINIT));
    ASSERT_OK(m_t->cmd("set64 id=1 off=0 val=0"));
    std::vector<reply_t> rs = run_all({"FADD", "FADD", "FADD"}, n);

    std::multiset<uint64_t> seen;
    for (const reply_t &r : rs) {
        ASSERT_TRUE(r.ok) << r.line;
        std::istringstream in(r.s("vals"));
        std::string v;
        while (std::getline(in, v, ',')) {
            seen.insert(strtoull(v.c_str(), NULL, 0));
        }
    }
    ASSERT_EQ((size_t)NINIT * n, seen.size());
    uint64_t expect = 0;
    for (uint64_t v : seen) {
        ASSERT_EQ(expect, v)
            << "fetch-add results are not exactly "
               "0.."
            << NINIT * n - 1 << " each once (lost or duplicated update)";
        ++expect;
    }
    reply_t g = m_t->cmd("get64 id=1 off=0");
    EXPECT_EQ((uint64_t)NINIT * n, g.u("val"));
    EXPECT_OK(m_t->cmd("guardcheck id=1"));
}

TEST_P(softnic_atomic, cmp_swap_concurrent_initiators)
{
    const int n = 150;
    ASSERT_NO_FATAL_FAILURE(spawn_initiators(NINIT));
    ASSERT_OK(m_t->cmd("set64 id=1 off=0 val=0"));
    std::vector<reply_t> rs = run_all({"CAS", "CAS", "CAS"}, n);
    for (const reply_t &r : rs) {
        ASSERT_TRUE(r.ok) << r.line;
    }
    reply_t g = m_t->cmd("get64 id=1 off=0");
    EXPECT_EQ((uint64_t)NINIT * n, g.u("val"))
        << "compare-and-swap increments were lost";
}

TEST_P(softnic_atomic, fetch_add_and_cmp_swap_mixed)
{
    const int n = 150;
    ASSERT_NO_FATAL_FAILURE(spawn_initiators(NINIT));
    ASSERT_OK(m_t->cmd("set64 id=1 off=0 val=0"));
    std::vector<reply_t> rs = run_all({"FADD", "CAS", "FADD"}, n);
    for (const reply_t &r : rs) {
        ASSERT_TRUE(r.ok) << r.line;
    }
    reply_t g = m_t->cmd("get64 id=1 off=0");
    EXPECT_EQ((uint64_t)NINIT * n, g.u("val"))
        << "fetch-add and compare-swap are not atomic against each other";
}

TEST_P(softnic_atomic, results_and_semantics)
{
    ASSERT_NO_FATAL_FAILURE(spawn_initiators(1));
    peer_proc &a = *m_init[0];
    ASSERT_OK(m_t->cmd("set64 id=1 off=8 val=10"));

    wc_t wc = post_wait(a, "qp=0 op=FADD mr=1 len=8 add=5 wr=1" + remote(8));
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    EXPECT_EQ(IBV_WC_FETCH_ADD, wc.opcode);
    EXPECT_EQ(10u, a.cmd("get64 id=1 off=0").u("val"));
    EXPECT_EQ(15u, m_t->cmd("get64 id=1 off=8").u("val"));

    wc = post_wait(a, "qp=0 op=CAS mr=1 len=8 cmp=15 swap=99 wr=2" + remote(8));
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status);
    EXPECT_EQ(IBV_WC_COMP_SWAP, wc.opcode);
    EXPECT_EQ(15u, a.cmd("get64 id=1 off=0").u("val"));
    EXPECT_EQ(99u, m_t->cmd("get64 id=1 off=8").u("val"));

    wc = post_wait(a, "qp=0 op=CAS mr=1 len=8 cmp=1 swap=7 wr=3" + remote(8));
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status);
    EXPECT_EQ(99u, a.cmd("get64 id=1 off=0").u("val"));
    EXPECT_EQ(99u, m_t->cmd("get64 id=1 off=8").u("val"))
        << "a failed compare must not swap";

    /* a 64-bit add wraps and touches only its 8 bytes */
    ASSERT_OK(m_t->cmd("set64 id=1 off=16 val=18446744073709551615"));
    ASSERT_OK(m_t->cmd("set64 id=1 off=24 val=5"));
    wc = post_wait(a, "qp=0 op=FADD mr=1 len=8 add=2 wr=4" + remote(16));
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status);
    EXPECT_EQ(1u, m_t->cmd("get64 id=1 off=16").u("val"));
    EXPECT_EQ(5u, m_t->cmd("get64 id=1 off=24").u("val"));
}

TEST_P(softnic_atomic, unaligned_fails_untouched)
{
    ASSERT_NO_FATAL_FAILURE(spawn_initiators(1));
    peer_proc &a = *m_init[0];
    ASSERT_OK(m_t->cmd("fill id=1 seed=55"));
    wc_t wc = post_wait(a, "qp=0 op=FADD mr=1 len=8 add=1 wr=1" + remote(4));
    EXPECT_NE(IBV_WC_SUCCESS, wc.status);
    EXPECT_TRUE((wc.status == IBV_WC_REM_INV_REQ_ERR) ||
                (wc.status == IBV_WC_REM_ACCESS_ERR))
        << wc_status_name(wc.status);
    EXPECT_OK(m_t->cmd("check id=1 seed=55"));
    EXPECT_OK(m_t->cmd("guardcheck id=1"));
}

INSTANTIATE_TEST_SUITE_P(topo, softnic_atomic,
                         ::testing::Values(TOPO_SAME_HOST, TOPO_TWO_HOSTS),
                         topology_name);

} /* namespace */
