/*
 * orcd API: mailbox acknowledgements. Messages <= S of node F's mailbox are
 * deleted by
 *  - a receive with after=S (GET .../nodes/F/mailbox?after=S): its own
 *    transaction, when the mailbox it read still holds such messages (the
 *    receive reads the mailbox once, from its first message: what it
 *    acknowledges and what it answers);
 *  - a post from F carrying "ack": {"after": S, "index": R} (POST
 *    .../nodes/N/mailbox with "from": F): the delete joins the post's own
 *    transaction, so that a pairing costs one store write per message and
 *    the next receive with after=S finds nothing left to delete.
 * A post's ack is applied only while node F is the one whose registration
 * answered index R (its record's create revision, compared in the
 * transaction): an id registered again (orcd restarted without its state)
 * keeps its messages. An ack past the last seq F's mailbox issued is
 * refused (400): it would acknowledge messages not posted yet, and orcd
 * cannot tell which issued ones were read. Both are authorised as the
 * receive is: by the job's token.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* The keys of the messages <= after of node's mailbox: [first, upto), two
 * ORCD_KEY_MAX buffers */
static void orcd_mbox_acked_keys(orcd_ctx_t *c, uint64_t node, uint64_t after,
                                 char *first, char *upto)
{
    orcd_key(first, c, "/mbox/%020" PRIu64 "/m/", node);
    orcd_key(upto, c, "/mbox/%020" PRIu64 "/m/%020" PRIu64, node, after + 1);
}

int orcd_mbox_ack(orcd_ctx_t *c, const orc_store_kv_t *node, uint64_t after)
{
    char first[ORCD_KEY_MAX], node_key[ORCD_KEY_MAX], upto[ORCD_KEY_MAX];
    orc_store_txn_result_t tres;
    orc_store_op_t op;
    orc_store_cmp_t cmp;
    int status;

    orcd_mbox_acked_keys(c, c->id, after, first, upto);
    /* one range: every message <= after was posted before the client saw
     * after (seqs are taken in order) */
    orcd_key(node_key, c, "/nodes/%020" PRIu64, c->id);
    op  = (orc_store_op_t){ORC_STORE_OP_DELETE_RANGE, first, upto, NULL, 0, 0};
    cmp = (orc_store_cmp_t){node_key, ORC_STORE_CMP_CREATE, ORC_STORE_CMP_EQUAL,
                            node->create_rev};
    status = orcd_txn(c, &cmp, 1, &op, 1, &tres);
    if ((status == ORC_STORE_ENOENT) || (status == ORC_STORE_ECOMPARE)) {
        orcd_node_missing(c);
        return -1;
    }
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return -1;
    }
    return 0;
}

int orcd_mbox_ack_parse(orcd_ctx_t *c, json_t *ack_json, json_int_t from,
                        orcd_mbox_ack_t *ack)
{
    json_int_t after = -1, index = 0;

    memset(ack, 0, sizeof(*ack));
    if ((ack_json == NULL) || json_is_null(ack_json)) {
        return 0;
    }
    if (json_unpack(ack_json, "{s:I, s:I}", "after", &after, "index", &index) ||
        (after < 0) || (index <= 0) || (from <= 0)) {
        orcd_api_error(c->resp, 400, "bad_field",
                       "expected \"ack\": {\"after\": seq >= 0, \"index\": "
                       "the index of the registration of \"from\" (> 0)}, "
                       "with \"from\" > 0");
        return -1;
    }
    ack->given = 1;
    ack->node  = (uint64_t)from;
    ack->after = (uint64_t)after;
    ack->index = (uint64_t)index;
    return 0;
}

/* The last seq node's mailbox issued, into *last_p (0: none, or the node
 * is gone). 0, or -1 with the response filled. */
static int orcd_mbox_last_seq(orcd_ctx_t *c, uint64_t node, uint64_t *last_p)
{
    char key[ORCD_KEY_MAX];
    orc_store_kv_t seq;
    int status;

    orcd_key(key, c, "/mbox/%020" PRIu64 "/seq", node);
    status  = orcd_get(c, key, &seq);
    *last_p = 0;
    if (status == ORC_STORE_ENOENT) {
        return 0;
    }
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return -1;
    }
    *last_p = (seq.version > 0) ? seq.version - 1 : 0;
    orc_store_kv_free(&seq);
    return 0;
}

/* Is ack->node the node registered at ack->index? 1 yes, 0 no (gone, or
 * its id registered again), -1 with the response filled */
static int orcd_mbox_ack_same_node(orcd_ctx_t *c, orcd_mbox_ack_t *ack)
{
    orc_store_kv_t node;
    int status, same;

    orcd_key(ack->node_key, c, "/nodes/%020" PRIu64, ack->node);
    status = orcd_get(c, ack->node_key, &node);
    if (status == ORC_STORE_ENOENT) {
        return 0;
    }
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return -1;
    }
    same = (node.create_rev == ack->index);
    orc_store_kv_free(&node);
    return same;
}

int orcd_mbox_ack_prepare(orcd_ctx_t *c, orcd_mbox_ack_t *ack)
{
    uint64_t last;
    int same;

    ack->active = 0;
    if (!ack->given || (ack->after == 0)) {
        return 0;
    }
    same = orcd_mbox_ack_same_node(c, ack);
    if (same <= 0) {
        return same;
    }
    if (orcd_mbox_last_seq(c, ack->node, &last)) {
        return -1;
    }
    if (ack->after > last) {
        orcd_api_error(c->resp, 400, "bad_field",
                       "ack.after %" PRIu64 " is past the last message (seq "
                       "%" PRIu64 ") of node %" PRIu64 "'s mailbox",
                       ack->after, last, ack->node);
        return -1;
    }
    /* the delete joins a write the post makes anyway: no need to count
     * what is left first (a delete of nothing deletes 0) */
    orcd_mbox_acked_keys(c, ack->node, ack->after, ack->first, ack->upto);
    ack->active = 1;
    return 0;
}

void orcd_mbox_ack_txn(const orcd_mbox_ack_t *ack, orc_store_cmp_t *cmp,
                       orc_store_op_t *op)
{
    *cmp = (orc_store_cmp_t){ack->node_key, ORC_STORE_CMP_CREATE,
                             ORC_STORE_CMP_EQUAL, ack->index};
    *op  = (orc_store_op_t){
         ORC_STORE_OP_DELETE_RANGE, ack->first, ack->upto, NULL, 0, 0};
}
