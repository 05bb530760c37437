/*
 * softnic's public API in one process (device soft_lo): device list, open
 * and queries (port, GID, P_Key), completion channels and req_notify, and
 * the device configuration: no_cma / no_ring, QPs addressed by QPN
 * (qpn_port_base), the log callback (levels, device names, filtering), and
 * the strict parser from strings and the environment.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "send_wr.h"
#include "softnic_inproc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace softnic_test;

namespace
{

/* Messages received by the log callback. The callback runs on softnic's
 * threads: lock protects msgs. */
struct log_sink {
    struct msg {
        softnic_log_level_t level;
        std::string dev;
        std::string text;
    };
    std::mutex lock;
    std::vector<msg> msgs;

    static void cb(void *arg, softnic_log_level_t level, const char *dev,
                   const char *text)
    {
        log_sink *sink = (log_sink *)arg;
        std::lock_guard<std::mutex> guard(sink->lock);
        sink->msgs.push_back({level, dev, text});
    }

    void attach(softnic_config_t *cfg, softnic_log_level_t level)
    {
        cfg->log_level = level;
        cfg->log_fn    = cb;
        cfg->log_arg   = this;
    }

    /* the messages that contain needle */
    std::vector<msg> find(const std::string &needle)
    {
        std::lock_guard<std::mutex> guard(lock);
        std::vector<msg> found;
        for (const msg &m : msgs) {
            if (m.text.find(needle) != std::string::npos) {
                found.push_back(m);
            }
        }
        return found;
    }
};

/*
 * softnic_inproc with two connected QPs: a (send CQ m_scq, recv CQ m_rcq,
 * both on m_channel when connect() is given one) and b (on m_cq), and a
 * registered buffer. Each test opens the device with its configuration.
 */
class softnic_api : public softnic_inproc
{
  protected:
    bool open_in_setup() const override
    {
        return false;
    }

    void TearDown() override
    {
        destroy_qps();
        if (m_mr) {
            EXPECT_EQ(0, softnic_mr_dereg(m_mr));
        }
        for (softnic_cq_t *cq : {m_scq, m_rcq}) {
            if (cq) {
                EXPECT_EQ(0, softnic_cq_destroy(cq));
            }
        }
        if (m_channel) {
            EXPECT_EQ(0, softnic_comp_channel_destroy(m_channel));
        }
        softnic_inproc::TearDown();
    }

    void connect(softnic_comp_channel_t *channel = NULL)
    {
        m_buf.assign(8192, 0);
        m_mr = softnic_mr_reg(m_pd, m_buf.data(), m_buf.size(),
                              IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
        ASSERT_NE(nullptr, m_mr) << strerror(errno);
        m_scq = softnic_cq_create(m_dev, 64, &m_scq_ctx, channel);
        m_rcq = softnic_cq_create(m_dev, 64, &m_rcq_ctx, channel);
        ASSERT_TRUE(m_scq && m_rcq) << strerror(errno);
        m_a = tracked_qp(m_scq, m_rcq);
        m_b = tracked_qp();
        ASSERT_TRUE(m_a && m_b);
        ASSERT_NO_FATAL_FAILURE(bring_to(m_a, IBV_QPS_RTS, m_b->qp_num));
        ASSERT_NO_FATAL_FAILURE(bring_to(m_b, IBV_QPS_RTS, m_a->qp_num));
    }

    /* One WRITE from a to the buffer's second half */
    int post_write(uint64_t wr_id)
    {
        ibv_sge sge = {(uintptr_t)m_buf.data(), 64, m_mr->lkey};
        ibv_send_wr wr =
            rdma_wr(&sge, IBV_WR_RDMA_WRITE, wr_id, IBV_SEND_SIGNALED,
                    (uintptr_t)m_buf.data() + 4096, m_mr->rkey);
        ibv_send_wr *bad;
        return softnic_post_send(m_a, &wr, &bad);
    }

    /* One unsignaled SEND from b to a (a's receive completes on m_rcq) */
    int post_send_to_a(bool solicited)
    {
        ibv_sge rsge    = {(uintptr_t)m_buf.data(), 64, m_mr->lkey};
        ibv_recv_wr rwr = {}, *rbad;
        rwr.wr_id       = 7;
        rwr.sg_list     = &rsge;
        rwr.num_sge     = 1;
        int ret         = softnic_post_recv(m_a, &rwr, &rbad);
        if (ret) {
            return ret;
        }
        ibv_sge sge    = {(uintptr_t)m_buf.data() + 4096, 64, m_mr->lkey};
        ibv_send_wr wr = one_sge_wr(&sge, IBV_WR_SEND, 8,
                                    solicited ? IBV_SEND_SOLICITED : 0);
        ibv_send_wr *bad;
        return softnic_post_send(m_b, &wr, &bad);
    }

    /* Poll cq until one completion (bounded) */
    bool wait_wc(softnic_cq_t *cq, ibv_wc *wc)
    {
        for (double end = now_ms() + 10000; now_ms() < end;) {
            int n = softnic_cq_poll(cq, 1, wc);
            if (n != 0) {
                return n == 1;
            }
        }
        return false;
    }

    softnic_mr_t *m_mr                = nullptr;
    softnic_comp_channel_t *m_channel = nullptr;
    softnic_cq_t *m_scq = nullptr, *m_rcq = nullptr;
    softnic_qp_t *m_a = nullptr, *m_b = nullptr;
    std::vector<uint8_t> m_buf;
    int m_scq_ctx = 0, m_rcq_ctx = 0;
};

bool fd_readable(int fd, int timeout_ms)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    return poll(&pfd, 1, timeout_ms) == 1;
}

TEST(softnic_dev, list)
{
    softnic_config_t cfg     = {};
    softnic_dev_info_t *list = NULL;
    int count                = -1;

    cfg.ifaces = "lo";
    ASSERT_EQ(0, softnic_dev_list(&cfg, &list, &count));
    ASSERT_EQ(1, count);
    EXPECT_STREQ("soft_lo", list[0].name);
    EXPECT_STREQ("lo", list[0].ifname);
    const uint8_t gid[16] = {0, 0, 0,    0,    0,   0, 0, 0,
                             0, 0, 0xff, 0xff, 127, 0, 0, 1};
    EXPECT_EQ(0, memcmp(gid, list[0].gid.raw, 16));
    softnic_dev_list_free(list);

    /* NULL config: every interface that is up with an IPv4 address */
    ASSERT_EQ(0, softnic_dev_list(NULL, &list, &count));
    bool found_lo = false;
    for (int i = 0; i < count; ++i) {
        found_lo = found_lo || !strcmp(list[i].name, "soft_lo");
    }
    EXPECT_TRUE(found_lo);
    softnic_dev_list_free(list);

    cfg.log_level = SOFTNIC_LOG_NONE;
    cfg.ifaces    = "lo,orc_no_such_if";
    EXPECT_EQ(ENODEV, softnic_dev_list(&cfg, &list, &count));
    cfg.ifaces = "lo,,";
    EXPECT_EQ(EINVAL, softnic_dev_list(&cfg, &list, &count));
}

TEST(softnic_dev, open_errors)
{
    softnic_config_t cfg = {};

    cfg.ifaces    = "lo";
    cfg.log_level = SOFTNIC_LOG_NONE;
    errno         = 0;
    EXPECT_EQ(nullptr, softnic_dev_open(NULL, &cfg));
    EXPECT_EQ(EINVAL, errno);
    for (const char *name : {"lo", "soft_", "soft_orc_no_such_if", "mlx5_0"}) {
        errno = 0;
        EXPECT_EQ(nullptr, softnic_dev_open(name, &cfg)) << name;
        EXPECT_EQ(ENODEV, errno) << name;
    }
    /* an interface the configuration does not select */
    cfg.ifaces = "orc_no_such_if";
    errno      = 0;
    EXPECT_EQ(nullptr, softnic_dev_open("soft_lo", &cfg));
    EXPECT_EQ(ENODEV, errno);
}

