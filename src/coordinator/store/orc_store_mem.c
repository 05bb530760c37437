/*
 * orc store: in-memory implementation.
 *
 * Keys live in one array of entry pointers sorted by key (binary search for
 * get, contiguous scan for ranges). Each lease keeps an intrusive list of the
 * entries attached to it, so revoking is proportional to its own keys. A ring
 * of recent events (revision, key) lets watches start from a past revision;
 * once the ring wrapped past start_rev the watch fires at once, like an etcd
 * watch on a compacted revision (the caller re-reads and re-watches).
 *
 * Each key counts toward its group (a sorted array of groups with their
 * keys and bytes) and its class, so quotas and statistics never scan.
 *
 * A replica (orc_store_mem_open_replica) is the same store fed from outside
 * (the etcd store's cache): it grants no leases and reaps nothing; events
 * applied to it carry their own revisions and metadata.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_store_mem_int.h"
#include "orc_store_replica.h"
#include "coordinator/common/orc_util.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int orc_store_mem_in_range(const char *k, const char *key,
                                  const char *range_end)
{
    if (range_end == NULL) {
        return strcmp(k, key) == 0;
    }
    return (strcmp(k, key) >= 0) &&
           ((range_end[0] == '\0') || (strcmp(k, range_end) < 0));
}

/* first index whose key is >= key */
static size_t orc_store_mem_lower_bound(orc_store_mem_t *s, const char *key)
{
    size_t lo = 0, hi = s->nentries, mid;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        if (strcmp(s->entries[mid]->key, key) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static orc_store_mem_entry_t *orc_store_mem_find(orc_store_mem_t *s,
                                                 const char *key)
{
    size_t i = orc_store_mem_lower_bound(s, key);

    if ((i < s->nentries) && (strcmp(s->entries[i]->key, key) == 0)) {
        return s->entries[i];
    }
    return NULL;
}

orc_store_mem_lease_t *orc_store_mem_lease_find(orc_store_mem_t *s, uint64_t id,
                                                size_t *index_p)
{
    size_t lo = 0, hi = s->nleases, mid;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        if (s->leases[mid]->id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if ((lo < s->nleases) && (s->leases[lo]->id == id)) {
        if (index_p != NULL) {
            *index_p = lo;
        }
        return s->leases[lo];
    }
    return NULL;
}

static void orc_store_mem_lease_detach(orc_store_mem_entry_t *e)
{
    if (e->lease == NULL) {
        return;
    }
    if (e->lease_prev != NULL) {
        e->lease_prev->lease_next = e->lease_next;
    } else {
        e->lease->keys = e->lease_next;
    }
    if (e->lease_next != NULL) {
        e->lease_next->lease_prev = e->lease_prev;
    }
    e->lease      = NULL;
    e->lease_id   = 0;
    e->lease_prev = NULL;
    e->lease_next = NULL;
}

static void orc_store_mem_lease_attach(orc_store_mem_entry_t *e,
                                       orc_store_mem_lease_t *l)
{
    e->lease      = l;
    e->lease_id   = l->id;
    e->lease_prev = NULL;
    e->lease_next = l->keys;
    if (l->keys != NULL) {
        l->keys->lease_prev = e;
    }
    l->keys = e;
}

/* Record an event and fire matching watches. Called with lock held. */
static void orc_store_mem_event(orc_store_mem_t *s, const char *key,
                                uint64_t rev)
{
    orc_store_mem_event_t *ev = &s->history[s->hist_head];
    orc_store_mem_watch_t **wp, *w;
    char *copy;

    copy = strdup(key);
    if (ev->key != NULL) {
        /* overwriting the oldest event: watches from before it can no
         * longer be answered exactly */
        if (s->compacted_rev < ev->rev) {
            s->compacted_rev = ev->rev;
        }
        free(ev->key);
        ev->key = NULL;
        --s->hist_count;
    }
    if (copy == NULL) {
        /* unable to record this event: same as compacting past it */
        if (s->compacted_rev < rev) {
            s->compacted_rev = rev;
        }
    } else {
        ev->rev      = rev;
        ev->key      = copy;
        s->hist_head = (s->hist_head + 1) % ORC_STORE_MEM_HISTORY;
        ++s->hist_count;
    }

    wp = &s->watches;
    while ((w = *wp) != NULL) {
        if ((rev >= w->start_rev) &&
            orc_store_mem_in_range(key, w->key, w->range_end)) {
            *wp = w->next;
            --s->nwatches;
            w->cb(w->arg, rev);
            free(w->key);
            free(w->range_end);
            free(w);
        } else {
            wp = &w->next;
        }
    }
}

/* A group's name against the first len bytes of key */
static int orc_store_mem_group_cmp(const char *name, const char *key,
                                   size_t len)
{
    int c = strncmp(name, key, len);

    return (c != 0) ? c : (name[len] != '\0');
}

/* First index of the groups whose name is >= key[0..len) */
static size_t orc_store_mem_group_find(orc_store_mem_t *s, const char *key,
                                       size_t len)
{
    size_t lo = 0, hi = s->ngroups, mid;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        if (orc_store_mem_group_cmp(s->groups[mid]->name, key, len) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Count a new entry (lock held; it has its key) */
static int orc_store_mem_account_add(orc_store_mem_t *s,
                                     orc_store_mem_entry_t *e)
{
    orc_store_mem_group_t *g;
    size_t len, i;

    e->cls = (s->params.classify != NULL) ? s->params.classify(e->key) : 0;
    if (e->cls >= ORC_STORE_CLASSES) {
        e->cls = 0;
    }
    if (s->params.group_depth > 0) {
        len = orc_store_group_len(e->key, s->params.group_depth);
        i   = orc_store_mem_group_find(s, e->key, len);
        if ((i < s->ngroups) &&
            !orc_store_mem_group_cmp(s->groups[i]->name, e->key, len)) {
            g = s->groups[i];
        } else {
            if (orc_store_mem_grow((void **)&s->groups, &s->groups_cap,
                                   s->ngroups + 1, sizeof(s->groups[0]))) {
                return ORC_STORE_ENOMEM;
            }
            g = calloc(1, sizeof(*g));
            if ((g == NULL) || ((g->name = strndup(e->key, len)) == NULL)) {
                free(g);
                return ORC_STORE_ENOMEM;
            }
            memmove(&s->groups[i + 1], &s->groups[i],
                    (s->ngroups - i) * sizeof(s->groups[0]));
            s->groups[i] = g;
            ++s->ngroups;
        }
        e->group = g;
        ++g->keys;
        g->bytes += strlen(e->key) + e->value_len;
    }
    ++s->class_keys[e->cls];
    s->bytes += strlen(e->key) + e->value_len;
    return ORC_STORE_OK;
}

/* The value of an entry changed length (lock held) */
static void orc_store_mem_account_value(orc_store_mem_t *s,
                                        orc_store_mem_entry_t *e,
                                        size_t old_len)
{
    s->bytes += e->value_len - old_len;
    if (e->group != NULL) {
        e->group->bytes += e->value_len - old_len;
    }
}

/* An entry is going (lock held) */
static void orc_store_mem_account_del(orc_store_mem_t *s,
                                      orc_store_mem_entry_t *e)
{
    orc_store_mem_group_t *g = e->group;
    size_t i, len;

    s->bytes -= strlen(e->key) + e->value_len;
    --s->class_keys[e->cls];
    if (g == NULL) {
        return;
    }
    --g->keys;
    g->bytes -= strlen(e->key) + e->value_len;
    if (g->keys == 0) {
        len = strlen(g->name);
        i   = orc_store_mem_group_find(s, g->name, len);
        memmove(&s->groups[i], &s->groups[i + 1],
                (s->ngroups - i - 1) * sizeof(s->groups[0]));
        --s->ngroups;
        free(g->name);
        free(g);
    }
}

static void orc_store_mem_entry_free(orc_store_mem_t *s,
                                     orc_store_mem_entry_t *e)
{
    orc_store_mem_account_del(s, e);
    orc_store_mem_lease_detach(e);
    free(e->key);
    free(e->value);
    free(e);
}

/* Give memory back once most keys are gone (lock held) */
static void orc_store_mem_shrink(orc_store_mem_t *s)
{
    orc_store_mem_entry_t **p;

    if ((s->entries_cap > 1024) && (s->nentries < s->entries_cap / 4)) {
        p = realloc(s->entries, (s->entries_cap / 2) * sizeof(*p));
        if (p != NULL) {
            s->entries = p;
            s->entries_cap /= 2;
        }
    }
}

/* Remove entries [first, first+count) from the array, emitting events. */
static void orc_store_mem_remove(orc_store_mem_t *s, size_t first, size_t count,
                                 uint64_t rev)
{
    size_t i;

    for (i = first; i < first + count; ++i) {
        orc_store_mem_event(s, s->entries[i]->key, rev);
        orc_store_mem_entry_free(s, s->entries[i]);
    }
    memmove(&s->entries[first], &s->entries[first + count],
            (s->nentries - first - count) * sizeof(s->entries[0]));
    s->nentries -= count;
    orc_store_mem_shrink(s);
}

/* Delete a lease and its keys (one revision if it had keys). */
static void orc_store_mem_lease_drop(orc_store_mem_t *s, size_t index)
{
    orc_store_mem_lease_t *l = s->leases[index];
    uint64_t rev             = s->revision + 1;
    orc_store_mem_entry_t *e;
    size_t i;
    int changed = 0;

    while ((e = l->keys) != NULL) {
        i = orc_store_mem_lower_bound(s, e->key);
        orc_store_mem_remove(s, i, 1, rev); /* detaches e from l */
        changed = 1;
    }
    if (changed) {
        s->revision = rev;
    }
    memmove(&s->leases[index], &s->leases[index + 1],
            (s->nleases - index - 1) * sizeof(s->leases[0]));
    --s->nleases;
    free(l);
}

/* Expire every lease past its deadline; recompute next_reap_ms. */
void orc_store_mem_reap(orc_store_mem_t *s, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    size_t i      = 0;

    if (now < s->next_reap_ms) {
        return;
    }
    while (i < s->nleases) {
        if (s->leases[i]->deadline_ms <= now) {
            orc_store_mem_lease_drop(s, i);
            ++s->leases_expired;
            continue;
        }
        if (s->leases[i]->deadline_ms < next) {
            next = s->leases[i]->deadline_ms;
        }
        ++i;
    }
    s->next_reap_ms = next;
}

int orc_store_mem_grow(void **array, size_t *cap, size_t need, size_t elem)
{
    size_t new_cap;
    void *p;

    if (need <= *cap) {
        return ORC_STORE_OK;
    }
    new_cap = (*cap == 0) ? 64 : *cap * 2;
    while (new_cap < need) {
        new_cap *= 2;
    }
    p = realloc(*array, new_cap * elem);
    if (p == NULL) {
        return ORC_STORE_ENOMEM;
    }
    *array = p;
    *cap   = new_cap;
    return ORC_STORE_OK;
}

static int orc_store_mem_copy_kv(const orc_store_mem_entry_t *e,
                                 orc_store_kv_t *kv, int with_value)
{
    memset(kv, 0, sizeof(*kv));
    kv->key = strdup(e->key);
    if (kv->key == NULL) {
        return ORC_STORE_ENOMEM;
    }
    if (with_value) {
        kv->value = malloc(e->value_len + 1);
        if (kv->value == NULL) {
            free(kv->key);
            kv->key = NULL;
            return ORC_STORE_ENOMEM;
        }
        memcpy(kv->value, e->value, e->value_len);
        kv->value[e->value_len] = '\0';
        kv->value_len           = e->value_len;
    }
    kv->create_rev = e->create_rev;
    kv->mod_rev    = e->mod_rev;
    kv->version    = e->version;
    kv->lease      = e->lease_id;
    return ORC_STORE_OK;
}

/* min_rev: this store is always current; a min_rev above its revision
 * comes from before a restart without snapshot (or another store) and is
 * not waited for */
static int orc_store_mem_range(orc_store_t *store, const char *key,
                               const char *range_end, unsigned flags,
                               size_t limit, uint64_t min_rev,
                               orc_store_range_result_t *result)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    size_t first, i, n = 0;
    int status = ORC_STORE_OK;

    (void)min_rev;
    memset(result, 0, sizeof(*result));
    if (key == NULL) {
        return ORC_STORE_EINVAL;
    }
    pthread_mutex_lock(&s->lock);
    orc_store_mem_reap(s, orc_util_now_ms());
    result->revision = s->revision;
    first            = orc_store_mem_lower_bound(s, key);
    for (i = first; (i < s->nentries) &&
                    orc_store_mem_in_range(s->entries[i]->key, key, range_end);
         ++i) {
        ++n;
    }
    result->total = n;
    if (flags & ORC_STORE_RANGE_COUNT_ONLY) {
        goto out_unlock;
    }
    if ((limit > 0) && (n > limit)) {
        n = limit;
    }
    if (n > 0) {
        result->kvs = calloc(n, sizeof(*result->kvs));
        if (result->kvs == NULL) {
            status = ORC_STORE_ENOMEM;
            goto out_unlock;
        }
    }
    for (i = 0; i < n; ++i) {
        status = orc_store_mem_copy_kv(s->entries[first + i], &result->kvs[i],
                                       !(flags & ORC_STORE_RANGE_KEYS_ONLY));
        if (status != ORC_STORE_OK) {
            break;
        }
        result->count = i + 1;
    }
out_unlock:
    pthread_mutex_unlock(&s->lock);
    if (status != ORC_STORE_OK) {
        orc_store_range_result_free(result);
    }
    return status;
}

static int orc_store_mem_cmp_holds(orc_store_mem_t *s,
                                   const orc_store_cmp_t *cmp)
{
    orc_store_mem_entry_t *e = orc_store_mem_find(s, cmp->key);
    uint64_t v               = 0;

    if (e != NULL) {
        switch (cmp->target) {
        case ORC_STORE_CMP_VERSION:
            v = e->version;
            break;
        case ORC_STORE_CMP_CREATE:
            v = e->create_rev;
            break;
        case ORC_STORE_CMP_MOD:
            v = e->mod_rev;
            break;
        case ORC_STORE_CMP_LEASE:
            v = (e->lease != NULL) ? e->lease->id : 0;
            break;
        }
    }
    switch (cmp->result) {
    case ORC_STORE_CMP_EQUAL:
        return v == cmp->value;
    case ORC_STORE_CMP_NOT_EQUAL:
        return v != cmp->value;
    case ORC_STORE_CMP_GREATER:
        return v > cmp->value;
    case ORC_STORE_CMP_LESS:
        return v < cmp->value;
    }
    return 0;
}

/*
 * Give key the value (lock held): the entry, created if missing (*created_p
 * set), with its value replaced and accounted; revisions, version and lease
 * are the caller's. NULL without memory (nothing changed).
 */
static orc_store_mem_entry_t *
orc_store_mem_set(orc_store_mem_t *s, const char *key, const void *value,
                  size_t value_len, int *created_p)
{
    orc_store_mem_entry_t *e;
    size_t i, old_len;
    char *copy;

    copy = malloc(value_len + 1);
    if (copy == NULL) {
        return NULL;
    }
    if (value_len > 0) {
        memcpy(copy, value, value_len);
    }
    copy[value_len] = '\0';
    i               = orc_store_mem_lower_bound(s, key);
    if ((i < s->nentries) && (strcmp(s->entries[i]->key, key) == 0)) {
        e       = s->entries[i];
        old_len = e->value_len;
        free(e->value);
        e->value     = copy;
        e->value_len = value_len;
        orc_store_mem_account_value(s, e, old_len);
        *created_p = 0;
        return e;
    }
    if (orc_store_mem_grow((void **)&s->entries, &s->entries_cap,
                           s->nentries + 1,
                           sizeof(s->entries[0])) != ORC_STORE_OK) {
        goto err_free_copy;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        goto err_free_copy;
    }
    e->key       = strdup(key);
    e->value     = copy;
    e->value_len = value_len;
    if ((e->key == NULL) || orc_store_mem_account_add(s, e)) {
        free(e->key);
        free(e);
        goto err_free_copy;
    }
    memmove(&s->entries[i + 1], &s->entries[i],
            (s->nentries - i) * sizeof(s->entries[0]));
    s->entries[i] = e;
    ++s->nentries;
    *created_p = 1;
    return e;

err_free_copy:
    free(copy);
    return NULL;
}

static int orc_store_mem_put_locked(orc_store_mem_t *s,
                                    const orc_store_op_t *op, uint64_t rev)
{
    orc_store_mem_lease_t *lease = NULL;
    orc_store_mem_entry_t *e;
    int created;

    if (op->lease != 0) {
        lease = orc_store_mem_lease_find(s, op->lease, NULL);
    }
    e = orc_store_mem_set(s, op->key, op->value, op->value_len, &created);
    if (e == NULL) {
        return ORC_STORE_ENOMEM;
    }
    if (created) {
        e->create_rev = rev;
        e->version    = 1;
    } else {
        ++e->version;
    }
    e->mod_rev = rev;
    if (e->lease != lease) {
        orc_store_mem_lease_detach(e);
        if (lease != NULL) {
            orc_store_mem_lease_attach(e, lease);
        }
    }
    orc_store_mem_event(s, e->key, rev);
    return ORC_STORE_OK;
}

static int orc_store_mem_txn(orc_store_t *store, const orc_store_cmp_t *cmps,
                             size_t ncmp, const orc_store_op_t *ops,
                             size_t nops, orc_store_txn_result_t *result)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    uint64_t rev;
    size_t i, first, n;
    int status = ORC_STORE_OK, changed = 0;

    memset(result, 0, sizeof(*result));
    for (i = 0; i < ncmp; ++i) {
        if (cmps[i].key == NULL) {
            return ORC_STORE_EINVAL;
        }
    }
    for (i = 0; i < nops; ++i) {
        if ((ops[i].key == NULL) ||
            ((ops[i].type == ORC_STORE_OP_PUT) && (ops[i].key[0] == '\0')) ||
            ((ops[i].value == NULL) && (ops[i].value_len > 0))) {
            return ORC_STORE_EINVAL;
        }
    }

    pthread_mutex_lock(&s->lock);
    orc_store_mem_reap(s, orc_util_now_ms());
    for (i = 0; i < ncmp; ++i) {
        if (!orc_store_mem_cmp_holds(s, &cmps[i])) {
            result->failed_cmp = i;
            status             = ORC_STORE_ECOMPARE;
            goto out_unlock;
        }
    }
    /* validate everything that can fail for a reason other than memory
     * before changing anything, so a failed txn changes nothing */
    for (i = 0; i < nops; ++i) {
        if ((ops[i].type == ORC_STORE_OP_PUT) && (ops[i].lease != 0) &&
            (orc_store_mem_lease_find(s, ops[i].lease, NULL) == NULL)) {
            status = ORC_STORE_ENOENT;
            goto out_unlock;
        }
    }

    rev = s->revision + 1;
    for (i = 0; i < nops; ++i) {
        if (ops[i].type == ORC_STORE_OP_PUT) {
            status = orc_store_mem_put_locked(s, &ops[i], rev);
            if (status != ORC_STORE_OK) {
                break;
            }
            changed = 1;
        } else {
            first = orc_store_mem_lower_bound(s, ops[i].key);
            for (n = 0; (first + n < s->nentries) &&
                        orc_store_mem_in_range(s->entries[first + n]->key,
                                               ops[i].key, ops[i].range_end);
                 ++n) {
            }
            if (n > 0) {
                orc_store_mem_remove(s, first, n, rev);
                result->deleted += n;
                changed = 1;
            }
        }
    }
    if (changed) {
        s->revision = rev;
    }
out_unlock:
    result->revision = s->revision;
    pthread_mutex_unlock(&s->lock);
    return status;
}

static int orc_store_mem_lease_grant(orc_store_t *store, int64_t ttl,
                                     uint64_t *id_p, int64_t *granted_p)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    orc_store_mem_lease_t *l;
    int status;

    if ((ttl <= 0) || (ttl > 1000000000)) {
        return ORC_STORE_EINVAL;
    }
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        return ORC_STORE_ENOMEM;
    }
    pthread_mutex_lock(&s->lock);
    status = orc_store_mem_grow((void **)&s->leases, &s->leases_cap,
                                s->nleases + 1, sizeof(s->leases[0]));
    if (status != ORC_STORE_OK) {
        pthread_mutex_unlock(&s->lock);
        free(l);
        return status;
    }
    l->id                   = ++s->last_lease_id;
    l->ttl                  = ttl;
    l->deadline_ms          = orc_util_now_ms() + (uint64_t)ttl * 1000u;
    s->leases[s->nleases++] = l; /* ids grow: stays sorted */
    if (l->deadline_ms < s->next_reap_ms) {
        s->next_reap_ms = l->deadline_ms;
        pthread_cond_signal(&s->reaper_cond);
    }
    *id_p = l->id;
    if (granted_p != NULL) {
        *granted_p = ttl;
    }
    pthread_mutex_unlock(&s->lock);
    return ORC_STORE_OK;
}

static int orc_store_mem_lease_keepalive(orc_store_t *store, uint64_t id,
                                         int64_t *ttl_p)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    orc_store_mem_lease_t *l;
    int status = ORC_STORE_ENOENT;

    pthread_mutex_lock(&s->lock);
    orc_store_mem_reap(s, orc_util_now_ms());
    l = orc_store_mem_lease_find(s, id, NULL);
    if (l != NULL) {
        l->deadline_ms = orc_util_now_ms() + (uint64_t)l->ttl * 1000u;
        if (ttl_p != NULL) {
            *ttl_p = l->ttl;
        }
        status = ORC_STORE_OK;
    }
    pthread_mutex_unlock(&s->lock);
    return status;
}

