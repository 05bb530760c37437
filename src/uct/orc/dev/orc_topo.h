/*
 * orc device topology: where each device sits in the machine, from hwloc.
 *
 * For every device the device layer lists (orc_dev_info_t), hwloc's OS
 * device gives its PCI device and its locality (the CPUs and NUMA node of
 * the closest non-I/O object above it):
 *   verbs  the OpenFabrics OS device of the same name (the HCA), found with
 *          hwloc's OpenFabrics helpers; for a RoCE device hwloc does not
 *          list (a userspace provider such as softnic's), the network OS
 *          device of its source GID's interface, so it sits where the soft
 *          device on that interface sits;
 *   soft   the network OS device of the interface the device runs on.
 * A device hwloc does not know (lo, a veth, a machine where hwloc finds no
 * PCI information) has no PCI device and an unknown locality.
 *
 * Distance rule: a device is *remote* to a set of CPUs (a thread's binding)
 * when its locality is known and contains none of those CPUs; otherwise it
 * is near. Near devices beat remote ones; devices of unknown locality are
 * never remote, so they neither win nor lose.
 *
 * Thread safety: a loaded topology is read-only, so every call may run
 * concurrently on the same topology (hwloc allows concurrent reads).
 * orc_topo_get() loads the process's topology exactly once (pthread_once).
 *
 * This layer does not depend on UCX. Callers define _GNU_SOURCE (cpu_set_t).
 */
#ifndef ORC_TOPO_H_
#define ORC_TOPO_H_

#include "orc_dev.h"

#include <sched.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct orc_topo orc_topo_t;

/* Where one device sits */
typedef struct orc_topo_loc {
    int found;   /* hwloc knows the device: cpus is its locality */
    int has_pci; /* the pci_* fields hold its PCI address */
    uint16_t pci_domain;
    uint8_t pci_bus;
    uint8_t pci_dev;
    uint8_t pci_func;
    int numa_node;  /* OS index of its NUMA node; -1 if unknown or
                             the locality spans several nodes */
    cpu_set_t cpus; /* CPUs local to the device (when found) */
} orc_topo_loc_t;

/* A summary is at most this long, the terminating zero included */
#define ORC_TOPO_SUMMARY_MAX 1024

/*
 * The process's topology: loaded by the first call, with I/O devices, and
 * kept until the library is unloaded. hwloc's own variables apply
 * (HWLOC_XMLFILE, HWLOC_SYNTHETIC, HWLOC_FSROOT), which is how a process is
 * shown a machine other than the one it runs on. NULL (errno set) when hwloc
 * cannot load a topology: then every device has an unknown locality.
 */
orc_topo_t *orc_topo_get(void);

/* Load a topology of one's own (tests): hwloc XML file, or hwloc synthetic
 * description ("pack:2 numa:1 pu:2"). Return 0 or an errno value. */
int orc_topo_load_xml(const char *path, orc_topo_t **topo_p);
int orc_topo_load_synthetic(const char *description, orc_topo_t **topo_p);
void orc_topo_destroy(orc_topo_t *topo);

/* NUMA nodes of the topology (0 for a NULL topology) */
int orc_topo_numa_count(const orc_topo_t *topo);

/*
 * Where a device sits (the rules above): name and netdev from
 * orc_dev_info_t / orc_dev_t. topo may be NULL (nothing is found).
 */
void orc_topo_locate(const orc_topo_t *topo, orc_dev_backend_t backend,
                     const char *name, const char *netdev, orc_topo_loc_t *loc);

/* The CPUs the calling thread may run on (its binding). 0 or errno. */
int orc_topo_thread_cpus(cpu_set_t *cpus);

/* The distance rule above; cpus NULL means unknown (never remote) */
int orc_topo_is_remote(const orc_topo_loc_t *loc, const cpu_set_t *cpus);

/* Reorder list[0..count) so devices near `cpus` come before remote ones,
 * otherwise keeping the order (stable). */
void orc_topo_sort(const orc_topo_t *topo, orc_dev_info_t *list, int count,
                   const cpu_set_t *cpus);

/* "pci 0000:03:00.0 numa 0 cpus 0-15", "pci 0000:03:00.0 cpus 0-31" (no
 * single NUMA node), "local numa 0 cpus 0-7" (known to hwloc, no PCI
 * device) or "unknown"; returns buf */
const char *orc_topo_loc_str(const orc_topo_loc_t *loc, char *buf, size_t size);

/*
 * One line for humans and orcd: the NUMA node count, then each device with
 * its locality, e.g.
 *   "2 NUMA nodes; soft_nic0 pci 0000:03:00.0 numa 0 cpus 0;
 *    soft_lo unknown"
 * At most size - 1 characters; a summary that does not fit ends with "...".
 * Returns buf.
 */
const char *orc_topo_summary(const orc_topo_t *topo, const orc_dev_info_t *list,
                             int count, char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* ORC_TOPO_H_ */
