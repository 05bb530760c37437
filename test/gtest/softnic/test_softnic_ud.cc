/*
 * softnic UD QPs: the UD state machine, a datagram's receive completion
 * (GRH with the IPv4 header, src_qp, immediate data, byte_len), the
 * silent drops of UD (wrong qkey, no receive posted, no such QP), the MTU
 * limit at post time, a receive too small for GRH + payload, SRQs; in this
 * process on soft_lo, and between two processes on one host and on two
 * hosts.
 *
 * A drop is shown without waiting for something not to happen: a
 * datagram that must be dropped is followed, from the same QP, by one that
 * must arrive; datagrams of one sender reach the receiver in order, so the
 * first receive completion must carry the second datagram.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "send_wr.h"
#include "softnic_harness.h"
#include "softnic_inproc.h"

#include <arpa/inet.h>
#include <netinet/ip.h>

#include <map>
#include <string>
#include <vector>

using namespace softnic_test;

namespace
{

const uint32_t QKEY = 0x1ee7a330;
const size_t BUF    = 64 * 1024;

class softnic_ud : public softnic_inproc
{
  protected:
    void SetUp() override
    {
        softnic_inproc::SetUp();
        if (HasFatalFailure())
            return;
        m_buf.assign(BUF, 0);
        m_mr = softnic_mr_reg(m_pd, m_buf.data(), BUF, IBV_ACCESS_LOCAL_WRITE);
        ASSERT_NE(nullptr, m_mr) << strerror(errno);
        ibv_ah_attr attr;
        ASSERT_EQ(0, softnic_dev_addr_unpack(m_dev, m_addr.data(),
                                             m_addr.size(), &attr));
        m_ah = softnic_ah_create(m_pd, &attr);
        ASSERT_NE(nullptr, m_ah) << strerror(errno);
    }

    void TearDown() override
    {
        destroy_qps();
        if (m_srq) {
            EXPECT_EQ(0, softnic_srq_destroy(m_srq));
        }
        if (m_ah) {
            EXPECT_EQ(0, softnic_ah_destroy(m_ah));
        }
        if (m_mr) {
            EXPECT_EQ(0, softnic_mr_dereg(m_mr));
        }
        softnic_inproc::TearDown();
    }

    softnic_qp_t *ud_qp(bool srq = false)
    {
        softnic_qp_init_attr_t attr = {};
        attr.send_cq                = m_cq;
        attr.recv_cq                = m_cq;
        attr.srq                    = srq ? m_srq : NULL;
        attr.cap.max_send_wr        = 64;
        attr.cap.max_recv_wr        = srq ? 0 : 64;
        attr.cap.max_send_sge       = 2;
        attr.cap.max_recv_sge       = 2;
        attr.cap.max_inline_data    = 64;
        attr.qp_type                = IBV_QPT_UD;
        softnic_qp_t *qp            = softnic_qp_create(m_pd, &attr);
        EXPECT_NE(nullptr, qp) << strerror(errno);
        if (qp)
            m_qps.push_back(qp);
        return qp;
    }

    int ud_modify(softnic_qp_t *qp, ibv_qp_state s, int mask,
                  uint32_t qkey = QKEY)
    {
        ibv_qp_attr a;
        memset(&a, 0, sizeof(a));
        a.qp_state = s;
        a.port_num = 1;
        a.qkey     = qkey;
        return softnic_qp_modify(qp, &a, mask);
    }

    void ud_rts(softnic_qp_t *qp, uint32_t qkey = QKEY)
    {
        ASSERT_EQ(0, ud_modify(qp, IBV_QPS_INIT,
                               IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                                   IBV_QP_QKEY,
                               qkey));
        ASSERT_EQ(0, ud_modify(qp, IBV_QPS_RTR, IBV_QP_STATE));
        ASSERT_EQ(0, ud_modify(qp, IBV_QPS_RTS, IBV_QP_STATE | IBV_QP_SQ_PSN));
    }

    int post_recv(softnic_qp_t *qp, uint64_t wr_id, size_t off, uint32_t len)
    {
        ibv_sge sge      = {(uintptr_t)&m_buf[off], len, m_mr->lkey};
        ibv_recv_wr wr   = {};
        ibv_recv_wr *bad = NULL;
        wr.wr_id         = wr_id;
        wr.sg_list       = &sge;
        wr.num_sge       = 1;
        return qp ? softnic_post_recv(qp, &wr, &bad)
                  : softnic_post_srq_recv(m_srq, &wr, &bad);
    }

    /* one signaled SEND of len bytes at off to QP qpn */
    int send(softnic_qp_t *qp, uint32_t qpn, size_t off, uint32_t len,
             uint32_t qkey = QKEY, const uint32_t *imm = NULL)
    {
        ibv_sge sge = {(uintptr_t)&m_buf[off], len, m_mr->lkey};
        ibv_send_wr wr =
            ud_wr(&sge, imm ? IBV_WR_SEND_WITH_IMM : IBV_WR_SEND, 1000 + off,
                  IBV_SEND_SIGNALED, (ibv_ah *)m_ah, qpn, qkey);
        ibv_send_wr *bad = NULL;
        wr.imm_data      = imm ? htonl(*imm) : 0;
        return softnic_post_send(qp, &wr, &bad);
    }

    /* n completions within 10 s */
    std::vector<ibv_wc> poll(int n)
    {
        std::vector<ibv_wc> out;
        double deadline = now_ms() + 10000;
        ibv_wc wc;
        while (((int)out.size() < n) && (now_ms() < deadline)) {
            int ret = softnic_cq_poll(m_cq, 1, &wc);
            EXPECT_GE(ret, 0);
            if (ret == 1)
                out.push_back(wc);
        }
        EXPECT_EQ(n, (int)out.size()) << "completions missing";
        return out;
    }

    /* the send completion and the receive completion of one datagram */
    ibv_wc send_and_receive(softnic_qp_t *s, softnic_qp_t *r, size_t off,
                            uint32_t len, const uint32_t *imm = NULL)
    {
        ibv_wc recv_wc = {};
        recv_wc.status = IBV_WC_GENERAL_ERR;
        EXPECT_EQ(0, send(s, r->qp_num, off, len, QKEY, imm));
        for (const ibv_wc &wc : poll(2)) {
            if (wc.opcode == IBV_WC_SEND) {
                EXPECT_EQ(IBV_WC_SUCCESS, wc.status);
            } else {
                recv_wc = wc;
            }
        }
        return recv_wc;
    }

    void fill(size_t off, size_t len, uint8_t seed)
    {
        for (size_t i = 0; i < len; ++i)
            m_buf[off + i] = (uint8_t)(seed + i * 7);
    }

    bool holds(size_t off, size_t len, uint8_t seed)
    {
        for (size_t i = 0; i < len; ++i)
            if (m_buf[off + i] != (uint8_t)(seed + i * 7))
                return false;
        return true;
    }

    std::vector<uint8_t> m_buf;
    softnic_mr_t *m_mr   = nullptr;
    softnic_ah_t *m_ah   = nullptr;
    softnic_srq_t *m_srq = nullptr;
};

