/*
 * orc store: in-memory implementation.
 *
 * Keys live in one array of entry pointers sorted by key (binary search for
 * get, contiguous scan for ranges). Each lease keeps an intrusive list of the
 * entries attached to it, so revoking is proportional to its own keys. A ring
 * of recent events (revision, key) lets watches start from a past revision;
 * once the ring wrapped past start_rev the watch fires at once, like an etcd
 * watch on a compacted revision (the caller re-reads and re-watches).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_store.h"
#include "coordinator/common/orc_util.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ORC_STORE_MEM_HISTORY 8192

typedef struct orc_store_mem_lease orc_store_mem_lease_t;

typedef struct orc_store_mem_entry {
    char                       *key;
    char                       *value;
    size_t                      value_len;
    uint64_t                    create_rev;
    uint64_t                    mod_rev;
    uint64_t                    version;
    orc_store_mem_lease_t      *lease;
    struct orc_store_mem_entry *lease_prev;
    struct orc_store_mem_entry *lease_next;
} orc_store_mem_entry_t;

struct orc_store_mem_lease {
    uint64_t               id;
    int64_t                ttl;
    uint64_t               deadline_ms; /* CLOCK_MONOTONIC */
    orc_store_mem_entry_t *keys;
};

typedef struct orc_store_mem_event {
    uint64_t rev;
    char    *key;
} orc_store_mem_event_t;

typedef struct orc_store_mem_watch {
    uint64_t                    id;
    char                       *key;
    char                       *range_end;
    uint64_t                    start_rev;
    orc_store_watch_cb_t        cb;
    void                       *arg;
    struct orc_store_mem_watch *next;
} orc_store_mem_watch_t;

/*
 * Locking: every field below super is protected by lock, except reaper (set
 * once before the reaper thread starts) and reap_ms (constant). The reaper
 * thread waits on reaper_cond with lock held.
 */
typedef struct orc_store_mem {
    orc_store_t              super;
    pthread_mutex_t          lock;
    pthread_cond_t           reaper_cond;
    pthread_t                reaper;
    int                      stopping;
    unsigned                 reap_ms;
    uint64_t                 revision;
    orc_store_mem_entry_t  **entries;
    size_t                   nentries;
    size_t                   entries_cap;
    orc_store_mem_lease_t  **leases; /* sorted by id (ids grow) */
    size_t                   nleases;
    size_t                   leases_cap;
    uint64_t                 last_lease_id;
    uint64_t                 next_reap_ms;
    orc_store_mem_event_t   *history; /* ring */
    size_t                   hist_head;  /* next slot to write */
    size_t                   hist_count;
    uint64_t                 compacted_rev; /* events <= this are gone */
    orc_store_mem_watch_t   *watches;
    size_t                   nwatches;
    uint64_t                 last_watch_id;
    uint64_t                 bytes;
    uint64_t                 leases_expired;
} orc_store_mem_t;

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

static orc_store_mem_lease_t *orc_store_mem_lease_find(orc_store_mem_t *s,
                                                       uint64_t id,
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
    e->lease_prev = NULL;
    e->lease_next = NULL;
}

static void orc_store_mem_lease_attach(orc_store_mem_entry_t *e,
                                       orc_store_mem_lease_t *l)
{
    e->lease      = l;
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

static void orc_store_mem_entry_free(orc_store_mem_t *s,
                                     orc_store_mem_entry_t *e)
{
    s->bytes -= strlen(e->key) + e->value_len;
    orc_store_mem_lease_detach(e);
    free(e->key);
    free(e->value);
    free(e);
}

/* Remove entries [first, first+count) from the array, emitting events. */
static void orc_store_mem_remove(orc_store_mem_t *s, size_t first,
                                 size_t count, uint64_t rev)
{
    size_t i;

    for (i = first; i < first + count; ++i) {
        orc_store_mem_event(s, s->entries[i]->key, rev);
        orc_store_mem_entry_free(s, s->entries[i]);
    }
    memmove(&s->entries[first], &s->entries[first + count],
            (s->nentries - first - count) * sizeof(s->entries[0]));
    s->nentries -= count;
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
static void orc_store_mem_reap(orc_store_mem_t *s, uint64_t now)
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

static int orc_store_mem_grow(void **array, size_t *cap, size_t need,
                              size_t elem)
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
    kv->lease      = (e->lease != NULL) ? e->lease->id : 0;
    return ORC_STORE_OK;
}

static int orc_store_mem_range(orc_store_t *store, const char *key,
                               const char *range_end, unsigned flags,
                               size_t limit, orc_store_range_result_t *result)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    size_t first, i, n = 0;
    int status = ORC_STORE_OK;

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
        case ORC_STORE_CMP_VERSION: v = e->version; break;
        case ORC_STORE_CMP_CREATE:  v = e->create_rev; break;
        case ORC_STORE_CMP_MOD:     v = e->mod_rev; break;
        case ORC_STORE_CMP_LEASE:
            v = (e->lease != NULL) ? e->lease->id : 0;
            break;
        }
    }
    switch (cmp->result) {
    case ORC_STORE_CMP_EQUAL:     return v == cmp->value;
    case ORC_STORE_CMP_NOT_EQUAL: return v != cmp->value;
    case ORC_STORE_CMP_GREATER:   return v > cmp->value;
    case ORC_STORE_CMP_LESS:      return v < cmp->value;
    }
    return 0;
}

