/*
 * softnic RC semantics across two processes (same host and two hosts):
 * placement at completion, ordering, fence, receive consumption with
 * byte_len/imm_data, RNR retry, and one-sidedness.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "softnic_harness.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>

using namespace softnic_test;

namespace
{

const size_t BIG = 4 << 20;

/* " pieces=" of consecutive pieces of the lengths first (odd ones), the
 * last piece making up total */
static std::string pieces(const std::vector<size_t> &first, size_t total)
{
    std::string out = " pieces=";
    for (size_t len : first) {
        out += std::to_string(len) + ",";
        total -= len;
    }
    return out + std::to_string(total);
}

class softnic_rc : public softnic_topo
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
        m_la = reg_mr(*m_a, 1, BIG);
        m_rb = reg_mr(*m_b, 1, BIG, "LW,RW,RR,RA", 4096);
        ASSERT_FALSE(HasFailure());
    }

    std::string remote(uint64_t off = 0) const
    {
        return m_rb.remote(off);
    }

    void send_recv(bool srq);
    void write_and_send_in_pieces(size_t len, const std::vector<size_t> &gather,
                                  const std::vector<size_t> &scatter);

    /* connect QP 0 of a and b, and complete one WRITE to remote(off): what
     * the test posts next finds the connection up */
    void connect_up(uint64_t off = 0)
    {
        ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
        ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 flags=S wr=100 len=64" +
                           remote(off)));
        ASSERT_EQ(1u, poll(*m_a, "send", 1).size());
    }

    /* a's send CQ gives the list posted as WRs first, first + 1, ... in
     * order, with the statuses in want */
    void expect_list(const std::vector<ibv_wc_status> &want, uint64_t first = 1)
    {
        std::vector<wc_t> wcs = poll(*m_a, "send", want.size());
        ASSERT_EQ(want.size(), wcs.size());
        for (size_t i = 0; i < want.size(); ++i) {
            EXPECT_EQ(first + i, wcs[i].wr_id);
            EXPECT_EQ(want[i], wcs[i].status)
                << "WR " << first + i << ": " << wc_status_name(wcs[i].status);
        }
    }

    peer_proc *m_a = nullptr, *m_b = nullptr;
    mr_t m_la, m_rb;
};

/* softnic_rc on one host only: for a test whose comment says why two hosts
 * could not tell what it names (no skipped two_hosts case, no peers spawned
 * for it) */
class softnic_rc_one_host : public softnic_rc
{
};

TEST_P(softnic_rc, write_completion_means_placed)
{
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    const size_t sizes[] = {1, 8, 4096, 65536, 1 << 20, BIG};
    uint32_t seed        = 100;
    for (size_t len : sizes) {
        for (int rep = 0; rep < 3; ++rep, ++seed) {
            std::string l = std::to_string(len), s = std::to_string(seed);
            ASSERT_OK(m_a->cmd("fill id=1 len=" + l + " seed=" + s));
            wc_t wc = post_wait(*m_a, "qp=0 op=WRITE mr=1 wr=" + s +
                                          " len=" + l + remote());
            ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
            EXPECT_EQ(IBV_WC_RDMA_WRITE, wc.opcode);
            /* the target looks right after the completion message */
            EXPECT_OK(m_b->cmd("check id=1 len=" + l + " seed=" + s))
                << "WRITE of " << len << " bytes completed before placement";
        }
    }
    EXPECT_OK(m_b->cmd("guardcheck id=1"));
}

TEST_P(softnic_rc, read_returns_target_data)
{
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    const size_t sizes[] = {8, 4096, 1 << 20, BIG};
    uint32_t seed        = 200;
    for (size_t len : sizes) {
        std::string l = std::to_string(len), s = std::to_string(seed++);
        ASSERT_OK(m_b->cmd("fill id=1 len=" + l + " seed=" + s));
        wc_t wc = post_wait(*m_a, "qp=0 op=READ mr=1 wr=1 len=" + l + remote());
        ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
        EXPECT_EQ(IBV_WC_RDMA_READ, wc.opcode);
        EXPECT_OK(m_a->cmd("check id=1 len=" + l + " seed=" + s));
    }
}

TEST_P(softnic_rc, send_after_writes_sees_writes)
{
    const int nw     = 16;
    const size_t len = 256 * 1024;
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    ASSERT_OK(m_b->cmd("mr id=2 len=4096"));
    ASSERT_OK(m_b->cmd("recv qp=0 mr=2 len=64 wr=77"));
    ASSERT_OK(m_a->cmd("fill id=1 len=" + std::to_string(len) +
                       " count=16 seed=300"));
    /* B waits for the receive and checks every WRITE's data at once */
    ASSERT_TRUE(m_b->send("poll cq=recv n=1 timeout=20000 check=1 id=1 len=" +
                          std::to_string(len) + " count=16 seed=300"));
    ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 flags= wr=1 count=16 len=" +
                       std::to_string(len) + " stride=" + std::to_string(len) +
                       " rstride=" + std::to_string(len) + remote()));
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 len=32 wr=100"));
    reply_t r = m_b->recv();
    ASSERT_TRUE(r.ok) << r.line;
    ASSERT_EQ(1u, r.wcs.size()) << r.line;
    EXPECT_EQ(IBV_WC_SUCCESS, r.wcs[0].status);
    EXPECT_EQ("ok", r.s("check"))
        << "the SEND was received before the " << nw << " WRITEs before it "
        << "were visible";
    std::vector<wc_t> wcs = poll(*m_a, "send", 1);
    ASSERT_EQ(1u, wcs.size());
    EXPECT_EQ(100u, wcs[0].wr_id);
    EXPECT_EQ(IBV_WC_SUCCESS, wcs[0].status);
}

/* Same host, WRITEs posted one call each in a tight loop are collected and
 * move in one CMA call when the stream stops (sn_int.h); across hosts they
 * simply go on TCP (small frames held back in the socket: "Request
 * coalescing"). The three tests below hold either way; the first runs
 * on one host only, where it can tell the flush from its absence. */

/* Streamed WRITEs land though the initiator then neither polls nor posts
 * again (it is blocked in read()), as on a NIC: the service thread's timer
 * pass flushes the batch within about a ms. Without that flush they wait
 * for a's next poll or post, past b's second of looking. The connection is
 * up first (connect_up): WRITEs posted while it comes up wait for it and
 * go when it is up, batch or no batch (the test then passed without the
 * flush whenever it won that race); a round whose stream a preemption
 * breaks at its last posts is flushed by them: hence 10 rounds. One host
 * only: across hosts the WRITEs go on TCP as held-back frames, which the
 * kernel's probe timer (one RTO, >= 200 ms) sends well within b's second
 * of looking, and b's answers to the stream's first two often sooner; that
 * push is told, on both topologies, by streamed_sends_arrive_without_poll,
 * whose window ends short of the probe timer. */
TEST_P(softnic_rc_one_host, streamed_writes_land_without_poll)
{
    ASSERT_NO_FATAL_FAILURE(connect_up());
    for (int round = 0; round < 10; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        const std::string data =
            "id=1 len=64 count=16 seed=" + std::to_string(700 + round);
        ASSERT_OK(m_a->cmd("fill " + data));
        ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 flags= wr=1 count=16 "
                           "each=1 len=64 stride=64 rstride=64" +
                           remote()));
        bool landed = false;
        auto t0     = std::chrono::steady_clock::now();
        while (!landed && (std::chrono::steady_clock::now() - t0 <
                           std::chrono::seconds(1))) {
            landed = m_b->cmd("check " + data).ok;
        }
        ASSERT_TRUE(landed) << "16 streamed WRITEs not placed within 1 s of "
                               "their posting";
    }
}

TEST_P(softnic_rc, send_after_streamed_writes_sees_writes)
{
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    ASSERT_OK(m_b->cmd("mr id=2 len=4096"));
    ASSERT_OK(m_b->cmd("recv qp=0 mr=2 len=64 wr=77"));
    ASSERT_OK(m_a->cmd("fill id=1 len=64 count=16 seed=800"));
    ASSERT_TRUE(m_b->send("poll cq=recv n=1 timeout=20000 check=1 id=1 "
                          "len=64 count=16 stride=128 seed=800"));
    /* the SEND follows the last WRITE's post at once, in the same stream */
    ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 flags= wr=1 count=16 each=1 "
                       "sendafter=1 len=64 stride=64 rstride=128" +
                       remote()));
    reply_t r = m_b->recv();
    ASSERT_TRUE(r.ok) << r.line;
    ASSERT_EQ(1u, r.wcs.size()) << r.line;
    EXPECT_EQ(IBV_WC_SUCCESS, r.wcs[0].status);
    EXPECT_EQ("ok", r.s("check"))
        << "the SEND was received before the streamed WRITEs before it "
           "were visible";
    std::vector<wc_t> wcs = poll(*m_a, "send", 1);
    ASSERT_EQ(1u, wcs.size());
    EXPECT_EQ(17u, wcs[0].wr_id);
    EXPECT_EQ(IBV_WC_SUCCESS, wcs[0].status);
}

TEST_P(softnic_rc, write_list_stops_at_failed_write)
{
    /* one post list; the third WRITE ends past the target region: the
     * first two complete, the third fails, the fourth is flushed (never
     * executed), in order */
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    ASSERT_OK(m_a->cmd("fill id=1 len=64 count=4 seed=900"));
    ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 flags=S wr=1 count=4 len=64 "
                       "stride=64 rstride=" +
                       std::to_string(BIG / 2 + 32) + remote()));
    ASSERT_NO_FATAL_FAILURE(
        expect_list({IBV_WC_SUCCESS, IBV_WC_SUCCESS, IBV_WC_REM_ACCESS_ERR,
                     IBV_WC_WR_FLUSH_ERR}));
    EXPECT_OK(m_b->cmd("check id=1 len=64 seed=900"));
    EXPECT_OK(m_b->cmd("check id=1 off=" + std::to_string(BIG / 2 + 32) +
                       " len=64 seed=901"));
    EXPECT_OK(m_b->cmd("guardcheck id=1"));
}

