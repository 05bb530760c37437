/*
 * A replica: a memory store (orc_store_mem.c) whose content is fed from
 * outside instead of by its own transactions. The etcd store keeps one as
 * its cache, fed by its watch on etcd, and serves reads and watches from it.
 *
 * Reads, watches, stats and usage work as on any memory store; txn, leases
 * and snapshots are for the owner to answer (the replica's own slots report
 * ORC_STORE_ENOTSUP). The feeding calls below are made by one thread.
 */
#ifndef ORC_STORE_REPLICA_H_
#define ORC_STORE_REPLICA_H_

#include "orc_store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One change: a put (kv complete: value and metadata) or a delete (key) */
typedef struct orc_store_event {
    int is_delete;
    orc_store_kv_t kv;
} orc_store_event_t;

int orc_store_mem_open_replica(const orc_store_params_t *params,
                               orc_store_t **store_p);
/* Apply the changes of one revision (above the replica's), fire watches */
int orc_store_mem_apply(orc_store_t *store, uint64_t rev,
                        const orc_store_event_t *events, size_t count);
/* Replace the whole content by kvs (the state as of rev); watches waiting
 * for a revision after the old one fire (they re-read). */
int orc_store_mem_reset(orc_store_t *store, uint64_t rev,
                        const orc_store_kv_t *kvs, size_t count);
/* Wait until the replica's revision is at least rev, at most timeout_ms:
 * 1 reached, 0 not */
int orc_store_mem_wait_rev(orc_store_t *store, uint64_t rev,
                           unsigned timeout_ms);

#ifdef __cplusplus
}
#endif

#endif
