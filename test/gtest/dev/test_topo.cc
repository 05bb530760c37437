/*
 * Device topology (orc_topo.h) on machines this VM is not: an hwloc XML
 * topology with two packages, a NUMA node and a NIC on each
 * (test/gtest/dev/topo/two-numa.xml), and an hwloc synthetic topology with
 * no PCI information at all. Checks each device's PCI address, NUMA node
 * and CPUs, the distance rule and the nearest-first order for a thread bound
 * to either node or to neither; then the real machine's topology.
 */
#include <gtest/gtest.h>

#include "orc_topo.h"

#include <hwloc.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <thread>
#include <vector>

namespace
{

std::string topo_file(const char *name)
{
    const char *srcdir = getenv("ORC_TOP_SRCDIR");

    return std::string((srcdir != NULL) ? srcdir : ".") +
           "/test/gtest/dev/topo/" + name;
}

orc_dev_info_t soft_dev(const char *ifname)
{
    orc_dev_info_t info;

    memset(&info, 0, sizeof(info));
    snprintf(info.name, sizeof(info.name), "soft_%s", ifname);
    snprintf(info.netdev, sizeof(info.netdev), "%s", ifname);
    info.backend   = ORC_DEV_BACKEND_SOFT;
    info.num_ports = 1;
    return info;
}

orc_dev_info_t verbs_dev(const char *name)
{
    orc_dev_info_t info;

    memset(&info, 0, sizeof(info));
    snprintf(info.name, sizeof(info.name), "%s", name);
    info.backend   = ORC_DEV_BACKEND_VERBS;
    info.num_ports = 1;
    return info;
}

orc_topo_loc_t locate(const orc_topo_t *topo, const orc_dev_info_t &info)
{
    orc_topo_loc_t loc;

    orc_topo_locate(topo, info.backend, info.name, info.netdev, &loc);
    return loc;
}

std::string pci(const orc_topo_loc_t &loc)
{
    char buf[32];

    if (!loc.has_pci) {
        return "none";
    }
    snprintf(buf, sizeof(buf), "%04x:%02x:%02x.%x", loc.pci_domain, loc.pci_bus,
             loc.pci_dev, loc.pci_func);
    return buf;
}

cpu_set_t cpus_of(std::vector<int> list)
{
    cpu_set_t set;

    CPU_ZERO(&set);
    for (int cpu : list) {
        CPU_SET(cpu, &set);
    }
    return set;
}

std::vector<std::string> names(const std::vector<orc_dev_info_t> &list)
{
    std::vector<std::string> result;

    for (const orc_dev_info_t &info : list) {
        result.push_back(info.name);
    }
    return result;
}

/* A thread bound to `cpus` (NULL: unbound) would see the devices in this
 * order */
std::vector<std::string> order_for(const orc_topo_t *topo,
                                   std::vector<orc_dev_info_t> list,
                                   const cpu_set_t *cpus)
{
    orc_topo_sort(topo, list.data(), (int)list.size(), cpus);
    return names(list);
}

class topo_two_numa : public ::testing::Test
{
  protected:
    void SetUp() override
    {
        ASSERT_EQ(0, orc_topo_load_xml(topo_file("two-numa.xml").c_str(),
                                       &m_topo));
    }

    void TearDown() override
    {
        orc_topo_destroy(m_topo);
    }

    orc_topo_t *m_topo = NULL;
};

class topo_no_pci : public ::testing::Test
{
  protected:
    void SetUp() override
    {
        ASSERT_EQ(0, orc_topo_load_synthetic("pack:2 numa:1 pu:1", &m_topo));
    }

    void TearDown() override
    {
        orc_topo_destroy(m_topo);
    }

    orc_topo_t *m_topo = NULL;
};

} // namespace

TEST_F(topo_two_numa, soft_devices_sit_at_their_interface_nic)
{
    orc_topo_loc_t nic0 = locate(m_topo, soft_dev("nic0"));
    orc_topo_loc_t nic1 = locate(m_topo, soft_dev("nic1"));
    cpu_set_t cpu0 = cpus_of({0}), cpu1 = cpus_of({1});

    EXPECT_EQ(2, orc_topo_numa_count(m_topo));

    ASSERT_TRUE(nic0.found);
    EXPECT_EQ("0000:03:00.0", pci(nic0));
    EXPECT_EQ(0, nic0.numa_node);
    EXPECT_TRUE(CPU_EQUAL(&cpu0, &nic0.cpus));

    ASSERT_TRUE(nic1.found);
    EXPECT_EQ("0000:81:00.0", pci(nic1));
    EXPECT_EQ(1, nic1.numa_node);
    EXPECT_TRUE(CPU_EQUAL(&cpu1, &nic1.cpus));
}

