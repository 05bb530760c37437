/*
 * orcd_bench: load generator for orcd over liborcclient (not a test).
 *
 * Measures requests/s and p50/p99 latency on a running orcd for:
 *   healthz   GET /healthz (the cheapest request: the reference row)
 *   fetch     GET  .../nodes/{id}/rdma/endpoint
 *   publish   PUT  .../nodes/{id}/rdma/endpoint
 *   pair      a full pairing round trip: initiator A posts to B's mailbox,
 *             B's long-poll receives it and B replies to A's mailbox, A's
 *             long-poll receives the reply (latency = A's send to A's
 *             receive)
 * at each requested number of concurrent clients. A client is a thread with
 * its own orc_client_t (and so its own keep-alive connections); in "pair"
 * each of the N clients is an initiator with its own responder thread, so N
 * clients means N round trips in flight and 2N connections. With several
 * replicas (--url a,b), client k starts at replica k mod n, a pair's
 * responder one replica after its initiator.
 *
 * Closed loop (each client starts its next operation when the last one
 * finished) measures the maximum rate; then, unless --paced 0, fetch and
 * pair run open loop at the goal rates (20000/s, 2000/s) with 64 clients,
 * each client on a fixed schedule, latency counted from the scheduled start:
 * the latency a job sees at that load rather than at saturation.
 *
 * Prints one table row per (test, clients) with PASS/MISS against the goals
 * (at 64 clients: >= 20000 fetches/s, >= 2000 pairing round trips/s; p99 <
 * 10 ms everywhere) and the ratio of each rate to the healthz rate at the
 * same concurrency. Exit status 0 if the run completed (goals missed are not
 * an error), 1 on a usage or setup error, 2 if requests failed.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_client.h"

#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ORC_BENCH_MAX_CLIENTS  256
#define ORC_BENCH_MAX_CELLS    16
#define ORC_BENCH_SAMPLES_MAX  (1u << 18) /* per thread */
#define ORC_BENCH_POLL_WAIT_MS 1000
#define ORC_BENCH_GOAL_P99_MS  10.0
#define ORC_BENCH_GOAL_FETCH   20000.0
#define ORC_BENCH_GOAL_PAIR    2000.0
#define ORC_BENCH_GOAL_CLIENTS 64

typedef enum {
    ORC_BENCH_HEALTHZ,
    ORC_BENCH_FETCH,
    ORC_BENCH_PUBLISH,
    ORC_BENCH_PAIR,
    ORC_BENCH_LAST
} orc_bench_test_t;

static const char *orc_bench_test_names[]  = {"healthz", "fetch", "publish",
                                              "pair"};
static const char *orc_bench_test_labels[] = {"healthz", "endpoint fetch",
                                              "endpoint publish",
                                              "pairing round trip"};

/* Per-thread results; written only by its thread, read after join */
typedef struct orc_bench_worker {
    pthread_t thread;
    orc_client_t *client;
    orc_bench_test_t test;
    uint64_t node;        /* own node (fetch/publish/pair initiator) */
    uint64_t peer;        /* pair: the responder's node */
    int responder;        /* pair: this thread is B */
    uint64_t interval_ns; /* paced (open loop): one op per interval;
                                     0 = closed loop */
    uint64_t next_ns;     /* paced: scheduled start of the next op */
    uint64_t ops;
    uint64_t errors;
    uint32_t *samples; /* latency in us */
    size_t nsamples;
    char first_error[256];
} orc_bench_worker_t;

/*
 * Shared run state. `start_ns`/`end_ns` are written before the threads are
 * created (pthread_create orders them) and only read afterwards; `stop` is
 * an atomic flag set by the main thread to end responders.
 */
typedef struct orc_bench_run {
    const char *url;
    const char *job;
    const char *token;
    int timeout_ms;
    uint64_t start_ns;
    uint64_t end_ns;
    atomic_int stop;
} orc_bench_run_t;

