/*
 * orc store on etcd v3 (see orc_store_etcd.h): keys, transactions and leases
 * on etcd; reads and watches from the cache (orc_store_etcd_watch.c feeds
 * it).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_store_etcd_int.h"
#include "orc_store_replica.h"
#include "coordinator/common/orc_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ keys */

/* The etcd key of key (prefixed), base64 in JSON; key "" is the start of
 * the store's space */
json_t *orc_store_etcd_key(orc_store_etcd_t *s, const char *key)
{
    size_t klen = (key[0] == '\0') ? 1 : strlen(key);
    char *full  = malloc(s->plen + klen + 1);
    json_t *j;

    if (full == NULL) {
        return NULL;
    }
    memcpy(full, s->prefix, s->plen);
    memcpy(full + s->plen, (key[0] == '\0') ? "/" : key, klen);
    j = orc_etcd_bytes(full, s->plen + klen);
    free(full);
    return j;
}

/* The etcd range_end of range_end; "\0" (the whole keyspace) is the end of
 * the store's space */
static json_t *orc_store_etcd_end(orc_store_etcd_t *s, const char *range_end)
{
    return orc_store_etcd_key(s, (range_end[0] == '\0') ? "0" : range_end);
}

int orc_store_etcd_valid_key(const char *key)
{
    return (key != NULL) && ((key[0] == '/') || (key[0] == '\0'));
}

/* An etcd kv as a store kv (prefix stripped): 0, or -1 if it is not one of
 * the store's keys or malformed */
int orc_store_etcd_kv(orc_store_etcd_t *s, json_t *o, int with_value,
                      orc_store_kv_t *kv)
{
    size_t klen;
    char *full;

    memset(kv, 0, sizeof(*kv));
    full = orc_etcd_get_bytes(o, "key", &klen);
    if ((full == NULL) || (klen <= s->plen) ||
        memcmp(full, s->prefix, s->plen) || (full[s->plen] != '/') ||
        (memchr(full, '\0', klen) != NULL)) {
        free(full);
        return -1;
    }
    kv->key = strdup(full + s->plen);
    free(full);
    kv->value = with_value ? orc_etcd_get_bytes(o, "value", &kv->value_len)
                           : calloc(1, 1);
    if ((kv->key == NULL) || (kv->value == NULL)) {
        orc_store_kv_free(kv);
        return -1;
    }
    kv->create_rev = orc_etcd_get_u64(o, "create_revision");
    kv->mod_rev    = orc_etcd_get_u64(o, "mod_revision");
    kv->version    = orc_etcd_get_u64(o, "version");
    kv->lease      = orc_etcd_get_u64(o, "lease");
    return 0;
}

/* ---------------------------------------------------------------- reads */

/* The newest mod_revision of an array of etcd kvs, or rev if older */
uint64_t orc_store_etcd_max_mod(json_t *kvs, uint64_t rev)
{
    uint64_t mod;
    json_t *kv;
    size_t i;

    json_array_foreach(kvs, i, kv)
    {
        mod = orc_etcd_get_u64(kv, "mod_revision");
        rev = (mod > rev) ? mod : rev;
    }
    return rev;
}

/* -------------------------------------------------------- stage timings */

void orc_store_etcd_stage_add(orc_store_etcd_t *s, orc_store_stage_id_t id,
                              uint64_t us)
{
    orc_store_etcd_stage_t *st = &s->stages[id];
    size_t b;

    for (b = 0; (b < ORC_STORE_STAGE_BUCKETS - 1) &&
                (us > orc_store_stage_bounds_us[b]);
         ++b) {
    }
    atomic_fetch_add_explicit(&st->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->sum_us, us, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->buckets[b], 1, memory_order_relaxed);
}

/* A write answered at rev: time its way to the cache, unless another one
 * is timed already (0 when the cache has it already) */
