/*
 * Topology as UCX sees it: each soft device's system device is the PCI
 * device hwloc shows under its network interface (this machine), the node
 * record in orcd carries the topology summary, and a device remote to the
 * opening thread's CPUs reports lower estimates (child processes shown an
 * hwloc XML machine with the test interface on NUMA node 0, bound to CPU 0,
 * CPU 1 or both).
 */
#include "orc_uct_env.h"

extern "C" {
#include "orc_client.h"
#include <ucs/sys/topo/base/topo.h>
}

#include <hwloc.h>
#include <jansson.h>

#include <fstream>
#include <list>
#include <map>
#include <pthread.h>
#include <sstream>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

using namespace orc_test;

namespace
{

std::vector<std::string> md_names(uct_component_h component)
{
    std::vector<uct_md_resource_desc_t> resources;
    std::vector<std::string> names;
    uct_component_attr_t attr;

    attr.field_mask = UCT_COMPONENT_ATTR_FIELD_MD_RESOURCE_COUNT;
    EXPECT_EQ(UCS_OK, uct_component_query(component, &attr));
    resources.resize(attr.md_resource_count);
    attr.field_mask   = UCT_COMPONENT_ATTR_FIELD_MD_RESOURCES;
    attr.md_resources = resources.data();
    EXPECT_EQ(UCS_OK, uct_component_query(component, &attr));
    for (const uct_md_resource_desc_t &r : resources) {
        names.push_back(r.md_name);
    }
    return names;
}

/* The md's only transport resource (port 1) and its md attributes */
void query_md(uct_component_h component, const std::string &name,
              uct_tl_resource_desc_t *rsc, uct_md_attr_t *md_attr)
{
    uct_md_config_t *config;
    uct_tl_resource_desc_t *resources;
    unsigned count;
    uct_md_h md;

    ASSERT_EQ(UCS_OK, uct_md_config_read(component, NULL, NULL, &config));
    ASSERT_EQ(UCS_OK, uct_md_open(component, name.c_str(), config, &md));
    uct_config_release(config);
    ASSERT_EQ(UCS_OK, uct_md_query_tl_resources(md, &resources, &count));
    ASSERT_EQ(1u, count) << name;
    *rsc = resources[0];
    uct_release_tl_resource_list(resources);
    ASSERT_EQ(UCS_OK, uct_md_query(md, md_attr));
    uct_md_close(md);
}

/* What hwloc itself says about a network interface: its PCI device (none:
 * empty) and the CPUs near it */
struct hwloc_view {
    std::string pci;
    cpu_set_t cpus;
    bool found = false;
};

hwloc_view hwloc_netdev(hwloc_topology_t topology, const std::string &ifname)
{
    hwloc_view view;
    hwloc_obj_t osdev = NULL, obj;

    CPU_ZERO(&view.cpus);
    while ((osdev = hwloc_get_next_osdev(topology, osdev)) != NULL) {
        if ((osdev->attr->osdev.type == HWLOC_OBJ_OSDEV_NETWORK) &&
            (ifname == osdev->name)) {
            break;
        }
    }
    if (osdev == NULL) {
        return view;
    }
    view.found = true;
    for (obj = osdev->parent; obj != NULL; obj = obj->parent) {
        if (obj->type == HWLOC_OBJ_PCI_DEVICE) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%04x:%02x:%02x.%x",
                     obj->attr->pcidev.domain, obj->attr->pcidev.bus,
                     obj->attr->pcidev.dev, obj->attr->pcidev.func);
            view.pci = buf;
            break;
        }
    }
    obj = hwloc_get_non_io_ancestor_obj(topology, osdev);
    for (int cpu = hwloc_bitmap_first(obj->cpuset); cpu >= 0;
         cpu     = hwloc_bitmap_next(obj->cpuset, cpu)) {
        CPU_SET(cpu, &view.cpus);
    }
    return view;
}

std::string bus_id_str(ucs_sys_device_t sys_dev)
{
    ucs_sys_bus_id_t bus_id;
    char buf[32];

    if ((sys_dev == UCS_SYS_DEVICE_ID_UNKNOWN) ||
        (ucs_topo_get_device_bus_id(sys_dev, &bus_id) != UCS_OK)) {
        return "";
    }
    snprintf(buf, sizeof(buf), "%04x:%02x:%02x.%x", bus_id.domain, bus_id.bus,
             bus_id.slot, bus_id.function);
    return buf;
}

