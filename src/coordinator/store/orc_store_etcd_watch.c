/*
 * orc store on etcd: the watch that feeds the cache.
 *
 * One thread: load the whole prefix into the cache (a range at revision R),
 * then watch the prefix from R + 1 and apply each revision's events as they
 * come. When the stream breaks, the cache is not live (reads go to etcd)
 * until a new watch, on the next endpoint, resumes from the cache's
 * revision; when etcd compacted past it, the cache is loaded again.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_store_etcd_int.h"
#include "orc_store_replica.h"
#include "coordinator/common/orc_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ORC_STORE_ETCD_RETRY_MS     100
#define ORC_STORE_ETCD_RETRY_MAX_MS 2000
#define ORC_STORE_ETCD_BATCH        256

/* A watch stream's state, for on_message */
typedef struct orc_store_etcd_stream {
    orc_store_etcd_t *s;
    int compacted; /* etcd no longer has our history */
    int failed;    /* the cache could not take an event */
} orc_store_etcd_stream_t;

/* Load the whole prefix into the cache */
static int orc_store_etcd_load(orc_store_etcd_t *s)
{
    orc_store_range_result_t res;
    uint64_t rev;
    int status;

    status = orc_store_etcd_range_direct(s, "", "\0", 0, 0, &res, &rev);
    if (status != ORC_STORE_OK) {
        return status;
    }
    status = orc_store_mem_reset(s->cache, rev, res.kvs, res.count);
    orc_store_range_result_free(&res);
    orc_store_etcd_probe_reached(s, rev);
    return status;
}

static void orc_store_etcd_events_free(orc_store_event_t *ev, size_t n)
{
    size_t i;

    for (i = 0; i < n; ++i) {
        orc_store_kv_free(&ev[i].kv);
    }
}

/* Apply the events of a watch response, one revision at a time */
static int orc_store_etcd_apply(orc_store_etcd_t *s, json_t *events)
{
    orc_store_event_t batch[ORC_STORE_ETCD_BATCH];
    uint64_t rev = 0, erev;
    size_t i, n = 0;
    const char *type;
    json_t *e, *kv;
    int status = ORC_STORE_OK;

    json_array_foreach(events, i, e)
    {
        kv   = json_object_get(e, "kv");
        erev = orc_etcd_get_u64(kv, "mod_revision");
        if ((n > 0) && ((erev != rev) || (n == ORC_STORE_ETCD_BATCH))) {
            status = orc_store_mem_apply(s->cache, rev, batch, n);
            orc_store_etcd_events_free(batch, n);
            n = 0;
            if (status != ORC_STORE_OK) {
                return status;
            }
        }
        rev  = erev;
        type = json_string_value(json_object_get(e, "type"));
        memset(&batch[n], 0, sizeof(batch[n]));
        batch[n].is_delete = (type != NULL) && !strcmp(type, "DELETE");
        if (orc_store_etcd_kv(s, kv, !batch[n].is_delete, &batch[n].kv) == 0) {
            ++n;
        }
    }
    if (n > 0) {
        status = orc_store_mem_apply(s->cache, rev, batch, n);
        orc_store_etcd_events_free(batch, n);
        orc_store_etcd_probe_reached(s, rev);
    }
    return status;
}

/* One message of the watch stream: 0 go on, 1 end the stream */
static int orc_store_etcd_on_message(void *arg, json_t *msg)
{
    orc_store_etcd_stream_t *st = arg;
    json_t *result              = json_object_get(msg, "result");

    if (result == NULL) {
        orc_store_warn("etcd watch: %s",
                       json_string_value(json_object_get(msg, "error"))
                           ?: "no result");
        return 1;
    }
    if (json_is_true(json_object_get(result, "canceled"))) {
        st->compacted = (orc_etcd_get_u64(result, "compact_revision") > 0);
        if (!st->compacted) {
            orc_store_warn("etcd watch canceled: %s",
                           json_string_value(
                               json_object_get(result, "cancel_reason"))
                               ?: "no reason");
        }
        return 1;
    }
    if (json_is_true(json_object_get(result, "created"))) {
        atomic_store(&st->s->live, 1);
    }
    if (orc_store_etcd_apply(st->s, json_object_get(result, "events")) !=
        ORC_STORE_OK) {
        st->failed = 1;
        return 1;
    }
    return 0;
}

static int orc_store_etcd_stopped(void *arg)
{
    return atomic_load(&((orc_store_etcd_stream_t *)arg)->s->stop);
}

/* Watch from the cache's revision on until the stream ends: 1 if the cache
 * must be loaded again */
