/*
 * orc store, memory implementation: the structures and the helpers shared
 * by its files (orc_store_mem.c: keys, leases, watches, replicas;
 * orc_store_mem_snapshot.c: snapshots). Not for use elsewhere.
 */
#ifndef ORC_STORE_MEM_INT_H_
#define ORC_STORE_MEM_INT_H_

#include "orc_store.h"

#include <pthread.h>

#define ORC_STORE_MEM_HISTORY 8192

typedef struct orc_store_mem_lease orc_store_mem_lease_t;

/* Keys and bytes of one group */
typedef struct orc_store_mem_group {
    char *name;
    uint64_t keys;
    uint64_t bytes;
} orc_store_mem_group_t;

typedef struct orc_store_mem_entry {
    char *key;
    char *value;
    size_t value_len;
    uint64_t create_rev;
    uint64_t mod_rev;
    uint64_t version;
    uint64_t lease_id;            /* 0: none */
    orc_store_mem_group_t *group; /* NULL: no groups */
    unsigned cls;
    orc_store_mem_lease_t *lease; /* NULL in a replica */
    struct orc_store_mem_entry *lease_prev;
    struct orc_store_mem_entry *lease_next;
} orc_store_mem_entry_t;

struct orc_store_mem_lease {
    uint64_t id;
    int64_t ttl;
    uint64_t deadline_ms; /* CLOCK_MONOTONIC */
    orc_store_mem_entry_t *keys;
};

typedef struct orc_store_mem_event {
    uint64_t rev;
    char *key;
} orc_store_mem_event_t;

typedef struct orc_store_mem_watch {
    uint64_t id;
    char *key;
    char *range_end;
    uint64_t start_rev;
    orc_store_watch_cb_t cb;
    void *arg;
    struct orc_store_mem_watch *next;
} orc_store_mem_watch_t;

/*
 * Locking: every field below super is protected by lock, except reaper (set
 * once before the reaper thread starts), params and replica (constant). The
 * reaper thread waits on reaper_cond, replica readers on rev_cond, with lock
 * held; rev_wanted is the lowest revision a reader waits for (UINT64_MAX:
 * none), so that a revision that satisfies nobody wakes nobody.
 */
typedef struct orc_store_mem {
    orc_store_t super;
    pthread_mutex_t lock;
    pthread_cond_t reaper_cond;
    pthread_cond_t rev_cond;
    uint64_t rev_wanted;
    pthread_t reaper;
    int reaper_started;
    int stopping;
    int replica;
    orc_store_params_t params;
    uint64_t revision;
    orc_store_mem_group_t **groups; /* sorted by name */
    size_t ngroups;
    size_t groups_cap;
    uint64_t class_keys[ORC_STORE_CLASSES];
    orc_store_mem_entry_t **entries;
    size_t nentries;
    size_t entries_cap;
    orc_store_mem_lease_t **leases; /* sorted by id (ids grow) */
    size_t nleases;
    size_t leases_cap;
    uint64_t last_lease_id;
    uint64_t next_reap_ms;
    orc_store_mem_event_t *history; /* ring */
    size_t hist_head;               /* next slot to write */
    size_t hist_count;
    uint64_t compacted_rev; /* events <= this are gone */
    orc_store_mem_watch_t *watches;
    size_t nwatches;
    uint64_t last_watch_id;
    uint64_t bytes;
    uint64_t leases_expired;
} orc_store_mem_t;

/* Helpers (lock held) */
void orc_store_mem_reap(orc_store_mem_t *s, uint64_t now);
int orc_store_mem_grow(void **array, size_t *cap, size_t need, size_t elem);
orc_store_mem_lease_t *orc_store_mem_lease_find(orc_store_mem_t *s, uint64_t id,
                                                size_t *index_p);
/* Bulk loading into an empty store: append an entry with kv's key, value
 * and metadata (on lease, if not NULL), then sort them all (EINVAL if two
 * share a key, named in *dup_p). */
int orc_store_mem_load_entry(orc_store_mem_t *s, const orc_store_kv_t *kv,
                             orc_store_mem_lease_t *lease);
int orc_store_mem_load_end(orc_store_mem_t *s, const char **dup_p);
/* Drop every entry and lease */
void orc_store_mem_clear(orc_store_mem_t *s);

/* Snapshots (orc_store_mem_snapshot.c) */
int orc_store_mem_snapshot_save(orc_store_t *store, const char *path);
int orc_store_mem_snapshot_load(orc_store_t *store, const char *path);

#endif