bool cpus_equal(const ucs_cpu_set_t &ucs, const cpu_set_t &sys)
{
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (!!ucs_cpu_is_set(cpu, &ucs) != !!CPU_ISSET(cpu, &sys)) {
            return false;
        }
    }
    return true;
}

} // namespace

/* This machine: every soft device against hwloc's own view of its
 * interface (soft_eth0 at eth0's PCI device, soft_lo at none) */
TEST(OrcTopo, SysDeviceIsTheInterfacePciDevice)
{
    scoped_setenv all("UCX_ORC_SOFT_IFACES", "");
    uct_component_h component = orc_component();
    hwloc_topology_t topology;
    int with_pci = 0;

    ASSERT_TRUE(component != NULL);
    ASSERT_EQ(0, hwloc_topology_init(&topology));
    hwloc_topology_set_io_types_filter(topology,
                                       HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    ASSERT_EQ(0, hwloc_topology_load(topology));

    for (const std::string &name : md_names(component)) {
        if (name.compare(0, 5, "soft_")) {
            continue;
        }
        uct_tl_resource_desc_t rsc = {};
        uct_md_attr_t md_attr      = {};
        hwloc_view view            = hwloc_netdev(topology, name.substr(5));

        ASSERT_NO_FATAL_FAILURE(query_md(component, name, &rsc, &md_attr));
        EXPECT_EQ(view.pci, bus_id_str(rsc.sys_device)) << name;
        if (view.pci.empty()) {
            EXPECT_EQ(UCS_SYS_DEVICE_ID_UNKNOWN, rsc.sys_device) << name;
        } else {
            /* UCX names it by its BDF, domain 0 left out */
            std::string bdf =
                view.pci.compare(0, 5, "0000:") ? view.pci : view.pci.substr(5);
            EXPECT_STREQ(bdf.c_str(),
                         ucs_topo_sys_device_get_name(rsc.sys_device))
                << name << ": ucx_info -d shows this name";
            ++with_pci;
        }
        if (view.found) {
            EXPECT_TRUE(cpus_equal(md_attr.local_cpus, view.cpus)) << name;
        }
    }
    hwloc_topology_destroy(topology);

    if (with_pci == 0) {
        GTEST_SKIP() << "no network interface of this machine sits on a PCI "
                        "device (only lo/virtual ones)";
    }
}

/* The node record in orcd carries the topology summary */
TEST(OrcTopo, NodeLabelsCarryTopologySummary)
{
    entity e;
    orc_client_params_t params = {};
    orc_client_t *client;
    orc_node_info_t *node;
    uint64_t node_id;

    ASSERT_EQ(UCS_OK, e.open());
    std::vector<uint8_t> ifa = e.iface_addr();
    ASSERT_GE(ifa.size(), sizeof(node_id));
    memcpy(&node_id, ifa.data(), sizeof(node_id));

    params.field_mask = ORC_CLIENT_PARAM_FIELD_URL | ORC_CLIENT_PARAM_FIELD_JOB;
    params.url        = uct_env::url().c_str();
    params.job        = "uct-test";
    ASSERT_EQ(ORC_CL_OK, orc_client_create(&params, &client));
    ASSERT_EQ(ORC_CL_OK, orc_client_node_get(client, node_id, &node));

    json_t *labels = json_loads(node->labels_json, 0, NULL);
    ASSERT_TRUE(labels != NULL) << node->labels_json;
    const char *topology =
        json_string_value(json_object_get(labels, "topology"));
    ASSERT_TRUE(topology != NULL) << node->labels_json;
    EXPECT_STREQ("orc",
                 json_string_value(json_object_get(labels, "transport")));
    /* this machine: hwloc knows its NUMA nodes; the test interface is
     * listed, lo with an unknown locality */
    int numa = 0;
    EXPECT_EQ(1, sscanf(topology, "%d NUMA node", &numa)) << topology;
    EXPECT_GE(numa, 1) << topology;
    std::string dev = "; soft_" + test_iface() + " ";
    EXPECT_NE(std::string::npos, std::string(topology).find(dev)) << topology;
    if (test_iface() == "lo") {
        EXPECT_NE(std::string::npos,
                  std::string(topology).find("; soft_lo unknown"))
            << topology;
    }
    json_decref(labels);
    orc_client_nodes_free(node, 1);
    orc_client_destroy(client);
}

/* Child role "topo": for each binding in ORC_UCT_CHILD_CPUS ("0 1 all":
 * CPU 0, then CPU 1, then all CPUs of the process), rebind this thread and
 * open one more interface on the test device, the earlier ones staying
 * open; report each one's system device and estimates */
void orc_topo_child()
{
    const char *cpus = getenv("ORC_UCT_CHILD_CPUS");
    std::list<entity> entities;
    std::string binding;
    cpu_set_t all, set;

    ASSERT_TRUE(cpus != NULL);
    ASSERT_EQ(0, pthread_getaffinity_np(pthread_self(), sizeof(all), &all));
    uct_env::setup();

    std::istringstream bindings(cpus);
    while (bindings >> binding) {
        if (binding == "all") {
            set = all;
        } else {
            CPU_ZERO(&set);
            CPU_SET(atoi(binding.c_str()), &set);
        }
        ASSERT_EQ(0, pthread_setaffinity_np(pthread_self(), sizeof(set), &set));
        entities.emplace_back();
        entity &e = entities.back();
        ASSERT_EQ(UCS_OK, e.open());

        uct_tl_resource_desc_t *resources;
        unsigned count;
        ASSERT_EQ(UCS_OK,
                  uct_md_query_tl_resources(e.md(), &resources, &count));
        ASSERT_EQ(1u, count);
        printf("ORC topo %s %s %.0f %.0f\n", binding.c_str(),
               ucs_topo_sys_device_get_name(resources[0].sys_device),
               e.attr().bandwidth.shared, e.attr().latency.c * 1e9);
        fflush(stdout);
        uct_release_tl_resource_list(resources);
    }
}

/* An hwloc XML machine with two NUMA nodes and the test interface on a NIC
 * of node 0 (test/gtest/dev/topo/two-numa.xml, nic0 renamed). One process
 * rebinds itself between interface opens: each open follows the binding of
 * that moment. */
TEST(OrcTopo, RemoteDeviceReportsLowerEstimates)
{
    cpu_set_t mine;

    ASSERT_EQ(0, pthread_getaffinity_np(pthread_self(), sizeof(mine), &mine));
    if (!CPU_ISSET(0, &mine) || !CPU_ISSET(1, &mine)) {
        GTEST_SKIP() << "needs CPUs 0 and 1";
    }

    const char *srcdir = getenv("ORC_TOP_SRCDIR");
    std::ifstream in(std::string(srcdir ? srcdir : ".") +
                     "/test/gtest/dev/topo/two-numa.xml");
    std::stringstream xml;
    xml << in.rdbuf();
    std::string text = xml.str();
    size_t pos       = text.find("name=\"nic0\"");
    ASSERT_NE(std::string::npos, pos);
    text.replace(pos, 11, "name=\"" + test_iface() + "\"");
    std::string path = "/tmp/orc-uct-topo." + std::to_string(getpid()) + ".xml";
    std::ofstream(path) << text;

    struct result {
        std::string sys_dev;
        double bw, lat;
    };
    std::map<std::string, std::vector<result>> seen; /* by binding */
    const char *orders[] = {"0 1 all", "1 0"};
    for (const char *order : orders) {
        child c("topo", {"HWLOC_XMLFILE=" + path,
                         std::string("ORC_UCT_CHILD_CPUS=") + order});
        std::istringstream bindings(order);
        std::string binding, line;
        while (bindings >> binding) {
            result r = {"", 0, 0};
            char cpus[16], name[64];
            ASSERT_TRUE(c.read_line(line)) << order;
            ASSERT_EQ(4, sscanf(line.c_str(), "topo %15s %63s %lf %lf", cpus,
                                name, &r.bw, &r.lat))
                << line;
            EXPECT_EQ(binding, cpus);
            r.sys_dev = name;
            seen[binding].push_back(r);
        }
        EXPECT_EQ(0, c.wait_exit());
    }
    unlink(path.c_str());

    /* the same answers whatever came before in the process */
    ASSERT_EQ(2u, seen["0"].size());
    ASSERT_EQ(2u, seen["1"].size());
    ASSERT_EQ(1u, seen["all"].size());
    const result &near = seen["0"][0], &remote = seen["1"][0];
    for (auto &binding : seen) {
        for (const result &r : binding.second) {
            const result &expected = (binding.first == "1") ? remote : near;
            EXPECT_EQ("03:00.0", r.sys_dev) << binding.first;
            EXPECT_EQ(expected.bw, r.bw) << binding.first;
            EXPECT_EQ(expected.lat, r.lat) << binding.first;
        }
    }
    /* remote: 30 % less bandwidth, 200 ns more latency; all CPUs: near */
    EXPECT_NEAR(near.bw * 0.7, remote.bw, 1.0);
    EXPECT_NEAR(near.lat + 200, remote.lat, 1.0);
}
