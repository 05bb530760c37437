/*
 * orc UCT transport: everything that depends on the UCX version.
 *
 * orc is built outside UCX's tree against the internal headers of exactly the
 * UCX it runs in (see ARCHITECTURE.md): Debian 12's UCX 1.13.1, and UCX 1.22
 * (contrib/build-ucx.sh). The internal UCT API changed between the two; every
 * difference orc meets is confined to this header, so the transport's own
 * files are version-neutral and supporting another UCX release is a change
 * here only. Each item says which UCX change it follows.
 *
 * Two kinds of items:
 *  - values and initializers (ops table entries, flags, config tables);
 *  - adapters: where a callback's signature changed, the transport writes one
 *    version-neutral function and the macro here defines the static function
 *    with the signature this UCX's ops table wants, forwarding to it.
 *
 * Module discovery differs too, outside the code: UCX 1.22 scans the
 * directories in UCX_PLUGIN_PATH and its module directory for
 * libuct_<name>.so.0 (see src/uct/orc/Makefile.inc); 1.13 loads only its
 * built-in modules, so orc is preloaded there (contrib/orc-run).
 * Either way the component registers from the library constructor
 * (UCT_ORC_COMPAT_REGISTER).
 */
#ifndef UCT_ORC_COMPAT_H_
#define UCT_ORC_COMPAT_H_

#include <ucs/config/global_opts.h>
#include <ucs/datastruct/mpool.h>
#include <ucs/memory/rcache.h>
#include <ucs/sys/sys.h>
#include <ucs/time/time.h>
#include <ucs/type/class.h>
#include <uct/api/version.h>
#include <uct/base/uct_iface.h>
#include <uct/base/uct_md.h>

#if (UCT_API == UCT_VERSION(1, 13))
#define UCT_ORC_UCX_1_22 0
#elif (UCT_API == UCT_VERSION(1, 22))
#define UCT_ORC_UCX_1_22 1
#else
#error \
    "orc is built and tested against UCX 1.13 and 1.22 only: adapt src/uct/orc/orc_compat.h"
#endif


/* ------------------------------------------------------------ iface */

/*
 * Internal iface ops. UCX 1.13 has estimate_perf, vfs_refresh, ep_query and
 * ep_invalidate. Later releases added ep_connect_to_ep_v2 (1.14),
 * iface_is_reachable_v2 with a scope and a reason string (1.15; UCP asks
 * only it from 1.16 on, never the public iface_is_reachable op),
 * ep_is_connected (1.16; UCP asks it when it matches lanes to a peer's
 * address from 1.18 on), iface_query_v2 and ep_get_device_ep (1.20) and
 * ep_put_sgl_zcopy (1.22). orc offers no device endpoints, SGL puts or
 * ep-to-ep connections. Every slot must be set: UCX calls them without a
 * NULL check.
 *
 * The transport provides, version-neutral:
 *   _unreachable(iface, dev_addr, iface_addr, same_device): NULL if a peer
 *     with these addresses is reachable (iface_addr may be NULL: device only;
 *     same_device: it must also be on this host), else why not;
 *   _ep_is_peer(ep, dev_addr, iface_addr): whether ep is connected to the
 *     iface with these addresses.
 */
/* the slots both releases have, with UCX's defaults */
#define UCT_ORC_COMPAT_INTERNAL_OPS_COMMON                                   \
    .iface_estimate_perf = uct_base_iface_estimate_perf,                     \
    .iface_vfs_refresh   = (uct_iface_vfs_refresh_func_t)ucs_empty_function, \
    .ep_query = (uct_ep_query_func_t)ucs_empty_function_return_unsupported,  \
    .ep_invalidate =                                                         \
        (uct_ep_invalidate_func_t)ucs_empty_function_return_unsupported

#if UCT_ORC_UCX_1_22

