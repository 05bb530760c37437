/*
 * orcd API: a node's RDMA endpoint record (create, replace, fetch).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void orcd_h_endpoint_get(orcd_ctx_t *c)
{
    char key[ORCD_KEY_MAX];
    orc_store_kv_t ep, node;
    int status;

    orcd_key(key, c, "/nodes/%020" PRIu64 "/ep", c->id);
    status = orcd_get(c, key, &ep);
    if (status == ORC_STORE_OK) {
        orcd_resp_set_body(c->resp, 200, ep.value, ep.value_len);
        ep.value = NULL;
        orc_store_kv_free(&ep);
        return;
    }
    if (status != ORC_STORE_ENOENT) {
        orcd_resp_store_error(c->resp, status);
        return;
    }
    if (orcd_node_get(c, &node)) {
        return;
    }
    orc_store_kv_free(&node);
    orcd_api_error(c->resp, 404, "not_found",
                   "node %" PRIu64 " has no endpoint", c->id);
}

/* A retried create found the endpoint it would have stored: the first
 * attempt stored it (1), or another value is there (0) */
static int orcd_endpoint_done(orcd_ctx_t *c, const char *ep_key,
                              const char *value)
{
    orc_store_kv_t ep;
    int same;

    if (orcd_get(c, ep_key, &ep) != ORC_STORE_OK) {
        return 0;
    }
    same = (ep.value_len == strlen(value)) && !strcmp(ep.value, value);
    if (same) {
        orcd_resp_json(c->resp, 201,
                       json_pack("{sI}", "index", (json_int_t)ep.mod_rev));
    }
    orc_store_kv_free(&ep);
    return same;
}

static void orcd_endpoint_write(orcd_ctx_t *c, int create)
{
    char node_key[ORCD_KEY_MAX], ep_key[ORCD_KEY_MAX];
    orc_store_txn_result_t tres;
    orc_store_kv_t node;
    json_t *body;
    char *value;
    int status;

    body = orcd_body_json(c, c->cfg->endpoint_max, 1);
    if (body == NULL) {
        return;
    }
    value = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (value == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        return;
    }
    if (orcd_node_get(c, &node)) {
        goto out_value;
    }
    if (orcd_quota(c, 1, strlen(c->job) + 40 + strlen(value))) {
        orc_store_kv_free(&node);
        goto out_value;
    }
    orcd_key(node_key, c, "/nodes/%020" PRIu64, c->id);
    orcd_key(ep_key, c, "/nodes/%020" PRIu64 "/ep", c->id);
    {
        orc_store_cmp_t cmps[2] = {
            {node_key, ORC_STORE_CMP_CREATE, ORC_STORE_CMP_EQUAL,
             node.create_rev},
            {ep_key, ORC_STORE_CMP_CREATE, ORC_STORE_CMP_EQUAL, 0},
        };
        orc_store_op_t op = {ORC_STORE_OP_PUT, ep_key,    NULL, value,
                             strlen(value),    node.lease};
        status            = orcd_txn(c, cmps, create ? 2 : 1, &op, 1, &tres);
    }
    orc_store_kv_free(&node);
    if ((status == ORC_STORE_ECOMPARE) && (tres.failed_cmp == 1) &&
        (orcd_retry_rid(c) != NULL) && orcd_endpoint_done(c, ep_key, value)) {
        /* answered as the first attempt was */
    } else if ((status == ORC_STORE_ECOMPARE) && (tres.failed_cmp == 1)) {
        orcd_api_error(c->resp, 409, "conflict",
                       "node %" PRIu64 " already has an endpoint (PUT "
                       "replaces it)",
                       c->id);
    } else if ((status == ORC_STORE_ECOMPARE) || (status == ORC_STORE_ENOENT)) {
        orcd_node_missing(c);
    } else if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
    } else {
        orcd_resp_json(c->resp, create ? 201 : 200,
                       json_pack("{sI}", "index", (json_int_t)tres.revision));
    }
out_value:
    free(value);
}

void orcd_h_endpoint_post(orcd_ctx_t *c)
{
    orcd_endpoint_write(c, 1);
}

void orcd_h_endpoint_put(orcd_ctx_t *c)
{
    orcd_endpoint_write(c, 0);
}