TEST_P(softnic_rc, writes_to_one_address_last_wins)
{
    const int n      = 64;
    const size_t len = 16384;
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    ASSERT_OK(m_a->cmd("fill id=1 len=" + std::to_string(len) +
                       " count=64 seed=500"));
    ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 flags=S siglast=1 wr=1 "
                       "count=64 len=" +
                       std::to_string(len) + " stride=" + std::to_string(len) +
                       " rstride=0" + remote()));
    std::vector<wc_t> wcs = poll(*m_a, "send", 1);
    ASSERT_EQ(1u, wcs.size());
    EXPECT_EQ((uint64_t)n, wcs[0].wr_id);
    EXPECT_EQ(IBV_WC_SUCCESS, wcs[0].status);
    EXPECT_OK(m_b->cmd("check id=1 len=" + std::to_string(len) +
                       " seed=" + std::to_string(500 + n - 1)))
        << "an earlier WRITE to the same address landed after the last one";
}

/* Same host, a batch's WRITE that the next one rewrites exactly is not
 * copied (sn_int.h): the target holds the last one's bytes, and each
 * completes, in order */
TEST_P(softnic_rc, streamed_writes_to_one_address_last_wins)
{
    const int n = 16;
    /* the stream starts on a connection that is up */
    ASSERT_NO_FATAL_FAILURE(connect_up());
    ASSERT_OK(m_a->cmd("fill id=1 len=64 count=16 seed=1000"));
    ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 flags=S wr=1 count=16 each=1 "
                       "len=64 stride=64 rstride=0" +
                       remote()));
    ASSERT_NO_FATAL_FAILURE(
        expect_list(std::vector<ibv_wc_status>(n, IBV_WC_SUCCESS)));
    EXPECT_OK(
        m_b->cmd("check id=1 len=64 seed=" + std::to_string(1000 + n - 1)))
        << "the target does not hold the last WRITE's bytes";
    EXPECT_OK(m_b->cmd("guardcheck id=1"));
}

/* ...and only a WRITE that passed its checks rewrites the one before it:
 * the last of three WRITEs to one address has a key the target never
 * issued, so the second one's bytes are the ones placed */
TEST_P(softnic_rc, write_list_to_one_address_keeps_write_before_failed_one)
{
    /* the list is posted on a connection that is up */
    ASSERT_NO_FATAL_FAILURE(connect_up());
    ASSERT_OK(m_a->cmd("fill id=1 len=64 count=3 seed=1100"));
    ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 flags=S wr=1 count=3 len=64 "
                       "stride=64 rstride=0 badrkey=3" +
                       remote()));
    ASSERT_NO_FATAL_FAILURE(
        expect_list({IBV_WC_SUCCESS, IBV_WC_SUCCESS, IBV_WC_REM_ACCESS_ERR}));
    EXPECT_OK(m_b->cmd("check id=1 len=64 seed=1101"))
        << "the second WRITE's bytes are not the ones placed";
}

/* A WRITE flushed behind a NAKed one never touches the target: of four
 * WRITEs in one list to four addresses, the third with a key the target
 * never issued, the fourth completes with WR_FLUSH_ERR and its bytes at
 * the target are the ones there before (on TCP it left on the wire right
 * behind the third; the responder executes nothing after a NAK, rule
 * SN_RULE_NAK_STOPS) */
TEST_P(softnic_rc, write_after_naked_write_in_list_not_placed)
{
    /* the list is posted on a connection that is up */
    ASSERT_NO_FATAL_FAILURE(connect_up(256));
    ASSERT_OK(m_b->cmd("fill id=1 len=64 count=4 seed=1200"));
    ASSERT_OK(m_a->cmd("fill id=1 len=64 count=4 seed=1300"));
    ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 flags=S wr=1 count=4 len=64 "
                       "stride=64 rstride=64 badrkey=3" +
                       remote()));
    ASSERT_NO_FATAL_FAILURE(
        expect_list({IBV_WC_SUCCESS, IBV_WC_SUCCESS, IBV_WC_REM_ACCESS_ERR,
                     IBV_WC_WR_FLUSH_ERR}));
    EXPECT_OK(m_b->cmd("check id=1 len=64 count=2 seed=1300"))
        << "the first two WRITEs' bytes are not placed";
    EXPECT_OK(m_b->cmd("check id=1 off=128 len=64 seed=1202"))
        << "the NAKed WRITE touched the target";
    /* the flushed WRITE ran nowhere: the target must not hold its bytes,
     * even after a while (on TCP it may still be on its way) */
    usleep(50000);
    EXPECT_OK(m_b->cmd("check id=1 off=192 len=64 seed=1203"))
        << "the WRITE that completed with WR_FLUSH_ERR was placed";
}

/* ...and an atomic flushed behind a NAKed one is not executed either (same
 * host they go through the shared-memory ring, where the target consumes
 * no slot behind a failed one; across hosts on TCP) */
TEST_P(softnic_rc, atomic_after_naked_atomic_in_list_not_executed)
{
    ASSERT_NO_FATAL_FAILURE(connect_up(256));
    for (int i = 0; i < 4; ++i) {
        ASSERT_OK(
            m_b->cmd("set64 id=1 off=" + std::to_string(8 * i) + " val=10"));
    }
    ASSERT_OK(m_a->cmd("post qp=0 op=FADD mr=1 flags=S wr=1 count=4 len=8 "
                       "stride=8 rstride=8 add=1 badrkey=3" +
                       remote()));
    ASSERT_NO_FATAL_FAILURE(
        expect_list({IBV_WC_SUCCESS, IBV_WC_SUCCESS, IBV_WC_REM_ACCESS_ERR,
                     IBV_WC_WR_FLUSH_ERR}));
    usleep(50000); /* as above: a wrong execution may still be on its way */
    const uint64_t after[] = {11, 11, 10, 10};
    for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(after[i],
                  m_b->cmd("get64 id=1 off=" + std::to_string(8 * i)).u("val"))
            << "FADD " << i + 1;
    }
    /* reset and connected again, the QP's atomics execute (a new
     * connection, a new ring: what stopped the old one is gone) */
    ASSERT_OK(m_a->cmd("modify qp=0 state=RESET"));
    ASSERT_OK(m_a->cmd("connect qp=0 addr=" + m_last_eb.addr +
                       " qpn=" + std::to_string(m_last_eb.qpn)));
    ASSERT_OK(m_a->cmd("post qp=0 op=FADD mr=1 flags=S wr=11 count=4 len=8 "
                       "stride=8 rstride=8 add=1" +
                       remote()));
    ASSERT_NO_FATAL_FAILURE(
        expect_list(std::vector<ibv_wc_status>(4, IBV_WC_SUCCESS), 11));
    for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(after[i] + 1,
                  m_b->cmd("get64 id=1 off=" + std::to_string(8 * i)).u("val"))
            << "after reconnect, FADD " << i + 1;
    }
}

/* A QP reconnects after a NAK took it to ERR: of four WRITEs in one list,
 * the third NAKed (a key b never issued), the fourth is flushed and never
 * touches b (rule SN_RULE_NAK_STOPS, as in
 * write_after_naked_write_in_list_not_placed); then both QPs go to RESET
 * and INIT->RTR->RTS again, to each other, and new WRITEs land both ways.
 * b's QP is reset too (atomic_after_naked_atomic_in_list_not_executed
 * reconnects a's alone): once QPs share a stream, both sides' channels of
 * the pair close and open again on it, and what the old ones carried must
 * not reach the new (step 5 of i18merge-design.md). Same host, CMA checks
 * the NAKed WRITE in a before the fourth runs, so only two_hosts tells the
 * rule; both run the reconnect. */
TEST_P(softnic_rc, qp_reconnects_after_reset)
{
    const std::string list = "post qp=0 op=WRITE mr=1 flags=S count=4 len=64 "
                             "stride=64 rstride=64";
    ASSERT_NO_FATAL_FAILURE(connect_up(256));
    ASSERT_OK(m_b->cmd("fill id=1 len=64 count=4 seed=1800"));
    ASSERT_OK(m_a->cmd("fill id=1 len=64 count=4 seed=1900"));
    ASSERT_OK(m_a->cmd(list + " wr=1 badrkey=3" + remote()));
    ASSERT_NO_FATAL_FAILURE(
        expect_list({IBV_WC_SUCCESS, IBV_WC_SUCCESS, IBV_WC_REM_ACCESS_ERR,
                     IBV_WC_WR_FLUSH_ERR}));
    usleep(50000); /* a wrong placing may still be on its way */
    EXPECT_OK(m_b->cmd("check id=1 off=128 len=64 count=2 seed=1802"))
        << "the NAKed or the flushed WRITE touched the target";

    const qp_ep_t ea = m_last_ea, eb = m_last_eb;
    ASSERT_OK(m_a->cmd("modify qp=0 state=RESET"));
    ASSERT_OK(m_b->cmd("modify qp=0 state=RESET"));
    ASSERT_OK(m_a->cmd("connect qp=0 addr=" + eb.addr +
                       " qpn=" + std::to_string(eb.qpn)));
    ASSERT_OK(m_b->cmd("connect qp=0 addr=" + ea.addr +
                       " qpn=" + std::to_string(ea.qpn)));
    ASSERT_OK(m_a->cmd("fill id=1 len=64 count=4 seed=2000"));
    ASSERT_OK(m_a->cmd(list + " wr=11" + remote()));
    ASSERT_NO_FATAL_FAILURE(
        expect_list(std::vector<ibv_wc_status>(4, IBV_WC_SUCCESS), 11));
    EXPECT_OK(m_b->cmd("check id=1 len=64 count=4 seed=2000"))
        << "the WRITEs after the reconnect did not land";
    ASSERT_OK(m_b->cmd("fill id=1 len=64 seed=2100"));
    wc_t wc =
        post_wait(*m_b, "qp=0 op=WRITE mr=1 wr=21 len=64" + m_la.remote());
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    EXPECT_OK(m_a->cmd("check id=1 len=64 seed=2100"))
        << "b's WRITE after the reconnect did not land";
}

/* ...and a READ flushed behind a NAKed one fetches nothing: of four READs
 * in one list, the third with a key the target never issued, the fourth
 * completes with WR_FLUSH_ERR and its local bytes are the ones there
 * before (same host CMA checks each READ in the initiator; across hosts
 * the responder sends no data after the NAK, rule SN_RULE_NAK_STOPS) */
