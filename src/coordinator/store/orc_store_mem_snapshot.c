/*
 * orc store, memory implementation: snapshots. The whole state as one JSON
 * document, written atomically (temporary file, fsync, rename), and its
 * restore into an empty store with every number checked; restored leases
 * start a fresh full TTL.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_store_mem_int.h"
#include "coordinator/common/orc_util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ORC_STORE_MEM_SNAP_FORMAT "orc-store-mem/1"
/* Revisions, versions and lease ids in a snapshot: at most 2^53 - 1, exact
 * in any JSON reader, and far from overflowing as they grow */
#define ORC_STORE_MEM_SNAP_NUM_MAX ((1LL << 53) - 1)

static json_t *orc_store_mem_snapshot_build(orc_store_mem_t *s)
{
    json_t *root, *leases, *kvs, *o;
    orc_store_mem_entry_t *e;
    size_t i;

    root   = json_object();
    leases = json_array();
    kvs    = json_array();
    if ((root == NULL) || (leases == NULL) || (kvs == NULL)) {
        goto err;
    }
    for (i = 0; i < s->nleases; ++i) {
        o = json_pack("{sIsI}", "id", (json_int_t)s->leases[i]->id, "ttl",
                      (json_int_t)s->leases[i]->ttl);
        if ((o == NULL) || json_array_append_new(leases, o)) {
            goto err;
        }
    }
    for (i = 0; i < s->nentries; ++i) {
        e = s->entries[i];
        o = json_pack("{s:s, s:s%, s:I, s:I, s:I, s:I}", "key", e->key, "value",
                      e->value, e->value_len, "create_rev",
                      (json_int_t)e->create_rev, "mod_rev",
                      (json_int_t)e->mod_rev, "version", (json_int_t)e->version,
                      "lease",
                      (json_int_t)((e->lease != NULL) ? e->lease->id : 0));
        if (o == NULL) {
            orc_store_error("snapshot: value of key '%s' is not UTF-8 text",
                            e->key);
            goto err;
        }
        if (json_array_append_new(kvs, o)) {
            goto err;
        }
    }
    if (json_object_set_new(root, "format",
                            json_string(ORC_STORE_MEM_SNAP_FORMAT)) ||
        json_object_set_new(root, "revision",
                            json_integer((json_int_t)s->revision)) ||
        json_object_set_new(root, "last_lease_id",
                            json_integer((json_int_t)s->last_lease_id)) ||
        json_object_set(root, "leases", leases) ||
        json_object_set(root, "kvs", kvs)) {
        goto err;
    }
    json_decref(leases);
    json_decref(kvs);
    return root;

err:
    json_decref(root);
    json_decref(leases);
    json_decref(kvs);
    return NULL;
}

int orc_store_mem_snapshot_save(orc_store_t *store, const char *path)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    char tmp[4096];
    json_t *root;
    FILE *f;
    int ret;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >=
        (int)sizeof(tmp)) {
        orc_store_error("snapshot path too long");
        return ORC_STORE_EINVAL;
    }
    pthread_mutex_lock(&s->lock);
    orc_store_mem_reap(s, orc_util_now_ms());
    root = orc_store_mem_snapshot_build(s);
    pthread_mutex_unlock(&s->lock);
    if (root == NULL) {
        return ORC_STORE_ENOMEM;
    }

    f = fopen(tmp, "w");
    if (f == NULL) {
        orc_store_error("cannot create %s: %m", tmp);
        goto err_decref;
    }
    ret = json_dumpf(root, f, JSON_COMPACT);
    if ((ret != 0) || (fflush(f) != 0) || (fsync(fileno(f)) != 0)) {
        orc_store_error("cannot write %s: %m", tmp);
        fclose(f);
        goto err_unlink;
    }
    if (fclose(f) != 0) {
        orc_store_error("cannot close %s: %m", tmp);
        goto err_unlink;
    }
    if (rename(tmp, path) != 0) {
        orc_store_error("cannot rename %s to %s: %m", tmp, path);
        goto err_unlink;
    }
    json_decref(root);
    return ORC_STORE_OK;

err_unlink:
    unlink(tmp);
err_decref:
    json_decref(root);
    return ORC_STORE_EIO;
}

static int orc_store_mem_lease_cmp(const void *a, const void *b)
{
    uint64_t x = (*(orc_store_mem_lease_t *const *)a)->id;
    uint64_t y = (*(orc_store_mem_lease_t *const *)b)->id;

    return (x > y) - (x < y);
}