TEST_F(softnic_api, queries)
{
    ASSERT_NO_FATAL_FAILURE(open(softnic_config_t()));
    EXPECT_STREQ("soft_lo", m_dev->name);

    ibv_device_attr dattr;
    ASSERT_EQ(0, softnic_dev_query(m_dev, &dattr));
    EXPECT_EQ(1, dattr.phys_port_cnt);
    EXPECT_EQ(1, dattr.max_pkeys);
    EXPECT_EQ(IBV_ATOMIC_HCA, dattr.atomic_cap);

    ibv_port_attr pattr;
    ASSERT_EQ(0, softnic_dev_query_port(m_dev, 1, &pattr));
    EXPECT_EQ(IBV_PORT_ACTIVE, pattr.state);
    EXPECT_EQ(IBV_LINK_LAYER_ETHERNET, pattr.link_layer);
    EXPECT_EQ(1, pattr.gid_tbl_len);
    EXPECT_EQ(1u, pattr.pkey_tbl_len);
    EXPECT_EQ(EINVAL, softnic_dev_query_port(m_dev, 2, &pattr));

    union ibv_gid gid;
    ASSERT_EQ(0, softnic_dev_query_gid(m_dev, 1, 0, &gid));
    EXPECT_EQ(0xff, gid.raw[10]);
    EXPECT_EQ(0xff, gid.raw[11]);
    EXPECT_EQ(127, gid.raw[12]);
    EXPECT_EQ(EINVAL, softnic_dev_query_gid(m_dev, 1, 1, &gid));
    EXPECT_EQ(EINVAL, softnic_dev_query_gid(m_dev, 0, 0, &gid));

    uint16_t pkey = 0;
    ASSERT_EQ(0, softnic_dev_query_pkey(m_dev, 1, 0, &pkey));
    EXPECT_EQ(0xffff, pkey);
    EXPECT_EQ(EINVAL, softnic_dev_query_pkey(m_dev, 1, 1, &pkey));
    EXPECT_EQ(EINVAL, softnic_dev_query_pkey(m_dev, 2, 0, &pkey));

    /* the address carries the GID and the listener's port into ah_attr */
    uint8_t addr[SOFTNIC_ADDR_LEN];
    ibv_ah_attr ah;
    ASSERT_EQ(0, softnic_dev_addr_pack(m_dev, addr, sizeof(addr)));
    ASSERT_EQ(0, softnic_dev_addr_unpack(m_dev, addr, sizeof(addr), &ah));
    EXPECT_EQ(1, ah.is_global);
    EXPECT_EQ(0, memcmp(gid.raw, ah.grh.dgid.raw, 16));
    EXPECT_NE(0, ah.dlid);
    EXPECT_EQ(1, ah.port_num);
    EXPECT_EQ(EINVAL, softnic_dev_addr_pack(m_dev, addr, sizeof(addr) - 1));
    EXPECT_EQ(EINVAL,
              softnic_dev_addr_unpack(m_dev, addr, sizeof(addr) - 1, &ah));
    addr[0] ^= 0xff; /* version */
    EXPECT_EQ(EINVAL, softnic_dev_addr_unpack(m_dev, addr, sizeof(addr), &ah));
}

TEST_F(softnic_api, close_with_qps_is_ebusy)
{
    ASSERT_NO_FATAL_FAILURE(open(softnic_config_t()));
    ASSERT_NO_FATAL_FAILURE(connect());
    EXPECT_EQ(EBUSY, softnic_dev_close(m_dev));
    EXPECT_EQ(EBUSY, softnic_cq_destroy(m_scq));
    EXPECT_EQ(EBUSY, softnic_cq_destroy(m_cq));
}

/* Each event is one 8-byte record: the cq_context of the CQ that fired
 * (the layout libibverbs' ibv_get_cq_event reads); one event per arming. */
TEST_F(softnic_api, comp_channel_event_records)
{
    ASSERT_NO_FATAL_FAILURE(open(softnic_config_t()));
    m_channel = softnic_comp_channel_create(m_dev);
    ASSERT_NE(nullptr, m_channel) << strerror(errno);
    ASSERT_NO_FATAL_FAILURE(connect(m_channel));
    EXPECT_EQ(m_channel, m_scq->channel);
    EXPECT_EQ(&m_scq_ctx, m_scq->cq_context);
    EXPECT_EQ(EBUSY, softnic_comp_channel_destroy(m_channel));

    int flags = fcntl(m_channel->fd, F_GETFL);
    ASSERT_EQ(0, fcntl(m_channel->fd, F_SETFL, flags | O_NONBLOCK));
    void *ctx = NULL;
    EXPECT_EQ(EAGAIN, softnic_cq_get_event(m_channel, &ctx));

    /* not armed: a completion writes no event */
    ibv_wc wc;
    ASSERT_EQ(0, post_write(1));
    ASSERT_TRUE(wait_wc(m_scq, &wc));
    EXPECT_FALSE(fd_readable(m_channel->fd, 0));

    /* armed: exactly one record, the cq_context */
    ASSERT_EQ(0, softnic_cq_req_notify(m_scq, 0));
    ASSERT_EQ(0, post_write(2));
    ASSERT_TRUE(wait_wc(m_scq, &wc));
    EXPECT_EQ(2u, wc.wr_id);
    ASSERT_TRUE(fd_readable(m_channel->fd, 10000));
    uint64_t record = 0;
    ASSERT_EQ((ssize_t)sizeof(record),
              read(m_channel->fd, &record, sizeof(record)));
    EXPECT_EQ((uintptr_t)&m_scq_ctx, record);
    softnic_cq_ack_events(m_scq, 1);

    /* the event disarmed the CQ */
    ASSERT_EQ(0, post_write(3));
    ASSERT_TRUE(wait_wc(m_scq, &wc));
    EXPECT_FALSE(fd_readable(m_channel->fd, 0));

    /* and softnic_cq_get_event returns the same context */
    ASSERT_EQ(0, softnic_cq_req_notify(m_scq, 0));
    ASSERT_EQ(0, post_write(4));
    ASSERT_TRUE(wait_wc(m_scq, &wc));
    ASSERT_TRUE(fd_readable(m_channel->fd, 10000));
    ASSERT_EQ(0, softnic_cq_get_event(m_channel, &ctx));
    EXPECT_EQ(&m_scq_ctx, ctx);
    softnic_cq_ack_events(m_scq, 1);
}

/* b answers every SEND it receives with a SEND of its own, at once, until
 * n answers went out or stop is set (bounded: 10 s per message) */
static void echo_sends(softnic_qp_t *b, softnic_cq_t *cq, uint64_t addr,
                       uint32_t lkey, int n, const std::atomic<bool> *stop)
{
    ibv_sge sge    = {addr, 64, lkey};
    ibv_send_wr wr = one_sge_wr(&sge, IBV_WR_SEND, 0, 0), *bad;
    ibv_wc wc;

    for (int i = 0; (i < n) && !*stop; ++i) {
        int got = 0;
        for (double end = now_ms() + 10000;
             !got && !*stop && (now_ms() < end);) {
            got = softnic_cq_poll(cq, 1, &wc);
        }
        if ((got != 1) || (wc.status != IBV_WC_SUCCESS) ||
            (softnic_post_send(b, &wr, &bad) != 0)) {
            return;
        }
    }
}

/* A SEND completes before anything its peer sent after receiving it: on
 * a NIC the responder's ACK travels ahead of its next request. Programs
 * that sleep on one channel for both CQs rely on it: perftest's latency
 * tests with -e poll the send CQ once after the first event that follows
 * a SEND. Here a sleeps on its channel and never polls (its service
 * thread completes both directions, same-host ring) while b answers each
 * SEND at once; the first event after each SEND must be the send CQ's. */
class softnic_answer : public softnic_api
{
  protected:
    void send_then_answer(const softnic_config_t &cfg);
};

void softnic_answer::send_then_answer(const softnic_config_t &cfg)
{
    const int n = 20;
    ASSERT_NO_FATAL_FAILURE(open(cfg));
    m_channel = softnic_comp_channel_create(m_dev);
    ASSERT_NE(nullptr, m_channel) << strerror(errno);
    ASSERT_NO_FATAL_FAILURE(connect(m_channel));

    ibv_sge sge     = {(uintptr_t)m_buf.data(), 64, m_mr->lkey};
    ibv_recv_wr rwr = {}, *rbad;
    rwr.sg_list     = &sge;
    rwr.num_sge     = 1;
    for (int i = 0; i < n; ++i) {
        ASSERT_EQ(0, softnic_post_recv(m_a, &rwr, &rbad));
        ASSERT_EQ(0, softnic_post_recv(m_b, &rwr, &rbad));
    }
    std::atomic<bool> stop(false);
    std::thread echo(echo_sends, m_b, m_cq, (uintptr_t)m_buf.data() + 4096,
                     m_mr->lkey, n, &stop);
    struct joiner {
        std::thread &t;
        std::atomic<bool> &stop;
        ~joiner()
        {
            stop = true;
            t.join();
        }
    } join_echo{echo, stop};

    ibv_send_wr wr = one_sge_wr(&sge, IBV_WR_SEND, 0, IBV_SEND_SIGNALED), *bad;
    for (int i = 0; i < n; ++i) {
        SCOPED_TRACE("SEND " + std::to_string(i));
        ASSERT_EQ(0, softnic_cq_req_notify(m_scq, 0));
        ASSERT_EQ(0, softnic_cq_req_notify(m_rcq, 0));
        wr.wr_id = i;
        ASSERT_EQ(0, softnic_post_send(m_a, &wr, &bad));
        void *first = NULL, *second = NULL;
        ASSERT_TRUE(fd_readable(m_channel->fd, 10000));
        ASSERT_EQ(0, softnic_cq_get_event(m_channel, &first));
        ASSERT_TRUE(fd_readable(m_channel->fd, 10000));
        ASSERT_EQ(0, softnic_cq_get_event(m_channel, &second));
        softnic_cq_ack_events(m_scq, 1);
        softnic_cq_ack_events(m_rcq, 1);
        EXPECT_EQ((void *)&m_scq_ctx, first)
            << "the answer completed before the SEND it answers";
        EXPECT_EQ((void *)&m_rcq_ctx, second);
        ibv_wc wc;
        ASSERT_EQ(1, softnic_cq_poll(m_scq, 1, &wc));
        EXPECT_EQ((uint64_t)i, wc.wr_id);
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << ibv_wc_status_str(wc.status);
        ASSERT_EQ(1, softnic_cq_poll(m_rcq, 1, &wc));
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << ibv_wc_status_str(wc.status);
    }
}

