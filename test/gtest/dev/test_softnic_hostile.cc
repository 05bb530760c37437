/*
 * softnic under hostile wire input: a raw TCP client (peer A, on the other
 * host in two_hosts) sends short, garbage, oversized and lying frames to the
 * softnic listener of peer B. B must stay alive, never write outside its
 * registered region, and keep serving legitimate QPs.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "softnic_harness.h"

#include <string>

using namespace softnic_test;

namespace
{

const size_t LEN = 65536;

class softnic_hostile : public softnic_topo
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
        m_la = reg_mr(*m_a, 1, LEN);
        m_rb = reg_mr(*m_b, 1, LEN, "LW,RW,RR,RA", 65536);
        ASSERT_FALSE(HasFailure());
        ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
        ASSERT_OK(m_b->cmd("fill id=1 off=4096 len=61440 seed=20"));
        ASSERT_OK(m_a->cmd("fill id=1 len=4096 seed=21"));
        wc_t wc =
            post_wait(*m_a, "qp=0 op=WRITE mr=1 len=4096 wr=1" + remote());
        ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    }

    std::string remote(uint64_t off = 0) const
    {
        return " raddr=" + std::to_string(m_rb.addr + off) +
               " rkey=" + std::to_string(m_rb.rkey);
    }

    /* The TCP listeners of B's process ("ip:port"). */
    std::vector<std::string> listeners()
    {
        std::vector<std::string> out;
        reply_t                  r = m_b->cmd("listeners");
        EXPECT_TRUE(r.ok) << r.line;
        for (unsigned i = 0; i < r.u("count"); ++i) {
            out.push_back(r.s(("l" + std::to_string(i)).c_str()));
        }
        return out;
    }

    void attack(const std::string &c)
    {
        std::vector<std::string> ls = listeners();
        if (ls.empty()) {
            GTEST_SKIP() << "softnic has no TCP listener on " << dev_name()
                         << " (same-host traffic uses shared memory)";
        }
        for (const std::string &l : ls) {
            std::string ip = l.substr(0, l.find(':'));
            std::string port = l.substr(l.find(':') + 1);
            if (ip == "0.0.0.0") {
                ip = ip_of('b');
            }
            reply_t r = m_a->cmd(
                "raw host=" + ip + " port=" + port + " case=" + c, 120000);
            EXPECT_TRUE(r.ok) << r.line;
            EXPECT_GT(r.u("sessions"), 0u) << "could not connect to " << l;
        }
        expect_survived();
    }

    void expect_survived()
    {
        reply_t p = m_b->cmd("ping");
        ASSERT_TRUE(p.ok) << "softnic peer died under hostile input: "
                          << p.line;
        EXPECT_OK(m_b->cmd("guardcheck id=1"))
            << "memory outside the registered region was written";
        EXPECT_OK(m_b->cmd("check id=1 len=4096 seed=21"));
        EXPECT_OK(m_b->cmd("check id=1 off=4096 len=61440 seed=20"));

        /* the QP connected before the attack still works */
        ASSERT_OK(m_a->cmd("fill id=1 len=4096 seed=22"));
        wc_t wc =
            post_wait(*m_a, "qp=0 op=WRITE mr=1 len=4096 wr=2" + remote(8192));
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
        EXPECT_OK(m_b->cmd("check id=1 off=8192 len=4096 seed=22"));

        /* and a new one can be made */
        ASSERT_NO_FATAL_FAILURE(connect(*m_a, 1, *m_b, 1));
        wc = post_wait(*m_a, "qp=1 op=READ mr=1 len=4096 wr=3" + remote(8192));
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
        EXPECT_OK(m_a->cmd("check id=1 len=4096 seed=22"));
    }

    peer_proc *m_a = nullptr, *m_b = nullptr;
    mr_t       m_la, m_rb;
};

TEST_P(softnic_hostile, connect_and_close)
{
    attack("connect_close");
}

TEST_P(softnic_hostile, short_frames)
{
    attack("short");
}

TEST_P(softnic_hostile, garbage_frames)
{
    attack("garbage");
}

TEST_P(softnic_hostile, oversized_frames)
{
    attack("oversized");
}

TEST_P(softnic_hostile, lying_length_fields)
{
    attack("lying");
}

INSTANTIATE_TEST_SUITE_P(topo, softnic_hostile,
                         ::testing::Values(TOPO_SAME_HOST, TOPO_TWO_HOSTS),
                         topology_name);

} /* namespace */