int orc_store_mem_snapshot_load(orc_store_t *store, const char *path)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    json_t *root, *leases, *kvs, *o;
    json_int_t rev, last_lease, id, ttl, crev, mrev, ver, lid;
    const char *format, *key, *value, *dup;
    orc_store_kv_t kv;
    size_t value_len, i;
    orc_store_mem_lease_t *l;
    json_error_t jerr;
    uint64_t now;
    int status = ORC_STORE_EIO;

    root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        orc_store_error("snapshot %s:%d:%d: %s", path, jerr.line, jerr.column,
                        jerr.text);
        return ORC_STORE_EIO;
    }
    if (json_unpack_ex(root, &jerr, JSON_STRICT, "{s:s, s:I, s:I, s:o, s:o}",
                       "format", &format, "revision", &rev, "last_lease_id",
                       &last_lease, "leases", &leases, "kvs", &kvs) ||
        strcmp(format, ORC_STORE_MEM_SNAP_FORMAT) || (rev < 1) ||
        (rev > ORC_STORE_MEM_SNAP_NUM_MAX) || (last_lease < 0) ||
        (last_lease > ORC_STORE_MEM_SNAP_NUM_MAX) || !json_is_array(leases) ||
        !json_is_array(kvs)) {
        orc_store_error("snapshot %s: not an %s snapshot%s%s", path,
                        ORC_STORE_MEM_SNAP_FORMAT, jerr.text[0] ? ": " : "",
                        jerr.text);
        goto out_decref;
    }

    pthread_mutex_lock(&s->lock);
    if ((s->nentries != 0) || (s->nleases != 0)) {
        orc_store_error("snapshot %s: store is not empty", path);
        status = ORC_STORE_EINVAL;
        goto out_unlock;
    }
    now = orc_util_now_ms();
    if (orc_store_mem_grow((void **)&s->leases, &s->leases_cap,
                           json_array_size(leases), sizeof(s->leases[0])) ||
        orc_store_mem_grow((void **)&s->entries, &s->entries_cap,
                           json_array_size(kvs), sizeof(s->entries[0]))) {
        status = ORC_STORE_ENOMEM;
        goto out_unlock;
    }
    json_array_foreach(leases, i, o)
    {
        if (json_unpack_ex(o, &jerr, JSON_STRICT, "{s:I, s:I}", "id", &id,
                           "ttl", &ttl) ||
            (id <= 0) || (id > last_lease) || (ttl <= 0) ||
            (ttl > 1000000000)) {
            orc_store_error("snapshot %s: bad lease #%zu", path, i);
            goto out_clear;
        }
        l = calloc(1, sizeof(*l));
        if (l == NULL) {
            status = ORC_STORE_ENOMEM;
            goto out_clear;
        }
        l->id                   = (uint64_t)id;
        l->ttl                  = ttl;
        l->deadline_ms          = now + (uint64_t)ttl * 1000u; /* fresh TTL */
        s->leases[s->nleases++] = l;
    }
    if (s->nleases > 1) {
        qsort(s->leases, s->nleases, sizeof(s->leases[0]),
              orc_store_mem_lease_cmp);
    }
    for (i = 1; i < s->nleases; ++i) {
        if (s->leases[i]->id == s->leases[i - 1]->id) {
            orc_store_error("snapshot %s: duplicate lease %llu", path,
                            (unsigned long long)s->leases[i]->id);
            goto out_clear;
        }
    }
    json_array_foreach(kvs, i, o)
    {
        if (json_unpack_ex(o, &jerr, JSON_STRICT,
                           "{s:s, s:s%, s:I, s:I, s:I, s:I}", "key", &key,
                           "value", &value, &value_len, "create_rev", &crev,
                           "mod_rev", &mrev, "version", &ver, "lease", &lid) ||
            (key[0] == '\0') || (crev < 1) || (mrev < crev) || (mrev > rev) ||
            (ver < 1) || (ver > ORC_STORE_MEM_SNAP_NUM_MAX) || (lid < 0)) {
            orc_store_error("snapshot %s: bad key #%zu", path, i);
            goto out_clear;
        }
        l = NULL;
        if ((lid != 0) &&
            ((l = orc_store_mem_lease_find(s, (uint64_t)lid, NULL)) == NULL)) {
            orc_store_error("snapshot %s: key #%zu has unknown lease %lld",
                            path, i, (long long)lid);
            goto out_clear;
        }
        kv.key        = (char *)key;
        kv.value      = (char *)value;
        kv.value_len  = value_len;
        kv.create_rev = (uint64_t)crev;
        kv.mod_rev    = (uint64_t)mrev;
        kv.version    = (uint64_t)ver;
        kv.lease      = (uint64_t)lid;
        if (orc_store_mem_load_entry(s, &kv, l) != ORC_STORE_OK) {
            status = ORC_STORE_ENOMEM;
            goto out_clear;
        }
    }
    if (orc_store_mem_load_end(s, &dup) != ORC_STORE_OK) {
        orc_store_error("snapshot %s: duplicate key '%s'", path, dup);
        goto out_clear;
    }
    s->revision      = (uint64_t)rev;
    s->compacted_rev = (uint64_t)rev; /* no history before the restart */
    s->last_lease_id = (uint64_t)last_lease;
    s->next_reap_ms  = 0;
    status           = ORC_STORE_OK;
    goto out_unlock;

out_clear:
    orc_store_mem_clear(s);
out_unlock:
    pthread_mutex_unlock(&s->lock);
out_decref:
    json_decref(root);
    return status;
}
