/*
 * orc store on etcd: the structure and helpers shared by its files
 * (orc_store_etcd.c: the store's calls; orc_store_etcd_watch.c: the watch
 * that feeds the cache). Not for use elsewhere.
 */
#ifndef ORC_STORE_ETCD_INT_H_
#define ORC_STORE_ETCD_INT_H_

#include "orc_store_etcd.h"

#include <pthread.h>
#include <stdatomic.h>

/*
 * The store. Immutable after open, except: live (atomic: the watch is up,
 * written by the watch thread), stop (atomic: set by close), written
 * (atomic: the newest revision this store wrote at) and the watch
 * thread's own fields (wait_lock/wait_cond: its sleeps between attempts,
 * woken by close). The cache and the etcd client are thread-safe.
 */
typedef struct orc_store_etcd {
    orc_store_t super;
    orc_etcd_t *etcd;
    orc_store_t *cache;
    char *prefix;
    size_t plen;
    unsigned cache_wait_ms;
    _Atomic int live;
    _Atomic uint64_t written;
    _Atomic int stop;
    pthread_t watcher;
    int watcher_started;
    pthread_mutex_t wait_lock;
    pthread_cond_t wait_cond;
} orc_store_etcd_t;

/* The etcd key of key (base64 JSON string), prefix added */
json_t *orc_store_etcd_key(orc_store_etcd_t *s, const char *key);
/* Keys of the store start with '/' ("" in a range: the first key) */
int orc_store_etcd_valid_key(const char *key);
/* An etcd kv object as a store kv, prefix stripped: 0, or -1 */
int orc_store_etcd_kv(orc_store_etcd_t *s, json_t *o, int with_value,
                      orc_store_kv_t *kv);
/* The newest mod_revision of etcd kvs (a JSON array), or rev if older */
uint64_t orc_store_etcd_max_mod(json_t *kvs, uint64_t rev);
/* A range read on etcd (not the cache); res->revision is the newest of
 * this store's (see orc_store_etcd.c), *etcd_rev_p (may be NULL) etcd's */
int orc_store_etcd_range_direct(orc_store_etcd_t *s, const char *key,
                                const char *range_end, unsigned flags,
                                size_t limit, orc_store_range_result_t *res,
                                uint64_t *etcd_rev_p);

/* The watch (orc_store_etcd_watch.c): load the cache, then keep it fed.
 * start: 0, or -1 with the reason in err (the first load failed). */
int orc_store_etcd_watch_start(orc_store_etcd_t *s, char *err, size_t errlen);
void orc_store_etcd_watch_stop(orc_store_etcd_t *s);

#endif
