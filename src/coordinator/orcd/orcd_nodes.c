/*
 * orcd API: nodes: register, list (blocking), get, delete, keep-alive.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* The node is missing: 410 if its id was issued and it was not deleted
 * explicitly (so its lease expired), else 404. */
void orcd_node_missing(orcd_ctx_t *c)
{
    char key[ORCD_KEY_MAX];
    orc_store_kv_t kv;
    uint64_t last_id = 0;
    int status;

    orcd_key(key, c, "/meta/ids");
    status = orc_store_get(c->store, key, &kv, NULL);
    if (status == ORC_STORE_OK) {
        last_id = kv.version;
        orc_store_kv_free(&kv);
    } else if (status != ORC_STORE_ENOENT) {
        orcd_resp_store_error(c->resp, status);
        return;
    }
    if (c->id <= last_id) {
        orcd_key(key, c, "/gone/%020" PRIu64, c->id);
        status = orc_store_get(c->store, key, &kv, NULL);
        if (status == ORC_STORE_ENOENT) {
            orcd_api_error(c->resp, 410, "lease_expired",
                           "the lease of node %" PRIu64 " expired", c->id);
            return;
        }
        if (status == ORC_STORE_OK) {
            orc_store_kv_free(&kv);
        }
    }
    orcd_api_error(c->resp, 404, "not_found", "no node %" PRIu64 " in job %s",
                   c->id, c->job);
}

/* Fetch the node record; on failure the response is filled. */
int orcd_node_get(orcd_ctx_t *c, orc_store_kv_t *kv)
{
    char key[ORCD_KEY_MAX];
    int status;

    orcd_key(key, c, "/nodes/%020" PRIu64, c->id);
    status = orc_store_get(c->store, key, kv, NULL);
    if (status == ORC_STORE_ENOENT) {
        orcd_node_missing(c);
        return -1;
    }
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return -1;
    }
    return 0;
}

