/*
 * orcd API: request accounting and the Prometheus /metrics page.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const unsigned orcd_status_slots[ORCD_STATUS_SLOTS - 1] = {
    200, 201, 204, 400, 401, 403, 404, 405, 409, 410, 413, 429, 500, 503, 0};

static const double orcd_latency_bounds[ORCD_LATENCY_SLOTS - 1] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,  0.05,    0.1,    0.25,  1,      5,     30};

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
    for (l = 0; l < ORCD_LATENCY_SLOTS - 1; ++l) {
        if (seconds <= orcd_latency_bounds[l]) {
            break;
        }
    }
    atomic_fetch_add_explicit(&m->requests[route][s], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency[route][l], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_us[route],
                              (uint64_t)(seconds * 1e6), memory_order_relaxed);
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
    if (b.failed) {
        free(b.data);
        orcd_api_error(resp, 500, "internal", "out of memory");
        return;
    }
    orcd_resp_set_body(resp, 200, b.data, b.len);
    resp->content_type = "text/plain; version=0.0.4";
}