static int orc_store_mem_lease_revoke(orc_store_t *store, uint64_t id,
                                      uint64_t *rev_p)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    size_t index;
    int status = ORC_STORE_ENOENT;

    pthread_mutex_lock(&s->lock);
    orc_store_mem_reap(s, orc_util_now_ms());
    if (orc_store_mem_lease_find(s, id, &index) != NULL) {
        orc_store_mem_lease_drop(s, index);
        status = ORC_STORE_OK;
    }
    if (rev_p != NULL) {
        *rev_p = s->revision;
    }
    pthread_mutex_unlock(&s->lock);
    return status;
}

static int orc_store_mem_lease_ttl(orc_store_t *store, uint64_t id,
                                   int64_t *remaining_p, int64_t *granted_p)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    orc_store_mem_lease_t *l;
    uint64_t now;
    int status = ORC_STORE_ENOENT;

    pthread_mutex_lock(&s->lock);
    now = orc_util_now_ms();
    orc_store_mem_reap(s, now);
    l = orc_store_mem_lease_find(s, id, NULL);
    if (l != NULL) {
        if (remaining_p != NULL) {
            *remaining_p = (int64_t)((l->deadline_ms - now + 999) / 1000);
        }
        if (granted_p != NULL) {
            *granted_p = l->ttl;
        }
        status = ORC_STORE_OK;
    }
    pthread_mutex_unlock(&s->lock);
    return status;
}