/* Build a node object from its record (and endpoint kv, may be NULL). */
static json_t *orcd_node_object(uint64_t id, const orc_store_kv_t *node,
                                const orc_store_kv_t *ep)
{
    json_t *o, *e = NULL;
    uint64_t index = node->mod_rev;

    o = json_loadb(node->value, node->value_len, 0, NULL);
    if ((o == NULL) || !json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    if (ep != NULL) {
        e = json_loadb(ep->value, ep->value_len, 0, NULL);
        if (ep->mod_rev > index) {
            index = ep->mod_rev;
        }
    }
    if (json_object_set_new(o, "id", json_integer((json_int_t)id)) ||
        json_object_set_new(o, "endpoint", (e != NULL) ? e : json_null()) ||
        json_object_set_new(o, "index", json_integer((json_int_t)index))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

void orcd_h_register(orcd_ctx_t *c)
{
    const orcd_config_t *cfg = c->cfg;
    json_t *body, *labels = NULL, *rec, *v;
    const char *host, *lk;
    json_int_t pid, ttl = 0;
    char ids_key[ORCD_KEY_MAX], node_key[ORCD_KEY_MAX], seq_key[ORCD_KEY_MAX];
    orc_store_txn_result_t tres;
    orc_store_kv_t kv;
    uint64_t lease, version;
    char *value;
    int status, attempt;

    body = orcd_body_json(c, cfg->max_body, 1);
    if (body == NULL) {
        return;
    }
    if (json_unpack(body, "{s:s, s:I, s?o, s?I}", "host", &host, "pid", &pid,
                    "labels", &labels, "ttl", &ttl) ||
        (host[0] == '\0') || (strlen(host) > 255) || (pid < 0) ||
        (pid > INT32_MAX) || (json_object_get(body, "ttl") != NULL &&
                              ttl <= 0)) {
        orcd_api_error(c->resp, 400, "bad_field",
                       "expected {\"host\": non-empty string (<= 255), "
                       "\"pid\": integer >= 0, \"labels\": {string: string}?, "
                       "\"ttl\": integer > 0?}");
        goto out_body;
    }
    if ((labels != NULL) && !json_is_null(labels)) {
        if (!json_is_object(labels)) {
            orcd_api_error(c->resp, 400, "bad_field",
                           "labels must be an object of strings");
            goto out_body;
        }
        json_object_foreach(labels, lk, v) {
            if (!json_is_string(v)) {
                orcd_api_error(c->resp, 400, "bad_field",
                               "label values must be strings");
                goto out_body;
            }
        }
    }
    if (ttl == 0) {
        ttl = cfg->ttl_default;
    }
    if (ttl < cfg->ttl_min) {
        ttl = cfg->ttl_min;
    }
    if (ttl > cfg->ttl_max) {
        ttl = cfg->ttl_max;
    }
    rec = json_pack("{sssIsosI}", "host", host, "pid", pid, "labels",
                    ((labels != NULL) && !json_is_null(labels)) ?
                            json_incref(labels) : json_object(),
                    "ttl", ttl);
    value = (rec != NULL) ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_decref(rec);
    if (value == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_body;
    }

    status = c->store->ops->lease_grant(c->store, ttl, &lease);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        goto out_value;
    }
    orcd_key(ids_key, c, "/meta/ids");
    for (attempt = 0; attempt < ORCD_TXN_RETRIES; ++attempt) {
        status = orc_store_get(c->store, ids_key, &kv, NULL);
        if (status == ORC_STORE_OK) {
            version = kv.version;
            orc_store_kv_free(&kv);
        } else if (status == ORC_STORE_ENOENT) {
            version = 0;
        } else {
            break;
        }
        c->id = version + 1;
        orcd_key(node_key, c, "/nodes/%020" PRIu64, c->id);
        orcd_key(seq_key, c, "/mbox/%020" PRIu64 "/seq", c->id);
        {
            orc_store_cmp_t cmp = {ids_key, ORC_STORE_CMP_VERSION,
                                   ORC_STORE_CMP_EQUAL, version};
            orc_store_op_t ops[3] = {
                {ORC_STORE_OP_PUT, ids_key, NULL, "", 0, 0},
                {ORC_STORE_OP_PUT, node_key, NULL, value, strlen(value),
                 lease},
                {ORC_STORE_OP_PUT, seq_key, NULL, "", 0, lease},
            };
            status = c->store->ops->txn(c->store, &cmp, 1, ops, 3, &tres);
        }
        if (status != ORC_STORE_ECOMPARE) {
            break;
        }
    }
    if (status != ORC_STORE_OK) {
        c->store->ops->lease_revoke(c->store, lease);
        if (status == ORC_STORE_ECOMPARE) {
            orcd_api_error(c->resp, 503, "busy", "too much contention, retry");
            c->resp->retry_after = 1;
        } else {
            orcd_resp_store_error(c->resp, status);
        }
        goto out_value;
    }
    orcd_debug("job %s: node %" PRIu64 " registered (host %s pid %lld ttl "
               "%lld)", c->job, c->id, host, (long long)pid, (long long)ttl);
    orcd_resp_json(c->resp, 201,
                   json_pack("{sIsIsI}", "id", (json_int_t)c->id, "ttl", ttl,
                             "index", (json_int_t)tres.revision));
out_value:
    free(value);
out_body:
    json_decref(body);
}

void orcd_h_list(orcd_ctx_t *c)
{
    char prefix[ORCD_KEY_MAX], *end;
    orc_store_range_result_t res;
    json_t *nodes, *o, *root;
    uint64_t index = 0, id;
    double wait;
    size_t i, plen;
    int status, has_index;

    if (orcd_query_u64(c, "index", &index, &has_index) ||
        orcd_query_wait(c, &wait)) {
        return;
    }
    orcd_key(prefix, c, "/nodes/");
    plen = strlen(prefix);
    end  = orc_store_prefix_end(prefix);
    if (end == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        return;
    }
    status = c->store->ops->range(c->store, prefix, end, 0, 0, &res);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        goto out_end;
    }
    nodes = json_array();
    for (i = 0; (nodes != NULL) && (i < res.count); ++i) {
        const char *rest = res.kvs[i].key + plen;
        const orc_store_kv_t *ep = NULL;

        if ((strlen(rest) != 20) || orc_util_parse_u64(rest, &id)) {
            continue; /* an endpoint key without its node: skip */
        }
        if ((i + 1 < res.count) &&
            !strncmp(res.kvs[i + 1].key, res.kvs[i].key,
                     strlen(res.kvs[i].key)) &&
            !strcmp(res.kvs[i + 1].key + strlen(res.kvs[i].key), "/ep")) {
            ep = &res.kvs[i + 1];
        }
        o = orcd_node_object(id, &res.kvs[i], ep);
        if ((o == NULL) || json_array_append_new(nodes, o)) {
            json_decref(nodes);
            nodes = NULL;
        }
    }
    if (nodes == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_res;
    }
    root = json_pack("{sIso}", "index", (json_int_t)res.revision, "nodes",
                     nodes);
    orcd_resp_json(c->resp, 200, root);
    c->resp->has_index = 1;
    c->resp->index     = res.revision;
    /* an index from the future means orcd restarted without its state:
     * answer at once so the client resynchronises */
    if (c->req->may_block && has_index && (wait > 0) &&
        (index <= res.revision) && (c->resp->status == 200)) {
        /* the list read above already holds anything newer than index */
        if (orcd_resp_block(c->resp, prefix, end, index + 1, wait) == 0) {
            c->resp->answer_if_fired = 1;
        }
    }
out_res:
    orc_store_range_result_free(&res);
out_end:
    free(end);
}

void orcd_h_node_get(orcd_ctx_t *c)
{
    char key[ORCD_KEY_MAX];
    orc_store_kv_t node, ep;
    int status, has_ep;
    json_t *o;

    if (orcd_node_get(c, &node)) {
        return;
    }
    orcd_key(key, c, "/nodes/%020" PRIu64 "/ep", c->id);
    status = orc_store_get(c->store, key, &ep, NULL);
    has_ep = (status == ORC_STORE_OK);
    o      = orcd_node_object(c->id, &node, has_ep ? &ep : NULL);
    if (o == NULL) {
        orcd_api_error(c->resp, 500, "internal", "corrupt node record");
    } else {
        orcd_resp_json(c->resp, 200, o);
    }
    if (has_ep) {
        orc_store_kv_free(&ep);
    }
    orc_store_kv_free(&node);
}

void orcd_h_node_delete(orcd_ctx_t *c)
{
    char key[ORCD_KEY_MAX];
    orc_store_kv_t node;
    int status;

    if (orcd_node_get(c, &node)) {
        return;
    }
    orcd_key(key, c, "/gone/%020" PRIu64, c->id);
    status = orc_store_put(c->store, key, "", 0, 0, NULL);
    if (status == ORC_STORE_OK) {
        status = c->store->ops->lease_revoke(c->store, node.lease);
        if (status == ORC_STORE_ENOENT) {
            status = ORC_STORE_OK; /* expired meanwhile: gone either way */
        }
    }
    orc_store_kv_free(&node);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return;
    }
    orcd_debug("job %s: node %" PRIu64 " deleted", c->job, c->id);
    orcd_resp_empty(c->resp, 204);
}

void orcd_h_keepalive(orcd_ctx_t *c)
{
    orc_store_kv_t node;
    int64_t ttl;
    int status;

    if (orcd_node_get(c, &node)) {
        return;
    }
    status = c->store->ops->lease_keepalive(c->store, node.lease, &ttl);
    orc_store_kv_free(&node);
    if (status == ORC_STORE_ENOENT) {
        orcd_api_error(c->resp, 410, "lease_expired",
                       "the lease of node %" PRIu64 " expired", c->id);
        return;
    }
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return;
    }
    orcd_resp_json(c->resp, 200,
                   json_pack("{sIsI}", "id", (json_int_t)c->id, "ttl",
                             (json_int_t)ttl));
}
