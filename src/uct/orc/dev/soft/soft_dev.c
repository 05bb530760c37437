/*
 * softnic devices: one per network interface with an IPv4 address, port 1,
 * Ethernet link layer, GID 0 = ::ffff:<ipv4>. Device attributes, addresses
 * and the instance lifecycle (MR table, listener, service thread).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "softnic.h"

#include <arpa/inet.h>
#include <endian.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static uint32_t orc_soft_next_inst_id = 1; /* atomic */

uint64_t orc_soft_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* resolution of CLOCK_MONOTONIC_COARSE; 0 until the first call (a racy
 * initialisation of a constant: every thread stores the same value) */
static uint64_t orc_soft_coarse_tick_ns; /* atomic */

uint64_t orc_soft_stamp_ns(void)
{
    uint64_t tick = __atomic_load_n(&orc_soft_coarse_tick_ns, __ATOMIC_RELAXED);
    struct timespec ts;

    if (tick == 0) {
        if (clock_getres(CLOCK_MONOTONIC_COARSE, &ts) != 0) {
            return orc_soft_now_ns(); /* no coarse clock: the precise one */
        }
        tick = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + 1;
        __atomic_store_n(&orc_soft_coarse_tick_ns, tick, __ATOMIC_RELAXED);
    }
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + tick;
}

void orc_soft_log(orc_soft_inst_t *inst, const char *fmt, ...)
{
    char buf[256];
    va_list ap;

    if ((inst != NULL) && !inst->log) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "[softnic %d %s] %s\n", (int)getpid(),
            (inst != NULL) ? inst->super.name : "-", buf);
}

static int orc_soft_env_flag(const char *name)
{
    const char *value = getenv(name);

    return (value != NULL) && (value[0] != '\0') && strcmp(value, "0");
}

/* Is ifname selected by the comma-separated list (NULL/"" = all)? */
static int orc_soft_iface_selected(const char *list, const char *ifname)
{
    size_t len = strlen(ifname);
    const char *p, *end;

    if ((list == NULL) || (list[0] == '\0')) {
        return 1;
    }
    for (p = list; *p != '\0'; p = (*end == ',') ? end + 1 : end) {
        end = strchr(p, ',');
        if (end == NULL) {
            end = p + strlen(p);
        }
        if (((size_t)(end - p) == len) && !strncmp(p, ifname, len)) {
            return 1;
        }
    }
    return 0;
}

typedef struct orc_soft_iface {
    char           ifname[IF_NAMESIZE];
    struct in_addr ip;
} orc_soft_iface_t;

/* Every selected interface that is up with an IPv4 address (first address
 * of each). Names in soft_ifaces that do not qualify are an error. */
static int orc_soft_ifaces(const char *list, orc_soft_iface_t **ifaces_p,
                           int *count_p)
{
    struct ifaddrs *ifa_list, *ifa;
    orc_soft_iface_t *ifaces = NULL, *tmp;
    const char *p, *end;
    char name[IF_NAMESIZE + 1];
    int count = 0, i, found;

    if (getifaddrs(&ifa_list) < 0) {
        int err = errno;
        orc_soft_log(NULL, "getifaddrs() failed: %m");
        return err;
    }

    for (ifa = ifa_list; ifa != NULL; ifa = ifa->ifa_next) {
        if ((ifa->ifa_addr == NULL) || (ifa->ifa_addr->sa_family != AF_INET) ||
            !(ifa->ifa_flags & IFF_UP) ||
            !orc_soft_iface_selected(list, ifa->ifa_name) ||
            (strlen(ifa->ifa_name) >= IF_NAMESIZE)) {
            continue;
        }
        for (i = 0; i < count; ++i) {
            if (!strcmp(ifaces[i].ifname, ifa->ifa_name)) {
                break;
            }
        }
        if (i < count) {
            continue; /* second address of the same interface */
        }
        tmp = realloc(ifaces, sizeof(*ifaces) * (count + 1));
        if (tmp == NULL) {
            free(ifaces);
            freeifaddrs(ifa_list);
            return ENOMEM;
        }
        ifaces = tmp;
        strcpy(ifaces[count].ifname, ifa->ifa_name);
        ifaces[count].ip = ((struct sockaddr_in *)ifa->ifa_addr)->sin_addr;
        ++count;
    }
    freeifaddrs(ifa_list);

    /* every explicitly named interface must exist and qualify */
    if ((list != NULL) && (list[0] != '\0')) {
        for (p = list; *p != '\0'; p = (*end == ',') ? end + 1 : end) {
            end = strchr(p, ',');
            if (end == NULL) {
                end = p + strlen(p);
            }
            if ((end == p) || ((size_t)(end - p) > IF_NAMESIZE)) {
                orc_soft_log(NULL, "invalid interface list '%s'", list);
                free(ifaces);
                return EINVAL;
            }
            memcpy(name, p, end - p);
            name[end - p] = '\0';
            for (found = 0, i = 0; i < count; ++i) {
                found |= !strcmp(ifaces[i].ifname, name);
            }
            if (!found) {
                orc_soft_log(NULL, "interface '%s' is not up with an IPv4 "
                             "address", name);
                free(ifaces);
                return ENODEV;
            }
        }
    }

    *ifaces_p = ifaces;
    *count_p  = count;
    return 0;
}

