/*
 * orc store: implementation-independent helpers.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void orc_store_log_stderr(orc_store_log_level_t level, const char *fmt,
                                 va_list ap)
{
    char line[1024];

    (void)level;
    /* one write per line, so concurrent lines do not interleave; %m in fmt
     * formats the errno of the caller */
    vsnprintf(line, sizeof(line), fmt, ap);
    fprintf(stderr, "orc store: %s\n", line);
}

/* written once at start-up, before any store exists (orc_store.h) */
static orc_store_log_fn_t orc_store_logger = orc_store_log_stderr;

void orc_store_set_logger(orc_store_log_fn_t fn)
{
    orc_store_logger = (fn != NULL) ? fn : orc_store_log_stderr;
}

void orc_store_log(orc_store_log_level_t level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    orc_store_logger(level, fmt, ap);
    va_end(ap);
}

const uint64_t orc_store_stage_bounds_us[ORC_STORE_STAGE_BUCKETS - 1] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000};

const char *orc_store_status_str(int status)
{
    switch (status) {
    case ORC_STORE_OK:
        return "ok";
    case ORC_STORE_FIRED:
        return "fired";
    case ORC_STORE_ENOENT:
        return "not found";
    case ORC_STORE_ECOMPARE:
        return "compare failed";
    case ORC_STORE_EINVAL:
        return "invalid argument";
    case ORC_STORE_ENOMEM:
        return "out of memory";
    case ORC_STORE_EIO:
        return "i/o error";
    case ORC_STORE_ENOTSUP:
        return "not supported";
    case ORC_STORE_EUNAVAIL:
        return "backend unavailable";
    default:
        return "unknown status";
    }
}

void orc_store_kv_free(orc_store_kv_t *kv)
{
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof(*kv));
}

void orc_store_range_result_free(orc_store_range_result_t *result)
{
    size_t i;

    for (i = 0; i < result->count; ++i) {
        orc_store_kv_free(&result->kvs[i]);
    }
    free(result->kvs);
    memset(result, 0, sizeof(*result));
}

char *orc_store_prefix_end(const char *prefix)
{
    size_t len = strlen(prefix);
    char *end  = malloc(len + 1);

    if (end == NULL) {
        return NULL;
    }
    memcpy(end, prefix, len + 1);
    /* etcd: increment the last byte that is not 0xff, drop what follows */
    while (len > 0) {
        if ((unsigned char)end[len - 1] != 0xff) {
            end[len - 1] = (char)((unsigned char)end[len - 1] + 1);
            end[len]     = '\0';
            return end;
        }
        --len;
    }
    end[0] = '\0'; /* whole keyspace: "\0" as range_end */
    return end;
}

int orc_store_put(orc_store_t *store, const char *key, const void *value,
                  size_t value_len, uint64_t lease, uint64_t *rev_p)
{
    orc_store_op_t op = {.type      = ORC_STORE_OP_PUT,
                         .key       = key,
                         .value     = value,
                         .value_len = value_len,
                         .lease     = lease};
    orc_store_txn_result_t res;
    int status;

    status = store->ops->txn(store, NULL, 0, &op, 1, &res);
    if ((status == ORC_STORE_OK) && (rev_p != NULL)) {
        *rev_p = res.revision;
    }
    return status;
}

int orc_store_get(orc_store_t *store, const char *key, uint64_t min_rev,
                  orc_store_kv_t *kv, uint64_t *rev_p)
{
    orc_store_range_result_t res;
    int status;

    status = store->ops->range(store, key, NULL, 0, 1, min_rev, &res);
    if (status != ORC_STORE_OK) {
        return status;
    }
    if (rev_p != NULL) {
        *rev_p = res.revision;
    }
    if (res.count == 0) {
        orc_store_range_result_free(&res);
        return ORC_STORE_ENOENT;
    }
    *kv       = res.kvs[0];
    res.count = 0;
    orc_store_range_result_free(&res);
    return ORC_STORE_OK;
}

int orc_store_delete(orc_store_t *store, const char *key, const char *range_end,
                     size_t *deleted_p, uint64_t *rev_p)
{
    orc_store_op_t op = {.type      = ORC_STORE_OP_DELETE_RANGE,
                         .key       = key,
                         .range_end = range_end};
    orc_store_txn_result_t res;
    int status;

    status = store->ops->txn(store, NULL, 0, &op, 1, &res);
    if (status != ORC_STORE_OK) {
        return status;
    }
    if (deleted_p != NULL) {
        *deleted_p = res.deleted;
    }
    if (rev_p != NULL) {
        *rev_p = res.revision;
    }
    return ORC_STORE_OK;
}

size_t orc_store_group_len(const char *key, unsigned group_depth)
{
    const char *p = key;
    unsigned n;

    for (n = 0; (n < group_depth) && (*p != '\0'); ++n) {
        p = strchrnul(p + 1, '/');
    }
    return (size_t)(p - key);
}

int orc_store_unsupported_snapshot(orc_store_t *store, const char *path)
{
    (void)store;
    (void)path;
    return ORC_STORE_ENOTSUP;
}