static int orc_store_mem_watch_create(orc_store_t *store, const char *key,
                                      const char *range_end, uint64_t start_rev,
                                      orc_store_watch_cb_t cb, void *arg,
                                      uint64_t *id_p)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    orc_store_mem_watch_t *w;
    orc_store_mem_event_t *ev;
    size_t i, slot;

    if ((key == NULL) || (cb == NULL)) {
        return ORC_STORE_EINVAL;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return ORC_STORE_ENOMEM;
    }
    w->key       = strdup(key);
    w->range_end = (range_end != NULL) ? strdup(range_end) : NULL;
    if ((w->key == NULL) || ((range_end != NULL) && (w->range_end == NULL))) {
        goto err_free;
    }
    w->cb  = cb;
    w->arg = arg;

    pthread_mutex_lock(&s->lock);
    orc_store_mem_reap(s, orc_util_now_ms());
    w->start_rev = (start_rev == 0) ? s->revision + 1 : start_rev;
    if (w->start_rev <= s->compacted_rev) {
        goto fired;
    }
    /* newest to oldest, stop below start_rev */
    for (i = 0; i < s->hist_count; ++i) {
        slot = (s->hist_head + ORC_STORE_MEM_HISTORY - 1 - i) %
               ORC_STORE_MEM_HISTORY;
        ev = &s->history[slot];
        if (ev->rev < w->start_rev) {
            break;
        }
        if (orc_store_mem_in_range(ev->key, w->key, w->range_end)) {
            goto fired;
        }
    }
    w->id      = ++s->last_watch_id;
    w->next    = s->watches;
    s->watches = w;
    ++s->nwatches;
    *id_p = w->id;
    pthread_mutex_unlock(&s->lock);
    return ORC_STORE_OK;

