/*
 * orc device locality, as UCX sees it: each device's PCI device becomes its
 * UCX system device, a device remote to the opening thread's CPUs reports
 * lower estimates, and orc lists near devices first. Where a device sits
 * comes from hwloc through the device layer (orc_topo.h), loaded once per
 * process.
 */
#include "orc.h"

#include <ucs/debug/log.h>
#include <ucs/sys/topo/base/topo.h>

#include <errno.h>
#include <string.h>

/* A device remote to the thread's CPUs makes every transfer cross the
 * inter-socket link, which commonly costs 20-40 % of the bandwidth and
 * 100-200 ns: reported as 30 % less bandwidth and 200 ns more latency, so
 * UCP's lane selection prefers a near device of the same kind. */
#define UCT_ORC_REMOTE_BW_FACTOR 0.7
#define UCT_ORC_REMOTE_LATENCY   200e-9

/* The process's topology; NULL (warned once) if hwloc cannot load one */
static orc_topo_t *uct_orc_topo(void)
{
    static int warned = 0;
    orc_topo_t *topo  = orc_topo_get();

    if ((topo == NULL) && !__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED)) {
        ucs_warn("orc: hwloc cannot load this machine's topology (%s): "
                 "device locality unknown, no device preferred",
                 strerror(errno));
    }
    return topo;
}

/* The calling thread's CPUs, or NULL when they cannot be read */
static const cpu_set_t *uct_orc_thread_cpus(cpu_set_t *cpus)
{
    int ret = orc_topo_thread_cpus(cpus);

    if (ret != 0) {
        ucs_debug("orc: cannot read the thread's CPU binding: %s",
                  strerror(ret));
        return NULL;
    }
    return cpus;
}

void uct_orc_md_locate(uct_orc_md_t *md)
{
    char loc_str[ORC_TOPO_SUMMARY_MAX];
    ucs_sys_bus_id_t bus_id;
    ucs_status_t status;

    orc_topo_locate(uct_orc_topo(), md->dev->backend, md->dev->name,
                    md->dev->netdev, &md->loc);
    md->sys_dev = UCS_SYS_DEVICE_ID_UNKNOWN;
    if (md->loc.has_pci) {
        bus_id.domain   = md->loc.pci_domain;
        bus_id.bus      = md->loc.pci_bus;
        bus_id.slot     = md->loc.pci_dev;
        bus_id.function = md->loc.pci_func;
        status          = ucs_topo_find_device_by_bus_id(&bus_id, &md->sys_dev);
        if (status != UCS_OK) {
            ucs_debug("orc: %s: UCX has no system device for its PCI "
                      "device: %s",
                      md->dev->name, ucs_status_string(status));
            md->sys_dev = UCS_SYS_DEVICE_ID_UNKNOWN;
        }
    }

    ucs_debug("orc: %s: %s, system device %s", md->dev->name,
              orc_topo_loc_str(&md->loc, loc_str, sizeof(loc_str)),
              ucs_topo_sys_device_get_name(md->sys_dev));
}

int uct_orc_md_is_remote(const uct_orc_md_t *md)
{
    cpu_set_t cpus;

    return orc_topo_is_remote(&md->loc, uct_orc_thread_cpus(&cpus));
}

void uct_orc_iface_remote_perf(uct_iface_attr_t *attr)
{
    attr->latency.c += UCT_ORC_REMOTE_LATENCY;
    attr->bandwidth.shared *= UCT_ORC_REMOTE_BW_FACTOR;
    attr->bandwidth.dedicated *= UCT_ORC_REMOTE_BW_FACTOR;
}

void uct_orc_sort_devices(orc_dev_info_t *list, int count)
{
    cpu_set_t cpus;

    orc_topo_sort(uct_orc_topo(), list, count, uct_orc_thread_cpus(&cpus));
}

void uct_orc_topo_summary(const orc_dev_config_t *config, char *buf)
{
    orc_dev_info_t *list;
    int count, ret;

    ret = orc_dev_list(config, &list, &count);
    if (ret != 0) {
        ucs_debug("orc: cannot list devices for the topology summary: %s",
                  strerror(ret));
        list  = NULL;
        count = 0;
    }
    orc_topo_summary(uct_orc_topo(), list, count, buf, ORC_TOPO_SUMMARY_MAX);
    orc_dev_list_free(list);
}
