/*
 * orc memory domain: one per device. Registration goes through the device
 * layer, cached by UCX's registration cache (ucs rcache).
 */
#include "orc.h"

#include <ucm/api/ucm.h>
#include <ucs/debug/log.h>
#include <ucs/debug/memtrack_int.h>
#include <ucs/sys/math.h>
#include <ucs/sys/string.h>
#include <ucs/sys/sys.h>

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#define UCT_ORC_MR_ACCESS                               \
    (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | \
     IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC)

/* Indexed by orc_dev_backend_t */
const char *uct_orc_backend_names[] = {[ORC_DEV_BACKEND_AUTO]  = "auto",
                                       [ORC_DEV_BACKEND_VERBS] = "verbs",
                                       [ORC_DEV_BACKEND_SOFT]  = "soft",
                                       NULL};

ucs_config_field_t uct_orc_md_config_table[] = {
    {"", "", NULL, ucs_offsetof(uct_orc_md_config_t, super),
     UCS_CONFIG_TYPE_TABLE(uct_md_config_table)},

    {"BACKEND", "auto",
     "Device backend of the orc transport:\n"
     " auto  - verbs devices if the machine has any, softnic otherwise\n"
     " verbs - RDMA devices through libibverbs (HCAs, RoCE, SoftRoCE)\n"
     " soft  - softnic, the userspace RDMA NIC (no kernel support needed)",
     ucs_offsetof(uct_orc_md_config_t, backend),
     UCS_CONFIG_TYPE_ENUM(uct_orc_backend_names)},

    {"SOFT_IFACES", "",
     "Comma-separated network interfaces to create softnic devices on\n"
     "(device soft_<iface>), e.g. \"lo,eth0\". Empty: every interface that\n"
     "is up and has an IPv4 address.",
     ucs_offsetof(uct_orc_md_config_t, soft_ifaces), UCS_CONFIG_TYPE_STRING},

    {"SOFT_NO_CMA", "n",
     "softnic: never use the same-host paths (single-copy CMA, shared-memory\n"
     "rings): data between processes of one host travels on TCP, as between\n"
     "hosts.",
     ucs_offsetof(uct_orc_md_config_t, soft_no_cma), UCS_CONFIG_TYPE_BOOL},

    {"SOFT_NO_RING", "n",
     "softnic: same-host SENDs and atomics on TCP instead of shared-memory\n"
     "rings (READ and WRITE still use single-copy CMA).",
     ucs_offsetof(uct_orc_md_config_t, soft_no_ring), UCS_CONFIG_TYPE_BOOL},

    {"RCACHE", "try",
     "Registration cache: yes - required, no - register on every call,\n"
     "try - use it when UCX's memory hooks are available.",
     ucs_offsetof(uct_orc_md_config_t, rcache_enable), UCS_CONFIG_TYPE_TERNARY},

    {"", "", NULL, ucs_offsetof(uct_orc_md_config_t, rcache),
     UCS_CONFIG_TYPE_TABLE(UCT_ORC_COMPAT_RCACHE_CONFIG_TABLE)},

    {NULL},
};

/* softnic's messages go to UCX's log: errors and warnings as such, its
 * connection and QP error events at diag level, connection setup at debug
 * level (UCX_LOG_LEVEL chooses) */
static const ucs_log_level_t uct_orc_soft_log_levels[] = {
    [SOFTNIC_LOG_ERROR] = UCS_LOG_LEVEL_ERROR,
    [SOFTNIC_LOG_WARN]  = UCS_LOG_LEVEL_WARN,
    [SOFTNIC_LOG_INFO]  = UCS_LOG_LEVEL_DIAG,
    [SOFTNIC_LOG_DEBUG] = UCS_LOG_LEVEL_DEBUG,
};

/* softnic's log callback: any thread, softnic locks may be held */
static void uct_orc_soft_log(void *arg, softnic_log_level_t level,
                             const char *dev_name, const char *message)
{
    ucs_log(uct_orc_soft_log_levels[level], "softnic %s: %s", dev_name,
            message);
}