TEST_F(softnic_answer, send_completes_before_the_answer_to_it)
{
    send_then_answer(softnic_config_t());
}

/* solicited_only: only a solicited (or failed) completion fires */
TEST_F(softnic_api, comp_channel_solicited_only)
{
    ASSERT_NO_FATAL_FAILURE(open(softnic_config_t()));
    m_channel = softnic_comp_channel_create(m_dev);
    ASSERT_NE(nullptr, m_channel) << strerror(errno);
    ASSERT_NO_FATAL_FAILURE(connect(m_channel));

    ibv_wc wc;
    ASSERT_EQ(0, softnic_cq_req_notify(m_rcq, 1));
    ASSERT_EQ(0, post_send_to_a(false));
    ASSERT_TRUE(wait_wc(m_rcq, &wc));
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status);
    EXPECT_FALSE(fd_readable(m_channel->fd, 0));

    ASSERT_EQ(0, post_send_to_a(true));
    ASSERT_TRUE(wait_wc(m_rcq, &wc));
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status);
    ASSERT_TRUE(fd_readable(m_channel->fd, 10000));
    void *ctx = NULL;
    ASSERT_EQ(0, softnic_cq_get_event(m_channel, &ctx));
    EXPECT_EQ(&m_rcq_ctx, ctx);
    softnic_cq_ack_events(m_rcq, 1);
}

/* Asynchronous events reach the event callback as (type, context). lock
 * protects evs: the callback runs on softnic's threads too. */
struct event_sink {
    std::mutex lock;
    std::vector<std::pair<ibv_event_type, void *>> evs;

    static void cb(void *arg, ibv_event_type type, void *context)
    {
        event_sink *sink = (event_sink *)arg;
        std::lock_guard<std::mutex> guard(sink->lock);
        sink->evs.push_back({type, context});
    }

    size_t count(ibv_event_type type, void *context)
    {
        std::lock_guard<std::mutex> guard(lock);
        size_t n = 0;
        for (const auto &e : evs) {
            n += (e.first == type) && (e.second == context);
        }
        return n;
    }

    size_t total()
    {
        std::lock_guard<std::mutex> guard(lock);
        return evs.size();
    }
};

/* LAST_WQE_REACHED once each time a QP on an SRQ enters ERR, by modify or
 * by a failed WR, none for a QP with its own receive queue; CQ_ERR once
 * when a CQ overruns. */
TEST_F(softnic_api, async_events)
{
    event_sink sink;
    softnic_config_t cfg = {};
    cfg.event_fn         = event_sink::cb;
    cfg.event_arg        = &sink;
    ASSERT_NO_FATAL_FAILURE(open(cfg));

    ibv_srq_init_attr sattr = {};
    sattr.attr.max_wr       = 16;
    sattr.attr.max_sge      = 1;
    softnic_srq_t *srq      = softnic_srq_create(m_pd, &sattr);
    ASSERT_NE(nullptr, srq) << strerror(errno);
    int ctx_a = 0, ctx_cq = 0;
    softnic_qp_init_attr_t attr = {};
    attr.send_cq = attr.recv_cq = m_cq;
    attr.srq                    = srq;
    attr.qp_context             = &ctx_a;
    attr.cap.max_send_wr        = 16;
    attr.cap.max_send_sge       = 1;
    attr.qp_type                = IBV_QPT_RC;
    softnic_qp_t *qa            = softnic_qp_create(m_pd, &attr);
    ASSERT_NE(nullptr, qa) << strerror(errno);
    softnic_qp_t *qb = tracked_qp();
    ASSERT_NE(nullptr, qb);
    ASSERT_NO_FATAL_FAILURE(bring_to(qa, IBV_QPS_RTS, qb->qp_num));
    ASSERT_NO_FATAL_FAILURE(bring_to(qb, IBV_QPS_RTS, qa->qp_num));

    /* modify to ERR: once, and only for the SRQ's QP */
    ASSERT_EQ(0, modify(qb, IBV_QPS_ERR, IBV_QP_STATE));
    ASSERT_EQ(0, modify(qa, IBV_QPS_ERR, IBV_QP_STATE));
    ASSERT_EQ(0, modify(qa, IBV_QPS_ERR, IBV_QP_STATE));
    EXPECT_EQ(1u, sink.count(IBV_EVENT_QP_LAST_WQE_REACHED, &ctx_a));
    EXPECT_EQ(1u, sink.total()) << "an event for the QP without SRQ";

    /* a failed WR (a bad lkey) moves it to ERR again: once more */
    ASSERT_EQ(0, modify(qa, IBV_QPS_RESET, IBV_QP_STATE));
    ASSERT_EQ(0, modify(qb, IBV_QPS_RESET, IBV_QP_STATE));
    ASSERT_NO_FATAL_FAILURE(bring_to(qa, IBV_QPS_RTS, qb->qp_num));
    ASSERT_NO_FATAL_FAILURE(bring_to(qb, IBV_QPS_RTS, qa->qp_num));
    uint64_t word  = 0;
    ibv_sge sge    = {(uintptr_t)&word, 8, 0x7fffff00u};
    ibv_send_wr wr = one_sge_wr(&sge, IBV_WR_SEND, 0, IBV_SEND_SIGNALED), *bad;
    ASSERT_EQ(0, softnic_post_send(qa, &wr, &bad));
    ibv_wc wc;
    int n = 0;
    for (double end = now_ms() + 10000; (n == 0) && (now_ms() < end);) {
        n = softnic_cq_poll(m_cq, 1, &wc);
    }
    ASSERT_EQ(1, n);
    EXPECT_EQ(IBV_WC_LOC_PROT_ERR, wc.status);
    EXPECT_EQ(2u, sink.count(IBV_EVENT_QP_LAST_WQE_REACHED, &ctx_a));

    EXPECT_EQ(0, softnic_qp_destroy(qa));
    EXPECT_EQ(0, softnic_srq_destroy(srq));

    /* a 1-entry CQ given two completions: CQ_ERR once */
    softnic_cq_t *cq = softnic_cq_create(m_dev, 1, &ctx_cq, NULL);
    ASSERT_NE(nullptr, cq) << strerror(errno);
    softnic_qp_t *qc = tracked_qp(cq, m_cq);
    ASSERT_NE(nullptr, qc);
    ASSERT_NO_FATAL_FAILURE(bring_to(qc, IBV_QPS_ERR));
    for (uint64_t i = 0; i < 3; ++i) {
        wr.wr_id = i;
        sge.lkey = 0x7fffff00u;
        ASSERT_EQ(0, softnic_post_send(qc, &wr, &bad)); /* flushed */
    }
    for (double end = now_ms() + 10000;
         (sink.count(IBV_EVENT_CQ_ERR, &ctx_cq) == 0) && (now_ms() < end);) {
        softnic_cq_poll(m_cq, 1, &wc);
    }
    EXPECT_EQ(1u, sink.count(IBV_EVENT_CQ_ERR, &ctx_cq));
    destroy_qps();
    EXPECT_EQ(0, softnic_cq_destroy(cq));
}

/* The paths no_cma / no_ring select, as the connection reports them in
 * its DEBUG log message "qp 0x..: connected to qp 0x.. (<path>)". */
class softnic_config_paths : public softnic_api
{
  protected:
    std::string path_of(softnic_config_t cfg,
                        softnic_log_level_t level = SOFTNIC_LOG_DEBUG)
    {
        ibv_wc wc;

        m_sink.attach(&cfg, level);
        open(cfg);
        connect();
        if (HasFatalFailure()) {
            return "";
        }
        EXPECT_EQ(0, post_write(1));
        EXPECT_TRUE(wait_wc(m_scq, &wc));
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status);
        destroy_qps();

        /* a's connection to b was reported before its first WR went out */
        char needle[64];
        snprintf(needle, sizeof(needle), "qp 0x%x: connected to qp 0x%x (",
                 m_a_qpn, m_b_qpn);
        std::vector<log_sink::msg> found = m_sink.find(needle);
        if (found.empty()) {
            return "none";
        }
        EXPECT_EQ(1u, found.size());
        EXPECT_EQ(SOFTNIC_LOG_DEBUG, found[0].level);
        EXPECT_EQ("soft_lo", found[0].dev);
        std::string path = found[0].text.substr(strlen(needle));
        return path.substr(0, path.find(')'));
    }

    void connect()
    {
        softnic_api::connect();
        if (m_a && m_b) {
            m_a_qpn = m_a->qp_num;
            m_b_qpn = m_b->qp_num;
        }
    }

    uint32_t m_a_qpn = 0, m_b_qpn = 0;
    log_sink m_sink; /* outlives the device (closed in TearDown) */
};

