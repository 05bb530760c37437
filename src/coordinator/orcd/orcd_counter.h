/*
 * orcd: one lock per counter (a job's node ids, a mailbox's seq).
 *
 * A request that takes the next value of a counter by compare-and-swap holds
 * the counter's lock meanwhile (see struct orcd_api), so that this orcd's
 * requests for one counter queue instead of failing each other's compare.
 * Each counter has a lock of its own: requests for different counters never
 * wait for each other (on etcd a holder keeps it for a round trip to etcd,
 * so a lock shared by two mailboxes made every post to one wait for the
 * posts to the other). A counter's entry exists while a request holds it or
 * waits for it.
 *
 * Every field of orcd_counters_t, and of its entries, is under its lock,
 * which is held only to look an entry up, take or give it: never across a
 * store call.
 */
#ifndef ORCD_COUNTER_H_
#define ORCD_COUNTER_H_

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ORCD_COUNTER_BUCKETS 256

typedef struct orcd_counter orcd_counter_t;

typedef struct orcd_counters {
    pthread_mutex_t lock;
    orcd_counter_t *buckets[ORCD_COUNTER_BUCKETS];
    size_t entries; /* counters held or waited for */
} orcd_counters_t;

void orcd_counters_init(orcd_counters_t *t);
/* Every counter given back before */
void orcd_counters_fini(orcd_counters_t *t);

/* Take counter id of job, waiting until until_ms (orc_util_now_ms()) at
 * most: the counter (give it back with orcd_counter_give), or NULL if it
 * was still taken then (or out of memory) */
orcd_counter_t *orcd_counter_take(orcd_counters_t *t, const char *job,
                                  uint64_t id, uint64_t until_ms);
void orcd_counter_give(orcd_counters_t *t, orcd_counter_t *counter);

/* Counters held or waited for now */
size_t orcd_counters_entries(orcd_counters_t *t);

#ifdef __cplusplus
}
#endif

#endif