static int orc_store_etcd_watch_once(orc_store_etcd_t *s)
{
    orc_store_etcd_stream_t st = {s, 0, 0};
    uint64_t from              = s->cache->ops->revision(s->cache) + 1;
    char text[24];
    json_t *body;

    snprintf(text, sizeof(text), "%llu", (unsigned long long)from);
    body = json_pack("{s:{s:o, s:o, s:s}}", "create_request", "key",
                     orc_store_etcd_key(s, ""), "range_end",
                     orc_store_etcd_key(s, "0"), "start_revision", text);
    if (body == NULL) {
        return 0;
    }
    orc_etcd_stream(s->etcd, "/v3/watch", body, orc_store_etcd_on_message,
                    orc_store_etcd_stopped, &st);
    if (atomic_exchange(&s->live, 0) && !atomic_load(&s->stop)) {
        orc_store_warn("etcd watch ended: reading from etcd until it is "
                       "back");
    }
    if (st.compacted) {
        orc_store_warn("etcd compacted the history after revision %llu: "
                       "reloading",
                       (unsigned long long)(from - 1));
    }
    return st.compacted || st.failed;
}

/* Sleep ms unless the store closes meanwhile */
static void orc_store_etcd_pause(orc_store_etcd_t *s, unsigned ms)
{
    uint64_t until = orc_util_now_ms() + ms;
    struct timespec ts;

    ts.tv_sec  = (time_t)(until / 1000);
    ts.tv_nsec = (long)(until % 1000) * 1000000L;
    pthread_mutex_lock(&s->wait_lock);
    while (!atomic_load(&s->stop) && (orc_util_now_ms() < until)) {
        pthread_cond_timedwait(&s->wait_cond, &s->wait_lock, &ts);
    }
    pthread_mutex_unlock(&s->wait_lock);
}

static void *orc_store_etcd_watcher(void *arg)
{
    orc_store_etcd_t *s = arg;
    unsigned retry_ms   = ORC_STORE_ETCD_RETRY_MS;
    int reload          = 0;
    uint64_t started;

    while (!atomic_load(&s->stop)) {
        if (reload && (orc_store_etcd_load(s) != ORC_STORE_OK)) {
            orc_etcd_next_endpoint(s->etcd);
            orc_store_etcd_pause(s, retry_ms);
            continue;
        }
        started = orc_util_now_ms();
        reload  = orc_store_etcd_watch_once(s);
        if (atomic_load(&s->stop)) {
            break;
        }
        /* a stream that lasted is no reason to wait long for the next */
        retry_ms = (orc_util_now_ms() - started > 10000)
                       ? ORC_STORE_ETCD_RETRY_MS
                   : (retry_ms * 2 > ORC_STORE_ETCD_RETRY_MAX_MS)
                       ? ORC_STORE_ETCD_RETRY_MAX_MS
                       : retry_ms * 2;
        orc_etcd_next_endpoint(s->etcd);
        orc_store_etcd_pause(s, reload ? 0 : retry_ms);
    }
    return NULL;
}

int orc_store_etcd_watch_start(orc_store_etcd_t *s, char *err, size_t errlen)
{
    pthread_condattr_t cattr;
    uint64_t deadline;
    int ret;

    pthread_mutex_init(&s->wait_lock, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wait_cond, &cattr);
    pthread_condattr_destroy(&cattr);
    ret = orc_store_etcd_load(s);
    if (ret != ORC_STORE_OK) {
        snprintf(err, errlen, "cannot read the keys under %s from etcd: %s",
                 s->prefix, orc_store_status_str(ret));
        return -1;
    }
    ret = pthread_create(&s->watcher, NULL, orc_store_etcd_watcher, s);
    if (ret != 0) {
        snprintf(err, errlen, "cannot start the watch thread: %s",
                 strerror(ret));
        return -1;
    }
    s->watcher_started = 1;
    /* serve once the watch is up (bounded: reads go to etcd until then) */
    deadline = orc_util_now_ms() + 5000;
    while (!atomic_load(&s->live) && (orc_util_now_ms() < deadline)) {
        orc_store_etcd_pause(s, 5);
    }
    return 0;
}

void orc_store_etcd_watch_stop(orc_store_etcd_t *s)
{
    if (s->watcher_started) {
        pthread_mutex_lock(&s->wait_lock);
        atomic_store(&s->stop, 1);
        pthread_cond_broadcast(&s->wait_cond);
        pthread_mutex_unlock(&s->wait_lock);
        orc_etcd_wake(s->etcd);
        pthread_join(s->watcher, NULL);
        s->watcher_started = 0;
    }
    pthread_cond_destroy(&s->wait_cond);
    pthread_mutex_destroy(&s->wait_lock);
}