int orc_soft_dev_list(const orc_dev_config_t *config,
                         orc_dev_info_t **list_p, int *count_p)
{
    orc_soft_iface_t *ifaces = NULL;
    orc_dev_info_t *list;
    int ret, count, i;

    ret = orc_soft_ifaces(config->soft_ifaces, &ifaces, &count);
    if (ret != 0) {
        return ret;
    }

    list = calloc((count > 0) ? count : 1, sizeof(*list));
    if (list == NULL) {
        free(ifaces);
        return ENOMEM;
    }
    for (i = 0; i < count; ++i) {
        snprintf(list[i].name, sizeof(list[i].name), ORC_SOFT_PREFIX "%s",
                 ifaces[i].ifname);
        list[i].backend   = ORC_DEV_BACKEND_SOFT;
        list[i].num_ports = 1;
    }
    free(ifaces);
    *list_p  = list;
    *count_p = count;
    return 0;
}

static uint64_t orc_soft_ns_inode(const char *path)
{
    struct stat st;

    return (stat(path, &st) == 0) ? (uint64_t)st.st_ino : 0;
}

static int orc_soft_hex(char c)
{
    return isdigit((unsigned char)c) ? (c - '0') :
           (tolower((unsigned char)c) - 'a' + 10);
}

static int orc_soft_host_id_init(orc_soft_host_id_t *host)
{
    char text[64];
    unsigned i, n;
    ssize_t len;
    int fd, hi, lo;

    memset(host, 0, sizeof(*host));
    fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        orc_soft_log(NULL, "cannot open boot_id: %m");
        return errno;
    }
    len = read(fd, text, sizeof(text) - 1);
    close(fd);
    if (len <= 0) {
        return EIO;
    }
    text[len] = '\0';

    /* "xxxxxxxx-xxxx-..." -> 16 bytes */
    for (i = 0, n = 0; (text[i] != '\0') && (n < 16); ++i) {
        if (text[i] == '-') {
            continue;
        }
        if (!isxdigit((unsigned char)text[i]) ||
            !isxdigit((unsigned char)text[i + 1])) {
            return EIO;
        }
        hi = orc_soft_hex(text[i]);
        lo = orc_soft_hex(text[i + 1]);
        host->boot_id[n++] = (uint8_t)((hi << 4) | lo);
        ++i;
    }
    if (n != 16) {
        return EIO;
    }

    host->pid_ns = htole64(orc_soft_ns_inode("/proc/self/ns/pid"));
    host->net_ns = htole64(orc_soft_ns_inode("/proc/self/ns/net"));
    host->mnt_ns = htole64(orc_soft_ns_inode("/proc/self/ns/mnt"));
    return 0;
}

