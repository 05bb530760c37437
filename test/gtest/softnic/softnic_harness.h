/*
 * Test harness for softnic: helper processes (softnic_peer) driven over a
 * socket, and the two topologies every cross-process test runs on:
 *
 *   same_host  both peers in the test's network namespace, device soft_lo
 *   two_hosts  each peer in its own network namespace created by the test
 *              (orc-t-<pid>-a / -b), joined by a veth pair named orc0 on
 *              both sides (198.18.0.1/24, 198.18.0.2/24), device soft_orc0
 *
 * Synchronisation is by messages only: a command is answered when it is
 * done. Every wait is bounded; a peer that does not answer in time is killed
 * and the test fails instead of hanging.
 */
#ifndef ORC_TEST_SOFTNIC_HARNESS_H_
#define ORC_TEST_SOFTNIC_HARNESS_H_

#include "softnic_util.h"

#include <gtest/gtest.h>
#include <infiniband/verbs.h>
#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace softnic_test
{

/* Default bound for one command; peers bound their own polls at 10 s. */
const int CMD_TIMEOUT_MS = 30000;

typedef enum {
    TOPO_SAME_HOST,
    TOPO_TWO_HOSTS,
} topology_t;

std::string topology_name(const ::testing::TestParamInfo<topology_t> &info);

struct wc_t {
    uint64_t wr_id;
    int status;
    int opcode;
    uint32_t byte_len;
    uint32_t imm; /* as stored in ibv_wc.imm_data (network order) */
    unsigned flags;
    uint32_t src_qp;
};

struct reply_t {
    bool ok;
    std::string line;
    kv_t kv;
    std::vector<wc_t> wcs;

    explicit operator bool() const
    {
        return ok;
    }
    uint64_t u(const char *key) const;
    std::string s(const char *key) const;
};

/* Run a program (no shell); returns its exit status, or -1. */
int run_prog(const std::vector<std::string> &argv);

/* The mount namespace a peer runs in: the test's, or a new one that
 * shares the test's /dev/shm, or a new one with a /dev/shm of its own (a
 * fresh tmpfs). New ones need CAP_SYS_ADMIN. */
typedef enum {
    MNT_SAME,
    MNT_NEW,
    MNT_NEW_PRIVATE_SHM,
} mnt_ns_t;

/* A softnic_peer process, optionally started inside a network namespace
 * and a mount namespace of its own. */
class peer_proc
{
  public:
    peer_proc(const std::string &name, const std::string &netns,
              mnt_ns_t mnt = MNT_SAME);
    ~peer_proc();

    /* Send a command and wait for its reply (bounded). */
    reply_t cmd(const std::string &line, int timeout_ms = CMD_TIMEOUT_MS);
    /* Split form, to run commands on several peers concurrently. */
    bool send(const std::string &line);
    reply_t recv(int timeout_ms = CMD_TIMEOUT_MS);

    void kill9();
    /* SIGSTOP: the process stays alive but answers nothing (a hung host). */
    void freeze();
    /* SIGCONT: a frozen process runs on (a descheduled one scheduled again). */
    void thaw();
    /* Reap the process; returns false if it is still alive at the bound. */
    bool wait_exit(int timeout_ms);
    bool alive() const
    {
        return m_pid > 0;
    }
    pid_t pid() const
    {
        return m_pid;
    }
    const std::string &name() const
    {
        return m_name;
    }

  private:
    std::string m_name;
    pid_t m_pid;
    int m_fd;
    std::string m_inbuf;
    std::string m_last;
    int m_status; /* wait status of the exited process */
};

/* The two namespaces of the two_hosts topology. */
class netns_pair
{
  public:
    netns_pair();
    ~netns_pair();
    bool create(std::string *why);
    void destroy();
    /* Take the veth down / delete it: the two hosts can no longer talk. */
    bool cut_link(bool del);
    std::string ns(char side) const;

    static void cleanup_stale();

  private:
    std::string m_prefix;
    bool m_created;
};

struct mr_t {
    uint64_t addr;
    uint32_t rkey;
    uint32_t lkey;

    /* " raddr=... rkey=..." of this region at offset off, for a peer command */
    std::string remote(uint64_t off = 0) const
    {
        return " raddr=" + std::to_string(addr + off) +
               " rkey=" + std::to_string(rkey);
    }
};

struct qp_ep_t {
    uint32_t qpn;
    std::string addr;
};

/* Parameters of the INIT→RTR→RTS sequence in the peer ("connect"). */
struct conn_opts {
    int timeout        = 14;
    int retry          = 7;
    int rnr_retry      = 7;
    int min_rnr        = 12;
    std::string access = "LW,RW,RR,RA";
    std::string str() const;
};

/* Fixture parametrised over the topology. Peers are created with spawn();
 * side 'a' and 'b' are the two hosts (the same one in same_host). */
class softnic_topo : public ::testing::TestWithParam<topology_t>
{
  protected:
    void SetUp() override;
    void TearDown() override;

    bool two_hosts() const
    {
        return GetParam() == TOPO_TWO_HOSTS;
    }
    std::string dev_name() const;
    std::string ifaces() const;
    std::string ip_of(char side) const;

    /* A peer on host side with its device opened (open_args: more
     * arguments of the peer's open command), in the mount namespace mnt. */
    peer_proc &spawn(char side, mnt_ns_t mnt = MNT_SAME,
                     const std::string &open_args = "");

    mr_t reg_mr(peer_proc &p, int id, size_t len,
                const std::string &access = "LW,RW,RR,RA", size_t guard = 0);
    qp_ep_t create_qp(peer_proc &p, int qp, bool srq = false);
    /* Create qp qa on a and qb on b and connect them to each other. */
    void connect(peer_proc &a, int qa, peer_proc &b, int qb,
                 const conn_opts &oa = conn_opts(),
                 const conn_opts &ob = conn_opts(), bool srq_b = false);
    /* post + poll of one signaled WR; returns its completion. */
    wc_t post_wait(peer_proc &p, const std::string &post_args,
                   int timeout_ms = 10000);
    std::vector<wc_t> poll(peer_proc &p, const char *cq, int n,
                           int timeout_ms = 10000);
    /* poll, where no poll of p starts after until_ms (CLOCK_MONOTONIC, as
     * std::chrono::steady_clock): a window that ends when it should also
     * when the command or p's process runs late */
    std::vector<wc_t> poll_until(peer_proc &p, const char *cq, int n,
                                 double until_ms);
    /* the clock of poll_until's until_ms, now, in ms */
    static double now_ms()
    {
        return std::chrono::duration<double, std::milli>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }

    /* the two QPs of the last connect() */
    qp_ep_t m_last_ea, m_last_eb;
    std::vector<std::unique_ptr<peer_proc>> m_peers;
    std::unique_ptr<netns_pair> m_ns;
};

/* Both accept "<< more context". */
#define ASSERT_OK(_r)                                  \
    switch (0)                                         \
    case 0:                                            \
    default:                                           \
        if (const ::softnic_test::reply_t &_rr = (_r)) \
            ;                                          \
        else                                           \
            FAIL() << _rr.line << " "

#define EXPECT_OK(_r)                                  \
    switch (0)                                         \
    case 0:                                            \
    default:                                           \
        if (const ::softnic_test::reply_t &_rr = (_r)) \
            ;                                          \
        else                                           \
            ADD_FAILURE() << _rr.line << " "

const char *wc_status_name(int status);

} /* namespace softnic_test */

#endif
