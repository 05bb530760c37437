/*
 * orcd API: nodes: register, list (blocking), get, delete, keep-alive.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api_int.h"

#include <inttypes.h>
#include <stdio.h>
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
    status = orcd_get(c, key, &kv);
    if (status == ORC_STORE_OK) {
        last_id = kv.version;
        orc_store_kv_free(&kv);
    } else if (status != ORC_STORE_ENOENT) {
        orcd_resp_store_error(c->resp, status);
        return;
    }
    if (c->id <= last_id) {
        orcd_key(key, c, "/gone/%020" PRIu64, c->id);
        status = orcd_get(c, key, &kv);
        if (status == ORC_STORE_ENOENT) {
            orcd_api_error(c->resp, 410, "lease_expired",
                           "the lease of node %" PRIu64 " expired", c->id);
            return;
        }
        if (status != ORC_STORE_OK) {
            orcd_resp_store_error(c->resp, status);
            return;
        }
        orc_store_kv_free(&kv);
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
    status = orcd_get(c, key, kv);
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
    json_object_del(o, "rid");
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

/* The node record a registration stores (its TTL clamped to the limits), or
 * NULL with the response filled (400 on a bad body) */
static json_t *orcd_register_record(orcd_ctx_t *c)
{
    const orcd_config_t *cfg = c->cfg;
    json_t *body, *labels = NULL, *rec = NULL, *v;
    const char *host, *lk;
    json_int_t pid, ttl = 0;

    body = orcd_body_json(c, cfg->max_body, 1);
    if (body == NULL) {
        return NULL;
    }
    if (json_unpack(body, "{s:s, s:I, s?o, s?I}", "host", &host, "pid", &pid,
                    "labels", &labels, "ttl", &ttl) ||
        (host[0] == '\0') || (strlen(host) > 255) || (pid < 0) ||
        (pid > INT32_MAX) ||
        ((json_object_get(body, "ttl") != NULL) && (ttl <= 0)) ||
        ((labels != NULL) && !json_is_null(labels) &&
         !json_is_object(labels))) {
        orcd_api_error(c->resp, 400, "bad_field",
                       "expected {\"host\": non-empty string (<= 255), "
                       "\"pid\": integer >= 0, \"labels\": {string: string}?, "
                       "\"ttl\": integer > 0?}");
        goto out_body;
    }
    if (json_is_object(labels)) {
        json_object_foreach(labels, lk, v)
        {
            if (!json_is_string(v)) {
                orcd_api_error(c->resp, 400, "bad_field",
                               "label values must be strings");
                goto out_body;
            }
        }
    }
    ttl = (ttl == 0) ? cfg->ttl_default : ttl;
    ttl = (ttl < cfg->ttl_min) ? cfg->ttl_min : ttl;
    ttl = (ttl > cfg->ttl_max) ? cfg->ttl_max : ttl;
    rec =
        json_pack("{sssIsosI}", "host", host, "pid", pid, "labels",
                  json_is_object(labels) ? json_incref(labels) : json_object(),
                  "ttl", ttl);
    if (rec == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
    }
out_body:
    json_decref(body);
    return rec;
}

/* A registration with this Idempotency-Key was made (by an earlier
 * attempt): answer as it did. 1 answered, 0 not found, -1 with the
 * response filled. */
static int orcd_register_done(orcd_ctx_t *c)
{
    json_int_t id, ttl;
    uint64_t rev;
    json_t *rec;
    int found = orcd_rid_find(c, &rec, &rev);

    if (found != 1) {
        return found;
    }
    if (json_unpack(rec, "{s:I, s:I}", "id", &id, "ttl", &ttl)) {
        orcd_api_error(c->resp, 409, "conflict",
                       "Idempotency-Key %s belongs to another request",
                       c->req->rid);
    } else {
        c->id = (uint64_t)id;
        orcd_resp_json(c->resp, 201,
                       json_pack("{sIsIsI}", "id", id, "ttl", ttl, "index",
                                 (json_int_t)rev));
    }
    json_decref(rec);
    return 1;
}

/* Take the next node id and store the node (and the request's /rid/ key,
 * on the node's lease): the store's status; on ECOMPARE, *rid_taken_p says
 * whether another attempt of this request made it first */
