/*
 * What one host is to softnic: two devices take the same-host paths (CMA,
 * shared-memory rings) when their shared-memory names resolve to the same
 * files and CMA reaches the peer's pid, whatever their mount namespaces
 * (contrib/softnic-run gives each command its own, /dev/shm bound in); a
 * peer with a /dev/shm of its own is another host and talks TCP. Either
 * way the data arrive. Needs CAP_SYS_ADMIN (mount namespaces). And what a
 * killed process leaves in the host's /dev/shm goes.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "softnic/softnic.h"
#include "softnic_harness.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

using namespace softnic_test;

namespace
{

class softnic_host : public softnic_topo
{
  protected:
    void SetUp() override
    {
        if (geteuid() != 0) {
            GTEST_SKIP() << "mount namespaces need root";
        }
        softnic_topo::SetUp();
    }

    /* a in the test's mount namespace, b in its own one as mnt says;
     * connected, then a WRITE, a READ and a SEND between them; returns
     * the path b's and a's connections took (equal) */
    std::string exchange(mnt_ns_t mnt)
    {
        peer_proc &a = spawn('a', MNT_SAME, "log=1");
        peer_proc &b = spawn('b', mnt, "log=1");
        reply_t ra, rb;
        mr_t la, rmb;

        la  = reg_mr(a, 1, 65536);
        rmb = reg_mr(b, 1, 65536);
        if (HasFailure()) {
            return "";
        }
        connect(a, 0, b, 0);
        EXPECT_OK(b.cmd("recv qp=0 mr=1 len=4096 wr=9"));
        EXPECT_OK(a.cmd("fill id=1 len=65536 seed=41"));
        wc_t wc =
            post_wait(a, "qp=0 op=WRITE mr=1 wr=1 len=65536" + rmb.remote());
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
        EXPECT_OK(b.cmd("check id=1 len=65536 seed=41"));
        EXPECT_OK(b.cmd("fill id=1 len=65536 seed=42"));
        wc = post_wait(a, "qp=0 op=READ mr=1 wr=2 len=65536" + rmb.remote());
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
        EXPECT_OK(a.cmd("check id=1 len=65536 seed=42"));
        EXPECT_OK(a.cmd("fill id=1 len=4096 seed=43"));
        wc = post_wait(a, "qp=0 op=SEND mr=1 wr=3 len=4096");
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
        std::vector<wc_t> wcs = poll(b, "recv", 1);
        EXPECT_EQ(1u, wcs.size());
        EXPECT_OK(b.cmd("check id=1 len=4096 seed=43"));

        ra = a.cmd("connpath qpn=" + std::to_string(m_last_ea.qpn));
        rb = b.cmd("connpath qpn=" + std::to_string(m_last_eb.qpn));
        EXPECT_OK(ra);
        EXPECT_OK(rb);
        EXPECT_EQ(ra.s("path"), rb.s("path"));
        return ra.s("path");
    }
};

TEST_P(softnic_host, mount_namespaces_sharing_dev_shm_are_one_host)
{
    EXPECT_EQ("cma_ring", exchange(MNT_NEW));
}

TEST_P(softnic_host, private_dev_shm_is_another_host)
{
    EXPECT_EQ("tcp", exchange(MNT_NEW_PRIVATE_SHM));
}

/* The names in /dev/shm of the shared memory (MR tables, rings) of
 * process pid of our pid namespace */
std::vector<std::string> shm_names_of(pid_t pid)
{
    std::vector<std::string> names;
    unsigned long long ns;
    struct stat st;
    struct dirent *de;
    int p;

    if (stat("/proc/self/ns/pid", &st) != 0) {
        ADD_FAILURE() << "stat /proc/self/ns/pid: " << strerror(errno);
        return names;
    }
    DIR *dir = opendir("/dev/shm");
    if (dir == NULL) {
        ADD_FAILURE() << "opendir /dev/shm: " << strerror(errno);
        return names;
    }
    while ((de = readdir(dir)) != NULL) {
        if ((sscanf(de->d_name, "orc_soft.%llu.%d.", &ns, &p) == 2) &&
            (ns == (unsigned long long)st.st_ino) && (p == pid)) {
            names.push_back(de->d_name);
        }
    }
    closedir(dir);
    return names;
}

/* A process killed after the last open of a device on its host leaves its
 * MR table in /dev/shm; a device that outlived it reaps it when it closes
 * (sn_int.h, "Model"): a peer opens its device after this process opened
 * its own, is killed, and this process's close removes the peer's table.
 * If another process on the host opens or closes a device between the kill
 * and the close, that one reaps it first: the test cannot tell, and skips. */
TEST(softnic_host_shm, table_of_a_killed_process_is_reaped_at_close)
{
    softnic_config_t cfg = {};
    cfg.ifaces           = "lo";
    softnic_dev_t *dev   = softnic_dev_open("soft_lo", &cfg);
    ASSERT_NE(nullptr, dev) << strerror(errno);
    pid_t pid;
    {
        peer_proc b("b", "");
        EXPECT_OK(b.cmd("open"));
        pid = b.pid();
        b.kill9();
    }
    bool left = !shm_names_of(pid).empty();
    EXPECT_EQ(0, softnic_dev_close(dev));
    std::vector<std::string> names = shm_names_of(pid);
    EXPECT_TRUE(names.empty())
        << "/dev/shm/" << (names.empty() ? "" : names[0])
        << " of killed process " << pid << " left after close";
    if (!left) {
        GTEST_SKIP() << "another process reaped the killed one's table first";
    }
}

/* one host only: across namespace hosts every path is TCP anyway */
INSTANTIATE_TEST_SUITE_P(topo, softnic_host, ::testing::Values(TOPO_SAME_HOST),
                         topology_name);

} // namespace