fired:
    pthread_mutex_unlock(&s->lock);
    free(w->key);
    free(w->range_end);
    free(w);
    return ORC_STORE_FIRED;

err_free:
    free(w->key);
    free(w->range_end);
    free(w);
    return ORC_STORE_ENOMEM;
}

static int orc_store_mem_watch_cancel(orc_store_t *store, uint64_t id)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    orc_store_mem_watch_t **wp, *w;

    pthread_mutex_lock(&s->lock);
    for (wp = &s->watches; (w = *wp) != NULL; wp = &w->next) {
        if (w->id == id) {
            *wp = w->next;
            --s->nwatches;
            pthread_mutex_unlock(&s->lock);
            free(w->key);
            free(w->range_end);
            free(w);
            return ORC_STORE_OK;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return ORC_STORE_ENOENT;
}

static uint64_t orc_store_mem_revision(orc_store_t *store)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    uint64_t rev;

    pthread_mutex_lock(&s->lock);
    orc_store_mem_reap(s, orc_util_now_ms());
    rev = s->revision;
    pthread_mutex_unlock(&s->lock);
    return rev;
}

static void orc_store_mem_stats(orc_store_t *store, orc_store_stats_t *stats)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;

    pthread_mutex_lock(&s->lock);
    orc_store_mem_reap(s, orc_util_now_ms());
    stats->revision       = s->revision;
    stats->keys           = s->nentries;
    stats->bytes          = s->bytes;
    stats->leases         = s->nleases;
    stats->leases_expired = s->leases_expired;
    stats->watches        = s->nwatches;
    memcpy(stats->class_keys, s->class_keys, sizeof(stats->class_keys));
    stats->txn_batches      = 0; /* applied where they are made */
    stats->txns_batched     = 0;
    stats->txn_batch_max    = 0;
    stats->txns_waiting     = 0;
    stats->txn_inflight_max = 0;
    memset(stats->stages, 0, sizeof(stats->stages)); /* etcd only */
    pthread_mutex_unlock(&s->lock);
}