orc_dev_t *orc_soft_dev_open(const orc_dev_config_t *config,
                                const char *name)
{
    orc_soft_iface_t *ifaces = NULL;
    orc_soft_inst_t *inst;
    int ret, count, i;

    if (strncmp(name, ORC_SOFT_PREFIX, strlen(ORC_SOFT_PREFIX))) {
        errno = ENODEV;
        return NULL;
    }

    ret = orc_soft_ifaces(config->soft_ifaces, &ifaces, &count);
    if (ret != 0) {
        errno = ret;
        return NULL;
    }
    for (i = 0; i < count; ++i) {
        if (!strcmp(ifaces[i].ifname, name + strlen(ORC_SOFT_PREFIX))) {
            break;
        }
    }
    if (i == count) {
        free(ifaces);
        errno = ENODEV;
        return NULL;
    }

    inst = calloc(1, sizeof(*inst));
    if (inst == NULL) {
        free(ifaces);
        errno = ENOMEM;
        return NULL;
    }
    inst->super.ops     = &orc_dev_soft_ops;
    inst->super.backend = ORC_DEV_BACKEND_SOFT;
    snprintf(inst->super.name, sizeof(inst->super.name), "%s", name);
    snprintf(inst->ifname, sizeof(inst->ifname), "%s", ifaces[i].ifname);
    inst->ip = ifaces[i].ip;
    free(ifaces);

    /* GID: IPv4-mapped IPv6 address */
    memset(&inst->gid, 0, sizeof(inst->gid));
    inst->gid.raw[10] = 0xff;
    inst->gid.raw[11] = 0xff;
    memcpy(&inst->gid.raw[12], &inst->ip, 4);

    inst->pid       = getpid();
    inst->id        = __atomic_fetch_add(&orc_soft_next_inst_id, 1,
                                         __ATOMIC_RELAXED);
    inst->listen_fd = -1;
    inst->epoll_fd  = -1;
    inst->cmd_fd    = -1;
    inst->busy_mr   = -1;
    inst->next_pdn  = 1;
    inst->log       = orc_soft_env_flag("ORC_SOFT_LOG");
    inst->no_cma    = orc_soft_env_flag("ORC_SOFT_NO_CMA");
    inst->no_ring   = orc_soft_env_flag("ORC_SOFT_NO_RING");
    pthread_mutex_init(&inst->lock, NULL);
    pthread_mutex_init(&inst->mr_lock, NULL);
    pthread_mutex_init(&inst->cmd_lock, NULL);
    pthread_mutex_init(&inst->svc_lock, NULL);
    pthread_cond_init(&inst->cmd_cond, NULL);

    ret = orc_soft_host_id_init(&inst->host);
    if (ret != 0) {
        goto err_free;
    }

    ret = orc_soft_mr_table_init(inst);
    if (ret != 0) {
        goto err_free;
    }

    ret = orc_soft_svc_start(inst);
    if (ret != 0) {
        goto err_mr_table;
    }

    return &inst->super;

err_mr_table:
    orc_soft_mr_table_cleanup(inst);
err_free:
    pthread_cond_destroy(&inst->cmd_cond);
    pthread_mutex_destroy(&inst->svc_lock);
    pthread_mutex_destroy(&inst->cmd_lock);
    pthread_mutex_destroy(&inst->mr_lock);
    pthread_mutex_destroy(&inst->lock);
    free(inst);
    errno = ret;
    return NULL;
}

int orc_soft_dev_close(orc_dev_t *dev)
{
    orc_soft_inst_t *inst = orc_soft_inst(dev);

    pthread_mutex_lock(&inst->lock);
    if (inst->num_qps > 0) {
        pthread_mutex_unlock(&inst->lock);
        return EBUSY;
    }
    pthread_mutex_unlock(&inst->lock);

    orc_soft_svc_stop(inst);
    orc_soft_mr_table_cleanup(inst);
    pthread_cond_destroy(&inst->cmd_cond);
    pthread_mutex_destroy(&inst->svc_lock);
    pthread_mutex_destroy(&inst->cmd_lock);
    pthread_mutex_destroy(&inst->mr_lock);
    pthread_mutex_destroy(&inst->lock);
    free(inst);
    return 0;
}

int orc_soft_dev_query(orc_dev_t *dev, struct ibv_device_attr *attr)
{
    orc_soft_inst_t *inst = orc_soft_inst(dev);
    uint64_t guid;

    memset(attr, 0, sizeof(*attr));
    snprintf(attr->fw_ver, sizeof(attr->fw_ver), "softnic-1");
    /* EUI-64 style from the IPv4 address: 02:00:a.b:ff:fe:c.d */
    guid = 0x0200000000fffe00ull;
    guid |= ((uint64_t)inst->gid.raw[12] << 40) |
            ((uint64_t)inst->gid.raw[13] << 32) |
            ((uint64_t)inst->gid.raw[14] << 8) | inst->gid.raw[15];
    attr->node_guid                 = htobe64(guid);
    attr->sys_image_guid            = attr->node_guid;
    attr->max_mr_size               = ORC_SOFT_MAX_MSG;
    attr->page_size_cap             = 0x1000;
    attr->vendor_id                 = 0xffffff;
    attr->vendor_part_id            = 0x50f7;
    attr->hw_ver                    = 1;
    attr->max_qp                    = ORC_SOFT_MAX_QP;
    attr->max_qp_wr                 = ORC_SOFT_MAX_QP_WR;
    attr->device_cap_flags          = IBV_DEVICE_RC_RNR_NAK_GEN |
                                      IBV_DEVICE_PORT_ACTIVE_EVENT;
    attr->max_sge                   = ORC_SOFT_MAX_SGE;
    attr->max_sge_rd                = ORC_SOFT_MAX_SGE;
    attr->max_cq                    = 65536;
    attr->max_cqe                   = ORC_SOFT_MAX_CQE;
    attr->max_mr                    = ORC_SOFT_MAX_MR - 1;
    attr->max_pd                    = 65536;
    attr->max_qp_rd_atom            = ORC_SOFT_MAX_RD_ATOMIC;
    attr->max_res_rd_atom           = ORC_SOFT_MAX_RD_ATOMIC * ORC_SOFT_MAX_QP;
    attr->max_qp_init_rd_atom       = ORC_SOFT_MAX_RD_ATOMIC;
    attr->atomic_cap                = IBV_ATOMIC_HCA;
    attr->max_srq                   = ORC_SOFT_MAX_QP;
    attr->max_srq_wr                = ORC_SOFT_MAX_QP_WR;
    attr->max_srq_sge               = ORC_SOFT_MAX_SGE;
    attr->max_pkeys                 = 1;
    attr->phys_port_cnt             = 1;
    return 0;
}

