/*
 * orc interface: one per device port. Owns the CQs, the SRQ and its receive
 * buffers, and its pairing agent, attached to the process's coordinator
 * session. This file holds its life cycle: device query, the registered
 * buffer pools, wakeup events, query, addresses and reachability, flush and
 * fence, configuration, open and close. The data path (receives, credit
 * grants, completions, the agent's hand-offs, progress) is in
 * orc_iface_progress.c.
 */
#include "orc.h"

#include <ucs/arch/cpu.h>
#include <ucs/debug/log.h>
#include <ucs/debug/memtrack_int.h>
#include <ucs/sys/string.h>
#include <ucs/sys/sys.h>
#include <ucs/sys/uid.h>
#include <ucs/time/time.h>
#include <ucs/type/class.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>


ucs_config_field_t uct_orc_iface_config_table[] = {
    {"", "", NULL, ucs_offsetof(uct_orc_iface_config_t, super),
     UCS_CONFIG_TYPE_TABLE(uct_iface_config_table)},

    {"COORDINATOR", ORC_CLIENT_DEFAULT_URL,
     "URL of the orcd coordinator that pairs orc endpoints\n"
     "(http://host:port or https://host:port), or of several orcd replicas,\n"
     "comma-separated: requests fail over between them.",
     ucs_offsetof(uct_orc_iface_config_t, coordinator), UCS_CONFIG_TYPE_STRING},

    {"JOB", ORC_CLIENT_DEFAULT_JOB,
     "Job the process registers in: 1..128 characters of [A-Za-z0-9._-];\n"
     "only interfaces of the same job and coordinator reach each other.",
     ucs_offsetof(uct_orc_iface_config_t, job), UCS_CONFIG_TYPE_STRING},

    {"TOKEN", "",
     "Bearer token of the job for orcd (empty: none, or UCX_ORC_TOKEN_FILE).",
     ucs_offsetof(uct_orc_iface_config_t, token), UCS_CONFIG_TYPE_STRING},

    {"TOKEN_FILE", "",
     "File holding the job's token (first line); used when UCX_ORC_TOKEN is\n"
     "empty.",
     ucs_offsetof(uct_orc_iface_config_t, token_file), UCS_CONFIG_TYPE_STRING},

    {"COORDINATOR_WAIT", "0",
     "How long interface open waits for orcd to become reachable, in\n"
     "seconds (e.g. 30s, 1m). 0: fail at once when orcd is unreachable.",
     ucs_offsetof(uct_orc_iface_config_t, coordinator_wait),
     UCS_CONFIG_TYPE_TIME},

    {"LEASE_TTL", "10",
     "Lease of the process's node in orcd, in seconds (kept alive in the\n"
     "background; peers see the node expire this long after a crash). All\n"
     "interfaces of a process share one node: the first one sets it.",
     ucs_offsetof(uct_orc_iface_config_t, lease_ttl), UCS_CONFIG_TYPE_UINT},

    {"TX_QUEUE_LEN", "256", "Send queue length of each queue pair (1..16384).",
     ucs_offsetof(uct_orc_iface_config_t, tx_queue_len), UCS_CONFIG_TYPE_UINT},

    {"RX_QUEUE_LEN", "1024",
     "Receive buffers posted to the interface's shared receive queue\n"
     "(16..65536). The endpoints peers open to this interface share them,\n"
     "less the up to 32 (a quarter) released buffers it posts again in one\n"
     "list: each may have that share of them active messages in flight, at\n"
     "most AM_CREDITS and at least 2; bursts beyond the buffers wait in the\n"
     "receiver-not-ready retry (RNR_RETRY).",
     ucs_offsetof(uct_orc_iface_config_t, rx_queue_len), UCS_CONFIG_TYPE_UINT},

    {"AM_CREDITS", "128",
     "Active messages an endpoint may have in flight before the receiver\n"
     "returns credits, with few peers (1..65535; never more than\n"
     "RX_QUEUE_LEN). The receiver returns them once half are used.",
     ucs_offsetof(uct_orc_iface_config_t, am_credits), UCS_CONFIG_TYPE_UINT},

    {"MAX_INLINE", "128",
     "Largest put_short / am_short message, in bytes (0..SEG_SIZE-8).",
     ucs_offsetof(uct_orc_iface_config_t, max_inline),
     UCS_CONFIG_TYPE_MEMUNITS},

    {"SEG_SIZE", "8k",
     "Size of bounce and receive buffers: the largest bcopy operation and\n"
     "active message (256..1M).",
     ucs_offsetof(uct_orc_iface_config_t, seg_size), UCS_CONFIG_TYPE_MEMUNITS},

    {"PAIR_TIMEOUT", "10s",
     "How long an endpoint waits for the peer's pairing reply, and for orcd\n"
     "to take its pairing request, before it fails with\n"
     "UCS_ERR_ENDPOINT_TIMEOUT.",
     ucs_offsetof(uct_orc_iface_config_t, pair_timeout), UCS_CONFIG_TYPE_TIME},

    {"TIMEOUT", "18",
     "Queue pair transport timeout, IB encoding 4.096us * 2^N (0..31, 0 =\n"
     "infinite); 18 is ~1.07 s, like UCX's own RC default of 1 s.",
     ucs_offsetof(uct_orc_iface_config_t, qp_timeout), UCS_CONFIG_TYPE_UINT},

    {"RETRY_COUNT", "7",
     "Queue pair transport retries before RETRY_EXC (0..7).",
     ucs_offsetof(uct_orc_iface_config_t, retry_count), UCS_CONFIG_TYPE_UINT},

    {"RNR_RETRY", "7",
     "Queue pair receiver-not-ready retries (0..7, 7 = infinite).",
     ucs_offsetof(uct_orc_iface_config_t, rnr_retry), UCS_CONFIG_TYPE_UINT},

    {"TX_CQ_MODERATION", "64",
     "Send completion moderation (1..1024): at most this many work requests\n"
     "in a row go without a completion of their own; one completion then\n"
     "retires them all. Operations that have work at completion (a callback,\n"
     "a result) and the last request before a flush always get one. 1:\n"
     "every request completes on its own. At most TX_QUEUE_LEN / 4 is used.",
     ucs_offsetof(uct_orc_iface_config_t, tx_moderation), UCS_CONFIG_TYPE_UINT},

    {NULL},
};

/* --------------------------------------------------------------- devices */

