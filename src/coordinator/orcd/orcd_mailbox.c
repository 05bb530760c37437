/*
 * orcd API: per-node mailboxes (post; receive with a cursor, blocking).
 *
 * Messages are /mbox/ID/m/SEQ, SEQ from the counter /mbox/ID/seq. A receive
 * with after=S acknowledges every message <= S: they are deleted; so does a
 * post from ID that carries "ack" (orcd_mailbox_ack.c). A post
 * with an Idempotency-Key leaves {"node", "seq"} in /rid/RID for
 * ORCD_RID_TTL / 2 s at least (orcd_rid.c), so that a retried post is
 * recognised, also once its first attempt was delivered and acknowledged.
 *
 * Reads, each of which may wait for the etcd store's cache: a post reads
 * the destination's node record, then (under the mailbox's counter lock)
 * its messages' keys and counter in one range, the poster's record and
 * counter when it carries an ack, and nothing more unless it loses a race
 * for the seq; a receive reads the node record and the whole mailbox in one
 * range (what it acknowledges and what it answers), and the mailbox again
 * only after an ack of its own had something to delete.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* A post with this Idempotency-Key was made (by an earlier attempt):
 * answer its seq. 1 answered, 0 not found, -1 with the response filled. */
static int orcd_mbox_posted(orcd_ctx_t *c)
{
    json_int_t node, seq;
    uint64_t rev;
    json_t *rec;
    int found = orcd_rid_find(c, &rec, &rev);

    if (found != 1) {
        return found;
    }
    if (json_unpack(rec, "{s:I, s:I}", "node", &node, "seq", &seq) ||
        ((uint64_t)node != c->id)) {
        orcd_api_error(c->resp, 409, "conflict",
                       "Idempotency-Key %s belongs to another request",
                       c->req->rid);
    } else {
        orcd_resp_json(c->resp, 201, json_pack("{sI}", "seq", seq));
    }
    json_decref(rec);
    return 1;
}

/* The stored message of a post (and its ack, if any), or NULL with the
 * response filled */
static char *orcd_mbox_message(orcd_ctx_t *c, orcd_mbox_ack_t *ack)
{
    json_t *body, *payload = NULL, *ack_json = NULL, *msg;
    json_int_t from = 0;
    char *value     = NULL;

    body = orcd_body_json(c, c->cfg->mailbox_msg_max, 1);
    if (body == NULL) {
        return NULL;
    }
    if (json_unpack(body, "{s?I, s:o, s?o}", "from", &from, "body", &payload,
                    "ack", &ack_json) ||
        !json_is_object(payload) || (from < 0)) {
        orcd_api_error(c->resp, 400, "bad_field",
                       "expected {\"from\": node id?, \"body\": {...}, "
                       "\"ack\": {...}?}");
        goto out_body;
    }
    if (orcd_mbox_ack_parse(c, ack_json, from, ack)) {
        goto out_body;
    }
    msg   = json_pack("{sIsO}", "from", from, "body", payload);
    value = (msg != NULL) ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (value == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
    }
out_body:
    json_decref(body);
    return value;
}

/* c->id's mailbox as a post sees it, in one read of its keys: how many
 * messages it holds, and its counter's version (the next seq) */
typedef struct orcd_mbox_state {
    size_t queued;
    uint64_t version;
} orcd_mbox_state_t;

/* Read c->id's mailbox: its messages and its counter, the key after them
 * ("m/..." < "seq"). The store's status (ENOENT: no counter, the node is
 * gone). */
static int orcd_mbox_state(orcd_ctx_t *c, orcd_mbox_state_t *st)
{
    char from[ORCD_KEY_MAX], seq_key[ORCD_KEY_MAX], *end;
    orc_store_range_result_t res;
    const orc_store_kv_t *last;
    int status;

    orcd_key(from, c, "/mbox/%020" PRIu64 "/m/%020" PRIu64, c->id, (uint64_t)1);
    orcd_key(seq_key, c, "/mbox/%020" PRIu64 "/seq", c->id);
    end = orc_store_prefix_end(seq_key);
    if (end == NULL) {
        return ORC_STORE_ENOMEM;
    }
    status = orcd_range(c, from, end, ORC_STORE_RANGE_KEYS_ONLY, &res);
    free(end);
    if (status != ORC_STORE_OK) {
        return status;
    }
    last = (res.count > 0) ? &res.kvs[res.count - 1] : NULL;
    if ((last == NULL) || strcmp(last->key, seq_key)) {
        status = ORC_STORE_ENOENT;
    } else {
        st->queued  = res.count - 1;
        st->version = last->version;
    }
    orc_store_range_result_free(&res);
    return status;
}

/* Is there room in the mailbox? 0, or -1 with the response filled */
static int orcd_mbox_room(orcd_ctx_t *c, const orcd_mbox_state_t *st)
{
    if (st->queued >= c->cfg->mailbox_depth) {
        orcd_api_error(c->resp, 429, "mailbox_full",
                       "mailbox of node %" PRIu64 " holds %zu messages (limit "
                       "%u)",
                       c->id, st->queued, c->cfg->mailbox_depth);
        c->resp->retry_after = 1;
        return -1;
    }
    return orcd_quota(c, 1, strlen(c->job) + 80 + c->req->body_len);
}

