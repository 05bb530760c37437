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