/* The most verbose softnic level that UCX's log level lets through */
static softnic_log_level_t uct_orc_soft_log_level(void)
{
    int level;

    for (level = SOFTNIC_LOG_DEBUG; level >= SOFTNIC_LOG_ERROR; --level) {
        if (ucs_log_is_enabled(uct_orc_soft_log_levels[level])) {
            return (softnic_log_level_t)level;
        }
    }
    return SOFTNIC_LOG_NONE;
}

void uct_orc_md_dev_config(const uct_orc_md_config_t *config,
                           orc_dev_config_t *dev_config)
{
    memset(dev_config, 0, sizeof(*dev_config));
    dev_config->backend        = (orc_dev_backend_t)config->backend;
    dev_config->soft.ifaces    = config->soft_ifaces;
    dev_config->soft.no_cma    = config->soft_no_cma;
    dev_config->soft.no_ring   = config->soft_no_ring;
    dev_config->soft.log_level = uct_orc_soft_log_level();
    dev_config->soft.log_fn    = uct_orc_soft_log;
}

orc_mr_t *uct_orc_md_reg_direct(uct_orc_md_t *md, void *addr, size_t length)
{
    return orc_mr_reg(md->pd, addr, length, UCT_ORC_MR_ACCESS);
}

static ucs_status_t uct_orc_md_query(uct_md_h tl_md,
                                     uct_orc_compat_md_attr_t *md_attr)
{
    uct_orc_md_t *md = ucs_derived_of(tl_md, uct_orc_md_t);

    uct_orc_compat_md_attr_init(md_attr);
    UCT_ORC_COMPAT_MD_CAP(md_attr, flags) =
        UCT_MD_FLAG_REG | UCT_MD_FLAG_NEED_MEMH | UCT_MD_FLAG_NEED_RKEY;
    UCT_ORC_COMPAT_MD_CAP(md_attr, max_reg) =
        (md->dev_attr.max_mr_size != 0) ? md->dev_attr.max_mr_size : SIZE_MAX;
    UCT_ORC_COMPAT_MD_CAP(md_attr, reg_mem_types) =
        UCS_BIT(UCS_MEMORY_TYPE_HOST);
    UCT_ORC_COMPAT_MD_CAP(md_attr, access_mem_types) =
        UCS_BIT(UCS_MEMORY_TYPE_HOST);
    UCT_ORC_COMPAT_MD_ATTR_SET_CACHEABLE(md_attr,
                                         UCS_BIT(UCS_MEMORY_TYPE_HOST));
    md_attr->rkey_packed_size = sizeof(uct_orc_rkey_t);
    /* With the cache, a hit costs the lookup; UCP plans with the miss cost
     * scaled as UCX's own transports do (overhead + per-byte growth). */
    if (md->dev->backend == ORC_DEV_BACKEND_SOFT) {
        /* softnic: MR table insert, no page pinning */
        md_attr->reg_cost = ucs_linear_func_make(2e-6, 0);
    } else {
        /* verbs: page pinning dominates (~0.007 ns/byte on x86 hosts) */
        md_attr->reg_cost = ucs_linear_func_make(16e-6, 0.007e-9);
    }
    if (md->rcache != NULL) {
        md_attr->reg_cost = ucs_linear_func_make(md->reg_cost_overhead, 0);
    }
    ucs_snprintf_zero(md_attr->component_name, sizeof(md_attr->component_name),
                      "%s", uct_orc_component.name);
    if (md->loc.found) {
        ucs_sys_cpuset_copy(&md_attr->local_cpus, &md->loc.cpus);
    } else {
        memset(&md_attr->local_cpus, 0xff, sizeof(md_attr->local_cpus));
    }
    return UCS_OK;
}

