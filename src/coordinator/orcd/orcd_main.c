/*
 * orcd: command line, configuration (re)loading, signals, snapshots.
 *
 * Threads: main (signals via sigtimedwait, periodic snapshots, reloads), the
 * libmicrohttpd pool, the HTTP timer and the store's lease reaper. Signals
 * are blocked in every thread and taken synchronously by main.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd.h"
#include "orcd_api.h"
#include "orcd_http.h"
#include "coordinator/common/orc_util.h"
#include "coordinator/store/orc_store_etcd.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ORCD_SHUTDOWN_TIMEOUT 10.0 /* s for in-flight requests */

typedef struct orcd_opts {
    const char *config;
    const char *listen;
    const char *snapshot;
    const char *log_level;
    const char *port_file;
    const char *check;
} orcd_opts_t;

static void orcd_usage(FILE *f)
{
    fprintf(f,
            "usage: orcd [options]\n"
            "  -c, --config FILE        YAML configuration (default: embedded "
            "defaults)\n"
            "  -l, --listen ADDR:PORT   listen address (IPv6 as [ADDR]:PORT; "
            "port 0 = any free port)\n"
            "  -s, --snapshot FILE      snapshot file (load at start, save "
            "periodically and at exit)\n"
            "      --log-level LEVEL    error, warn, info or debug\n"
            "      --port-file FILE     write the bound port to FILE once "
            "listening\n"
            "      --check-config FILE  validate FILE and exit (0 = valid)\n"
            "  -h, --help               this text\n"
            "Signals: SIGTERM/SIGINT stop gracefully, SIGHUP reloads tokens "
            "and limits from the config file.\n");
}

/* Build a configuration: defaults, file, command-line overrides, checks.
 * Returns a heap config or NULL (error printed). */
static orcd_config_t *orcd_load_config(const orcd_opts_t *o)
{
    orcd_config_t *cfg = calloc(1, sizeof(*cfg));
    char err[1024];

    if ((cfg == NULL) || orcd_config_init_defaults(cfg)) {
        fprintf(stderr, "orcd: out of memory\n");
        free(cfg);
        return NULL;
    }
    if ((o->config != NULL) &&
        orcd_config_load_file(cfg, o->config, err, sizeof(err))) {
        fprintf(stderr, "orcd: %s\n", err);
        goto err;
    }
    if ((o->listen != NULL) &&
        orcd_config_parse_listen(o->listen, &cfg->address, &cfg->port)) {
        fprintf(stderr,
                "orcd: --listen %s: expected ADDR:PORT or "
                "[IPV6]:PORT\n",
                o->listen);
        goto err;
    }
    if (o->listen != NULL) {
        orcd_config_forget_mark(cfg, "listen.address");
        orcd_config_forget_mark(cfg, "listen.port");
    }
    if (o->snapshot != NULL) {
        free(cfg->snapshot_path);
        cfg->snapshot_path = strdup(o->snapshot);
        if (cfg->snapshot_path == NULL) {
            goto err;
        }
    }
    if ((o->log_level != NULL) &&
        orcd_config_parse_log_level(o->log_level, &cfg->log_level)) {
        fprintf(stderr,
                "orcd: --log-level %s: expected error, warn, info or "
                "debug\n",
                o->log_level);
        goto err;
    }
    if (orcd_config_finalize(cfg, err, sizeof(err))) {
        fprintf(stderr, "orcd: %s\n", err);
        goto err;
    }
    return cfg;

err:
    orcd_config_cleanup(cfg);
    free(cfg);
    return NULL;
}

static int orcd_write_port_file(const char *path, unsigned port)
{
    char tmp[4096];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    f = fopen(tmp, "w");
    if (f == NULL) {
        orcd_error("cannot create %s: %m", tmp);
        return -1;
    }
    fprintf(f, "%u\n", port);
    if (fclose(f) != 0) {
        orcd_error("cannot write %s: %m", tmp);
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        orcd_error("cannot rename %s to %s: %m", tmp, path);
        unlink(tmp);
        return -1;
    }
    return 0;
}

typedef struct orcd_live {
    char *snapshot_path;
    unsigned snapshot_interval;
} orcd_live_t;