static void orc_store_etcd_probe(orc_store_etcd_t *s, uint64_t rev)
{
    pthread_mutex_lock(&s->probe_lock);
    if (s->probe_rev == 0) {
        if (s->cache->ops->revision(s->cache) >= rev) {
            orc_store_etcd_stage_add(s, ORC_STORE_STAGE_WATCH, 0);
        } else {
            s->probe_rev = rev;
            s->probe_ns  = orc_util_now_ns();
        }
    }
    pthread_mutex_unlock(&s->probe_lock);
}

void orc_store_etcd_probe_reached(orc_store_etcd_t *s, uint64_t rev)
{
    pthread_mutex_lock(&s->probe_lock);
    if ((s->probe_rev != 0) && (rev >= s->probe_rev)) {
        orc_store_etcd_stage_add(s, ORC_STORE_STAGE_WATCH,
                                 (orc_util_now_ns() - s->probe_ns) / 1000);
        s->probe_rev = 0;
    }
    pthread_mutex_unlock(&s->probe_lock);
}

static void orc_store_etcd_stages(orc_store_etcd_t *s, orc_store_stats_t *st)
{
    size_t i, b;

    for (i = 0; i < ORC_STORE_STAGES; ++i) {
        st->stages[i].count =
            atomic_load_explicit(&s->stages[i].count, memory_order_relaxed);
        st->stages[i].sum_us =
            atomic_load_explicit(&s->stages[i].sum_us, memory_order_relaxed);
        for (b = 0; b < ORC_STORE_STAGE_BUCKETS; ++b) {
            st->stages[i].buckets[b] =
                atomic_load_explicit(&s->stages[i].buckets[b],
                                     memory_order_relaxed);
        }
    }
}

/* ---------------------------------------------------------------- writes */

/* A write of this store happened at rev: later reads see it */
static void orc_store_etcd_wrote(orc_store_etcd_t *s, uint64_t rev)
{
    uint64_t cur = atomic_load(&s->written);

    orc_store_etcd_probe(s, rev);
    while ((rev > cur) &&
           !atomic_compare_exchange_weak(&s->written, &cur, rev)) {
    }
}

/* A range read on etcd itself (linearizable) */
int orc_store_etcd_range_direct(orc_store_etcd_t *s, const char *key,
                                const char *range_end, unsigned flags,
                                size_t limit, orc_store_range_result_t *res,
                                uint64_t *etcd_rev_p)
{
    uint64_t cached = s->cache->ops->revision(s->cache);
    json_t *body, *reply, *kvs, *o;
    size_t i, n = 0;
    int status;

    memset(res, 0, sizeof(*res));
    body = json_object();
    if ((body == NULL) ||
        json_object_set_new(body, "key", orc_store_etcd_key(s, key)) ||
        ((range_end != NULL) &&
         json_object_set_new(body, "range_end",
                             orc_store_etcd_end(s, range_end))) ||
        ((limit > 0) &&
         json_object_set_new(body, "limit", json_integer((json_int_t)limit))) ||
        ((flags & ORC_STORE_RANGE_COUNT_ONLY) &&
         json_object_set_new(body, "count_only", json_true())) ||
        ((flags & ORC_STORE_RANGE_KEYS_ONLY) &&
         json_object_set_new(body, "keys_only", json_true()))) {
        json_decref(body);
        return ORC_STORE_ENOMEM;
    }
    status = orc_etcd_call(s->etcd, "/v3/kv/range", body, 1, &reply);
    if (status != ORC_STORE_OK) {
        return status;
    }
    kvs        = json_object_get(reply, "kvs");
    res->total = orc_etcd_get_u64(reply, "count");
    if (etcd_rev_p != NULL) {
        *etcd_rev_p =
            orc_etcd_get_u64(json_object_get(reply, "header"), "revision");
    }
    /* The read's revision as the cache knows revisions: etcd's own may be
     * another deployment's write, which the cache never reaches. The
     * cache's revision from before the read, or a newer one the read
     * shows: never the cache's revision after the read, which may hold a
     * change the read missed (a watch from after it would never fire for
     * that change). */
    res->revision = orc_store_etcd_max_mod(kvs, cached);
    if (json_array_size(kvs) > 0) {
        res->kvs = calloc(json_array_size(kvs), sizeof(*res->kvs));
        if (res->kvs == NULL) {
            json_decref(reply);
            return ORC_STORE_ENOMEM;
        }
    }
    json_array_foreach(kvs, i, o)
    {
        if (orc_store_etcd_kv(s, o, !(flags & ORC_STORE_RANGE_KEYS_ONLY),
                              &res->kvs[n]) == 0) {
            ++n;
        }
    }
    res->count = n;
    json_decref(reply);
    return ORC_STORE_OK;
}