ucs_status_t uct_orc_query_devices(uct_md_h tl_md,
                                   uct_tl_device_resource_t **devices_p,
                                   unsigned *num_devices_p)
{
    uct_orc_md_t *md = ucs_derived_of(tl_md, uct_orc_md_t);
    uct_tl_device_resource_t *devices;
    unsigned num_ports, i;

    num_ports = md->dev_attr.phys_port_cnt;
    if (num_ports == 0) {
        *devices_p     = NULL;
        *num_devices_p = 0;
        return UCS_OK;
    }

    devices = ucs_calloc(num_ports, sizeof(*devices), "orc devices");
    if (devices == NULL) {
        return UCS_ERR_NO_MEMORY;
    }

    for (i = 0; i < num_ports; ++i) {
        ucs_snprintf_zero(devices[i].name, sizeof(devices[i].name), "%s:%u",
                          md->dev->name, i + 1);
        devices[i].type       = UCT_DEVICE_TYPE_NET;
        devices[i].sys_device = md->sys_dev;
    }

    *devices_p     = devices;
    *num_devices_p = num_ports;
    return UCS_OK;
}

/* ---------------------------------------------------- registered mpools */

/* Chunks of the tx/rx pools are registered as a whole; the MR sits in a
 * header before the chunk. */
typedef struct uct_orc_chunk_hdr {
    orc_mr_t *mr;
} UCS_V_ALIGNED(64) uct_orc_chunk_hdr_t;

static ucs_status_t uct_orc_mp_chunk_alloc(ucs_mpool_t *mp, size_t *size_p,
                                           void **chunk_p)
{
    uct_orc_iface_t *iface = *(uct_orc_iface_t **)ucs_mpool_priv(mp);
    uct_orc_chunk_hdr_t *hdr;
    size_t size;

    size = ucs_align_up(*size_p + sizeof(*hdr), ucs_get_page_size());
    if (ucs_posix_memalign((void **)&hdr, ucs_get_page_size(), size,
                           "orc chunk") != 0) {
        return UCS_ERR_NO_MEMORY;
    }

    hdr->mr = uct_orc_md_reg_direct(iface->md, hdr, size);
    if (hdr->mr == NULL) {
        ucs_error("orc: %s: failed to register a buffer chunk of %zu bytes: %m",
                  iface->md->dev->name, size);
        ucs_free(hdr);
        return UCS_ERR_IO_ERROR;
    }

    *size_p  = size - sizeof(*hdr);
    *chunk_p = hdr + 1;
    return UCS_OK;
}

static void uct_orc_mp_chunk_release(ucs_mpool_t *mp, void *chunk)
{
    uct_orc_chunk_hdr_t *hdr = (uct_orc_chunk_hdr_t *)chunk - 1;
    int ret;

    ret = orc_mr_dereg(hdr->mr);
    if (ret != 0) {
        ucs_warn("orc: failed to deregister a buffer chunk: %s", strerror(ret));
    }
    ucs_free(hdr);
}

static void uct_orc_tx_obj_init(ucs_mpool_t *mp, void *obj, void *chunk)
{
    uct_orc_chunk_hdr_t *hdr = (uct_orc_chunk_hdr_t *)chunk - 1;
    uct_orc_op_t *op         = obj;

    op->lkey = hdr->mr->lkey;
}

static void uct_orc_rx_obj_init(ucs_mpool_t *mp, void *obj, void *chunk)
{
    uct_orc_chunk_hdr_t *hdr = (uct_orc_chunk_hdr_t *)chunk - 1;
    uct_orc_rx_desc_t *desc  = obj;

    desc->lkey = hdr->mr->lkey;
}

/* Pool of objects in registered chunks; _obj_init records the lkey */
/* one initializer a line */
/* clang-format off */
#define UCT_ORC_REG_MP_OPS(_obj_init) \
    { \
        .chunk_alloc   = uct_orc_mp_chunk_alloc, \
        .chunk_release = uct_orc_mp_chunk_release, \
        .obj_init      = _obj_init, \
        .obj_cleanup   = NULL, \
        .obj_str       = NULL \
    }
/* clang-format on */

static ucs_mpool_ops_t uct_orc_tx_mp_ops =
    UCT_ORC_REG_MP_OPS(uct_orc_tx_obj_init);

static ucs_mpool_ops_t uct_orc_rx_mp_ops =
    UCT_ORC_REG_MP_OPS(uct_orc_rx_obj_init);

static ucs_mpool_ops_t uct_orc_op_mp_ops = {.chunk_alloc =
                                                ucs_mpool_chunk_malloc,
                                            .chunk_release =
                                                ucs_mpool_chunk_free,
                                            .obj_init    = NULL,
                                            .obj_cleanup = NULL,
                                            .obj_str     = NULL};

/* --------------------------------------------------------------- events */

static ucs_status_t uct_orc_iface_event_fd_get(uct_iface_h tl_iface, int *fd_p)
{
    uct_orc_iface_t *iface = ucs_derived_of(tl_iface, uct_orc_iface_t);

    *fd_p = iface->event_fd;
    return UCS_OK;
}

static ucs_status_t uct_orc_iface_arm_cq(uct_orc_iface_t *iface, int is_send,
                                         int solicited_only)
{
    orc_cq_t *cq = is_send ? iface->send_cq : iface->recv_cq;
    int ret, n;

    ret = orc_cq_req_notify(cq, solicited_only);
    if (ret != 0) {
        ucs_error("orc: failed to arm the %s completion queue: %s",
                  is_send ? "send" : "receive", strerror(ret));
        return UCS_ERR_IO_ERROR;
    }

    /* A completion that arrived before the request raises no event */
    if (iface->config.has_stash) {
        return UCS_ERR_BUSY;
    }
    n = orc_cq_poll(cq, 1, &iface->stash_wc);
    if (n > 0) {
        iface->config.has_stash = 1;
        iface->stash_is_send    = is_send;
        return UCS_ERR_BUSY;
    }
    return UCS_OK;
}

static ucs_status_t uct_orc_iface_event_arm(uct_iface_h tl_iface,
                                            unsigned events)
{
    uct_orc_iface_t *iface = ucs_derived_of(tl_iface, uct_orc_iface_t);
    void *cq_context;
    orc_cq_t *cq;
    uint64_t value;
    ucs_status_t status;
    unsigned nacks;
    ssize_t ret;

    /* Consume the wakeups that brought us here */
    for (nacks = 0; nacks < 1024; ++nacks) {
        if (orc_cq_get_event(iface->channel, &cq, &cq_context) != 0) {
            break;
        }
        orc_cq_ack_events(cq, 1);
    }
    do {
        ret = read(iface->agent.event_fd, &value, sizeof(value));
    } while ((ret < 0) && (errno == EINTR));

    if (uct_orc_agent_has_events(&iface->agent) ||
        !ucs_list_is_empty(&iface->failed_eps) ||
        !ucs_list_is_empty(&iface->pending_eps) ||
        !ucs_list_is_empty(&iface->grant_pending) || iface->config.has_stash) {
        return UCS_ERR_BUSY;
    }

    /* As UCX's RC transports: send completions on the send CQ; active
     * messages are solicited SENDs, so a receive-only arm sleeps through
     * credit grants, which wake a send-armed interface (they let its
     * pending sends go) */
    if (events & UCT_EVENT_SEND_COMP) {
        status = uct_orc_iface_arm_cq(iface, 1, 0);
        if (status != UCS_OK) {
            return status;
        }
    }
    if (events & (UCT_EVENT_RECV | UCT_EVENT_SEND_COMP)) {
        status =
            uct_orc_iface_arm_cq(iface, 0, !(events & UCT_EVENT_SEND_COMP));
        if (status != UCS_OK) {
            return status;
        }
    }
    return UCS_OK;
}