static void orc_store_mem_usage(orc_store_t *store, const char *group,
                                uint64_t *keys_p, uint64_t *bytes_p)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    size_t len         = strlen(group), i;

    *keys_p  = 0;
    *bytes_p = 0;
    pthread_mutex_lock(&s->lock);
    orc_store_mem_reap(s, orc_util_now_ms());
    i = orc_store_mem_group_find(s, group, len);
    if ((i < s->ngroups) &&
        !orc_store_mem_group_cmp(s->groups[i]->name, group, len)) {
        *keys_p  = s->groups[i]->keys;
        *bytes_p = s->groups[i]->bytes;
    }
    pthread_mutex_unlock(&s->lock);
}

static int orc_store_mem_health(orc_store_t *store)
{
    (void)store;
    return ORC_STORE_OK;
}

/* ------------------------------------------------------ bulk loads, replicas */

static int orc_store_mem_key_cmp(const void *a, const void *b)
{
    return strcmp((*(orc_store_mem_entry_t *const *)a)->key,
                  (*(orc_store_mem_entry_t *const *)b)->key);
}

int orc_store_mem_load_entry(orc_store_mem_t *s, const orc_store_kv_t *kv,
                             orc_store_mem_lease_t *lease)
{
    orc_store_mem_entry_t *e;

    if (orc_store_mem_grow((void **)&s->entries, &s->entries_cap,
                           s->nentries + 1, sizeof(s->entries[0]))) {
        return ORC_STORE_ENOMEM;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return ORC_STORE_ENOMEM;
    }
    e->key   = strdup(kv->key);
    e->value = malloc(kv->value_len + 1);
    if ((e->key == NULL) || (e->value == NULL)) {
        goto err_free;
    }
    if (kv->value_len > 0) {
        memcpy(e->value, kv->value, kv->value_len);
    }
    e->value[kv->value_len] = '\0';
    e->value_len            = kv->value_len;
    if (orc_store_mem_account_add(s, e)) {
        goto err_free;
    }
    e->create_rev = kv->create_rev;
    e->mod_rev    = kv->mod_rev;
    e->version    = kv->version;
    e->lease_id   = kv->lease;
    if (lease != NULL) {
        orc_store_mem_lease_attach(e, lease);
    }
    s->entries[s->nentries++] = e;
    return ORC_STORE_OK;

err_free:
    free(e->key);
    free(e->value);
    free(e);
    return ORC_STORE_ENOMEM;
}