/* Wait for the cache to reach rev (bounded): 1 reached, 0 not */
static int orc_store_etcd_cache_at(orc_store_etcd_t *s, uint64_t rev)
{
    uint64_t t0 = orc_util_now_ns();
    int reached = orc_store_mem_wait_rev(s->cache, rev, s->cache_wait_ms);

    orc_store_etcd_stage_add(s, ORC_STORE_STAGE_CACHE,
                             (orc_util_now_ns() - t0) / 1000);
    return reached;
}

static int orc_store_etcd_range(orc_store_t *store, const char *key,
                                const char *range_end, unsigned flags,
                                size_t limit, uint64_t min_rev,
                                orc_store_range_result_t *result)
{
    orc_store_etcd_t *s = (orc_store_etcd_t *)store;
    uint64_t written;
    int status;

    if (!orc_store_etcd_valid_key(key)) {
        memset(result, 0, sizeof(*result));
        return ORC_STORE_EINVAL;
    }
    /* at least this store's own last write, whatever the client asked:
     * a request that takes a counter after another request's write must
     * read the counter as that write left it */
    written = atomic_load(&s->written);
    min_rev = (min_rev > written) ? min_rev : written;
    if (!(flags & ORC_STORE_RANGE_LATEST) && atomic_load(&s->live) &&
        orc_store_etcd_cache_at(s, min_rev)) {
        status = s->cache->ops->range(s->cache, key, range_end, flags, limit, 0,
                                      result);
        /* the cache may not have a key another replica just wrote */
        if ((status != ORC_STORE_OK) || (range_end != NULL) ||
            (result->total > 0)) {
            return status;
        }
        orc_store_range_result_free(result);
    }
    return orc_store_etcd_range_direct(s, key, range_end, flags, limit, result,
                                       NULL);
}

/* ---------------------------------------------------------- transactions */

static const char *const orc_store_etcd_targets[] = {
    [ORC_STORE_CMP_VERSION] = "VERSION",
    [ORC_STORE_CMP_CREATE]  = "CREATE",
    [ORC_STORE_CMP_MOD]     = "MOD",
    [ORC_STORE_CMP_LEASE]   = "LEASE"};
static const char *const orc_store_etcd_fields[] = {
    [ORC_STORE_CMP_VERSION] = "version",
    [ORC_STORE_CMP_CREATE]  = "create_revision",
    [ORC_STORE_CMP_MOD]     = "mod_revision",
    [ORC_STORE_CMP_LEASE]   = "lease"};
static const char *const orc_store_etcd_results[] = {
    [ORC_STORE_CMP_EQUAL]     = "EQUAL",
    [ORC_STORE_CMP_NOT_EQUAL] = "NOT_EQUAL",
    [ORC_STORE_CMP_GREATER]   = "GREATER",
    [ORC_STORE_CMP_LESS]      = "LESS"};

static json_t *orc_store_etcd_u64(uint64_t v)
{
    char text[24];

    snprintf(text, sizeof(text), "%llu", (unsigned long long)v);
    return json_string(text);
}

static json_t *orc_store_etcd_cmp(orc_store_etcd_t *s, const orc_store_cmp_t *c)
{
    if (((unsigned)c->target > ORC_STORE_CMP_LEASE) ||
        ((unsigned)c->result > ORC_STORE_CMP_LESS)) {
        return NULL;
    }
    return json_pack("{s:o, s:s, s:s, s:o}", "key",
                     orc_store_etcd_key(s, c->key), "target",
                     orc_store_etcd_targets[c->target], "result",
                     orc_store_etcd_results[c->result],
                     orc_store_etcd_fields[c->target],
                     orc_store_etcd_u64(c->value));
}