static UCS_F_MAYBE_UNUSED int uct_orc_compat_is_reachable_v2(
    const char *(*unreachable)(uct_iface_h, const uct_device_addr_t *,
                               const uct_iface_addr_t *, int),
    uct_iface_h iface, const uct_iface_is_reachable_params_t *params)
{
    const uct_iface_addr_t *iface_addr;
    const char *why;
    int same_device;

    if (!uct_iface_is_reachable_params_valid(
            params, UCT_IFACE_IS_REACHABLE_FIELD_DEVICE_ADDR)) {
        return 0;
    }

    iface_addr  = (params->field_mask & UCT_IFACE_IS_REACHABLE_FIELD_IFACE_ADDR)
                      ? params->iface_addr
                      : NULL;
    same_device = (params->field_mask & UCT_IFACE_IS_REACHABLE_FIELD_SCOPE) &&
                  (params->scope == UCT_IFACE_REACHABILITY_SCOPE_DEVICE);
    why = unreachable(iface, params->device_addr, iface_addr, same_device);
    if (why != NULL) {
        uct_iface_fill_info_str_buf(params, "%s", why);
        return 0;
    }
    return 1;
}

static UCS_F_MAYBE_UNUSED int uct_orc_compat_ep_is_connected(
    int (*ep_is_peer)(uct_ep_h, const uct_device_addr_t *,
                      const uct_iface_addr_t *),
    uct_ep_h ep, const uct_ep_is_connected_params_t *params)
{
    /* connect-to-iface: both addresses name the peer; no ep address */
    UCT_EP_IS_CONNECTED_CHECK_DEV_IFACE_ADDRS(params);
    return ep_is_peer(ep, params->device_addr, params->iface_addr);
}

#define UCT_ORC_COMPAT_INTERNAL_OPS(_name, _unreachable, _ep_is_peer)       \
    static int _name##_is_reachable_v2(                                     \
        const uct_iface_h iface,                                            \
        const uct_iface_is_reachable_params_t *params)                      \
    {                                                                       \
        return uct_orc_compat_is_reachable_v2(_unreachable, iface, params); \
    }                                                                       \
    static int _name##_ep_is_connected(                                     \
        uct_ep_h ep, const uct_ep_is_connected_params_t *params)            \
    {                                                                       \
        return uct_orc_compat_ep_is_connected(_ep_is_peer, ep, params);     \
    }                                                                       \
    static uct_iface_internal_ops_t _name = {                               \
        UCT_ORC_COMPAT_INTERNAL_OPS_COMMON,                                 \
        .iface_query_v2      = uct_iface_base_query_v2,                     \
        .ep_connect_to_ep_v2 = (uct_ep_connect_to_ep_v2_func_t)             \
            ucs_empty_function_return_unsupported,                          \
        .iface_is_reachable_v2 = _name##_is_reachable_v2,                   \
        .ep_is_connected       = _name##_ep_is_connected,                   \
        .ep_get_device_ep      = (uct_ep_get_device_ep_func_t)              \
            ucs_empty_function_return_unsupported,                          \
        .ep_put_sgl_zcopy = (uct_ep_put_sgl_zcopy_func_t)                   \
            ucs_empty_function_return_unsupported}

#else

/* 1.13: UCP asks the public iface_is_reachable op and never whether an ep
 * is connected; the two functions serve 1.22 only. */
#define UCT_ORC_COMPAT_INTERNAL_OPS(_name, _unreachable, _ep_is_peer) \
    static uct_iface_internal_ops_t _name = {UCT_ORC_COMPAT_INTERNAL_OPS_COMMON}

#endif

/*
 * UCT_IFACE_FLAG_INTER_NODE (UCX 1.18): the iface reaches other hosts. UCP
 * 1.22 marks an ep intra-node when one of its lanes lacks it, and leaves
 * such ifaces out of network-only worker addresses. 1.13 has no such flag.
 */
#if UCT_ORC_UCX_1_22
#define UCT_ORC_COMPAT_IFACE_FLAG_INTER_NODE UCT_IFACE_FLAG_INTER_NODE
#else
#define UCT_ORC_COMPAT_IFACE_FLAG_INTER_NODE 0
#endif

/* Base iface constructor arguments (unchanged 1.13 -> 1.22: ops, internal
 * ops, md, worker, params, config, and stats arguments when UCX was built
 * with stats). */
#define UCT_ORC_COMPAT_BASE_IFACE_INIT_ARGS(_ops, _internal_ops, _md, _worker, \
                                            _params, _config)                  \
    (_ops), (_internal_ops), (_md), (_worker), (_params),                      \
        (_config)UCS_STATS_ARG(                                                \
            ((_params)->field_mask & UCT_IFACE_PARAM_FIELD_STATS_ROOT)         \
                ? (_params)->stats_root                                        \
                : NULL) UCS_STATS_ARG(UCT_ORC_TL_NAME)

