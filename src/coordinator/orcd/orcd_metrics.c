/*
 * orcd API: request accounting and the Prometheus /metrics page.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned orcd_status_slots[ORCD_STATUS_SLOTS - 1] = {
    200, 201, 204, 400, 401, 403, 404, 405, 409, 410, 413, 429, 500, 503, 0};

static const double orcd_latency_bounds[ORCD_LATENCY_SLOTS - 1] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,  0.05,    0.1,    0.25,  1,      5,     30};

/* The latency slot of seconds */
static size_t orcd_latency_slot(double seconds)
{
    size_t l;

    for (l = 0; l < ORCD_LATENCY_SLOTS - 1; ++l) {
        if (seconds <= orcd_latency_bounds[l]) {
            break;
        }
    }
    return l;
}

void orcd_api_record(orcd_api_t *api, orcd_route_t route, unsigned status,
                     double seconds)
{
    orcd_metrics_t *m = &api->metrics;
    size_t s, l;

    if ((unsigned)route >= ORCD_ROUTE_LAST) {
        route = ORCD_ROUTE_UNKNOWN;
    }
    for (s = 0; s < ORCD_STATUS_SLOTS - 1; ++s) {
        if (orcd_status_slots[s] == status) {
            break;
        }
    }
    l = orcd_latency_slot(seconds);
    atomic_fetch_add_explicit(&m->requests[route][s], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency[route][l], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_us[route],
                              (uint64_t)(seconds * 1e6), memory_order_relaxed);
}

void orcd_api_record_wake(orcd_api_t *api, double seconds)
{
    orcd_metrics_t *m = &api->metrics;

    atomic_fetch_add_explicit(&m->wake[orcd_latency_slot(seconds)], 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&m->wake_sum_us, (uint64_t)(seconds * 1e6),
                              memory_order_relaxed);
}

/* One histogram's lines: counts per bucket (not cumulative) of upper bounds
 * bound(i) (the last +Inf), named name{labels,le=...} */
static void orcd_metrics_histogram(orcd_buf_t *b, const char *name,
                                   const char *labels, const uint64_t *counts,
                                   size_t n, double (*bound)(size_t),
                                   double sum)
{
    uint64_t cum = 0;
    size_t i;

    for (i = 0; i < n; ++i) {
        cum += counts[i];
        if (i < n - 1) {
            orcd_buf_printf(b, "%s_bucket{%s%sle=\"%g\"} %" PRIu64 "\n", name,
                            labels, (labels[0] != '\0') ? "," : "", bound(i),
                            cum);
        } else {
            orcd_buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name,
                            labels, (labels[0] != '\0') ? "," : "", cum);
        }
    }
    orcd_buf_printf(b, "%s_sum{%s} %.6f\n%s_count{%s} %" PRIu64 "\n", name,
                    labels, sum, name, labels, cum);
}

static double orcd_latency_bound(size_t i)
{
    return orcd_latency_bounds[i];
}

static double orcd_stage_bound(size_t i)
{
    return (double)orc_store_stage_bounds_us[i] / 1e6;
}