TEST_F(topo_two_numa, verbs_devices_sit_at_their_hca)
{
    orc_topo_loc_t hca0 = locate(m_topo, verbs_dev("mlx5_0"));
    orc_topo_loc_t hca1 = locate(m_topo, verbs_dev("mlx5_1"));

    ASSERT_TRUE(hca0.found);
    EXPECT_EQ("0000:03:00.0", pci(hca0));
    EXPECT_EQ(0, hca0.numa_node);
    ASSERT_TRUE(hca1.found);
    EXPECT_EQ("0000:81:00.0", pci(hca1));
    EXPECT_EQ(1, hca1.numa_node);

    /* the verbs name wins over the GID's interface */
    orc_dev_info_t named = verbs_dev("mlx5_1");
    snprintf(named.netdev, sizeof(named.netdev), "nic0");
    EXPECT_EQ("0000:81:00.0", pci(locate(m_topo, named)));
}

/* A RoCE device hwloc does not list (softnic's provider) sits where its
 * GID's interface sits: at the same PCI device and NUMA node as the soft
 * device on that interface */
TEST_F(topo_two_numa, unlisted_verbs_device_sits_at_its_gid_interface)
{
    orc_dev_info_t soft_nic1 = soft_dev("nic1");
    orc_dev_info_t verbs     = verbs_dev("soft_nic1");
    cpu_set_t cpu1           = cpus_of({1});

    snprintf(verbs.netdev, sizeof(verbs.netdev), "nic1");
    orc_topo_loc_t loc = locate(m_topo, verbs);
    ASSERT_TRUE(loc.found);
    EXPECT_EQ("0000:81:00.0", pci(loc));
    EXPECT_EQ(1, loc.numa_node);
    EXPECT_TRUE(CPU_EQUAL(&cpu1, &loc.cpus));
    EXPECT_EQ(pci(locate(m_topo, soft_nic1)), pci(loc));

    /* an interface hwloc does not know either: no locality */
    snprintf(verbs.netdev, sizeof(verbs.netdev), "lo");
    EXPECT_FALSE(locate(m_topo, verbs).found);
}

TEST_F(topo_two_numa, unknown_devices_have_no_locality)
{
    for (const orc_dev_info_t &info :
         {soft_dev("lo"), soft_dev(""), soft_dev("mlx5_0"), verbs_dev("mlx5_9"),
          verbs_dev("nic0")}) {
        orc_topo_loc_t loc = locate(m_topo, info);
        cpu_set_t cpu0     = cpus_of({0});

        EXPECT_FALSE(loc.found) << info.name;
        EXPECT_FALSE(loc.has_pci) << info.name;
        EXPECT_EQ(-1, loc.numa_node) << info.name;
        EXPECT_FALSE(orc_topo_is_remote(&loc, &cpu0)) << info.name;
    }
}

TEST_F(topo_two_numa, remote_means_no_local_cpu)
{
    orc_topo_loc_t nic0 = locate(m_topo, soft_dev("nic0"));
    orc_topo_loc_t nic1 = locate(m_topo, soft_dev("nic1"));
    cpu_set_t cpu0 = cpus_of({0}), cpu1 = cpus_of({1});
    cpu_set_t both = cpus_of({0, 1}), none = cpus_of({});

    EXPECT_FALSE(orc_topo_is_remote(&nic0, &cpu0));
    EXPECT_TRUE(orc_topo_is_remote(&nic1, &cpu0));
    EXPECT_TRUE(orc_topo_is_remote(&nic0, &cpu1));
    EXPECT_FALSE(orc_topo_is_remote(&nic1, &cpu1));
    /* unbound (both nodes), or binding unknown: no preference */
    EXPECT_FALSE(orc_topo_is_remote(&nic0, &both));
    EXPECT_FALSE(orc_topo_is_remote(&nic1, &both));
    EXPECT_FALSE(orc_topo_is_remote(&nic1, &none));
    EXPECT_FALSE(orc_topo_is_remote(&nic1, NULL));
}