int orc_store_mem_load_end(orc_store_mem_t *s, const char **dup_p)
{
    size_t i;

    if (s->nentries > 1) {
        qsort(s->entries, s->nentries, sizeof(s->entries[0]),
              orc_store_mem_key_cmp);
    }
    for (i = 1; i < s->nentries; ++i) {
        if (strcmp(s->entries[i]->key, s->entries[i - 1]->key) == 0) {
            *dup_p = s->entries[i]->key;
            return ORC_STORE_EINVAL;
        }
    }
    return ORC_STORE_OK;
}

void orc_store_mem_clear(orc_store_mem_t *s)
{
    while (s->nentries > 0) {
        orc_store_mem_entry_free(s, s->entries[--s->nentries]);
    }
    while (s->nleases > 0) {
        free(s->leases[--s->nleases]);
    }
}

/* Lock held: the revision moved; wake the readers waiting (all of them,
 * once the lowest one wanted is reached: those still short wait again and
 * say so) */
static void orc_store_mem_rev_reached(orc_store_mem_t *s)
{
    if (s->revision >= s->rev_wanted) {
        s->rev_wanted = UINT64_MAX;
        pthread_cond_broadcast(&s->rev_cond);
    }
}

int orc_store_mem_apply(orc_store_t *store, uint64_t rev,
                        const orc_store_event_t *events, size_t count)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    orc_store_mem_entry_t *e;
    int status = ORC_STORE_OK, created;
    size_t i, at;

    pthread_mutex_lock(&s->lock);
    for (i = 0; i < count; ++i) {
        if (events[i].is_delete) {
            at = orc_store_mem_lower_bound(s, events[i].kv.key);
            if ((at < s->nentries) &&
                !strcmp(s->entries[at]->key, events[i].kv.key)) {
                orc_store_mem_remove(s, at, 1, rev);
            }
            continue;
        }
        e = orc_store_mem_set(s, events[i].kv.key, events[i].kv.value,
                              events[i].kv.value_len, &created);
        if (e == NULL) {
            status = ORC_STORE_ENOMEM;
            break;
        }
        e->create_rev = events[i].kv.create_rev;
        e->mod_rev    = events[i].kv.mod_rev;
        e->version    = events[i].kv.version;
        e->lease_id   = events[i].kv.lease;
        orc_store_mem_event(s, e->key, rev);
    }
    if (rev > s->revision) {
        s->revision = rev;
    }
    orc_store_mem_rev_reached(s);
    pthread_mutex_unlock(&s->lock);
    return status;
}