TEST_P(softnic_rc, read_after_naked_read_in_list_not_fetched)
{
    ASSERT_NO_FATAL_FAILURE(connect_up(256));
    ASSERT_OK(m_b->cmd("fill id=1 len=64 count=4 seed=1400"));
    ASSERT_OK(m_a->cmd("fill id=1 len=64 count=4 seed=1500"));
    ASSERT_OK(m_a->cmd("post qp=0 op=READ mr=1 flags=S wr=1 count=4 len=64 "
                       "stride=64 rstride=64 badrkey=3" +
                       remote()));
    ASSERT_NO_FATAL_FAILURE(
        expect_list({IBV_WC_SUCCESS, IBV_WC_SUCCESS, IBV_WC_REM_ACCESS_ERR,
                     IBV_WC_WR_FLUSH_ERR}));
    EXPECT_OK(m_a->cmd("check id=1 len=64 count=2 seed=1400"))
        << "the first two READs' bytes are not fetched";
    usleep(50000); /* as above: a wrong answer may still be on its way */
    EXPECT_OK(m_a->cmd("check id=1 off=128 len=64 count=2 seed=1502"))
        << "the NAKed or the flushed READ wrote local memory";
}

/* ...and a SEND flushed behind a failed receive is not received: of six
 * SENDs in one list (same host they go into one run of ring slots), the
 * second is longer than its receive, which completes LOC_LEN_ERR and
 * takes the target QP to ERR; SEND 2 gets the NAK's REM_INV_REQ_ERR and
 * SENDs 3 to 6 complete with WR_FLUSH_ERR, their receives flushed, their
 * buffers as they were (same host the ring's consumer takes no slot behind
 * a failed one and the initiator reaps none, rule SN_RULE_NAK_STOPS).
 * Same host only: between two hosts this case passed with
 * SN_RULE_NAK_STOPS or SN_RULE_TCP_ERR_SILENT taken out, so it judges
 * nothing there (the TCP path's own cases judge those rules). */
TEST_P(softnic_rc, send_after_failed_receive_in_list_not_received)
{
    const int n = 6;
    if (two_hosts()) {
        GTEST_SKIP() << "the rule it judges lives on the same-host ring";
    }
    ASSERT_NO_FATAL_FAILURE(connect_up());
    ASSERT_OK(m_b->cmd("mr id=2 len=4096 guard=4096"));
    ASSERT_OK(m_b->cmd("fill id=2 len=256 count=6 seed=1600"));
    ASSERT_OK(m_a->cmd("fill id=1 len=128 count=6 seed=1700"));
    /* receive j at 256 * (j - 1), 256 bytes, but receive 2 has 64 */
    ASSERT_OK(m_b->cmd("recv qp=0 mr=2 off=0 len=256 wr=1"));
    ASSERT_OK(m_b->cmd("recv qp=0 mr=2 off=256 len=64 wr=2"));
    ASSERT_OK(
        m_b->cmd("recv qp=0 mr=2 off=512 len=256 wr=3 count=4 stride=256"));
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 flags=S wr=1 count=6 len=128 "
                       "stride=128"));
    ASSERT_NO_FATAL_FAILURE(expect_list(
        {IBV_WC_SUCCESS, IBV_WC_REM_INV_REQ_ERR, IBV_WC_WR_FLUSH_ERR,
         IBV_WC_WR_FLUSH_ERR, IBV_WC_WR_FLUSH_ERR, IBV_WC_WR_FLUSH_ERR}));
    std::vector<wc_t> r = poll(*m_b, "recv", n);
    ASSERT_EQ((size_t)n, r.size());
    for (int i = 0; i < n; ++i) {
        ibv_wc_status want = (i == 0)   ? IBV_WC_SUCCESS
                             : (i == 1) ? IBV_WC_LOC_LEN_ERR
                                        : IBV_WC_WR_FLUSH_ERR;
        EXPECT_EQ((uint64_t)i + 1, r[i].wr_id) << "receives in order";
        EXPECT_EQ(want, r[i].status)
            << "receive " << i + 1 << ": " << wc_status_name(r[i].status);
    }
    EXPECT_EQ(128u, r[0].byte_len);
    EXPECT_OK(m_b->cmd("check id=2 len=128 seed=1700"))
        << "SEND 1's bytes are not in its receive";
    usleep(50000); /* as above: a wrong placing may still be on its way */
    EXPECT_OK(m_b->cmd("check id=2 off=512 len=256 count=4 seed=1602"))
        << "a SEND behind the failed receive was placed";
    EXPECT_OK(m_b->cmd("guardcheck id=2"));
}

/* IBV_SEND_FENCE: a WRITE whose source is what a READ before it fetches
 * waits for the READ's data, so it carries that data (without the fence
 * it would gather its source while the READ is still in flight: on TCP
 * the WRITE's frame follows the READ request at once). Same host, the READ
 * runs by CMA before the post returns, so only two_hosts can tell. */
TEST_P(softnic_rc, fenced_write_sends_what_read_fetched)
{
    const size_t len = 1 << 20;
    std::string l    = std::to_string(len);
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    for (int rep = 0; rep < 5; ++rep) {
        std::string so = std::to_string(600 + 2 * rep);
        std::string sn = std::to_string(601 + 2 * rep);
        /* remote [0, len): the data; local [0, len): stale until read */
        ASSERT_OK(m_b->cmd("fill id=1 len=" + l + " seed=" + so));
        ASSERT_OK(m_b->cmd("fill id=1 off=" + l + " len=" + l + " seed=" + sn));
        ASSERT_OK(m_a->cmd("fill id=1 len=" + l + " seed=" + sn));
        ASSERT_OK(m_a->cmd("post qp=0 op=READ mr=1 off=0 len=" + l + " wr=1" +
                           remote()));
        ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 flags=SF off=0 len=" + l +
                           " wr=2" + remote(len)));
        std::vector<wc_t> wcs = poll(*m_a, "send", 2);
        ASSERT_EQ(2u, wcs.size());
        EXPECT_EQ(1u, wcs[0].wr_id);
        EXPECT_EQ(2u, wcs[1].wr_id);
        EXPECT_EQ(IBV_WC_SUCCESS, wcs[0].status);
        EXPECT_EQ(IBV_WC_SUCCESS, wcs[1].status);
        EXPECT_OK(m_a->cmd("check id=1 off=0 len=" + l + " seed=" + so))
            << "the READ did not return the target's data";
        EXPECT_OK(m_b->cmd("check id=1 off=" + l + " len=" + l + " seed=" + so))
            << "the fenced WRITE did not wait for the READ before it";
    }
}

/* IBV_SEND_FENCE behind an atomic: a SEND whose source is the buffer a
 * fetch-and-add before it returns the original value into carries that
 * value. Same host, the atomic goes through the shared-memory ring and,
 * without the fence, the SEND would be copied into the next slot at once,
 * before the target's consumer ran the atomic; two hosts: TCP, as above. */
TEST_P(softnic_rc, fenced_send_sends_what_atomic_fetched)
{
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    for (int rep = 0; rep < 5; ++rep) {
        const uint64_t old = 1000 + rep;
        SCOPED_TRACE("rep " + std::to_string(rep));
        ASSERT_OK(m_b->cmd("set64 id=1 off=8 val=" + std::to_string(old)));
        ASSERT_OK(m_a->cmd("set64 id=1 off=0 val=7")); /* stale */
        ASSERT_OK(m_b->cmd("recv qp=0 mr=1 off=64 len=8 wr=" +
                           std::to_string(10 + rep)));
        ASSERT_OK(m_a->cmd("post qp=0 op=FADD mr=1 len=8 add=1 wr=1 "
                           "sendafter=1 sendflags=SF" +
                           remote(8)));
        std::vector<wc_t> wcs = poll(*m_a, "send", 2);
        ASSERT_EQ(2u, wcs.size());
        EXPECT_EQ(IBV_WC_SUCCESS, wcs[0].status);
        EXPECT_EQ(IBV_WC_SUCCESS, wcs[1].status);
        ASSERT_EQ(1u, poll(*m_b, "recv", 1).size());
        EXPECT_EQ(old, m_a->cmd("get64 id=1 off=0").u("val"));
        EXPECT_EQ(old, m_b->cmd("get64 id=1 off=64").u("val"))
            << "the fenced SEND did not wait for the atomic before it";
    }
}

/* Operations of one QP are placed in order, whichever path each takes
 * (same-host CMA, shared-memory ring, TCP): a READ sees the WRITEs posted
 * before it, including WRITEs queued behind an atomic or a SEND. */
TEST_P(softnic_rc, mixed_operations_placed_in_order)
{
    const size_t len = 65536;
    std::string l    = std::to_string(len);
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    ASSERT_OK(m_b->cmd("mr id=2 len=65536"));
    ASSERT_OK(m_b->cmd("recv qp=0 mr=2 len=64 wr=0 count=20 stride=64"));
    ASSERT_OK(m_b->cmd("set64 id=1 off=1048576 val=0"));
    for (int i = 0; i < 20; ++i) {
        std::string s = std::to_string(1000 + i);
        /* local layout: [0, len) WRITE source, [len, 2 len) READ target */
        ASSERT_OK(m_a->cmd("fill id=1 len=" + l + " seed=" + s));
        std::string after = (i % 2) ? "SEND mr=1 len=64"
                                    : "FADD mr=1 "
                                      "off=2097152 len=8";
        std::string raddr = (i % 2) ? "" : remote(1048576);
        ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 flags= len=" + l +
                           " wr=" + std::to_string(4 * i) + remote()));
        ASSERT_OK(m_a->cmd("post qp=0 op=" + after +
                           " flags= wr=" + std::to_string(4 * i + 1) + raddr));
        ASSERT_OK(m_a->cmd("post qp=0 op=WRITE mr=1 flags= len=" + l +
                           " wr=" + std::to_string(4 * i + 2) + remote()));
        ASSERT_OK(m_a->cmd("post qp=0 op=READ mr=1 off=" + l + " len=" + l +
                           " wr=" + std::to_string(4 * i + 3) + remote()));
        std::vector<wc_t> wcs = poll(*m_a, "send", 1);
        ASSERT_EQ(1u, wcs.size());
        EXPECT_EQ((uint64_t)4 * i + 3, wcs[0].wr_id);
        EXPECT_EQ(IBV_WC_SUCCESS, wcs[0].status)
            << wc_status_name(wcs[0].status);
        EXPECT_OK(m_a->cmd("check id=1 off=" + l + " len=" + l + " seed=" + s))
            << "the READ did not see the WRITEs posted before it (round " << i
            << ")";
    }
    EXPECT_EQ(10u, m_b->cmd("get64 id=1 off=1048576").u("val"));
    std::vector<wc_t> r = poll(*m_b, "recv", 10);
    ASSERT_EQ(10u, r.size());
    for (size_t i = 0; i < r.size(); ++i) {
        EXPECT_EQ(i, r[i].wr_id);
    }
}

