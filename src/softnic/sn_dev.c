/*
 * softnic devices: one per network interface with an IPv4 address, port 1,
 * Ethernet link layer, GID 0 = ::ffff:<ipv4>, P_Key 0xffff. Device list,
 * attributes, addresses and the instance lifecycle (MR table, listener,
 * service thread).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_int.h"

#include <arpa/inet.h>
#include <endian.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static uint32_t sn_next_inst_id = 1; /* atomic */

uint64_t sn_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* resolution of CLOCK_MONOTONIC_COARSE; 0 until the first call (a racy
 * initialisation of a constant: every thread stores the same value) */
static uint64_t sn_coarse_tick_ns; /* atomic */

uint64_t sn_stamp_ns(void)
{
    uint64_t tick = __atomic_load_n(&sn_coarse_tick_ns, __ATOMIC_RELAXED);
    struct timespec ts;

    if (tick == 0) {
        if (clock_getres(CLOCK_MONOTONIC_COARSE, &ts) != 0) {
            return sn_now_ns(); /* no coarse clock: the precise one */
        }
        tick = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + 1;
        __atomic_store_n(&sn_coarse_tick_ns, tick, __ATOMIC_RELAXED);
    }
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + tick;
}

/* Is ifname selected by the comma-separated list (NULL/"" = all)? */
static int sn_iface_selected(const char *list, const char *ifname)
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

typedef struct sn_iface {
    char ifname[IF_NAMESIZE];
    struct in_addr ip;
} sn_iface_t;

/* GID of an interface: its IPv4-mapped IPv6 address */
static void sn_gid_of(const struct in_addr *ip, union ibv_gid *gid)
{
    memset(gid, 0, sizeof(*gid));
    gid->raw[10] = 0xff;
    gid->raw[11] = 0xff;
    memcpy(&gid->raw[12], ip, 4);
}

/* Every selected interface that is up with an IPv4 address (first address
 * of each). Names in config->ifaces that do not qualify are an error. */
static int sn_ifaces(const softnic_config_t *config, sn_iface_t **ifaces_p,
                     int *count_p)
{
    const char *list = config->ifaces;
    struct ifaddrs *ifa_list, *ifa;
    sn_iface_t *ifaces = NULL, *tmp;
    const char *p, *end;
    char name[IF_NAMESIZE + 1];
    int count = 0, i, found;

    if (getifaddrs(&ifa_list) < 0) {
        int err = errno;
        sn_log_cfg(config, SOFTNIC_LOG_ERROR, "getifaddrs() failed: %m");
        return err;
    }

    for (ifa = ifa_list; ifa != NULL; ifa = ifa->ifa_next) {
        if ((ifa->ifa_addr == NULL) || (ifa->ifa_addr->sa_family != AF_INET) ||
            !(ifa->ifa_flags & IFF_UP) ||
            !sn_iface_selected(list, ifa->ifa_name) ||
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
                sn_log_cfg(config, SOFTNIC_LOG_ERROR,
                           "invalid interface list '%s'", list);
                free(ifaces);
                return EINVAL;
            }
            memcpy(name, p, end - p);
            name[end - p] = '\0';
            for (found = 0, i = 0; i < count; ++i) {
                found |= !strcmp(ifaces[i].ifname, name);
            }
            if (!found) {
                sn_log_cfg(config, SOFTNIC_LOG_ERROR,
                           "interface '%s' is not "
                           "up with an IPv4 address",
                           name);
                free(ifaces);
                return ENODEV;
            }
        }
    }

    *ifaces_p = ifaces;
    *count_p  = count;
    return 0;
}

static const softnic_config_t sn_default_config;