static int orcd_register_store(orcd_ctx_t *c, const char *value, uint64_t lease,
                               int64_t ttl, orc_store_txn_result_t *tres,
                               int *rid_taken_p)
{
    char ids_key[ORCD_KEY_MAX], node_key[ORCD_KEY_MAX], seq_key[ORCD_KEY_MAX];
    char rid_key[ORCD_KEY_MAX], rid_value[64];
    const size_t r = (c->req->rid != NULL) ? 1 : 0; /* compares before ids */
    orc_store_cmp_t cmps[2];
    orc_store_op_t ops[4];
    orcd_counter_t *lock;
    orc_store_kv_t kv;
    uint64_t version;
    int status = ORC_STORE_ECOMPARE, attempt;

    *rid_taken_p = 0;
    orcd_key(ids_key, c, "/meta/ids");
    lock = orcd_counter_lock(c, 0);
    if (lock == NULL) {
        return ORC_STORE_EUNAVAIL;
    }
    for (attempt = 0;
         (attempt < ORCD_TXN_RETRIES) && (status == ORC_STORE_ECOMPARE);
         ++attempt) {
        status = orcd_get(c, ids_key, &kv);
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
        cmps[r] = (orc_store_cmp_t){ids_key, ORC_STORE_CMP_VERSION,
                                    ORC_STORE_CMP_EQUAL, version};
        ops[0]  = (orc_store_op_t){ORC_STORE_OP_PUT, ids_key, NULL, "", 0, 0};
        ops[1]  = (orc_store_op_t){ORC_STORE_OP_PUT, node_key, NULL, value,
                                   strlen(value),    lease};
        ops[2] =
            (orc_store_op_t){ORC_STORE_OP_PUT, seq_key, NULL, "", 0, lease};
        if (r) {
            snprintf(rid_value, sizeof(rid_value),
                     "{\"id\":%" PRIu64 ",\"ttl\":%" PRId64 "}", c->id, ttl);
            orcd_rid_txn(c, rid_key, rid_value, lease, &cmps[0], &ops[3]);
        }
        status = orcd_txn(c, cmps, 1 + r, ops, 3 + r, tres);
        if ((status == ORC_STORE_ECOMPARE) && r && (tres->failed_cmp == 0)) {
            *rid_taken_p = 1;
            break;
        }
    }
    orcd_counter_unlock(c, lock);
    return status;
}

/* The registration did not happen: say why (or, if another attempt of the
 * request made it, answer as that one did) */
static void orcd_register_failed(orcd_ctx_t *c, int status, int rid_taken)
{
    if (rid_taken && (orcd_register_done(c) != 0)) {
        return;
    }
    if (status == ORC_STORE_ECOMPARE) {
        orcd_api_error(c->resp, 503, "busy", "too much contention, retry");
        c->resp->retry_after = 1;
    } else {
        orcd_resp_store_error(c->resp, status);
    }
}

void orcd_h_register(orcd_ctx_t *c)
{
    orc_store_txn_result_t tres;
    char *value = NULL;
    int64_t granted;
    uint64_t lease;
    int status, rid_taken = 0;
    json_t *rec;

    rec = orcd_register_record(c);
    if ((rec == NULL) ||
        ((orcd_retry_rid(c) != NULL) && orcd_register_done(c)) ||
        orcd_quota(c, 3, 3 * (strlen(c->job) + 40) + 256)) {
        json_decref(rec);
        return;
    }
    status = orcd_call_fits(c)
                 ? c->store->ops->lease_grant(c->store,
                                              json_integer_value(
                                                  json_object_get(rec, "ttl")),
                                              &lease, &granted)
                 : ORC_STORE_EUNAVAIL;
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        goto out_rec;
    }
    /* the record shows the TTL granted (etcd's may be longer) */
    if (!json_object_set_new(rec, "ttl", json_integer(granted))) {
        value = json_dumps(rec, JSON_COMPACT);
    }
    status = (value != NULL) ? orcd_register_store(c, value, lease, granted,
                                                   &tres, &rid_taken)
                             : ORC_STORE_ENOMEM;
    if (status != ORC_STORE_OK) {
        /* nothing of the node may stay behind, but only a failure that is
         * certain may take the lease: after EUNAVAIL the transaction may
         * still be applied, and a retry of the request then answers with
         * this node. Left alone (or out of time), the lease expires by
         * itself. */
        if ((status != ORC_STORE_EUNAVAIL) && orcd_call_fits(c)) {
            c->store->ops->lease_revoke(c->store, lease, NULL);
        }
        orcd_register_failed(c, status, rid_taken);
        goto out_value;
    }
    orcd_debug("job %s: node %" PRIu64 " registered (ttl %lld)", c->job, c->id,
               (long long)granted);
    orcd_resp_json(c->resp, 201,
                   json_pack("{sIsIsI}", "id", (json_int_t)c->id, "ttl",
                             (json_int_t)granted, "index",
                             (json_int_t)tres.revision));
