/*
 * softnic access checks, across two processes (same host and two hosts):
 * remote key/range/rights → IBV_WC_REM_ACCESS_ERR with the target memory
 * untouched and the QP in ERR; local key/range → IBV_WC_LOC_PROT_ERR;
 * rkeys die at deregistration; zero-length operations check no keys.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "softnic_harness.h"

#include <string>

using namespace softnic_test;

namespace
{

const size_t LEN           = 65536;
const uint32_t TARGET_SEED = 7;

class softnic_access : public softnic_topo
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
        m_la   = reg_mr(*m_a, 1, 2 * LEN); /* local side never the limit */
        m_full = reg_mr(*m_b, 1, LEN, "LW,RW,RR,RA", 4096);
        m_ro   = reg_mr(*m_b, 2, LEN, "LW,RR");
        m_wo   = reg_mr(*m_b, 3, LEN, "LW,RW");
        m_noat = reg_mr(*m_b, 4, LEN, "LW,RW,RR");
        ASSERT_FALSE(HasFailure());
        for (int id = 1; id <= 4; ++id) {
            ASSERT_OK(m_b->cmd("fill id=" + std::to_string(id) +
                               " seed=" + std::to_string(TARGET_SEED)));
        }
        ASSERT_OK(m_a->cmd("fill id=1 seed=9"));
    }

    /* op on a fresh QP pair; the first WR fails remotely, the next one
     * must flush, the QP must be in ERR and B's memory unchanged. */
    void expect_failure(const std::string &post, int status,
                        const conn_opts &ob            = conn_opts(),
                        const std::string &extra_flags = "S")
    {
        int q = m_nqp++;
        ASSERT_NO_FATAL_FAILURE(connect(*m_a, q, *m_b, q, conn_opts(), ob));
        std::string qs = " qp=" + std::to_string(q);
        ASSERT_OK(m_a->cmd("post" + qs + " mr=1 wr=1 flags=" + extra_flags +
                           " " + post));
        /* a READ: if it were (wrongly) executed, B's memory stays intact */
        ASSERT_OK(m_a->cmd("post" + qs + " op=READ mr=1 len=8 wr=2 raddr=" +
                           std::to_string(m_full.addr) +
                           " rkey=" + std::to_string(m_full.rkey)));
        std::vector<wc_t> wcs = poll(*m_a, "send", 2);
        ASSERT_EQ(2u, wcs.size()) << post;
        EXPECT_EQ(1u, wcs[0].wr_id);
        EXPECT_EQ(status, wcs[0].status)
            << post << ": got " << wc_status_name(wcs[0].status)
            << ", expected " << wc_status_name(status);
        EXPECT_EQ(2u, wcs[1].wr_id);
        EXPECT_EQ(IBV_WC_WR_FLUSH_ERR, wcs[1].status)
            << "WR after the failed one: " << wc_status_name(wcs[1].status);
        reply_t st = m_a->cmd("query" + qs);
        EXPECT_EQ(IBV_QPS_ERR, (int)st.u("state")) << st.line;
        expect_target_untouched();
    }

    void expect_target_untouched()
    {
        for (int id = 1; id <= 4; ++id) {
            EXPECT_OK(m_b->cmd("check id=" + std::to_string(id) +
                               " seed=" + std::to_string(TARGET_SEED)));
        }
        EXPECT_OK(m_b->cmd("guardcheck id=1"));
    }

    static std::string rem(const char *op, uint64_t raddr, uint32_t rkey,
                           size_t len = 64)
    {
        return std::string("op=") + op + " len=" + std::to_string(len) +
               " raddr=" + std::to_string(raddr) +
               " rkey=" + std::to_string(rkey);
    }

    peer_proc *m_a = nullptr, *m_b = nullptr;
    mr_t m_la, m_full, m_ro, m_wo, m_noat;
    int m_nqp = 0;
};

TEST_P(softnic_access, bad_rkey)
{
    uint32_t bad = m_full.rkey ^ 0x5a5a00;
    expect_failure(rem("WRITE", m_full.addr, bad), IBV_WC_REM_ACCESS_ERR);
    expect_failure(rem("READ", m_full.addr, bad), IBV_WC_REM_ACCESS_ERR);
    expect_failure(rem("FADD", m_full.addr, bad, 8), IBV_WC_REM_ACCESS_ERR);
    expect_failure(rem("CAS", m_full.addr, bad, 8), IBV_WC_REM_ACCESS_ERR);
}