/* Where writes and woken blocking queries spend their time */
static void orcd_metrics_stages(orcd_buf_t *b, orcd_metrics_t *m,
                                const orc_store_stats_t *stats)
{
    static const char *const names[ORC_STORE_STAGES] = {
        [ORC_STORE_STAGE_QUEUE] = "queue",
        [ORC_STORE_STAGE_ETCD]  = "etcd",
        [ORC_STORE_STAGE_WATCH] = "watch",
        [ORC_STORE_STAGE_CACHE] = "cache"};
    uint64_t wake[ORCD_LATENCY_SLOTS];
    char labels[32];
    size_t i;

    orcd_buf_printf(b, "# HELP orcd_store_stage_seconds etcd store: a txn's "
                       "wait for its batch (queue), a batch's request "
                       "(etcd), a write's way to the cache (watch, "
                       "sampled), a read's wait for the cache (cache).\n"
                       "# TYPE orcd_store_stage_seconds histogram\n");
    for (i = 0; i < ORC_STORE_STAGES; ++i) {
        snprintf(labels, sizeof(labels), "stage=\"%s\"", names[i]);
        orcd_metrics_histogram(b, "orcd_store_stage_seconds", labels,
                               stats->stages[i].buckets,
                               ORC_STORE_STAGE_BUCKETS, orcd_stage_bound,
                               (double)stats->stages[i].sum_us / 1e6);
    }
    for (i = 0; i < ORCD_LATENCY_SLOTS; ++i) {
        wake[i] = atomic_load_explicit(&m->wake[i], memory_order_relaxed);
    }
    orcd_buf_printf(b, "# HELP orcd_long_poll_wake_seconds A blocking "
                       "query's watch fired to its handler running again.\n"
                       "# TYPE orcd_long_poll_wake_seconds histogram\n");
    orcd_metrics_histogram(b, "orcd_long_poll_wake_seconds", "", wake,
                           ORCD_LATENCY_SLOTS, orcd_latency_bound,
                           (double)atomic_load_explicit(&m->wake_sum_us,
                                                        memory_order_relaxed) /
                               1e6);
}

