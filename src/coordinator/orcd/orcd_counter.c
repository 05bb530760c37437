/*
 * orcd: one lock per counter (see orcd_counter.h).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_counter.h"
#include "coordinator/common/orc_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One counter's lock: taken by one request, waited for by refs - 1 others
 * (refs counts the holder and the waiters) */
struct orcd_counter {
    orcd_counter_t *next;
    uint64_t id;
    unsigned refs;
    int taken;
    pthread_cond_t cond; /* signalled when given back */
    char job[];
};

void orcd_counters_init(orcd_counters_t *t)
{
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->lock, NULL);
}

void orcd_counters_fini(orcd_counters_t *t)
{
    pthread_mutex_destroy(&t->lock);
}

size_t orcd_counters_entries(orcd_counters_t *t)
{
    size_t n;

    pthread_mutex_lock(&t->lock);
    n = t->entries;
    pthread_mutex_unlock(&t->lock);
    return n;
}

static orcd_counter_t **orcd_counter_bucket(orcd_counters_t *t, const char *job,
                                            uint64_t id)
{
    uint64_t h = 14695981039346656037ULL ^ id; /* FNV-1a over job and id */
    const char *p;

    for (p = job; *p != '\0'; ++p) {
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    }
    h = (h ^ (h >> 29)) * 1099511628211ULL;
    return &t->buckets[(h >> 32) % ORCD_COUNTER_BUCKETS];
}

/* Lock held: the entry of (job, id), a new one if none (NULL: no memory) */
static orcd_counter_t *orcd_counter_find(orcd_counters_t *t, const char *job,
                                         uint64_t id)
{
    orcd_counter_t **bucket = orcd_counter_bucket(t, job, id), *e;
    pthread_condattr_t attr;
    size_t len;

    for (e = *bucket; e != NULL; e = e->next) {
        if ((e->id == id) && !strcmp(e->job, job)) {
            return e;
        }
    }
    len = strlen(job);
    e   = calloc(1, sizeof(*e) + len + 1);
    if (e == NULL) {
        return NULL;
    }
    memcpy(e->job, job, len + 1);
    e->id = id;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&e->cond, &attr);
    pthread_condattr_destroy(&attr);
    e->next = *bucket;
    *bucket = e;
    ++t->entries;
    return e;
}

/* Lock held: one user fewer; the last one frees the entry */
static void orcd_counter_unref(orcd_counters_t *t, orcd_counter_t *e)
{
    orcd_counter_t **pp;

    if (--e->refs > 0) {
        return;
    }
    for (pp = orcd_counter_bucket(t, e->job, e->id); *pp != e;
         pp = &(*pp)->next) {
    }
    *pp = e->next;
    --t->entries;
    pthread_cond_destroy(&e->cond);
    free(e);
}

orcd_counter_t *orcd_counter_take(orcd_counters_t *t, const char *job,
                                  uint64_t id, uint64_t until_ms)
{
    struct timespec ts = {(time_t)(until_ms / 1000),
                          (long)(until_ms % 1000) * 1000000L};
    orcd_counter_t *e;

    pthread_mutex_lock(&t->lock);
    e = orcd_counter_find(t, job, id);
    if (e != NULL) {
        ++e->refs;
        while (e->taken && (orc_util_now_ms() < until_ms)) {
            if (pthread_cond_timedwait(&e->cond, &t->lock, &ts) == ETIMEDOUT) {
                break;
            }
        }
        if (e->taken) {
            orcd_counter_unref(t, e);
            e = NULL;
        } else {
            e->taken = 1;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return e;
}

void orcd_counter_give(orcd_counters_t *t, orcd_counter_t *counter)
{
    pthread_mutex_lock(&t->lock);
    counter->taken = 0;
    if (counter->refs > 1) {
        pthread_cond_signal(&counter->cond);
    }
    orcd_counter_unref(t, counter);
    pthread_mutex_unlock(&t->lock);
}