static json_t *orc_store_etcd_op(orc_store_etcd_t *s, const orc_store_op_t *op)
{
    json_t *r;

    if (op->type == ORC_STORE_OP_PUT) {
        r = json_pack("{s:o, s:o}", "key", orc_store_etcd_key(s, op->key),
                      "value", orc_etcd_bytes(op->value, op->value_len));
        if ((r != NULL) && (op->lease != 0) &&
            json_object_set_new(r, "lease", orc_store_etcd_u64(op->lease))) {
            json_decref(r);
            r = NULL;
        }
        return (r != NULL) ? json_pack("{s:o}", "request_put", r) : NULL;
    }
    r = json_pack("{s:o}", "key", orc_store_etcd_key(s, op->key));
    if ((r != NULL) && (op->range_end != NULL) &&
        json_object_set_new(r, "range_end",
                            orc_store_etcd_end(s, op->range_end))) {
        json_decref(r);
        r = NULL;
    }
    return (r != NULL) ? json_pack("{s:o}", "request_delete_range", r) : NULL;
}

/* The txn request: compares, ops, and on failure a read of each compared
 * key (to tell which compare failed) */
static json_t *orc_store_etcd_txn_body(orc_store_etcd_t *s,
                                       const orc_store_cmp_t *cmps, size_t ncmp,
                                       const orc_store_op_t *ops, size_t nops)
{
    json_t *compare = json_array(), *success = json_array();
    json_t *failure = json_array(), *body;
    int failed = (compare == NULL) || (success == NULL) || (failure == NULL);
    size_t i;

    for (i = 0; !failed && (i < ncmp); ++i) {
        failed =
            json_array_append_new(compare, orc_store_etcd_cmp(s, &cmps[i])) ||
            json_array_append_new(failure,
                                  json_pack("{s:{s:o, s:b}}", "request_range",
                                            "key",
                                            orc_store_etcd_key(s, cmps[i].key),
                                            "keys_only", 1));
    }
    for (i = 0; !failed && (i < nops); ++i) {
        failed = json_array_append_new(success, orc_store_etcd_op(s, &ops[i]));
    }
    body = failed ? NULL
                  : json_pack("{s:o, s:o, s:o}", "compare", compare, "success",
                              success, "failure", failure);
    if (body == NULL) {
        json_decref(compare);
        json_decref(success);
        json_decref(failure);
    }
    return body;
}

/* Does cmp hold for what the failure branch read of its key? */
static int orc_store_etcd_cmp_holds(json_t *range, const orc_store_cmp_t *c)
{
    json_t *kv = json_array_get(json_object_get(range, "kvs"), 0);
    uint64_t v;

    v = (kv == NULL) ? 0
                     : orc_etcd_get_u64(kv, orc_store_etcd_fields[c->target]);
    switch (c->result) {
    case ORC_STORE_CMP_EQUAL:
        return v == c->value;
    case ORC_STORE_CMP_NOT_EQUAL:
        return v != c->value;
    case ORC_STORE_CMP_GREATER:
        return v > c->value;
    case ORC_STORE_CMP_LESS:
        return v < c->value;
    }
    return 0;
}