TEST_F(softnic_config_paths, default_cma_and_ring)
{
    EXPECT_EQ("same host, CMA and ring", path_of(softnic_config_t()));
}

TEST_F(softnic_config_paths, no_ring)
{
    softnic_config_t cfg = {};
    cfg.no_ring          = 1;
    EXPECT_EQ("same host, CMA", path_of(cfg));
}

TEST_F(softnic_config_paths, no_cma)
{
    softnic_config_t cfg = {};
    cfg.no_cma           = 1;
    EXPECT_EQ("TCP", path_of(cfg));
}

/* a callback at INFO does not get the DEBUG message */
TEST_F(softnic_config_paths, info_level_filters_debug)
{
    EXPECT_EQ("none", path_of(softnic_config_t(), SOFTNIC_LOG_INFO));
}

/*
 * QPs addressed by GID and QPN alone (qpn_port_base): two devices of this
 * process, each with its own listener in the QPN range, the first port of
 * the range held by a listener that never answers. RTR gets dlid 0, or the
 * port of that listener: both are ignored, the QPN names the device.
 */
class softnic_qpn_addressing : public ::testing::Test
{
  protected:
    struct side {
        softnic_dev_t *dev = nullptr;
        softnic_pd_t *pd   = nullptr;
        softnic_cq_t *cq   = nullptr;
        softnic_qp_t *qp   = nullptr;
        softnic_mr_t *mr   = nullptr;
        std::vector<uint8_t> buf;
        ibv_ah_attr ah; /* the device's own address */
    };

    void SetUp() override
    {
        sockaddr_in sin = {};
        socklen_t len   = sizeof(sin);

        m_blocker = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(m_blocker, 0) << strerror(errno);
        sin.sin_family      = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ASSERT_EQ(0, bind(m_blocker, (sockaddr *)&sin, sizeof(sin)));
        ASSERT_EQ(0, listen(m_blocker, 16));
        ASSERT_EQ(0, getsockname(m_blocker, (sockaddr *)&sin, &len));
        m_base = ntohs(sin.sin_port);
        if (m_base > 65535 - 64) {
            GTEST_SKIP() << "ephemeral port " << m_base << " leaves no range";
        }
    }

    void TearDown() override
    {
        for (side *s : {&m_a, &m_b}) {
            if (s->qp) {
                EXPECT_EQ(0, softnic_qp_destroy(s->qp));
            }
            if (s->mr) {
                EXPECT_EQ(0, softnic_mr_dereg(s->mr));
            }
            if (s->cq) {
                EXPECT_EQ(0, softnic_cq_destroy(s->cq));
            }
            if (s->pd) {
                EXPECT_EQ(0, softnic_pd_dealloc(s->pd));
            }
            if (s->dev) {
                EXPECT_EQ(0, softnic_dev_close(s->dev));
            }
        }
        if (m_blocker >= 0) {
            close(m_blocker);
        }
    }

    void open(side *s)
    {
        softnic_config_t cfg        = {};
        softnic_qp_init_attr_t attr = {};
        std::vector<uint8_t> addr(SOFTNIC_ADDR_LEN);

        cfg.ifaces        = "lo";
        cfg.qpn_port_base = m_base;
        s->dev            = softnic_dev_open("soft_lo", &cfg);
        ASSERT_NE(nullptr, s->dev) << strerror(errno);
        s->pd = softnic_pd_alloc(s->dev);
        s->cq = softnic_cq_create(s->dev, 64, NULL, NULL);
        ASSERT_TRUE(s->pd && s->cq) << strerror(errno);
        s->buf.assign(4096, 0);
        s->mr =
            softnic_mr_reg(s->pd, s->buf.data(), s->buf.size(),
                           IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
        ASSERT_NE(nullptr, s->mr) << strerror(errno);
        attr.send_cq          = s->cq;
        attr.recv_cq          = s->cq;
        attr.cap.max_send_wr  = 16;
        attr.cap.max_recv_wr  = 16;
        attr.cap.max_send_sge = 1;
        attr.cap.max_recv_sge = 1;
        attr.qp_type          = IBV_QPT_RC;
        s->qp                 = softnic_qp_create(s->pd, &attr);
        ASSERT_NE(nullptr, s->qp) << strerror(errno);
        ASSERT_EQ(0, softnic_dev_addr_pack(s->dev, addr.data(), addr.size()));
        ASSERT_EQ(0, softnic_dev_addr_unpack(s->dev, addr.data(), addr.size(),
                                             &s->ah));
    }

    /* s's QP to RTS towards peer's QP, with dlid in the address */
    void connect(side *s, const side &peer, uint16_t dlid)
    {
        ibv_qp_attr a = {};

        a.qp_state        = IBV_QPS_INIT;
        a.port_num        = 1;
        a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE;
        ASSERT_EQ(0, softnic_qp_modify(s->qp, &a, INIT_REQ));
        a.qp_state           = IBV_QPS_RTR;
        a.ah_attr            = peer.ah;
        a.ah_attr.dlid       = dlid;
        a.path_mtu           = IBV_MTU_1024;
        a.dest_qp_num        = peer.qp->qp_num;
        a.max_dest_rd_atomic = 1;
        a.min_rnr_timer      = 12;
        ASSERT_EQ(0, softnic_qp_modify(s->qp, &a, RTR_REQ));
        a.qp_state      = IBV_QPS_RTS;
        a.timeout       = 10;
        a.retry_cnt     = 3;
        a.rnr_retry     = 3;
        a.max_rd_atomic = 1;
        ASSERT_EQ(0, softnic_qp_modify(s->qp, &a, RTS_REQ));
    }

    /* a WRITE of 64 bytes of value from s's buffer into peer's */
    void write(side *s, const side &peer, uint8_t value)
    {
        ibv_sge sge = {(uintptr_t)s->buf.data(), 64, s->mr->lkey};
        ibv_send_wr wr =
            rdma_wr(&sge, IBV_WR_RDMA_WRITE, 0, IBV_SEND_SIGNALED,
                    (uintptr_t)peer.buf.data() + 1024, peer.mr->rkey);
        ibv_send_wr *bad;
        ibv_wc wc;
        int n = 0;

        memset(s->buf.data(), value, 64);
        ASSERT_EQ(0, softnic_post_send(s->qp, &wr, &bad));
        for (double end = now_ms() + 20000; (n == 0) && (now_ms() < end);) {
            n = softnic_cq_poll(s->cq, 1, &wc);
        }
        ASSERT_EQ(1, n);
        ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << ibv_wc_status_str(wc.status);
        EXPECT_EQ(std::vector<uint8_t>(64, value),
                  std::vector<uint8_t>(peer.buf.begin() + 1024,
                                       peer.buf.begin() + 1024 + 64));
    }

    int m_blocker   = -1;
    uint16_t m_base = 0;
    side m_a, m_b;
};

TEST_F(softnic_qpn_addressing, qpn_names_the_listener)
{
    ASSERT_NO_FATAL_FAILURE(open(&m_a));
    ASSERT_NO_FATAL_FAILURE(open(&m_b));
    for (const side *s : {&m_a, &m_b}) {
        /* the listener: a free port of the range (not the taken base), and
         * the QPN's top bits are its offset */
        uint16_t port = s->ah.dlid;
        EXPECT_GT(port, m_base);
        EXPECT_LT(port, m_base + (1 << SOFTNIC_QPN_PORT_BITS));
        EXPECT_EQ((uint32_t)(port - m_base),
                  s->qp->qp_num >> SOFTNIC_QPN_PORT_SHIFT);
        EXPECT_EQ(0u, s->qp->qp_num >> 24);
    }
    EXPECT_NE(m_a.ah.dlid, m_b.ah.dlid);
    /* dlid 0, and dlid naming the silent listener: both ignored */
    ASSERT_NO_FATAL_FAILURE(connect(&m_a, m_b, 0));
    ASSERT_NO_FATAL_FAILURE(connect(&m_b, m_a, m_base));
    ASSERT_NO_FATAL_FAILURE(write(&m_a, m_b, 0xa5));
    ASSERT_NO_FATAL_FAILURE(write(&m_b, m_a, 0x5a));
}

/* without qpn_port_base an address needs the listener's port */
TEST_F(softnic_api, rtr_without_dlid_is_einval)
{
    ibv_qp_attr a;

    ASSERT_NO_FATAL_FAILURE(open(softnic_config_t()));
    softnic_qp_t *qp = tracked_qp();
    ASSERT_NE(nullptr, qp);
    ASSERT_EQ(0, modify(qp, IBV_QPS_INIT, INIT_REQ));
    fill_attr(&a, IBV_QPS_RTR, qp->qp_num);
    a.ah_attr.dlid = 0;
    EXPECT_EQ(EINVAL, softnic_qp_modify(qp, &a, RTR_REQ));
    EXPECT_EQ(IBV_QPS_INIT, state(qp));
}

/* log_level filters what reaches the callback */
TEST(softnic_log, levels_filter_the_callback)
{
    for (softnic_log_level_t level :
         {SOFTNIC_LOG_NONE, SOFTNIC_LOG_ERROR, SOFTNIC_LOG_WARN,
          SOFTNIC_LOG_INFO, SOFTNIC_LOG_DEBUG}) {
        softnic_config_t cfg = {};
        softnic_dev_info_t *list;
        int count;
        log_sink sink;

        sink.attach(&cfg, level);
        cfg.ifaces = "orc_no_such_if";
        EXPECT_EQ(ENODEV, softnic_dev_list(&cfg, &list, &count));
        std::vector<log_sink::msg> found = sink.find("orc_no_such_if");
        if (level == SOFTNIC_LOG_NONE) {
            EXPECT_TRUE(found.empty());
            continue;
        }
        ASSERT_EQ(1u, found.size()) << "level " << level;
        EXPECT_EQ(SOFTNIC_LOG_ERROR, found[0].level);
        EXPECT_EQ("-", found[0].dev);
        EXPECT_EQ("interface 'orc_no_such_if' is not up with an IPv4 address",
                  found[0].text);
    }
}

/* No callback: messages within log_level go to stderr, as documented */
TEST(softnic_log, default_sink_is_stderr)
{
    softnic_config_t cfg = {};
    softnic_dev_info_t *list;
    int count;

    cfg.ifaces = "orc_no_such_if";
    testing::internal::CaptureStderr();
    EXPECT_EQ(ENODEV, softnic_dev_list(&cfg, &list, &count));
    std::string err = testing::internal::GetCapturedStderr();
    EXPECT_EQ("[softnic " + std::to_string(getpid()) +
                  " -] interface 'orc_no_such_if' is not up with an IPv4 "
                  "address\n",
              err);

    cfg.log_level = SOFTNIC_LOG_NONE;
    testing::internal::CaptureStderr();
    EXPECT_EQ(ENODEV, softnic_dev_list(&cfg, &list, &count));
    EXPECT_EQ("", testing::internal::GetCapturedStderr());
}

/*
 * Messages of an open device reach the log callback with its name and their
 * level, and log_level filters them: a peer that breaks the wire protocol
 * is a WARN, a connection refused by the peer an INFO (both sides).
 */
class softnic_log_events : public softnic_api
{
  protected:
    void open_logged(softnic_log_level_t level)
    {
        softnic_config_t cfg = {};
        m_sink.attach(&cfg, level);
        open(cfg);
    }