/* Fire every watch (lock held): what it waits for may have changed */
static void orc_store_mem_fire_all(orc_store_mem_t *s, uint64_t rev)
{
    orc_store_mem_watch_t *w;

    while ((w = s->watches) != NULL) {
        s->watches = w->next;
        --s->nwatches;
        w->cb(w->arg, rev);
        free(w->key);
        free(w->range_end);
        free(w);
    }
}

int orc_store_mem_reset(orc_store_t *store, uint64_t rev,
                        const orc_store_kv_t *kvs, size_t count)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    const char *dup;
    size_t i;
    int status = ORC_STORE_OK;

    pthread_mutex_lock(&s->lock);
    orc_store_mem_clear(s);
    for (i = 0; (i < count) && (status == ORC_STORE_OK); ++i) {
        status = orc_store_mem_load_entry(s, &kvs[i], NULL);
    }
    if ((status == ORC_STORE_OK) &&
        (orc_store_mem_load_end(s, &dup) != ORC_STORE_OK)) {
        orc_store_error("replica: duplicate key '%s'", dup);
        status = ORC_STORE_EINVAL;
    }
    if (status != ORC_STORE_OK) {
        orc_store_mem_clear(s);
    }
    s->revision      = rev;
    s->compacted_rev = rev; /* no history before it */
    orc_store_mem_fire_all(s, rev);
    s->rev_wanted = 0; /* everyone looks again */
    orc_store_mem_rev_reached(s);
    pthread_mutex_unlock(&s->lock);
    return status;
}

int orc_store_mem_wait_rev(orc_store_t *store, uint64_t rev,
                           unsigned timeout_ms)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    uint64_t deadline  = orc_util_now_ms() + timeout_ms;
    struct timespec ts;
    int reached;

    ts.tv_sec  = (time_t)(deadline / 1000);
    ts.tv_nsec = (long)(deadline % 1000) * 1000000L;
    pthread_mutex_lock(&s->lock);
    while ((s->revision < rev) && (orc_util_now_ms() < deadline)) {
        s->rev_wanted = (rev < s->rev_wanted) ? rev : s->rev_wanted;
        pthread_cond_timedwait(&s->rev_cond, &s->lock, &ts);
    }
    reached = (s->revision >= rev);
    pthread_mutex_unlock(&s->lock);
    return reached;
}

/* --------------------------------------------------------------- lifetime */