/* ---------------------------------------------------------------- query */

static ucs_status_t uct_orc_iface_query(uct_iface_h tl_iface,
                                        uct_iface_attr_t *attr)
{
    uct_orc_iface_t *iface = ucs_derived_of(tl_iface, uct_orc_iface_t);
    size_t hdr             = sizeof(uct_orc_hdr_t);
    size_t max_msg         = iface->port_attr.max_msg_sz;
    int soft               = iface->md->dev->backend == ORC_DEV_BACKEND_SOFT;
    int has_atomics        = iface->md->dev_attr.atomic_cap != IBV_ATOMIC_NONE;

    uct_base_iface_query(&iface->super, attr);

    if (max_msg == 0) {
        max_msg = UCS_GBYTE;
    }

    attr->cap.put.max_short       = iface->config.max_inline;
    attr->cap.put.max_bcopy       = iface->config.seg_size;
    attr->cap.put.min_zcopy       = 0;
    attr->cap.put.max_zcopy       = max_msg;
    attr->cap.put.opt_zcopy_align = UCS_SYS_PCI_MAX_PAYLOAD;
    attr->cap.put.align_mtu = ucs_max(256, 128 << iface->port_attr.active_mtu);
    attr->cap.put.max_iov   = iface->config.max_iov;

    attr->cap.get.max_bcopy       = iface->config.seg_size;
    attr->cap.get.min_zcopy       = 0;
    attr->cap.get.max_zcopy       = max_msg;
    attr->cap.get.opt_zcopy_align = UCS_SYS_PCI_MAX_PAYLOAD;
    attr->cap.get.align_mtu       = attr->cap.put.align_mtu;
    attr->cap.get.max_iov         = iface->config.max_iov;

    attr->cap.am.max_short =
        ucs_min(iface->config.max_inline, iface->config.seg_size - hdr);
    attr->cap.am.max_bcopy       = iface->config.seg_size - hdr;
    attr->cap.am.min_zcopy       = 0;
    attr->cap.am.max_zcopy       = iface->config.seg_size - hdr;
    attr->cap.am.opt_zcopy_align = UCS_SYS_PCI_MAX_PAYLOAD;
    attr->cap.am.align_mtu       = attr->cap.put.align_mtu;
    attr->cap.am.max_hdr         = ucs_min(128, iface->config.seg_size - hdr);
    attr->cap.am.max_iov         = iface->config.max_iov - 1;

    attr->cap.flags = UCT_IFACE_FLAG_AM_SHORT | UCT_IFACE_FLAG_AM_BCOPY |
                      UCT_IFACE_FLAG_AM_ZCOPY | UCT_IFACE_FLAG_PUT_SHORT |
                      UCT_IFACE_FLAG_PUT_BCOPY | UCT_IFACE_FLAG_PUT_ZCOPY |
                      UCT_IFACE_FLAG_GET_BCOPY | UCT_IFACE_FLAG_GET_ZCOPY |
                      UCT_IFACE_FLAG_PENDING | UCT_IFACE_FLAG_CB_SYNC |
                      UCT_IFACE_FLAG_CONNECT_TO_IFACE |
                      UCT_IFACE_FLAG_ERRHANDLE_PEER_FAILURE |
                      UCT_IFACE_FLAG_EP_CHECK |
                      UCT_ORC_COMPAT_IFACE_FLAG_INTER_NODE;
    attr->cap.event_flags = UCT_IFACE_FLAG_EVENT_SEND_COMP |
                            UCT_IFACE_FLAG_EVENT_RECV | UCT_IFACE_FLAG_EVENT_FD;

    if (has_atomics) {
        /* Native 64-bit verbs atomics: fetch-add and compare-swap. Swap is
         * a compare-swap retried with the value the previous attempt
         * returned: the attempt that succeeds exchanges atomically, so the
         * result is exact. No 32-bit atomics: verbs has none. */
        attr->cap.flags |= UCT_IFACE_FLAG_ATOMIC_DEVICE;
        attr->cap.atomic64.op_flags  = UCS_BIT(UCT_ATOMIC_OP_ADD);
        attr->cap.atomic64.fop_flags = UCS_BIT(UCT_ATOMIC_OP_ADD) |
                                       UCS_BIT(UCT_ATOMIC_OP_SWAP) |
                                       UCS_BIT(UCT_ATOMIC_OP_CSWAP);
    }

    attr->device_addr_len = sizeof(uct_orc_dev_addr_t);
    attr->iface_addr_len  = sizeof(uct_orc_iface_addr_t);
    attr->ep_addr_len     = 0;
    attr->max_conn_priv   = 0;

    if (soft) {
        /* softnic on one host: shared-memory rings for SENDs, single-copy
         * CMA for READ/WRITE. Measured here (ucx_perftest, medians): put_lat
         * 1.3 us, get 8 B 1.5 us, am_lat 0.3 us, get 1 MiB 6.2 GB/s; across
         * hosts (TCP) latency is ~20 us, which UCP cannot tell apart */
        attr->overhead            = 200e-9;
        attr->latency             = ucs_linear_func_make(1.5e-6, 0);
        attr->bandwidth.dedicated = 0;
        attr->bandwidth.shared    = 6000.0 * UCS_MBYTE;
        attr->priority            = 0;
    } else {
        /* a verbs HCA: ~1us wire latency, link rate from the port */
        attr->overhead            = 75e-9;
        attr->latency             = ucs_linear_func_make(1.2e-6, 1e-9);
        attr->bandwidth.dedicated = 0;
        attr->bandwidth.shared    = 10000.0 * UCS_MBYTE;
        attr->priority            = 10;
    }

    if (iface->remote) {
        uct_orc_iface_remote_perf(attr);
    }
    return UCS_OK;
}

