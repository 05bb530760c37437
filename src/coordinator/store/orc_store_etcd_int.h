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

/* A txn waiting to go to etcd (orc_store_etcd_batch.c) */
typedef struct orc_store_etcd_pending orc_store_etcd_pending_t;

/*
 * The batcher (orc_store_etcd_batch.c): txns of request threads queued to
 * go to etcd together. Every field is under lock, and so are the queued
 * txns' states; each caller sleeps on its own txn's condition (with lock)
 * until its txn is answered or it is its turn to send a batch.
 * queue: head..tail, oldest first, waiting txns not sent yet; inflight: batches
 * on their way (at most depth, set at init), inflight_max the most at once;
 * batches, txns, max: batches sent, the txns they carried, the largest.
 */
typedef struct orc_store_etcd_batcher {
    pthread_mutex_t lock;
    orc_store_etcd_pending_t *head, *tail;
    size_t waiting;
    unsigned depth;
    unsigned inflight;
    unsigned inflight_max;
    uint64_t batches;
    uint64_t txns;
    uint64_t max;
} orc_store_etcd_batcher_t;

/* A stage's histogram (orc_store_stats_t::stages): relaxed atomics, each
 * counted on its own (a reader may see a count without its sum yet) */
typedef struct orc_store_etcd_stage {
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
    _Atomic uint64_t buckets[ORC_STORE_STAGE_BUCKETS];
} orc_store_etcd_stage_t;

/*
 * The store. Immutable after open, except: live (atomic: the watch is up,
 * written by the watch thread), stop (atomic: set by close), written
 * (atomic: the newest revision this store wrote at) and the watch
 * thread's own fields (wait_lock/wait_cond: its sleeps between attempts,
 * woken by close), and the batcher (its own lock). The cache and the etcd
 * client are thread-safe.
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
    orc_store_etcd_batcher_t batcher;
    orc_store_etcd_stage_t stages[ORC_STORE_STAGES];
    /* the write whose way to the cache is timed (ORC_STORE_STAGE_WATCH):
     * its revision (0: none) and when it was answered; under probe_lock */
    pthread_mutex_t probe_lock;
    uint64_t probe_rev;
    uint64_t probe_ns;
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

/* Count us microseconds in a stage */
void orc_store_etcd_stage_add(orc_store_etcd_t *s, orc_store_stage_id_t id,
                              uint64_t us);
/* The cache reached rev: time the write probed, if rev shows it */
void orc_store_etcd_probe_reached(orc_store_etcd_t *s, uint64_t rev);

/* The batcher. Its queue is empty when no txn call is running, as at
 * close: every queued txn is its caller's, who waits in batch_txn. */
void orc_store_etcd_batch_init(orc_store_etcd_batcher_t *b, unsigned depth);
void orc_store_etcd_batch_fini(orc_store_etcd_batcher_t *b);
void orc_store_etcd_batch_stats(orc_store_etcd_batcher_t *b,
                                orc_store_stats_t *stats);
/* POST /v3/kv/txn body (a txn request for cmps and ops; reference stolen)
 * together with other callers' txns, within etcd's call budget from now:
 * the status orc_etcd_call() would give the txn alone, and on ORC_STORE_OK
 * *reply_p shaped as that txn's own answer (header, succeeded, responses;
 * json_decref it) */
int orc_store_etcd_batch_txn(orc_store_etcd_t *s, json_t *body,
                             const orc_store_cmp_t *cmps, size_t ncmp,
                             const orc_store_op_t *ops, size_t nops,
                             json_t **reply_p);

/* The watch (orc_store_etcd_watch.c): load the cache, then keep it fed.
 * start: 0, or -1 with the reason in err (the first load failed). */
int orc_store_etcd_watch_start(orc_store_etcd_t *s, char *err, size_t errlen);
void orc_store_etcd_watch_stop(orc_store_etcd_t *s);

#endif