TEST_F(softnic_ud, state_machine)
{
    softnic_qp_t *qp = ud_qp();
    ASSERT_NE(nullptr, qp);
    /* INIT needs the qkey; RTR takes no address vector; RTS needs sq_psn */
    EXPECT_EQ(EINVAL,
              ud_modify(qp, IBV_QPS_INIT,
                        IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT));
    EXPECT_EQ(EINVAL, ud_modify(qp, IBV_QPS_INIT,
                                IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                                    IBV_QP_QKEY | IBV_QP_ACCESS_FLAGS));
    ASSERT_EQ(0, ud_modify(qp, IBV_QPS_INIT,
                           IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                               IBV_QP_QKEY));
    EXPECT_EQ(EINVAL, ud_modify(qp, IBV_QPS_RTR, IBV_QP_STATE | IBV_QP_AV));
    ASSERT_EQ(0, ud_modify(qp, IBV_QPS_RTR, IBV_QP_STATE));
    EXPECT_EQ(EINVAL, ud_modify(qp, IBV_QPS_RTS, IBV_QP_STATE));
    ASSERT_EQ(0, ud_modify(qp, IBV_QPS_RTS, IBV_QP_STATE | IBV_QP_SQ_PSN));

    ibv_qp_attr a;
    softnic_qp_init_attr_t init;
    ASSERT_EQ(0, softnic_qp_query(qp, &a, IBV_QP_QKEY, &init));
    EXPECT_EQ(IBV_QPS_RTS, a.qp_state);
    EXPECT_EQ(QKEY, a.qkey);
    EXPECT_EQ(IBV_QPT_UD, init.qp_type);
}

