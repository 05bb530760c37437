/*
 * orcd API: per-node mailboxes (post; receive with a cursor, blocking).
 *
 * Messages are /mbox/ID/m/SEQ, SEQ from the counter /mbox/ID/seq. A receive
 * with after=S acknowledges every message <= S: they are deleted, and the
 * request ids of the last ORCD_MBOX_KEEP acknowledged ones stay in
 * /mbox/ID/ack ("rid:seq rid:seq ..."), so that a retried post whose first
 * attempt was delivered and acknowledged meanwhile is still recognised.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The ack record of c->id's mailbox (text, "" if none) and its mod
 * revision (0 if none), read with the range flags given: malloc'ed, or NULL
 * with the response filled */
static char *orcd_mbox_acked(orcd_ctx_t *c, unsigned flags, uint64_t *mod_rev_p)
{
    char key[ORCD_KEY_MAX], *text;
    orc_store_range_result_t res;
    int status;

    *mod_rev_p = 0;
    orcd_key(key, c, "/mbox/%020" PRIu64 "/ack", c->id);
    status = orcd_range(c, key, NULL, flags, &res);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return NULL;
    }
    text = strdup((res.count > 0) ? res.kvs[0].value : "");
    if (res.count > 0) {
        *mod_rev_p = res.kvs[0].mod_rev;
    }
    orc_store_range_result_free(&res);
    if (text == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
    }
    return text;
}

/* The seq of rid in an ack record, or 0 */
static uint64_t orcd_mbox_acked_seq(const char *acked, const char *rid)
{
    size_t len = strlen(rid);
    const char *p;
    uint64_t seq = 0;

    for (p = acked; (p = strstr(p, rid)) != NULL; p += len) {
        if (((p == acked) || (p[-1] == ' ')) && (p[len] == ':')) {
            seq = strtoull(p + len + 1, NULL, 10);
            break;
        }
    }
    return seq;
}

/* The messages of c->id's mailbox from seq first on (keys only unless
 * values); -1 with the response filled */
static int orcd_mbox_range(orcd_ctx_t *c, uint64_t first, unsigned flags,
                           orc_store_range_result_t *res, size_t *plen_p)
{
    char prefix[ORCD_KEY_MAX], from[ORCD_KEY_MAX], *end;
    int status;

    orcd_key(prefix, c, "/mbox/%020" PRIu64 "/m/", c->id);
    orcd_key(from, c, "/mbox/%020" PRIu64 "/m/%020" PRIu64, c->id, first);
    end = orc_store_prefix_end(prefix);
    if (end == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        return -1;
    }
    status = orcd_range(c, from, end, flags, res);
    free(end);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return -1;
    }
    if (plen_p != NULL) {
        *plen_p = strlen(prefix);
    }
    return 0;
}

/* The seq of the pending message with rid, or 0; -1 on error (response
 * filled) */
static int orcd_mbox_pending_seq(orcd_ctx_t *c, const char *rid,
                                 uint64_t *seq_p)
{
    orc_store_range_result_t res;
    const char *r;
    size_t i, plen;
    json_t *m;

    *seq_p = 0;
    if (orcd_mbox_range(c, 1, ORC_STORE_RANGE_LATEST, &res, &plen)) {
        return -1;
    }
    for (i = 0; (*seq_p == 0) && (i < res.count); ++i) {
        m = json_loadb(res.kvs[i].value, res.kvs[i].value_len, 0, NULL);
        r = json_string_value(json_object_get(m, "rid"));
        if ((r != NULL) && !strcmp(r, rid)) {
            orc_util_parse_u64(res.kvs[i].key + plen, seq_p);
        }
        json_decref(m);
    }
    orc_store_range_result_free(&res);
    return 0;
}

/* A retried post whose message is in the mailbox, or was acknowledged
 * lately: answer its seq. 1 answered, 0 not found, -1 error. Read from the
 * newest state: the client never saw the revision of the first attempt
 * (its answer was lost), so its X-Orc-Min-Index does not cover it, and a
 * replica's cache may not have it yet. */