TEST_F(topo_two_numa, nearest_device_first)
{
    std::vector<orc_dev_info_t> list = {soft_dev("nic0"), soft_dev("nic1"),
                                        soft_dev("lo")};
    std::vector<orc_dev_info_t> hcas = {verbs_dev("mlx5_0"),
                                        verbs_dev("mlx5_1")};
    cpu_set_t cpu0 = cpus_of({0}), cpu1 = cpus_of({1}), both = cpus_of({0, 1});

    typedef std::vector<std::string> names_t;
    EXPECT_EQ(names_t({"soft_nic0", "soft_lo", "soft_nic1"}),
              order_for(m_topo, list, &cpu0));
    EXPECT_EQ(names_t({"soft_nic1", "soft_lo", "soft_nic0"}),
              order_for(m_topo, list, &cpu1));
    EXPECT_EQ(names_t({"soft_nic0", "soft_nic1", "soft_lo"}),
              order_for(m_topo, list, &both));
    EXPECT_EQ(names_t({"soft_nic0", "soft_nic1", "soft_lo"}),
              order_for(m_topo, list, NULL));
    EXPECT_EQ(names_t({"mlx5_1", "mlx5_0"}), order_for(m_topo, hcas, &cpu1));
    EXPECT_EQ(names_t({"mlx5_0", "mlx5_1"}), order_for(m_topo, hcas, &cpu0));
}

TEST_F(topo_two_numa, summary)
{
    std::vector<orc_dev_info_t> list = {soft_dev("nic0"), soft_dev("nic1"),
                                        soft_dev("lo")};
    char buf[ORC_TOPO_SUMMARY_MAX];

    EXPECT_STREQ("2 NUMA nodes; soft_nic0 pci 0000:03:00.0 numa 0 cpus 0; "
                 "soft_nic1 pci 0000:81:00.0 numa 1 cpus 1; soft_lo unknown",
                 orc_topo_summary(m_topo, list.data(), (int)list.size(), buf,
                                  sizeof(buf)));

    /* too small: cut, marked, terminated */
    char small[40];
    memset(small, 'x', sizeof(small));
    orc_topo_summary(m_topo, list.data(), (int)list.size(), small,
                     sizeof(small));
    EXPECT_EQ(sizeof(small) - 1, strlen(small));
    EXPECT_STREQ("...", small + sizeof(small) - 4);
    EXPECT_EQ(0, strncmp("2 NUMA nodes; soft_nic0 pci 0000:03", small, 35));
}

TEST_F(topo_no_pci, nothing_found_no_preference)
{
    std::vector<orc_dev_info_t> list = {soft_dev("nic1"), soft_dev("nic0"),
                                        verbs_dev("mlx5_0")};
    cpu_set_t cpu0 = cpus_of({0}), cpu1 = cpus_of({1});
    char buf[ORC_TOPO_SUMMARY_MAX];

    EXPECT_EQ(2, orc_topo_numa_count(m_topo));
    for (const orc_dev_info_t &info : list) {
        orc_topo_loc_t loc = locate(m_topo, info);

        EXPECT_FALSE(loc.found) << info.name;
        EXPECT_FALSE(loc.has_pci) << info.name;
        EXPECT_EQ(-1, loc.numa_node) << info.name;
        EXPECT_FALSE(orc_topo_is_remote(&loc, &cpu0)) << info.name;
        EXPECT_FALSE(orc_topo_is_remote(&loc, &cpu1)) << info.name;
    }

    typedef std::vector<std::string> names_t;
    names_t given = names(list);
    EXPECT_EQ(given, order_for(m_topo, list, &cpu0));
    EXPECT_EQ(given, order_for(m_topo, list, &cpu1));
    EXPECT_STREQ("2 NUMA nodes; soft_nic1 unknown; soft_nic0 unknown; "
                 "mlx5_0 unknown",
                 orc_topo_summary(m_topo, list.data(), (int)list.size(), buf,
                                  sizeof(buf)));
}

