/*
 * orc UCP helper: worker addresses published and found by name in orcd's kv.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_ucp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORC_UCP_KEY_MAX 128

ucs_status_t orc_ucp_status(orc_cl_status_t status)
{
    switch (status) {
    case ORC_CL_OK:
        return UCS_OK;
    case ORC_CL_ERR_INVALID:
        return UCS_ERR_INVALID_PARAM;
    case ORC_CL_ERR_NO_MEMORY:
        return UCS_ERR_NO_MEMORY;
    case ORC_CL_ERR_UNREACHABLE:
        return UCS_ERR_UNREACHABLE;
    case ORC_CL_ERR_TIMEOUT:
        return UCS_ERR_TIMED_OUT;
    case ORC_CL_ERR_NOT_FOUND:
        return UCS_ERR_NO_ELEM;
    case ORC_CL_ERR_UNAUTHORIZED:
    case ORC_CL_ERR_FORBIDDEN:
        return UCS_ERR_REJECTED;
    case ORC_CL_ERR_CONFLICT:
        return UCS_ERR_ALREADY_EXISTS;
    case ORC_CL_ERR_GONE:
        return UCS_ERR_CONNECTION_RESET;
    case ORC_CL_ERR_TOO_LARGE:
        return UCS_ERR_EXCEEDS_LIMIT;
    case ORC_CL_ERR_BUSY:
        return UCS_ERR_BUSY;
    default:
        return UCS_ERR_IO_ERROR;
    }
}

static ucs_status_t orc_ucp_key(const char *name, char *key, size_t size)
{
    if ((name == NULL) || (name[0] == '\0') ||
        (snprintf(key, size, ORC_UCP_KEY_PREFIX "%s", name) >= (int)size)) {
        return UCS_ERR_INVALID_PARAM;
    }

    return UCS_OK;
}

ucs_status_t orc_ucp_publish_worker(orc_client_t *client, ucp_worker_h worker,
                                    const char *name)
{
    ucp_worker_attr_t attr;
    char key[ORC_UCP_KEY_MAX + 1];
    ucs_status_t status;

    if ((client == NULL) || (worker == NULL)) {
        return UCS_ERR_INVALID_PARAM;
    }

    status = orc_ucp_key(name, key, sizeof(key));
    if (status != UCS_OK) {
        return status;
    }

    attr.field_mask = UCP_WORKER_ATTR_FIELD_ADDRESS;
    status          = ucp_worker_query(worker, &attr);
    if (status != UCS_OK) {
        return status;
    }

    status = orc_ucp_status(
        orc_client_kv_put(client, key, attr.address, attr.address_length));
    ucp_worker_release_address(worker, attr.address);
    return status;
}

ucs_status_t orc_ucp_unpublish_worker(orc_client_t *client, const char *name)
{
    char key[ORC_UCP_KEY_MAX + 1];
    ucs_status_t status;

    if (client == NULL) {
        return UCS_ERR_INVALID_PARAM;
    }

    status = orc_ucp_key(name, key, sizeof(key));
    if (status != UCS_OK) {
        return status;
    }

    return orc_ucp_status(orc_client_kv_delete(client, key));
}

ucs_status_t orc_ucp_ep_create_by_name_params(orc_client_t *client,
                                              ucp_worker_h worker,
                                              const char *name, int timeout_ms,
                                              const ucp_ep_params_t *params,
                                              ucp_ep_h *ep_p)
{
    char key[ORC_UCP_KEY_MAX + 1];
    ucp_ep_params_t ep_params;
    ucs_status_t status;
    size_t length;
    void *address;

    if ((client == NULL) || (worker == NULL) || (ep_p == NULL) ||
        (timeout_ms < 0)) {
        return UCS_ERR_INVALID_PARAM;
    }

    status = orc_ucp_key(name, key, sizeof(key));
    if (status != UCS_OK) {
        return status;
    }

    status = orc_ucp_status(
        orc_client_kv_get(client, key, timeout_ms, &address, &length));
    if (status != UCS_OK) {
        return status;
    }

    if (length == 0) {
        free(address);
        return UCS_ERR_INVALID_ADDR;
    }

    if (params != NULL) {
        ep_params = *params;
    } else {
        memset(&ep_params, 0, sizeof(ep_params));
    }
    ep_params.field_mask |= UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    ep_params.address = address;

    status = ucp_ep_create(worker, &ep_params, ep_p);
    free(address);
    return status;
}

ucs_status_t orc_ucp_ep_create_by_name(orc_client_t *client,
                                       ucp_worker_h worker, const char *name,
                                       int timeout_ms, ucp_ep_h *ep_p)
{
    return orc_ucp_ep_create_by_name_params(client, worker, name, timeout_ms,
                                            NULL, ep_p);
}
