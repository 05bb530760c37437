/*
 * orcd API: Idempotency-Keys. A POST that creates something (a node, a
 * mailbox message) creates /jobs/J/rid/RID in the same transaction, on
 * condition that it does not exist: a retried request then finds what its
 * first attempt did instead of doing it again, also when that attempt's
 * transaction was still in flight in etcd when the retry arrived.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api_int.h"

#include <string.h>

int orcd_rid_valid(const char *rid)
{
    size_t len = strlen(rid);

    return (len > 0) && (len <= ORCD_RID_MAX) &&
           (strspn(rid, ORCD_RID_CHARS) == len);
}

void orcd_rid_txn(orcd_ctx_t *c, char *key, const char *value, uint64_t lease,
                  orc_store_cmp_t *cmp, orc_store_op_t *op)
{
    orcd_key(key, c, "/rid/%s", c->req->rid);
    *cmp = (orc_store_cmp_t){key, ORC_STORE_CMP_CREATE, ORC_STORE_CMP_EQUAL, 0};
    *op  = (orc_store_op_t){ORC_STORE_OP_PUT, key,  NULL, value,
                            strlen(value),    lease};
}

int orcd_rid_find(orcd_ctx_t *c, json_t **rec_p, uint64_t *rev_p)
{
    char key[ORCD_KEY_MAX];
    orc_store_range_result_t res;
    int status;

    orcd_key(key, c, "/rid/%s", c->req->rid);
    status = orcd_range(c, key, NULL, ORC_STORE_RANGE_LATEST, &res);
    if (status != ORC_STORE_OK) {
        orcd_resp_store_error(c->resp, status);
        return -1;
    }
    *rec_p = (res.count > 0)
                 ? json_loadb(res.kvs[0].value, res.kvs[0].value_len, 0, NULL)
                 : NULL;
    *rev_p = (res.count > 0) ? res.kvs[0].mod_rev : 0;
    orc_store_range_result_free(&res);
    if ((*rec_p != NULL) && !json_is_object(*rec_p)) {
        json_decref(*rec_p);
        *rec_p = NULL;
    }
    return (*rec_p != NULL) ? 1 : 0;
}

int orcd_rid_lease(orcd_ctx_t *c, uint64_t *lease_p)
{
    orcd_api_t *api = c->api;
    uint64_t now    = orc_util_now_ms();
    int status      = ORC_STORE_OK;
    int64_t granted;

    pthread_mutex_lock(&api->rid_lock);
    if ((api->rid_lease == 0) ||
        (now - api->rid_lease_ms >= ORCD_RID_TTL * 1000 / 2)) {
        status            = !orcd_call_fits(c)
                                ? ORC_STORE_EUNAVAIL
                                : c->store->ops->lease_grant(c->store, ORCD_RID_TTL,
                                                             &api->rid_lease, &granted);
        api->rid_lease_ms = now;
        if (status != ORC_STORE_OK) {
            api->rid_lease = 0;
        }
    }
    *lease_p = api->rid_lease;
    pthread_mutex_unlock(&api->rid_lock);
    return status;
}

void orcd_rid_lease_lost(orcd_ctx_t *c, uint64_t lease)
{
    pthread_mutex_lock(&c->api->rid_lock);
    if (c->api->rid_lease == lease) {
        c->api->rid_lease = 0;
    }
    pthread_mutex_unlock(&c->api->rid_lock);
}