static void *orc_store_mem_reaper(void *arg)
{
    orc_store_mem_t *s = arg;
    struct timespec ts;
    uint64_t now, wake;

    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        now = orc_util_now_ms();
        orc_store_mem_reap(s, now);
        wake = now + s->params.reap_ms;
        if (s->next_reap_ms < wake) {
            wake = s->next_reap_ms;
        }
        ts.tv_sec  = (time_t)(wake / 1000);
        ts.tv_nsec = (long)(wake % 1000) * 1000000L;
        pthread_cond_timedwait(&s->reaper_cond, &s->lock, &ts);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void orc_store_mem_close(orc_store_t *store)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    orc_store_mem_watch_t *w;
    size_t i;

    if (s->reaper_started) {
        pthread_mutex_lock(&s->lock);
        s->stopping = 1;
        pthread_cond_signal(&s->reaper_cond);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->reaper, NULL);
    }
    orc_store_mem_clear(s);
    for (i = 0; i < ORC_STORE_MEM_HISTORY; ++i) {
        free(s->history[i].key);
    }
    while ((w = s->watches) != NULL) {
        s->watches = w->next;
        free(w->key);
        free(w->range_end);
        free(w);
    }
    free(s->history);
    free(s->entries);
    free(s->leases);
    free(s->groups); /* each group went with its last key */
    pthread_cond_destroy(&s->reaper_cond);
    pthread_cond_destroy(&s->rev_cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static const orc_store_ops_t orc_store_mem_ops = {
    .name            = "memory",
    .range           = orc_store_mem_range,
    .txn             = orc_store_mem_txn,
    .lease_grant     = orc_store_mem_lease_grant,
    .lease_keepalive = orc_store_mem_lease_keepalive,
    .lease_revoke    = orc_store_mem_lease_revoke,
    .lease_ttl       = orc_store_mem_lease_ttl,
    .watch_create    = orc_store_mem_watch_create,
    .watch_cancel    = orc_store_mem_watch_cancel,
    .revision        = orc_store_mem_revision,
    .stats           = orc_store_mem_stats,
    .usage           = orc_store_mem_usage,
    .health          = orc_store_mem_health,
    .snapshot_save   = orc_store_mem_snapshot_save,
    .snapshot_load   = orc_store_mem_snapshot_load,
    .close           = orc_store_mem_close,
};

/* A replica's slots for what its owner answers */
static int orc_store_mem_replica_txn(orc_store_t *store,
                                     const orc_store_cmp_t *cmps, size_t ncmp,
                                     const orc_store_op_t *ops, size_t nops,
                                     orc_store_txn_result_t *result)
{
    (void)store;
    (void)cmps;
    (void)ncmp;
    (void)ops;
    (void)nops;
    memset(result, 0, sizeof(*result));
    return ORC_STORE_ENOTSUP;
}

static int orc_store_mem_replica_grant(orc_store_t *store, int64_t ttl,
                                       uint64_t *id_p, int64_t *granted_p)
{
    (void)store;
    (void)ttl;
    (void)id_p;
    (void)granted_p;
    return ORC_STORE_ENOTSUP;
}

static const orc_store_ops_t orc_store_mem_replica_ops = {
    .name            = "memory replica",
    .range           = orc_store_mem_range,
    .txn             = orc_store_mem_replica_txn,
    .lease_grant     = orc_store_mem_replica_grant,
    .lease_keepalive = orc_store_mem_lease_keepalive,
    .lease_revoke    = orc_store_mem_lease_revoke,
    .lease_ttl       = orc_store_mem_lease_ttl,
    .watch_create    = orc_store_mem_watch_create,
    .watch_cancel    = orc_store_mem_watch_cancel,
    .revision        = orc_store_mem_revision,
    .stats           = orc_store_mem_stats,
    .usage           = orc_store_mem_usage,
    .health          = orc_store_mem_health,
    .snapshot_save   = orc_store_unsupported_snapshot,
    .snapshot_load   = orc_store_unsupported_snapshot,
    .close           = orc_store_mem_close,
};

static orc_store_mem_t *orc_store_mem_new(const orc_store_params_t *params)
{
    pthread_condattr_t cattr;
    orc_store_mem_t *s;

    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    s->history = calloc(ORC_STORE_MEM_HISTORY, sizeof(*s->history));
    if (s->history == NULL) {
        free(s);
        return NULL;
    }
    if (params != NULL) {
        s->params = *params;
    }
    if (s->params.reap_ms == 0) {
        s->params.reap_ms = 100;
    }
    s->revision     = 1; /* etcd starts at 1 */
    s->next_reap_ms = UINT64_MAX;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->reaper_cond, &cattr);
    pthread_cond_init(&s->rev_cond, &cattr);
    pthread_condattr_destroy(&cattr);
    s->rev_wanted = UINT64_MAX;
    return s;
}

int orc_store_mem_open(const orc_store_params_t *params, orc_store_t **store_p)
{
    orc_store_mem_t *s = orc_store_mem_new(params);
    int ret;

    if (s == NULL) {
        return ORC_STORE_ENOMEM;
    }
    s->super.ops = &orc_store_mem_ops;
    ret          = pthread_create(&s->reaper, NULL, orc_store_mem_reaper, s);
    if (ret != 0) {
        errno = ret;
        orc_store_error("cannot start the lease reaper: %m");
        orc_store_mem_close(&s->super);
        return ORC_STORE_ENOMEM;
    }
    s->reaper_started = 1;
    *store_p          = &s->super;
    return ORC_STORE_OK;
}

int orc_store_mem_open_replica(const orc_store_params_t *params,
                               orc_store_t **store_p)
{
    orc_store_mem_t *s = orc_store_mem_new(params);

    if (s == NULL) {
        return ORC_STORE_ENOMEM;
    }
    s->super.ops = &orc_store_mem_replica_ops;
    s->replica   = 1;
    *store_p     = &s->super;
    return ORC_STORE_OK;
}