/* Store the message under the next seq (st: the mailbox as last read;
 * read again after a lost race), and the request's /rid/ key, and
 * delete what an active ack acknowledges: the store's status, *seq_p; on
 * ECOMPARE, tres->failed_cmp is 0 when another attempt of this request
 * stored it first, 1 when the counter moved too often, 2 when the node is
 * gone. An ack whose node changed meanwhile is left out (ack->active
 * cleared) and the message stored without it. The caller holds the
 * mailbox's counter lock. */
static int orcd_mbox_store(orcd_ctx_t *c, const orc_store_kv_t *node,
                           const char *value, orcd_mbox_ack_t *ack,
                           const orcd_mbox_state_t *st, uint64_t *seq_p,
                           orc_store_txn_result_t *tres)
{
    char node_key[ORCD_KEY_MAX], seq_key[ORCD_KEY_MAX], msg_key[ORCD_KEY_MAX];
    char rid_key[ORCD_KEY_MAX], rid_value[96];
    const size_t r = (c->req->rid != NULL) ? 1 : 0;
    orc_store_cmp_t cmps[4];
    orc_store_op_t ops[4];
    size_t a;
    uint64_t rid_lease  = 0;
    int lease_lost_once = 0;
    orc_store_kv_t seq;
    int status, attempt;

    orcd_key(node_key, c, "/nodes/%020" PRIu64, c->id);
    orcd_key(seq_key, c, "/mbox/%020" PRIu64 "/seq", c->id);
    for (attempt = 0; attempt < ORCD_TXN_RETRIES; ++attempt) {
        status = r ? orcd_rid_lease(c, &rid_lease) : ORC_STORE_OK;
        if ((status == ORC_STORE_OK) && (attempt == 0)) {
            *seq_p = st->version;
        } else if (status == ORC_STORE_OK) {
            status = orcd_get(c, seq_key, &seq);
            if (status == ORC_STORE_OK) {
                *seq_p = seq.version;
                orc_store_kv_free(&seq);
            }
        }
        if (status != ORC_STORE_OK) {
            break;
        }
        /* the message gets seq = version: the counter's version after this
         * put is version + 1, and last_seq = version - 1 */
        orcd_key(msg_key, c, "/mbox/%020" PRIu64 "/m/%020" PRIu64, c->id,
                 *seq_p);
        cmps[0] = (orc_store_cmp_t){seq_key, ORC_STORE_CMP_VERSION,
                                    ORC_STORE_CMP_EQUAL, *seq_p};
        cmps[1] = (orc_store_cmp_t){node_key, ORC_STORE_CMP_CREATE,
                                    ORC_STORE_CMP_EQUAL, node->create_rev};
        ops[0]  = (orc_store_op_t){ORC_STORE_OP_PUT, seq_key, NULL, "", 0,
                                   node->lease};
        ops[1]  = (orc_store_op_t){ORC_STORE_OP_PUT, msg_key,    NULL, value,
                                   strlen(value),    node->lease};
        if (r) {
            /* the rid compare goes first: when it fails, it is the one
             * failed_cmp names */
            cmps[2] = cmps[1];
            cmps[1] = cmps[0];
            snprintf(rid_value, sizeof(rid_value),
                     "{\"node\":%" PRIu64 ",\"seq\":%" PRIu64 "}", c->id,
                     *seq_p);
            orcd_rid_txn(c, rid_key, rid_value, rid_lease, &cmps[0], &ops[2]);
        }
        a = ack->active ? 1 : 0; /* its compare is the last */
        if (a) {
            orcd_mbox_ack_txn(ack, &cmps[2 + r], &ops[2 + r]);
        }
        status = orcd_txn(c, cmps, 2 + r + a, ops, 2 + r + a, tres);
        if ((status == ORC_STORE_ENOENT) && r && !lease_lost_once) {
            /* the node's lease or the rid lease is gone: try once with a
             * fresh rid lease before taking it for the node's */
            orcd_rid_lease_lost(c, rid_lease);
            lease_lost_once = 1;
            continue;
        }
        if (status == ORC_STORE_ECOMPARE) {
            tres->failed_cmp += 1 - r; /* as if the rid compare were there */
        }
        if ((status == ORC_STORE_ECOMPARE) && (tres->failed_cmp == 3)) {
            ack->active = 0; /* the poster's node changed: no ack */
            continue;
        }
        if ((status != ORC_STORE_ECOMPARE) || (tres->failed_cmp != 1)) {
            break;
        }
    }
    return status;
}

/* The answer to a stored post: its seq, and how many messages its ack
 * deleted (when it carried one) */
static void orcd_mbox_posted_now(orcd_ctx_t *c, uint64_t seq,
                                 const orcd_mbox_ack_t *ack,
                                 const orc_store_txn_result_t *tres)
{
    json_t *o = json_pack("{sI}", "seq", (json_int_t)seq);

    if ((o != NULL) && ack->given) {
        json_object_set_new(o, "acked",
                            json_integer(ack->active ? (json_int_t)tres->deleted
                                                     : 0));
    }
    orcd_resp_json(c->resp, 201, o);
}