/* Completions come in posting order across opcodes. */
TEST_P(softnic_rc, completions_in_posting_order)
{
    const int n = 200;
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    ASSERT_OK(m_b->cmd("mr id=2 len=65536"));
    ASSERT_OK(m_b->cmd("recv qp=0 mr=2 len=256 wr=0 count=80 stride=256"));
    const char *ops[] = {"WRITE len=4096", "READ off=65536 len=4096",
                         "FADD off=131072 len=8", "SEND len=100",
                         "WRITE_IMM len=32 imm=5"};
    int nrecv         = 0;
    for (int i = 0; i < n; ++i) {
        int k = i % 5;
        nrecv += (k >= 3);
        std::string raddr = (k == 2) ? remote(1048576) : remote(8192);
        ASSERT_OK(m_a->cmd(std::string("post qp=0 mr=1 op=") + ops[k] +
                           " wr=" + std::to_string(i) + raddr));
    }
    std::vector<wc_t> wcs = poll(*m_a, "send", n);
    ASSERT_EQ((size_t)n, wcs.size());
    for (int i = 0; i < n; ++i) {
        EXPECT_EQ((uint64_t)i, wcs[i].wr_id);
        EXPECT_EQ(IBV_WC_SUCCESS, wcs[i].status)
            << "wr " << i << ": " << wc_status_name(wcs[i].status);
    }
    std::vector<wc_t> r = poll(*m_b, "recv", nrecv);
    ASSERT_EQ((size_t)nrecv, r.size());
    for (int i = 0; i < nrecv; ++i) {
        EXPECT_EQ((uint64_t)i, r[i].wr_id);
        EXPECT_EQ(IBV_WC_SUCCESS, r[i].status);
    }
    EXPECT_EQ((uint64_t)n / 5, m_b->cmd("get64 id=1 off=1048576").u("val"));
}

/* SENDs are received in posting order whichever path each takes: on one
 * host SENDs of up to 8 KB use the shared-memory ring and larger ones TCP,
 * as does WRITE_WITH_IMM; interleaved, each receive still gets the next
 * message, whole. */
TEST_P(softnic_rc, sends_over_ring_and_tcp_received_in_order)
{
    const size_t lens[] = {100, 20000, 3000, 8, 65536, 64, 8000, 9000};
    const int n = 48, slot = 65536;
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    ASSERT_OK(m_b->cmd("mr id=2 len=" + std::to_string(n * slot)));
    ASSERT_OK(m_b->cmd("recv qp=0 mr=2 wr=0 len=" + std::to_string(slot) +
                       " stride=" + std::to_string(slot) +
                       " count=" + std::to_string(n)));
    for (int i = 0; i < n; ++i) {
        std::string off = " off=" + std::to_string(i * slot);
        std::string l   = " len=" + std::to_string(lens[i % 8]);
        ASSERT_OK(m_a->cmd("fill id=1" + off + l +
                           " seed=" + std::to_string(3000 + i)));
    }
    for (int i = 0; i < n; ++i) {
        std::string off = " off=" + std::to_string(i * slot);
        std::string l   = " len=" + std::to_string(lens[i % 8]);
        /* every fifth a WRITE_WITH_IMM to the same offset at the target */
        std::string op    = (i % 5 == 4) ? "WRITE_IMM imm=9" + remote(i * slot)
                                         : std::string("SEND");
        std::string flags = (i == n - 1) ? " flags=S" : " flags=";
        ASSERT_OK(m_a->cmd("post qp=0 mr=1 op=" + op + off + l + flags +
                           " wr=" + std::to_string(i)));
    }
    std::vector<wc_t> r = poll(*m_b, "recv", n);
    ASSERT_EQ((size_t)n, r.size());
    for (int i = 0; i < n; ++i) {
        SCOPED_TRACE("receive " + std::to_string(i));
        bool imm = (i % 5 == 4);
        EXPECT_EQ((uint64_t)i, r[i].wr_id) << "receives consumed in order";
        EXPECT_EQ(IBV_WC_SUCCESS, r[i].status) << wc_status_name(r[i].status);
        EXPECT_EQ(imm ? IBV_WC_RECV_RDMA_WITH_IMM : IBV_WC_RECV, r[i].opcode);
        EXPECT_EQ(lens[i % 8], r[i].byte_len)
            << "the receive got another message";
        std::string where = imm ? "id=1" : "id=2";
        EXPECT_OK(m_b->cmd(
            "check " + where + " off=" + std::to_string(i * slot) + " len=" +
            std::to_string(lens[i % 8]) + " seed=" + std::to_string(3000 + i)));
    }
    std::vector<wc_t> s = poll(*m_a, "send", 1);
    ASSERT_EQ(1u, s.size()) << "the last WR is signaled";
    EXPECT_EQ((uint64_t)n - 1, s[0].wr_id);
    EXPECT_EQ(IBV_WC_SUCCESS, s[0].status) << wc_status_name(s[0].status);
}

void softnic_rc::send_recv(bool srq)
{
    if (srq) {
        ASSERT_OK(m_b->cmd("srq max_wr=64"));
    }
    ASSERT_NO_FATAL_FAILURE(
        connect(*m_a, 0, *m_b, 0, conn_opts(), conn_opts(), srq));
    ASSERT_OK(m_b->cmd("mr id=2 len=65536"));
    ASSERT_OK(m_b->cmd(std::string("recv qp=0 mr=2 len=1024 wr=10 count=5 ") +
                       (srq ? "srq=1" : "")));
    ASSERT_OK(m_a->cmd("fill id=1 off=0 len=100 seed=700"));
    ASSERT_OK(m_a->cmd("fill id=1 off=4096 len=200 seed=701"));
    ASSERT_OK(m_a->cmd("fill id=1 off=8192 len=64 seed=702"));
    ASSERT_OK(m_a->cmd("fill id=1 off=12288 len=40 seed=703"));
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 off=0 len=100 wr=1"));
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND_IMM mr=1 off=4096 len=200 wr=2 "
                       "imm=305419896"));
    ASSERT_OK(m_a->cmd("post qp=0 op=WRITE_IMM mr=1 off=8192 len=64 wr=3 "
                       "imm=51966" +
                       remote(128)));
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 off=12288 len=40 wr=4 "
                       "flags=SI"));
    ASSERT_OK(
        m_a->cmd("post qp=0 op=WRITE_IMM len=0 nsge=0 wr=5 imm=7" + remote()));

    std::vector<wc_t> s = poll(*m_a, "send", 5);
    ASSERT_EQ(5u, s.size());
    const int sops[] = {IBV_WC_SEND, IBV_WC_SEND, IBV_WC_RDMA_WRITE,
                        IBV_WC_SEND, IBV_WC_RDMA_WRITE};
    for (int i = 0; i < 5; ++i) {
        EXPECT_EQ((uint64_t)i + 1, s[i].wr_id);
        EXPECT_EQ(IBV_WC_SUCCESS, s[i].status) << wc_status_name(s[i].status);
        EXPECT_EQ(sops[i], s[i].opcode) << "send completion " << i;
    }

    std::vector<wc_t> r = poll(*m_b, "recv", 5);
    ASSERT_EQ(5u, r.size());
    struct {
        int opcode;
        uint32_t len;
        bool imm;
        uint32_t imm_val;
    } want[] = {
        {IBV_WC_RECV, 100, false, 0},
        {IBV_WC_RECV, 200, true, 305419896},
        {IBV_WC_RECV_RDMA_WITH_IMM, 64, true, 51966},
        {IBV_WC_RECV, 40, false, 0},
        {IBV_WC_RECV_RDMA_WITH_IMM, 0, true, 7},
    };
    for (int i = 0; i < 5; ++i) {
        SCOPED_TRACE("receive completion " + std::to_string(i));
        EXPECT_EQ((uint64_t)10 + i, r[i].wr_id) << "receives consumed in order";
        EXPECT_EQ(IBV_WC_SUCCESS, r[i].status) << wc_status_name(r[i].status);
        EXPECT_EQ(want[i].opcode, r[i].opcode);
        EXPECT_EQ(want[i].len, r[i].byte_len);
        EXPECT_EQ(want[i].imm, !!(r[i].flags & IBV_WC_WITH_IMM));
        if (want[i].imm) {
            EXPECT_EQ(htonl(want[i].imm_val), r[i].imm);
        }
    }
    EXPECT_OK(m_b->cmd("check id=2 off=0 len=100 seed=700"));
    EXPECT_OK(m_b->cmd("check id=2 off=1024 len=200 seed=701"));
    EXPECT_OK(m_b->cmd("check id=1 off=128 len=64 seed=702"));
    EXPECT_OK(m_b->cmd("check id=2 off=3072 len=40 seed=703"));
    /* the WRITE_WITH_IMM data went to its address, not to the receive */
    reply_t g = m_b->cmd("get64 id=2 off=2048");
    EXPECT_EQ(0u, g.u("val"));
}

TEST_P(softnic_rc, send_and_write_imm_consume_qp_receives)
{
    send_recv(false);
}

TEST_P(softnic_rc, send_and_write_imm_consume_srq_receives)
{
    send_recv(true);
}