static orc_bench_run_t orc_bench_run;

static uint64_t orc_bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The replica list (--url, comma-separated) rotated to start at replica
 * k mod n: with several replicas, the clients spread over them as a job's
 * processes would. Malloc'ed, or NULL. */
static char *orc_bench_url(unsigned k)
{
    const char *url = orc_bench_run.url, *p;
    size_t n = 1, len = strlen(url), at;
    char *out;

    for (p = url; *p != '\0'; ++p) {
        n += (*p == ',');
    }
    for (p = url, k %= n; k > 0; --k) {
        p = strchr(p, ',') + 1;
    }
    at  = (size_t)(p - url);
    out = malloc(len + 2);
    if (out != NULL) {
        /* "b,c" + "," + "a" */
        snprintf(out, len + 2, "%s%s%.*s", p, (at > 0) ? "," : "",
                 (at > 0) ? (int)(at - 1) : 0, url);
    }
    return out;
}

static orc_client_t *orc_bench_client(unsigned k)
{
    orc_client_params_t params = {0};
    orc_cl_status_t status;
    orc_client_t *client;
    char *url = orc_bench_url(k);

    if (url == NULL) {
        fprintf(stderr, "orcd_bench: out of memory\n");
        return NULL;
    }
    params.field_mask = ORC_CLIENT_PARAM_FIELD_URL |
                        ORC_CLIENT_PARAM_FIELD_JOB |
                        ORC_CLIENT_PARAM_FIELD_TIMEOUT;
    params.url        = url;
    params.job        = orc_bench_run.job;
    params.timeout_ms = orc_bench_run.timeout_ms;
    if (orc_bench_run.token != NULL) {
        params.field_mask |= ORC_CLIENT_PARAM_FIELD_TOKEN;
        params.token = orc_bench_run.token;
    }

    status = orc_client_create(&params, &client);
    free(url);
    if (status != ORC_CL_OK) {
        fprintf(stderr, "orcd_bench: client: %s (%s)\n",
                orc_cl_status_str(status), orc_client_last_error());
        return NULL;
    }
    return client;
}

static void orc_bench_record(orc_bench_worker_t *w, uint64_t t0, uint64_t t1,
                             orc_cl_status_t status)
{
    if (status != ORC_CL_OK) {
        if (w->errors++ == 0) {
            snprintf(w->first_error, sizeof(w->first_error), "%s (%s)",
                     orc_cl_status_str(status), orc_client_last_error());
        }
        return;
    }

    ++w->ops;
    if (w->nsamples < ORC_BENCH_SAMPLES_MAX) {
        w->samples[w->nsamples++] = (uint32_t)((t1 - t0) / 1000);
    }
}

/*
 * Start time of the next operation. Closed loop: now. Paced: its slot in a
 * fixed schedule, sleeping until then; latency is measured from the slot,
 * so time spent queued behind a slow operation counts (no coordinated
 * omission).
 */
static uint64_t orc_bench_next_start(orc_bench_worker_t *w)
{
    struct timespec ts;
    uint64_t slot;

    if (w->interval_ns == 0) {
        return orc_bench_now_ns();
    }

    slot = w->next_ns;
    w->next_ns += w->interval_ns;
    if (slot > orc_bench_now_ns()) {
        ts.tv_sec  = (time_t)(slot / 1000000000ull);
        ts.tv_nsec = (long)(slot % 1000000000ull);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) !=
               0) {
        }
    }
    return slot;
}