static int orc_store_etcd_txn(orc_store_t *store, const orc_store_cmp_t *cmps,
                              size_t ncmp, const orc_store_op_t *ops,
                              size_t nops, orc_store_txn_result_t *result)
{
    orc_store_etcd_t *s = (orc_store_etcd_t *)store;
    json_t *body, *reply, *responses, *r;
    size_t i;
    int status;

    memset(result, 0, sizeof(*result));
    for (i = 0; i < ncmp; ++i) {
        if (!orc_store_etcd_valid_key(cmps[i].key) ||
            (cmps[i].key[0] == '\0')) {
            return ORC_STORE_EINVAL;
        }
    }
    for (i = 0; i < nops; ++i) {
        if (!orc_store_etcd_valid_key(ops[i].key) ||
            ((ops[i].type == ORC_STORE_OP_PUT) && (ops[i].key[0] == '\0')) ||
            ((ops[i].value == NULL) && (ops[i].value_len > 0))) {
            return ORC_STORE_EINVAL;
        }
    }
    body = orc_store_etcd_txn_body(s, cmps, ncmp, ops, nops);
    if (body == NULL) {
        return ORC_STORE_ENOMEM;
    }
    status = orc_store_etcd_batch_txn(s, body, cmps, ncmp, ops, nops, &reply);
    if (status != ORC_STORE_OK) {
        return status;
    }
    result->revision =
        orc_etcd_get_u64(json_object_get(reply, "header"), "revision");
    responses = json_object_get(reply, "responses");
    if (!json_is_true(json_object_get(reply, "succeeded")) && (ncmp > 0)) {
        result->failed_cmp = ncmp;
        result->revision   = 0;
        for (i = 0; i < ncmp; ++i) {
            r = json_object_get(json_array_get(responses, i), "response_range");
            if ((result->failed_cmp == ncmp) &&
                !orc_store_etcd_cmp_holds(r, &cmps[i])) {
                result->failed_cmp = i;
            }
            /* a revision of ours that shows what failed (etcd's own may be
             * another deployment's, which the cache never reaches) */
            result->revision = orc_store_etcd_max_mod(json_object_get(r, "kvs"),
                                                      result->revision);
        }
        result->failed_cmp =
            (result->failed_cmp < ncmp) ? result->failed_cmp : 0;
        json_decref(reply);
        return ORC_STORE_ECOMPARE;
    }
    json_array_foreach(responses, i, r)
    {
        result->deleted +=
            orc_etcd_get_u64(json_object_get(r, "response_delete_range"),
                             "deleted");
    }
    json_decref(reply);
    for (i = 0; i < nops; ++i) {
        if ((ops[i].type == ORC_STORE_OP_PUT) || (result->deleted > 0)) {
            orc_store_etcd_wrote(s, result->revision);
            break;
        }
    }
    return ORC_STORE_OK;
}

/* ----------------------------------------------------------------- leases */

/* A lease call: ORC_STORE_OK and *reply_p, or an error */
static int orc_store_etcd_lease_call(orc_store_etcd_t *s, const char *path,
                                     uint64_t id, json_t **reply_p)
{
    json_t *body = json_pack("{s:o}", "ID", orc_store_etcd_u64(id));

    return (body != NULL) ? orc_etcd_call(s->etcd, path, body, 1, reply_p)
                          : ORC_STORE_ENOMEM;
}

static int orc_store_etcd_lease_grant(orc_store_t *store, int64_t ttl,
                                      uint64_t *id_p, int64_t *granted_p)
{
    orc_store_etcd_t *s = (orc_store_etcd_t *)store;
    json_t *body, *reply;
    int status;

    if ((ttl <= 0) || (ttl > 1000000000)) {
        return ORC_STORE_EINVAL;
    }
    body = json_pack("{s:o}", "TTL", orc_store_etcd_u64((uint64_t)ttl));
    if (body == NULL) {
        return ORC_STORE_ENOMEM;
    }
    /* granting twice leaves a lease nobody uses: it expires */
    status = orc_etcd_call(s->etcd, "/v3/lease/grant", body, 1, &reply);
    if (status != ORC_STORE_OK) {
        return status;
    }
    *id_p = orc_etcd_get_u64(reply, "ID");
    if (granted_p != NULL) {
        *granted_p = (int64_t)orc_etcd_get_u64(reply, "TTL");
    }
    json_decref(reply);
    return (*id_p != 0) ? ORC_STORE_OK : ORC_STORE_EIO;
}