TEST_P(softnic_rc, send_larger_than_receive_fails)
{
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    ASSERT_OK(m_b->cmd("mr id=2 len=4096 guard=4096"));
    ASSERT_OK(m_b->cmd("fill id=2 seed=3"));
    ASSERT_OK(m_b->cmd("recv qp=0 mr=2 len=64 wr=1"));
    wc_t wc = post_wait(*m_a, "qp=0 op=SEND mr=1 len=128 wr=1");
    EXPECT_NE(IBV_WC_SUCCESS, wc.status);
    std::vector<wc_t> r = poll(*m_b, "recv", 1);
    ASSERT_EQ(1u, r.size());
    EXPECT_EQ(IBV_WC_LOC_LEN_ERR, r[0].status) << wc_status_name(r[0].status);
    EXPECT_OK(m_b->cmd("check id=2 off=64 pos=64 len=4032 seed=3"));
    EXPECT_OK(m_b->cmd("guardcheck id=2"));
}

TEST_P(softnic_rc, rnr_retry_exceeded)
{
    conn_opts oa, ob;
    oa.rnr_retry = 1;
    ob.min_rnr   = 1; /* 0.01 ms */
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0, oa, ob));
    wc_t wc = post_wait(*m_a, "qp=0 op=SEND mr=1 len=64 wr=1");
    EXPECT_EQ(IBV_WC_RNR_RETRY_EXC_ERR, wc.status) << wc_status_name(wc.status);
    reply_t st = m_a->cmd("query qp=0");
    EXPECT_EQ(IBV_QPS_ERR, (int)st.u("state")) << st.line;
}

TEST_P(softnic_rc, rnr_retry_then_receive_posted)
{
    /* rnr_retry 7 is infinite: with a 0.01 ms RNR timer any finite count
     * would long be exhausted after 1 s without a completion */
    conn_opts ob;
    ob.min_rnr = 1;
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0, conn_opts(), ob));
    ASSERT_OK(m_a->cmd("fill id=1 len=512 seed=800"));
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 len=512 wr=1"));
    std::vector<wc_t> wcs = poll(*m_a, "send", 1, 1000);
    EXPECT_EQ(0u, wcs.size())
        << "SEND with no receive completed (status "
        << (wcs.empty() ? "" : wc_status_name(wcs[0].status))
        << ") although rnr_retry=7";
    ASSERT_OK(m_b->cmd("mr id=2 len=4096"));
    ASSERT_OK(m_b->cmd("recv qp=0 mr=2 len=4096 wr=9"));
    wcs = poll(*m_a, "send", 1);
    ASSERT_EQ(1u, wcs.size());
    EXPECT_EQ(IBV_WC_SUCCESS, wcs[0].status) << wc_status_name(wcs[0].status);
    std::vector<wc_t> r = poll(*m_b, "recv", 1);
    ASSERT_EQ(1u, r.size());
    EXPECT_EQ(IBV_WC_SUCCESS, r[0].status);
    EXPECT_EQ(512u, r[0].byte_len);
    EXPECT_OK(m_b->cmd("check id=2 len=512 seed=800"));
}

/* Same with a SEND longer than a frame (3 MiB: on TCP its request frame
 * and two REQ_DATA frames, sn_wire.h): every RNR round trip resends (or
 * drains) its frames; after the receive is posted the SEND must still be
 * resent whole and finish promptly. */
TEST_P(softnic_rc, rnr_retry_large_send_then_receive_posted)
{
    conn_opts ob;
    ob.min_rnr = 14; /* 0.24 ms */
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0, conn_opts(), ob));
    ASSERT_OK(m_a->cmd("fill id=1 len=3145728 seed=801"));
    ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 len=3145728 wr=1"));
    std::vector<wc_t> wcs = poll(*m_a, "send", 1, 500);
    EXPECT_EQ(0u, wcs.size())
        << "completed without a receive, status "
        << (wcs.empty() ? "" : wc_status_name(wcs[0].status));
    ASSERT_OK(m_b->cmd("mr id=2 len=3145728"));
    ASSERT_OK(m_b->cmd("recv qp=0 mr=2 len=3145728 wr=9"));
    reply_t r = m_a->cmd("poll cq=send n=1 timeout=10000");
    ASSERT_EQ(1u, r.wcs.size()) << r.line;
    EXPECT_EQ(IBV_WC_SUCCESS, r.wcs[0].status)
        << wc_status_name(r.wcs[0].status);
    EXPECT_LT(strtod(r.s("ms").c_str(), NULL), 2000.0)
        << "a 3 MiB SEND took too long to complete once a receive was "
           "posted";
    std::vector<wc_t> rr = poll(*m_b, "recv", 1);
    ASSERT_EQ(1u, rr.size());
    EXPECT_EQ(3145728u, rr[0].byte_len);
    EXPECT_OK(m_b->cmd("check id=2 len=3145728 seed=801"));
}

/* a WRITE and then a SEND of len bytes from a's MR 3, gathered from pieces of
 * the lengths gather (then the rest), into b's MR 3 (the SEND scattered into
 * pieces of the lengths scatter, then the rest); both arrive whole */
void softnic_rc::write_and_send_in_pieces(size_t len,
                                          const std::vector<size_t> &gather,
                                          const std::vector<size_t> &scatter)
{
    const std::string ls = std::to_string(len);
    const std::string g  = pieces(gather, len);
    reg_mr(*m_a, 3, len + 4096);
    mr_t lb = reg_mr(*m_b, 3, len + 4096);
    ASSERT_FALSE(HasFailure());
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));

    ASSERT_OK(m_a->cmd("fill id=3 len=" + ls + " seed=811"));
    wc_t wc =
        post_wait(*m_a, "qp=0 op=WRITE mr=3 wr=1" + g + lb.remote(), 30000);
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    EXPECT_OK(m_b->cmd("check id=3 len=" + ls + " seed=811"));

    ASSERT_OK(m_b->cmd("recv qp=0 mr=3 wr=9" + pieces(scatter, len)));
    ASSERT_OK(m_a->cmd("fill id=3 len=" + ls + " seed=812"));
    wc = post_wait(*m_a, "qp=0 op=SEND mr=3 wr=2" + g, 30000);
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    std::vector<wc_t> rr = poll(*m_b, "recv", 1);
    ASSERT_EQ(1u, rr.size());
    EXPECT_EQ(IBV_WC_SUCCESS, rr[0].status) << wc_status_name(rr[0].status);
    EXPECT_EQ(len, rr[0].byte_len);
    EXPECT_OK(m_b->cmd("check id=3 len=" + ls + " seed=812"));
}

/* A WRITE and a SEND of 5 MiB + 3 bytes: on TCP the request frame and five
 * REQ_DATA frames (SN_FRAME_MAX, 1 MiB, sn_wire.h), whose bounds fall
 * inside gather and scatter pieces of odd lengths, arrive whole */
TEST_P(softnic_rc, write_and_send_larger_than_a_frame)
{
    write_and_send_in_pieces((5 << 20) + 3, {1000003, 7, 2097152, 1048573},
                             {3, 1048579, 3145721, 1000001});
}

/* The same within one frame (on TCP the request frame's gather list, on one
 * host the ring or CMA): 70001 bytes in pieces of odd lengths */
TEST_P(softnic_rc, write_and_send_of_pieces_within_a_frame)
{
    write_and_send_in_pieces(70001, {1, 65535, 7}, {3, 4093, 60001});
}

/* One-sided: B never calls the library while A's READ/WRITE/atomics
 * complete; first while B is blocked in read() on its command socket
 * (B is sent nothing), then while B spins in a busy loop. */
TEST_P(softnic_rc, one_sided_target_blocked_or_busy)
{
    ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
    ASSERT_OK(m_b->cmd("fill id=1 off=8192 len=4096 seed=900"));
    ASSERT_OK(m_b->cmd("set64 id=1 off=0 val=40"));

    for (int phase = 0; phase < 2; ++phase) {
        SCOPED_TRACE(phase ? "target busy-looping" : "target blocked in read");
        if (phase == 1) {
            ASSERT_OK(m_b->cmd("spin"));
        }
        uint32_t seed = 910 + phase;
        std::string s = std::to_string(seed);
        ASSERT_OK(m_a->cmd("fill id=1 off=65536 len=65536 seed=" + s));
        wc_t wc = post_wait(*m_a, "qp=0 op=WRITE mr=1 off=65536 len=65536 "
                                  "wr=1" +
                                      remote(65536));
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
        wc = post_wait(*m_a, "qp=0 op=READ mr=1 off=131072 len=4096 wr=2" +
                                 remote(8192));
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
        EXPECT_OK(m_a->cmd("check id=1 off=131072 len=4096 seed=900"));
        wc = post_wait(*m_a,
                       "qp=0 op=FADD mr=1 off=0 len=8 add=2 wr=3" + remote(0));
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
        reply_t g = m_a->cmd("get64 id=1 off=0");
        EXPECT_EQ(40u + 2 * phase, g.u("val")) << "fetch-add result";
        wc = post_wait(*m_a, "qp=0 op=CAS mr=1 off=0 len=8 cmp=" +
                                 std::to_string(42 + 2 * phase) +
                                 " swap=" + std::to_string(42 + 2 * phase) +
                                 " wr=4" + remote(0));
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
        /* B wakes up (ends the spin) only now and checks */
        EXPECT_OK(m_b->cmd("ping"));
        EXPECT_OK(m_b->cmd("check id=1 off=65536 len=65536 seed=" + s));
    }
    reply_t g = m_b->cmd("get64 id=1 off=0");
    EXPECT_EQ(44u, g.u("val"));
}

/*
 * A SEND completes before anything its peer sent after receiving it: on a
 * NIC the responder's ACK travels ahead of its next request on the one
 * link. Programs that sleep on one channel for both CQs rely on it
 * (perftest's latency tests with -e take the first event after a SEND for
 * the SEND's and read an uninitialised ibv_wc when its CQ is empty). a
 * sleeps on its channel, b answers every SEND at once; the first event
 * after each SEND must be the send CQ's. Over TCP the ACK and the answer
 * come on two connections, read in either order unless softnic orders
 * them (without the rule some rounds in a few hundred fail).
 */