static void orcd_copy_live(const orcd_config_t *cfg, void *arg)
{
    orcd_live_t *live = arg;

    free(live->snapshot_path);
    live->snapshot_path =
        (cfg->snapshot_path != NULL) ? strdup(cfg->snapshot_path) : NULL;
    live->snapshot_interval = cfg->snapshot_interval;
}

/* The store of store.backend: 0, or -1 (logged) */
static int orcd_open_store(const orcd_config_t *cfg, orc_store_t **store_p)
{
    const orc_store_params_t params = {
        .reap_ms     = 100,
        .group_depth = ORCD_STORE_GROUP_DEPTH,
        .classify    = orcd_key_class,
    };
    const orcd_etcd_config_t *e = &cfg->etcd;
    orc_store_etcd_params_t ep;
    char err[512];
    int status;

    if (cfg->store_backend == ORCD_STORE_MEMORY) {
        status = orc_store_mem_open(&params, store_p);
        if (status != ORC_STORE_OK) {
            orcd_error("cannot open the store: %s",
                       orc_store_status_str(status));
            return -1;
        }
        return 0;
    }
    memset(&ep, 0, sizeof(ep));
    ep.store           = params;
    ep.prefix          = e->prefix;
    ep.etcd.endpoints  = (const char *const *)e->endpoints;
    ep.etcd.nendpoints = e->nendpoints;
    ep.etcd.ca_file    = e->ca;
    ep.etcd.cert_file  = e->cert;
    ep.etcd.key_file   = e->key;
    ep.etcd.username   = e->username;
    ep.etcd.password   = e->password;
    ep.etcd.timeout_ms = (unsigned)(e->timeout * 1000);
    ep.pipeline        = (unsigned)e->pipeline;
    if (orc_store_etcd_open(&ep, store_p, err, sizeof(err)) != ORC_STORE_OK) {
        orcd_error("store.etcd: %s", err);
        return -1;
    }
    orcd_info("store: etcd at %s%s (keys under %s)", e->endpoints[0],
              (e->nendpoints > 1) ? " and others" : "", e->prefix);
    return 0;
}

typedef struct orcd_restart_check {
    const orcd_config_t *next;
} orcd_restart_check_t;

