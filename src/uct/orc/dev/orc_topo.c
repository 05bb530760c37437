/*
 * orc device topology from hwloc: load once, locate devices by their OS
 * device, compare localities with a thread's binding.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_topo.h"

#include <hwloc.h>
#include <hwloc/glibc-sched.h>
#include <hwloc/openfabrics-verbs.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct orc_topo {
    hwloc_topology_t topology; /* read-only once loaded */
};

typedef int (*orc_topo_source_t)(hwloc_topology_t topology, const char *arg);

static int orc_topo_load(orc_topo_source_t source, const char *arg,
                         orc_topo_t **topo_p)
{
    orc_topo_t *topo;
    int err;

    topo = calloc(1, sizeof(*topo));
    if (topo == NULL) {
        return ENOMEM;
    }
    if (hwloc_topology_init(&topo->topology) < 0) {
        err = errno ? errno : ENOMEM;
        free(topo);
        return err;
    }

    /* PCI devices with their network and OpenFabrics OS devices; no caches
     * (locality needs packages, NUMA nodes and PUs). hwloc's x86 backend
     * would rebind the loading thread to every CPU in turn to run cpuid
     * (25 ms of the ~50 ms a load takes here), for nothing sysfs lacks. */
    if ((hwloc_topology_set_io_types_filter(topo->topology,
                                            HWLOC_TYPE_FILTER_KEEP_IMPORTANT) <
         0) ||
        (hwloc_topology_set_cache_types_filter(topo->topology,
                                               HWLOC_TYPE_FILTER_KEEP_NONE) <
         0) ||
        (hwloc_topology_set_icache_types_filter(topo->topology,
                                                HWLOC_TYPE_FILTER_KEEP_NONE) <
         0) ||
        (hwloc_topology_set_components(topo->topology,
                                       HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST,
                                       "x86") < 0) ||
        ((source != NULL) && (source(topo->topology, arg) < 0)) ||
        (hwloc_topology_load(topo->topology) < 0)) {
        err = errno ? errno : EINVAL;
        hwloc_topology_destroy(topo->topology);
        free(topo);
        return err;
    }

    *topo_p = topo;
    return 0;
}

int orc_topo_load_xml(const char *path, orc_topo_t **topo_p)
{
    return orc_topo_load(hwloc_topology_set_xml, path, topo_p);
}

int orc_topo_load_synthetic(const char *description, orc_topo_t **topo_p)
{
    return orc_topo_load(hwloc_topology_set_synthetic, description, topo_p);
}

void orc_topo_destroy(orc_topo_t *topo)
{
    if (topo != NULL) {
        hwloc_topology_destroy(topo->topology);
        free(topo);
    }
}

/* The process's topology: written once under orc_topo_once, read-only
 * afterwards (pthread_once orders the write before every reader). */
static pthread_once_t orc_topo_once = PTHREAD_ONCE_INIT;
static orc_topo_t *orc_topo_process;
static int orc_topo_process_err;

static void orc_topo_load_process(void)
{
    orc_topo_process_err = orc_topo_load(NULL, NULL, &orc_topo_process);
}

orc_topo_t *orc_topo_get(void)
{
    pthread_once(&orc_topo_once, orc_topo_load_process);
    if (orc_topo_process == NULL) {
        errno = orc_topo_process_err;
    }
    return orc_topo_process;
}

static void __attribute__((destructor)) orc_topo_unload(void)
{
    orc_topo_destroy(orc_topo_process);
    orc_topo_process = NULL;
}

int orc_topo_numa_count(const orc_topo_t *topo)
{
    int count;

    if (topo == NULL) {
        return 0;
    }
    count = hwloc_get_nbobjs_by_type(topo->topology, HWLOC_OBJ_NUMANODE);
    return (count > 0) ? count : 0;
}

static hwloc_obj_t orc_topo_find_osdev(hwloc_topology_t topology,
                                       orc_dev_backend_t backend,
                                       const char *name, const char *netdev)
{
    hwloc_obj_t osdev = NULL;

    if (backend == ORC_DEV_BACKEND_VERBS) {
        osdev = hwloc_ibv_get_device_osdev_by_name(topology, name);
        if (osdev != NULL) {
            return osdev;
        }
    }
    if ((netdev == NULL) || (netdev[0] == '\0')) {
        return NULL;
    }
    while ((osdev = hwloc_get_next_osdev(topology, osdev)) != NULL) {
        if ((osdev->attr->osdev.type == HWLOC_OBJ_OSDEV_NETWORK) &&
            (osdev->name != NULL) && !strcmp(osdev->name, netdev)) {
            return osdev;
        }
    }
    return NULL;
}