TEST_F(softnic_ud, datagram_with_grh_src_qp_and_imm)
{
    softnic_qp_t *s = ud_qp(), *r = ud_qp();
    ASSERT_TRUE(s && r);
    ud_rts(s);
    ud_rts(r);
    const uint32_t len = 1000, imm = 0xabcd1234;
    fill(0, len, 3);
    memset(&m_buf[8192], 0xee, 4096);
    ASSERT_EQ(0, post_recv(r, 7, 8192, SOFTNIC_GRH_LEN + len));

    ibv_wc wc = send_and_receive(s, r, 0, len, &imm);
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status);
    EXPECT_EQ(7u, wc.wr_id);
    EXPECT_EQ(IBV_WC_RECV, wc.opcode);
    EXPECT_EQ(SOFTNIC_GRH_LEN + len, wc.byte_len);
    EXPECT_EQ(s->qp_num, wc.src_qp);
    EXPECT_EQ(r->qp_num, wc.qp_num);
    EXPECT_EQ((unsigned)(IBV_WC_GRH | IBV_WC_WITH_IMM), wc.wc_flags);
    EXPECT_EQ(htonl(imm), wc.imm_data);
    EXPECT_EQ(2, wc.sl); /* RoCE v2 over IPv4 */
    EXPECT_TRUE(holds(8192 + SOFTNIC_GRH_LEN, len, 3));
    EXPECT_EQ(0xee, m_buf[8192 + SOFTNIC_GRH_LEN + len]) << "wrote past";

    /* the GRH area: zeros, then the IPv4 header of the datagram */
    const uint8_t *grh = &m_buf[8192];
    for (int i = 0; i < 20; ++i)
        EXPECT_EQ(0, grh[i]) << "byte " << i;
    struct iphdr ip;
    memcpy(&ip, grh + 20, sizeof(ip));
    EXPECT_EQ(4, ip.version);
    EXPECT_EQ(5, ip.ihl);
    EXPECT_EQ(IPPROTO_UDP, ip.protocol);
    EXPECT_EQ(htonl(INADDR_LOOPBACK), ip.saddr);
    EXPECT_EQ(htonl(INADDR_LOOPBACK), ip.daddr);
    uint32_t sum = 0;
    for (int i = 0; i < 10; ++i)
        sum += ((const uint16_t *)&ip)[i];
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    EXPECT_EQ(0xffffu, sum) << "IPv4 header checksum";
}

TEST_F(softnic_ud, wrong_qkey_is_dropped)
{
    softnic_qp_t *s = ud_qp(), *r = ud_qp();
    ASSERT_TRUE(s && r);
    ud_rts(s);
    ud_rts(r);
    fill(0, 100, 1);
    fill(100, 100, 2);
    ASSERT_EQ(0, post_recv(r, 1, 8192, 4096));
    ASSERT_EQ(0, send(s, r->qp_num, 0, 100, QKEY + 1));
    ASSERT_EQ(0, send(s, r->qp_num, 100, 100, QKEY));
    int recvs = 0;
    for (const ibv_wc &wc : poll(3)) {
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << "both sends succeed";
        recvs += (wc.opcode == IBV_WC_RECV);
    }
    EXPECT_EQ(1, recvs);
    EXPECT_TRUE(holds(8192 + SOFTNIC_GRH_LEN, 100, 2))
        << "the receive got the datagram with the wrong qkey";
}