static int orcd_mbox_posted(orcd_ctx_t *c, const char *rid)
{
    uint64_t seq, mod_rev;
    char *acked;

    acked = orcd_mbox_acked(c, ORC_STORE_RANGE_LATEST, &mod_rev);
    if (acked == NULL) {
        return -1;
    }
    seq = orcd_mbox_acked_seq(acked, rid);
    free(acked);
    if ((seq == 0) && orcd_mbox_pending_seq(c, rid, &seq)) {
        return -1;
    }
    if (seq == 0) {
        return 0;
    }
    orcd_resp_json(c->resp, 201, json_pack("{sI}", "seq", (json_int_t)seq));
    return 1;
}

/* The stored message of a post, or NULL with the response filled */
static char *orcd_mbox_message(orcd_ctx_t *c)
{
    json_t *body, *payload = NULL, *msg;
    json_int_t from = 0;
    char *value     = NULL;

    body = orcd_body_json(c, c->cfg->mailbox_msg_max, 1);
    if (body == NULL) {
        return NULL;
    }
    if (json_unpack(body, "{s?I, s:o}", "from", &from, "body", &payload) ||
        !json_is_object(payload) || (from < 0)) {
        orcd_api_error(c->resp, 400, "bad_field",
                       "expected {\"from\": node id?, \"body\": {...}}");
        goto out_body;
    }
    msg = json_pack("{sIsO}", "from", from, "body", payload);
    if ((msg != NULL) && (c->req->rid != NULL) &&
        json_object_set_new(msg, "rid", json_string(c->req->rid))) {
        json_decref(msg);
        msg = NULL;
    }
    value = (msg != NULL) ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (value == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
    }
out_body:
    json_decref(body);
    return value;
}

/* Is there room in the mailbox? 0, or -1 with the response filled */
static int orcd_mbox_room(orcd_ctx_t *c)
{
    orc_store_range_result_t res;
    size_t queued;

    if (orcd_mbox_range(c, 1, ORC_STORE_RANGE_COUNT_ONLY, &res, NULL)) {
        return -1;
    }
    queued = res.total;
    orc_store_range_result_free(&res);
    if (queued >= c->cfg->mailbox_depth) {
        orcd_api_error(c->resp, 429, "mailbox_full",
                       "mailbox of node %" PRIu64 " holds %zu messages (limit "
                       "%u)",
                       c->id, queued, c->cfg->mailbox_depth);
        c->resp->retry_after = 1;
        return -1;
    }
    return orcd_quota(c, 1, strlen(c->job) + 80 + c->req->body_len);
}

/* Store the message under the next seq: the store's status, *seq_p */
static int orcd_mbox_store(orcd_ctx_t *c, const orc_store_kv_t *node,
                           const char *value, uint64_t *seq_p,
                           orc_store_txn_result_t *tres)
{
    char node_key[ORCD_KEY_MAX], seq_key[ORCD_KEY_MAX], msg_key[ORCD_KEY_MAX];
    orc_store_kv_t seq;
    pthread_mutex_t *lock;
    int status, attempt;

    orcd_key(node_key, c, "/nodes/%020" PRIu64, c->id);
    orcd_key(seq_key, c, "/mbox/%020" PRIu64 "/seq", c->id);
    lock = orcd_counter_lock(c, c->id);
    if (lock == NULL) {
        return ORC_STORE_EUNAVAIL;
    }
    for (attempt = 0; attempt < ORCD_TXN_RETRIES; ++attempt) {
        status = orcd_get(c, seq_key, &seq);
        if (status != ORC_STORE_OK) {
            break;
        }
        /* the message gets seq = version: the counter's version after this
         * put is version + 1, and last_seq = version - 1 */
        *seq_p = seq.version;
        orc_store_kv_free(&seq);
        orcd_key(msg_key, c, "/mbox/%020" PRIu64 "/m/%020" PRIu64, c->id,
                 *seq_p);
        {
            orc_store_cmp_t cmps[2] = {
                {seq_key, ORC_STORE_CMP_VERSION, ORC_STORE_CMP_EQUAL, *seq_p},
                {node_key, ORC_STORE_CMP_CREATE, ORC_STORE_CMP_EQUAL,
                 node->create_rev},
            };
            orc_store_op_t ops[2] = {
                {ORC_STORE_OP_PUT, seq_key, NULL, "", 0, node->lease},
                {ORC_STORE_OP_PUT, msg_key, NULL, value, strlen(value),
                 node->lease},
            };
            status = orcd_txn(c, cmps, 2, ops, 2, tres);
        }
        if ((status != ORC_STORE_ECOMPARE) || (tres->failed_cmp != 0)) {
            break;
        }
    }
    pthread_mutex_unlock(lock);
    return status;
}