static void orc_bench_initiator(orc_bench_worker_t *w)
{
    uint64_t cursor = 0, i = 0, t0;
    orc_mbox_msg_t *msgs;
    orc_cl_status_t status;
    char body[64];
    size_t count;
    int got;

    while (orc_bench_now_ns() < orc_bench_run.end_ns) {
        snprintf(body, sizeof(body), "{\"req\":%" PRIu64 "}", ++i);
        t0 = orc_bench_next_start(w);
        if (t0 >= orc_bench_run.end_ns) {
            break;
        }
        status = orc_client_mbox_send(w->client, w->peer, w->node, body, NULL);
        got    = 0;
        while ((status == ORC_CL_OK) && !got) {
            status =
                orc_client_mbox_recv(w->client, w->node, cursor,
                                     ORC_BENCH_POLL_WAIT_MS, &msgs, &count);
            if (status != ORC_CL_OK) {
                break;
            }
            if (count == 0) {
                status = ORC_CL_ERR_TIMEOUT; /* the reply never came */
            } else {
                cursor = msgs[count - 1].seq;
                got    = 1;
            }
            orc_client_mbox_free(msgs, count);
        }
        orc_bench_record(w, t0, orc_bench_now_ns(), status);
        if (status != ORC_CL_OK) {
            break;
        }
    }

    /* release the responder */
    orc_client_mbox_send(w->client, w->peer, w->node, "{\"stop\":1}", NULL);
}

static void orc_bench_responder(orc_bench_worker_t *w)
{
    uint64_t cursor = 0;
    orc_mbox_msg_t *msgs;
    orc_cl_status_t status;
    size_t i, count;
    int done = 0;

    while (!done && !atomic_load(&orc_bench_run.stop)) {
        status = orc_client_mbox_recv(w->client, w->node, cursor,
                                      ORC_BENCH_POLL_WAIT_MS, &msgs, &count);
        if (status != ORC_CL_OK) {
            orc_bench_record(w, 0, 0, status);
            break;
        }
        for (i = 0; i < count; ++i) {
            cursor = msgs[i].seq;
            if (strstr(msgs[i].body_json, "\"stop\"") != NULL) {
                done = 1;
                break;
            }
            status = orc_client_mbox_send(w->client, msgs[i].from, w->node,
                                          msgs[i].body_json, NULL);
            if (status != ORC_CL_OK) {
                orc_bench_record(w, 0, 0, status);
                done = 1;
                break;
            }
        }
        orc_client_mbox_free(msgs, count);
    }

    /* acknowledge everything consumed */
    if (orc_client_mbox_recv(w->client, w->node, cursor, 0, &msgs, &count) ==
        ORC_CL_OK) {
        orc_client_mbox_free(msgs, count);
    }
}

static void *orc_bench_thread(void *arg)
{
    orc_bench_worker_t *w = arg;
    struct timespec start;
    char endpoint[160];
    orc_cl_status_t status;
    uint64_t t0, seq = 0;
    char *json;

    /* all threads start together */
    start.tv_sec  = (time_t)(orc_bench_run.start_ns / 1000000000ull);
    start.tv_nsec = (long)(orc_bench_run.start_ns % 1000000000ull);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &start, NULL) != 0) {
    }

    if (w->test == ORC_BENCH_PAIR) {
        if (w->responder) {
            orc_bench_responder(w);
        } else {
            orc_bench_initiator(w);
        }
        return NULL;
    }

    for (;;) {
        t0 = orc_bench_next_start(w);
        if (t0 >= orc_bench_run.end_ns) {
            break;
        }
        switch (w->test) {
        case ORC_BENCH_HEALTHZ:
            status = orc_client_health(w->client);
            break;
        case ORC_BENCH_FETCH:
            status = orc_client_endpoint_get(w->client, w->node, &json);
            if (status == ORC_CL_OK) {
                free(json);
            }
            break;
        default:
            snprintf(endpoint, sizeof(endpoint),
                     "{\"backend\":\"soft\",\"qpn\":%" PRIu64 ",\"gid\":"
                     "\"::ffff:127.0.0.1\",\"mtu\":4096}",
                     ++seq);
            status = orc_client_endpoint_put(w->client, w->node, endpoint);
            break;
        }
        orc_bench_record(w, t0, orc_bench_now_ns(), status);
        if (status != ORC_CL_OK) {
            break;
        }
    }
    return NULL;
}

