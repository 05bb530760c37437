/*
 * orcd API: per-node mailboxes (post; receive with a cursor, blocking).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void orcd_h_mailbox_post(orcd_ctx_t *c)
{
    char node_key[ORCD_KEY_MAX], seq_key[ORCD_KEY_MAX];
    char msg_key[ORCD_KEY_MAX], prefix[ORCD_KEY_MAX], *end;
    orc_store_range_result_t res;
    orc_store_txn_result_t tres;
    orc_store_kv_t node, seq;
    json_t *body, *payload = NULL, *msg;
    json_int_t from = 0;
    uint64_t version;
    char *value = NULL;
    int status = ORC_STORE_OK, attempt;

    body = orcd_body_json(c, c->cfg->mailbox_msg_max, 1);
    if (body == NULL) {
        return;
    }
    if (json_unpack(body, "{s?I, s:o}", "from", &from, "body", &payload) ||
        !json_is_object(payload) || (from < 0)) {
        orcd_api_error(c->resp, 400, "bad_field",
                       "expected {\"from\": node id?, \"body\": {...}}");
        goto out_body;
    }
    msg   = json_pack("{sIsO}", "from", from, "body", payload);
    value = (msg != NULL) ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (value == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_body;
    }
    if (orcd_node_get(c, &node)) {
        goto out_value;
    }
    orcd_key(node_key, c, "/nodes/%020" PRIu64, c->id);
    orcd_key(seq_key, c, "/mbox/%020" PRIu64 "/seq", c->id);
    orcd_key(prefix, c, "/mbox/%020" PRIu64 "/m/", c->id);
    end = orc_store_prefix_end(prefix);
    if (end == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_node;
    }
    status = c->store->ops->range(c->store, prefix, end,
                                  ORC_STORE_RANGE_COUNT_ONLY, 0, &res);
    free(end);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        goto out_node;
    }
    if (res.total >= c->cfg->mailbox_depth) {
        orcd_api_error(c->resp, 429, "mailbox_full",
                       "mailbox of node %" PRIu64 " holds %zu messages (limit "
                       "%u)", c->id, res.total, c->cfg->mailbox_depth);
        c->resp->retry_after = 1;
        goto out_node;
    }
    for (attempt = 0; attempt < ORCD_TXN_RETRIES; ++attempt) {
        status = orc_store_get(c->store, seq_key, &seq, NULL);
        if (status != ORC_STORE_OK) {
            break;
        }
        version = seq.version;
        orc_store_kv_free(&seq);
        /* the message gets seq = version: the counter's version after this
         * put is version + 1, and last_seq = version - 1 */
        orcd_key(msg_key, c, "/mbox/%020" PRIu64 "/m/%020" PRIu64, c->id,
                 version);
        {
            orc_store_cmp_t cmps[2] = {
                {seq_key, ORC_STORE_CMP_VERSION, ORC_STORE_CMP_EQUAL, version},
                {node_key, ORC_STORE_CMP_CREATE, ORC_STORE_CMP_EQUAL,
                 node.create_rev},
            };
            orc_store_op_t ops[2] = {
                {ORC_STORE_OP_PUT, seq_key, NULL, "", 0, node.lease},
                {ORC_STORE_OP_PUT, msg_key, NULL, value, strlen(value),
                 node.lease},
            };
            status = c->store->ops->txn(c->store, cmps, 2, ops, 2, &tres);
        }
        if ((status != ORC_STORE_ECOMPARE) || (tres.failed_cmp != 0)) {
            break;
        }
    }
    if (status == ORC_STORE_OK) {
        orcd_resp_json(c->resp, 201,
                       json_pack("{sI}", "seq", (json_int_t)version));
    } else if ((status == ORC_STORE_ENOENT) ||
               ((status == ORC_STORE_ECOMPARE) && (tres.failed_cmp == 1))) {
        orcd_node_missing(c);
    } else if (status == ORC_STORE_ECOMPARE) {
        orcd_api_error(c->resp, 503, "busy", "too much contention, retry");
        c->resp->retry_after = 1;
    } else {
        orcd_resp_store_error(c->resp, status);
    }
out_node:
    orc_store_kv_free(&node);
out_value:
    free(value);
out_body:
    json_decref(body);
}

void orcd_h_mailbox_get(orcd_ctx_t *c)
{
    char from[ORCD_KEY_MAX], prefix[ORCD_KEY_MAX];
    char watch[ORCD_KEY_MAX], *end = NULL, *watch_end = NULL;
    orc_store_range_result_t res;
    orc_store_kv_t node;
    json_t *msgs, *m, *root;
    uint64_t after = 0, seq, last;
    double wait;
    size_t i, plen;
    int status;

    if (orcd_query_u64(c, "after", &after, NULL) ||
        orcd_query_wait(c, &wait)) {
        return;
    }
    if (orcd_node_get(c, &node)) {
        return;
    }
    orc_store_kv_free(&node);
    orcd_key(prefix, c, "/mbox/%020" PRIu64 "/m/", c->id);
    plen = strlen(prefix);
    end  = orc_store_prefix_end(prefix);
    if (end == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        return;
    }
    /* the first unacknowledged message */
    if (after < UINT64_MAX) {
        orcd_key(from, c, "/mbox/%020" PRIu64 "/m/%020" PRIu64, c->id,
                 after + 1);
    } else {
        snprintf(from, sizeof(from), "%s", end);
    }
    /* acknowledge: drop every message <= after */
    if (after > 0) {
        status = orc_store_delete(c->store, prefix, from, NULL, NULL);
        if (status != ORC_STORE_OK) {
            orcd_resp_store_error(c->resp, status);
            goto out_end;
        }
    }
    status = c->store->ops->range(c->store, from, end, 0, 0, &res);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        goto out_end;
    }
    msgs = json_array();
    last = after;
    for (i = 0; (msgs != NULL) && (i < res.count); ++i) {
        if (orc_util_parse_u64(res.kvs[i].key + plen, &seq)) {
            continue;
        }
        m = json_loadb(res.kvs[i].value, res.kvs[i].value_len, 0, NULL);
        if ((m == NULL) ||
            json_object_set_new(m, "seq", json_integer((json_int_t)seq)) ||
            json_array_append_new(msgs, m)) {
            json_decref(m);
            json_decref(msgs);
            msgs = NULL;
            break;
        }
        last = seq;
    }
    if (msgs == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_res;
    }
    root = json_pack("{sosI}", "messages", msgs, "last_seq",
                     (json_int_t)last);
    orcd_resp_json(c->resp, 200, root);
    c->resp->has_index = 1;
    c->resp->index     = res.revision;
    if (c->req->may_block && (res.count == 0) && (wait > 0) &&
        (c->resp->status == 200)) {
        /* wake on new messages and on the node's removal (its counter key
         * lives under the same prefix) */
        orcd_key(watch, c, "/mbox/%020" PRIu64 "/", c->id);
        watch_end = orc_store_prefix_end(watch);
        if (watch_end == NULL) {
            orcd_api_error(c->resp, 500, "internal", "out of memory");
        } else {
            orcd_resp_block(c->resp, watch, watch_end, res.revision + 1, wait);
        }
    }
out_res:
    orc_store_range_result_free(&res);
out_end:
    free(watch_end);
    free(end);
}