static ucs_status_t uct_orc_md_reg_region(uct_orc_md_t *md, void *addr,
                                          size_t length, int silent,
                                          orc_mr_t **mr_p)
{
    orc_mr_t *mr;

    mr = uct_orc_md_reg_direct(md, addr, length);
    if (mr == NULL) {
        ucs_log(silent ? UCS_LOG_LEVEL_DEBUG : UCS_LOG_LEVEL_ERROR,
                "orc: %s: failed to register %p..%p: %m", md->dev->name, addr,
                UCS_PTR_BYTE_OFFSET(addr, length));
        return (errno == ENOMEM) ? UCS_ERR_NO_MEMORY : UCS_ERR_INVALID_ADDR;
    }

    *mr_p = mr;
    return UCS_OK;
}

static ucs_status_t uct_orc_rcache_mem_reg_cb(void *context,
                                              ucs_rcache_t *rcache, void *arg,
                                              ucs_rcache_region_t *rregion,
                                              uint16_t flags)
{
    uct_orc_memh_t *memh = ucs_derived_of(rregion, uct_orc_memh_t);
    uct_orc_md_t *md     = context;

    return uct_orc_md_reg_region(md, (void *)rregion->super.start,
                                 rregion->super.end - rregion->super.start,
                                 flags & UCS_RCACHE_MEM_REG_HIDE_ERRORS,
                                 &memh->mr);
}

static void uct_orc_rcache_mem_dereg_cb(void *context, ucs_rcache_t *rcache,
                                        ucs_rcache_region_t *rregion)
{
    uct_orc_memh_t *memh = ucs_derived_of(rregion, uct_orc_memh_t);
    int ret;

    ret = orc_mr_dereg(memh->mr);
    if (ret != 0) {
        ucs_warn("orc: failed to deregister lkey 0x%x: %s", memh->mr->lkey,
                 strerror(ret));
    }
}

static void uct_orc_rcache_dump_region_cb(void *context, ucs_rcache_t *rcache,
                                          ucs_rcache_region_t *rregion,
                                          char *buf, size_t max)
{
    uct_orc_memh_t *memh = ucs_derived_of(rregion, uct_orc_memh_t);

    snprintf(buf, max, "lkey 0x%x rkey 0x%x", memh->mr->lkey, memh->mr->rkey);
}

static ucs_rcache_ops_t uct_orc_rcache_ops = {
    .mem_reg   = uct_orc_rcache_mem_reg_cb,
    .mem_dereg = uct_orc_rcache_mem_dereg_cb,
    UCT_ORC_COMPAT_RCACHE_OPS_MERGE.dump_region =
        uct_orc_rcache_dump_region_cb};

static ucs_status_t uct_orc_md_mem_reg_flags(uct_md_h tl_md, void *address,
                                             size_t length, uint64_t flags,
                                             uct_mem_h *memh_p)
{
    uct_orc_md_t *md = ucs_derived_of(tl_md, uct_orc_md_t);
    int silent       = flags & UCT_MD_MEM_FLAG_HIDE_ERRORS;
    ucs_rcache_region_t *rregion;
    uct_orc_memh_t *memh;
    ucs_status_t status;

    if (length == 0) {
        ucs_log(silent ? UCS_LOG_LEVEL_DEBUG : UCS_LOG_LEVEL_ERROR,
                "orc: %s: cannot register an empty region", md->dev->name);
        return UCS_ERR_INVALID_PARAM;
    }

    if (md->rcache != NULL) {
        status =
            uct_orc_compat_rcache_get(md->rcache, address, length,
                                      PROT_READ | PROT_WRITE, &flags, &rregion);
        if (status != UCS_OK) {
            ucs_log(silent ? UCS_LOG_LEVEL_DEBUG : UCS_LOG_LEVEL_ERROR,
                    "orc: %s: failed to register %p length %zu: %s",
                    md->dev->name, address, length, ucs_status_string(status));
            return status;
        }
        *memh_p = ucs_derived_of(rregion, uct_orc_memh_t);
        return UCS_OK;
    }

    memh = ucs_calloc(1, sizeof(*memh), "orc memh");
    if (memh == NULL) {
        return UCS_ERR_NO_MEMORY;
    }

    status = uct_orc_md_reg_region(md, address, length, silent, &memh->mr);
    if (status != UCS_OK) {
        ucs_free(memh);
        return status;
    }

    *memh_p = memh;
    return UCS_OK;
}