TEST(topo, no_topology_at_all)
{
    orc_dev_info_t info = soft_dev("nic0");
    orc_topo_loc_t loc  = locate(NULL, info);
    char buf[ORC_TOPO_SUMMARY_MAX];

    EXPECT_FALSE(loc.found);
    EXPECT_EQ(0, orc_topo_numa_count(NULL));
    EXPECT_STREQ("topology unknown; soft_nic0 unknown",
                 orc_topo_summary(NULL, &info, 1, buf, sizeof(buf)));
}

TEST(topo, bad_sources_fail_cleanly)
{
    orc_topo_t *topo = NULL;

    EXPECT_NE(0, orc_topo_load_xml("/nonexistent/topology.xml", &topo));
    EXPECT_EQ(NULL, topo);
    EXPECT_NE(0,
              orc_topo_load_xml(topo_file("../test_topo.cc").c_str(), &topo));
    EXPECT_EQ(NULL, topo);
    EXPECT_NE(0, orc_topo_load_synthetic("pack:two pu:x", &topo));
    EXPECT_EQ(NULL, topo);
}

/* The thread's own binding, not the process's: bind one thread to one CPU
 * and ask from that thread and from another */
TEST(topo, thread_cpus_is_the_calling_threads_binding)
{
    cpu_set_t mine, theirs, one;
    int first = -1;

    ASSERT_EQ(0, orc_topo_thread_cpus(&mine));
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (CPU_ISSET(cpu, &mine)) {
            first = cpu;
            break;
        }
    }
    ASSERT_GE(first, 0);
    one = cpus_of({first});

    std::thread bound([&]() {
        ASSERT_EQ(0, pthread_setaffinity_np(pthread_self(), sizeof(one), &one));
        ASSERT_EQ(0, orc_topo_thread_cpus(&theirs));
    });
    bound.join();
    EXPECT_TRUE(CPU_EQUAL(&one, &theirs));

    ASSERT_EQ(0, orc_topo_thread_cpus(&theirs));
    EXPECT_TRUE(CPU_EQUAL(&mine, &theirs));
}

/* This machine: loaded once per process, whichever thread asks first */
TEST(topo_machine, loaded_once)
{
    std::vector<orc_topo_t *> seen(4, NULL);
    std::vector<std::thread> threads;

    for (size_t i = 0; i < seen.size(); ++i) {
        threads.emplace_back([&seen, i]() { seen[i] = orc_topo_get(); });
    }
    for (std::thread &thread : threads) {
        thread.join();
    }
    ASSERT_NE((orc_topo_t *)NULL, seen[0]);
    for (orc_topo_t *topo : seen) {
        EXPECT_EQ(seen[0], topo);
    }
    EXPECT_EQ(seen[0], orc_topo_get());
    EXPECT_GE(orc_topo_numa_count(seen[0]), 1);
}

/* This machine: a soft device sits at the PCI device hwloc shows under its
 * interface (asked here of hwloc directly), lo at none */
TEST(topo_machine, soft_device_at_the_interface_pci_device)
{
    hwloc_topology_t topology;
    hwloc_obj_t osdev = NULL;
    int checked       = 0;

    ASSERT_EQ(0, hwloc_topology_init(&topology));
    hwloc_topology_set_io_types_filter(topology,
                                       HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    ASSERT_EQ(0, hwloc_topology_load(topology));

    while ((osdev = hwloc_get_next_osdev(topology, osdev)) != NULL) {
        if ((osdev->attr->osdev.type != HWLOC_OBJ_OSDEV_NETWORK) ||
            (osdev->parent == NULL) ||
            (osdev->parent->type != HWLOC_OBJ_PCI_DEVICE)) {
            continue;
        }
        char expected[32];
        hwloc_obj_t pcidev = osdev->parent;
        snprintf(expected, sizeof(expected), "%04x:%02x:%02x.%x",
                 pcidev->attr->pcidev.domain, pcidev->attr->pcidev.bus,
                 pcidev->attr->pcidev.dev, pcidev->attr->pcidev.func);

        orc_topo_loc_t loc = locate(orc_topo_get(), soft_dev(osdev->name));
        EXPECT_TRUE(loc.found) << osdev->name;
        EXPECT_EQ(expected, pci(loc)) << osdev->name;
        ++checked;
    }
    hwloc_topology_destroy(topology);

    EXPECT_FALSE(locate(orc_topo_get(), soft_dev("lo")).found);
    if (checked == 0) {
        GTEST_SKIP() << "hwloc shows no network interface on a PCI device";
    }
}