void orc_topo_locate(const orc_topo_t *topo, orc_dev_backend_t backend,
                     const char *name, const char *netdev, orc_topo_loc_t *loc)
{
    hwloc_obj_t osdev, obj;

    memset(loc, 0, sizeof(*loc));
    loc->numa_node = -1;
    if (topo == NULL) {
        return;
    }

    osdev = orc_topo_find_osdev(topo->topology, backend, name, netdev);
    if (osdev == NULL) {
        return;
    }

    for (obj = osdev->parent; (obj != NULL) && hwloc_obj_type_is_io(obj->type);
         obj = obj->parent) {
        if (obj->type == HWLOC_OBJ_PCI_DEVICE) {
            loc->has_pci    = 1;
            loc->pci_domain = obj->attr->pcidev.domain;
            loc->pci_bus    = obj->attr->pcidev.bus;
            loc->pci_dev    = obj->attr->pcidev.dev;
            loc->pci_func   = obj->attr->pcidev.func;
            break;
        }
    }

    obj = hwloc_get_non_io_ancestor_obj(topo->topology, osdev);
    if ((obj == NULL) || (obj->cpuset == NULL) ||
        (hwloc_cpuset_to_glibc_sched_affinity(topo->topology, obj->cpuset,
                                              &loc->cpus,
                                              sizeof(loc->cpus)) < 0)) {
        return;
    }
    loc->found = 1;
    if ((obj->nodeset != NULL) && (hwloc_bitmap_weight(obj->nodeset) == 1)) {
        loc->numa_node = hwloc_bitmap_first(obj->nodeset);
    }
}

int orc_topo_thread_cpus(cpu_set_t *cpus)
{
    return pthread_getaffinity_np(pthread_self(), sizeof(*cpus), cpus);
}

int orc_topo_is_remote(const orc_topo_loc_t *loc, const cpu_set_t *cpus)
{
    cpu_set_t common;

    if (!loc->found || (cpus == NULL) || (CPU_COUNT(cpus) == 0)) {
        return 0;
    }
    CPU_AND(&common, &loc->cpus, cpus);
    return CPU_COUNT(&common) == 0;
}

void orc_topo_sort(const orc_topo_t *topo, orc_dev_info_t *list, int count,
                   const cpu_set_t *cpus)
{
    orc_dev_info_t *sorted;
    orc_topo_loc_t loc;
    char *remote;
    int i, n, pass;

    if (count < 2) {
        return;
    }
    sorted = malloc(count * (sizeof(*sorted) + 1));
    if (sorted == NULL) {
        return; /* no memory: keep the order */
    }
    remote = (char *)(sorted + count);

    for (i = 0; i < count; ++i) {
        orc_topo_locate(topo, list[i].backend, list[i].name, list[i].netdev,
                        &loc);
        remote[i] = orc_topo_is_remote(&loc, cpus);
    }
    for (pass = 0, n = 0; pass < 2; ++pass) {
        for (i = 0; i < count; ++i) {
            if (remote[i] == pass) {
                sorted[n++] = list[i];
            }
        }
    }
    memcpy(list, sorted, count * sizeof(*list));
    free(sorted);
}

/* Append to buf[size] at *len_p; once something did not fit, the buffer
 * ends with "..." and later appends are dropped. */
static void orc_topo_appendf(char *buf, size_t size, size_t *len_p,
                             const char *fmt, ...)
{
    static const char ellipsis[] = "...";
    va_list ap;
    int ret;

    if ((*len_p >= size) || (size <= sizeof(ellipsis))) {
        return;
    }
    va_start(ap, fmt);
    ret = vsnprintf(buf + *len_p, size - *len_p, fmt, ap);
    va_end(ap);
    if ((ret >= 0) && ((size_t)ret < size - *len_p)) {
        *len_p += ret;
        return;
    }
    strcpy(buf + size - sizeof(ellipsis), ellipsis);
    *len_p = size; /* full */
}

const char *orc_topo_loc_str(const orc_topo_loc_t *loc, char *buf, size_t size)
{
    hwloc_bitmap_t set;
    size_t len = 0;
    char *cpus = NULL;

    buf[0] = '\0';
    if (!loc->found) {
        orc_topo_appendf(buf, size, &len, "unknown");
        return buf;
    }

    if (loc->has_pci) {
        orc_topo_appendf(buf, size, &len, "pci %04x:%02x:%02x.%x ",
                         loc->pci_domain, loc->pci_bus, loc->pci_dev,
                         loc->pci_func);
    } else {
        orc_topo_appendf(buf, size, &len, "local ");
    }
    if (loc->numa_node >= 0) {
        orc_topo_appendf(buf, size, &len, "numa %d ", loc->numa_node);
    }

    set = hwloc_bitmap_alloc();
    if ((set != NULL) &&
        (hwloc_cpuset_from_glibc_sched_affinity(NULL, set, &loc->cpus,
                                                sizeof(loc->cpus)) == 0)) {
        hwloc_bitmap_list_asprintf(&cpus, set);
    }
    hwloc_bitmap_free(set);
    orc_topo_appendf(buf, size, &len, "cpus %s", (cpus != NULL) ? cpus : "?");
    free(cpus);
    return buf;
}

const char *orc_topo_summary(const orc_topo_t *topo, const orc_dev_info_t *list,
                             int count, char *buf, size_t size)
{
    char loc_str[ORC_TOPO_SUMMARY_MAX];
    orc_topo_loc_t loc;
    size_t len = 0;
    int i;

    buf[0] = '\0';
    if (topo == NULL) {
        orc_topo_appendf(buf, size, &len, "topology unknown");
    } else {
        orc_topo_appendf(buf, size, &len, "%d NUMA node%s",
                         orc_topo_numa_count(topo),
                         (orc_topo_numa_count(topo) == 1) ? "" : "s");
    }
    for (i = 0; i < count; ++i) {
        orc_topo_locate(topo, list[i].backend, list[i].name, list[i].netdev,
                        &loc);
        orc_topo_appendf(buf, size, &len, "; %s %s", list[i].name,
                         orc_topo_loc_str(&loc, loc_str, sizeof(loc_str)));
    }
    return buf;
}