class softnic_rc_answer : public softnic_topo
{
  protected:
    void ask_and_answer(const std::string &open_args, int n, size_t ask_len = 8,
                        size_t answer_len = 8, bool spin = false);
    /* a and b with everything on TCP (no_cma on one host, as between two
     * hosts), each with MR 1 of the length given */
    void spawn_on_tcp(peer_proc **a, peer_proc **b, size_t a_len, size_t b_len);
    /* one round of streamed_sends_arrive_without_poll; in_time: the round
     * told (b answered soon after its window's end, or got them all) */
    void stream_sends(peer_proc &a, peer_proc &b, bool *in_time);
    /* one round of poller_reads_beside_the_hot_connection */
    void sends_beside_the_hot_connection(peer_proc &a, peer_proc &b);
    /* a transport budget of 3 attempts of 33.5 ms */
    static conn_opts short_budget();
};

conn_opts softnic_rc_answer::short_budget()
{
    conn_opts o;
    o.timeout = 13; /* 33.5 ms */
    o.retry   = 2;
    return o;
}

void softnic_rc_answer::spawn_on_tcp(peer_proc **a, peer_proc **b, size_t a_len,
                                     size_t b_len)
{
    const std::string args = two_hosts() ? "" : "no_cma=1";
    *a                     = &spawn('a', MNT_SAME, args);
    *b                     = &spawn('b', MNT_SAME, args);
    ASSERT_FALSE(HasFailure());
    reg_mr(**a, 1, a_len);
    reg_mr(**b, 1, b_len);
}

void softnic_rc_answer::ask_and_answer(const std::string &open_args, int n,
                                       size_t ask_len, size_t answer_len,
                                       bool spin)
{
    const size_t len = std::max(ask_len, answer_len);
    peer_proc &a     = spawn('a', MNT_SAME, "channel=1 " + open_args);
    peer_proc &b     = spawn('b', MNT_SAME, open_args);
    ASSERT_FALSE(HasFailure());
    reg_mr(a, 1, std::max(len, (size_t)4096));
    reg_mr(b, 1, std::max(len, (size_t)4096));
    ASSERT_FALSE(HasFailure());
    ASSERT_NO_FATAL_FAILURE(connect(a, 0, b, 0));
    const std::string rq =
        "recv qp=0 mr=1 len=" + std::to_string(len) +
        " stride=0 count=" + std::to_string(std::min(n, 256));
    ASSERT_OK(a.cmd(rq));
    ASSERT_OK(b.cmd(rq));
    std::string args = "qp=0 mr=1 n=" + std::to_string(n) +
                       " ask_len=" + std::to_string(ask_len) +
                       " answer_len=" + std::to_string(answer_len) +
                       (spin ? " spin=1" : "");
    ASSERT_TRUE(b.send("pingpong role=answer " + args));
    reply_t ra = a.cmd("pingpong role=ask " + args, 120000);
    reply_t rb = b.recv(120000);
    ASSERT_OK(ra);
    EXPECT_OK(rb);
    EXPECT_EQ(0u, ra.u("answer_first"))
        << "in " << ra.u("answer_first") << " of " << n
        << " rounds the answer completed before the SEND it answers";
}

/* same host: the SEND ring; two hosts: TCP */
TEST_P(softnic_rc_answer, send_completes_before_the_answer_to_it)
{
    ask_and_answer("", 400);
}

/* same host: SENDs on TCP (CMA for RDMA); two hosts: as above */
TEST_P(softnic_rc_answer, send_completes_before_the_answer_to_it_no_ring)
{
    if (two_hosts()) {
        GTEST_SKIP() << "two hosts use TCP anyway";
    }
    ask_and_answer("no_ring=1", 400);
}

/* same host: everything on TCP */
TEST_P(softnic_rc_answer, send_completes_before_the_answer_to_it_no_cma)
{
    if (two_hosts()) {
        GTEST_SKIP() << "two hosts use TCP anyway";
    }
    ask_and_answer("no_cma=1", 400);
}

/* A SEND posted behind a READ still completes before the answer to it
 * (rule SN_RULE_TCP_ACK_FIRST): b sends the READ's data and the SEND's
 * ACK on one connection, its answer on another (today) or, once QPs share
 * a stream, behind that ACK (the writer mark). The READ is unsignaled, so
 * the SEND's completion also waits for the READ's data. The processes are
 * frozen in turn (as in tcp_send_completes_before_ring_answer_both_waiting)
 * so that the READ's data, the ACK and the answer all wait when a runs
 * again, spinning on both CQs. The design's READ of 64 MiB is 1 MiB here:
 * more than a's frozen socket takes stops b's reading before the SEND.
 * Without the rule every run failed within 10 rounds: the answer is taken
 * before the ACK and the READ's data, and the ACK it carries, applied then,
 * closes the connection (it cannot end a READ), so the SEND never
 * completes. Same host: everything on TCP (no_cma). */
TEST_P(softnic_rc_answer, send_completes_before_the_answer_behind_a_read)
{
    const size_t read_len = 1 << 20;
    const int rounds      = 20;
    peer_proc *pa = NULL, *pb = NULL;
    ASSERT_NO_FATAL_FAILURE(spawn_on_tcp(&pa, &pb, 4096, 4096));
    peer_proc &a = *pa, &b = *pb;
    reg_mr(a, 2, read_len);
    mr_t src = reg_mr(b, 2, read_len);
    ASSERT_FALSE(HasFailure());
    ASSERT_NO_FATAL_FAILURE(connect(a, 0, b, 0));
    const std::string rq   = "recv qp=0 mr=1 len=8 stride=0 count=1";
    const std::string args = " qp=0 mr=1 n=";
    ASSERT_OK(a.cmd(rq));
    ASSERT_OK(b.cmd(rq));
    ASSERT_TRUE(b.send("pingpong role=answer" + args + std::to_string(rounds)));
    uint64_t answer_first = 0;
    for (int i = 0; i < rounds; ++i) {
        SCOPED_TRACE("round " + std::to_string(i));
        b.freeze();
        ASSERT_OK(a.cmd("post qp=0 op=READ mr=2 flags= wr=1 len=" +
                        std::to_string(read_len) + src.remote()));
        ASSERT_TRUE(a.send("pingpong role=ask spin=1" + args + "1"));
        usleep(50000); /* the READ and the SEND wait in b's socket */
        a.freeze();
        b.thaw();
        usleep(50000); /* b sent the READ's data, the ACK and its answer */
        a.thaw();
        reply_t ra = a.recv(20000);
        ASSERT_OK(ra);
        answer_first += ra.u("answer_first");
    }
    EXPECT_OK(b.recv());
    EXPECT_EQ(0u, answer_first)
        << "in " << answer_first << " of " << rounds
        << " rounds the answer completed before the SEND it answers";
}

/* Same host, the SEND on the ring (up to 8 KB) and the answer on TCP
 * (larger), or the reverse: the SEND still completes first (two hosts:
 * both on TCP, as above) */
const size_t RING_MAX = 8000, TCP_MIN = 16384;

TEST_P(softnic_rc_answer, ring_send_completes_before_tcp_answer)
{
    ask_and_answer("", 300, 8, TCP_MIN);
}

TEST_P(softnic_rc_answer, tcp_send_completes_before_ring_answer)
{
    ask_and_answer("", 300, TCP_MIN, RING_MAX);
}

/* The ACK of the asker's TCP SEND and the answer in its ring both wait
 * when the asker runs again (the two processes are frozen in turn): its
 * spinning poll could take the answer from the ring before its service
 * thread reads the ACK; the SEND must still complete first. */
TEST_P(softnic_rc_answer, tcp_send_completes_before_ring_answer_both_waiting)
{
    if (two_hosts()) {
        GTEST_SKIP() << "no ring between two hosts";
    }
    const int rounds = 40;
    peer_proc &a     = spawn('a');
    peer_proc &b     = spawn('b');
    ASSERT_FALSE(HasFailure());
    reg_mr(a, 1, TCP_MIN);
    reg_mr(b, 1, TCP_MIN);
    ASSERT_FALSE(HasFailure());
    ASSERT_NO_FATAL_FAILURE(connect(a, 0, b, 0));
    const std::string rq =
        "recv qp=0 mr=1 stride=0 len=" + std::to_string(TCP_MIN) +
        " count=" + std::to_string(rounds);
    ASSERT_OK(a.cmd(rq));
    ASSERT_OK(b.cmd(rq));
    const std::string args = " qp=0 mr=1 ask_len=" + std::to_string(TCP_MIN) +
                             " answer_len=" + std::to_string(RING_MAX);
    ASSERT_TRUE(
        b.send("pingpong role=answer n=" + std::to_string(rounds) + args));
    uint64_t answer_first = 0;
    for (int i = 0; i < rounds; ++i) {
        b.freeze();
        ASSERT_TRUE(a.send("pingpong role=ask spin=1 n=1" + args));
        usleep(50000); /* a sent its SEND and spins on its CQs */
        a.freeze();
        b.thaw();
        usleep(50000); /* b acknowledged it (unread) and answered */
        a.thaw();
        reply_t ra = a.recv(20000);
        ASSERT_OK(ra) << "round " << i;
        answer_first += ra.u("answer_first");
    }
    EXPECT_OK(b.recv(20000));
    EXPECT_EQ(0u, answer_first)
        << "in " << answer_first << " of " << rounds
        << " rounds the answer completed before the SEND it answers";
}

/* An ACK held back for a frame going the other way (rule ACK_BOUND,
 * sn_int.h "ACK coalescing") still leaves when none comes: b spins on its
 * receive CQ (so its service thread stands back and b's poller holds the
 * ACK back) and never sends; a's SEND must complete, well within a
 * transport budget of 3 attempts of 33.5 ms (without the rule the ACK
 * waits in b's socket for the kernel's ~200 ms cork limit: RETRY_EXC_ERR).
 * Same host: everything on TCP (no_cma), as between two hosts. */