static ucs_status_t uct_orc_iface_get_device_address(uct_iface_h tl_iface,
                                                     uct_device_addr_t *addr)
{
    uct_orc_iface_t *iface       = ucs_derived_of(tl_iface, uct_orc_iface_t);
    uct_orc_dev_addr_t *dev_addr = (uct_orc_dev_addr_t *)addr;

    dev_addr->backend = iface->md->dev->backend;
    dev_addr->domain  = iface->domain;
    dev_addr->host_id = ucs_get_system_id();
    dev_addr->net_ns  = ucs_sys_get_ns(UCS_SYS_NS_TYPE_NET);
    return UCS_OK;
}

static ucs_status_t uct_orc_iface_get_address(uct_iface_h tl_iface,
                                              uct_iface_addr_t *addr)
{
    uct_orc_iface_t *iface = ucs_derived_of(tl_iface, uct_orc_iface_t);
    uct_orc_iface_addr_t *iface_addr = (uct_orc_iface_addr_t *)addr;

    iface_addr->node_id  = iface->node_id;
    iface_addr->iface_id = iface->agent.iface_id;
    return UCS_OK;
}

const char *uct_orc_iface_unreachable(uct_iface_h tl_iface,
                                      const uct_device_addr_t *addr,
                                      const uct_iface_addr_t *iface_addr,
                                      int same_device)
{
    uct_orc_iface_t *iface = ucs_derived_of(tl_iface, uct_orc_iface_t);
    const uct_orc_dev_addr_t *dev_addr = (const uct_orc_dev_addr_t *)addr;
    const char *why;

    if (dev_addr == NULL) {
        return "orc: no device address";
    }

    why = uct_orc_iface_addr_unreachable(
        iface, dev_addr, (const uct_orc_iface_addr_t *)iface_addr);
    if ((why == NULL) && same_device &&
        ((dev_addr->host_id != ucs_get_system_id()) ||
         (dev_addr->net_ns != (uint32_t)ucs_sys_get_ns(UCS_SYS_NS_TYPE_NET)))) {
        why = "orc: device on another host or network namespace";
    }
    return why;
}

static int uct_orc_iface_is_reachable(const uct_iface_h tl_iface,
                                      const uct_device_addr_t *addr,
                                      const uct_iface_addr_t *iface_addr)
{
    return uct_orc_iface_unreachable(tl_iface, addr, iface_addr, 0) == NULL;
}

static ucs_status_t uct_orc_iface_flush(uct_iface_h tl_iface, unsigned flags,
                                        uct_completion_t *comp)
{
    uct_orc_iface_t *iface = ucs_derived_of(tl_iface, uct_orc_iface_t);
    uct_orc_ep_t *ep;
    int busy = 0;

    if (comp != NULL) {
        return UCS_ERR_UNSUPPORTED;
    }

    ucs_list_for_each(ep, &iface->ep_list, list) {
        busy |= uct_orc_ep_signal_tail(ep);
    }
    if (busy) {
        UCT_TL_IFACE_STAT_FLUSH_WAIT(&iface->super);
        return UCS_INPROGRESS;
    }
    UCT_TL_IFACE_STAT_FLUSH(&iface->super);
    return UCS_OK;
}

static ucs_status_t uct_orc_iface_fence(uct_iface_h tl_iface, unsigned flags)
{
    uct_orc_iface_t *iface = ucs_derived_of(tl_iface, uct_orc_iface_t);

    ++iface->fence_beat;
    UCT_TL_IFACE_STAT_FENCE(&iface->super);
    return UCS_OK;
}

/* ------------------------------------------------------------ open/close */

static ucs_status_t
uct_orc_iface_check_config(const uct_orc_iface_config_t *config)
{
#define UCT_ORC_CHECK_RANGE(_field, _name, _min, _max)                      \
    if (((config->_field) < (_min)) || ((config->_field) > (_max))) {       \
        ucs_error("orc: invalid UCX_ORC_" _name "=%lu: allowed values are " \
                  "%lu..%lu",                                               \
                  (unsigned long)(config->_field), (unsigned long)(_min),   \
                  (unsigned long)(_max));                                   \
        return UCS_ERR_INVALID_PARAM;                                       \
    }

    UCT_ORC_CHECK_RANGE(tx_queue_len, "TX_QUEUE_LEN", 1, 16384);
    UCT_ORC_CHECK_RANGE(rx_queue_len, "RX_QUEUE_LEN", 16, 65536);
    /* more than RX_QUEUE_LEN is no error: a window never exceeds it */
    UCT_ORC_CHECK_RANGE(am_credits, "AM_CREDITS", 1, UCT_ORC_MAX_CREDITS);
    UCT_ORC_CHECK_RANGE(seg_size, "SEG_SIZE", 256, UCS_MBYTE);
    UCT_ORC_CHECK_RANGE(max_inline, "MAX_INLINE", 0,
                        config->seg_size - sizeof(uct_orc_hdr_t));
    UCT_ORC_CHECK_RANGE(qp_timeout, "TIMEOUT", 0, 31);
    UCT_ORC_CHECK_RANGE(retry_count, "RETRY_COUNT", 0, 7);
    UCT_ORC_CHECK_RANGE(rnr_retry, "RNR_RETRY", 0, 7);
    UCT_ORC_CHECK_RANGE(lease_ttl, "LEASE_TTL", 1, 3600);
    UCT_ORC_CHECK_RANGE(tx_moderation, "TX_CQ_MODERATION", 1, 1024);
#undef UCT_ORC_CHECK_RANGE

    if (!(config->pair_timeout > 0)) {
        ucs_error("orc: invalid UCX_ORC_PAIR_TIMEOUT=%g s: must be positive",
                  config->pair_timeout);
        return UCS_ERR_INVALID_PARAM;
    }
    if (!(config->coordinator_wait >= 0)) {
        ucs_error("orc: invalid UCX_ORC_COORDINATOR_WAIT=%g s: must be 0 or "
                  "positive",
                  config->coordinator_wait);
        return UCS_ERR_INVALID_PARAM;
    }
    /* the coordinator URL, the job name and the token are checked by the
     * coordinator client (orc_session.c) */
    return UCS_OK;
}

static ucs_status_t uct_orc_iface_parse_port(const char *dev_name,
                                             const char *md_dev,
                                             uint8_t *port_p)
{
    const char *colon = strrchr(dev_name, ':');
    char *end;
    unsigned long port;

    if ((colon == NULL) || ((size_t)(colon - dev_name) != strlen(md_dev)) ||
        strncmp(dev_name, md_dev, colon - dev_name)) {
        ucs_error("orc: invalid device '%s': expected %s:<port>", dev_name,
                  md_dev);
        return UCS_ERR_NO_DEVICE;
    }

    port = strtoul(colon + 1, &end, 10);
    if ((*end != '\0') || (port == 0) || (port > 255)) {
        ucs_error("orc: invalid port in device '%s'", dev_name);
        return UCS_ERR_NO_DEVICE;
    }

    *port_p = port;
    return UCS_OK;
}

