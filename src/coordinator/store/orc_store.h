/*
 * orc store: the key-value interface orcd keeps its state in.
 *
 * Shaped exactly like etcd v3, and implemented twice: in memory (one orcd)
 * and on etcd (several orcd replicas over one etcd cluster). Both mean the
 * same (test_orcd_unit's store suite runs against both):
 *  - one store-wide revision, starting at 1; every transaction that writes
 *    something gets a revision above every earlier one, and all its writes
 *    carry it (memory: exactly the previous + 1; etcd: its own revision,
 *    which other users of the same etcd move too, and which transactions
 *    made at the same time may share: they go to etcd together);
 *  - per key: create_rev (revision that created it), mod_rev (revision of its
 *    last write), version (number of writes since creation, 1 after create;
 *    deleting resets, re-creating starts at 1 again), lease (0 = none);
 *  - ranges are [key, range_end) in byte order; range_end NULL means the
 *    single key, orc_store_prefix_end() turns a prefix into a range_end; a
 *    range is read at a revision no older than min_rev (0: none) nor than
 *    the store's own last write, so any caller reads its writes and those
 *    of the calls before it;
 *  - leases have a TTL in seconds (etcd may grant more than asked: its
 *    minimum); keep-alive restarts the TTL; revoking a lease or letting it
 *    expire deletes every key attached to it in one revision; a lease past
 *    its deadline is gone for keep-alive, ttl and put, and its keys are
 *    deleted within about a second (memory: at once; etcd: by its leader);
 *    a lease never expires before its TTL;
 *  - transactions: all compares hold -> all ops applied atomically, else
 *    nothing (ORC_STORE_ECOMPARE);
 *  - watches: fire once for the first event at or after start_rev on a key in
 *    [key, range_end); if such an event is already in the retained history
 *    (or the history was compacted past start_rev) watch_create reports
 *    ORC_STORE_FIRED instead of registering;
 *  - ORC_STORE_EUNAVAIL: the backend could not be reached in time; a
 *    transaction may or may not have been applied (retry it only if doing
 *    it twice is harmless, or after checking).
 *
 * All functions are thread-safe. Watch callbacks run on the thread that
 * applied the change (the writer, the lease reaper, or the etcd store's
 * watch thread), while the store's internal lock is held: they must be
 * short and must not call back into the store.
 */
#ifndef ORC_STORE_H_
#define ORC_STORE_H_

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum orc_store_status {
    ORC_STORE_OK       = 0,
    ORC_STORE_FIRED    = 1,  /* watch_create: condition already met */
    ORC_STORE_ENOENT   = -1, /* no such key, lease or watch (incl. expired) */
    ORC_STORE_ECOMPARE = -2, /* transaction compare failed */
    ORC_STORE_EINVAL   = -3,
    ORC_STORE_ENOMEM   = -4,
    ORC_STORE_EIO      = -5, /* snapshot file error (logged by the store) */
    ORC_STORE_ENOTSUP  = -6, /* not offered by this implementation */
    ORC_STORE_EUNAVAIL = -7, /* backend unreachable (see above) */
} orc_store_status_t;

const char *orc_store_status_str(int status);

/* Message levels, most severe first (the same order as orcd's) */
typedef enum orc_store_log_level {
    ORC_STORE_LOG_ERROR,
    ORC_STORE_LOG_WARN,
    ORC_STORE_LOG_INFO,
    ORC_STORE_LOG_DEBUG,
} orc_store_log_level_t;

typedef void (*orc_store_log_fn_t)(orc_store_log_level_t level, const char *fmt,
                                   va_list ap);

/* Where every store writes its messages (one line each, no newline); the
 * default writes them to stderr. Set once, before any store is opened. */