void orcd_h_mailbox_post(orcd_ctx_t *c)
{
    const char *rid = orcd_retry_rid(c);
    orc_store_txn_result_t tres;
    orc_store_kv_t node;
    uint64_t seq = 0;
    char *value;
    int status;

    value = orcd_mbox_message(c);
    if (value == NULL) {
        return;
    }
    if (orcd_node_get(c, &node)) {
        goto out_value;
    }
    if (((rid != NULL) && orcd_mbox_posted(c, rid)) || orcd_mbox_room(c)) {
        goto out_node;
    }
    status = orcd_mbox_store(c, &node, value, &seq, &tres);
    if (status == ORC_STORE_OK) {
        orcd_resp_json(c->resp, 201, json_pack("{sI}", "seq", (json_int_t)seq));
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
}

/* The new ack record: "rid:seq" of the acknowledged messages that have a
 * rid, appended to the old record, the last ORCD_MBOX_KEEP of them kept */
static char *orcd_mbox_ack_record(const char *old,
                                  const orc_store_range_result_t *res,
                                  size_t plen)
{
    orcd_buf_t b = {0};
    const char *r, *p;
    uint64_t seq;
    size_t i, n = 0;
    json_t *m;

    b.cap  = strlen(old) + 128;
    b.data = malloc(b.cap);
    if (b.data == NULL) {
        return NULL;
    }
    b.data[0] = '\0';
    orcd_buf_printf(&b, "%s", old);
    for (i = 0; i < res->count; ++i) {
        m = json_loadb(res->kvs[i].value, res->kvs[i].value_len, 0, NULL);
        r = json_string_value(json_object_get(m, "rid"));
        if ((r != NULL) && !orc_util_parse_u64(res->kvs[i].key + plen, &seq)) {
            orcd_buf_printf(&b, "%s%s:%" PRIu64, (b.len > 0) ? " " : "", r,
                            seq);
        }
        json_decref(m);
    }
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    for (p = b.data; *p != '\0'; ++p) {
        n += (*p == ' ');
    }
    /* n + 1 entries: drop the oldest until ORCD_MBOX_KEEP are left */
    for (; n + 1 > ORCD_MBOX_KEEP; --n) {
        p = strchr(b.data, ' ');
        memmove(b.data, p + 1, strlen(p + 1) + 1);
    }
    return b.data;
}

/* Acknowledge every message <= after: delete those this store shows and
 * keep their request ids. 0, or -1 with the response filled */
static int orcd_mbox_ack(orcd_ctx_t *c, const orc_store_kv_t *node,
                         uint64_t after)
{
    char prefix[ORCD_KEY_MAX], ack_key[ORCD_KEY_MAX], node_key[ORCD_KEY_MAX];
    char upto[ORCD_KEY_MAX], *old, *record = NULL;
    orc_store_op_t ops[2];
    orc_store_cmp_t cmps[2];
    orc_store_range_result_t res;
    orc_store_txn_result_t tres;
    uint64_t ack_rev;
    int status;

    orcd_key(prefix, c, "/mbox/%020" PRIu64 "/m/", c->id);
    orcd_key(upto, c, "/mbox/%020" PRIu64 "/m/%020" PRIu64, c->id, after + 1);
    status = orcd_range(c, prefix, upto, 0, &res);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return -1;
    }
    if (res.count == 0) {
        orc_store_range_result_free(&res);
        return 0; /* acknowledged before */
    }
    old = orcd_mbox_acked(c, 0, &ack_rev);
    if (old != NULL) {
        record = orcd_mbox_ack_record(old, &res, strlen(prefix));
        free(old);
    }
    if (record == NULL) {
        orc_store_range_result_free(&res);
        if (c->resp->status == 0) {
            orcd_api_error(c->resp, 500, "internal", "out of memory");
        }
        return -1;
    }
    /* one range: every message <= after was posted before the client saw
     * after (seqs are taken in order), so the read above holds them all */
    orcd_key(ack_key, c, "/mbox/%020" PRIu64 "/ack", c->id);
    orcd_key(node_key, c, "/nodes/%020" PRIu64, c->id);
    ops[0] =
        (orc_store_op_t){ORC_STORE_OP_DELETE_RANGE, prefix, upto, NULL, 0, 0};
    ops[1]  = (orc_store_op_t){ORC_STORE_OP_PUT, ack_key,        NULL,
                               record,           strlen(record), node->lease};
    cmps[0] = (orc_store_cmp_t){node_key, ORC_STORE_CMP_CREATE,
                                ORC_STORE_CMP_EQUAL, node->create_rev};
    cmps[1] = (orc_store_cmp_t){ack_key, ORC_STORE_CMP_MOD, ORC_STORE_CMP_EQUAL,
                                ack_rev};
    status  = orcd_txn(c, cmps, 2, ops, 2, &tres);
    free(record);
    orc_store_range_result_free(&res);
    if ((status == ORC_STORE_ENOENT) ||
        ((status == ORC_STORE_ECOMPARE) && (tres.failed_cmp == 0))) {
        orcd_node_missing(c);
        return -1;
    }
    /* ECOMPARE on the record: another receive acknowledged at the same
     * time; what it left is deleted by the next one */
    if ((status != ORC_STORE_OK) && (status != ORC_STORE_ECOMPARE)) {
        orcd_resp_store_error(c->resp, status);
        return -1;
    }
    return 0;
}