/* Step 1: the open parameters, the configuration and the device port */
static ucs_status_t
uct_orc_iface_init_config(uct_orc_iface_t *iface,
                          const uct_iface_params_t *params,
                          const uct_orc_iface_config_t *config)
{
    uct_orc_md_t *md = iface->md;
    ucs_status_t status;
    int ret;

    if (!(params->field_mask & UCT_IFACE_PARAM_FIELD_OPEN_MODE) ||
        !(params->open_mode & UCT_IFACE_OPEN_MODE_DEVICE)) {
        ucs_error("orc: only UCT_IFACE_OPEN_MODE_DEVICE is supported");
        return UCS_ERR_UNSUPPORTED;
    }

    status = uct_orc_iface_check_config(config);
    if (status != UCS_OK) {
        return status;
    }

    status = uct_orc_iface_parse_port(params->mode.device.dev_name,
                                      md->dev->name, &iface->port);
    if (status != UCS_OK) {
        return status;
    }

    ret = orc_dev_query_port(md->dev, iface->port, &iface->port_attr);
    if (ret != 0) {
        ucs_error("orc: failed to query %s: %s", params->mode.device.dev_name,
                  strerror(ret));
        return UCS_ERR_NO_DEVICE;
    }
    if (iface->port_attr.state != IBV_PORT_ACTIVE) {
        ucs_error("orc: %s is not active (state %d)",
                  params->mode.device.dev_name, iface->port_attr.state);
        return UCS_ERR_NO_DEVICE;
    }

    iface->config.tx_queue_len = config->tx_queue_len;
    iface->config.rx_queue_len = config->rx_queue_len;
    iface->config.rx_hold      = uct_orc_rx_hold(config->rx_queue_len);
    iface->config.am_credits   = config->am_credits;
    uct_orc_iface_set_credit_window(iface);
    iface->config.seg_size = config->seg_size;
    iface->config.rx_headroom =
        UCT_IFACE_PARAM_VALUE(params, rx_headroom, RX_HEADROOM, 0);
    iface->config.max_inline = config->max_inline;
    /* every QP's send queue returns entries at least 4 times per round */
    iface->config.tx_moderation =
        ucs_max(1, ucs_min(config->tx_moderation, config->tx_queue_len / 4));
    iface->config.max_iov =
        ucs_max(2, ucs_min(UCT_ORC_MAX_SGE, md->dev_attr.max_sge));
    iface->config.max_rd_atomic =
        ucs_max(1, ucs_min(16, md->dev_attr.max_qp_rd_atom));
    /* the binding of the thread opening us now, not at process start */
    iface->remote = uct_orc_md_is_remote(md);
    return UCS_OK;
}

/* Step 2: the wakeup fd, an epoll set over the completion channel (and,
 * from step 5, the agent's event fd) */
static ucs_status_t uct_orc_iface_init_events(uct_orc_iface_t *iface)
{
    struct epoll_event event = {0};
    int flags;

    iface->channel = orc_comp_channel_create(iface->md->dev);
    if (iface->channel == NULL) {
        ucs_error("orc: %s: failed to create a completion channel: %m",
                  iface->md->dev->name);
        return UCS_ERR_IO_ERROR;
    }

    flags = fcntl(iface->channel->fd, F_GETFL);
    if ((flags < 0) ||
        (fcntl(iface->channel->fd, F_SETFL, flags | O_NONBLOCK) < 0)) {
        ucs_error("orc: failed to make the completion channel non-blocking: "
                  "%m");
        goto err_destroy_channel;
    }

    iface->event_fd = epoll_create1(EPOLL_CLOEXEC);
    if (iface->event_fd < 0) {
        ucs_error("orc: epoll_create1() failed: %m");
        goto err_destroy_channel;
    }

    event.events  = EPOLLIN;
    event.data.fd = iface->channel->fd;
    if (epoll_ctl(iface->event_fd, EPOLL_CTL_ADD, iface->channel->fd, &event) <
        0) {
        ucs_error("orc: epoll_ctl(completion channel) failed: %m");
        goto err_close;
    }
    return UCS_OK;

err_close:
    close(iface->event_fd);
    iface->event_fd = -1;
err_destroy_channel:
    orc_comp_channel_destroy(iface->channel);
    return UCS_ERR_IO_ERROR;
}

static void uct_orc_iface_cleanup_events(uct_orc_iface_t *iface)
{
    close(iface->event_fd);
    orc_comp_channel_destroy(iface->channel);
}

/* Step 3: the send side: the send CQ, bounce buffers and op descriptors */
static ucs_status_t uct_orc_iface_init_tx(uct_orc_iface_t *iface,
                                          const uct_orc_iface_config_t *config)
{
    uct_orc_md_t *md = iface->md;
    ucs_status_t status;
    unsigned send_cqe;

    send_cqe = ucs_min(config->tx_queue_len * 8, 65536);
    if ((md->dev_attr.max_cqe > 0) &&
        (send_cqe > (unsigned)md->dev_attr.max_cqe)) {
        send_cqe = md->dev_attr.max_cqe;
    }
    iface->send_cq = orc_cq_create(md->dev, send_cqe, iface, iface->channel);
    if (iface->send_cq == NULL) {
        ucs_error("orc: %s: failed to create a send CQ of %u entries: %m",
                  md->dev->name, send_cqe);
        return UCS_ERR_IO_ERROR;
    }
    iface->tx_cq_avail = ucs_min((unsigned)iface->send_cq->cqe, send_cqe);
    iface->tx_cq_len   = iface->tx_cq_avail;

    status = uct_orc_compat_mpool_init(&iface->tx_mp, sizeof(uct_orc_iface_t *),
                                       sizeof(uct_orc_op_t) + config->seg_size,
                                       0, 64, 128, UINT_MAX, &uct_orc_tx_mp_ops,
                                       "orc_tx");
    if (status != UCS_OK) {
        goto err_destroy_cq;
    }
    *(uct_orc_iface_t **)ucs_mpool_priv(&iface->tx_mp) = iface;

    status =
        uct_orc_compat_mpool_init(&iface->op_mp, 0, sizeof(uct_orc_op_t), 0, 64,
                                  256, UINT_MAX, &uct_orc_op_mp_ops, "orc_ops");
    if (status != UCS_OK) {
        goto err_cleanup_tx_mp;
    }
    return UCS_OK;

err_cleanup_tx_mp:
    ucs_mpool_cleanup(&iface->tx_mp, 0);
err_destroy_cq:
    orc_cq_destroy(iface->send_cq);
    return status;
}