int softnic_dev_list(const softnic_config_t *config,
                     softnic_dev_info_t **list_p, int *count_p)
{
    sn_iface_t *ifaces = NULL;
    softnic_dev_info_t *list;
    int ret, count, i;

    if (config == NULL) {
        config = &sn_default_config;
    }
    ret = sn_ifaces(config, &ifaces, &count);
    if (ret != 0) {
        return ret;
    }

    list = calloc((count > 0) ? count : 1, sizeof(*list));
    if (list == NULL) {
        free(ifaces);
        return ENOMEM;
    }
    for (i = 0; i < count; ++i) {
        snprintf(list[i].name, sizeof(list[i].name), SOFTNIC_DEV_PREFIX "%s",
                 ifaces[i].ifname);
        snprintf(list[i].ifname, sizeof(list[i].ifname), "%s",
                 ifaces[i].ifname);
        sn_gid_of(&ifaces[i].ip, &list[i].gid);
    }
    free(ifaces);
    *list_p  = list;
    *count_p = count;
    return 0;
}

void softnic_dev_list_free(softnic_dev_info_t *list)
{
    free(list);
}

static uint64_t sn_ns_inode(const char *path)
{
    struct stat st;

    return (stat(path, &st) == 0) ? (uint64_t)st.st_ino : 0;
}

static int sn_hex(char c)
{
    return isdigit((unsigned char)c) ? (c - '0')
                                     : (tolower((unsigned char)c) - 'a' + 10);
}

static int sn_host_id_init(sn_inst_t *inst)
{
    sn_host_id_t *host = &inst->host;
    struct stat st;
    char text[64];
    unsigned i, n;
    ssize_t len;
    int fd, hi, lo, ret;

    memset(host, 0, sizeof(*host));
    fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ret = errno;
        sn_log(inst, SOFTNIC_LOG_ERROR, "cannot open boot_id: %m");
        return ret;
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
        hi                 = sn_hex(text[i]);
        lo                 = sn_hex(text[i + 1]);
        host->boot_id[n++] = (uint8_t)((hi << 4) | lo);
        ++i;
    }
    if (n != 16) {
        return EIO;
    }

    host->pid_ns = htole64(sn_ns_inode("/proc/self/ns/pid"));
    host->net_ns = htole64(sn_ns_inode("/proc/self/ns/net"));
    if (stat("/dev/shm", &st) != 0) {
        ret = errno;
        sn_log(inst, SOFTNIC_LOG_ERROR, "cannot stat /dev/shm: %m");
        return ret;
    }
    host->shm_dev = htole64((uint64_t)st.st_dev);
    return 0;
}

/* Find name among the interfaces config selects. */
static int sn_dev_find(const char *name, const softnic_config_t *config,
                       sn_iface_t *iface)
{
    sn_iface_t *ifaces = NULL;
    int ret, count, i;

    if (strncmp(name, SOFTNIC_DEV_PREFIX, strlen(SOFTNIC_DEV_PREFIX))) {
        return ENODEV;
    }
    ret = sn_ifaces(config, &ifaces, &count);
    if (ret != 0) {
        return ret;
    }
    for (i = 0; i < count; ++i) {
        if (!strcmp(ifaces[i].ifname, name + strlen(SOFTNIC_DEV_PREFIX))) {
            *iface = ifaces[i];
            break;
        }
    }
    free(ifaces);
    return (i == count) ? ENODEV : 0;
}

/* The instance's locks and memory (open failed, or close) */
static void sn_inst_free(sn_inst_t *inst)
{
    pthread_cond_destroy(&inst->cmd_cond);
    pthread_mutex_destroy(&inst->svc_lock);
    pthread_mutex_destroy(&inst->cmd_lock);
    pthread_mutex_destroy(&inst->mr_lock);
    pthread_mutex_destroy(&inst->lock);
    free(inst);
}