static void orcd_check_restart_keys(const orcd_config_t *cur, void *arg)
{
    const orcd_config_t *n = ((orcd_restart_check_t *)arg)->next;

    if (strcmp(cur->address, n->address) || (cur->port != n->port) ||
        (cur->threads != n->threads) ||
        (cur->max_connections != n->max_connections) ||
        (cur->max_connections_per_ip != n->max_connections_per_ip) ||
        (cur->idle_timeout != n->idle_timeout) ||
        (cur->request_timeout != n->request_timeout) ||
        (cur->store_backend != n->store_backend) ||
        strcmp(cur->etcd.prefix, n->etcd.prefix) ||
        (cur->etcd.nendpoints != n->etcd.nendpoints) ||
        (cur->etcd.pipeline != n->etcd.pipeline) ||
        ((cur->tls_cert == NULL) != (n->tls_cert == NULL)) ||
        (cur->tls_cert && strcmp(cur->tls_cert, n->tls_cert))) {
        orcd_warn("reload: listen.*, tls.*, store.*, limits.max_connections, "
                  "max_connections_per_ip, idle_timeout and request_timeout "
                  "take effect only after a restart");
    }
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"snapshot", required_argument, NULL, 's'},
        {"log-level", required_argument, NULL, 'L'},
        {"port-file", required_argument, NULL, 'P'},
        {"check-config", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    orcd_opts_t o    = {0};
    orcd_live_t live = {0};
    orcd_config_t *cfg, *next;
    orcd_restart_check_t rc;
    orc_store_t *store = NULL;
    orcd_server_t *srv = NULL;
    orcd_api_t *api    = NULL;
    struct timespec wait_ts;
    uint64_t last_snapshot_ms;
    sigset_t set;
    int opt, sig, ret = 1;

    while ((opt = getopt_long(argc, argv, "c:l:s:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            o.config = optarg;
            break;
        case 'l':
            o.listen = optarg;
            break;
        case 's':
            o.snapshot = optarg;
            break;
        case 'L':
            o.log_level = optarg;
            break;
        case 'P':
            o.port_file = optarg;
            break;
        case 'C':
            o.check = optarg;
            break;
        case 'h':
            orcd_usage(stdout);
            return 0;
        default:
            orcd_usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "orcd: unexpected argument '%s'\n", argv[optind]);
        orcd_usage(stderr);
        return 2;
    }
    if (o.check != NULL) {
        o.config = o.check;
        cfg      = orcd_load_config(&o);
        if (cfg == NULL) {
            return 1;
        }
        printf("%s: ok\n", o.check);
        orcd_config_cleanup(cfg);
        free(cfg);
        return 0;
    }

    cfg = orcd_load_config(&o);
    if (cfg == NULL) {
        return 1;
    }
    orcd_log_set_level(cfg->log_level);
    orc_store_set_logger(orcd_log_store);

    /* all threads inherit this mask: main takes the signals synchronously */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (orcd_open_store(cfg, &store)) {
        goto out_cfg;
    }
    if ((cfg->snapshot_path != NULL) &&
        orcd_snapshot_restore(store, cfg->snapshot_path)) {
        goto out_store;
    }
    orcd_copy_live(cfg, &live);
    if (orcd_api_create(cfg, store, &api)) {
        orcd_error("out of memory");
        goto out_store;
    }
    next = cfg;
    cfg  = NULL; /* owned by api */
    if (orcd_server_start(api, next, &srv)) {
        goto out_api;
    }
    orcd_info("listening on %s port %u (%s, auth %s, store %s, HTTP "
              "threads %u)",
              next->address, orcd_server_port(srv),
              next->tls_cert ? "https" : "http",
              next->auth_enabled ? "on" : "off", store->ops->name,
              orcd_config_threads(next));
    if ((o.port_file != NULL) &&
        orcd_write_port_file(o.port_file, orcd_server_port(srv))) {
        goto out_server;
    }

    last_snapshot_ms = orc_util_now_ms();
    for (;;) {
        wait_ts.tv_sec  = 1;
        wait_ts.tv_nsec = 0;
        sig             = sigtimedwait(&set, NULL, &wait_ts);
        if ((sig == SIGINT) || (sig == SIGTERM)) {
            orcd_info("%s: shutting down", strsignal(sig));
            break;
        }
        if (sig == SIGHUP) {
            if (o.config == NULL) {
                orcd_info("SIGHUP: no configuration file to reload");
                continue;
            }
            next = orcd_load_config(&o);
            if (next == NULL) {
                orcd_error("SIGHUP: %s not reloaded: keeping the running "
                           "configuration",
                           o.config);
                continue;
            }
            rc.next = next;
            orcd_api_with_config(api, orcd_check_restart_keys, &rc);
            orcd_log_set_level(next->log_level);
            orcd_server_reload(srv, next);
            orcd_api_set_config(api, next);
            orcd_api_with_config(api, orcd_copy_live, &live);
            orcd_info("SIGHUP: reloaded %s (tokens, limits, ttl, snapshot, "
                      "log level)",
                      o.config);
            continue;
        }
        if ((sig < 0) && (errno != EAGAIN) && (errno != EINTR)) {
            orcd_error("sigtimedwait: %m");
            break;
        }
        if ((live.snapshot_path != NULL) && (live.snapshot_interval > 0) &&
            (orc_util_now_ms() - last_snapshot_ms >=
             (uint64_t)live.snapshot_interval * 1000u)) {
            orcd_snapshot_write(store, live.snapshot_path);
            last_snapshot_ms = orc_util_now_ms();
        }
    }
    ret = 0;

out_server:
    orcd_server_shutdown(srv, ORCD_SHUTDOWN_TIMEOUT);
    orcd_server_destroy(srv);
    if ((ret == 0) && (live.snapshot_path != NULL) &&
        orcd_snapshot_write(store, live.snapshot_path)) {
        orcd_error("stopped; the state since the last snapshot is lost");
        ret = 1;
    } else if (ret == 0) {
        orcd_info("stopped");
    }
out_api:
    orcd_api_destroy(api);
out_store:
    orc_store_close(store);
out_cfg:
    if (cfg != NULL) {
        orcd_config_cleanup(cfg);
        free(cfg);
    }
    free(live.snapshot_path);
    return ret;
}