    /* 72 bytes that are no HELLO, on a raw connection to the device's
     * listener; returns once the device closed the connection, which it
     * does after logging why */
    void send_garbage_hello()
    {
        ibv_ah_attr ah;
        ASSERT_EQ(0, softnic_dev_addr_unpack(m_dev, m_addr.data(),
                                             m_addr.size(), &ah));
        sockaddr_in sin = {};
        sin.sin_family  = AF_INET;
        sin.sin_port    = htons(ah.dlid);
        memcpy(&sin.sin_addr, &ah.grh.dgid.raw[12], 4);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(fd, 0) << strerror(errno);
        ASSERT_EQ(0, ::connect(fd, (sockaddr *)&sin, sizeof(sin)))
            << strerror(errno);
        std::vector<uint8_t> garbage(72, 0xa5);
        EXPECT_EQ((ssize_t)garbage.size(),
                  send(fd, garbage.data(), garbage.size(), MSG_NOSIGNAL));
        char c;
        ssize_t ret = -1;
        for (int i = 0; (i < 100) && (ret != 0); ++i) {
            if (!fd_readable(fd, 100)) {
                continue;
            }
            ret = recv(fd, &c, 1, 0);
            if ((ret < 0) && (errno == ECONNRESET)) {
                ret = 0;
            }
        }
        close(fd);
        EXPECT_EQ(0, ret) << "the device did not close the connection";
    }

