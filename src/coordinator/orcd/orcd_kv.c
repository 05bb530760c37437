/*
 * orcd API: the job's key-value space (put, get with wait, delete).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* The store key of the route's {key}: -1 with a 400 filled if invalid */
static int orcd_kv_store_key(orcd_ctx_t *c, char *key)
{
    if (!orc_util_name_valid(c->kv_key, strlen(c->kv_key), 1)) {
        orcd_api_error(c->resp, 400, "bad_key",
                       "kv keys are 1..%d characters of A-Z a-z 0-9 . _ - /, "
                       "without '..', '//' or a leading or trailing '/'",
                       ORCD_NAME_MAX);
        return -1;
    }
    orcd_key(key, c, "/kv/%s", c->kv_key);
    return 0;
}

void orcd_h_kv_put(orcd_ctx_t *c)
{
    char key[ORCD_KEY_MAX];
    orc_store_txn_result_t tres;
    char node_key[ORCD_KEY_MAX];
    json_t *body, *value = NULL;
    json_int_t node_id = 0;
    orc_store_kv_t node;
    char *text;
    int status, has_node;

    if (orcd_kv_store_key(c, key)) {
        return;
    }
    body = orcd_body_json(c, c->cfg->max_body, 1);
    if (body == NULL) {
        return;
    }
    if (json_unpack(body, "{s:o, s?I}", "value", &value, "node", &node_id) ||
        (node_id < 0) ||
        ((json_object_get(body, "node") != NULL) && (node_id == 0))) {
        orcd_api_error(c->resp, 400, "bad_field",
                       "expected {\"value\": any JSON, \"node\": node id?}");
        goto out_body;
    }
    has_node = (node_id > 0);
    text     = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_body;
    }
    if (orcd_quota(c, 1, strlen(key) + strlen(text))) {
        goto out_text;
    }
    if (has_node) {
        c->id = (uint64_t)node_id;
        if (orcd_node_get(c, &node)) {
            goto out_text;
        }
        orcd_key(node_key, c, "/nodes/%020" PRIu64, c->id);
        {
            orc_store_cmp_t cmp = {node_key, ORC_STORE_CMP_CREATE,
                                   ORC_STORE_CMP_EQUAL, node.create_rev};
            orc_store_op_t op   = {ORC_STORE_OP_PUT, key,       NULL, text,
                                   strlen(text),     node.lease};
            status              = orcd_txn(c, &cmp, 1, &op, 1, &tres);
        }
        orc_store_kv_free(&node);
        if ((status == ORC_STORE_ECOMPARE) || (status == ORC_STORE_ENOENT)) {
            orcd_node_missing(c);
            goto out_text;
        }
    } else {
        orc_store_op_t op = {ORC_STORE_OP_PUT, key, NULL, text,
                             strlen(text),     0};
        status            = orcd_txn(c, NULL, 0, &op, 1, &tres);
    }
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
    } else {
        orcd_resp_json(c->resp, 200,
                       json_pack("{sI}", "index", (json_int_t)tres.revision));
    }
out_text:
    free(text);
out_body:
    json_decref(body);
}

void orcd_h_kv_get(orcd_ctx_t *c)
{
    const char *name = c->kv_key;
    char key[ORCD_KEY_MAX];
    orc_store_kv_t kv;
    orcd_buf_t b = {0};
    double wait;
    int status;

    if (orcd_kv_store_key(c, key) || orcd_query_wait(c, &wait)) {
        return;
    }
    status = orcd_get(c, key, &kv);
    if (status == ORC_STORE_ENOENT) {
        orcd_api_error(c->resp, 404, "not_found", "no key '%s' in job %s", name,
                       c->job);
        if (c->req->may_block && (wait > 0)) {
            orcd_resp_block(c->resp, key, NULL, c->rev + 1, wait);
        }
        return;
    }
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return;
    }
    /* the name is validated ([A-Za-z0-9._/-]) and the value is stored JSON
     * text: both are inserted verbatim */
    b.cap  = kv.value_len + strlen(name) + 64;
    b.data = malloc(b.cap);
    if (b.data == NULL) {
        orc_store_kv_free(&kv);
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        return;
    }
    orcd_buf_printf(&b, "{\"key\":\"%s\",\"value\":%s,\"index\":%" PRIu64 "}",
                    name, kv.value, kv.mod_rev);
    orc_store_kv_free(&kv);
    if (b.failed) {
        free(b.data);
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        return;
    }
    orcd_resp_set_body(c->resp, 200, b.data, b.len);
    c->resp->has_index = 1;
    c->resp->index     = c->rev;
}

void orcd_h_kv_delete(orcd_ctx_t *c)
{
    const char *name = c->kv_key;
    char key[ORCD_KEY_MAX];
    orc_store_op_t op = {ORC_STORE_OP_DELETE_RANGE, key, NULL, NULL, 0, 0};
    orc_store_txn_result_t tres;
    int status;

    if (orcd_kv_store_key(c, key)) {
        return;
    }
    status = orcd_txn(c, NULL, 0, &op, 1, &tres);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
    } else if (tres.deleted == 0) {
        orcd_api_error(c->resp, 404, "not_found", "no key '%s' in job %s", name,
                       c->job);
    } else {
        orcd_resp_empty(c->resp, 204);
    }
}