TEST_F(softnic_ud, qkey_with_top_bit_is_the_qps_own)
{
    softnic_qp_t *s = ud_qp(), *r = ud_qp();
    ASSERT_TRUE(s && r);
    ud_rts(s);
    ud_rts(r);
    ASSERT_EQ(0, post_recv(r, 1, 8192, 4096));
    fill(0, 10, 9);
    ASSERT_EQ(0, send(s, r->qp_num, 0, 10, 0x80000000u));
    int recvs = 0;
    for (const ibv_wc &wc : poll(2)) {
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status);
        recvs += (wc.opcode == IBV_WC_RECV);
    }
    EXPECT_EQ(1, recvs);
}

TEST_F(softnic_ud, no_posted_receive_is_dropped)
{
    softnic_qp_t *s = ud_qp(), *r = ud_qp(), *marker = ud_qp();
    ASSERT_TRUE(s && r && marker);
    ud_rts(s);
    ud_rts(r);
    ud_rts(marker);
    fill(0, 100, 1);
    fill(100, 100, 2);
    /* r has no receive: dropped; the marker's arrival shows it was seen */
    ASSERT_EQ(0, post_recv(marker, 50, 16384, 4096));
    ASSERT_EQ(0, send(s, r->qp_num, 0, 100));
    ASSERT_EQ(0, send(s, marker->qp_num, 0, 100));
    poll(3);
    ASSERT_EQ(0, post_recv(r, 1, 8192, 4096));
    ibv_wc wc = send_and_receive(s, r, 100, 100);
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status);
    EXPECT_TRUE(holds(8192 + SOFTNIC_GRH_LEN, 100, 2))
        << "a datagram without a posted receive was kept";
}

TEST_F(softnic_ud, send_to_missing_qpn_completes)
{
    softnic_qp_t *s = ud_qp();
    ASSERT_TRUE(s);
    ud_rts(s);
    ASSERT_EQ(0, send(s, 0xfff00u, 0, 64)); /* no such QP anywhere */
    std::vector<ibv_wc> wcs = poll(1);
    ASSERT_EQ(1u, wcs.size());
    EXPECT_EQ(IBV_WC_SUCCESS, wcs[0].status);
    EXPECT_EQ(IBV_WC_SEND, wcs[0].opcode);
    EXPECT_EQ(IBV_QPS_RTS, state(s)) << "UD has no peer to lose";
}

TEST_F(softnic_ud, longer_than_mtu_fails_the_post)
{
    softnic_qp_t *s = ud_qp(), *r = ud_qp();
    ASSERT_TRUE(s && r);
    ud_rts(s);
    ud_rts(r);
    EXPECT_EQ(EINVAL, send(s, r->qp_num, 0, SOFTNIC_UD_MTU + 1));
    ASSERT_EQ(0, post_recv(r, 1, 8192, SOFTNIC_GRH_LEN + SOFTNIC_UD_MTU));
    fill(0, SOFTNIC_UD_MTU, 5);
    ibv_wc wc = send_and_receive(s, r, 0, SOFTNIC_UD_MTU);
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status);
    EXPECT_EQ((uint32_t)(SOFTNIC_GRH_LEN + SOFTNIC_UD_MTU), wc.byte_len);
    EXPECT_TRUE(holds(8192 + SOFTNIC_GRH_LEN, SOFTNIC_UD_MTU, 5));
}

TEST_F(softnic_ud, receive_too_small_is_local_length_error)
{
    softnic_qp_t *s = ud_qp(), *r = ud_qp();
    ASSERT_TRUE(s && r);
    ud_rts(s);
    ud_rts(r);
    /* room for the payload but not for the GRH in front of it */
    ASSERT_EQ(0, post_recv(r, 1, 8192, 100 + SOFTNIC_GRH_LEN - 1));
    ASSERT_EQ(0, post_recv(r, 2, 16384, 4096));
    ASSERT_EQ(0, send(s, r->qp_num, 0, 100));
    /* the send's, the receive's, and (a completion error puts the QP in
     * ERR) the flush of the other receive, in any order between CQs */
    std::map<uint64_t, int> status;
    for (const ibv_wc &wc : poll(3)) {
        status[wc.wr_id] = wc.status;
    }
    EXPECT_EQ(IBV_WC_SUCCESS, status[1000]);
    EXPECT_EQ(IBV_WC_LOC_LEN_ERR, status[1]);
    EXPECT_EQ(IBV_WC_WR_FLUSH_ERR, status[2]);
    EXPECT_EQ(IBV_QPS_ERR, state(r));
}