void orc_store_set_logger(orc_store_log_fn_t fn);
void orc_store_log(orc_store_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#define orc_store_error(...) orc_store_log(ORC_STORE_LOG_ERROR, __VA_ARGS__)
#define orc_store_warn(...)  orc_store_log(ORC_STORE_LOG_WARN, __VA_ARGS__)
#define orc_store_info(...)  orc_store_log(ORC_STORE_LOG_INFO, __VA_ARGS__)

/* One key-value pair as returned by range (owned by the result). */
typedef struct orc_store_kv {
    char *key;
    char *value; /* value_len bytes, plus a NUL for convenience */
    size_t value_len;
    uint64_t create_rev;
    uint64_t mod_rev;
    uint64_t version;
    uint64_t lease;
} orc_store_kv_t;

typedef struct orc_store_range_result {
    orc_store_kv_t *kvs;
    size_t count;      /* entries in kvs */
    size_t total;      /* keys in the range (>= count with a limit) */
    uint64_t revision; /* store revision the range was read at */
} orc_store_range_result_t;

enum {
    ORC_STORE_RANGE_COUNT_ONLY = 1u << 0, /* fill total only */
    ORC_STORE_RANGE_KEYS_ONLY  = 1u << 1, /* no values */
    /* the newest state, whatever min_rev: every write acknowledged by now,
     * also one whose answer was lost (etcd: read etcd, not the cache) */
    ORC_STORE_RANGE_LATEST = 1u << 2,
};

typedef enum orc_store_cmp_target {
    ORC_STORE_CMP_VERSION,
    ORC_STORE_CMP_CREATE,
    ORC_STORE_CMP_MOD,
    ORC_STORE_CMP_LEASE,
} orc_store_cmp_target_t;

typedef enum orc_store_cmp_result {
    ORC_STORE_CMP_EQUAL,
    ORC_STORE_CMP_NOT_EQUAL,
    ORC_STORE_CMP_GREATER,
    ORC_STORE_CMP_LESS,
} orc_store_cmp_result_t;

/* Compare of one key's metadata; an absent key has all fields 0. */
typedef struct orc_store_cmp {
    const char *key;
    orc_store_cmp_target_t target;
    orc_store_cmp_result_t result;
    uint64_t value;
} orc_store_cmp_t;

typedef enum orc_store_op_type {
    ORC_STORE_OP_PUT,
    ORC_STORE_OP_DELETE_RANGE,
} orc_store_op_type_t;

typedef struct orc_store_op {
    orc_store_op_type_t type;
    const char *key;
    const char *range_end; /* DELETE_RANGE only; NULL: one key */
    const void *value;     /* PUT only */
    size_t value_len;
    uint64_t lease; /* PUT only; must exist (else ENOENT) */
} orc_store_op_t;

typedef struct orc_store_txn_result {
    uint64_t revision; /* revision after the transaction; on ECOMPARE one
                            at which reads show what failed */
    size_t failed_cmp; /* on ECOMPARE: index of the first failing compare */
    size_t deleted;    /* keys removed by DELETE_RANGE ops */
} orc_store_txn_result_t;

/* Keys counted by class (orc_store_params_t::classify) */
#define ORC_STORE_CLASSES 4

/* Where a write's time goes on etcd (orc_store_stats_t::stages): */
typedef enum orc_store_stage_id {
    ORC_STORE_STAGE_QUEUE, /* a txn waited for its batch to leave */
    ORC_STORE_STAGE_ETCD,  /* a batch's request to etcd, sent to answered */
    ORC_STORE_STAGE_WATCH, /* a write answered to the cache at its
                              revision (sampled: one write at a time; 0
                              when the cache had it before the answer) */
    ORC_STORE_STAGE_CACHE, /* a read waited for the cache to reach the
                              revision it must show */
    ORC_STORE_STAGES
} orc_store_stage_id_t;

/* Upper bounds (microseconds) of a stage's buckets; the last is +Inf */
#define ORC_STORE_STAGE_BUCKETS 12
extern const uint64_t orc_store_stage_bounds_us[ORC_STORE_STAGE_BUCKETS - 1];

/* One stage's histogram: count, sum, and per bucket (not cumulative) */
typedef struct orc_store_stage {
    uint64_t count;
    uint64_t sum_us;
    uint64_t buckets[ORC_STORE_STAGE_BUCKETS];
} orc_store_stage_t;

typedef struct orc_store_stats {
    uint64_t revision;
    uint64_t keys;
    uint64_t bytes;          /* sum of key and value lengths */
    uint64_t leases;         /* memory only (etcd: 0) */
    uint64_t leases_expired; /* leases deleted by expiry since start; memory
                                only (etcd: 0) */
    uint64_t watches;
    uint64_t class_keys[ORC_STORE_CLASSES];
    uint64_t txn_batches;      /* etcd: txn requests sent (memory: 0) */
    uint64_t txns_batched;     /* etcd: the store txns they carried */
    uint64_t txn_batch_max;    /* etcd: the most in one request */
    uint64_t txns_waiting;     /* etcd: txns queued for the next request */
    uint64_t txn_inflight_max; /* etcd: most requests on their way at once */
    orc_store_stage_t stages[ORC_STORE_STAGES]; /* etcd (memory: 0) */
} orc_store_stats_t;

/*
 * How a store counts its keys, for quotas and statistics without scanning:
 *  - groups: a key's group is its first group_depth '/'-separated components
 *    ("/jobs/J" for "/jobs/J/nodes/1" with depth 2; a shorter key is its own
 *    group); usage() reports a group's keys and bytes (0 = no groups);
 *  - classes: classify(key) puts each key in a class 0..ORC_STORE_CLASSES-1
 *    (NULL: all in 0); stats() counts the keys of each class.
 */
typedef struct orc_store_params {
    unsigned reap_ms; /* memory: lease expiry checks (0: 100 ms) */
    unsigned group_depth;
    unsigned (*classify)(const char *key);
} orc_store_params_t;

/* Called once, store lock held; rev = revision of the event that fired it. */
typedef void (*orc_store_watch_cb_t)(void *arg, uint64_t rev);

typedef struct orc_store orc_store_t;

/*
 * The seam: one ops table per implementation, every slot populated (slots an
 * implementation does not offer point at orc_store_unsupported_*).
 */
typedef struct orc_store_ops {
    const char *name;
    int (*range)(orc_store_t *store, const char *key, const char *range_end,
                 unsigned flags, size_t limit, uint64_t min_rev,
                 orc_store_range_result_t *result);
    int (*txn)(orc_store_t *store, const orc_store_cmp_t *cmps, size_t ncmp,
               const orc_store_op_t *ops, size_t nops,
               orc_store_txn_result_t *result);
    /* *granted_p (may be NULL): the TTL granted, >= ttl */
    int (*lease_grant)(orc_store_t *store, int64_t ttl, uint64_t *id_p,
                       int64_t *granted_p);
    int (*lease_keepalive)(orc_store_t *store, uint64_t id, int64_t *ttl_p);
    /* *rev_p (may be NULL): a revision at which the lease's keys are gone */
    int (*lease_revoke)(orc_store_t *store, uint64_t id, uint64_t *rev_p);
    /* remaining seconds (rounded up) and granted TTL */
    int (*lease_ttl)(orc_store_t *store, uint64_t id, int64_t *remaining_p,
                     int64_t *granted_p);
    int (*watch_create)(orc_store_t *store, const char *key,
                        const char *range_end, uint64_t start_rev,
                        orc_store_watch_cb_t cb, void *arg, uint64_t *id_p);
    /* ORC_STORE_OK: cancelled, the callback will never run;
     * ORC_STORE_ENOENT: it already ran (or never existed) */
    int (*watch_cancel)(orc_store_t *store, uint64_t id);
    uint64_t (*revision)(orc_store_t *store);
    void (*stats)(orc_store_t *store, orc_store_stats_t *stats);
    /* keys and bytes of one group (orc_store_params_t), 0 if none */
    void (*usage)(orc_store_t *store, const char *group, uint64_t *keys_p,
                  uint64_t *bytes_p);
    /* ORC_STORE_OK if the store can serve now, else ORC_STORE_EUNAVAIL */
    int (*health)(orc_store_t *store);
    /* Durable copy of the whole state (atomic: temp file + rename) and its
     * restore into an empty store; restored leases get a fresh full TTL. */
    int (*snapshot_save)(orc_store_t *store, const char *path);
    int (*snapshot_load)(orc_store_t *store, const char *path);
    void (*close)(orc_store_t *store);
} orc_store_ops_t;

/* Base of every implementation (first member, called super). */
struct orc_store {
    const orc_store_ops_t *ops;
};

/* In-memory implementation (orc_store_mem.c). Its reaper thread expires
 * leases within about params->reap_ms of their deadline. params NULL:
 * defaults, no groups, no classes. */
int orc_store_mem_open(const orc_store_params_t *params, orc_store_t **store_p);

/* The group of key (orc_store_params_t): its length in bytes */
size_t orc_store_group_len(const char *key, unsigned group_depth);

/* Helpers (orc_store.c) */
void orc_store_range_result_free(orc_store_range_result_t *result);
/* range_end for "every key starting with prefix"; caller frees;
 * "\0" (the whole keyspace) for an empty prefix or all 0xff bytes */
char *orc_store_prefix_end(const char *prefix);
int orc_store_put(orc_store_t *store, const char *key, const void *value,
                  size_t value_len, uint64_t lease, uint64_t *rev_p);
/* one key, read at min_rev or later; ENOENT if absent; fills kv (free with
 * orc_store_kv_free) */
int orc_store_get(orc_store_t *store, const char *key, uint64_t min_rev,
                  orc_store_kv_t *kv, uint64_t *rev_p);
int orc_store_delete(orc_store_t *store, const char *key, const char *range_end,
                     size_t *deleted_p, uint64_t *rev_p);
void orc_store_kv_free(orc_store_kv_t *kv);

/* Slots for implementations that lack snapshots */
int orc_store_unsupported_snapshot(orc_store_t *store, const char *path);

static inline void orc_store_close(orc_store_t *store)
{
    if (store != NULL) {
        store->ops->close(store);
    }
}

#ifdef __cplusplus
}
#endif

#endif