static void uct_orc_iface_cleanup_tx(uct_orc_iface_t *iface)
{
    /* in-flight ops of destroyed eps never completed: no leak check */
    ucs_mpool_cleanup(&iface->op_mp, 0);
    ucs_mpool_cleanup(&iface->tx_mp, 0);
    orc_cq_destroy(iface->send_cq);
}

/*
 * The receive buffer pool. An element is
 *   uct_orc_rx_desc_t | pad | release slot | rx headroom | payload
 * (the wire header lands in the last bytes before the payload). The pool
 * places the payload plus the application's am_align_offset at the requested
 * AM alignment (as UCX's transports do, uct_iface_param_am_alignment), and
 * the descriptor at a cache line when none was asked for. The pad keeps the
 * element 8-byte aligned for the pool's own bookkeeping: the alignment
 * given to the pool is at least 8.
 */
static ucs_status_t uct_orc_iface_rx_mp_init(uct_orc_iface_t *iface,
                                             const uct_iface_params_t *params)
{
    size_t payload_offset =
        sizeof(uct_orc_rx_desc_t) + sizeof(void *) + iface->config.rx_headroom;
    size_t align, align_offset;
    ucs_status_t status;

    if ((params->field_mask & UCT_IFACE_PARAM_FIELD_AM_ALIGNMENT) &&
        ((params->am_alignment == 0) || !ucs_is_pow2(params->am_alignment))) {
        ucs_error("orc: invalid AM alignment %zu: must be a power of 2",
                  params->am_alignment);
        return UCS_ERR_INVALID_PARAM;
    }

    status =
        uct_iface_param_am_alignment(params, iface->config.seg_size, 0,
                                     payload_offset, &align, &align_offset);
    if (status != UCS_OK) {
        return status;
    }

    if (params->field_mask & UCT_IFACE_PARAM_FIELD_AM_ALIGNMENT) {
        iface->config.rx_pad = (8 - (align_offset % 8)) % 8;
        align_offset += iface->config.rx_pad;
        align = ucs_max(align, 8);
    }
    iface->config.rx_desc_offset =
        sizeof(uct_orc_rx_desc_t) + iface->config.rx_pad + sizeof(void *);
    iface->release_desc.cb = uct_orc_iface_release_desc;

    status = uct_orc_compat_mpool_init(&iface->rx_mp, sizeof(uct_orc_iface_t *),
                                       iface->config.rx_desc_offset +
                                           iface->config.rx_headroom +
                                           iface->config.seg_size -
                                           sizeof(uct_orc_hdr_t),
                                       align_offset, align, 128, UINT_MAX,
                                       &uct_orc_rx_mp_ops, "orc_rx");
    if (status != UCS_OK) {
        return status;
    }
    *(uct_orc_iface_t **)ucs_mpool_priv(&iface->rx_mp) = iface;
    return UCS_OK;
}

/* Step 4: the receive side: the receive CQ, the shared receive queue and
 * its buffers */
static ucs_status_t uct_orc_iface_init_rx(uct_orc_iface_t *iface,
                                          const uct_iface_params_t *params)
{
    uct_orc_md_t *md = iface->md;
    struct ibv_srq_init_attr srq_attr;
    ucs_status_t status;
    unsigned i;

    status = uct_orc_iface_rx_mp_init(iface, params);
    if (status != UCS_OK) {
        return status;
    }

    iface->recv_cq = orc_cq_create(md->dev, iface->config.rx_queue_len + 64,
                                   iface, iface->channel);
    if (iface->recv_cq == NULL) {
        ucs_error("orc: %s: failed to create a receive CQ: %m", md->dev->name);
        status = UCS_ERR_IO_ERROR;
        goto err_cleanup_mp;
    }

    memset(&srq_attr, 0, sizeof(srq_attr));
    srq_attr.attr.max_wr  = iface->config.rx_queue_len;
    srq_attr.attr.max_sge = 1;
    iface->srq            = orc_srq_create(md->pd, &srq_attr);
    if (iface->srq == NULL) {
        ucs_error("orc: %s: failed to create a shared receive queue of %u: %m",
                  md->dev->name, iface->config.rx_queue_len);
        status = UCS_ERR_IO_ERROR;
        goto err_destroy_cq;
    }

    for (i = 0; i < iface->config.rx_queue_len; ++i) {
        status = uct_orc_iface_post_recv(iface, NULL);
        if (status != UCS_OK) {
            goto err_destroy_srq;
        }
    }
    status = uct_orc_iface_post_recv_batch(iface);
    if (status != UCS_OK) {
        goto err_destroy_srq;
    }
    return UCS_OK;

err_destroy_srq:
    orc_srq_destroy(iface->srq); /* with the receives posted so far */
err_destroy_cq:
    orc_cq_destroy(iface->recv_cq);
err_cleanup_mp:
    ucs_mpool_cleanup(&iface->rx_mp, 0);
    return status;
}

static void uct_orc_iface_cleanup_rx(uct_orc_iface_t *iface)
{
    /* the posted receive buffers die with the SRQ, the held ones here */
    while (iface->rx_batch_len > 0) {
        ucs_mpool_put(iface->rx_batch[--iface->rx_batch_len]);
    }
    orc_srq_destroy(iface->srq);
    orc_cq_destroy(iface->recv_cq);
    ucs_mpool_cleanup(&iface->rx_mp, 0);
}

/*
 * The inline data the QPs take: what the longest short operation needs (the
 * wire header and an AM's 64-bit header, then max_inline bytes), at most
 * UCT_ORC_MAX_INLINE_WR, halved while the device refuses a QP with it (a
 * test QP). Short operations that fit take no op.
 */
static size_t uct_orc_iface_probe_inline(uct_orc_iface_t *iface,
                                         const struct ibv_qp_cap *cap)
{
    size_t want = ucs_min(iface->config.max_inline + sizeof(uct_orc_hdr_t) +
                              sizeof(uint64_t),
                          UCT_ORC_MAX_INLINE_WR);
    orc_qp_init_attr_t init_attr;
    orc_qp_t *qp;

    for (; want > 0; want /= 2) {
        memset(&init_attr, 0, sizeof(init_attr));
        init_attr.send_cq             = iface->send_cq;
        init_attr.recv_cq             = iface->recv_cq;
        init_attr.srq                 = iface->srq;
        init_attr.cap                 = *cap;
        init_attr.cap.max_inline_data = want;
        init_attr.qp_type             = IBV_QPT_RC;
        qp = orc_qp_create(iface->md->pd, &init_attr);
        if (qp != NULL) {
            orc_qp_destroy(qp);
            return want;
        }
    }
    ucs_debug("orc: %s: no inline data: short operations use bounce buffers",
              iface->md->dev->name);
    return 0;
}