TEST_P(softnic_rc_answer, held_ack_leaves_without_an_answer)
{
    peer_proc *pa = NULL, *pb = NULL;
    ASSERT_NO_FATAL_FAILURE(spawn_on_tcp(&pa, &pb, 4096, 4096));
    ASSERT_FALSE(HasFailure());
    peer_proc &a = *pa, &b = *pb;
    const conn_opts oa = short_budget();
    ASSERT_NO_FATAL_FAILURE(connect(a, 0, b, 0, oa));
    for (int round = 0; round < 5; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        ASSERT_OK(b.cmd("recv qp=0 mr=1 len=64 wr=7"));
        ASSERT_TRUE(b.send("poll cq=recv n=2 spin=1 timeout=600"));
        usleep(50000); /* b spins: its service thread stands back */
        reply_t r =
            a.cmd("post qp=0 op=SEND mr=1 len=64 wr=" + std::to_string(round));
        ASSERT_OK(r);
        r = a.cmd("poll cq=send n=1 timeout=2000");
        ASSERT_EQ(1u, r.wcs.size()) << r.line;
        EXPECT_EQ(IBV_WC_SUCCESS, r.wcs[0].status)
            << wc_status_name(r.wcs[0].status);
        reply_t rb = b.recv(5000);
        ASSERT_TRUE(rb.ok) << rb.line;
        ASSERT_EQ(1u, rb.wcs.size()) << rb.line;
        EXPECT_EQ(IBV_WC_SUCCESS, rb.wcs[0].status);
        if (HasFailure()) {
            break;
        }
    }
}

/* A poller's step reads the hot connection (the target connection that
 * last brought requests, sn_int.h "Polling") without asking epoll, and
 * asks epoll at every few steps, so the instance's other connections are
 * read too: b spins on its receive CQ (its service thread stands back from
 * the sockets: only b's poller reads them) while a's SENDs come on QP 0,
 * whose connection becomes the hot one, then on QP 1 alone. Each SEND
 * must complete, within a transport budget of 3 attempts of 33.5 ms
 * (were only the hot connection read, QP 1's requests would wait in b's
 * socket until b stops polling: RETRY_EXC_ERR). Same host: everything on
 * TCP (no_cma), as between two hosts. */
TEST_P(softnic_rc_answer, poller_reads_beside_the_hot_connection)
{
    peer_proc *pa = NULL, *pb = NULL;
    ASSERT_NO_FATAL_FAILURE(spawn_on_tcp(&pa, &pb, 4096, 4096));
    ASSERT_FALSE(HasFailure());
    peer_proc &a = *pa, &b = *pb;
    const conn_opts oa = short_budget();
    for (int qp = 0; qp < 2; ++qp) {
        ASSERT_NO_FATAL_FAILURE(connect(a, qp, b, qp, oa));
    }
    for (int round = 0; (round < 4) && !HasFailure(); ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        ASSERT_NO_FATAL_FAILURE(sends_beside_the_hot_connection(a, b));
    }
}

/* one round of poller_reads_beside_the_hot_connection: n SENDs on QP 0,
 * then n on QP 1 */
void softnic_rc_answer::sends_beside_the_hot_connection(peer_proc &a,
                                                        peer_proc &b)
{
    const int n = 16;
    for (int qp = 0; qp < 2; ++qp) {
        ASSERT_OK(b.cmd("recv qp=" + std::to_string(qp) +
                        " mr=1 len=64 stride=0 wr=" + std::to_string(qp * n) +
                        " count=" + std::to_string(n)));
    }
    ASSERT_TRUE(
        b.send("poll cq=recv spin=1 timeout=10000 n=" + std::to_string(2 * n)));
    usleep(50000); /* b spins: its service thread stands back */
    for (int i = 0; i < 2 * n; ++i) {
        SCOPED_TRACE("SEND " + std::to_string(i));
        wc_t wc = post_wait(a,
                            "qp=" + std::to_string(i / n) +
                                " op=SEND mr=1 len=64 wr=" + std::to_string(i),
                            2000);
        ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    }
    reply_t rb = b.recv(20000);
    ASSERT_TRUE(rb.ok) << rb.line;
    ASSERT_EQ((size_t)(2 * n), rb.wcs.size()) << rb.line;
    for (int i = 0; i < 2 * n; ++i) {
        EXPECT_EQ((uint64_t)i, rb.wcs[i].wr_id);
        EXPECT_EQ(IBV_WC_SUCCESS, rb.wcs[i].status);
    }
}

/* SENDs streamed on TCP are held back in the socket (sn_int.h, "Request
 * coalescing") and still reach the target, in order, when the initiator
 * then neither posts nor polls (it waits for its next command): the service
 * thread's timer pass pushes them within about a ms. The stream starts with
 * two empty post lists (lead=2), so that every one of the n SENDs is held
 * back and b has nothing to answer: no ACK of b's comes in to make a's
 * kernel send what is held, as it does on any ACK (without lead=, b's
 * answers to the stream's first two SENDs, sent at once, came in after
 * its last SEND in most runs, and the test passed without the push). Without
 * the push the SENDs wait in a's socket for a frame that never comes or for
 * the kernel's probe timer (one RTO, >= 200 ms after the first held SEND),
 * past b's window, which ends 180 ms after the post returned (so it cannot
 * be longer; an unloaded post returns well within a ms). A round whose
 * stream a preemption breaks is not held back: hence 20 rounds. A round
 * that misses SENDs and whose answer from b came well after the window's
 * end (b descheduled there, under load, may have stopped looking before
 * what had arrived) tells nothing and is run again, 9 times at most.
 * Everything on TCP (no_cma on one host). */
TEST_P(softnic_rc_answer, streamed_sends_arrive_without_poll)
{
    peer_proc *pa = NULL, *pb = NULL;
    ASSERT_NO_FATAL_FAILURE(spawn_on_tcp(&pa, &pb, 4096, 65536));
    ASSERT_FALSE(HasFailure());
    peer_proc &a = *pa, &b = *pb;
    ASSERT_NO_FATAL_FAILURE(connect(a, 0, b, 0));
    ASSERT_OK(b.cmd("recv qp=0 mr=1 len=64 wr=100"));
    wc_t up = post_wait(a, "qp=0 op=SEND mr=1 len=64 wr=100");
    ASSERT_EQ(IBV_WC_SUCCESS, up.status) << wc_status_name(up.status);
    ASSERT_EQ(1u, poll(b, "recv", 1).size());
    int told = 0, untold = 0;
    while ((told < 20) && !HasFailure()) {
        SCOPED_TRACE("round " + std::to_string(told + untold));
        bool in_time = false;
        ASSERT_NO_FATAL_FAILURE(stream_sends(a, b, &in_time));
        if (in_time) {
            ++told;
        } else {
            ASSERT_LT(++untold, 10) << "b answered late too often to tell";
        }
    }
}

void softnic_rc_answer::stream_sends(peer_proc &a, peer_proc &b, bool *in_time)
{
    const int n           = 16;
    const double window   = 180; /* ms, < the kernel's probe timer */
    const double late     = 20;  /* ms past the window: it told nothing */
    const std::string cnt = " count=" + std::to_string(n);
    ASSERT_OK(b.cmd("recv qp=0 mr=1 len=64 wr=1" + cnt));
    ASSERT_OK(a.cmd("post qp=0 op=SEND mr=1 len=64 wr=1 lead=2 each=1" + cnt));
    const double end    = now_ms() + window;
    std::vector<wc_t> r = poll_until(b, "recv", n, end);
    *in_time            = (r.size() == (size_t)n) || (now_ms() < end + late);
    if (*in_time) {
        ASSERT_EQ((size_t)n, r.size()) << "SENDs not received within " << window
                                       << " ms of the post's return";
    } else { /* they come (the probe timer at worst): wait for them */
        std::vector<wc_t> rest = poll(b, "recv", n - (int)r.size());
        r.insert(r.end(), rest.begin(), rest.end());
        ASSERT_EQ((size_t)n, r.size());
    }
    for (int i = 0; i < n; ++i) {
        EXPECT_EQ((uint64_t)i + 1, r[i].wr_id) << "receive order";
        EXPECT_EQ(IBV_WC_SUCCESS, r[i].status);
    }
    std::vector<wc_t> s = poll(a, "send", n);
    ASSERT_EQ((size_t)n, s.size());
    for (int i = 0; i < n; ++i) {
        EXPECT_EQ((uint64_t)i + 1, s[i].wr_id);
        EXPECT_EQ(IBV_WC_SUCCESS, s[i].status);
    }
}

/* The receives of requests that one read of the target returns wait for
 * one ACK (sn_resp.c, the pass's batch) and still complete in posting
 * order around a receive that completes by itself (a SEND of more than
 * SN_ACK_HOLD_LEN), each with its own length and opcode, and every SEND
 * completes. b is frozen while a's requests reach its socket, so that its
 * first read returns them all. Same host: everything on TCP (no_cma). */
TEST_P(softnic_rc_answer, receives_of_one_read_complete_in_order)
{
    const std::string args = two_hosts() ? "" : "no_cma=1";
    peer_proc &a           = spawn('a', MNT_SAME, args);
    peer_proc &b           = spawn('b', MNT_SAME, args);
    ASSERT_FALSE(HasFailure());
    reg_mr(a, 1, 65536);
    mr_t rb = reg_mr(b, 1, 196608); /* receives, then the WRITE's place */
    ASSERT_FALSE(HasFailure());
    ASSERT_NO_FATAL_FAILURE(connect(a, 0, b, 0));
    ASSERT_OK(b.cmd("recv qp=0 mr=1 len=64 wr=100"));
    wc_t up = post_wait(a, "qp=0 op=SEND mr=1 len=64 wr=100");
    ASSERT_EQ(IBV_WC_SUCCESS, up.status) << wc_status_name(up.status);
    ASSERT_EQ(1u, poll(b, "recv", 1).size());

    const struct {
        const char *op;
        uint32_t len;
    } reqs[]    = {{"SEND", 64},
                   {"SEND", 8},
                   {"SEND", 8192},
                   {"SEND", 64},
                   {"WRITE_IMM imm=7", 64},
                   {"SEND", 16},
                   {"SEND", 5000},
                   {"SEND", 32}};
    const int n = sizeof(reqs) / sizeof(reqs[0]);
    ASSERT_OK(b.cmd("recv qp=0 mr=1 len=16384 wr=1 count=" + std::to_string(n) +
                    " stride=16384"));
    b.freeze();
    for (int i = 0; i < n; ++i) {
        ASSERT_OK(a.cmd(std::string("post qp=0 mr=1 op=") + reqs[i].op +
                        " len=" + std::to_string(reqs[i].len) +
                        " wr=" + std::to_string(i + 1) +
                        ((i == 4) ? rb.remote(131072) : "")));
    }
    usleep(100000); /* the requests wait in b's socket */
    b.thaw();
    std::vector<wc_t> s = poll(a, "send", n);
    ASSERT_EQ((size_t)n, s.size());
    std::vector<wc_t> r = poll(b, "recv", n);
    ASSERT_EQ((size_t)n, r.size());
    for (int i = 0; i < n; ++i) {
        SCOPED_TRACE("request " + std::to_string(i + 1));
        EXPECT_EQ((uint64_t)i + 1, s[i].wr_id);
        EXPECT_EQ(IBV_WC_SUCCESS, s[i].status) << wc_status_name(s[i].status);
        EXPECT_EQ((uint64_t)i + 1, r[i].wr_id) << "receive order";
        EXPECT_EQ(IBV_WC_SUCCESS, r[i].status) << wc_status_name(r[i].status);
        EXPECT_EQ(reqs[i].len, r[i].byte_len);
        EXPECT_EQ((i == 4) ? IBV_WC_RECV_RDMA_WITH_IMM : IBV_WC_RECV,
                  r[i].opcode);
    }
}