static int orc_bench_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return (x > y) - (x < y);
}

typedef struct orc_bench_result {
    orc_bench_test_t test;
    int clients;
    double rate;
    double p50_ms;
    double p99_ms;
    uint64_t errors;
} orc_bench_result_t;

static int orc_bench_cell(orc_bench_test_t test, int clients, double duration,
                          double rate, orc_bench_result_t *result)
{
    int nthreads = (test == ORC_BENCH_PAIR) ? 2 * clients : clients;
    orc_bench_worker_t *workers;
    uint32_t *all;
    size_t total = 0, k;
    uint64_t ops = 0, errors = 0, finished;
    char endpoint[128];
    orc_cl_status_t status;
    int i, ret = -1;

    workers = calloc(nthreads, sizeof(*workers));
    if (workers == NULL) {
        return -1;
    }

    for (i = 0; i < nthreads; ++i) {
        workers[i].test = test;
        /* a pair's responder starts one replica after its initiator */
        workers[i].client = orc_bench_client((unsigned)(i + i / clients));
        workers[i].samples =
            malloc(ORC_BENCH_SAMPLES_MAX * sizeof(*workers[i].samples));
        if ((workers[i].client == NULL) || (workers[i].samples == NULL)) {
            goto out;
        }
        if (test == ORC_BENCH_HEALTHZ) {
            continue;
        }
        /* a long TTL: the keep-alive thread must not matter here */
        status =
            orc_client_register(workers[i].client, "orcd-bench", getpid(),
                                "{\"role\":\"bench\"}", 300, &workers[i].node);
        if (status != ORC_CL_OK) {
            fprintf(stderr, "orcd_bench: register: %s (%s)\n",
                    orc_cl_status_str(status), orc_client_last_error());
            goto out;
        }
        snprintf(endpoint, sizeof(endpoint),
                 "{\"backend\":\"soft\",\"qpn\":"
                 "%d,\"mtu\":4096}",
                 i);
        status = orc_client_endpoint_put(workers[i].client, workers[i].node,
                                         endpoint);
        if (status != ORC_CL_OK) {
            fprintf(stderr, "orcd_bench: publish: %s (%s)\n",
                    orc_cl_status_str(status), orc_client_last_error());
            goto out;
        }
    }

    if (test == ORC_BENCH_PAIR) {
        for (i = 0; i < clients; ++i) {
            workers[i].peer                = workers[clients + i].node;
            workers[clients + i].responder = 1;
        }
    }

    atomic_store(&orc_bench_run.stop, 0);
    orc_bench_run.start_ns = orc_bench_now_ns() + 200000000ull;
    orc_bench_run.end_ns = orc_bench_run.start_ns + (uint64_t)(duration * 1e9);
    for (i = 0; (rate > 0) && (i < clients); ++i) {
        /* rate ops/s in total, the clients' slots evenly interleaved */
        workers[i].interval_ns = (uint64_t)(clients * 1e9 / rate);
        workers[i].next_ns     = orc_bench_run.start_ns +
                             workers[i].interval_ns * (uint64_t)i / clients;
    }

    for (i = 0; i < nthreads; ++i) {
        if (pthread_create(&workers[i].thread, NULL, orc_bench_thread,
                           &workers[i]) != 0) {
            fprintf(stderr, "orcd_bench: pthread_create failed\n");
            exit(1);
        }
    }

    /* initiators/clients first, then release the responders */
    for (i = 0; i < clients; ++i) {
        pthread_join(workers[i].thread, NULL);
    }
    finished = orc_bench_now_ns();
    atomic_store(&orc_bench_run.stop, 1);
    for (i = clients; i < nthreads; ++i) {
        pthread_join(workers[i].thread, NULL);
    }

    for (i = 0; i < nthreads; ++i) {
        if (!workers[i].responder) {
            ops += workers[i].ops;
            total += workers[i].nsamples;
        }
        errors += workers[i].errors;
        if (workers[i].errors > 0) {
            fprintf(stderr,
                    "orcd_bench: %s x%d thread %d: %" PRIu64
                    " errors, first: %s\n",
                    orc_bench_test_names[test], clients, i, workers[i].errors,
                    workers[i].first_error);
        }
    }

    all = malloc((total + 1) * sizeof(*all));
    if (all == NULL) {
        goto out;
    }
    for (i = 0, k = 0; i < clients; ++i) {
        memcpy(all + k, workers[i].samples, workers[i].nsamples * sizeof(*all));
        k += workers[i].nsamples;
    }
    qsort(all, total, sizeof(*all), orc_bench_cmp_u32);

    result->test    = test;
    result->clients = clients;
    result->rate    = ops / ((finished - orc_bench_run.start_ns) * 1e-9);
    result->p50_ms  = (total > 0) ? all[total / 2] / 1000.0 : 0;
    result->p99_ms  = (total > 0) ? all[(total * 99) / 100] / 1000.0 : 0;
    result->errors  = errors;
    free(all);
    ret = 0;

out:
    for (i = 0; i < nthreads; ++i) {
        /* destroy deregisters the node (and stops its keep-alive) */
        orc_client_destroy(workers[i].client);
        free(workers[i].samples);
    }
    free(workers);
    return ret;
}