UCT_ORC_COMPAT_MEM_REG_FUNC(uct_orc_md_mem_reg, uct_orc_md_mem_reg_flags)

static void uct_orc_md_invalidate_cb(void *arg)
{
    uct_invoke_completion((uct_completion_t *)arg, UCS_OK);
}

static ucs_status_t
uct_orc_md_mem_dereg(uct_md_h tl_md, const uct_md_mem_dereg_params_t *params)
{
    uct_orc_md_t *md = ucs_derived_of(tl_md, uct_orc_md_t);
    uct_orc_memh_t *memh;
    unsigned flags;
    int ret;

    if (!(params->field_mask & UCT_MD_MEM_DEREG_FIELD_MEMH) ||
        (params->memh == UCT_MEM_HANDLE_NULL)) {
        return UCS_ERR_INVALID_PARAM;
    }

    memh = params->memh;
    flags =
        (params->field_mask & UCT_MD_MEM_DEREG_FIELD_FLAGS) ? params->flags : 0;
    if ((flags & UCT_MD_MEM_DEREG_FLAG_INVALIDATE) &&
        (!(params->field_mask & UCT_MD_MEM_DEREG_FIELD_COMPLETION) ||
         (params->comp == NULL))) {
        return UCS_ERR_INVALID_PARAM;
    }

    if (md->rcache != NULL) {
        if (flags & UCT_MD_MEM_DEREG_FLAG_INVALIDATE) {
            ucs_rcache_region_invalidate(md->rcache, &memh->super,
                                         uct_orc_md_invalidate_cb,
                                         params->comp);
        }
        ucs_rcache_region_put(md->rcache, &memh->super);
        return UCS_OK;
    }

    ret = orc_mr_dereg(memh->mr);
    if (ret != 0) {
        ucs_error("orc: failed to deregister lkey 0x%x: %s", memh->mr->lkey,
                  strerror(ret));
        return UCS_ERR_IO_ERROR;
    }
    ucs_free(memh);
    if (flags & UCT_MD_MEM_DEREG_FLAG_INVALIDATE) {
        uct_invoke_completion(params->comp, UCS_OK);
    }
    return UCS_OK;
}

static ucs_status_t uct_orc_md_mkey_pack_memh(uct_md_h tl_md, uct_mem_h tl_memh,
                                              void *rkey_buffer)
{
    uct_orc_memh_t *memh   = tl_memh;
    uct_orc_rkey_t *packed = rkey_buffer;

    packed->rkey = memh->mr->rkey;
    return UCS_OK;
}

UCT_ORC_COMPAT_MKEY_PACK_FUNC(uct_orc_md_mkey_pack, uct_orc_md_mkey_pack_memh)

static void uct_orc_md_close(uct_md_h tl_md)
{
    uct_orc_md_t *md = ucs_derived_of(tl_md, uct_orc_md_t);
    int ret;

    if (md->rcache != NULL) {
        ucs_rcache_destroy(md->rcache);
    }
    ret = orc_pd_dealloc(md->pd);
    if (ret != 0) {
        ucs_warn("orc: %s: failed to free the protection domain: %s",
                 md->dev->name, strerror(ret));
    }
    ret = orc_dev_close(md->dev);
    if (ret != 0) {
        ucs_warn("orc: failed to close device: %s", strerror(ret));
    }
    ucs_free(md->soft_ifaces);
    ucs_free(md);
}

static uct_md_ops_t uct_orc_md_ops = {
    .close     = uct_orc_md_close,
    .query     = uct_orc_md_query,
    .mem_alloc = (uct_md_mem_alloc_func_t)ucs_empty_function_return_unsupported,
    .mem_free  = (uct_md_mem_free_func_t)ucs_empty_function_return_unsupported,
    .mem_advise =
        (uct_md_mem_advise_func_t)ucs_empty_function_return_unsupported,
    .mem_reg   = uct_orc_md_mem_reg,
    .mem_dereg = uct_orc_md_mem_dereg,
    .mem_query = (uct_md_mem_query_func_t)ucs_empty_function_return_unsupported,
    .mkey_pack = uct_orc_md_mkey_pack,
    .detect_memory_type =
        (uct_md_detect_memory_type_func_t)ucs_empty_function_return_unsupported,
    UCT_ORC_COMPAT_MD_OPS_VERSIONED};