void orcd_h_metrics(orcd_ctx_t *c)
{
    orcd_api_t *api       = c->api;
    orcd_response_t *resp = c->resp;
    orcd_metrics_t *m     = &api->metrics;
    orcd_buf_t b          = {0};
    orc_store_stats_t stats;
    uint64_t v, cum, nodes, msgs;
    size_t r, s, l;

    b.cap  = 8192;
    b.data = malloc(b.cap);
    if (b.data == NULL) {
        orcd_api_error(resp, 500, "internal", "out of memory");
        return;
    }
    /* counted by the store as keys come and go: no scan */
    api->store->ops->stats(api->store, &stats);
    nodes = stats.class_keys[ORCD_CLASS_NODE];
    msgs  = stats.class_keys[ORCD_CLASS_MESSAGE];

    orcd_buf_printf(&b, "# HELP orcd_requests_total HTTP requests by route "
                        "and status.\n# TYPE orcd_requests_total counter\n");
    for (r = 0; r < ORCD_ROUTE_LAST; ++r) {
        for (s = 0; s < ORCD_STATUS_SLOTS; ++s) {
            v = atomic_load_explicit(&m->requests[r][s], memory_order_relaxed);
            if (v == 0) {
                continue;
            }
            if (s < ORCD_STATUS_SLOTS - 1 && orcd_status_slots[s] != 0) {
                orcd_buf_printf(&b,
                                "orcd_requests_total{route=\"%s\","
                                "status=\"%u\"} %" PRIu64 "\n",
                                orcd_route_name(r), orcd_status_slots[s], v);
            } else {
                orcd_buf_printf(&b,
                                "orcd_requests_total{route=\"%s\","
                                "status=\"other\"} %" PRIu64 "\n",
                                orcd_route_name(r), v);
            }
        }
    }
    orcd_buf_printf(&b, "# HELP orcd_request_duration_seconds Request "
                        "latency (blocking queries include their wait).\n"
                        "# TYPE orcd_request_duration_seconds histogram\n");
    for (r = 0; r < ORCD_ROUTE_LAST; ++r) {
        cum = 0;
        for (l = 0; l < ORCD_LATENCY_SLOTS; ++l) {
            cum +=
                atomic_load_explicit(&m->latency[r][l], memory_order_relaxed);
        }
        if (cum == 0) {
            continue;
        }
        cum = 0;
        for (l = 0; l < ORCD_LATENCY_SLOTS - 1; ++l) {
            cum +=
                atomic_load_explicit(&m->latency[r][l], memory_order_relaxed);
            orcd_buf_printf(&b,
                            "orcd_request_duration_seconds_bucket{route="
                            "\"%s\",le=\"%g\"} %" PRIu64 "\n",
                            orcd_route_name(r), orcd_latency_bounds[l], cum);
        }
        cum += atomic_load_explicit(&m->latency[r][l], memory_order_relaxed);
        orcd_buf_printf(&b,
                        "orcd_request_duration_seconds_bucket{route=\"%s\","
                        "le=\"+Inf\"} %" PRIu64 "\n"
                        "orcd_request_duration_seconds_sum{route=\"%s\"} "
                        "%.6f\n"
                        "orcd_request_duration_seconds_count{route=\"%s\"} "
                        "%" PRIu64 "\n",
                        orcd_route_name(r), cum, orcd_route_name(r),
                        (double)atomic_load_explicit(&m->latency_sum_us[r],
                                                     memory_order_relaxed) /
                            1e6,
                        orcd_route_name(r), cum);
    }
    orcd_buf_printf(&b,
                    "# HELP orcd_nodes Registered nodes.\n"
                    "# TYPE orcd_nodes gauge\norcd_nodes %" PRIu64 "\n"
                    "# HELP orcd_leases_expired_total Node leases that "
                    "expired.\n# TYPE orcd_leases_expired_total counter\n"
                    "orcd_leases_expired_total %" PRIu64 "\n"
                    "# HELP orcd_mailbox_messages Messages queued in all "
                    "mailboxes.\n# TYPE orcd_mailbox_messages gauge\n"
                    "orcd_mailbox_messages %" PRIu64 "\n"
                    "# HELP orcd_store_bytes Bytes of keys and values "
                    "stored.\n# TYPE orcd_store_bytes gauge\n"
                    "orcd_store_bytes %" PRIu64 "\n"
                    "# HELP orcd_store_keys Keys stored.\n"
                    "# TYPE orcd_store_keys gauge\norcd_store_keys %" PRIu64
                    "\n# HELP orcd_store_revision Store revision.\n"
                    "# TYPE orcd_store_revision counter\n"
                    "orcd_store_revision %" PRIu64 "\n"
                    "# HELP orcd_connections Open client connections.\n"
                    "# TYPE orcd_connections gauge\norcd_connections %" PRId64
                    "\n# HELP orcd_long_polls Blocking queries waiting.\n"
                    "# TYPE orcd_long_polls gauge\norcd_long_polls %" PRId64
                    "\n# HELP orcd_long_polls_rejected_total Blocking "
                    "queries refused (max_long_polls).\n"
                    "# TYPE orcd_long_polls_rejected_total counter\n"
                    "orcd_long_polls_rejected_total %" PRIu64 "\n",
                    nodes, stats.leases_expired, msgs, stats.bytes, stats.keys,
                    stats.revision,
                    atomic_load_explicit(&m->connections, memory_order_relaxed),
                    atomic_load_explicit(&m->long_polls, memory_order_relaxed),
                    atomic_load_explicit(&m->long_polls_rejected,
                                         memory_order_relaxed));
    orcd_buf_printf(&b,
                    "# HELP orcd_store_txn_requests_total Transaction "
                    "requests sent to etcd (each carries the store "
                    "transactions made meanwhile).\n"
                    "# TYPE orcd_store_txn_requests_total counter\n"
                    "orcd_store_txn_requests_total %" PRIu64 "\n"
                    "# HELP orcd_store_txns_total Store transactions those "
                    "requests carried.\n"
                    "# TYPE orcd_store_txns_total counter\n"
                    "orcd_store_txns_total %" PRIu64 "\n"
                    "# HELP orcd_store_txn_batch_max Most store transactions "
                    "one request carried.\n"
                    "# TYPE orcd_store_txn_batch_max gauge\n"
                    "orcd_store_txn_batch_max %" PRIu64 "\n",
                    stats.txn_batches, stats.txns_batched, stats.txn_batch_max);
    orcd_metrics_stages(&b, m, &stats);
    if (b.failed) {
        free(b.data);
        orcd_api_error(resp, 500, "internal", "out of memory");
        return;
    }
    orcd_resp_set_body(resp, 200, b.data, b.len);
    resp->content_type = "text/plain; version=0.0.4";
}