out_value:
    free(value);
out_rec:
    json_decref(rec);
}

/* The node list of a range over the job's /nodes/ */
static json_t *orcd_list_nodes(const orc_store_range_result_t *res, size_t plen)
{
    const orc_store_kv_t *ep;
    json_t *nodes = json_array(), *o;
    const char *rest;
    uint64_t id;
    size_t i, klen;

    for (i = 0; (nodes != NULL) && (i < res->count); ++i) {
        rest = res->kvs[i].key + plen;
        if ((strlen(rest) != 20) || orc_util_parse_u64(rest, &id)) {
            continue; /* an endpoint key without its node: skip */
        }
        klen = strlen(res->kvs[i].key);
        ep   = NULL;
        if ((i + 1 < res->count) &&
            !strncmp(res->kvs[i + 1].key, res->kvs[i].key, klen) &&
            !strcmp(res->kvs[i + 1].key + klen, "/ep")) {
            ep = &res->kvs[i + 1];
        }
        o = orcd_node_object(id, &res->kvs[i], ep);
        if ((o == NULL) || json_array_append_new(nodes, o)) {
            json_decref(nodes);
            nodes = NULL;
        }
    }
    return nodes;
}

void orcd_h_list(orcd_ctx_t *c)
{
    char prefix[ORCD_KEY_MAX], *end;
    orc_store_range_result_t res;
    uint64_t index = 0;
    json_t *nodes;
    double wait;
    int status, has_index;

    if (orcd_query_u64(c, "index", &index, &has_index) ||
        orcd_query_wait(c, &wait)) {
        return;
    }
    orcd_key(prefix, c, "/nodes/");
    end = orc_store_prefix_end(prefix);
    if (end == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        return;
    }
    status = orcd_range(c, prefix, end, 0, &res);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        goto out_end;
    }
    nodes = orcd_list_nodes(&res, strlen(prefix));
    if (nodes == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_res;
    }
    orcd_resp_json(c->resp, 200,
                   json_pack("{sIso}", "index", (json_int_t)res.revision,
                             "nodes", nodes));
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
    int status;
    json_t *o;

    if (orcd_node_get(c, &node)) {
        return;
    }
    orcd_key(key, c, "/nodes/%020" PRIu64 "/ep", c->id);
    status = orcd_get(c, key, &ep);
    if ((status != ORC_STORE_OK) && (status != ORC_STORE_ENOENT)) {
        orcd_resp_store_error(c->resp, status);
        goto out_node;
    }
    o = orcd_node_object(c->id, &node, (status == ORC_STORE_OK) ? &ep : NULL);
    if (o == NULL) {
        orcd_api_error(c->resp, 500, "internal", "corrupt node record");
    } else {
        orcd_resp_json(c->resp, 200, o);
    }
    if (status == ORC_STORE_OK) {
        orc_store_kv_free(&ep);
    }
out_node:
    orc_store_kv_free(&node);
}

void orcd_h_node_delete(orcd_ctx_t *c)
{
    char key[ORCD_KEY_MAX];
    orc_store_op_t op = {ORC_STORE_OP_PUT, key, NULL, "", 0, 0};
    orc_store_txn_result_t tres;
    orc_store_kv_t node;
    uint64_t rev = 0;
    int status;

    if (orcd_node_get(c, &node)) {
        return;
    }
    /* the tombstone first, then the lease (with the node and all it owns):
     * whoever sees the node gone, at any revision, also sees the tombstone
     * and answers 404, never 410; this request's index is the revocation's */
    orcd_key(key, c, "/gone/%020" PRIu64, c->id);
    status = orcd_txn(c, NULL, 0, &op, 1, &tres);
    if (status == ORC_STORE_OK) {
        status = c->store->ops->lease_revoke(c->store, node.lease, &rev);
        if (status == ORC_STORE_OK) {
            orcd_seen(c, rev);
        } else if (status == ORC_STORE_ENOENT) {
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
