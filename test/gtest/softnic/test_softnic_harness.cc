/*
 * The harness itself: its two namespace hosts come up whatever else the
 * host's named namespaces hold at that moment, so that a two_hosts case
 * never skips for a reason of another process's making.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "softnic_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

using namespace softnic_test;

/* An entry of /run/netns that is no namespace (another process's `ip
 * netns add` or `del` half done) makes `ip link show` print an error line
 * before the veth's own: the pair still comes up. The entry's name is one
 * cleanup_stale() removes should this process die before it does. */
TEST(softnic_harness, two_hosts_come_up_beside_an_entry_that_is_no_namespace)
{
    if (geteuid() != 0) {
        GTEST_SKIP() << "network namespaces need root";
    }
    std::string entry = "/run/netns/orc-t-" + std::to_string(getpid()) + "-z";
    mkdir("/run/netns", 0755);
    int fd = open(entry.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    ASSERT_GE(fd, 0) << entry << ": " << strerror(errno);
    close(fd);

    netns_pair pair;
    std::string why;
    bool up = pair.create(&why);
    unlink(entry.c_str());
    EXPECT_TRUE(up) << why;
}

/* The peer's tcpconns counts the process's own ESTABLISHED TCP
 * connections, and only those: a raw connection from a to b's listener
 * adds one to each (on one host both ends are in the namespace's table;
 * each process counts its own), and closing it takes it away. Everything
 * on TCP (no_cma), so that b has a listener on one host too. */
class softnic_harness_topo : public softnic_topo
{
};

TEST_P(softnic_harness_topo, tcpconns_counts_the_process_connections)
{
    const std::string args = two_hosts() ? "" : "no_cma=1";
    peer_proc &a           = spawn('a', MNT_SAME, args);
    peer_proc &b           = spawn('b', MNT_SAME, args);
    ASSERT_FALSE(HasFailure());
    reply_t l = b.cmd("listeners");
    ASSERT_OK(l);
    ASSERT_GT(l.u("count"), 0u) << l.line;
    std::string lis  = l.s("l0");
    std::string ip   = lis.substr(0, lis.find(':'));
    std::string port = lis.substr(lis.find(':') + 1);
    if (ip == "0.0.0.0") {
        ip = ip_of('b');
    }
    reply_t a0 = a.cmd("tcpconns"), b0 = b.cmd("tcpconns");
    ASSERT_OK(a0);
    ASSERT_OK(b0);
    EXPECT_EQ(0u, a0.u("count")) << a0.line;
    EXPECT_EQ(0u, b0.u("count")) << b0.line;
    ASSERT_OK(a.cmd("rawopen host=" + ip + " port=" + port));
    /* b's accept is b's service thread's: bounded wait for it */
    reply_t b1;
    for (int i = 0; i < 100; ++i) {
        b1 = b.cmd("tcpconns");
        if (b1.u("count") > 0) {
            break;
        }
        usleep(10000);
    }
    reply_t a1 = a.cmd("tcpconns");
    EXPECT_EQ(1u, a1.u("count")) << a1.line;
    EXPECT_EQ(1u, b1.u("count")) << b1.line;
    /* b's end of it is the one its listener accepted */
    EXPECT_EQ(lis.substr(lis.find(':')),
              b1.s("c0").substr(b1.s("c0").find(':')))
        << b1.line;
    ASSERT_OK(a.cmd("rawclose"));
    reply_t a2 = a.cmd("tcpconns");
    EXPECT_EQ(0u, a2.u("count")) << a2.line;
}

INSTANTIATE_TEST_SUITE_P(topo, softnic_harness_topo,
                         ::testing::Values(TOPO_SAME_HOST, TOPO_TWO_HOSTS),
                         topology_name);
