/*
 * orc UCT transport: everything that depends on the UCX version.
 *
 * orc is built outside UCX's tree against the internal headers of exactly the
 * installed UCX (see ARCHITECTURE.md). Everything that differs between UCX
 * releases is confined to this header, so supporting another UCX version is
 * a change here only.
 *
 * Supported: UCX 1.13.x (Debian 12). Later releases changed, among others:
 *  - uct_base_iface_t init arguments and the internal ops table (1.14+ adds
 *    ep_connect_to_ep_v2, iface_is_reachable_v2, ep_is_connected);
 *  - uct_md_ops_t (mem_attach, mkey_pack flags, the md_attr v2 query);
 *  - module discovery: UCX >= 1.22 scans UCX_PLUGIN_PATH for
 *    libuct_<name>.so, 1.13 needs the library preloaded (contrib/orc-run).
 */
#ifndef UCT_ORC_COMPAT_H_
#define UCT_ORC_COMPAT_H_

#include <ucs/config/global_opts.h>
#include <ucs/type/class.h>
#include <uct/api/version.h>
#include <uct/base/uct_iface.h>
#include <uct/base/uct_md.h>

#if (UCT_VERNO_MAJOR != 1) || (UCT_VERNO_MINOR != 13)
#error "orc supports UCX 1.13 only: adapt src/uct/orc/orc_compat.h"
#endif

/* Internal iface ops (1.13: estimate_perf, vfs_refresh, ep_query,
 * ep_invalidate) with UCX's defaults for what orc does not override. */
#define UCT_ORC_COMPAT_INTERNAL_OPS_INIT                                    \
    {                                                                       \
        .iface_estimate_perf = uct_base_iface_estimate_perf,                \
        .iface_vfs_refresh   = (uct_iface_vfs_refresh_func_t)               \
                                   ucs_empty_function,                      \
        .ep_query            = (uct_ep_query_func_t)                        \
                                   ucs_empty_function_return_unsupported,   \
        .ep_invalidate       = (uct_ep_invalidate_func_t)                   \
                                   ucs_empty_function_return_unsupported    \
    }

/* Base iface constructor arguments (1.13: ops, internal ops, md, worker,
 * params, config, and stats arguments when UCX was built with stats). */
#define UCT_ORC_COMPAT_BASE_IFACE_INIT_ARGS(_ops, _internal_ops, _md,       \
                                            _worker, _params, _config)      \
    (_ops), (_internal_ops), (_md), (_worker), (_params),                   \
    (_config) UCS_STATS_ARG(((_params)->field_mask &                        \
                             UCT_IFACE_PARAM_FIELD_STATS_ROOT) ?            \
                            (_params)->stats_root : NULL)                   \
    UCS_STATS_ARG(UCT_ORC_TL_NAME)

/* md_open signature and the md_ops' mem_dereg (params struct since 1.13). */
#define UCT_ORC_COMPAT_MD_DEREG_MEMH(_params) ((_params)->memh)

/* The component's vfs hook (1.13 has md_vfs_init, no-op is fine) */
#define UCT_ORC_COMPAT_MD_VFS_INIT \
    .md_vfs_init = (uct_component_md_vfs_init_func_t)ucs_empty_function

/* Register the component and transport when the library is loaded: UCX
 * 1.13 does not know this module, so constructor scope is what makes a
 * preloaded libuct_orc.so visible to uct_query_components(). */
#define UCT_ORC_COMPAT_REGISTER(_component, _name) \
    UCT_SINGLE_TL_INIT(_component, _name, ctor,,)

#endif /* UCT_ORC_COMPAT_H_ */