/* Step 5: the pairing agent (its event fd joins the wakeup set) */
static ucs_status_t
uct_orc_iface_init_agent(uct_orc_iface_t *iface, const char *dev_name,
                         const uct_orc_iface_config_t *config)
{
    uct_orc_agent_params_t params = {0};
    struct epoll_event event      = {0};
    ucs_status_t status;

    params.dev                    = iface->md->dev;
    params.port                   = iface->port;
    params.pd                     = iface->md->pd;
    params.send_cq                = iface->send_cq;
    params.passive_send_cq        = iface->send_cq;
    params.recv_cq                = iface->recv_cq;
    params.srq                    = iface->srq;
    params.qp_cap.max_send_wr     = config->tx_queue_len;
    params.qp_cap.max_recv_wr     = 0;
    params.qp_cap.max_send_sge    = iface->config.max_iov;
    params.qp_cap.max_recv_sge    = 1;
    params.qp_cap.max_inline_data = 0;
    iface->config.max_inline_wr =
        uct_orc_iface_probe_inline(iface, &params.qp_cap);
    params.qp_cap.max_inline_data = iface->config.max_inline_wr;
    params.mtu                    = iface->port_attr.active_mtu;
    params.max_rd_atomic          = iface->config.max_rd_atomic;
    params.qp_timeout             = config->qp_timeout;
    params.retry_count            = config->retry_count;
    params.rnr_retry              = config->rnr_retry;
    params.am_credits             = config->am_credits;
    params.rx_queue_len           = config->rx_queue_len;
    params.pair_timeout           = ucs_time_from_sec(config->pair_timeout);
    params.dev_name               = dev_name;

    status = uct_orc_agent_init(&iface->agent, &params);
    if (status != UCS_OK) {
        return status;
    }

    event.events  = EPOLLIN;
    event.data.fd = iface->agent.event_fd;
    if (epoll_ctl(iface->event_fd, EPOLL_CTL_ADD, iface->agent.event_fd,
                  &event) < 0) {
        ucs_error("orc: epoll_ctl(agent eventfd) failed: %m");
        uct_orc_agent_cleanup(&iface->agent);
        return UCS_ERR_IO_ERROR;
    }
    return UCS_OK;
}

/* Events the agent left when the iface closes: passive QPs it created for
 * us are ours to destroy */
static void uct_orc_iface_discard_agent_events(uct_orc_iface_t *iface)
{
    ucs_queue_head_t events;
    uct_orc_agent_event_t *ev;

    ucs_queue_head_init(&events);
    uct_orc_agent_poll(&iface->agent, &events);
    ucs_queue_for_each_extract(ev, &events, queue, 1) {
        if (ev->type == UCT_ORC_AGENT_EV_PASSIVE_ADDED) {
            orc_qp_destroy(ev->qp);
        }
        /* PASSIVE_CLOSED: the QP is in passive_list, destroyed with it, or
         * was in an ADDED event just destroyed */
        ucs_free(ev);
    }
}

static void uct_orc_iface_destroy_passives(uct_orc_iface_t *iface)
{
    uct_orc_passive_t *passive, *tmp;
    int ret;

    ucs_list_for_each_safe(passive, tmp, &iface->passive_list, list) {
        ret = orc_qp_destroy(passive->qp);
        if (ret != 0) {
            ucs_warn("orc: failed to destroy qp 0x%x: %s", passive->qp->qp_num,
                     strerror(ret));
        }
        ucs_free(passive);
    }
}

static uct_iface_ops_t uct_orc_iface_ops;
UCT_ORC_COMPAT_INTERNAL_OPS(uct_orc_iface_internal_ops,
                            uct_orc_iface_unreachable, uct_orc_ep_is_peer);

UCS_CLASS_INIT_FUNC(uct_orc_iface_t, uct_md_h tl_md, uct_worker_h worker,
                    const uct_iface_params_t *params,
                    const uct_iface_config_t *tl_config)
{
    uct_orc_iface_config_t *config =
        ucs_derived_of(tl_config, uct_orc_iface_config_t);
    const char *dev_name;
    ucs_status_t status;

    UCS_CLASS_CALL_SUPER_INIT(
        uct_base_iface_t,
        UCT_ORC_COMPAT_BASE_IFACE_INIT_ARGS(&uct_orc_iface_ops,
                                            &uct_orc_iface_internal_ops, tl_md,
                                            worker, params, tl_config));

    /* UCS classes are not zero-allocated */
    memset(UCS_PTR_BYTE_OFFSET(self, sizeof(self->super)), 0,
           sizeof(*self) - sizeof(self->super));
    self->md       = ucs_derived_of(tl_md, uct_orc_md_t);
    self->event_fd = -1;
    ucs_list_head_init(&self->ep_list);
    ucs_list_head_init(&self->passive_list);
    ucs_list_head_init(&self->grant_pending);
    ucs_list_head_init(&self->pending_eps);
    ucs_list_head_init(&self->failed_eps);
    kh_init_inplace(uct_orc_qp, &self->qp_hash);
    kh_init_inplace(uct_orc_conn, &self->conn_hash);

    status = uct_orc_iface_init_config(self, params, config);
    if (status != UCS_OK) {
        goto err;
    }
    dev_name = params->mode.device.dev_name;

    status = uct_orc_iface_init_events(self);
    if (status != UCS_OK) {
        goto err;
    }

    status = uct_orc_iface_init_tx(self, config);
    if (status != UCS_OK) {
        goto err_cleanup_events;
    }

    status = uct_orc_iface_init_rx(self, params);
    if (status != UCS_OK) {
        goto err_cleanup_tx;
    }

    status = uct_orc_iface_init_agent(self, dev_name, config);
    if (status != UCS_OK) {
        goto err_cleanup_rx;
    }

    /* Step 6: join the process's coordinator session */
    status = uct_orc_session_attach(&self->agent, config, &self->md->dev_config,
                                    &self->node_id, &self->domain);
    if (status != UCS_OK) {
        goto err_cleanup_agent;
    }

    ucs_debug("orc: opened %s: node %" PRIu64 " iface %u, %u receive buffers "
              "of %zu bytes",
              dev_name, self->node_id, self->agent.iface_id,
              config->rx_queue_len, config->seg_size);
    return UCS_OK;

err_cleanup_agent:
    uct_orc_agent_cleanup(&self->agent);
err_cleanup_rx:
    uct_orc_iface_cleanup_rx(self);
err_cleanup_tx:
    uct_orc_iface_cleanup_tx(self);
err_cleanup_events:
    uct_orc_iface_cleanup_events(self);
err:
    kh_destroy_inplace(uct_orc_qp, &self->qp_hash);
    kh_destroy_inplace(uct_orc_conn, &self->conn_hash);
    return status;
}