/* ep_check: orc takes no completion. UCX 1.13's parameter check rejects
 * one; 1.22 dropped that from UCT_EP_KEEPALIVE_CHECK_PARAM, so it is
 * checked here (UCP passes none in either). */
#if UCT_ORC_UCX_1_22
#define UCT_ORC_COMPAT_EP_CHECK_PARAM(_flags, _comp) \
    UCT_EP_KEEPALIVE_CHECK_PARAM(_flags);            \
    UCT_CHECK_PARAM((_comp) == NULL, "Unsupported completion on ep_check")
#else
#define UCT_ORC_COMPAT_EP_CHECK_PARAM(_flags, _comp) \
    UCT_EP_KEEPALIVE_CHECK_PARAM(_flags, _comp)
#endif

/* Memory pools: UCX 1.14 replaced ucs_mpool_init()'s argument list with a
 * parameters struct (ucs_mpool_params_t, adding grow factor and chunk size
 * limits, left at their defaults here). */
static inline ucs_status_t
uct_orc_compat_mpool_init(ucs_mpool_t *mp, size_t priv_size, size_t elem_size,
                          size_t align_offset, size_t alignment,
                          unsigned elems_per_chunk, unsigned max_elems,
                          ucs_mpool_ops_t *ops, const char *name)
{
#if UCT_ORC_UCX_1_22
    ucs_mpool_params_t params;

    ucs_mpool_params_reset(&params);
    params.priv_size       = priv_size;
    params.elem_size       = elem_size;
    params.align_offset    = align_offset;
    params.alignment       = alignment;
    params.elems_per_chunk = elems_per_chunk;
    params.max_elems       = max_elems;
    params.ops             = ops;
    params.name            = name;
    return ucs_mpool_init(&params, mp);
#else
    return ucs_mpool_init(mp, priv_size, elem_size, align_offset, alignment,
                          elems_per_chunk, max_elems, ops, name);
#endif
}


/* --------------------------------------------------------------- md */

/*
 * md_ops.query: UCX 1.14 passes uct_md_attr_v2_t (flat fields, a field
 * mask UCX fills with everything, base defaults from
 * uct_md_base_md_query()); 1.13 passes uct_md_attr_t, capabilities under
 * .cap. The transport fills a uct_orc_compat_md_attr_t through
 * UCT_ORC_COMPAT_MD_CAP(attr, field) after uct_orc_compat_md_attr_init().
 */
#if UCT_ORC_UCX_1_22
typedef uct_md_attr_v2_t uct_orc_compat_md_attr_t;
#define UCT_ORC_COMPAT_MD_CAP(_attr, _field) ((_attr)->_field)
static inline void uct_orc_compat_md_attr_init(uct_orc_compat_md_attr_t *attr)
{
    uct_md_base_md_query(attr);
}
#else
typedef uct_md_attr_t uct_orc_compat_md_attr_t;
#define UCT_ORC_COMPAT_MD_CAP(_attr, _field) ((_attr)->cap._field)
static inline void uct_orc_compat_md_attr_init(uct_orc_compat_md_attr_t *attr)
{
    memset(&attr->cap, 0, sizeof(attr->cap));
}
#endif

/*
 * md_attr.cache_mem_types (UCX 1.14): memory types whose registrations
 * UCP's own registration cache may keep across ucp_mem_unmap(). orc's
 * handle stays valid until deregistered, like IB's. No-op on 1.13.
 */
#if UCT_ORC_UCX_1_22
#define UCT_ORC_COMPAT_MD_ATTR_SET_CACHEABLE(_attr, _mem_types) \
    (_attr)->cache_mem_types = (_mem_types)
#else
#define UCT_ORC_COMPAT_MD_ATTR_SET_CACHEABLE(_attr, _mem_types) \
    ((void)(_attr), (void)(_mem_types))
#endif