/* Make the post, under the mailbox's counter lock: read the mailbox once,
 * check its room and the ack, store. The store's status, or 1 with the
 * response filled. */
static int orcd_mbox_post_locked(orcd_ctx_t *c, const orc_store_kv_t *node,
                                 const char *value, orcd_mbox_ack_t *ack,
                                 uint64_t *seq_p, orc_store_txn_result_t *tres)
{
    orcd_mbox_state_t st;
    int status;

    memset(tres, 0, sizeof(*tres));
    status = orcd_mbox_state(c, &st);
    if (status != ORC_STORE_OK) {
        return status;
    }
    if (orcd_mbox_room(c, &st) || orcd_mbox_ack_prepare(c, ack)) {
        return 1;
    }
    return orcd_mbox_store(c, node, value, ack, &st, seq_p, tres);
}

void orcd_h_mailbox_post(orcd_ctx_t *c)
{
    orc_store_txn_result_t tres;
    orcd_mbox_ack_t ack;
    orc_store_kv_t node;
    orcd_counter_t *lock;
    uint64_t seq = 0;
    char *value;
    int status;

    value = orcd_mbox_message(c, &ack);
    if (value == NULL) {
        return;
    }
    if (orcd_node_get(c, &node)) {
        goto out_value;
    }
    if ((orcd_retry_rid(c) != NULL) && orcd_mbox_posted(c)) {
        goto out_node;
    }
    lock   = orcd_counter_lock(c, c->id);
    status = (lock != NULL)
                 ? orcd_mbox_post_locked(c, &node, value, &ack, &seq, &tres)
                 : ORC_STORE_EUNAVAIL;
    if (lock != NULL) {
        orcd_counter_unlock(c, lock);
    }
    if (status == 1) {
        /* answered (room, quota or ack) */
    } else if (status == ORC_STORE_OK) {
        orcd_mbox_posted_now(c, seq, &ack, &tres);
    } else if ((status == ORC_STORE_ECOMPARE) && (tres.failed_cmp == 0) &&
               (orcd_mbox_posted(c) != 0)) {
        /* answered as the attempt that stored it (or the error filled) */
    } else if ((status == ORC_STORE_ENOENT) ||
               ((status == ORC_STORE_ECOMPARE) && (tres.failed_cmp == 2))) {
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

/* Does the range hold a message <= after (its first, as keys sort by
 * seq)? */
static int orcd_mbox_holds_acked(const orc_store_range_result_t *res,
                                 size_t plen, uint64_t after)
{
    uint64_t seq;

    return (res->count > 0) &&
           !orc_util_parse_u64(res->kvs[0].key + plen, &seq) && (seq <= after);
}

/* The messages > after of a range as the answer's list (without the "rid"
 * that messages stored by earlier orcd versions carry) */
static json_t *orcd_mbox_list(const orc_store_range_result_t *res, size_t plen,
                              uint64_t after, uint64_t *last_p)
{
    json_t *msgs = json_array(), *m;
    uint64_t seq;
    size_t i;

    for (i = 0; (msgs != NULL) && (i < res->count); ++i) {
        if (orc_util_parse_u64(res->kvs[i].key + plen, &seq) ||
            (seq <= after)) {
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

/* The mailbox's messages > after into *res, once those <= after it still
 * held are acknowledged: one read of the whole mailbox, and when it holds
 * messages <= after, the ack's write and a read after it. 0, or -1 with
 * the response filled. */
static int orcd_mbox_receive(orcd_ctx_t *c, uint64_t after,
                             orc_store_range_result_t *res, size_t *plen_p)
{
    orc_store_kv_t node;
    int ret = -1;

    if (orcd_node_get(c, &node)) {
        return -1;
    }
    if (orcd_mbox_range(c, 1, 0, res, plen_p)) {
        goto out;
    }
    if (orcd_mbox_holds_acked(res, *plen_p, after)) {
        orc_store_range_result_free(res);
        if (orcd_mbox_ack(c, &node, after) ||
            orcd_mbox_range(c, after + 1, 0, res, plen_p)) {
            goto out;
        }
    }
    ret = 0;
out:
    orc_store_kv_free(&node);
    return ret;
}

void orcd_h_mailbox_get(orcd_ctx_t *c)
{
    char watch[ORCD_KEY_MAX], *watch_end;
    orc_store_range_result_t res;
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
    if (orcd_mbox_receive(c, after, &res, &plen)) {
        return;
    }
    last = after;
    msgs = orcd_mbox_list(&res, plen, after, &last);
    if (msgs == NULL) {
        orcd_api_error(c->resp, 500, "internal", "out of memory");
        goto out_res;
    }
    orcd_resp_json(c->resp, 200,
                   json_pack("{sosI}", "messages", msgs, "last_seq",
                             (json_int_t)last));
    c->resp->has_index = 1;
    c->resp->index     = res.revision;
    if (c->req->may_block && (last == after) && (wait > 0) &&
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