TEST_F(softnic_ud, receives_from_an_srq)
{
    ibv_srq_init_attr sa = {};
    sa.attr.max_wr       = 16;
    sa.attr.max_sge      = 1;
    m_srq                = softnic_srq_create(m_pd, &sa);
    ASSERT_NE(nullptr, m_srq) << strerror(errno);
    softnic_qp_t *s = ud_qp(), *r = ud_qp(true);
    ASSERT_TRUE(s && r);
    ud_rts(s);
    ud_rts(r);
    ASSERT_EQ(0, post_recv(NULL, 11, 8192, 4096));
    fill(0, 300, 4);
    ibv_wc wc = send_and_receive(s, r, 0, 300);
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status);
    EXPECT_EQ(11u, wc.wr_id);
    EXPECT_EQ(r->qp_num, wc.qp_num);
    EXPECT_TRUE(holds(8192 + SOFTNIC_GRH_LEN, 300, 4));
}

TEST_F(softnic_ud, bad_lkey_is_local_protection_error)
{
    softnic_qp_t *s = ud_qp();
    ASSERT_TRUE(s);
    ud_rts(s);
    ibv_sge sge = {(uintptr_t)&m_buf[0], 64, m_mr->lkey + 1};
    ibv_send_wr wr =
        ud_wr(&sge, IBV_WR_SEND, 0, 0, (ibv_ah *)m_ah, s->qp_num, QKEY);
    ibv_send_wr *bad = NULL;
    ASSERT_EQ(0, softnic_post_send(s, &wr, &bad));
    std::vector<ibv_wc> wcs = poll(1);
    ASSERT_EQ(1u, wcs.size());
    EXPECT_EQ(IBV_WC_LOC_PROT_ERR, wcs[0].status);
    EXPECT_EQ(IBV_QPS_ERR, state(s));
}

/* ---- between processes: one host and two hosts ------------------------ */

class softnic_ud_topo : public softnic_topo
{
  protected:
    /* peers a and b, each with MR 1 (BUF bytes) and UD QP 1 (qkey QKEY);
     * the QP replies (addr, qpn) in *qa and *qb */
    void ud_peers(peer_proc **a, peer_proc **b, reply_t *qa, reply_t *qb)
    {
        *a = &spawn('a');
        *b = &spawn('b');
        ASSERT_FALSE(HasFailure());
        reg_mr(**a, 1, BUF, "LW");
        reg_mr(**b, 1, BUF, "LW");
        ASSERT_FALSE(HasFailure());
        *qa = (*a)->cmd("udqp id=1 qkey=" + std::to_string(QKEY));
        *qb = (*b)->cmd("udqp id=1 qkey=" + std::to_string(QKEY));
        ASSERT_TRUE(qa->ok && qb->ok) << qa->line << " / " << qb->line;
    }

    /* the udsend arguments that name the QP of reply q */
    static std::string to(const reply_t &q)
    {
        return " addr=" + q.s("addr") + " qpn=" + std::to_string(q.u("qpn"));
    }
};