static int orc_store_etcd_lease_keepalive(orc_store_t *store, uint64_t id,
                                          int64_t *ttl_p)
{
    orc_store_etcd_t *s = (orc_store_etcd_t *)store;
    json_t *reply;
    uint64_t ttl;
    int status;

    status = orc_store_etcd_lease_call(s, "/v3/lease/keepalive", id, &reply);
    if (status != ORC_STORE_OK) {
        return status;
    }
    /* a lease gone (also one past its deadline, which etcd revokes before
     * it answers) has no TTL */
    ttl = orc_etcd_get_u64(json_object_get(reply, "result"), "TTL");
    json_decref(reply);
    if (ttl == 0) {
        return ORC_STORE_ENOENT;
    }
    if (ttl_p != NULL) {
        *ttl_p = (int64_t)ttl;
    }
    return ORC_STORE_OK;
}

static int orc_store_etcd_lease_revoke(orc_store_t *store, uint64_t id,
                                       uint64_t *rev_p)
{
    orc_store_etcd_t *s = (orc_store_etcd_t *)store;
    json_t *reply;
    uint64_t rev;
    int status;

    status = orc_store_etcd_lease_call(s, "/v3/lease/revoke", id, &reply);
    if (status != ORC_STORE_OK) {
        return status;
    }
    rev = orc_etcd_get_u64(json_object_get(reply, "header"), "revision");
    /* the revocation deleted the lease's keys: later reads see them gone */
    orc_store_etcd_wrote(s, rev);
    if (rev_p != NULL) {
        *rev_p = rev;
    }
    json_decref(reply);
    return ORC_STORE_OK;
}

static int orc_store_etcd_lease_ttl(orc_store_t *store, uint64_t id,
                                    int64_t *remaining_p, int64_t *granted_p)
{
    orc_store_etcd_t *s = (orc_store_etcd_t *)store;
    json_t *reply, *ttl;
    int status;

    status = orc_store_etcd_lease_call(s, "/v3/lease/timetolive", id, &reply);
    if (status != ORC_STORE_OK) {
        return status;
    }
    ttl = json_object_get(reply, "TTL");
    if ((ttl == NULL) || !strcmp(json_string_value(ttl) ?: "", "-1") ||
        (json_is_integer(ttl) && (json_integer_value(ttl) < 0))) {
        json_decref(reply);
        return ORC_STORE_ENOENT;
    }
    if (remaining_p != NULL) {
        *remaining_p = (int64_t)orc_etcd_get_u64(reply, "TTL");
    }
    if (granted_p != NULL) {
        *granted_p = (int64_t)orc_etcd_get_u64(reply, "grantedTTL");
    }
    json_decref(reply);
    return ORC_STORE_OK;
}

/* ------------------------------------------------ served by the cache */

static int orc_store_etcd_watch_create(orc_store_t *store, const char *key,
                                       const char *range_end,
                                       uint64_t start_rev,
                                       orc_store_watch_cb_t cb, void *arg,
                                       uint64_t *id_p)
{
    orc_store_etcd_t *s = (orc_store_etcd_t *)store;

    return s->cache->ops->watch_create(s->cache, key, range_end, start_rev, cb,
                                       arg, id_p);
}

static int orc_store_etcd_watch_cancel(orc_store_t *store, uint64_t id)
{
    orc_store_etcd_t *s = (orc_store_etcd_t *)store;

    return s->cache->ops->watch_cancel(s->cache, id);
}

static uint64_t orc_store_etcd_revision(orc_store_t *store)
{
    orc_store_etcd_t *s = (orc_store_etcd_t *)store;

    return s->cache->ops->revision(s->cache);
}

static void orc_store_etcd_stats(orc_store_t *store, orc_store_stats_t *stats)
{
    orc_store_etcd_t *s = (orc_store_etcd_t *)store;

    s->cache->ops->stats(s->cache, stats);
    orc_store_etcd_batch_stats(&s->batcher, stats);
    orc_store_etcd_stages(s, stats);
}

