/*
 * orc store on etcd v3 (orc_store_etcd.c): several orcd replicas share one
 * etcd cluster, and any of them answers any request.
 *
 *  - Writes (transactions) and leases go to etcd: revisions, versions,
 *    leases and their expiry are etcd's own. Keys live under a prefix, so
 *    several orcd deployments can share one etcd (keys start with '/').
 *  - Reads and watches are served from a local cache: a replica memory
 *    store (orc_store_replica.h) fed by one etcd watch on the prefix (the
 *    watch cache of Kubernetes' API server is the model). A read waits for
 *    the cache to reach its min_rev (up to cache_wait_ms), else reads etcd;
 *    a single key the cache does not hold is confirmed with etcd (the cache
 *    may lag behind a write another replica made); while the watch is down
 *    every read goes to etcd, and so does one with ORC_STORE_RANGE_LATEST.
 *  - The watch resumes from the cache's revision after a break (on another
 *    endpoint); if etcd compacted that history, the cache reloads and every
 *    waiting watch fires (its owner re-reads).
 *  - health(): ORC_STORE_OK while the watch is up.
 */
#ifndef ORC_STORE_ETCD_H_
#define ORC_STORE_ETCD_H_

#include "orc_etcd.h"
#include "orc_store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct orc_store_etcd_params {
    orc_store_params_t store; /* the cache's accounting */
    orc_etcd_params_t etcd;
    const char *prefix;     /* e.g. "/orc"; no trailing '/' */
    unsigned cache_wait_ms; /* 0: 1000 */
    /* transaction batches on their way to etcd at once, at most (0:
     * ORC_STORE_ETCD_PIPELINE); see orc_store_etcd_batch.c */
    unsigned pipeline;
} orc_store_etcd_params_t;

/* Default and limit of orc_store_etcd_params_t::pipeline */
#define ORC_STORE_ETCD_PIPELINE     2
#define ORC_STORE_ETCD_PIPELINE_MAX 64

/* Connect, load the cache and start the watch: ORC_STORE_OK, or an error
 * with the reason in err (no endpoint answers, authentication, ...) */
int orc_store_etcd_open(const orc_store_etcd_params_t *params,
                        orc_store_t **store_p, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