TEST_P(softnic_ud_topo, datagrams_between_peers)
{
    peer_proc *pa, *pb;
    reply_t qa, qb;
    ASSERT_NO_FATAL_FAILURE(ud_peers(&pa, &pb, &qa, &qb));
    peer_proc &a = *pa, &b = *pb;
    const std::string to_b = to(qb);

    ASSERT_OK(a.cmd("fill id=1 len=2000 seed=5"));
    ASSERT_OK(a.cmd("fill id=1 off=2000 len=2000 seed=6"));
    ASSERT_OK(b.cmd("recv qp=1 mr=1 off=0 len=4096 wr=70"));
    /* a wrong qkey first: dropped; then the right one */
    ASSERT_OK(a.cmd("udsend qp=1 mr=1 off=0 len=2000 wr=1 qkey=7" + to_b));
    ASSERT_OK(a.cmd("udsend qp=1 mr=1 off=2000 len=2000 wr=2 imm=99 qkey=" +
                    std::to_string(QKEY) + to_b));
    std::vector<wc_t> sends = poll(a, "send", 2);
    ASSERT_EQ(2u, sends.size());
    EXPECT_EQ(IBV_WC_SUCCESS, sends[0].status);
    EXPECT_EQ(IBV_WC_SUCCESS, sends[1].status);

    std::vector<wc_t> recvs = poll(b, "recv", 1);
    ASSERT_EQ(1u, recvs.size());
    EXPECT_EQ(IBV_WC_SUCCESS, recvs[0].status);
    EXPECT_EQ(70u, recvs[0].wr_id);
    EXPECT_EQ(SOFTNIC_GRH_LEN + 2000u, recvs[0].byte_len);
    EXPECT_EQ((uint32_t)qa.u("qpn"), recvs[0].src_qp);
    EXPECT_EQ((unsigned)(IBV_WC_GRH | IBV_WC_WITH_IMM), recvs[0].flags);
    EXPECT_EQ(htonl(99), recvs[0].imm);
    EXPECT_OK(b.cmd("check id=1 off=40 len=2000 seed=6"))
        << "the receive holds the wrong-qkey datagram";
}

/* UD is unreliable: a dead peer is no error. Datagrams to a process that
 * is gone are lost; each send completes successfully at once (no retry
 * budget, unlike RC), and the QP stays in RTS and keeps working. */
TEST_P(softnic_ud_topo, datagrams_to_a_dead_peer_are_lost)
{
    peer_proc *pa, *pb;
    reply_t qa, qb;
    ASSERT_NO_FATAL_FAILURE(ud_peers(&pa, &pb, &qa, &qb));
    peer_proc &a = *pa, &b = *pb;
    const std::string qkey = " qkey=" + std::to_string(QKEY);
    const std::string to_b = qkey + to(qb), to_a = qkey + to(qa);

    ASSERT_OK(b.cmd("recv qp=1 mr=1 off=0 len=4096 wr=70"));
    ASSERT_OK(a.cmd("udsend qp=1 mr=1 off=0 len=1000 wr=1" + to_b));
    ASSERT_EQ(1u, poll(b, "recv", 1).size()) << "b was reachable";
    b.kill9();
    for (int i = 0; i < 3; ++i) {
        ASSERT_OK(a.cmd("udsend qp=1 mr=1 off=0 len=1000 wr=" +
                        std::to_string(2 + i) + to_b));
    }
    std::vector<wc_t> sends = poll(a, "send", 4);
    ASSERT_EQ(4u, sends.size());
    for (const wc_t &wc : sends) {
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    }
    reply_t st = a.cmd("query qp=1");
    ASSERT_TRUE(st.ok) << st.line;
    EXPECT_EQ((unsigned)IBV_QPS_RTS, st.u("state"));
    /* and it still carries datagrams: one to itself */
    ASSERT_OK(a.cmd("recv qp=1 mr=1 off=8192 len=4096 wr=80"));
    ASSERT_OK(a.cmd("udsend qp=1 mr=1 off=0 len=500 wr=9" + to_a));
    std::vector<wc_t> recvs = poll(a, "recv", 1);
    ASSERT_EQ(1u, recvs.size());
    EXPECT_EQ(IBV_WC_SUCCESS, recvs[0].status);
    EXPECT_EQ(80u, recvs[0].wr_id);
}

INSTANTIATE_TEST_SUITE_P(topo, softnic_ud_topo,
                         ::testing::Values(TOPO_SAME_HOST, TOPO_TWO_HOSTS),
                         topology_name);

} /* namespace */