/* md_ops.mem_reg: UCX 1.14 moved the flags (64-bit) into a params struct
 * with a field mask (uct_md_mem_reg_params_t: also dmabuf and memory type,
 * which orc does not advertise). _impl(md, address, length, uint64_t flags,
 * memh_p). */
#if UCT_ORC_UCX_1_22
#define UCT_ORC_COMPAT_MEM_REG_FUNC(_name, _impl)                           \
    static ucs_status_t _name(uct_md_h md, void *address, size_t length,    \
                              const uct_md_mem_reg_params_t *params,        \
                              uct_mem_h *memh_p)                            \
    {                                                                       \
        return _impl(md, address, length,                                   \
                     UCT_MD_MEM_REG_FIELD_VALUE(params, flags, FIELD_FLAGS, \
                                                0),                         \
                     memh_p);                                               \
    }
#else
#define UCT_ORC_COMPAT_MEM_REG_FUNC(_name, _impl)                        \
    static ucs_status_t _name(uct_md_h md, void *address, size_t length, \
                              unsigned flags, uct_mem_h *memh_p)         \
    {                                                                    \
        return _impl(md, address, length, flags, memh_p);                \
    }
#endif

/* md_ops.mkey_pack: UCX 1.14 added the packed region (address, length).
 * _impl(md, memh, rkey_buffer): orc's key covers the whole registration. */
#if UCT_ORC_UCX_1_22
#define UCT_ORC_COMPAT_MKEY_PACK_FUNC(_name, _impl)                       \
    static ucs_status_t _name(uct_md_h md, uct_mem_h memh, void *address, \
                              size_t length,                              \
                              const uct_md_mkey_pack_params_t *params,    \
                              void *buffer)                               \
    {                                                                     \
        return _impl(md, memh, buffer);                                   \
    }
#else
#define UCT_ORC_COMPAT_MKEY_PACK_FUNC(_name, _impl)                    \
    static ucs_status_t _name(uct_md_h md, uct_mem_h memh,             \
                              const uct_md_mkey_pack_params_t *params, \
                              void *buffer)                            \
    {                                                                  \
        return _impl(md, memh, buffer);                                \
    }
#endif

/* md_ops slots that exist in one release only. 1.13: is_sockaddr_accessible
 * (removed in 1.16: sockaddr support lives in connection managers). 1.22:
 * mem_attach (1.14, importing an exported memory key: orc exports none) and
 * mem_elem_pack (1.21, device-side memory elements: orc has no device
 * endpoints). */
#if UCT_ORC_UCX_1_22
#define UCT_ORC_COMPAT_MD_OPS_VERSIONED                                  \
    .mem_attach =                                                        \
        (uct_md_mem_attach_func_t)ucs_empty_function_return_unsupported, \
    .mem_elem_pack =                                                     \
        (uct_md_mem_elem_pack_func_t)ucs_empty_function_return_unsupported
#else
#define UCT_ORC_COMPAT_MD_OPS_VERSIONED                              \
    .is_sockaddr_accessible = (uct_md_is_sockaddr_accessible_func_t) \
        ucs_empty_function_return_zero_int
#endif

/*
 * Registration cache. UCX 1.16 moved the rcache configuration from UCT
 * (uct_md_rcache_config_t, uct_md_config_rcache_table) to UCS
 * (ucs_rcache_config_t, ucs_config_rcache_table); 1.17 dropped
 * RCACHE_ADDR_ALIGN and made the region alignment an argument of
 * ucs_rcache_get() instead of a cache parameter; 1.18 added the merge
 * callback, called without a NULL check; 1.21 leaves the LRU list unlocked
 * unless UCS_RCACHE_FLAG_NEED_LRU_LOCK is set (1.13 always locks it; orc's
 * md is used from several threads).
 */
#if UCT_ORC_UCX_1_22
typedef ucs_rcache_config_t uct_orc_compat_rcache_config_t;
#define UCT_ORC_COMPAT_RCACHE_CONFIG_TABLE ucs_config_rcache_table
#define UCT_ORC_COMPAT_RCACHE_OPS_MERGE                \
    .merge = (void (*)(void *, ucs_rcache_t *, void *, \
                       ucs_rcache_region_t *))ucs_empty_function,