    /* QP a connects to a QPN that does not exist on the device and a WRITE
     * fails; returns that QPN. The failure completes after both sides
     * logged the refusal. */
    uint32_t connect_to_nobody()
    {
        m_buf.assign(8192, 0);
        m_mr = softnic_mr_reg(m_pd, m_buf.data(), m_buf.size(),
                              IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
        EXPECT_NE(nullptr, m_mr) << strerror(errno);
        m_scq = softnic_cq_create(m_dev, 64, NULL, NULL);
        EXPECT_NE(nullptr, m_scq) << strerror(errno);
        m_a = tracked_qp(m_scq, m_scq);
        if (!m_mr || !m_scq || !m_a) {
            return 0;
        }
        /* a's slot, another generation; never 0 (bring_to: to itself) */
        uint32_t nobody = m_a->qp_num ^ 0x800000;
        bring_to(m_a, IBV_QPS_RTS, nobody);
        ibv_wc wc;
        EXPECT_EQ(0, post_write(1));
        EXPECT_TRUE(wait_wc(m_scq, &wc));
        EXPECT_EQ(IBV_WC_RETRY_EXC_ERR, wc.status)
            << ibv_wc_status_str(wc.status);
        return nobody;
    }

    std::vector<log_sink::msg> at_level(softnic_log_level_t level)
    {
        std::vector<log_sink::msg> out;
        for (const log_sink::msg &m : m_sink.find("")) {
            if (m.level == level) {
                out.push_back(m);
            }
        }
        return out;
    }

    log_sink m_sink; /* outlives the device (closed in TearDown) */
};

TEST_F(softnic_log_events, protocol_violation_is_a_warning)
{
    ASSERT_NO_FATAL_FAILURE(open_logged(SOFTNIC_LOG_WARN));
    ASSERT_NO_FATAL_FAILURE(send_garbage_hello());
    std::vector<log_sink::msg> found = m_sink.find("malformed hello");
    ASSERT_EQ(1u, found.size());
    EXPECT_EQ(SOFTNIC_LOG_WARN, found[0].level);
    EXPECT_EQ("soft_lo", found[0].dev);
    EXPECT_EQ("malformed hello", found[0].text);
}

TEST_F(softnic_log_events, error_level_drops_warnings)
{
    ASSERT_NO_FATAL_FAILURE(open_logged(SOFTNIC_LOG_ERROR));
    ASSERT_NO_FATAL_FAILURE(send_garbage_hello());
    EXPECT_TRUE(m_sink.find("").empty());
}

TEST_F(softnic_log_events, refused_connection_is_info)
{
    ASSERT_NO_FATAL_FAILURE(open_logged(SOFTNIC_LOG_INFO));
    uint32_t nobody = connect_to_nobody();
    ASSERT_FALSE(HasFailure());

    char target[64], initiator[64];
    snprintf(target, sizeof(target), "channel open for unknown qp 0x%x",
             nobody);
    snprintf(initiator, sizeof(initiator),
             "qp 0x%x: connection refused by the peer (%d)", m_a->qp_num,
             ENOENT);
    for (const char *text : {target, initiator}) {
        std::vector<log_sink::msg> found = m_sink.find(text);
        ASSERT_EQ(1u, found.size()) << text;
        EXPECT_EQ(SOFTNIC_LOG_INFO, found[0].level) << text;
        EXPECT_EQ("soft_lo", found[0].dev) << text;
        EXPECT_EQ(text, found[0].text);
    }
    EXPECT_TRUE(at_level(SOFTNIC_LOG_DEBUG).empty()) << "above log_level";
}

TEST_F(softnic_log_events, warn_level_drops_info)
{
    ASSERT_NO_FATAL_FAILURE(open_logged(SOFTNIC_LOG_WARN));
    connect_to_nobody();
    ASSERT_FALSE(HasFailure());
    EXPECT_TRUE(m_sink.find("").empty());
}

} // namespace

namespace
{

/* softnic_config_set on a copy of cfg: its return value, *out the result */
int config_set(softnic_config_t cfg, const char *name, const char *value,
               softnic_config_t *out, std::string *err = NULL)
{
    char buf[256] = "";
    int ret       = softnic_config_set(&cfg, name, value, buf, sizeof(buf));
    *out          = cfg;
    if (err) {
        *err = buf;
    }
    return ret;
}

bool same_config(const softnic_config_t &a, const softnic_config_t &b)
{
    return (a.ifaces == b.ifaces) && (a.no_cma == b.no_cma) &&
           (a.no_ring == b.no_ring) && (a.log_level == b.log_level) &&
           (a.log_fn == b.log_fn) && (a.log_arg == b.log_arg);
}

TEST(softnic_config, booleans)
{
    softnic_config_t cfg = {}, out;

    for (const char *name : {"NO_CMA", "NO_RING"}) {
        for (const char *yes : {"y", "yes", "on", "1", "Y", "YES", "On"}) {
            ASSERT_EQ(0, config_set(cfg, name, yes, &out)) << name << yes;
            EXPECT_EQ(1,
                      std::string(name) == "NO_CMA" ? out.no_cma : out.no_ring);
        }
        cfg.no_cma = cfg.no_ring = 1;
        for (const char *no : {"n", "no", "off", "0", "N", "No", "OFF"}) {
            ASSERT_EQ(0, config_set(cfg, name, no, &out)) << name << no;
            EXPECT_EQ(0,
                      std::string(name) == "NO_CMA" ? out.no_cma : out.no_ring);
        }
        cfg.no_cma = cfg.no_ring = 0;
    }
}

TEST(softnic_config, bad_booleans_rejected)
{
    softnic_config_t cfg = {}, out;
    std::string err;

    for (const char *name : {"NO_CMA", "NO_RING"}) {
        for (const char *bad :
             {"", "2", "-1", "true", "false", "yess", " y", "y ", "1x"}) {
            EXPECT_EQ(EINVAL, config_set(cfg, name, bad, &out, &err))
                << name << "='" << bad << "'";
            EXPECT_TRUE(same_config(cfg, out)) << "changed on error";
            EXPECT_EQ("invalid value '" + std::string(bad) +
                          "': expected one of y, yes, on, 1, n, no, off, 0",
                      err);
        }
    }
}

TEST(softnic_config, log_levels)
{
    softnic_config_t cfg = {}, out;
    std::string err;
    const struct {
        const char *value;
        softnic_log_level_t level;
    } good[] = {{"none", SOFTNIC_LOG_NONE},   {"error", SOFTNIC_LOG_ERROR},
                {"warn", SOFTNIC_LOG_WARN},   {"info", SOFTNIC_LOG_INFO},
                {"debug", SOFTNIC_LOG_DEBUG}, {"DEBUG", SOFTNIC_LOG_DEBUG},
                {"Warn", SOFTNIC_LOG_WARN}};

    for (const auto &g : good) {
        ASSERT_EQ(0, config_set(cfg, "LOG", g.value, &out)) << g.value;
        EXPECT_EQ(g.level, out.log_level) << g.value;
        if (strcasecmp(g.value, softnic_log_level_name(g.level))) {
            ADD_FAILURE() << g.value << " named "
                          << softnic_log_level_name(g.level);
        }
    }
    for (const char *bad : {"", "1", "0", "verbose", "warning", "errors"}) {
        EXPECT_EQ(EINVAL, config_set(cfg, "LOG", bad, &out, &err)) << bad;
        EXPECT_TRUE(same_config(cfg, out));
        EXPECT_EQ("invalid value '" + std::string(bad) +
                      "': expected one of none, error, warn, info, debug",
                  err);
    }
    EXPECT_STREQ("unknown", softnic_log_level_name((softnic_log_level_t)7));
}

TEST(softnic_config, ifaces)
{
    softnic_config_t cfg = {}, out;
    std::string err;

    for (const char *good : {"lo", "lo,eth0", "", "a,b,c", "123456789012345"}) {
        ASSERT_EQ(0, config_set(cfg, "IFACES", good, &out)) << good;
        EXPECT_EQ(good, out.ifaces) << "the string itself is kept";
    }
    for (const char *bad :
         {",", ",lo", "lo,", "lo,,eth0", "1234567890123456", "lo,,"}) {
        EXPECT_EQ(EINVAL, config_set(cfg, "IFACES", bad, &out, &err)) << bad;
        EXPECT_TRUE(same_config(cfg, out));
        EXPECT_EQ("invalid value '" + std::string(bad) +
                      "': expected comma-separated network interface names "
                      "(\"lo,eth0\"), or nothing for all",
                  err);
    }
}

TEST(softnic_config, unknown_names_and_null)
{
    softnic_config_t cfg = {}, out;
    std::string err;

    for (const char *bad : {"no_cma", "NO_CMAX", "", "LOG_LEVEL", "CMA"}) {
        EXPECT_EQ(EINVAL, config_set(cfg, bad, "y", &out, &err)) << bad;
        EXPECT_TRUE(same_config(cfg, out));
        EXPECT_EQ("unknown setting '" + std::string(bad) +
                      "': expected one of IFACES, NO_CMA, NO_RING, LOG",
                  err);
    }
    /* no value: what the setting takes */
    EXPECT_EQ(EINVAL, config_set(cfg, "LOG", NULL, &out, &err));
    EXPECT_TRUE(same_config(cfg, out));
    EXPECT_EQ("no value: expected one of none, error, warn, info, debug", err);
    /* no error buffer */
    EXPECT_EQ(EINVAL, softnic_config_set(&cfg, "NO_CMA", NULL, NULL, 0));
    EXPECT_EQ(EINVAL, softnic_config_set(&cfg, "NO_CMA", "x", NULL, 0));
    EXPECT_EQ(0, cfg.no_cma);
}

/* Variables <prefix><NAME>; all or nothing */
TEST(softnic_config, from_env)
{
    const char *vars[]   = {"SNTEST_IFACES", "SNTEST_NO_CMA", "SNTEST_NO_RING",
                            "SNTEST_LOG"};
    softnic_config_t cfg = {};
    char err[256];

    for (const char *v : vars) {
        unsetenv(v);
    }
    ASSERT_EQ(0, softnic_config_from_env(&cfg, "SNTEST_", err, sizeof(err)));
    EXPECT_TRUE(same_config(softnic_config_t(), cfg)) << "nothing set";

    setenv("SNTEST_NO_CMA", "yes", 1);
    setenv("SNTEST_LOG", "info", 1);
    setenv("SNTEST_IFACES", "lo", 1);
    ASSERT_EQ(0, softnic_config_from_env(&cfg, "SNTEST_", err, sizeof(err)))
        << err;
    EXPECT_EQ(1, cfg.no_cma);
    EXPECT_EQ(0, cfg.no_ring);
    EXPECT_EQ(SOFTNIC_LOG_INFO, cfg.log_level);
    EXPECT_STREQ("lo", cfg.ifaces);

    softnic_config_t before = {};
    cfg                     = before;
    setenv("SNTEST_NO_RING", "maybe", 1);
    EXPECT_EQ(EINVAL,
              softnic_config_from_env(&cfg, "SNTEST_", err, sizeof(err)));
    EXPECT_STREQ("SNTEST_NO_RING: invalid value 'maybe': expected one of y, "
                 "yes, on, 1, n, no, off, 0",
                 err);
    EXPECT_TRUE(same_config(before, cfg)) << "NO_CMA applied despite the error";

    std::string long_prefix(100, 'P');
    EXPECT_EQ(EINVAL, softnic_config_from_env(&cfg, long_prefix.c_str(), err,
                                              sizeof(err)));
    for (const char *v : vars) {
        unsetenv(v);
    }
}

/* A bad value of each setting, from the environment, while the other
 * settings are good: EINVAL naming the variable, its value and what it
 * takes, and nothing applied */
TEST(softnic_config, from_env_names_each_bad_variable)
{
    const struct {
        const char *name, *good, *bad, *expected;
    } knobs[] = {
        {"IFACES", "lo", "lo,,eth0",
         "comma-separated network interface names (\"lo,eth0\"), or nothing "
         "for all"},
        {"NO_CMA", "y", "2", "one of y, yes, on, 1, n, no, off, 0"},
        {"NO_RING", "off", "", "one of y, yes, on, 1, n, no, off, 0"},
        {"LOG", "debug", "verbose", "one of none, error, warn, info, debug"},
    };

    for (const auto &bad : knobs) {
        for (const auto &k : knobs) {
            setenv(("SNTEST_" + std::string(k.name)).c_str(),
                   (&k == &bad) ? k.bad : k.good, 1);
        }
        softnic_config_t cfg = {}, before = {};
        char err[256] = "";
        EXPECT_EQ(EINVAL,
                  softnic_config_from_env(&cfg, "SNTEST_", err, sizeof(err)));
        EXPECT_EQ("SNTEST_" + std::string(bad.name) + ": invalid value '" +
                      bad.bad + "': expected " + bad.expected,
                  std::string(err));
        EXPECT_TRUE(same_config(before, cfg)) << "applied despite " << err;
    }
    for (const auto &k : knobs) {
        unsetenv(("SNTEST_" + std::string(k.name)).c_str());
    }
}

/* softnic_post_send_now(): one WR that finished within the call (same
 * host, nothing outstanding: one CMA copy) is reported done and leaves no
 * completion entry, signaled or not */
TEST_F(softnic_api, post_send_now_finishes_a_cma_write_without_an_entry)
{
    ASSERT_NO_FATAL_FAILURE(open(softnic_config_t()));
    ASSERT_NO_FATAL_FAILURE(connect());
    /* larger than a WRITE that may wait in a batch (SN_CMA_BATCH_LEN) */
    const size_t len = 6000;
    std::vector<uint8_t> tbuf(2 * 8192, 0);
    softnic_mr_t *tmr =
        softnic_mr_reg(m_pd, tbuf.data(), tbuf.size(),
                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                           IBV_ACCESS_REMOTE_READ);
    ASSERT_NE(nullptr, tmr) << strerror(errno);
    ibv_wc wc;
    ASSERT_EQ(0, post_write(1)); /* the QP's connection is up after it */
    ASSERT_TRUE(wait_wc(m_scq, &wc));
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << "status " << wc.status;

    for (size_t i = 0; i < len; ++i) {
        m_buf[i]       = (uint8_t)(i * 7 + 1);
        tbuf[8192 + i] = (uint8_t)(i * 5 + 3);
    }
    ibv_sge sge    = {(uintptr_t)m_buf.data(), (uint32_t)len, m_mr->lkey};
    ibv_send_wr wr = rdma_wr(&sge, IBV_WR_RDMA_WRITE, 2, IBV_SEND_SIGNALED,
                             (uintptr_t)tbuf.data(), tmr->rkey);
    ibv_send_wr *bad;
    int done = -1;
    ASSERT_EQ(0, softnic_post_send_now(m_a, &wr, &bad, &done));
    EXPECT_EQ(1, done) << "a same-host WRITE on an idle QP";
    EXPECT_EQ(0, memcmp(m_buf.data(), tbuf.data(), len))
        << "placed when reported done";

    /* a READ too, unsignaled */
    wr.wr_id               = 3;
    wr.opcode              = IBV_WR_RDMA_READ;
    wr.send_flags          = 0;
    wr.wr.rdma.remote_addr = (uintptr_t)tbuf.data() + 8192;
    done                   = -1;
    ASSERT_EQ(0, softnic_post_send_now(m_a, &wr, &bad, &done));
    EXPECT_EQ(1, done) << "a same-host READ on an idle QP";
    EXPECT_EQ(0, memcmp(m_buf.data(), tbuf.data() + 8192, len))
        << "fetched when reported done";

    for (int i = 0; i < 1000; ++i) {
        ASSERT_EQ(0, softnic_cq_poll(m_scq, 1, &wc))
            << "an entry for wr_id " << wc.wr_id << " reported done";
    }
    /* the next WR's entry is its own */
    ASSERT_EQ(0, post_write(4));
    ASSERT_TRUE(wait_wc(m_scq, &wc));
    EXPECT_EQ(4u, wc.wr_id);
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << "status " << wc.status;

    /* one WR only */
    ibv_send_wr two[2] = {wr, wr};
    two[0].next        = &two[1];
    two[1].next        = NULL;
    done               = -1;
    EXPECT_EQ(EINVAL, softnic_post_send_now(m_a, two, &bad, &done));
    EXPECT_EQ(0, done);
    EXPECT_EQ(two, bad);
    EXPECT_EQ(0, softnic_mr_dereg(tmr));
}

/* softnic_post_send_now(): a WR posted behind an outstanding one, or one that
 * fails, is not reported done: it completes by its entry, in posting order
 * (else the caller would see it complete before the WR ahead of it, or
 * take a failed WRITE for a placed one) */
TEST_F(softnic_api, post_send_now_leaves_waiting_and_failed_wrs_to_entries)
{
    ASSERT_NO_FATAL_FAILURE(open(softnic_config_t()));
    ASSERT_NO_FATAL_FAILURE(connect());
    const size_t len = 6000; /* a WRITE that would not wait in a batch */
    std::vector<uint8_t> tbuf(8192, 0);
    softnic_mr_t *tmr =
        softnic_mr_reg(m_pd, tbuf.data(), tbuf.size(),
                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    ASSERT_NE(nullptr, tmr) << strerror(errno);
    ibv_wc wc;
    ASSERT_EQ(0, post_write(1));
    ASSERT_TRUE(wait_wc(m_scq, &wc));
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << "status " << wc.status;

    /* a SEND that waits for b's receive (RNR, retried forever) */
    ibv_sge ssge   = {(uintptr_t)m_buf.data(), 64, m_mr->lkey};
    ibv_send_wr wr = one_sge_wr(&ssge, IBV_WR_SEND, 2, IBV_SEND_SIGNALED), *bad;
    ASSERT_EQ(0, softnic_post_send(m_a, &wr, &bad));
    ibv_sge sge = {(uintptr_t)m_buf.data(), (uint32_t)len, m_mr->lkey};
    wr          = rdma_wr(&sge, IBV_WR_RDMA_WRITE, 3, IBV_SEND_SIGNALED,
                          (uintptr_t)tbuf.data(), tmr->rkey);
    int done    = -1;
    ASSERT_EQ(0, softnic_post_send_now(m_a, &wr, &bad, &done));
    EXPECT_EQ(0, done) << "a WRITE behind a waiting SEND";
    ibv_sge rsge    = {(uintptr_t)m_buf.data() + 2048, 64, m_mr->lkey};
    ibv_recv_wr rwr = {}, *rbad;
    rwr.wr_id       = 9;
    rwr.sg_list     = &rsge;
    rwr.num_sge     = 1;
    ASSERT_EQ(0, softnic_post_recv(m_b, &rwr, &rbad));
    for (uint64_t id : {2, 3}) {
        ibv_wc bwc;
        bool got = false;
        for (double end = now_ms() + 10000; !got && (now_ms() < end);) {
            softnic_cq_poll(m_cq, 1, &bwc); /* b takes the SEND */
            got = softnic_cq_poll(m_scq, 1, &wc) == 1;
        }
        ASSERT_TRUE(got) << "no entry for wr_id " << id;
        EXPECT_EQ(id, wc.wr_id) << "completions in posting order";
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << "status " << wc.status;
    }

    /* a WRITE its target refuses: an entry with the error, not "done" */
    wr.wr_id        = 4;
    wr.wr.rdma.rkey = tmr->rkey ^ 0x5a5a00;
    done            = -1;
    ASSERT_EQ(0, softnic_post_send_now(m_a, &wr, &bad, &done));
    EXPECT_EQ(0, done) << "a failed WRITE";
    ASSERT_TRUE(wait_wc(m_scq, &wc));
    EXPECT_EQ(4u, wc.wr_id);
    EXPECT_EQ(IBV_WC_REM_ACCESS_ERR, wc.status) << "status " << wc.status;
    EXPECT_EQ(IBV_QPS_ERR, state(m_a));
    EXPECT_EQ(0, softnic_mr_dereg(tmr));
}

/* softnic_post_send_inline() on two QPs of one instance with inline room */
class softnic_inline : public softnic_api
{
  protected:
    static constexpr uint32_t MAX_INLINE = 64;
    static constexpr uint32_t MSG        = 16; /* bytes per message */

    void connect_inline(const softnic_config_t &cfg)
    {
        m_max_inline = MAX_INLINE;
        ASSERT_NO_FATAL_FAILURE(open(cfg));
        ASSERT_NO_FATAL_FAILURE(connect());
    }

    /* a's signaled inline opcode of hdr_len bytes at hdr then len at data
     * (a WRITE to raddr in m_buf) */
    int post_inline(uint64_t wr_id, ibv_wr_opcode opcode, const void *hdr,
                    uint32_t hdr_len, const void *data, uint32_t len,
                    uint64_t raddr = 0)
    {
        softnic_inline_wr_t wr = {};
        wr.wr_id               = wr_id;
        wr.opcode              = opcode;
        wr.send_flags          = IBV_SEND_SIGNALED;
        wr.remote_addr         = raddr;
        wr.rkey                = m_mr->rkey;
        wr.hdr                 = hdr;
        wr.hdr_len             = hdr_len;
        wr.data                = data;
        wr.len                 = len;
        return softnic_post_send_inline(m_a, &wr);
    }

    /* a's signaled SEND of len bytes at m_buf[off], by softnic_post_send() */
    int post_send_wr(uint64_t wr_id, size_t off, uint32_t len)
    {
        ibv_sge sge = {(uintptr_t)m_buf.data() + off, len, m_mr->lkey};
        ibv_send_wr wr =
                        one_sge_wr(&sge, IBV_WR_SEND, wr_id, IBV_SEND_SIGNALED),
                    *bad;
        return softnic_post_send(m_a, &wr, &bad);
    }

    /* n entries of cq, b's receive CQ polled meanwhile (bounded) */
    std::vector<ibv_wc> poll_n(softnic_cq_t *cq, size_t n)
    {
        std::vector<ibv_wc> wcs;
        ibv_wc wc;
        for (double end = now_ms() + 10000;
             (wcs.size() < n) && (now_ms() < end);) {
            if ((cq != m_cq) && (softnic_cq_poll(m_cq, 1, &wc) == 1)) {
                m_b_wcs.push_back(wc);
            }
            if (softnic_cq_poll(cq, 1, &wc) == 1) {
                wcs.push_back(wc);
            }
        }
        return wcs;
    }

    void in_posting_order(const softnic_config_t &cfg);

    std::vector<ibv_wc> m_b_wcs; /* b's receives poll_n() took */
};

/* Messages 0..n-1 from a to b, MSG bytes each (byte k of message i:
 * i * MSG + k): SENDs by softnic_post_send() (from m_buf[64 i]) and by
 * softnic_post_send_inline() (header and data from two buffers), inline
 * WRITEs (to m_buf[6144 + MSG i]), mixed on one QP: a's completions come in
 * posting order, b receives the SENDs in posting order, each whole, and
 * the WRITEs are placed */
void softnic_inline::in_posting_order(const softnic_config_t &cfg)
{
    const int n = 48;
    ASSERT_NO_FATAL_FAILURE(connect_inline(cfg));
    std::vector<std::vector<uint8_t>> msgs(n, std::vector<uint8_t>(MSG));
    std::vector<int> sends;
    for (int i = 0; i < n; ++i) {
        for (uint32_t k = 0; k < MSG; ++k) {
            msgs[i][k] = (uint8_t)(i * MSG + k);
        }
        memcpy(&m_buf[64 * i], msgs[i].data(), MSG);
    }
    for (int i = 0; i < n; ++i) { /* b's receives at m_buf[4096 + 64 i] */
        ibv_sge rsge    = {(uintptr_t)m_buf.data() + 4096 + 64 * i, 64,
                           m_mr->lkey};
        ibv_recv_wr rwr = {}, *rbad;
        rwr.wr_id       = i;
        rwr.sg_list     = &rsge;
        rwr.num_sge     = 1;
        ASSERT_EQ(0, softnic_post_recv(m_b, &rwr, &rbad));
    }
    for (int i = 0; i < n; ++i) {
        const uint8_t *m = msgs[i].data();
        int ret;
        if (i % 4 == 3) {
            ret = post_inline(i, IBV_WR_RDMA_WRITE, m, 5, m + 5, MSG - 5,
                              (uintptr_t)m_buf.data() + 6144 + MSG * i);
        } else {
            sends.push_back(i);
            ret = (i % 2 == 1)
                      ? post_inline(i, IBV_WR_SEND, m, 5, m + 5, MSG - 5)
                      : post_send_wr(i, 64 * i, MSG);
        }
        ASSERT_EQ(0, ret) << "message " << i << ": " << strerror(ret);
    }
    std::vector<ibv_wc> s = poll_n(m_scq, n);
    ASSERT_EQ((size_t)n, s.size());
    for (int i = 0; i < n; ++i) {
        EXPECT_EQ((uint64_t)i, s[i].wr_id) << "completions in posting order";
        EXPECT_EQ(IBV_WC_SUCCESS, s[i].status) << "status " << s[i].status;
    }
    std::vector<ibv_wc> r = poll_n(m_cq, sends.size() - m_b_wcs.size());
    r.insert(r.begin(), m_b_wcs.begin(), m_b_wcs.end());
    ASSERT_EQ(sends.size(), r.size());
    for (size_t j = 0; j < r.size(); ++j) {
        EXPECT_EQ(j, r[j].wr_id) << "receives in order";
        EXPECT_EQ(IBV_WC_SUCCESS, r[j].status) << "status " << r[j].status;
        EXPECT_EQ((uint32_t)MSG, r[j].byte_len);
        EXPECT_EQ(0, memcmp(&m_buf[4096 + 64 * j], msgs[sends[j]].data(), MSG))
            << "receive " << j << " holds message " << sends[j];
    }
    for (int i = 3; i < n; i += 4) {
        EXPECT_EQ(0, memcmp(&m_buf[6144 + MSG * i], msgs[i].data(), MSG))
            << "WRITE " << i << " placed";
    }
}

TEST_F(softnic_inline, queues_in_posting_order_with_post_send)
{
    in_posting_order(softnic_config_t());
}

TEST_F(softnic_inline, queues_in_posting_order_with_post_send_on_tcp)
{
    softnic_config_t cfg = {};
    cfg.no_cma           = 1;
    cfg.no_ring          = 1;
    in_posting_order(cfg);
}

/* On a QP in ERR the inline entry's WRs complete at once with
 * IBV_WC_WR_FLUSH_ERR, in posting order with softnic_post_send()'s */
TEST_F(softnic_inline, err_qp_completes_it_flushed)
{
    ASSERT_NO_FATAL_FAILURE(connect_inline(softnic_config_t()));
    ASSERT_NO_FATAL_FAILURE(bring_to(m_a, IBV_QPS_ERR));
    const uint8_t hdr[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    ASSERT_EQ(0, post_inline(1, IBV_WR_SEND, hdr, 8, m_buf.data(), 8));
    ASSERT_EQ(0, post_send_wr(2, 0, 8));
    ASSERT_EQ(0, post_inline(3, IBV_WR_RDMA_WRITE, NULL, 0, m_buf.data(), 8,
                             (uintptr_t)m_buf.data() + 4096));
    std::vector<ibv_wc> s = poll_n(m_scq, 3);
    ASSERT_EQ(3u, s.size());
    for (uint64_t i = 0; i < 3; ++i) {
        EXPECT_EQ(i + 1, s[i].wr_id) << "flushed in posting order";
        EXPECT_EQ(IBV_WC_WR_FLUSH_ERR, s[i].status) << "status " << s[i].status;
    }
}

/* More than max_inline_data bytes, a READ, or a QP not yet in RTS: EINVAL,
 * nothing posted; max_inline_data bytes exactly go */
TEST_F(softnic_inline, refuses_what_post_send_refuses)
{
    ASSERT_NO_FATAL_FAILURE(connect_inline(softnic_config_t()));
    std::vector<uint8_t> data(MAX_INLINE, 0x5c);
    const uint64_t raddr = (uintptr_t)m_buf.data() + 4096;
    EXPECT_EQ(EINVAL, post_inline(1, IBV_WR_RDMA_WRITE, data.data(), 8,
                                  data.data(), MAX_INLINE - 7, raddr));
    EXPECT_EQ(EINVAL, post_inline(2, IBV_WR_RDMA_WRITE, NULL, 0, data.data(),
                                  MAX_INLINE + 1, raddr));
    EXPECT_EQ(EINVAL,
              post_inline(3, IBV_WR_RDMA_READ, NULL, 0, data.data(), 8, raddr));
    ASSERT_EQ(0, post_inline(4, IBV_WR_RDMA_WRITE, data.data(), 8, data.data(),
                             MAX_INLINE - 8, raddr));
    std::vector<ibv_wc> s = poll_n(m_scq, 1);
    ASSERT_EQ(1u, s.size());
    EXPECT_EQ(4u, s[0].wr_id) << "a refused WR left an entry";
    EXPECT_EQ(IBV_WC_SUCCESS, s[0].status) << "status " << s[0].status;
    EXPECT_EQ(0, memcmp(&m_buf[4096], data.data(), MAX_INLINE));
    EXPECT_EQ(IBV_QPS_RTS, state(m_a));

    softnic_qp_t *init = tracked_qp();
    ASSERT_NE(nullptr, init);
    ASSERT_NO_FATAL_FAILURE(bring_to(init, IBV_QPS_INIT));
    softnic_inline_wr_t wr = {};
    wr.opcode              = IBV_WR_SEND;
    EXPECT_EQ(EINVAL, softnic_post_send_inline(init, &wr));
}

/* A short error buffer gets a truncated, terminated message and nothing
 * beyond it is written; a zero-length one is not touched */
TEST(softnic_config, short_error_buffer)
{
    softnic_config_t cfg = {};
    char buf[32];

    for (const char *name : {"NO_CMA", "NO_SUCH_SETTING"}) {
        memset(buf, 'X', sizeof(buf));
        EXPECT_EQ(EINVAL, softnic_config_set(&cfg, name, "bogus", buf, 8));
        EXPECT_EQ(std::string(name) == "NO_CMA" ? "invalid" : "unknown",
                  std::string(buf))
            << name;
        EXPECT_EQ(std::string(24, 'X'), std::string(buf + 8, 24)) << name;
    }
    setenv("SNTEST_LOG", "loud", 1);
    memset(buf, 'X', sizeof(buf));
    EXPECT_EQ(EINVAL, softnic_config_from_env(&cfg, "SNTEST_", buf, 12));
    EXPECT_STREQ("SNTEST_LOG:", buf);
    EXPECT_EQ(std::string(20, 'X'), std::string(buf + 12, 20));
    unsetenv("SNTEST_LOG");

    memset(buf, 'X', sizeof(buf));
    EXPECT_EQ(EINVAL, softnic_config_set(&cfg, "LOG", "loud", buf, 0));
    EXPECT_EQ(std::string(32, 'X'), std::string(buf, 32));
}

} // namespace
