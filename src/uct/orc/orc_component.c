/*
 * orc UCT component: one memory domain per device of the selected backend,
 * transport "orc" on each port. Registered from the library constructor.
 */
#include "orc.h"

#include <ucs/debug/log.h>
#include <ucs/sys/string.h>

static ucs_status_t
uct_orc_query_md_resources(uct_component_t *component,
                           uct_md_resource_desc_t **resources_p,
                           unsigned *num_resources_p)
{
    uct_md_config_t *md_config;
    orc_dev_config_t dev_config;
    uct_md_resource_desc_t *resources;
    orc_dev_info_t *list;
    ucs_status_t status;
    int i, count, ret;

    /* No config is passed to a component's query: read the md's, so
     * UCX_ORC_BACKEND/SOFT_IFACES apply. */
    status = uct_md_config_read(component, NULL, NULL, &md_config);
    if (status != UCS_OK) {
        return status;
    }

    uct_orc_md_dev_config(ucs_derived_of(md_config, uct_orc_md_config_t),
                          &dev_config);

    ret = orc_dev_list(&dev_config, &list, &count);
    if (ret != 0) {
        ucs_error("orc: failed to list %s devices: %s",
                  orc_dev_backend_name(dev_config.backend), strerror(ret));
        status = UCS_ERR_NO_DEVICE;
        goto out_release_config;
    }

    if (count == 0) {
        ucs_debug("orc: no %s devices",
                  orc_dev_backend_name(dev_config.backend));
        status = uct_md_query_empty_md_resource(resources_p, num_resources_p);
        goto out_free_list;
    }
    uct_orc_sort_devices(list, count);

    resources = ucs_calloc(count, sizeof(*resources), "orc md resources");
    if (resources == NULL) {
        status = UCS_ERR_NO_MEMORY;
        goto out_free_list;
    }

    for (i = 0; i < count; ++i) {
        ucs_snprintf_zero(resources[i].md_name, sizeof(resources[i].md_name),
                          "%s", list[i].name);
    }

    *resources_p     = resources;
    *num_resources_p = count;
    status           = UCS_OK;

out_free_list:
    orc_dev_list_free(list);
out_release_config:
    uct_config_release(md_config);
    return status;
}

extern ucs_status_t uct_orc_md_open(uct_component_t *component,
                                    const char *md_name,
                                    const uct_md_config_t *config,
                                    uct_md_h *md_p);

static ucs_status_t uct_orc_rkey_unpack_key(uct_component_t *component,
                                            const void *rkey_buffer,
                                            uct_rkey_t *rkey_p, void **handle_p)
{
    const uct_orc_rkey_t *packed = rkey_buffer;

    *rkey_p   = packed->rkey;
    *handle_p = NULL;
    return UCS_OK;
}

UCT_ORC_COMPAT_RKEY_UNPACK_FUNC(uct_orc_rkey_unpack, uct_orc_rkey_unpack_key)

uct_component_t uct_orc_component = {
    .query_md_resources = uct_orc_query_md_resources,
    .md_open            = uct_orc_md_open,
    .cm_open =
        (uct_component_cm_open_func_t)ucs_empty_function_return_unsupported,
    .rkey_unpack = uct_orc_rkey_unpack,
    .rkey_ptr =
        (uct_component_rkey_ptr_func_t)ucs_empty_function_return_unsupported,
    .rkey_release =
        (uct_component_rkey_release_func_t)ucs_empty_function_return_success,
    .name = UCT_ORC_TL_NAME,
    .md_config =
        {
            .name   = "orc memory domain",
            .prefix = UCT_ORC_CONFIG_PREFIX,
            .table  = uct_orc_md_config_table,
            .size   = sizeof(uct_orc_md_config_t),
        },
    .cm_config = UCS_CONFIG_EMPTY_GLOBAL_LIST_ENTRY,
    .tl_list   = UCT_COMPONENT_TL_LIST_INITIALIZER(&uct_orc_component),
    .flags     = 0,
    UCT_ORC_COMPAT_COMPONENT_VERSIONED};

UCT_TL_DEFINE_ENTRY(&uct_orc_component, orc, uct_orc_query_devices,
                    uct_orc_iface_t, UCT_ORC_CONFIG_PREFIX,
                    uct_orc_iface_config_table, uct_orc_iface_config_t);

UCT_ORC_COMPAT_REGISTER(&uct_orc_component, orc)