static int orc_store_mem_put_locked(orc_store_mem_t *s,
                                    const orc_store_op_t *op, uint64_t rev)
{
    orc_store_mem_lease_t *lease = NULL;
    orc_store_mem_entry_t *e;
    char *value;
    size_t i;

    if (op->lease != 0) {
        lease = orc_store_mem_lease_find(s, op->lease, NULL);
    }
    value = malloc(op->value_len + 1);
    if (value == NULL) {
        return ORC_STORE_ENOMEM;
    }
    if (op->value_len > 0) {
        memcpy(value, op->value, op->value_len);
    }
    value[op->value_len] = '\0';

    i = orc_store_mem_lower_bound(s, op->key);
    if ((i < s->nentries) && (strcmp(s->entries[i]->key, op->key) == 0)) {
        e         = s->entries[i];
        s->bytes -= e->value_len;
        free(e->value);
        ++e->version;
    } else {
        if (orc_store_mem_grow((void **)&s->entries, &s->entries_cap,
                               s->nentries + 1, sizeof(s->entries[0])) !=
            ORC_STORE_OK) {
            goto err_free_value;
        }
        e = calloc(1, sizeof(*e));
        if (e == NULL) {
            goto err_free_value;
        }
        e->key = strdup(op->key);
        if (e->key == NULL) {
            free(e);
            goto err_free_value;
        }
        memmove(&s->entries[i + 1], &s->entries[i],
                (s->nentries - i) * sizeof(s->entries[0]));
        s->entries[i] = e;
        ++s->nentries;
        e->create_rev = rev;
        e->version    = 1;
        s->bytes     += strlen(e->key);
    }
    e->value     = value;
    e->value_len = op->value_len;
    e->mod_rev   = rev;
    s->bytes    += op->value_len;
    if (e->lease != lease) {
        orc_store_mem_lease_detach(e);
        if (lease != NULL) {
            orc_store_mem_lease_attach(e, lease);
        }
    }
    orc_store_mem_event(s, e->key, rev);
    return ORC_STORE_OK;

err_free_value:
    free(value);
    return ORC_STORE_ENOMEM;
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
                changed          = 1;
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
                                     uint64_t *id_p)
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
    l->id          = ++s->last_lease_id;
    l->ttl         = ttl;
    l->deadline_ms = orc_util_now_ms() + (uint64_t)ttl * 1000u;
    s->leases[s->nleases++] = l; /* ids grow: stays sorted */
    if (l->deadline_ms < s->next_reap_ms) {
        s->next_reap_ms = l->deadline_ms;
        pthread_cond_signal(&s->reaper_cond);
    }
    *id_p = l->id;
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

static int orc_store_mem_lease_revoke(orc_store_t *store, uint64_t id)
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
                                      const char *range_end,
                                      uint64_t start_rev,
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
        ev   = &s->history[slot];
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
    pthread_mutex_unlock(&s->lock);
}