TEST_P(softnic_access, out_of_range)
{
    expect_failure(rem("WRITE", m_full.addr + LEN - 32, m_full.rkey),
                   IBV_WC_REM_ACCESS_ERR);
    expect_failure(rem("WRITE", m_full.addr - 8, m_full.rkey),
                   IBV_WC_REM_ACCESS_ERR);
    expect_failure(rem("WRITE", m_full.addr, m_full.rkey, LEN + 1),
                   IBV_WC_REM_ACCESS_ERR);
    expect_failure(rem("READ", m_full.addr + LEN - 8, m_full.rkey),
                   IBV_WC_REM_ACCESS_ERR);
    expect_failure(rem("FADD", m_full.addr + LEN, m_full.rkey, 8),
                   IBV_WC_REM_ACCESS_ERR);
    /* a range that wraps around the address space */
    expect_failure(rem("WRITE", ~0ull - 15, m_full.rkey),
                   IBV_WC_REM_ACCESS_ERR);
}

TEST_P(softnic_access, missing_remote_rights)
{
    expect_failure(rem("WRITE", m_ro.addr, m_ro.rkey), IBV_WC_REM_ACCESS_ERR);
    expect_failure(rem("READ", m_wo.addr, m_wo.rkey), IBV_WC_REM_ACCESS_ERR);
    expect_failure(rem("FADD", m_noat.addr, m_noat.rkey, 8),
                   IBV_WC_REM_ACCESS_ERR);
    expect_failure(rem("CAS", m_noat.addr, m_noat.rkey, 8),
                   IBV_WC_REM_ACCESS_ERR);
}

TEST_P(softnic_access, missing_qp_access_flags)
{
    conn_opts ro;
    ro.access = "LW,RR";
    expect_failure(rem("WRITE", m_full.addr, m_full.rkey),
                   IBV_WC_REM_ACCESS_ERR, ro);
    conn_opts wo;
    wo.access = "LW,RW";
    expect_failure(rem("READ", m_full.addr, m_full.rkey), IBV_WC_REM_ACCESS_ERR,
                   wo);
    expect_failure(rem("FADD", m_full.addr, m_full.rkey, 8),
                   IBV_WC_REM_ACCESS_ERR, wo);
}

TEST_P(softnic_access, unsignaled_failure_completes)
{
    expect_failure(rem("WRITE", m_full.addr, m_full.rkey ^ 0x100),
                   IBV_WC_REM_ACCESS_ERR, conn_opts(), "");
}

TEST_P(softnic_access, local_protection)
{
    /* bad lkey */
    expect_failure(rem("WRITE", m_full.addr, m_full.rkey) +
                       " lkey=" + std::to_string(m_la.lkey ^ 0x777700),
                   IBV_WC_LOC_PROT_ERR);
    expect_failure(rem("READ", m_full.addr, m_full.rkey) +
                       " lkey=" + std::to_string(m_la.lkey ^ 0x777700),
                   IBV_WC_LOC_PROT_ERR);
    /* local range beyond the MR */
    expect_failure(rem("WRITE", m_full.addr, m_full.rkey) +
                       " laddr=" + std::to_string(m_la.addr + 2 * LEN - 16),
                   IBV_WC_LOC_PROT_ERR);
    expect_failure(rem("READ", m_full.addr, m_full.rkey) +
                       " laddr=" + std::to_string(m_la.addr - 64),
                   IBV_WC_LOC_PROT_ERR);
    /* READ into an MR without LOCAL_WRITE */
    mr_t ro_local = reg_mr(*m_a, 2, 4096, "RR");
    ASSERT_NE(0u, ro_local.addr);
    expect_failure(rem("READ", m_full.addr, m_full.rkey) +
                       " lkey=" + std::to_string(ro_local.lkey) +
                       " laddr=" + std::to_string(ro_local.addr),
                   IBV_WC_LOC_PROT_ERR);
}

TEST_P(softnic_access, rkey_dead_right_after_dereg)
{
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    std::string wr = m_full.remote();
    ASSERT_OK(m_a->cmd("fill id=1 off=0 len=4096 seed=11"));
    wc_t wc = post_wait(*m_a, "qp=0 op=WRITE mr=1 len=4096 wr=1" + wr);
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    ASSERT_OK(m_b->cmd("check id=1 len=4096 seed=11"));

    ASSERT_OK(m_b->cmd("dereg id=1"));
    /* dereg has returned: the very next access must fail */
    ASSERT_OK(m_a->cmd("fill id=1 off=0 len=4096 seed=12"));
    wc = post_wait(*m_a, "qp=0 op=WRITE mr=1 len=4096 wr=2" + wr);
    EXPECT_EQ(IBV_WC_REM_ACCESS_ERR, wc.status) << wc_status_name(wc.status);
    EXPECT_OK(m_b->cmd("check id=1 len=4096 seed=11"));

    /* READ through another QP after dereg fails as well */
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 1, *m_b, 1));
    wc = post_wait(*m_a, "qp=1 op=READ mr=1 len=64 wr=3" + wr);
    EXPECT_EQ(IBV_WC_REM_ACCESS_ERR, wc.status) << wc_status_name(wc.status);
}

/* Deregistration while WRITEs stream in: once orc_mr_dereg() has returned,
 * no WRITE may land any more. B refills the region right after dereg
 * returns; A keeps writing until its first failure; the refill must be
 * intact afterwards. */