int orc_soft_dev_query_port(orc_dev_t *dev, uint8_t port_num,
                               struct ibv_port_attr *attr)
{
    (void)dev;
    if (port_num != 1) {
        return EINVAL;
    }
    memset(attr, 0, sizeof(*attr));
    attr->state           = IBV_PORT_ACTIVE;
    attr->max_mtu         = IBV_MTU_4096;
    attr->active_mtu      = IBV_MTU_4096;
    attr->gid_tbl_len     = 1;
    attr->port_cap_flags  = 0;
    attr->max_msg_sz      = ORC_SOFT_MAX_MSG;
    attr->pkey_tbl_len    = 1;
    attr->lid             = 0;
    attr->sm_lid          = 0;
    attr->lmc             = 0;
    attr->max_vl_num      = 1;
    attr->active_width    = 1;  /* 1x */
    attr->active_speed    = 32; /* EDR-like rate: purely informative */
    attr->phys_state      = 5;  /* LinkUp */
    attr->link_layer      = IBV_LINK_LAYER_ETHERNET;
    return 0;
}

int orc_soft_dev_query_gid(orc_dev_t *dev, uint8_t port_num, int index,
                              union ibv_gid *gid)
{
    if ((port_num != 1) || (index != 0)) {
        return EINVAL;
    }
    *gid = orc_soft_inst(dev)->gid;
    return 0;
}

size_t orc_soft_dev_addr_len(orc_dev_t *dev, uint8_t port_num)
{
    (void)dev;
    (void)port_num;
    return sizeof(orc_soft_addr_t);
}

int orc_soft_dev_addr_pack(orc_dev_t *dev, uint8_t port_num, void *buf,
                              size_t len)
{
    orc_soft_inst_t *inst = orc_soft_inst(dev);
    orc_soft_addr_t addr;

    if ((port_num != 1) || (len < sizeof(addr))) {
        return EINVAL;
    }
    memset(&addr, 0, sizeof(addr));
    addr.backend  = ORC_DEV_BACKEND_SOFT;
    addr.version  = 1;
    addr.tcp_port = htole16(inst->listen_port);
    addr.magic    = htole32(ORC_SOFT_ADDR_MAGIC);
    memcpy(addr.gid, inst->gid.raw, sizeof(addr.gid));
    addr.host = inst->host;
    memcpy(buf, &addr, sizeof(addr));
    return 0;
}

int orc_soft_dev_addr_unpack(orc_dev_t *dev, uint8_t port_num,
                                const void *buf, size_t len,
                                struct ibv_ah_attr *ah_attr)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                         0xff, 0xff};
    orc_soft_inst_t *inst = orc_soft_inst(dev);
    orc_soft_addr_t addr;

    if ((port_num != 1) || (buf == NULL) || (len < 1)) {
        return EINVAL;
    }
    if (((const uint8_t *)buf)[0] != ORC_DEV_BACKEND_SOFT) {
        /* another backend's address (or garbage claiming to be one) */
        return (((const uint8_t *)buf)[0] == ORC_DEV_BACKEND_VERBS) ?
               EHOSTUNREACH : EINVAL;
    }
    if (len != sizeof(addr)) {
        return EINVAL;
    }
    memcpy(&addr, buf, sizeof(addr));
    if ((addr.version != 1) || (le32toh(addr.magic) != ORC_SOFT_ADDR_MAGIC) ||
        memcmp(addr.gid, v4mapped, sizeof(v4mapped)) ||
        (le16toh(addr.tcp_port) == 0)) {
        return EINVAL;
    }
    /* a loopback address is reachable only from the same network namespace
     * of the same host */
    if ((addr.gid[12] == 127) &&
        (memcmp(addr.host.boot_id, inst->host.boot_id, 16) ||
         (addr.host.net_ns != inst->host.net_ns))) {
        return EHOSTUNREACH;
    }
    /* and a loopback device reaches nothing but loopback addresses */
    if ((inst->gid.raw[12] == 127) && (addr.gid[12] != 127)) {
        return EHOSTUNREACH;
    }

    memset(ah_attr, 0, sizeof(*ah_attr));
    ah_attr->is_global      = 1;
    memcpy(ah_attr->grh.dgid.raw, addr.gid, 16);
    ah_attr->grh.hop_limit  = 64;
    ah_attr->grh.sgid_index = 0;
    ah_attr->dlid           = le16toh(addr.tcp_port);
    ah_attr->port_num       = 1;
    return 0;
}