/* ------------------------------------------------------------ snapshots */

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
        o = json_pack("{s:s, s:s%, s:I, s:I, s:I, s:I}", "key", e->key,
                      "value", e->value, e->value_len, "create_rev",
                      (json_int_t)e->create_rev, "mod_rev",
                      (json_int_t)e->mod_rev, "version",
                      (json_int_t)e->version, "lease",
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

static int orc_store_mem_snapshot_save(orc_store_t *store, const char *path)
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

static int orc_store_mem_key_cmp(const void *a, const void *b)
{
    return strcmp((*(orc_store_mem_entry_t *const *)a)->key,
                  (*(orc_store_mem_entry_t *const *)b)->key);
}

static int orc_store_mem_lease_cmp(const void *a, const void *b)
{
    uint64_t x = (*(orc_store_mem_lease_t *const *)a)->id;
    uint64_t y = (*(orc_store_mem_lease_t *const *)b)->id;

    return (x > y) - (x < y);
}

static int orc_store_mem_snapshot_load(orc_store_t *store, const char *path)
{
    orc_store_mem_t *s = (orc_store_mem_t *)store;
    json_t *root, *leases, *kvs, *o;
    json_int_t rev, last_lease, id, ttl, crev, mrev, ver, lid;
    const char *format, *key, *value;
    size_t value_len, i;
    orc_store_mem_entry_t *e;
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
    json_array_foreach(leases, i, o) {
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
        l->id          = (uint64_t)id;
        l->ttl         = ttl;
        l->deadline_ms = now + (uint64_t)ttl * 1000u; /* fresh TTL */
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
    json_array_foreach(kvs, i, o) {
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
        e = calloc(1, sizeof(*e));
        if (e == NULL) {
            status = ORC_STORE_ENOMEM;
            goto out_clear;
        }
        e->key   = strdup(key);
        e->value = malloc(value_len + 1);
        if ((e->key == NULL) || (e->value == NULL)) {
            free(e->key);
            free(e->value);
            free(e);
            status = ORC_STORE_ENOMEM;
            goto out_clear;
        }
        memcpy(e->value, value, value_len);
        e->value[value_len] = '\0';
        e->value_len        = value_len;
        e->create_rev       = (uint64_t)crev;
        e->mod_rev          = (uint64_t)mrev;
        e->version          = (uint64_t)ver;
        s->entries[s->nentries++] = e;
        s->bytes += strlen(e->key) + value_len;
        if (l != NULL) {
            orc_store_mem_lease_attach(e, l);
        }
    }
    if (s->nentries > 1) {
        qsort(s->entries, s->nentries, sizeof(s->entries[0]),
              orc_store_mem_key_cmp);
    }
    for (i = 1; i < s->nentries; ++i) {
        if (strcmp(s->entries[i]->key, s->entries[i - 1]->key) == 0) {
            orc_store_error("snapshot %s: duplicate key '%s'", path,
                            s->entries[i]->key);
            goto out_clear;
        }
    }
    s->revision      = (uint64_t)rev;
    s->compacted_rev = (uint64_t)rev; /* no history before the restart */
    s->last_lease_id = (uint64_t)last_lease;
    s->next_reap_ms  = 0;
    status           = ORC_STORE_OK;
    goto out_unlock;

out_clear:
    while (s->nentries > 0) {
        orc_store_mem_entry_free(s, s->entries[--s->nentries]);
    }
    while (s->nleases > 0) {
        free(s->leases[--s->nleases]);
    }
    s->bytes = 0;
out_unlock:
    pthread_mutex_unlock(&s->lock);
out_decref:
    json_decref(root);
    return status;
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
        wake = now + s->reap_ms;
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

    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    pthread_cond_signal(&s->reaper_cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->reaper, NULL);

    for (i = 0; i < s->nentries; ++i) {
        free(s->entries[i]->key);
        free(s->entries[i]->value);
        free(s->entries[i]);
    }
    for (i = 0; i < s->nleases; ++i) {
        free(s->leases[i]);
    }
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
    pthread_cond_destroy(&s->reaper_cond);
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
    .snapshot_save   = orc_store_mem_snapshot_save,
    .snapshot_load   = orc_store_mem_snapshot_load,
    .close           = orc_store_mem_close,
};

int orc_store_mem_open(unsigned reap_ms, orc_store_t **store_p)
{
    pthread_condattr_t cattr;
    orc_store_mem_t *s;
    int ret;

    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return ORC_STORE_ENOMEM;
    }
    s->history = calloc(ORC_STORE_MEM_HISTORY, sizeof(*s->history));
    if (s->history == NULL) {
        goto err_free;
    }
    s->super.ops    = &orc_store_mem_ops;
    s->reap_ms      = (reap_ms == 0) ? 100 : reap_ms;
    s->revision     = 1; /* etcd starts at 1 */
    s->next_reap_ms = UINT64_MAX;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->reaper_cond, &cattr);
    pthread_condattr_destroy(&cattr);

    ret = pthread_create(&s->reaper, NULL, orc_store_mem_reaper, s);
    if (ret != 0) {
        errno = ret;
        orc_store_error("cannot start the lease reaper: %m");
        goto err_destroy;
    }
    *store_p = &s->super;
    return ORC_STORE_OK;

err_destroy:
    pthread_cond_destroy(&s->reaper_cond);
    pthread_mutex_destroy(&s->lock);
err_free:
    free(s->history);
    free(s);
    return ORC_STORE_ENOMEM;
}