static ucs_status_t uct_orc_md_rcache_init(uct_orc_md_t *md,
                                           const uct_orc_md_config_t *config)
{
    ucs_rcache_params_t params;
    ucs_status_t status;

    if (config->rcache_enable == UCS_NO) {
        return UCS_OK;
    }

    uct_orc_compat_rcache_params(&params, &config->rcache);
    params.region_struct_size = sizeof(uct_orc_memh_t);
    params.ucm_events         = UCM_EVENT_VM_UNMAPPED;
    params.context            = md;
    params.ops                = &uct_orc_rcache_ops;

    status = ucs_rcache_create(&params, md->dev->name, NULL, &md->rcache);
    if (status != UCS_OK) {
        md->rcache = NULL;
        if (config->rcache_enable == UCS_YES) {
            ucs_error("orc: %s: failed to create the registration cache "
                      "(UCX_ORC_RCACHE=yes): %s",
                      md->dev->name, ucs_status_string(status));
            return status;
        }
        ucs_debug("orc: %s: no registration cache: %s", md->dev->name,
                  ucs_status_string(status));
        return UCS_OK;
    }

    md->reg_cost_overhead = uct_orc_compat_rcache_overhead(&config->rcache);
    return UCS_OK;
}

ucs_status_t uct_orc_md_open(uct_component_t *component, const char *md_name,
                             const uct_md_config_t *uct_md_config,
                             uct_md_h *md_p)
{
    const uct_orc_md_config_t *config =
        ucs_derived_of(uct_md_config, uct_orc_md_config_t);
    uct_orc_md_t *md;
    ucs_status_t status;
    int ret;

    md = ucs_calloc(1, sizeof(*md), "orc md");
    if (md == NULL) {
        status = UCS_ERR_NO_MEMORY;
        goto err;
    }

    md->super.ops       = &uct_orc_md_ops;
    md->super.component = &uct_orc_component;
    md->soft_ifaces     = ucs_strdup(config->soft_ifaces, "orc soft ifaces");
    if (md->soft_ifaces == NULL) {
        status = UCS_ERR_NO_MEMORY;
        goto err_free_md;
    }
    uct_orc_md_dev_config(config, &md->dev_config);
    md->dev_config.soft.ifaces = md->soft_ifaces; /* outlives the config */

    md->dev = orc_dev_open(&md->dev_config, md_name);
    if (md->dev == NULL) {
        ucs_error("orc: failed to open device '%s' (backend %s): %m", md_name,
                  orc_dev_backend_name(md->dev_config.backend));
        status = UCS_ERR_NO_DEVICE;
        goto err_free_ifaces;
    }

    ret = orc_dev_query(md->dev, &md->dev_attr);
    if (ret != 0) {
        ucs_error("orc: failed to query device %s: %s", md_name, strerror(ret));
        status = UCS_ERR_IO_ERROR;
        goto err_close_dev;
    }

    uct_orc_md_locate(md);

    md->pd = orc_pd_alloc(md->dev);
    if (md->pd == NULL) {
        ucs_error("orc: %s: failed to allocate a protection domain: %m",
                  md_name);
        status = UCS_ERR_IO_ERROR;
        goto err_close_dev;
    }

    status = uct_orc_md_rcache_init(md, config);
    if (status != UCS_OK) {
        goto err_dealloc_pd;
    }

    *md_p = &md->super;
    return UCS_OK;

err_dealloc_pd:
    orc_pd_dealloc(md->pd);
err_close_dev:
    orc_dev_close(md->dev);
err_free_ifaces:
    ucs_free(md->soft_ifaces);
err_free_md:
    ucs_free(md);
err:
    return status;
}
