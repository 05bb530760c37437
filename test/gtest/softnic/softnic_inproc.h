/*
 * Fixture of the in-process softnic tests: device soft_lo opened in this
 * process, a PD, a CQ, and QPs connected through the device's own address
 * (loopback) along the legal INIT -> RTR -> RTS path.
 */
#ifndef ORC_TEST_SOFTNIC_INPROC_H_
#define ORC_TEST_SOFTNIC_INPROC_H_

#include "softnic/softnic.h"

#include <gtest/gtest.h>

#include <errno.h>
#include <string.h>
#include <time.h>

#include <vector>

namespace softnic_test
{

static const int RTR_REQ = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
                           IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                           IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
static const int RTS_REQ = IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT |
                           IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                           IBV_QP_MAX_QP_RD_ATOMIC;
static const int INIT_REQ =
    IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;

static inline double now_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

class softnic_inproc : public ::testing::Test
{
  protected:
    /* true: the device carries all data on TCP (config no_cma), so threads
     * polling its CQs also run service steps */
    virtual bool tcp_only() const
    {
        return false;
    }

    /* false: the test calls open() itself, with its own configuration */
    virtual bool open_in_setup() const
    {
        return true;
    }

    void SetUp() override
    {
        softnic_config_t cfg = {};

        if (open_in_setup()) {
            cfg.no_cma = tcp_only();
            open(cfg);
        }
    }

    /* soft_lo with cfg, a PD, the CQ m_cq, the port and the address */
    void open(softnic_config_t cfg)
    {
        cfg.ifaces = "lo";
        m_dev      = softnic_dev_open("soft_lo", &cfg);
        ASSERT_NE(nullptr, m_dev)
            << "softnic_dev_open(soft_lo): " << strerror(errno);
        m_pd = softnic_pd_alloc(m_dev);
        ASSERT_NE(nullptr, m_pd) << strerror(errno);
        m_cq = softnic_cq_create(m_dev, 4096, NULL, NULL);
        ASSERT_NE(nullptr, m_cq) << strerror(errno);
        ASSERT_EQ(0, softnic_dev_query_port(m_dev, 1, &m_port));
        m_addr.resize(SOFTNIC_ADDR_LEN);
        ASSERT_EQ(0,
                  softnic_dev_addr_pack(m_dev, m_addr.data(), m_addr.size()));
    }

    void TearDown() override
    {
        destroy_qps();
        if (m_cq) {
            EXPECT_EQ(0, softnic_cq_destroy(m_cq));
        }
        if (m_pd) {
            EXPECT_EQ(0, softnic_pd_dealloc(m_pd));
        }
        if (m_dev) {
            EXPECT_EQ(0, softnic_dev_close(m_dev));
        }
    }

    void destroy_qps()
    {
        for (softnic_qp_t *qp : m_qps) {
            EXPECT_EQ(0, softnic_qp_destroy(qp));
        }
        m_qps.clear();
    }

    softnic_qp_t *new_qp(softnic_cq_t *cq = NULL, softnic_cq_t *rcq = NULL,
                         uint32_t max_send_wr = 64)
    {
        softnic_qp_init_attr_t attr = {};
        attr.send_cq                = cq ? cq : m_cq;
        attr.recv_cq                = rcq ? rcq : attr.send_cq;
        attr.cap.max_send_wr        = max_send_wr;
        attr.cap.max_recv_wr        = 64;
        attr.cap.max_send_sge       = 1;
        attr.cap.max_recv_sge       = 1;
        attr.cap.max_inline_data    = m_max_inline;
        attr.qp_type                = IBV_QPT_RC;
        softnic_qp_t *qp            = softnic_qp_create(m_pd, &attr);
        EXPECT_NE(nullptr, qp) << strerror(errno);
        return qp;
    }

    softnic_qp_t *tracked_qp(softnic_cq_t *cq = NULL, softnic_cq_t *rcq = NULL,
                             uint32_t max_send_wr = 64)
    {
        softnic_qp_t *qp = new_qp(cq, rcq, max_send_wr);
        if (qp)
            m_qps.push_back(qp);
        return qp;
    }

    /* Every attribute a valid RC transition could use, filled in. */
    void fill_attr(ibv_qp_attr *a, ibv_qp_state state, uint32_t dest_qpn)
    {
        memset(a, 0, sizeof(*a));
        a->qp_state        = state;
        a->pkey_index      = 0;
        a->port_num        = 1;
        a->qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
        ASSERT_EQ(0, softnic_dev_addr_unpack(m_dev, m_addr.data(),
                                             m_addr.size(), &a->ah_attr));
        a->path_mtu           = m_port.active_mtu;
        a->dest_qp_num        = dest_qpn;
        a->rq_psn             = 0;
        a->max_dest_rd_atomic = 1;
        a->min_rnr_timer      = 12;
        a->sq_psn             = 0;
        a->timeout            = 14;
        a->retry_cnt          = 7;
        a->rnr_retry          = 7;
        a->max_rd_atomic      = 1;
    }

    int modify(softnic_qp_t *qp, ibv_qp_state state, int mask,
               uint32_t dest = 0)
    {
        ibv_qp_attr a;
        fill_attr(&a, state, dest ? dest : qp->qp_num);
        return softnic_qp_modify(qp, &a, mask);
    }

    int state(softnic_qp_t *qp)
    {
        ibv_qp_attr a;
        softnic_qp_init_attr_t init;
        memset(&a, 0, sizeof(a));
        int ret = softnic_qp_query(qp, &a, IBV_QP_STATE, &init);
        EXPECT_EQ(0, ret) << "qp_query: " << strerror(ret);
        return ret ? -1 : (int)a.qp_state;
    }

    /* Bring a fresh QP to the given state through the legal path. */
    void bring_to(softnic_qp_t *qp, ibv_qp_state target, uint32_t dest = 0)
    {
        if (target == IBV_QPS_RESET)
            return;
        if (target == IBV_QPS_ERR) {
            ASSERT_EQ(0, modify(qp, IBV_QPS_ERR, IBV_QP_STATE));
            return;
        }
        ASSERT_EQ(0, modify(qp, IBV_QPS_INIT, INIT_REQ, dest));
        if (target == IBV_QPS_INIT)
            return;
        ASSERT_EQ(0, modify(qp, IBV_QPS_RTR, RTR_REQ, dest));
        if (target == IBV_QPS_RTR)
            return;
        ASSERT_EQ(0, modify(qp, IBV_QPS_RTS, RTS_REQ, dest));
    }

    softnic_dev_t *m_dev  = nullptr;
    softnic_pd_t *m_pd    = nullptr;
    softnic_cq_t *m_cq    = nullptr;
    uint32_t m_max_inline = 0; /* max_inline_data of the QPs new_qp() makes */
    ibv_port_attr m_port;
    std::vector<uint8_t> m_addr;
    std::vector<softnic_qp_t *> m_qps;
};

} /* namespace softnic_test */

#endif