/* The messages of a range as the answer's list (without their rid) */
static json_t *orcd_mbox_list(const orc_store_range_result_t *res, size_t plen,
                              uint64_t *last_p)
{
    json_t *msgs = json_array(), *m;
    uint64_t seq;
    size_t i;

    for (i = 0; (msgs != NULL) && (i < res->count); ++i) {
        if (orc_util_parse_u64(res->kvs[i].key + plen, &seq)) {
            continue;
        }
        m = json_loadb(res->kvs[i].value, res->kvs[i].value_len, 0, NULL);
        if (m != NULL) {
            json_object_del(m, "rid");
        }
        if ((m == NULL) ||
            json_object_set_new(m, "seq", json_integer((json_int_t)seq)) ||
            json_array_append_new(msgs, m)) {
            json_decref(m);
            json_decref(msgs);
            return NULL;
        }
        *last_p = seq;
    }
    return msgs;
}

void orcd_h_mailbox_get(orcd_ctx_t *c)
{
    char watch[ORCD_KEY_MAX], *watch_end;
    orc_store_range_result_t res;
    orc_store_kv_t node;
    uint64_t after = 0, last;
    json_t *msgs;
    double wait;
    size_t plen;

    if (orcd_query_u64(c, "after", &after, NULL) || orcd_query_wait(c, &wait)) {
        return;
    }
    if (after == UINT64_MAX) {
        orcd_api_error(c->resp, 400, "bad_query", "after is too large");
        return;
    }
    if (orcd_node_get(c, &node)) {
        return;
    }
    if (((after > 0) && orcd_mbox_ack(c, &node, after)) ||
        orcd_mbox_range(c, after + 1, 0, &res, &plen)) {
        orc_store_kv_free(&node);
        return;
    }
    orc_store_kv_free(&node);
    last = after;
    msgs = orcd_mbox_list(&res, plen, &last);
    if (msgs == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_res;
    }
    orcd_resp_json(c->resp, 200,
                   json_pack("{sosI}", "messages", msgs, "last_seq",
                             (json_int_t)last));
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
            free(watch_end);
        }
    }
out_res:
    orc_store_range_result_free(&res);
}
