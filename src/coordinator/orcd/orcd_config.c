/*
 * orcd configuration: embedded defaults, the YAML loader (libyaml event
 * API), token files and cross-key validation.
 *
 * The loader first turns the event stream into a small tree (rejecting
 * aliases, multiple documents and nesting deeper than ORCD_YAML_MAX_DEPTH),
 * then walks it against the schema. Every error names file:line:column (1-based,
 * from libyaml's marks) and the dotted key; a token value is never printed.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd.h"
#include "coordinator/common/orc_util.h"
#include "coordinator/store/orc_store_etcd.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#define ORCD_YAML_MAX_DEPTH 6
#define ORCD_YAML_MAX_NODES 20000
#define ORCD_YAML_MAX_SIZE  (1024 * 1024)
#define ORCD_MAX_TOKENS     10000

typedef enum orcd_ynode_type {
    ORCD_YNODE_SCALAR,
    ORCD_YNODE_MAP,
    ORCD_YNODE_SEQ,
} orcd_ynode_type_t;

typedef struct orcd_ynode {
    orcd_ynode_type_t type;
    size_t line;               /* 1-based */
    size_t column;             /* 1-based */
    char *value;               /* scalar */
    int plain;                 /* scalar written without quotes */
    struct orcd_ynode **items; /* map: key, value, key, value...; seq */
    size_t nitems;
    size_t cap;
} orcd_ynode_t;

typedef struct orcd_cfg_ctx {
    const char *name;
    char *err;
    size_t errlen;
    size_t nnodes;
} orcd_cfg_ctx_t;