UCS_CLASS_CLEANUP_FUNC(uct_orc_iface_t)
{
    if (!ucs_list_is_empty(&self->ep_list)) {
        ucs_warn("orc: closing an interface with %zu endpoints still open",
                 ucs_list_length(&self->ep_list));
    }

    uct_base_iface_progress_disable(&self->super.super,
                                    UCT_PROGRESS_SEND | UCT_PROGRESS_RECV);

    /* After the detach no session thread touches the agent: it creates no
     * more QPs bound to our SRQ and CQs, and the peers we served were told
     * ("fin") */
    uct_orc_session_detach(&self->agent);
    uct_orc_iface_discard_agent_events(self);
    uct_orc_agent_cleanup(&self->agent);
    uct_orc_iface_destroy_passives(self);

    uct_orc_iface_cleanup_rx(self);
    uct_orc_iface_cleanup_tx(self);
    uct_orc_iface_cleanup_events(self);
    kh_destroy_inplace(uct_orc_qp, &self->qp_hash);
    kh_destroy_inplace(uct_orc_conn, &self->conn_hash);
}

UCS_CLASS_DEFINE(uct_orc_iface_t, uct_base_iface_t);
UCS_CLASS_DEFINE_NEW_FUNC(uct_orc_iface_t, uct_iface_t, uct_md_h, uct_worker_h,
                          const uct_iface_params_t *,
                          const uct_iface_config_t *);
static UCS_CLASS_DEFINE_DELETE_FUNC(uct_orc_iface_t, uct_iface_t);

static uct_iface_ops_t uct_orc_iface_ops = {
    .ep_put_short = uct_orc_ep_put_short,
    .ep_put_bcopy = uct_orc_ep_put_bcopy,
    .ep_put_zcopy = uct_orc_ep_put_zcopy,
    .ep_get_short =
        (uct_ep_get_short_func_t)ucs_empty_function_return_unsupported,
    .ep_get_bcopy      = uct_orc_ep_get_bcopy,
    .ep_get_zcopy      = uct_orc_ep_get_zcopy,
    .ep_am_short       = uct_orc_ep_am_short,
    .ep_am_short_iov   = uct_orc_ep_am_short_iov,
    .ep_am_bcopy       = uct_orc_ep_am_bcopy,
    .ep_am_zcopy       = uct_orc_ep_am_zcopy,
    .ep_atomic_cswap64 = uct_orc_ep_atomic_cswap64,
    .ep_atomic_cswap32 =
        (uct_ep_atomic_cswap32_func_t)ucs_empty_function_return_unsupported,
    .ep_atomic32_post =
        (uct_ep_atomic32_post_func_t)ucs_empty_function_return_unsupported,
    .ep_atomic64_post = uct_orc_ep_atomic64_post,
    .ep_atomic32_fetch =
        (uct_ep_atomic32_fetch_func_t)ucs_empty_function_return_unsupported,
    .ep_atomic64_fetch = uct_orc_ep_atomic64_fetch,
    .ep_tag_eager_short =
        (uct_ep_tag_eager_short_func_t)ucs_empty_function_return_unsupported,
    .ep_tag_eager_bcopy =
        (uct_ep_tag_eager_bcopy_func_t)ucs_empty_function_return_unsupported,
    .ep_tag_eager_zcopy =
        (uct_ep_tag_eager_zcopy_func_t)ucs_empty_function_return_unsupported,
    .ep_tag_rndv_zcopy =
        (uct_ep_tag_rndv_zcopy_func_t)ucs_empty_function_return_ptr_no_resource,
    .ep_tag_rndv_cancel =
        (uct_ep_tag_rndv_cancel_func_t)ucs_empty_function_return_unsupported,
    .ep_tag_rndv_request =
        (uct_ep_tag_rndv_request_func_t)ucs_empty_function_return_unsupported,
    .iface_tag_recv_zcopy =
        (uct_iface_tag_recv_zcopy_func_t)ucs_empty_function_return_unsupported,
    .iface_tag_recv_cancel =
        (uct_iface_tag_recv_cancel_func_t)ucs_empty_function_return_unsupported,
    .ep_pending_add   = uct_orc_ep_pending_add,
    .ep_pending_purge = uct_orc_ep_pending_purge,
    .ep_flush         = uct_orc_ep_flush,
    .ep_fence         = uct_orc_ep_fence,
    .ep_check         = uct_orc_ep_check,
    .ep_create        = UCS_CLASS_NEW_FUNC_NAME(uct_orc_ep_t),
    .ep_connect = (uct_ep_connect_func_t)ucs_empty_function_return_unsupported,
    .ep_disconnect =
        (uct_ep_disconnect_func_t)ucs_empty_function_return_unsupported,
    .cm_ep_conn_notify =
        (uct_cm_ep_conn_notify_func_t)ucs_empty_function_return_unsupported,
    .ep_destroy = UCS_CLASS_DELETE_FUNC_NAME(uct_orc_ep_t),
    .ep_get_address =
        (uct_ep_get_address_func_t)ucs_empty_function_return_unsupported,
    .ep_connect_to_ep =
        (uct_ep_connect_to_ep_func_t)ucs_empty_function_return_unsupported,
    .iface_accept =
        (uct_iface_accept_func_t)ucs_empty_function_return_unsupported,
    .iface_reject =
        (uct_iface_reject_func_t)ucs_empty_function_return_unsupported,
    .iface_flush              = uct_orc_iface_flush,
    .iface_fence              = uct_orc_iface_fence,
    .iface_progress_enable    = uct_base_iface_progress_enable,
    .iface_progress_disable   = uct_base_iface_progress_disable,
    .iface_progress           = uct_orc_iface_progress,
    .iface_event_fd_get       = uct_orc_iface_event_fd_get,
    .iface_event_arm          = uct_orc_iface_event_arm,
    .iface_close              = UCS_CLASS_DELETE_FUNC_NAME(uct_orc_iface_t),
    .iface_query              = uct_orc_iface_query,
    .iface_get_device_address = uct_orc_iface_get_device_address,
    .iface_get_address        = uct_orc_iface_get_address,
    .iface_is_reachable       = uct_orc_iface_is_reachable};