softnic_dev_t *softnic_dev_open(const char *name,
                                const softnic_config_t *config)
{
    sn_iface_t iface;
    sn_inst_t *inst;
    int ret;

    if (config == NULL) {
        config = &sn_default_config;
    }
    if (name == NULL) {
        errno = EINVAL;
        return NULL;
    }
    ret = sn_dev_find(name, config, &iface);
    if (ret != 0) {
        errno = ret;
        return NULL;
    }

    inst = calloc(1, sizeof(*inst));
    if (inst == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    snprintf(inst->super.name, sizeof(inst->super.name), "%s", name);
    snprintf(inst->ifname, sizeof(inst->ifname), "%s", iface.ifname);
    inst->config        = *config;
    inst->config.ifaces = NULL; /* not ours to keep */
    inst->ip            = iface.ip;
    sn_gid_of(&inst->ip, &inst->gid);
    inst->pid       = getpid();
    inst->id        = __atomic_fetch_add(&sn_next_inst_id, 1, __ATOMIC_RELAXED);
    inst->listen_fd = -1;
    inst->ud_fd     = -1;
    inst->epoll_fd  = -1;
    inst->idle_epfd = -1;
    inst->cmd_fd    = -1;
    inst->busy_mr   = -1;
    inst->next_pdn  = 1;
    pthread_mutex_init(&inst->lock, NULL);
    pthread_mutex_init(&inst->mr_lock, NULL);
    pthread_mutex_init(&inst->cmd_lock, NULL);
    pthread_mutex_init(&inst->svc_lock, NULL);
    pthread_cond_init(&inst->cmd_cond, NULL);

    ret = sn_host_id_init(inst);
    if (ret != 0) {
        goto err_free;
    }

    ret = sn_mr_table_init(inst);
    if (ret != 0) {
        goto err_free;
    }

    ret = sn_svc_start(inst);
    if (ret != 0) {
        goto err_mr_table;
    }

    return &inst->super;

err_mr_table:
    sn_mr_table_cleanup(inst);
err_free:
    sn_inst_free(inst);
    errno = ret;
    return NULL;
}

int softnic_dev_close(softnic_dev_t *dev)
{
    sn_inst_t *inst = sn_inst(dev);

    pthread_mutex_lock(&inst->lock);
    if (inst->num_qps > 0) {
        pthread_mutex_unlock(&inst->lock);
        return EBUSY;
    }
    pthread_mutex_unlock(&inst->lock);

    sn_svc_stop(inst);
    sn_mr_table_cleanup(inst);
    sn_inst_free(inst);
    return 0;
}

int softnic_dev_query(softnic_dev_t *dev, struct ibv_device_attr *attr)
{
    sn_inst_t *inst = sn_inst(dev);
    uint64_t guid;

    memset(attr, 0, sizeof(*attr));
    snprintf(attr->fw_ver, sizeof(attr->fw_ver), "softnic-1");
    /* EUI-64 style from the IPv4 address: 02:00:a.b:ff:fe:c.d */
    guid = 0x0200000000fffe00ull;
    guid |= ((uint64_t)inst->gid.raw[12] << 40) |
            ((uint64_t)inst->gid.raw[13] << 32) |
            ((uint64_t)inst->gid.raw[14] << 8) | inst->gid.raw[15];
    attr->node_guid      = htobe64(guid);
    attr->sys_image_guid = attr->node_guid;
    attr->max_mr_size    = SN_MAX_MSG;
    attr->page_size_cap  = 0x1000;
    attr->vendor_id      = 0xffffff;
    attr->vendor_part_id = 0x50f7;
    attr->hw_ver         = 1;
    attr->max_qp         = SN_MAX_QP;
    attr->max_qp_wr      = SN_MAX_QP_WR;
    attr->device_cap_flags =
        IBV_DEVICE_RC_RNR_NAK_GEN | IBV_DEVICE_PORT_ACTIVE_EVENT;
    attr->max_sge             = SN_MAX_SGE;
    attr->max_sge_rd          = SN_MAX_SGE;
    attr->max_cq              = 65536;
    attr->max_cqe             = SN_MAX_CQE;
    attr->max_mr              = SN_MAX_MR - 1;
    attr->max_pd              = 65536;
    attr->max_qp_rd_atom      = SN_MAX_RD_ATOMIC;
    attr->max_res_rd_atom     = SN_MAX_RD_ATOMIC * SN_MAX_QP;
    attr->max_qp_init_rd_atom = SN_MAX_RD_ATOMIC;
    attr->atomic_cap          = IBV_ATOMIC_HCA;
    attr->max_srq             = SN_MAX_QP;
    attr->max_srq_wr          = SN_MAX_QP_WR;
    attr->max_srq_sge         = SN_MAX_SGE;
    attr->max_pkeys           = 1;
    attr->phys_port_cnt       = 1;
    return 0;
}

int softnic_dev_query_port(softnic_dev_t *dev, uint8_t port_num,
                           struct ibv_port_attr *attr)
{
    (void)dev;
    if (port_num != 1) {
        return EINVAL;
    }
    memset(attr, 0, sizeof(*attr));
    attr->state          = IBV_PORT_ACTIVE;
    attr->max_mtu        = IBV_MTU_4096;
    attr->active_mtu     = IBV_MTU_4096;
    attr->gid_tbl_len    = 1;
    attr->port_cap_flags = 0;
    attr->max_msg_sz     = SN_MAX_MSG;
    attr->pkey_tbl_len   = 1;
    attr->lid            = 0;
    attr->sm_lid         = 0;
    attr->lmc            = 0;
    attr->max_vl_num     = 1;
    attr->active_width   = 1;  /* 1x */
    attr->active_speed   = 32; /* EDR-like rate: purely informative */
    attr->phys_state     = 5;  /* LinkUp */
    attr->link_layer     = IBV_LINK_LAYER_ETHERNET;
    return 0;
}

int softnic_dev_query_gid(softnic_dev_t *dev, uint8_t port_num, int index,
                          union ibv_gid *gid)
{
    if ((port_num != 1) || (index != 0)) {
        return EINVAL;
    }
    *gid = sn_inst(dev)->gid;
    return 0;
}

/* One P_Key: the default, full membership (as on RoCE ports) */
int softnic_dev_query_pkey(softnic_dev_t *dev, uint8_t port_num, int index,
                           uint16_t *pkey)
{
    (void)dev;
    if ((port_num != 1) || (index != 0)) {
        return EINVAL;
    }
    *pkey = 0xffff;
    return 0;
}

int softnic_dev_addr_pack(softnic_dev_t *dev, void *buf, size_t len)
{
    sn_inst_t *inst = sn_inst(dev);
    sn_addr_t addr;

    if (len < sizeof(addr)) {
        return EINVAL;
    }
    memset(&addr, 0, sizeof(addr));
    addr.version  = 1;
    addr.tcp_port = htole16(inst->listen_port);
    addr.magic    = htole32(SN_ADDR_MAGIC);
    memcpy(addr.gid, inst->gid.raw, sizeof(addr.gid));
    addr.host = inst->host;
    memcpy(buf, &addr, sizeof(addr));
    return 0;
}

int softnic_dev_addr_unpack(softnic_dev_t *dev, const void *buf, size_t len,
                            struct ibv_ah_attr *ah_attr)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0,    0,
                                         0, 0, 0, 0, 0xff, 0xff};
    sn_inst_t *inst                   = sn_inst(dev);
    sn_addr_t addr;

    if ((buf == NULL) || (len != sizeof(addr))) {
        return EINVAL;
    }
    memcpy(&addr, buf, sizeof(addr));
    if ((addr.version != 1) || (le32toh(addr.magic) != SN_ADDR_MAGIC) ||
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
    ah_attr->is_global = 1;
    memcpy(ah_attr->grh.dgid.raw, addr.gid, 16);
    ah_attr->grh.hop_limit  = 64;
    ah_attr->grh.sgid_index = 0;
    ah_attr->dlid           = le16toh(addr.tcp_port);
    ah_attr->port_num       = 1;
    return 0;
}