static void orcd_cfg_error(orcd_cfg_ctx_t *ctx, size_t line, size_t column,
                           const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void orcd_cfg_error(orcd_cfg_ctx_t *ctx, size_t line, size_t column,
                           const char *fmt, ...)
{
    va_list ap;
    int n;

    n = snprintf(ctx->err, ctx->errlen, "%s:%zu:%zu: ", ctx->name, line,
                 column);
    if ((n < 0) || ((size_t)n >= ctx->errlen)) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(ctx->err + n, ctx->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static void orcd_ynode_free(orcd_ynode_t *node)
{
    size_t i;

    if (node == NULL) {
        return;
    }
    for (i = 0; i < node->nitems; ++i) {
        orcd_ynode_free(node->items[i]);
    }
    free(node->items);
    free(node->value);
    free(node);
}

static orcd_ynode_t *orcd_ynode_new(orcd_cfg_ctx_t *ctx, orcd_ynode_type_t type,
                                    const yaml_mark_t *mark)
{
    orcd_ynode_t *node;

    if (++ctx->nnodes > ORCD_YAML_MAX_NODES) {
        orcd_cfg_error(ctx, mark->line + 1, mark->column + 1,
                       "too many YAML nodes (more than %d)",
                       ORCD_YAML_MAX_NODES);
        return NULL;
    }
    node = calloc(1, sizeof(*node));
    if (node == NULL) {
        orcd_cfg_error(ctx, mark->line + 1, mark->column + 1, "out of memory");
        return NULL;
    }
    node->type   = type;
    node->line   = mark->line + 1;
    node->column = mark->column + 1;
    return node;
}

static int orcd_ynode_append(orcd_cfg_ctx_t *ctx, orcd_ynode_t *parent,
                             orcd_ynode_t *child)
{
    orcd_ynode_t **items;
    size_t cap;

    if (parent->nitems == parent->cap) {
        cap   = (parent->cap == 0) ? 8 : parent->cap * 2;
        items = realloc(parent->items, cap * sizeof(*items));
        if (items == NULL) {
            orcd_cfg_error(ctx, child->line, child->column, "out of memory");
            return -1;
        }
        parent->items = items;
        parent->cap   = cap;
    }
    parent->items[parent->nitems++] = child;
    return 0;
}

/* Build the tree of the single document in data; NULL root = empty file. */
static int orcd_yaml_parse(orcd_cfg_ctx_t *ctx, const unsigned char *data,
                           size_t len, orcd_ynode_t **root_p)
{
    orcd_ynode_t *stack[ORCD_YAML_MAX_DEPTH + 1];
    orcd_ynode_t *root = NULL, *node;
    yaml_parser_t parser;
    yaml_event_t event;
    size_t depth = 0, ndocs = 0;
    int done = 0, ret = -1;

    if (len > ORCD_YAML_MAX_SIZE) {
        orcd_cfg_error(ctx, 1, 1, "file too large (more than %d bytes)",
                       ORCD_YAML_MAX_SIZE);
        return -1;
    }
    if (!yaml_parser_initialize(&parser)) {
        orcd_cfg_error(ctx, 1, 1, "cannot initialise the YAML parser");
        return -1;
    }
    yaml_parser_set_input_string(&parser, data, len);

    while (!done) {
        if (!yaml_parser_parse(&parser, &event)) {
            orcd_cfg_error(ctx, parser.problem_mark.line + 1,
                           parser.problem_mark.column + 1,
                           "YAML syntax: %s%s%s",
                           parser.problem ? parser.problem : "error",
                           parser.context ? " " : "",
                           parser.context ? parser.context : "");
            goto out;
        }
        node = NULL;
        switch (event.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++ndocs > 1) {
                orcd_cfg_error(ctx, event.start_mark.line + 1,
                               event.start_mark.column + 1,
                               "more than one YAML document");
                goto out_event;
            }
            break;
        case YAML_ALIAS_EVENT:
            orcd_cfg_error(ctx, event.start_mark.line + 1,
                           event.start_mark.column + 1,
                           "YAML aliases are not supported");
            goto out_event;
        case YAML_SCALAR_EVENT:
            node = orcd_ynode_new(ctx, ORCD_YNODE_SCALAR, &event.start_mark);
            if (node == NULL) {
                goto out_event;
            }
            node->value = strndup((const char *)event.data.scalar.value,
                                  event.data.scalar.length);
            if ((node->value == NULL) ||
                (strlen(node->value) != event.data.scalar.length)) {
                orcd_cfg_error(ctx, node->line, node->column,
                               "scalar contains a NUL byte");
                orcd_ynode_free(node);
                goto out_event;
            }
            node->plain = (event.data.scalar.style == YAML_PLAIN_SCALAR_STYLE);
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (depth >= ORCD_YAML_MAX_DEPTH) {
                orcd_cfg_error(ctx, event.start_mark.line + 1,
                               event.start_mark.column + 1,
                               "nesting deeper than %d levels",
                               ORCD_YAML_MAX_DEPTH);
                goto out_event;
            }
            node = orcd_ynode_new(ctx,
                                  (event.type == YAML_MAPPING_START_EVENT)
                                      ? ORCD_YNODE_MAP
                                      : ORCD_YNODE_SEQ,
                                  &event.start_mark);
            if (node == NULL) {
                goto out_event;
            }
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            --depth;
            break;
        default:
            break;
        }
        if (node != NULL) {
            if (depth == 0) {
                root = node;
            } else if (orcd_ynode_append(ctx, stack[depth - 1], node)) {
                orcd_ynode_free(node);
                goto out_event;
            }
            if (node->type != ORCD_YNODE_SCALAR) {
                stack[depth++] = node;
            }
        }
        yaml_event_delete(&event);
    }
    *root_p = root;
    root    = NULL;
    ret     = 0;
    goto out;

out_event:
    yaml_event_delete(&event);
out:
    orcd_ynode_free(root);
    yaml_parser_delete(&parser);
    return ret;
}

/* ------------------------------------------------------------ typed values */

static int orcd_ynode_is_null(const orcd_ynode_t *node)
{
    return (node->type == ORCD_YNODE_SCALAR) && node->plain &&
           ((node->value[0] == '\0') || !strcmp(node->value, "~") ||
            !strcmp(node->value, "null") || !strcmp(node->value, "Null") ||
            !strcmp(node->value, "NULL"));
}

static int orcd_cfg_expect_scalar(orcd_cfg_ctx_t *ctx, const orcd_ynode_t *v,
                                  const char *key, const char *what)
{
    if ((v->type != ORCD_YNODE_SCALAR) || orcd_ynode_is_null(v)) {
        orcd_cfg_error(ctx, v->line, v->column, "%s: expected %s, got %s", key,
                       what,
                       (v->type == ORCD_YNODE_MAP)   ? "a mapping"
                       : (v->type == ORCD_YNODE_SEQ) ? "a sequence"
                                                     : "null");
        return -1;
    }
    return 0;
}

static int orcd_cfg_bool(orcd_cfg_ctx_t *ctx, const orcd_ynode_t *v,
                         const char *key, int *out)
{
    static const char *yes[] = {"true", "True", "TRUE", "yes",
                                "Yes",  "on",   "On",   NULL};
    static const char *no[]  = {"false", "False", "FALSE", "no",
                                "No",    "off",   "Off",   NULL};
    int i;

    if (orcd_cfg_expect_scalar(ctx, v, key, "a boolean")) {
        return -1;
    }
    for (i = 0; v->plain && (yes[i] != NULL); ++i) {
        if (!strcmp(v->value, yes[i])) {
            *out = 1;
            return 0;
        }
    }
    for (i = 0; v->plain && (no[i] != NULL); ++i) {
        if (!strcmp(v->value, no[i])) {
            *out = 0;
            return 0;
        }
    }
    orcd_cfg_error(ctx, v->line, v->column,
                   "%s: expected a boolean (true or false), got '%.64s'", key,
                   v->value);
    return -1;
}

/* unsigned integer with an optional KiB/MiB/GiB (or K/M/G) suffix if units */
static int orcd_cfg_uint(orcd_cfg_ctx_t *ctx, const orcd_ynode_t *v,
                         const char *key, uint64_t min, uint64_t max, int units,
                         uint64_t *out)
{
    const char *p  = v->value;
    uint64_t value = 0, mult = 1;
    int digits = 0;

    if (orcd_cfg_expect_scalar(ctx, v, key, "an integer")) {
        return -1;
    }
    if (!v->plain) {
        goto bad;
    }
    while (isdigit((unsigned char)*p)) {
        if (value > (UINT64_MAX - 9) / 10) {
            goto range;
        }
        value = value * 10 + (uint64_t)(*p++ - '0');
        ++digits;
    }
    if (digits == 0) {
        goto bad;
    }
    if (units && (*p != '\0')) {
        if (!strcmp(p, "K") || !strcmp(p, "KiB")) {
            mult = 1024;
        } else if (!strcmp(p, "M") || !strcmp(p, "MiB")) {
            mult = 1024 * 1024;
        } else if (!strcmp(p, "G") || !strcmp(p, "GiB")) {
            mult = 1024 * 1024 * 1024;
        } else {
            goto bad;
        }
        p += strlen(p);
    }
    if (*p != '\0') {
        goto bad;
    }
    if (value > UINT64_MAX / mult) {
        goto range;
    }
    value *= mult;
    if ((value < min) || (value > max)) {
        goto range;
    }
    *out = value;
    return 0;

range:
    orcd_cfg_error(ctx, v->line, v->column,
                   "%s: value %.64s out of range [%llu, %llu]", key, v->value,
                   (unsigned long long)min, (unsigned long long)max);
    return -1;
bad:
    orcd_cfg_error(ctx, v->line, v->column, "%s: expected %s, got '%.64s'", key,
                   units ? "a size (integer, optional K/KiB/M/MiB/G/GiB)"
                         : "a non-negative integer",
                   v->value);
    return -1;
}

static int orcd_cfg_seconds(orcd_cfg_ctx_t *ctx, const orcd_ynode_t *v,
                            const char *key, double min, double max,
                            double *out)
{
    char *end;
    double d;

    if (orcd_cfg_expect_scalar(ctx, v, key, "a number of seconds")) {
        return -1;
    }
    errno = 0;
    d     = strtod(v->value, &end);
    if (!v->plain || (end == v->value) || (*end != '\0') || (errno != 0) ||
        !isfinite(d) || !isdigit((unsigned char)v->value[0])) {
        orcd_cfg_error(ctx, v->line, v->column,
                       "%s: expected a number of seconds, got '%.64s'", key,
                       v->value);
        return -1;
    }
    if ((d < min) || (d > max)) {
        orcd_cfg_error(ctx, v->line, v->column,
                       "%s: value %.64s out of range [%g, %g]", key, v->value,
                       min, max);
        return -1;
    }
    *out = d;
    return 0;
}

static int orcd_cfg_string(orcd_cfg_ctx_t *ctx, const orcd_ynode_t *v,
                           const char *key, char **out)
{
    char *s;

    if (orcd_cfg_expect_scalar(ctx, v, key, "a string")) {
        return -1;
    }
    if (v->value[0] == '\0') {
        orcd_cfg_error(ctx, v->line, v->column, "%s: empty string", key);
        return -1;
    }
    s = strdup(v->value);
    if (s == NULL) {
        orcd_cfg_error(ctx, v->line, v->column, "out of memory");
        return -1;
    }
    free(*out);
    *out = s;
    return 0;
}

static int orcd_token_valid(const char *s)
{
    size_t len = strlen(s), i;

    if ((len < ORCD_TOKEN_MIN) || (len > ORCD_TOKEN_MAX)) {
        return 0;
    }
    for (i = 0; i < len; ++i) {
        if (((unsigned char)s[i] <= 0x20) || ((unsigned char)s[i] >= 0x7f)) {
            return 0;
        }
    }
    return 1;
}

static int orcd_config_add_token(orcd_config_t *cfg, const char *job,
                                 const char *token)
{
    orcd_token_t *tokens;

    if (cfg->ntokens >= ORCD_MAX_TOKENS) {
        return -1;
    }
    tokens = realloc(cfg->tokens, (cfg->ntokens + 1) * sizeof(*tokens));
    if (tokens == NULL) {
        return -1;
    }
    cfg->tokens                = tokens;
    tokens[cfg->ntokens].job   = strdup(job);
    tokens[cfg->ntokens].token = strdup(token);
    if ((tokens[cfg->ntokens].job == NULL) ||
        (tokens[cfg->ntokens].token == NULL)) {
        free(tokens[cfg->ntokens].job);
        free(tokens[cfg->ntokens].token);
        return -1;
    }
    ++cfg->ntokens;
    return 0;
}

/* ----------------------------------------------------------------- schema */

typedef enum orcd_key_type {
    ORCD_KEY_UINT,
    ORCD_KEY_SIZE,
    ORCD_KEY_BOOL,
    ORCD_KEY_STRING,
    ORCD_KEY_SECONDS,
    ORCD_KEY_LOG_LEVEL,
    ORCD_KEY_TOKENS,
    ORCD_KEY_BACKEND,
    ORCD_KEY_ETCD,
} orcd_key_type_t;

typedef struct orcd_key {
    const char *section;
    const char *name;
    orcd_key_type_t type;
    size_t offset;
    size_t size; /* of the field, for integers */
    double min;
    double max;
} orcd_key_t;

#define ORCD_KEY(_sec, _name, _type, _field, _min, _max)     \
    {                                                        \
        _sec, _name, _type, offsetof(orcd_config_t, _field), \
            sizeof(((orcd_config_t *)0)->_field), _min, _max \
    }

static const orcd_key_t orcd_keys[] = {
    ORCD_KEY("listen", "address", ORCD_KEY_STRING, address, 0, 0),
    ORCD_KEY("listen", "port", ORCD_KEY_UINT, port, 0, 65535),
    ORCD_KEY("listen", "allow_remote", ORCD_KEY_BOOL, allow_remote, 0, 0),
    ORCD_KEY("listen", "threads", ORCD_KEY_UINT, threads, 0, ORCD_THREADS_MAX),
    ORCD_KEY("limits", "max_connections", ORCD_KEY_UINT, max_connections, 1,
             1000000),
    ORCD_KEY("limits", "max_connections_per_ip", ORCD_KEY_UINT,
             max_connections_per_ip, 1, 1000000),
    ORCD_KEY("limits", "idle_timeout", ORCD_KEY_UINT, idle_timeout, 1, 86400),
    ORCD_KEY("limits", "request_timeout", ORCD_KEY_UINT, request_timeout, 1,
             3600),
    ORCD_KEY("limits", "max_long_polls", ORCD_KEY_UINT, max_long_polls, 0,
             1000000),
    ORCD_KEY("limits", "max_body", ORCD_KEY_SIZE, max_body, 1024,
             64 * 1024 * 1024),
    ORCD_KEY("limits", "endpoint_max", ORCD_KEY_SIZE, endpoint_max, 16,
             64 * 1024 * 1024),
    ORCD_KEY("limits", "mailbox_msg_max", ORCD_KEY_SIZE, mailbox_msg_max, 16,
             64 * 1024 * 1024),
    ORCD_KEY("limits", "mailbox_depth", ORCD_KEY_UINT, mailbox_depth, 1,
             1000000),
    ORCD_KEY("limits", "max_wait", ORCD_KEY_SECONDS, max_wait, 0.001, 3600),
    ORCD_KEY("limits", "max_keys", ORCD_KEY_UINT, max_keys, 16, 1e9),
    ORCD_KEY("limits", "max_bytes", ORCD_KEY_SIZE, max_bytes, 65536, 1e12),
    ORCD_KEY("limits", "max_keys_per_job", ORCD_KEY_UINT, max_keys_per_job, 16,
             1e9),
    ORCD_KEY("limits", "max_bytes_per_job", ORCD_KEY_SIZE, max_bytes_per_job,
             65536, 1e12),
    ORCD_KEY("ttl", "default", ORCD_KEY_UINT, ttl_default, 1, 86400),
    ORCD_KEY("ttl", "min", ORCD_KEY_UINT, ttl_min, 1, 86400),
    ORCD_KEY("ttl", "max", ORCD_KEY_UINT, ttl_max, 1, 86400),
    ORCD_KEY("auth", "enabled", ORCD_KEY_BOOL, auth_enabled, 0, 0),
    ORCD_KEY("auth", "metrics_auth", ORCD_KEY_BOOL, metrics_auth, 0, 0),
    ORCD_KEY("auth", "token_file", ORCD_KEY_STRING, token_file, 0, 0),
    ORCD_KEY("auth", "tokens", ORCD_KEY_TOKENS, tokens, 0, 0),
    ORCD_KEY("tls", "cert", ORCD_KEY_STRING, tls_cert, 0, 0),
    ORCD_KEY("tls", "key", ORCD_KEY_STRING, tls_key, 0, 0),
    ORCD_KEY("snapshot", "path", ORCD_KEY_STRING, snapshot_path, 0, 0),
    ORCD_KEY("snapshot", "interval", ORCD_KEY_UINT, snapshot_interval, 0,
             86400),
    ORCD_KEY("log", "level", ORCD_KEY_LOG_LEVEL, log_level, 0, 0),
    ORCD_KEY("store", "backend", ORCD_KEY_BACKEND, store_backend, 0, 0),
    ORCD_KEY("store", "etcd", ORCD_KEY_ETCD, etcd, 0, 0),
};

_Static_assert(sizeof(orcd_keys) / sizeof(orcd_keys[0]) <= ORCD_CONFIG_MAX_KEYS,
               "raise ORCD_CONFIG_MAX_KEYS");

static void orcd_cfg_set_uint(void *field, size_t size, uint64_t v)
{
    if (size == sizeof(uint64_t)) {
        memcpy(field, &v, sizeof(v)); /* size_t, int64_t (ranges fit) */
    } else {
        unsigned u = (unsigned)v;
        memcpy(field, &u, sizeof(u));
    }
}

static int orcd_cfg_tokens(orcd_cfg_ctx_t *ctx, orcd_config_t *cfg,
                           const orcd_ynode_t *v)
{
    const orcd_ynode_t *job, *tok;
    size_t i, j, count;

    if (orcd_ynode_is_null(v)) {
        return 0;
    }
    if (v->type != ORCD_YNODE_MAP) {
        orcd_cfg_error(ctx, v->line, v->column,
                       "auth.tokens: expected a mapping of job name to token "
                       "or list of tokens");
        return -1;
    }
    for (i = 0; i + 1 < v->nitems; i += 2) {
        job = v->items[i];
        tok = v->items[i + 1];
        if ((job->type != ORCD_YNODE_SCALAR) ||
            !orc_util_name_valid(job->value, strlen(job->value), 0)) {
            orcd_cfg_error(ctx, job->line, job->column,
                           "auth.tokens: invalid job name (1..%d characters of "
                           "A-Z a-z 0-9 . _ -)",
                           ORCD_NAME_MAX);
            return -1;
        }
        count = (tok->type == ORCD_YNODE_SEQ) ? tok->nitems : 1;
        for (j = 0; j < count; ++j) {
            const orcd_ynode_t *t =
                (tok->type == ORCD_YNODE_SEQ) ? tok->items[j] : tok;
            if ((t->type != ORCD_YNODE_SCALAR) || orcd_ynode_is_null(t) ||
                !orcd_token_valid(t->value)) {
                orcd_cfg_error(ctx, t->line, t->column,
                               "auth.tokens.%s: invalid token (expected a "
                               "string of %d..%d printable non-space ASCII "
                               "characters)",
                               job->value, ORCD_TOKEN_MIN, ORCD_TOKEN_MAX);
                return -1;
            }
            if (orcd_config_add_token(cfg, job->value, t->value)) {
                orcd_cfg_error(ctx, t->line, t->column,
                               "auth.tokens.%s: too many tokens or out of "
                               "memory",
                               job->value);
                return -1;
            }
        }
    }
    return 0;
}

static int orcd_cfg_check_dups(orcd_cfg_ctx_t *ctx, const orcd_ynode_t *map,
                               const char *where);

/* store.etcd.endpoints: a list of URLs, or one string of comma-separated
 * URLs */
static int orcd_cfg_endpoints(orcd_cfg_ctx_t *ctx, orcd_etcd_config_t *e,
                              const orcd_ynode_t *v)
{
    const orcd_ynode_t *item;
    const char *p, *comma;
    size_t i, n, len;
    char **eps;

    n = (v->type == ORCD_YNODE_SEQ) ? v->nitems : 1;
    for (i = 0; i < e->nendpoints; ++i) {
        free(e->endpoints[i]);
    }
    free(e->endpoints);
    e->nendpoints = 0;
    e->endpoints  = NULL;
    for (i = 0; i < n; ++i) {
        item = (v->type == ORCD_YNODE_SEQ) ? v->items[i] : v;
        if (orcd_cfg_expect_scalar(ctx, item, "store.etcd.endpoints",
                                   "URLs (http://host:port)")) {
            return -1;
        }
        /* every comma-separated part, empty ones too (an error) */
        for (p = item->value; p != NULL;
             p = (*comma != '\0') ? comma + 1 : NULL) {
            comma = strchrnul(p, ',');
            len   = (size_t)(comma - p);
            if ((len < 8) || (len > 512) ||
                (strncmp(p, "http://", 7) && strncmp(p, "https://", 8)) ||
                (memchr(p, ' ', len) != NULL) || (p[len - 1] == '/')) {
                orcd_cfg_error(ctx, item->line, item->column,
                               "store.etcd.endpoints: '%.*s' is not "
                               "http://host:port or https://host:port",
                               (int)((len > 64) ? 64 : len), p);
                return -1;
            }
            eps = realloc(e->endpoints, (e->nendpoints + 1) * sizeof(*eps));
            if ((eps == NULL) ||
                ((eps[e->nendpoints] = strndup(p, len)) == NULL)) {
                e->endpoints = (eps != NULL) ? eps : e->endpoints;
                orcd_cfg_error(ctx, item->line, item->column, "out of memory");
                return -1;
            }
            e->endpoints = eps;
            ++e->nendpoints;
        }
    }
    return 0;
}

/* store.etcd: a mapping of its own keys */
static int orcd_cfg_etcd(orcd_cfg_ctx_t *ctx, orcd_etcd_config_t *e,
                         const orcd_ynode_t *v)
{
    static const char *const strings[] = {"prefix", "username", "password",
                                          "password_file"};
    static const char *const tls[]     = {"ca", "cert", "key"};
    char **string_fields[] = {&e->prefix, &e->username, &e->password,
                              &e->password_file};
    char **tls_fields[]    = {&e->ca, &e->cert, &e->key};
    const orcd_ynode_t *k, *val;
    char path[64];
    size_t i, j, n;

    if (orcd_ynode_is_null(v)) {
        return 0;
    }
    if ((v->type != ORCD_YNODE_MAP) ||
        orcd_cfg_check_dups(ctx, v, "store.etcd")) {
        if (v->type != ORCD_YNODE_MAP) {
            orcd_cfg_error(ctx, v->line, v->column,
                           "store.etcd: expected a mapping (endpoints, "
                           "prefix, timeout, pipeline, username, password, "
                           "password_file, tls)");
        }
        return -1;
    }
    for (i = 0; i + 1 < v->nitems; i += 2) {
        k   = v->items[i];
        val = v->items[i + 1];
        snprintf(path, sizeof(path), "store.etcd.%.32s", k->value);
        if (!strcmp(k->value, "endpoints")) {
            if (orcd_cfg_endpoints(ctx, e, val)) {
                return -1;
            }
            continue;
        }
        if (!strcmp(k->value, "timeout")) {
            if (orcd_cfg_seconds(ctx, val, path, 0.1, 3600, &e->timeout)) {
                return -1;
            }
            continue;
        }
        if (!strcmp(k->value, "pipeline")) {
            if (orcd_cfg_uint(ctx, val, path, 1, ORC_STORE_ETCD_PIPELINE_MAX, 0,
                              &e->pipeline)) {
                return -1;
            }
            continue;
        }
        for (n = 0; n < sizeof(strings) / sizeof(strings[0]); ++n) {
            if (!strcmp(k->value, strings[n])) {
                break;
            }
        }
        if (n < sizeof(strings) / sizeof(strings[0])) {
            if (orcd_cfg_string(ctx, val, path, string_fields[n])) {
                return -1;
            }
            continue;
        }
        if (strcmp(k->value, "tls")) {
            orcd_cfg_error(ctx, k->line, k->column,
                           "unknown key 'store.etcd.%.64s' (endpoints, "
                           "prefix, timeout, pipeline, username, password, "
                           "password_file, tls)",
                           k->value);
            return -1;
        }
        if (orcd_ynode_is_null(val)) {
            continue;
        }
        if ((val->type != ORCD_YNODE_MAP) ||
            orcd_cfg_check_dups(ctx, val, "store.etcd.tls")) {
            if (val->type != ORCD_YNODE_MAP) {
                orcd_cfg_error(ctx, val->line, val->column,
                               "store.etcd.tls: expected a mapping (ca, cert, "
                               "key)");
            }
            return -1;
        }
        for (j = 0; j + 1 < val->nitems; j += 2) {
            for (n = 0; n < 3; ++n) {
                if (!strcmp(val->items[j]->value, tls[n])) {
                    break;
                }
            }
            snprintf(path, sizeof(path), "store.etcd.tls.%.32s",
                     val->items[j]->value);
            if (n == 3) {
                orcd_cfg_error(ctx, val->items[j]->line, val->items[j]->column,
                               "unknown key '%s' (ca, cert, key)", path);
                return -1;
            }
            if (orcd_cfg_string(ctx, val->items[j + 1], path, tls_fields[n])) {
                return -1;
            }
        }
    }
    return 0;
}

static int orcd_cfg_apply_key(orcd_cfg_ctx_t *ctx, orcd_config_t *cfg,
                              const orcd_key_t *k, const orcd_ynode_t *v)
{
    size_t index = (size_t)(k - orcd_keys);
    char path[64];

    cfg->marks[index].line   = (unsigned)v->line;
    cfg->marks[index].column = (unsigned)v->column;
    void *field              = (char *)cfg + k->offset;
    uint64_t u;
    double d;
    int b;

    snprintf(path, sizeof(path), "%s.%s", k->section, k->name);
    switch (k->type) {
    case ORCD_KEY_UINT:
    case ORCD_KEY_SIZE:
        if (orcd_cfg_uint(ctx, v, path, (uint64_t)k->min, (uint64_t)k->max,
                          k->type == ORCD_KEY_SIZE, &u)) {
            return -1;
        }
        orcd_cfg_set_uint(field, k->size, u);
        return 0;
    case ORCD_KEY_BOOL:
        if (orcd_cfg_bool(ctx, v, path, &b)) {
            return -1;
        }
        *(int *)field = b;
        return 0;
    case ORCD_KEY_STRING:
        return orcd_cfg_string(ctx, v, path, (char **)field);
    case ORCD_KEY_SECONDS:
        if (orcd_cfg_seconds(ctx, v, path, k->min, k->max, &d)) {
            return -1;
        }
        *(double *)field = d;
        return 0;
    case ORCD_KEY_LOG_LEVEL:
        if (orcd_cfg_expect_scalar(ctx, v, path, "a log level") ||
            orcd_config_parse_log_level(v->value, &cfg->log_level)) {
            if (v->type == ORCD_YNODE_SCALAR && !orcd_ynode_is_null(v)) {
                orcd_cfg_error(ctx, v->line, v->column,
                               "%s: expected one of error, warn, info, debug, "
                               "got '%.64s'",
                               path, v->value);
            }
            return -1;
        }
        return 0;
    case ORCD_KEY_TOKENS:
        return orcd_cfg_tokens(ctx, cfg, v);
    case ORCD_KEY_BACKEND:
        if (orcd_cfg_expect_scalar(ctx, v, path, "memory or etcd")) {
            return -1;
        }
        if (!strcmp(v->value, "memory") || !strcmp(v->value, "etcd")) {
            cfg->store_backend =
                !strcmp(v->value, "etcd") ? ORCD_STORE_ETCD : ORCD_STORE_MEMORY;
            return 0;
        }
        orcd_cfg_error(ctx, v->line, v->column,
                       "%s: expected memory or etcd, got '%.64s'", path,
                       v->value);
        return -1;
    case ORCD_KEY_ETCD:
        return orcd_cfg_etcd(ctx, &cfg->etcd, v);
    }
    return -1;
}

static int orcd_cfg_check_dups(orcd_cfg_ctx_t *ctx, const orcd_ynode_t *map,
                               const char *where)
{
    size_t i, j;

    for (i = 0; i + 1 < map->nitems; i += 2) {
        if (map->items[i]->type != ORCD_YNODE_SCALAR) {
            orcd_cfg_error(ctx, map->items[i]->line, map->items[i]->column,
                           "%s: keys must be plain strings", where);
            return -1;
        }
        for (j = 0; j < i; j += 2) {
            if (!strcmp(map->items[i]->value, map->items[j]->value)) {
                orcd_cfg_error(ctx, map->items[i]->line, map->items[i]->column,
                               "%s%s%.64s: duplicate key", where,
                               where[0] ? "." : "", map->items[i]->value);
                return -1;
            }
        }
    }
    return 0;
}

static int orcd_cfg_apply(orcd_cfg_ctx_t *ctx, orcd_config_t *cfg,
                          const orcd_ynode_t *root)
{
    const orcd_ynode_t *sk, *sv, *kk, *kv;
    size_t i, j, n;
    int known_section;

    if ((root == NULL) || orcd_ynode_is_null(root)) {
        return 0;
    }
    if (root->type != ORCD_YNODE_MAP) {
        orcd_cfg_error(ctx, root->line, root->column,
                       "expected a mapping of sections (listen, limits, ttl, "
                       "auth, tls, store, snapshot, log)");
        return -1;
    }
    if (orcd_cfg_check_dups(ctx, root, "")) {
        return -1;
    }
    for (i = 0; i + 1 < root->nitems; i += 2) {
        sk            = root->items[i];
        sv            = root->items[i + 1];
        known_section = 0;
        for (n = 0; n < sizeof(orcd_keys) / sizeof(orcd_keys[0]); ++n) {
            if (!strcmp(orcd_keys[n].section, sk->value)) {
                known_section = 1;
                break;
            }
        }
        if (!known_section) {
            orcd_cfg_error(ctx, sk->line, sk->column,
                           "unknown key '%.64s' (sections: listen, limits, "
                           "ttl, auth, tls, store, snapshot, log)",
                           sk->value);
            return -1;
        }
        if (orcd_ynode_is_null(sv)) {
            continue;
        }
        if (sv->type != ORCD_YNODE_MAP) {
            orcd_cfg_error(ctx, sv->line, sv->column, "%s: expected a mapping",
                           sk->value);
            return -1;
        }
        if (orcd_cfg_check_dups(ctx, sv, sk->value)) {
            return -1;
        }
        for (j = 0; j + 1 < sv->nitems; j += 2) {
            kk = sv->items[j];
            kv = sv->items[j + 1];
            for (n = 0; n < sizeof(orcd_keys) / sizeof(orcd_keys[0]); ++n) {
                if (!strcmp(orcd_keys[n].section, sk->value) &&
                    !strcmp(orcd_keys[n].name, kk->value)) {
                    break;
                }
            }
            if (n == sizeof(orcd_keys) / sizeof(orcd_keys[0])) {
                orcd_cfg_error(ctx, kk->line, kk->column,
                               "unknown key '%s.%.64s'", sk->value, kk->value);
                return -1;
            }
            if (orcd_cfg_apply_key(ctx, cfg, &orcd_keys[n], kv)) {
                return -1;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------- public API */

int orcd_config_parse_log_level(const char *s, orcd_log_level_t *level_p)
{
    if (!strcmp(s, "error")) {
        *level_p = ORCD_LOG_ERROR;
    } else if (!strcmp(s, "warn") || !strcmp(s, "warning")) {
        *level_p = ORCD_LOG_WARN;
    } else if (!strcmp(s, "info")) {
        *level_p = ORCD_LOG_INFO;
    } else if (!strcmp(s, "debug")) {
        *level_p = ORCD_LOG_DEBUG;
    } else {
        return -1;
    }
    return 0;
}

int orcd_config_parse_listen(const char *spec, char **address_p,
                             unsigned *port_p)
{
    const char *colon, *host, *port;
    char buf[INET6_ADDRSTRLEN + 8];
    unsigned char addr[sizeof(struct in6_addr)];
    size_t hlen;
    char *end;
    unsigned long p;

    if (spec[0] == '[') {
        colon = strstr(spec, "]:");
        if (colon == NULL) {
            return -1;
        }
        host = spec + 1;
        hlen = (size_t)(colon - host);
        port = colon + 2;
    } else {
        colon = strrchr(spec, ':');
        if ((colon == NULL) || (strchr(spec, ':') != colon)) {
            return -1;
        }
        host = spec;
        hlen = (size_t)(colon - spec);
        port = colon + 1;
    }
    if ((hlen == 0) || (hlen >= sizeof(buf)) ||
        !isdigit((unsigned char)*port)) {
        return -1;
    }
    memcpy(buf, host, hlen);
    buf[hlen] = '\0';
    if ((inet_pton(AF_INET, buf, addr) != 1) &&
        (inet_pton(AF_INET6, buf, addr) != 1)) {
        return -1;
    }
    errno = 0;
    p     = strtoul(port, &end, 10);
    if ((errno != 0) || (*end != '\0') || (p > 65535)) {
        return -1;
    }
    end = strdup(buf);
    if (end == NULL) {
        return -1;
    }
    free(*address_p);
    *address_p = end;
    *port_p    = (unsigned)p;
    return 0;
}

unsigned orcd_config_threads(const orcd_config_t *cfg)
{
    long cpus;

    if (cfg->threads > 0) {
        return cfg->threads;
    }
    /* a request on etcd holds its thread for round trips to etcd, and so
     * does every other connection libmicrohttpd gave that thread: with 16
     * threads at 64 pairing clients (128 connections) a woken long poll
     * waited 15-25 ms for its thread (orcd-bench.sh, issue 9 sec. 5) */
    if (cfg->store_backend == ORCD_STORE_ETCD) {
        return ORCD_THREADS_ETCD;
    }
    /* half the CPUs: orcd shares its machine with the processes it pairs.
     * On 2 cores one thread gave a 64-client pairing p99 of 7.5 ms against
     * 10.7-13.4 ms with two, at 6 % less throughput (orcd-bench.sh). */
    cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 2) {
        return 1;
    }
    return (cpus / 2 > 64) ? 64 : (unsigned)(cpus / 2);
}

int orcd_config_init_defaults(orcd_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->address                = strdup(ORCD_DEFAULT_ADDRESS);
    cfg->port                   = ORCD_DEFAULT_PORT;
    cfg->allow_remote           = 0;
    cfg->threads                = 0; /* auto: orcd_config_threads() */
    cfg->max_connections        = 1024;
    cfg->max_connections_per_ip = 512;
    cfg->idle_timeout           = 60;
    cfg->request_timeout        = 10;
    cfg->max_long_polls         = 512;
    cfg->max_body               = 64 * 1024;
    cfg->endpoint_max           = 4096;
    cfg->mailbox_msg_max        = 4096;
    cfg->mailbox_depth          = 1024;
    cfg->max_wait               = 60;
    cfg->max_keys               = 1000000;
    cfg->max_bytes              = 512ull * 1024 * 1024;
    cfg->max_keys_per_job       = 100000;
    cfg->max_bytes_per_job      = 64ull * 1024 * 1024;
    cfg->ttl_default            = 10;
    cfg->ttl_min                = 5;
    cfg->ttl_max                = 300;
    cfg->snapshot_interval      = 30;
    cfg->store_backend          = ORCD_STORE_MEMORY;
    cfg->etcd.prefix            = strdup("/orc");
    cfg->etcd.timeout           = 2;
    cfg->log_level              = ORCD_LOG_INFO;
    return ((cfg->address == NULL) || (cfg->etcd.prefix == NULL)) ? -1 : 0;
}

void orcd_config_cleanup(orcd_config_t *cfg)
{
    size_t i;

    for (i = 0; i < cfg->ntokens; ++i) {
        /* wipe secrets before freeing */
        memset(cfg->tokens[i].token, 0, strlen(cfg->tokens[i].token));
        free(cfg->tokens[i].token);
        free(cfg->tokens[i].job);
    }
    free(cfg->tokens);
    free(cfg->address);
    free(cfg->token_file);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->snapshot_path);
    for (i = 0; i < cfg->etcd.nendpoints; ++i) {
        free(cfg->etcd.endpoints[i]);
    }
    free(cfg->etcd.endpoints);
    free(cfg->etcd.prefix);
    free(cfg->etcd.username);
    if (cfg->etcd.password != NULL) {
        memset(cfg->etcd.password, 0, strlen(cfg->etcd.password));
    }
    free(cfg->etcd.password);
    free(cfg->etcd.password_file);
    free(cfg->etcd.ca);
    free(cfg->etcd.cert);
    free(cfg->etcd.key);
    free(cfg->config_path);
    free(cfg->source);
    memset(cfg, 0, sizeof(*cfg));
}

int orcd_config_load_buffer(orcd_config_t *cfg, const char *name,
                            const unsigned char *data, size_t len, char *err,
                            size_t errlen)
{
    orcd_cfg_ctx_t ctx = {.name = name, .err = err, .errlen = errlen};
    orcd_ynode_t *root = NULL;
    int ret;

    err[0] = '\0';
    if (orcd_yaml_parse(&ctx, data, len, &root)) {
        return -1;
    }
    free(cfg->source);
    cfg->source = strdup(name);
    ret         = orcd_cfg_apply(&ctx, cfg, root);
    orcd_ynode_free(root);
    return ret;
}

int orcd_config_load_file(orcd_config_t *cfg, const char *path, char *err,
                          size_t errlen)
{
    size_t len;
    char *data;
    int ret;

    data = orc_util_read_file(path, ORCD_YAML_MAX_SIZE, &len, err, errlen);
    if (data == NULL) {
        return -1;
    }
    ret = orcd_config_load_buffer(cfg, path, (unsigned char *)data, len, err,
                                  errlen);
    free(data);
    if (ret == 0) {
        char *copy = strdup(path);
        if (copy == NULL) {
            snprintf(err, errlen, "%s: out of memory", path);
            return -1;
        }
        free(cfg->config_path);
        cfg->config_path = copy;
    }
    return ret;
}

static void orcd_cfg_fail(const orcd_config_t *cfg, char *err, size_t errlen,
                          const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Token file: one "job token" pair per line; '#' starts a comment. */
static int orcd_config_load_token_file(orcd_config_t *cfg, char *err,
                                       size_t errlen)
{
    const char *path = cfg->token_file;
    char line[1024], job[ORCD_NAME_MAX + 2], token[ORCD_TOKEN_MAX + 2];
    char extra[2];
    size_t lineno = 0;
    char *hash;
    FILE *f;
    int n;

    f = fopen(path, "r");
    if (f == NULL) {
        orcd_cfg_fail(cfg, err, errlen, "auth.token_file",
                      "auth.token_file: %s: cannot open: %s", path,
                      strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        ++lineno;
        if ((strchr(line, '\n') == NULL) && !feof(f)) {
            snprintf(err, errlen, "%s:%zu: line too long", path, lineno);
            goto err_close;
        }
        hash = strchr(line, '#');
        if (hash != NULL) {
            *hash = '\0';
        }
        n = sscanf(line, "%129s %257s %1s", job, token, extra);
        if (n <= 0) {
            continue;
        }
        if (n != 2) {
            snprintf(err, errlen, "%s:%zu: expected 'JOB TOKEN'", path, lineno);
            goto err_close;
        }
        if (!orc_util_name_valid(job, strlen(job), 0)) {
            snprintf(err, errlen, "%s:%zu: invalid job name", path, lineno);
            goto err_close;
        }
        if (!orcd_token_valid(token)) {
            snprintf(err, errlen,
                     "%s:%zu: invalid token (%d..%d printable "
                     "non-space ASCII characters)",
                     path, lineno, ORCD_TOKEN_MIN, ORCD_TOKEN_MAX);
            goto err_close;
        }
        if (orcd_config_add_token(cfg, job, token)) {
            snprintf(err, errlen, "%s:%zu: too many tokens or out of memory",
                     path, lineno);
            goto err_close;
        }
    }
    memset(token, 0, sizeof(token));
    memset(line, 0, sizeof(line));
    fclose(f);
    return 0;

err_close:
    memset(token, 0, sizeof(token));
    memset(line, 0, sizeof(line));
    fclose(f);
    return -1;
}

static int orcd_address_is_loopback(const char *address)
{
    struct in6_addr a6;
    struct in_addr a4;

    if (inet_pton(AF_INET, address, &a4) == 1) {
        return (ntohl(a4.s_addr) >> 24) == 127;
    }
    if (inet_pton(AF_INET6, address, &a6) == 1) {
        return IN6_IS_ADDR_LOOPBACK(&a6);
    }
    return 0;
}

void orcd_config_forget_mark(orcd_config_t *cfg, const char *key)
{
    size_t n, sl;

    for (n = 0; n < sizeof(orcd_keys) / sizeof(orcd_keys[0]); ++n) {
        sl = strlen(orcd_keys[n].section);
        if (!strncmp(key, orcd_keys[n].section, sl) && (key[sl] == '.') &&
            !strcmp(key + sl + 1, orcd_keys[n].name)) {
            cfg->marks[n].line = 0;
        }
    }
}

/* Error about key: prefixed with file:line:column where it was set. */
static void orcd_cfg_fail(const orcd_config_t *cfg, char *err, size_t errlen,
                          const char *key, const char *fmt, ...)
{
    size_t n, sl, off = 0;
    va_list ap;
    int ret;

    for (n = 0; n < sizeof(orcd_keys) / sizeof(orcd_keys[0]); ++n) {
        sl = strlen(orcd_keys[n].section);
        if (!strncmp(key, orcd_keys[n].section, sl) && (key[sl] == '.') &&
            !strcmp(key + sl + 1, orcd_keys[n].name) &&
            (cfg->marks[n].line > 0) && (cfg->source != NULL)) {
            ret = snprintf(err, errlen, "%s:%u:%u: ", cfg->source,
                           cfg->marks[n].line, cfg->marks[n].column);
            off = ((ret > 0) && ((size_t)ret < errlen)) ? (size_t)ret : 0;
            break;
        }
    }
    va_start(ap, fmt);
    vsnprintf(err + off, errlen - off, fmt, ap);
    va_end(ap);
}

/* store.*: cross-key checks, the etcd password file */
static int orcd_config_check_store(orcd_config_t *cfg, char *err, size_t errlen)
{
    orcd_etcd_config_t *e = &cfg->etcd;
    const char *p;

    if (cfg->store_backend == ORCD_STORE_MEMORY) {
        return 0;
    }
    if (e->nendpoints == 0) {
        orcd_cfg_fail(cfg, err, errlen, "store.backend",
                      "store.backend is etcd but store.etcd.endpoints is "
                      "empty");
        return -1;
    }
    if (cfg->snapshot_path != NULL) {
        orcd_cfg_fail(cfg, err, errlen, "snapshot.path",
                      "snapshot.path is for the memory store (etcd keeps its "
                      "own data): drop it, or store.backend: memory");
        return -1;
    }
    p = e->prefix;
    if ((p[0] != '/') || (p[strlen(p) - 1] == '/') || (strlen(p) > 128) ||
        (strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789._-/") != strlen(p))) {
        orcd_cfg_fail(cfg, err, errlen, "store.etcd",
                      "store.etcd.prefix '%.64s': 1..128 characters of "
                      "A-Z a-z 0-9 . _ - /, starting with '/' and not ending "
                      "with it",
                      p);
        return -1;
    }
    if ((e->cert == NULL) != (e->key == NULL)) {
        orcd_cfg_fail(cfg, err, errlen, "store.etcd",
                      "store.etcd.tls: cert and key must be given together");
        return -1;
    }
    if ((e->password != NULL) && (e->password_file != NULL)) {
        orcd_cfg_fail(cfg, err, errlen, "store.etcd",
                      "store.etcd: password and password_file are "
                      "exclusive");
        return -1;
    }
    if ((e->password_file != NULL) &&
        orc_util_read_token_file(e->password_file, &e->password, err, errlen)) {
        return -1;
    }
    if ((e->username == NULL) != (e->password == NULL)) {
        orcd_cfg_fail(cfg, err, errlen, "store.etcd",
                      "store.etcd: username and password (or password_file) "
                      "must be given together");
        return -1;
    }
    return 0;
}

int orcd_config_finalize(orcd_config_t *cfg, char *err, size_t errlen)
{
    unsigned char addr[sizeof(struct in6_addr)];
    size_t i, j;

    err[0] = '\0';
    if ((inet_pton(AF_INET, cfg->address, addr) != 1) &&
        (inet_pton(AF_INET6, cfg->address, addr) != 1)) {
        orcd_cfg_fail(cfg, err, errlen, "listen.address",
                      "listen.address: '%.64s' is not an IPv4 or "
                      "IPv6 address",
                      cfg->address);
        return -1;
    }
    if (!orcd_address_is_loopback(cfg->address) && !cfg->allow_remote) {
        orcd_cfg_fail(cfg, err, errlen, "listen.address",
                      "listen.address: %.64s is not a loopback "
                      "address; set listen.allow_remote: true to accept remote "
                      "clients",
                      cfg->address);
        return -1;
    }
    if ((cfg->ttl_min > cfg->ttl_default) ||
        (cfg->ttl_default > cfg->ttl_max)) {
        orcd_cfg_fail(cfg, err, errlen,
                      (cfg->ttl_min > cfg->ttl_default) ? "ttl.min" : "ttl.max",
                      "ttl: need min <= default <= max (got %lld, "
                      "%lld, %lld)",
                      (long long)cfg->ttl_min, (long long)cfg->ttl_default,
                      (long long)cfg->ttl_max);
        return -1;
    }
    if (cfg->max_long_polls >= cfg->max_connections) {
        orcd_cfg_fail(cfg, err, errlen, "limits.max_long_polls",
                      "limits.max_long_polls (%u) must be below "
                      "limits.max_connections (%u)",
                      cfg->max_long_polls, cfg->max_connections);
        return -1;
    }
    if (cfg->max_connections_per_ip > cfg->max_connections) {
        orcd_cfg_fail(cfg, err, errlen, "limits.max_connections_per_ip",
                      "limits.max_connections_per_ip (%u) must not "
                      "exceed limits.max_connections (%u)",
                      cfg->max_connections_per_ip, cfg->max_connections);
        return -1;
    }
    if (cfg->endpoint_max > cfg->max_body) {
        orcd_cfg_fail(cfg, err, errlen, "limits.endpoint_max",
                      "limits.endpoint_max (%zu) must not exceed "
                      "limits.max_body (%zu)",
                      cfg->endpoint_max, cfg->max_body);
        return -1;
    }
    if (cfg->mailbox_msg_max > cfg->max_body) {
        orcd_cfg_fail(cfg, err, errlen, "limits.mailbox_msg_max",
                      "limits.mailbox_msg_max (%zu) must not exceed "
                      "limits.max_body (%zu)",
                      cfg->mailbox_msg_max, cfg->max_body);
        return -1;
    }
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
        orcd_cfg_fail(cfg, err, errlen,
                      (cfg->tls_cert != NULL) ? "tls.cert" : "tls.key",
                      "tls: cert and key must be given together");
        return -1;
    }
    if ((cfg->tls_cert != NULL) && (cfg->tls_key != NULL) &&
        orcd_tls_check_pair(cfg->tls_cert, cfg->tls_key, err, errlen)) {
        return -1;
    }
    if ((cfg->max_keys_per_job > cfg->max_keys) ||
        (cfg->max_bytes_per_job > cfg->max_bytes)) {
        orcd_cfg_fail(cfg, err, errlen,
                      (cfg->max_keys_per_job > cfg->max_keys)
                          ? "limits.max_keys_per_job"
                          : "limits.max_bytes_per_job",
                      "limits: max_keys_per_job (%llu) and max_bytes_per_job "
                      "(%llu) must not exceed max_keys (%llu) and max_bytes "
                      "(%llu)",
                      (unsigned long long)cfg->max_keys_per_job,
                      (unsigned long long)cfg->max_bytes_per_job,
                      (unsigned long long)cfg->max_keys,
                      (unsigned long long)cfg->max_bytes);
        return -1;
    }
    if (orcd_config_check_store(cfg, err, errlen)) {
        return -1;
    }
    if ((cfg->token_file != NULL) &&
        orcd_config_load_token_file(cfg, err, errlen)) {
        return -1;
    }
    for (i = 0; i < cfg->ntokens; ++i) {
        for (j = 0; j < i; ++j) {
            if (!strcmp(cfg->tokens[i].token, cfg->tokens[j].token) &&
                strcmp(cfg->tokens[i].job, cfg->tokens[j].job)) {
                snprintf(err, errlen,
                         "auth: the same token is configured "
                         "for jobs '%s' and '%s'",
                         cfg->tokens[j].job, cfg->tokens[i].job);
                return -1;
            }
        }
    }
    if (cfg->auth_enabled && (cfg->ntokens == 0)) {
        orcd_cfg_fail(cfg, err, errlen, "auth.enabled",
                      "auth.enabled is true but no tokens are "
                      "configured (auth.tokens or auth.token_file)");
        return -1;
    }
    return 0;
}