static void orc_store_etcd_usage(orc_store_t *store, const char *group,
                                 uint64_t *keys_p, uint64_t *bytes_p)
{
    orc_store_etcd_t *s = (orc_store_etcd_t *)store;

    s->cache->ops->usage(s->cache, group, keys_p, bytes_p);
}

static int orc_store_etcd_health(orc_store_t *store)
{
    orc_store_etcd_t *s = (orc_store_etcd_t *)store;

    return atomic_load(&s->live) ? ORC_STORE_OK : ORC_STORE_EUNAVAIL;
}

/* --------------------------------------------------------------- lifetime */

static void orc_store_etcd_close(orc_store_t *store)
{
    orc_store_etcd_t *s = (orc_store_etcd_t *)store;

    orc_store_etcd_watch_stop(s);
    orc_store_close(s->cache);
    orc_etcd_close(s->etcd);
    orc_store_etcd_batch_fini(&s->batcher);
    pthread_mutex_destroy(&s->probe_lock);
    free(s->prefix);
    free(s);
}

static const orc_store_ops_t orc_store_etcd_ops = {
    .name            = "etcd",
    .range           = orc_store_etcd_range,
    .txn             = orc_store_etcd_txn,
    .lease_grant     = orc_store_etcd_lease_grant,
    .lease_keepalive = orc_store_etcd_lease_keepalive,
    .lease_revoke    = orc_store_etcd_lease_revoke,
    .lease_ttl       = orc_store_etcd_lease_ttl,
    .watch_create    = orc_store_etcd_watch_create,
    .watch_cancel    = orc_store_etcd_watch_cancel,
    .revision        = orc_store_etcd_revision,
    .stats           = orc_store_etcd_stats,
    .usage           = orc_store_etcd_usage,
    .health          = orc_store_etcd_health,
    .snapshot_save   = orc_store_unsupported_snapshot,
    .snapshot_load   = orc_store_unsupported_snapshot,
    .close           = orc_store_etcd_close,
};

int orc_store_etcd_open(const orc_store_etcd_params_t *params,
                        orc_store_t **store_p, char *err, size_t errlen)
{
    const char *prefix = (params->prefix != NULL) ? params->prefix : "";
    orc_store_etcd_t *s;

    if ((prefix[0] != '/') || (prefix[strlen(prefix) - 1] == '/')) {
        snprintf(err, errlen,
                 "the key prefix '%s' must start with '/' and "
                 "not end with it",
                 prefix);
        return ORC_STORE_EINVAL;
    }
    s = calloc(1, sizeof(*s));
    if ((s == NULL) || ((s->prefix = strdup(prefix)) == NULL)) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return ORC_STORE_ENOMEM;
    }
    orc_store_etcd_batch_init(&s->batcher, ((params->pipeline > 0) &&
                                            (params->pipeline <=
                                             ORC_STORE_ETCD_PIPELINE_MAX))
                                               ? params->pipeline
                                               : ORC_STORE_ETCD_PIPELINE);
    pthread_mutex_init(&s->probe_lock, NULL);
    s->super.ops = &orc_store_etcd_ops;
    s->plen      = strlen(prefix);
    s->cache_wait_ms =
        (params->cache_wait_ms > 0) ? params->cache_wait_ms : 1000;
    if (orc_etcd_open(&params->etcd, &s->etcd, err, errlen)) {
        goto err_free;
    }
    if (orc_store_mem_open_replica(&params->store, &s->cache) != ORC_STORE_OK) {
        snprintf(err, errlen, "out of memory");
        goto err_etcd;
    }
    if (orc_store_etcd_watch_start(s, err, errlen)) {
        orc_store_etcd_watch_stop(s);
        goto err_cache;
    }
    *store_p = &s->super;
    return ORC_STORE_OK;

err_cache:
    orc_store_close(s->cache);
err_etcd:
    orc_etcd_close(s->etcd);
err_free:
    orc_store_etcd_batch_fini(&s->batcher);
    pthread_mutex_destroy(&s->probe_lock);
    free(s->prefix);
    free(s);
    return ORC_STORE_EUNAVAIL;
}