static void orc_bench_usage(FILE *out)
{
    fprintf(out, "usage: orcd_bench [--url URL] [--job J] [--token T] "
                 "[--duration S]\n"
                 "                  [--clients 1,16,64] "
                 "[--tests healthz,fetch,publish,pair] [--paced 0|1]\n"
                 "  URL/job/token default to " ORC_CLIENT_ENV_URL
                 ", " ORC_CLIENT_ENV_JOB ", " ORC_CLIENT_ENV_TOKEN
                 " (else " ORC_CLIENT_DEFAULT_URL ", job \"bench\").\n"
                 "  Each cell runs S seconds (default 5). --paced 1 (default)\n"
                 "  adds open-loop cells at the goal rates with 64 clients.\n");
}

static int orc_bench_parse_clients(char *text, int *clients, int *n_p)
{
    char *tok, *save = NULL, *end;
    long value;
    int n = 0;

    for (tok = strtok_r(text, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        value = strtol(tok, &end, 10);
        if ((*end != '\0') || (value < 1) || (value > ORC_BENCH_MAX_CLIENTS) ||
            (n == ORC_BENCH_MAX_CELLS)) {
            return -1;
        }
        clients[n++] = (int)value;
    }

    *n_p = n;
    return (n > 0) ? 0 : -1;
}

static int orc_bench_parse_tests(char *text, int *tests)
{
    char *tok, *save = NULL;
    int t, any       = 0;

    memset(tests, 0, ORC_BENCH_LAST * sizeof(*tests));
    for (tok = strtok_r(text, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        for (t = 0; t < ORC_BENCH_LAST; ++t) {
            if (!strcmp(tok, orc_bench_test_names[t])) {
                tests[t] = any = 1;
                break;
            }
        }
        if (t == ORC_BENCH_LAST) {
            return -1;
        }
    }
    return any ? 0 : -1;
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"url", required_argument, NULL, 'u'},
        {"job", required_argument, NULL, 'j'},
        {"token", required_argument, NULL, 't'},
        {"duration", required_argument, NULL, 'd'},
        {"clients", required_argument, NULL, 'c'},
        {"tests", required_argument, NULL, 'T'},
        {"paced", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int clients[ORC_BENCH_MAX_CELLS] = {1, 16, 64};
    int tests[ORC_BENCH_LAST]        = {1, 1, 1, 1};
    orc_bench_result_t results[ORC_BENCH_LAST][ORC_BENCH_MAX_CELLS];
    orc_bench_result_t paced[ORC_BENCH_LAST];
    double paced_rate[ORC_BENCH_LAST] = {0};
    int do_paced                      = 1;
    int nclients = 3, failed = 0, t, c, ret, pass;
    double duration = 5, healthz_rate, goal_rate;
    orc_bench_result_t *r;
    char goal[64], label[64];
    orc_client_t *probe;

    orc_bench_run.url        = getenv(ORC_CLIENT_ENV_URL);
    orc_bench_run.job        = getenv(ORC_CLIENT_ENV_JOB);
    orc_bench_run.token      = getenv(ORC_CLIENT_ENV_TOKEN);
    orc_bench_run.timeout_ms = 10000;

    while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        switch (c) {
        case 'u':
            orc_bench_run.url = optarg;
            break;
        case 'j':
            orc_bench_run.job = optarg;
            break;
        case 't':
            orc_bench_run.token = optarg;
            break;
        case 'd':
            duration = strtod(optarg, NULL);
            if (!(duration > 0) || (duration > 600)) {
                fprintf(stderr, "orcd_bench: --duration must be in (0, 600]\n");
                return 1;
            }
            break;
        case 'c':
            if (orc_bench_parse_clients(optarg, clients, &nclients) < 0) {
                fprintf(stderr,
                        "orcd_bench: --clients: a comma-separated "
                        "list of 1..%d (at most %d)\n",
                        ORC_BENCH_MAX_CLIENTS, ORC_BENCH_MAX_CELLS);
                return 1;
            }
            break;
        case 'T':
            if (orc_bench_parse_tests(optarg, tests) < 0) {
                fprintf(stderr, "orcd_bench: --tests: a comma-separated list "
                                "of healthz, fetch, publish, pair\n");
                return 1;
            }
            break;
        case 'p':
            do_paced = atoi(optarg) != 0;
            break;
        case 'h':
            orc_bench_usage(stdout);
            return 0;
        default:
            orc_bench_usage(stderr);
            return 1;
        }
    }

    if (orc_bench_run.url == NULL) {
        orc_bench_run.url = ORC_CLIENT_DEFAULT_URL;
    }
    if (orc_bench_run.job == NULL) {
        orc_bench_run.job = "bench";
    }

    probe = orc_bench_client(0);
    if (probe == NULL) {
        return 1;
    }
    ret = orc_client_health(probe);
    orc_client_destroy(probe);
    if (ret != ORC_CL_OK) {
        fprintf(stderr, "orcd_bench: orcd at %s: %s (%s)\n", orc_bench_run.url,
                orc_cl_status_str(ret), orc_client_last_error());
        return 1;
    }

    /* the reference row is always measured: every rate is shown against it */
    tests[ORC_BENCH_HEALTHZ] = 1;
    for (t = 0; t < ORC_BENCH_LAST; ++t) {
        if (!tests[t]) {
            continue;
        }
        for (c = 0; c < nclients; ++c) {
            fprintf(stderr, "orcd_bench: %s with %d client%s for %.1f s\n",
                    orc_bench_test_names[t], clients[c],
                    (clients[c] == 1) ? "" : "s", duration);
            if (orc_bench_cell(t, clients[c], duration, 0, &results[t][c]) <
                0) {
                fprintf(stderr, "orcd_bench: setup failed\n");
                return 1;
            }
        }
    }

    /* open loop at the goal rates: the latency a job sees at that load */
    paced_rate[ORC_BENCH_FETCH] =
        do_paced && tests[ORC_BENCH_FETCH] ? ORC_BENCH_GOAL_FETCH : 0;
    paced_rate[ORC_BENCH_PAIR] =
        do_paced && tests[ORC_BENCH_PAIR] ? ORC_BENCH_GOAL_PAIR : 0;
    for (t = 0; t < ORC_BENCH_LAST; ++t) {
        if (paced_rate[t] == 0) {
            continue;
        }
        fprintf(stderr,
                "orcd_bench: %s with %d clients paced at %.0f/s for "
                "%.1f s\n",
                orc_bench_test_names[t], ORC_BENCH_GOAL_CLIENTS, paced_rate[t],
                duration);
        if (orc_bench_cell(t, ORC_BENCH_GOAL_CLIENTS, duration, paced_rate[t],
                           &paced[t]) < 0) {
            fprintf(stderr, "orcd_bench: setup failed\n");
            return 1;
        }
    }

    printf("orcd_bench: %s, %.1f s per cell; goals at %d clients: >= %.0f "
           "fetches/s, >= %.0f pairing round trips/s; p99 < %.0f ms\n",
           orc_bench_run.url, duration, ORC_BENCH_GOAL_CLIENTS,
           ORC_BENCH_GOAL_FETCH, ORC_BENCH_GOAL_PAIR, ORC_BENCH_GOAL_P99_MS);
    printf("%-20s %7s %11s %9s %9s %10s %7s  %-26s %s\n", "test", "clients",
           "ops/s", "p50 ms", "p99 ms", "x healthz", "errors", "goal",
           "result");
    for (t = 0; t < ORC_BENCH_LAST; ++t) {
        if (!tests[t]) {
            continue;
        }
        for (c = 0; c < nclients; ++c) {
            r            = &results[t][c];
            healthz_rate = results[ORC_BENCH_HEALTHZ][c].rate;
            goal_rate    = 0;
            if (clients[c] == ORC_BENCH_GOAL_CLIENTS) {
                goal_rate = (t == ORC_BENCH_FETCH)  ? ORC_BENCH_GOAL_FETCH
                            : (t == ORC_BENCH_PAIR) ? ORC_BENCH_GOAL_PAIR
                                                    : 0;
            }
            if (t == ORC_BENCH_HEALTHZ) {
                snprintf(goal, sizeof(goal), "(reference)");
                pass = -1;
            } else if (goal_rate > 0) {
                snprintf(goal, sizeof(goal), ">= %.0f/s, p99 < %.0f ms",
                         goal_rate, ORC_BENCH_GOAL_P99_MS);
                pass = (r->rate >= goal_rate) &&
                       (r->p99_ms < ORC_BENCH_GOAL_P99_MS) && (r->errors == 0);
            } else {
                snprintf(goal, sizeof(goal), "p99 < %.0f ms",
                         ORC_BENCH_GOAL_P99_MS);
                pass = (r->p99_ms < ORC_BENCH_GOAL_P99_MS) && (r->errors == 0);
            }
            printf("%-20s %7d %11.0f %9.3f %9.3f %10.2f %7" PRIu64
                   "  %-26s %s\n",
                   orc_bench_test_labels[t], r->clients, r->rate, r->p50_ms,
                   r->p99_ms, (healthz_rate > 0) ? r->rate / healthz_rate : 0,
                   r->errors, goal,
                   (pass < 0) ? "-"
                   : pass     ? "PASS"
                              : "MISS");
            failed |= (r->errors > 0);
        }
    }

    for (t = 0; t < ORC_BENCH_LAST; ++t) {
        if (paced_rate[t] == 0) {
            continue;
        }
        r = &paced[t];
        snprintf(label, sizeof(label), "%s @%.0f/s",
                 (t == ORC_BENCH_FETCH) ? "fetch" : "pairing", paced_rate[t]);
        snprintf(goal, sizeof(goal), "p99 < %.0f ms at this rate",
                 ORC_BENCH_GOAL_P99_MS);
        pass = (r->rate >= 0.97 * paced_rate[t]) &&
               (r->p99_ms < ORC_BENCH_GOAL_P99_MS) && (r->errors == 0);
        printf("%-20s %7d %11.0f %9.3f %9.3f %10s %7" PRIu64 "  %-26s %s\n",
               label, r->clients, r->rate, r->p50_ms, r->p99_ms, "-", r->errors,
               goal, pass ? "PASS" : "MISS");
        failed |= (r->errors > 0);
    }

    return failed ? 2 : 0;
}