/* Traffic between two instances on TCP only (no_cma on one host), the
 * case where QPs will share one stream (i18merge-design.md): these tests
 * pin what must hold once they do. Today every QP has connections of its
 * own, and they hold trivially. */
class softnic_rc_tcp : public softnic_rc_answer
{
};

/* Two busy peers do not deadlock: on QP pairs 0 and 1, each side posts,
 * without polling in between, 4 READs of 4 MiB from the other, 4 WRITEs
 * of 4 MiB to it and 64 SENDs of 64 KiB (the receives posted), then both
 * poll. Everything completes SUCCESS within 20 s, with the right bytes.
 * The design's 8 x 16 MiB are 4 x 4 MiB here (the test's run within 10 s
 * on a loaded 2-core host): 16 MiB of READ data per QP is still many
 * times a socket's buffers, so each side's output backs up while the
 * other's requests keep coming. A transport timeout of 1 s per attempt:
 * a stall under load is no deadlock. Once QPs share a stream, a reader
 * that stops reading while its output is backed up deadlocks here (switch
 * rx_always, step 5 of the design). */
TEST_P(softnic_rc_tcp, bidirectional_bulk_does_not_deadlock)
{
    const size_t big = 4 << 20, small = 65536;
    const int nbig = 4, nsmall = 64, nqp = 2;
    peer_proc *pa = NULL, *pb = NULL;
    /* MR 1: READ destination; 2: READ source and WRITE source (filled);
     * 3: WRITE destination; 4: receives */
    ASSERT_NO_FATAL_FAILURE(spawn_on_tcp(&pa, &pb, nbig * big, nbig * big));
    std::vector<peer_proc *> peers = {pa, pb};
    mr_t src[2], dst[2];
    for (int i = 0; i < 2; ++i) {
        src[i] = reg_mr(*peers[i], 2, nbig * big);
        dst[i] = reg_mr(*peers[i], 3, nbig * big);
        reg_mr(*peers[i], 4, nsmall * small);
        ASSERT_FALSE(HasFailure());
        ASSERT_OK(peers[i]->cmd("fill id=2 seed=" + std::to_string(2000 + i)));
    }
    conn_opts o;
    o.timeout = 18;
    for (int q = 0; q < nqp; ++q) {
        ASSERT_NO_FATAL_FAILURE(connect(*pa, q, *pb, q, o, o));
    }
    const std::string b = std::to_string(big), sm = std::to_string(small);
    const std::string n = " count=" + std::to_string(nbig);
    for (int i = 0; i < 2; ++i) {
        for (int q = 0; q < nqp; ++q) {
            ASSERT_OK(peers[i]->cmd(
                "recv mr=4 len=" + sm + " qp=" + std::to_string(q) + " count=" +
                std::to_string(nsmall) + " wr=" + std::to_string(1000 * q)));
        }
    }
    /* each peer's posts name the other's regions: one line per peer */
    for (int op = 0; op < 3; ++op) {
        for (int q = 0; q < nqp; ++q) {
            for (int i = 0; i < 2; ++i) {
                const std::string wr =
                    " wr=" + std::to_string(1000 * q + op * 100);
                std::string line =
                    (op == 0) ? "op=READ mr=1 len=" + b + n + " stride=" + b +
                                    " rstride=" + b + src[1 - i].remote()
                    : (op == 1)
                        ? "op=WRITE mr=2 len=" + b + n + " stride=" + b +
                              " rstride=" + b + dst[1 - i].remote()
                        : "op=SEND mr=2 len=" + sm + " stride=" + sm +
                              " count=" + std::to_string(nsmall);
                ASSERT_TRUE(peers[i]->send("post qp=" + std::to_string(q) +
                                           " " + line + wr));
            }
            for (peer_proc *p : peers) {
                ASSERT_OK(p->recv());
            }
        }
    }
    const int nsend = nqp * (2 * nbig + nsmall), nrecv = nqp * nsmall;
    for (peer_proc *p : peers) {
        ASSERT_TRUE(
            p->send("poll cq=send timeout=20000 n=" + std::to_string(nsend)));
    }
    for (peer_proc *p : peers) {
        reply_t r = p->recv();
        ASSERT_EQ((size_t)nsend, r.wcs.size())
            << p->name() << ": not all WRs completed within 20 s: " << r.line;
        for (const wc_t &wc : r.wcs) {
            EXPECT_EQ(IBV_WC_SUCCESS, wc.status)
                << p->name() << " wr " << wc.wr_id << ": "
                << wc_status_name(wc.status);
        }
    }
    for (int i = 0; i < 2; ++i) {
        std::vector<wc_t> r = poll(*peers[i], "recv", nrecv, 20000);
        ASSERT_EQ((size_t)nrecv, r.size());
        const std::string other = std::to_string(2000 + 1 - i);
        EXPECT_OK(peers[i]->cmd("check id=1 seed=" + other));
        EXPECT_OK(peers[i]->cmd("check id=3 seed=" + other));
    }
}

/* Many QPs between two instances all carry traffic both ways: on each of
 * 64 QP pairs a WRITE of 64 KiB and a SEND of 64 B each way and a READ of
 * 64 KiB by a; every WR and every receive completes SUCCESS, and the
 * WRITEs' and READs' bytes land at their QP's offset (the SENDs' bytes
 * are not checked). A target that refuses channels past 48 per instance
 * fails it. Once QPs share a stream (64 channels on one
 * connection), the channels' ids, sequences and table must keep them apart
 * (step 5 of the design). */
TEST_P(softnic_rc_tcp, many_qps_between_two_instances)
{
    const int nqp    = 64;
    const size_t len = 65536, n = nqp * len;
    const std::string l = std::to_string(len);
    peer_proc *pa = NULL, *pb = NULL;
    /* MR 1: WRITE source; 2: WRITE destination, QP q's at q * len; 3:
     * receives; 4: READ source (b) and destination (a), as 2 */
    ASSERT_NO_FATAL_FAILURE(spawn_on_tcp(&pa, &pb, n, n));
    std::vector<peer_proc *> peers = {pa, pb};
    mr_t dst[2], rd[2];
    for (int i = 0; i < 2; ++i) {
        dst[i] = reg_mr(*peers[i], 2, n);
        reg_mr(*peers[i], 3, nqp * 64);
        rd[i] = reg_mr(*peers[i], 4, n);
        ASSERT_FALSE(HasFailure());
        ASSERT_OK(peers[i]->cmd("fill id=1 seed=" + std::to_string(3000 + i)));
    }
    ASSERT_OK(pb->cmd("fill id=4 seed=3002"));
    for (int q = 0; q < nqp; ++q) {
        ASSERT_NO_FATAL_FAILURE(connect(*pa, q, *pb, q));
        for (peer_proc *p : peers) {
            ASSERT_OK(p->cmd("recv mr=3 len=64 qp=" + std::to_string(q) +
                             " off=" + std::to_string(64 * q) +
                             " wr=" + std::to_string(q)));
        }
    }
    for (int q = 0; q < nqp; ++q) {
        const std::string qo = "post qp=" + std::to_string(q) +
                               " off=" + std::to_string(q * len) +
                               " wr=" + std::to_string(10 * q) + " len=";
        for (int i = 0; i < 2; ++i) {
            ASSERT_OK(peers[i]->cmd(qo + l + " op=WRITE mr=1" +
                                    dst[1 - i].remote(q * len)));
            ASSERT_OK(peers[i]->cmd(qo + "64 op=SEND mr=1"));
        }
        ASSERT_OK(pa->cmd(qo + l + " op=READ mr=4" + rd[1].remote(q * len)));
    }
    for (int i = 0; i < 2; ++i) {
        const size_t nsend  = nqp * (i == 0 ? 3 : 2);
        std::vector<wc_t> s = poll(*peers[i], "send", nsend);
        ASSERT_EQ(nsend, s.size()) << peers[i]->name();
        std::vector<wc_t> r = poll(*peers[i], "recv", nqp);
        ASSERT_EQ((size_t)nqp, r.size()) << peers[i]->name();
        s.insert(s.end(), r.begin(), r.end());
        for (const wc_t &wc : s) {
            EXPECT_EQ(IBV_WC_SUCCESS, wc.status)
                << peers[i]->name() << " wr " << wc.wr_id << ": "
                << wc_status_name(wc.status);
        }
        EXPECT_OK(peers[i]->cmd("check id=2 seed=" + std::to_string(3001 - i)));
    }
    EXPECT_OK(pa->cmd("check id=4 seed=3002"));
}

INSTANTIATE_TEST_SUITE_P(topo, softnic_rc_answer,
                         ::testing::Values(TOPO_SAME_HOST, TOPO_TWO_HOSTS),
                         topology_name);

INSTANTIATE_TEST_SUITE_P(topo, softnic_rc,
                         ::testing::Values(TOPO_SAME_HOST, TOPO_TWO_HOSTS),
                         topology_name);

INSTANTIATE_TEST_SUITE_P(topo, softnic_rc_tcp,
                         ::testing::Values(TOPO_SAME_HOST, TOPO_TWO_HOSTS),
                         topology_name);

INSTANTIATE_TEST_SUITE_P(topo, softnic_rc_one_host,
                         ::testing::Values(TOPO_SAME_HOST), topology_name);

} /* namespace */
