/*
 * orcd: the orc coordinator daemon. Shared declarations: configuration,
 * logging.
 */
#ifndef ORCD_H_
#define ORCD_H_

#include "coordinator/store/orc_store.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ORCD_DEFAULT_ADDRESS "127.0.0.1"
#define ORCD_DEFAULT_PORT    7411

/* Limits on names (see the API contract) */
#define ORCD_NAME_MAX        128
#define ORCD_TOKEN_MIN       8
#define ORCD_TOKEN_MAX       256
#define ORCD_CONFIG_MAX_KEYS 48

typedef enum orcd_log_level {
    ORCD_LOG_ERROR,
    ORCD_LOG_WARN,
    ORCD_LOG_INFO,
    ORCD_LOG_DEBUG,
} orcd_log_level_t;

typedef enum orcd_store_backend {
    ORCD_STORE_MEMORY,
    ORCD_STORE_ETCD,
} orcd_store_backend_t;

/* store.etcd: where the etcd cluster is and how to talk to it */
typedef struct orcd_etcd_config {
    char **endpoints; /* http[s]://host:port */
    size_t nendpoints;
    char *prefix;      /* keys of this deployment: under it */
    double timeout;    /* s, one etcd call with its retries */
    uint64_t pipeline; /* txn batches in flight at most (0: the store's) */
    char *username;
    char *password; /* or read from password_file */
    char *password_file;
    char *ca; /* TLS to etcd */
    char *cert;
    char *key;
} orcd_etcd_config_t;

/* One accepted bearer token and the job it belongs to. */
typedef struct orcd_token {
    char *job;
    char *token;
} orcd_token_t;

/*
 * The whole configuration. Immutable once published to the server: a reload
 * builds a new one and swaps the pointer (orcd_api_set_config()).
 */
typedef struct orcd_config {
    /* listen */
    char *address;
    unsigned port;
    int allow_remote;
    unsigned threads; /* 0: auto, see orcd_config_threads() */
    /* limits */
    unsigned max_connections;
    unsigned max_connections_per_ip;
    unsigned idle_timeout;    /* s */
    unsigned request_timeout; /* s, from a request's first byte to its end */
    unsigned max_long_polls;
    size_t max_body; /* bytes */
    size_t endpoint_max;
    size_t mailbox_msg_max;
    unsigned mailbox_depth;
    size_t kv_value_max;
    unsigned max_labels;
    double max_wait; /* s */
    /* quotas (keys and bytes of keys and values stored) */
    uint64_t max_keys;
    uint64_t max_bytes;
    uint64_t max_keys_per_job;
    uint64_t max_bytes_per_job;
    /* ttl */
    int64_t ttl_default;
    int64_t ttl_min;
    int64_t ttl_max;
    /* auth */
    int auth_enabled;
    int metrics_auth;
    char *token_file;
    orcd_token_t *tokens;
    size_t ntokens;
    /* tls */
    char *tls_cert;
    char *tls_key;
    /* store */
    orcd_store_backend_t store_backend;
    orcd_etcd_config_t etcd;
    /* snapshot */
    char *snapshot_path;
    unsigned snapshot_interval; /* s; 0 = only at shutdown */
    /* logging */
    orcd_log_level_t log_level;
    char *config_path; /* file this came from, or NULL */
    /* where each key was set (file:line:column for cross-key errors);
     * line 0 = default or command line */
    char *source;
    struct {
        unsigned line;
        unsigned column;
    } marks[ORCD_CONFIG_MAX_KEYS];
} orcd_config_t;

/* Fill cfg with the embedded defaults. */
int orcd_config_init_defaults(orcd_config_t *cfg);
/* listen.threads at most, and its auto value on etcd */
#define ORCD_THREADS_MAX  1024
#define ORCD_THREADS_ETCD 128

/* HTTP threads to run: listen.threads, or for 0 half the online CPUs (>= 1)
 * on the memory store and ORCD_THREADS_ETCD on etcd */
unsigned orcd_config_threads(const orcd_config_t *cfg);
/*
 * Load a YAML file over the defaults in cfg. On error returns -1 and writes
 * "file:line:column: message" into err (never containing a token).
 */
int orcd_config_load_file(orcd_config_t *cfg, const char *path, char *err,
                          size_t errlen);
/* Same, from memory (name is used in messages). */
int orcd_config_load_buffer(orcd_config_t *cfg, const char *name,
                            const unsigned char *data, size_t len, char *err,
                            size_t errlen);
/* Cross-key checks and token file loading; run after all overrides. */
int orcd_config_finalize(orcd_config_t *cfg, char *err, size_t errlen);
void orcd_config_cleanup(orcd_config_t *cfg);
int orcd_config_parse_listen(const char *spec, char **address_p,
                             unsigned *port_p);
/* A command-line flag replaced "section.name": errors no longer point at
 * the file for it. */
void orcd_config_forget_mark(orcd_config_t *cfg, const char *key);
int orcd_config_parse_log_level(const char *s, orcd_log_level_t *level_p);
/* Does the PEM certificate at cert_path load, with the key at key_path, and
 * do they belong together? 0, or -1 with the TLS library's reason in err. */
int orcd_tls_check_pair(const char *cert_path, const char *key_path, char *err,
                        size_t errlen);

/* Logging (stderr, one line per message, thread-safe). */
void orcd_log_set_level(orcd_log_level_t level);
int orcd_log_enabled(orcd_log_level_t level);
void orcd_log(orcd_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void orcd_vlog(orcd_log_level_t level, const char *fmt, va_list ap);
/* The store's messages in orcd's format, at orcd's level (the store's
 * levels have orcd's order: orc_store_set_logger(orcd_log_store)) */
void orcd_log_store(orc_store_log_level_t level, const char *fmt, va_list ap);

#define orcd_error(...) orcd_log(ORCD_LOG_ERROR, __VA_ARGS__)
#define orcd_warn(...)  orcd_log(ORCD_LOG_WARN, __VA_ARGS__)
#define orcd_info(...)  orcd_log(ORCD_LOG_INFO, __VA_ARGS__)
#define orcd_debug(...)                            \
    do {                                           \
        if (orcd_log_enabled(ORCD_LOG_DEBUG)) {    \
            orcd_log(ORCD_LOG_DEBUG, __VA_ARGS__); \
        }                                          \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