TEST_P(softnic_access, dereg_while_writing)
{
    const size_t len = 16384;
    for (int rep = 0; rep < 5; ++rep) {
        SCOPED_TRACE("repetition " + std::to_string(rep));
        int id = 10 + rep, q = 10 + rep;
        mr_t t = reg_mr(*m_b, id, len);
        ASSERT_NE(0u, t.addr);
        ASSERT_NO_FATAL_FAILURE(connect(*m_a, q, *m_b, q));
        ASSERT_OK(m_a->cmd("fill id=1 len=16384 seed=31"));
        ASSERT_NE(0u, m_a->cmd("get64 id=1 off=0").u("val"));
        ASSERT_TRUE(m_a->send("writeloop qp=" + std::to_string(q) +
                              " mr=1 len=16384 n=1000000" + t.remote()));
        ASSERT_OK(m_b->cmd("dereg id=" + std::to_string(id) +
                           " wait_nonzero=1 refill_seed=32"));
        reply_t r = m_a->recv();
        ASSERT_TRUE(r.ok) << r.line;
        /* (B saw A's data arrive before deregistering, so the loop was
         * running; the WRITE cut by dereg may itself have failed: ok 0) */
        EXPECT_EQ(IBV_WC_REM_ACCESS_ERR, (int)r.u("status"))
            << wc_status_name((int)r.u("status"));
        EXPECT_OK(m_b->cmd("check id=" + std::to_string(id) + " seed=32"))
            << "a WRITE landed after orc_mr_dereg() returned";
    }
}

TEST_P(softnic_access, zero_length_ignores_keys)
{
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    const std::string bogus = " lkey=3735928559 laddr=16 raddr=32 "
                              "rkey=195894762";
    wc_t wc = post_wait(*m_a, "qp=0 op=WRITE len=0 wr=1" + bogus);
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status)
        << "WRITE len 0 (sge length 0): " << wc_status_name(wc.status);
    wc = post_wait(*m_a, "qp=0 op=WRITE len=0 nsge=0 wr=2" + bogus);
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status)
        << "WRITE without sge: " << wc_status_name(wc.status);
    wc = post_wait(*m_a, "qp=0 op=READ len=0 nsge=0 wr=3" + bogus);
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status)
        << "READ without sge: " << wc_status_name(wc.status);
    /* zero-length SEND consumes a receive, byte_len 0 */
    ASSERT_OK(m_b->cmd("recv qp=0 mr=1 len=64 wr=50"));
    wc = post_wait(*m_a, "qp=0 op=SEND len=0 nsge=0 wr=4" + bogus);
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    std::vector<wc_t> r = poll(*m_b, "recv", 1);
    ASSERT_EQ(1u, r.size());
    EXPECT_EQ(50u, r[0].wr_id);
    EXPECT_EQ(IBV_WC_SUCCESS, r[0].status);
    EXPECT_EQ(0u, r[0].byte_len);
    /* the QP is still healthy */
    wc = post_wait(*m_a, "qp=0 op=WRITE mr=1 len=8 wr=5 raddr=" +
                             std::to_string(m_full.addr + 64) +
                             " rkey=" + std::to_string(m_full.rkey));
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
}

/* A receive whose region is deregistered after an earlier SEND landed in
 * it (the target may keep that region's snapshot) takes nothing more: the
 * next SEND completes LOC_PROT_ERR there and REM_OP_ERR here */
TEST_P(softnic_access, send_into_receive_of_a_deregistered_region)
{
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    mr_t t = reg_mr(*m_b, 20, 4096);
    ASSERT_NE(0u, t.addr);
    ASSERT_OK(m_b->cmd("recv qp=0 mr=20 len=64 wr=60"));
    wc_t wc = post_wait(*m_a, "qp=0 op=SEND mr=1 len=64 wr=1");
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    std::vector<wc_t> r = poll(*m_b, "recv", 1);
    ASSERT_EQ(1u, r.size());
    ASSERT_EQ(IBV_WC_SUCCESS, r[0].status) << wc_status_name(r[0].status);

    ASSERT_OK(m_b->cmd("recv qp=0 mr=20 len=64 wr=61"));
    ASSERT_OK(m_b->cmd("dereg id=20"));
    wc = post_wait(*m_a, "qp=0 op=SEND mr=1 len=64 wr=2");
    EXPECT_EQ(IBV_WC_REM_OP_ERR, wc.status) << wc_status_name(wc.status);
    r = poll(*m_b, "recv", 1);
    ASSERT_EQ(1u, r.size());
    EXPECT_EQ(61u, r[0].wr_id);
    EXPECT_EQ(IBV_WC_LOC_PROT_ERR, r[0].status) << wc_status_name(r[0].status);
}

INSTANTIATE_TEST_SUITE_P(topo, softnic_access,
                         ::testing::Values(TOPO_SAME_HOST, TOPO_TWO_HOSTS),
                         topology_name);

} /* namespace */