#else
typedef uct_md_rcache_config_t uct_orc_compat_rcache_config_t;
#define UCT_ORC_COMPAT_RCACHE_CONFIG_TABLE uct_md_config_rcache_table
#define UCT_ORC_COMPAT_RCACHE_OPS_MERGE
#endif

/* Region alignment orc asks for (1.13: UCX_<TL>_RCACHE_ADDR_ALIGN, default
 * the cache line; 1.22: this, per lookup). orc MRs need none; regions are
 * aligned so neighbouring buffers share one. */
#define UCT_ORC_RCACHE_ALIGNMENT UCS_SYS_CACHE_LINE_SIZE

static inline void
uct_orc_compat_rcache_params(ucs_rcache_params_t *params,
                             const uct_orc_compat_rcache_config_t *config)
{
#if UCT_ORC_UCX_1_22
    ucs_rcache_set_params(params, config);
    params->flags |= UCS_RCACHE_FLAG_NEED_LRU_LOCK;
#else
    uct_md_set_rcache_params(params, config);
    params->max_alignment = ucs_get_page_size();
#endif
}

static inline ucs_status_t
uct_orc_compat_rcache_get(ucs_rcache_t *rcache, void *address, size_t length,
                          int prot, void *arg, ucs_rcache_region_t **region_p)
{
#if UCT_ORC_UCX_1_22
    return ucs_rcache_get(rcache, address, length, UCT_ORC_RCACHE_ALIGNMENT,
                          prot, arg, region_p);
#else
    return ucs_rcache_get(rcache, address, length, prot, arg, region_p);
#endif
}

/* Seconds a cache lookup costs, for md_attr.reg_cost ("auto": the x86
 * estimate of 1.13's uct_md_rcache_overhead(), which 1.18 removed). */
static inline double
uct_orc_compat_rcache_overhead(const uct_orc_compat_rcache_config_t *config)
{
#if UCT_ORC_UCX_1_22
    return ucs_time_units_to_sec(config->overhead, 180e-9);
#else
    return uct_md_rcache_overhead(config);
#endif
}


/* -------------------------------------------------------- component */

/* component.rkey_unpack: UCX 1.19 added unpack parameters (the system
 * device of a GPU key). _impl(component, rkey_buffer, rkey_p, handle_p). */
#if UCT_ORC_UCX_1_22
#define UCT_ORC_COMPAT_RKEY_UNPACK_FUNC(_name, _impl)                 \
    static ucs_status_t _name(uct_component_t *component,             \
                              const void *rkey_buffer,                \
                              const uct_rkey_unpack_params_t *params, \
                              uct_rkey_t *rkey_p, void **handle_p)    \
    {                                                                 \
        return _impl(component, rkey_buffer, rkey_p, handle_p);       \
    }
#else
#define UCT_ORC_COMPAT_RKEY_UNPACK_FUNC(_name, _impl)                      \
    static ucs_status_t _name(uct_component_t *component,                  \
                              const void *rkey_buffer, uct_rkey_t *rkey_p, \
                              void **handle_p)                             \
    {                                                                      \
        return _impl(component, rkey_buffer, rkey_p, handle_p);            \
    }
#endif

/* Component slots that exist in one release only. Both have md_vfs_init
 * (no-op is fine). 1.22 adds rkey_compare (1.16, ucp_rkey_compare()): an
 * orc rkey is the 32-bit key itself, which UCX's base comparison orders. */
#if UCT_ORC_UCX_1_22
#define UCT_ORC_COMPAT_COMPONENT_VERSIONED                                \
    .md_vfs_init  = (uct_component_md_vfs_init_func_t)ucs_empty_function, \
    .rkey_compare = uct_base_rkey_compare
#else
#define UCT_ORC_COMPAT_COMPONENT_VERSIONED \
    .md_vfs_init = (uct_component_md_vfs_init_func_t)ucs_empty_function
#endif

/* Register the component and transport when the library is loaded
 * (constructor scope): a preloaded libuct_orc.so (1.13) and one UCX's module
 * loader dlopen()s from UCX_PLUGIN_PATH (1.22) are both in
 * uct_query_components() before it returns. */
#define UCT_ORC_COMPAT_REGISTER(_component, _name) \
    UCT_SINGLE_TL_INIT(_component, _name, ctor, , )

#endif /* UCT_ORC_COMPAT_H_ */
