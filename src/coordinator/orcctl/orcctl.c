/*
 * orcctl: command-line client of orcd, over liborcclient.
 * Run `orcctl --help` for the commands and the exit codes.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_client.h"
#include "coordinator/common/orc_util.h"

#include <jansson.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Exit codes (documented in the usage text) */
enum {
    ORCCTL_EXIT_OK          = 0,
    ORCCTL_EXIT_USAGE       = 1,
    ORCCTL_EXIT_NOT_FOUND   = 2,
    ORCCTL_EXIT_TIMEOUT     = 3,
    ORCCTL_EXIT_UNREACHABLE = 4,
    ORCCTL_EXIT_AUTH        = 5,
    ORCCTL_EXIT_REFUSED     = 6,
    ORCCTL_EXIT_PROTOCOL    = 7,
    ORCCTL_EXIT_LOST        = 8
};

#define ORCCTL_DEFAULT_POLL_WAIT_MS 30000

typedef struct orcctl_opts {
    const char *url;
    const char *token;
    const char *token_file;
    const char *job;
    int json;
    int timeout_ms;
    int wait_ms;        /* --wait, -1 if not given */
    uint64_t index;     /* nodes --index */
    int index_set;      /* --index given */
    uint64_t after;     /* mailbox-watch --after */
    long count;         /* mailbox-watch --count, 0 = forever */
    unsigned ttl;       /* register --ttl */
    int64_t pid;        /* register --pid */
    const char *labels; /* register --labels */
    uint64_t from;      /* mailbox-send --from */
    uint64_t node;      /* kv-put --node */
} orcctl_opts_t;

static void orcctl_usage(FILE *out)
{
    fprintf(
        out,
        "usage: orcctl [OPTIONS] COMMAND [ARGS]\n"
        "\n"
        "Client of the orc coordinator orcd.\n"
        "\n"
        "Options (also accepted after the command):\n"
        "  --url URL[,URL..]  orcd base URL, or several replicas (env " ORC_CLIENT_ENV_URL
        ", default " ORC_CLIENT_DEFAULT_URL ")\n"
        "  --token T          bearer token (env " ORC_CLIENT_ENV_TOKEN ")\n"
        "  --token-file F     read the token from the first line of F "
        "(env " ORC_CLIENT_ENV_TOKEN_FILE ")\n"
        "  --job J            job name (env " ORC_CLIENT_ENV_JOB
        ", default " ORC_CLIENT_DEFAULT_JOB ")\n"
        "  --json             machine-readable JSON output (one document per "
        "line)\n"
        "  --timeout S        per-request timeout in seconds, fractional "
        "(default 5)\n"
        "  -h, --help         this text\n"
        "\n"
        "Commands:\n"
        "  health                        check that orcd answers\n"
        "  nodes [--wait S [--index I]]  list the job's nodes; with --wait, "
        "block up to\n"
        "                                S seconds until the membership "
        "changes (after\n"
        "                                index I, default: the current one)\n"
        "  node-get ID                   one node\n"
        "  endpoint-get ID               a node's endpoint record\n"
        "  endpoint-put ID JSON          publish/replace a node's endpoint "
        "record\n"
        "  mailbox-send ID JSON [--from N]\n"
        "                                queue a message (a JSON object) for "
        "node ID\n"
        "  mailbox-watch ID [--after SEQ] [--count N] [--wait S]\n"
        "                                print messages for node ID as they "
        "arrive\n"
        "                                (acknowledging them); stop after N "
        "messages\n"
        "                                (default: run until interrupted)\n"
        "  kv-put KEY VALUE [--node ID]  store VALUE (bytes) under KEY; with "
        "--node,\n"
        "                                the key is deleted with that node\n"
        "  kv-get KEY [--wait S]         print the value of KEY; with --wait, "
        "block up\n"
        "                                to S seconds until it exists\n"
        "  kv-wait KEY S                 same as kv-get KEY --wait S\n"
        "  kv-delete KEY                 delete KEY\n"
        "  register HOST [--ttl S] [--pid P] [--labels JSON]\n"
        "                                register a node, print its id, keep "
        "it alive\n"
        "                                in the foreground until "
        "SIGINT/SIGTERM, then\n"
        "                                deregister it\n"
        "\n"
        "Exit codes:\n"
        "  0 success          1 usage error            2 not found (404)\n"
        "  3 timed out        4 orcd unreachable       5 "
        "unauthorized/forbidden\n"
        "  6 refused by orcd (400, 409, 410, 413, 429)\n"
        "  7 protocol or internal error                8 registered node's "
        "lease lost\n");
}

static int orcctl_exit_code(orc_cl_status_t status)
{
    switch (status) {
    case ORC_CL_OK:
        return ORCCTL_EXIT_OK;
    case ORC_CL_ERR_NOT_FOUND:
        return ORCCTL_EXIT_NOT_FOUND;
    case ORC_CL_ERR_TIMEOUT:
        return ORCCTL_EXIT_TIMEOUT;
    case ORC_CL_ERR_UNREACHABLE:
        return ORCCTL_EXIT_UNREACHABLE;
    case ORC_CL_ERR_UNAUTHORIZED:
    case ORC_CL_ERR_FORBIDDEN:
        return ORCCTL_EXIT_AUTH;
    case ORC_CL_ERR_INVALID:
    case ORC_CL_ERR_CONFLICT:
    case ORC_CL_ERR_GONE:
    case ORC_CL_ERR_TOO_LARGE:
    case ORC_CL_ERR_BUSY:
        return ORCCTL_EXIT_REFUSED;
    default:
        return ORCCTL_EXIT_PROTOCOL;
    }
}

static int orcctl_fail(const char *what, orc_cl_status_t status)
{
    const char *detail = orc_client_last_error();

    if (detail[0] != '\0') {
        fprintf(stderr, "orcctl: %s: %s (%s)\n", what,
                orc_cl_status_str(status), detail);
    } else {
        fprintf(stderr, "orcctl: %s: %s\n", what, orc_cl_status_str(status));
    }
    return orcctl_exit_code(status);
}

static int orcctl_usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "orcctl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(run 'orcctl --help' for usage)\n");
    return ORCCTL_EXIT_USAGE;
}

static int orcctl_parse_u64(const char *text, uint64_t min, uint64_t *value_p)
{
    uint64_t value;

    if ((orc_util_parse_u64(text, &value) != 0) || (value < min)) {
        return -1;
    }
    *value_p = value;
    return 0;
}

/* Seconds, fractional, [0, 86400] -> milliseconds */
static int orcctl_parse_seconds(const char *text, int *ms_p)
{
    double value;

    if (orc_util_parse_seconds(text, 86400, &value) != 0) {
        return -1;
    }
    *ms_p = (int)(value * 1000 + 0.5);
    return 0;
}

static void orcctl_print_json(json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);

    if (text != NULL) {
        printf("%s\n", text);
        free(text);
    }
}

/* Parse JSON text that orcd or the library produced (so it is valid) */
static json_t *orcctl_load(const char *text)
{
    return (text != NULL) ? json_loads(text, 0, NULL) : json_null();
}

static json_t *orcctl_node_json(const orc_node_info_t *node)
{
    return json_pack("{s:I, s:s, s:I, s:o, s:o}", "id", (json_int_t)node->id,
                     "host", node->host, "pid", (json_int_t)node->pid, "labels",
                     orcctl_load(node->labels_json), "endpoint",
                     orcctl_load(node->endpoint_json));
}

/*
 * Split a node's labels for humans: the "topology" label (the transport's
 * summary, "; "-separated parts) comes out as *topology_p (malloc'ed, NULL if
 * none), the other labels as compact JSON in *rest_p (malloc'ed, NULL if
 * the labels are not a JSON object: print them as they are).
 */
static void orcctl_labels_split(const char *labels_json, char **rest_p,
                                char **topology_p)
{
    json_t *labels = orcctl_load(labels_json);
    const char *topology;

    *rest_p     = NULL;
    *topology_p = NULL;
    if (!json_is_object(labels)) {
        json_decref(labels);
        return;
    }
    topology = json_string_value(json_object_get(labels, "topology"));
    if (topology != NULL) {
        *topology_p = strdup(topology);
        json_object_del(labels, "topology");
    }
    *rest_p = json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(labels);
}

/* The topology summary, one part per line, under `label` */
static void orcctl_topology_print(const char *label, const char *topology)
{
    const char *part = topology, *end;
    int width        = (int)strlen(label);

    printf("%s", label);
    for (;;) {
        end = strstr(part, "; ");
        if (end == NULL) {
            printf("%s\n", part);
            return;
        }
        printf("%.*s\n", (int)(end - part), part);
        part = end + 2;
        printf("%*s", width, "");
    }
}

static void orcctl_node_print(const orc_node_info_t *node)
{
    char *rest, *topology;

    orcctl_labels_split(node->labels_json, &rest, &topology);
    printf("%-8" PRIu64 " %-24s %-8" PRId64 " %-8s %s\n", node->id, node->host,
           node->pid, (node->endpoint_json != NULL) ? "yes" : "no",
           (rest != NULL) ? rest : node->labels_json);
    if (topology != NULL) {
        orcctl_topology_print("         topology: ", topology);
    }
    free(rest);
    free(topology);
}

static int orcctl_cmd_health(orc_client_t *client, const orcctl_opts_t *opts)
{
    orc_cl_status_t status = orc_client_health(client);

    if (status != ORC_CL_OK) {
        return orcctl_fail("health", status);
    }

    printf(opts->json ? "{\"status\":\"ok\"}\n" : "ok\n");
    return ORCCTL_EXIT_OK;
}

static int orcctl_cmd_nodes(orc_client_t *client, const orcctl_opts_t *opts)
{
    orc_node_info_t *nodes;
    orc_cl_status_t status;
    size_t i, count;
    uint64_t index;
    json_t *doc, *array;

    index = opts->index;
    if ((opts->wait_ms > 0) && !opts->index_set) {
        /* --wait alone: wait for a change from now on */
        status = orc_client_nodes_list(client, 0, 0, &nodes, &count, &index);
        if (status != ORC_CL_OK) {
            return orcctl_fail("nodes", status);
        }
        orc_client_nodes_free(nodes, count);
    }

    status = orc_client_nodes_list(client, index,
                                   (opts->wait_ms > 0) ? opts->wait_ms : 0,
                                   &nodes, &count, &index);
    if (status != ORC_CL_OK) {
        return orcctl_fail("nodes", status);
    }

    if (opts->json) {
        array = json_array();
        for (i = 0; i < count; ++i) {
            json_array_append_new(array, orcctl_node_json(&nodes[i]));
        }
        doc =
            json_pack("{s:I, s:o}", "index", (json_int_t)index, "nodes", array);
        orcctl_print_json(doc);
        json_decref(doc);
    } else {
        printf("%-8s %-24s %-8s %-8s %s\n", "ID", "HOST", "PID", "ENDPOINT",
               "LABELS");
        for (i = 0; i < count; ++i) {
            orcctl_node_print(&nodes[i]);
        }
        printf("(%zu node%s, index %" PRIu64 ")\n", count,
               (count == 1) ? "" : "s", index);
    }

    orc_client_nodes_free(nodes, count);
    return ORCCTL_EXIT_OK;
}

static int orcctl_cmd_node_get(orc_client_t *client, const orcctl_opts_t *opts,
                               uint64_t id)
{
    orc_node_info_t *node;
    orc_cl_status_t status;
    json_t *doc;
    char *rest, *topology;

    status = orc_client_node_get(client, id, &node);
    if (status != ORC_CL_OK) {
        return orcctl_fail("node-get", status);
    }

    if (opts->json) {
        doc = orcctl_node_json(node);
        orcctl_print_json(doc);
        json_decref(doc);
    } else {
        printf("id:       %" PRIu64 "\n", node->id);
        printf("host:     %s\n", node->host);
        printf("pid:      %" PRId64 "\n", node->pid);
        orcctl_labels_split(node->labels_json, &rest, &topology);
        printf("labels:   %s\n", (rest != NULL) ? rest : node->labels_json);
        if (topology != NULL) {
            orcctl_topology_print("topology: ", topology);
        }
        free(rest);
        free(topology);
        printf("endpoint: %s\n",
               (node->endpoint_json != NULL) ? node->endpoint_json : "(none)");
    }

    orc_client_nodes_free(node, 1);
    return ORCCTL_EXIT_OK;
}

static int orcctl_cmd_endpoint_get(orc_client_t *client,
                                   const orcctl_opts_t *opts, uint64_t id)
{
    orc_cl_status_t status;
    json_t *doc;
    char *text;

    status = orc_client_endpoint_get(client, id, &text);
    if (status != ORC_CL_OK) {
        return orcctl_fail("endpoint-get", status);
    }

    if (opts->json) {
        printf("%s\n", text);
    } else {
        doc = orcctl_load(text);
        free(text);
        text = json_dumps(doc, JSON_INDENT(2));
        json_decref(doc);
        printf("%s\n", (text != NULL) ? text : "");
    }

    free(text);
    return ORCCTL_EXIT_OK;
}

static int orcctl_cmd_endpoint_put(orc_client_t *client,
                                   const orcctl_opts_t *opts, uint64_t id,
                                   const char *json)
{
    orc_cl_status_t status = orc_client_endpoint_put(client, id, json);

    if (status != ORC_CL_OK) {
        return orcctl_fail("endpoint-put", status);
    }

    if (opts->json) {
        printf("{\"id\":%" PRIu64 ",\"status\":\"ok\"}\n", id);
    } else {
        printf("endpoint of node %" PRIu64 " published\n", id);
    }
    return ORCCTL_EXIT_OK;
}

static int orcctl_cmd_mailbox_send(orc_client_t *client,
                                   const orcctl_opts_t *opts, uint64_t id,
                                   const char *json)
{
    orc_cl_status_t status;
    uint64_t seq;

    status = orc_client_mbox_send(client, id, opts->from, json, &seq);
    if (status != ORC_CL_OK) {
        return orcctl_fail("mailbox-send", status);
    }

    if (opts->json) {
        printf("{\"seq\":%" PRIu64 "}\n", seq);
    } else {
        printf("queued for node %" PRIu64 " as seq %" PRIu64 "\n", id, seq);
    }
    return ORCCTL_EXIT_OK;
}

static int orcctl_cmd_mailbox_watch(orc_client_t *client,
                                    const orcctl_opts_t *opts, uint64_t id)
{
    int wait_ms =
        (opts->wait_ms >= 0) ? opts->wait_ms : ORCCTL_DEFAULT_POLL_WAIT_MS;
    uint64_t after = opts->after;
    long received  = 0;
    orc_mbox_msg_t *msgs;
    orc_cl_status_t status;
    size_t i, count;
    json_t *doc;

    for (;;) {
        status =
            orc_client_mbox_recv(client, id, after, wait_ms, &msgs, &count);
        if (status != ORC_CL_OK) {
            return orcctl_fail("mailbox-watch", status);
        }

        for (i = 0;
             (i < count) && ((opts->count == 0) || (received < opts->count));
             ++i) {
            if (opts->json) {
                doc =
                    json_pack("{s:I, s:I, s:o}", "seq", (json_int_t)msgs[i].seq,
                              "from", (json_int_t)msgs[i].from, "body",
                              orcctl_load(msgs[i].body_json));
                orcctl_print_json(doc);
                json_decref(doc);
            } else {
                printf("seq %" PRIu64 " from %" PRIu64 ": %s\n", msgs[i].seq,
                       msgs[i].from, msgs[i].body_json);
            }
            after = msgs[i].seq;
            ++received;
        }
        fflush(stdout);
        orc_client_mbox_free(msgs, count);

        if ((opts->count > 0) && (received >= opts->count)) {
            break;
        }
        if ((count == 0) && (opts->wait_ms >= 0) && (opts->count > 0)) {
            /* an explicit --wait bounds the wait for the next message */
            fprintf(stderr,
                    "orcctl: mailbox-watch: no message within the "
                    "wait (%ld of %ld received)\n",
                    received, opts->count);
            return ORCCTL_EXIT_TIMEOUT;
        }
    }

    /* acknowledge what was printed, so the next reader starts after it */
    status = orc_client_mbox_recv(client, id, after, 0, &msgs, &count);
    if (status != ORC_CL_OK) {
        return orcctl_fail("mailbox-watch (acknowledge)", status);
    }
    orc_client_mbox_free(msgs, count);
    return ORCCTL_EXIT_OK;
}

static int orcctl_cmd_kv_put(orc_client_t *client, const orcctl_opts_t *opts,
                             const char *key, const char *value)
{
    orc_cl_status_t status;

    status =
        orc_client_kv_put_node(client, key, value, strlen(value), opts->node);
    if (status != ORC_CL_OK) {
        return orcctl_fail("kv-put", status);
    }

    if (opts->json) {
        json_t *doc = json_pack("{s:s, s:s}", "key", key, "status", "ok");
        orcctl_print_json(doc);
        json_decref(doc);
    } else {
        printf("stored %s (%zu bytes)\n", key, strlen(value));
    }
    return ORCCTL_EXIT_OK;
}

static int orcctl_cmd_kv_get(orc_client_t *client, const orcctl_opts_t *opts,
                             const char *key, int wait_ms)
{
    orc_cl_status_t status;
    size_t length;
    json_t *doc;
    void *value;
    char *b64;

    status = orc_client_kv_get(client, key, (wait_ms > 0) ? wait_ms : 0, &value,
                               &length);
    if (status != ORC_CL_OK) {
        return orcctl_fail("kv-get", status);
    }

    if (opts->json) {
        b64 = orc_client_b64_encode(value, length);
        doc = json_pack("{s:s, s:s}", "key", key, "b64",
                        (b64 != NULL) ? b64 : "");
        /* also as text when the bytes are valid UTF-8 without NUL */
        if ((doc != NULL) && (memchr(value, '\0', length) == NULL)) {
            json_t *text = json_stringn(value, length);
            if (text != NULL) {
                json_object_set_new(doc, "value", text);
            }
        }
        orcctl_print_json(doc);
        json_decref(doc);
        free(b64);
    } else {
        fwrite(value, 1, length, stdout);
        if ((length == 0) || (((char *)value)[length - 1] != '\n')) {
            putchar('\n');
        }
    }

    free(value);
    return ORCCTL_EXIT_OK;
}

static int orcctl_cmd_kv_delete(orc_client_t *client, const orcctl_opts_t *opts,
                                const char *key)
{
    orc_cl_status_t status = orc_client_kv_delete(client, key);

    if (status != ORC_CL_OK) {
        return orcctl_fail("kv-delete", status);
    }

    if (opts->json) {
        json_t *doc = json_pack("{s:s, s:s}", "key", key, "status", "deleted");
        orcctl_print_json(doc);
        json_decref(doc);
    } else {
        printf("deleted %s\n", key);
    }
    return ORCCTL_EXIT_OK;
}

static int orcctl_cmd_register(orc_client_t *client, const orcctl_opts_t *opts,
                               const char *host, const sigset_t *sigs)
{
    struct timespec poll = {.tv_sec = 0, .tv_nsec = 200 * 1000 * 1000};
    orc_cl_status_t status;
    uint64_t id;
    int sig;

    status =
        orc_client_register(client, host,
                            (opts->pid >= 0) ? opts->pid : (int64_t)getpid(),
                            opts->labels, opts->ttl, &id);
    if (status != ORC_CL_OK) {
        return orcctl_fail("register", status);
    }

    if (opts->json) {
        printf("{\"id\":%" PRIu64 "}\n", id);
    } else {
        printf("registered node %" PRIu64 "; keeping it alive until "
               "interrupted\n",
               id);
    }
    fflush(stdout);

    for (;;) {
        sig = sigtimedwait(sigs, NULL, &poll);
        if (sig > 0) {
            break;
        }
        if (orc_client_node_lost(client, id)) {
            fprintf(stderr,
                    "orcctl: register: the lease of node %" PRIu64
                    " was lost\n",
                    id);
            return ORCCTL_EXIT_LOST;
        }
    }

    status = orc_client_deregister(client, id);
    if (status != ORC_CL_OK) {
        return orcctl_fail("register (deregister)", status);
    }

    if (!opts->json) {
        printf("deregistered node %" PRIu64 "\n", id);
    }
    return ORCCTL_EXIT_OK;
}

static void orcctl_log(void *arg, const char *message)
{
    (void)arg;
    fprintf(stderr, "orcctl: %s\n", message);
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"url", required_argument, NULL, 'u'},
        {"token", required_argument, NULL, 't'},
        {"token-file", required_argument, NULL, 'T'},
        {"job", required_argument, NULL, 'j'},
        {"json", no_argument, NULL, 'J'},
        {"timeout", required_argument, NULL, 'o'},
        {"wait", required_argument, NULL, 'w'},
        {"index", required_argument, NULL, 'i'},
        {"after", required_argument, NULL, 'a'},
        {"count", required_argument, NULL, 'c'},
        {"ttl", required_argument, NULL, 'l'},
        {"pid", required_argument, NULL, 'p'},
        {"labels", required_argument, NULL, 'L'},
        {"from", required_argument, NULL, 'f'},
        {"node", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    orcctl_opts_t opts         = {.timeout_ms = 5000, .wait_ms = -1, .pid = -1};
    orc_client_params_t params = {0};
    orc_client_t *client       = NULL;
    char *token_buf            = NULL;
    char *env_token_buf        = NULL;
    const char *cmd;
    orc_cl_status_t status;
    uint64_t value, id = 0;
    sigset_t sigs;
    char **args;
    int nargs, c, ret;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
        switch (c) {
        case 'u':
            opts.url = optarg;
            break;
        case 't':
            opts.token = optarg;
            break;
        case 'T':
            opts.token_file = optarg;
            break;
        case 'j':
            opts.job = optarg;
            break;
        case 'J':
            opts.json = 1;
            break;
        case 'L':
            opts.labels = optarg;
            break;
        case 'h':
            orcctl_usage(stdout);
            return ORCCTL_EXIT_OK;
        case 'o':
            if ((orcctl_parse_seconds(optarg, &opts.timeout_ms) < 0) ||
                (opts.timeout_ms <= 0)) {
                return orcctl_usage_error("--timeout: '%s' is not a positive "
                                          "number of seconds (max 86400)",
                                          optarg);
            }
            break;
        case 'w':
            if (orcctl_parse_seconds(optarg, &opts.wait_ms) < 0) {
                return orcctl_usage_error("--wait: '%s' is not a number of "
                                          "seconds in [0, 86400]",
                                          optarg);
            }
            break;
        case 'i':
            opts.index_set = 1;
            if (orcctl_parse_u64(optarg, 0, &opts.index) < 0) {
                return orcctl_usage_error("--index: '%s' is not an unsigned "
                                          "integer",
                                          optarg);
            }
            break;
        case 'a':
            if (orcctl_parse_u64(optarg, 0, &opts.after) < 0) {
                return orcctl_usage_error("--after: '%s' is not an unsigned "
                                          "integer",
                                          optarg);
            }
            break;
        case 'c':
            if ((orcctl_parse_u64(optarg, 1, &value) < 0) ||
                (value > LONG_MAX)) {
                return orcctl_usage_error("--count: '%s' is not a positive "
                                          "integer",
                                          optarg);
            }
            opts.count = (long)value;
            break;
        case 'l':
            if ((orcctl_parse_u64(optarg, 1, &value) < 0) ||
                (value > UINT_MAX)) {
                return orcctl_usage_error("--ttl: '%s' is not a positive "
                                          "number of seconds",
                                          optarg);
            }
            opts.ttl = (unsigned)value;
            break;
        case 'p':
            if ((orcctl_parse_u64(optarg, 0, &value) < 0) ||
                (value > INT64_MAX)) {
                return orcctl_usage_error("--pid: '%s' is not a process id",
                                          optarg);
            }
            opts.pid = (int64_t)value;
            break;
        case 'f':
            if (orcctl_parse_u64(optarg, 1, &opts.from) < 0) {
                return orcctl_usage_error("--from: '%s' is not a node id",
                                          optarg);
            }
            break;
        case 'n':
            if (orcctl_parse_u64(optarg, 1, &opts.node) < 0) {
                return orcctl_usage_error("--node: '%s' is not a node id",
                                          optarg);
            }
            break;
        case ':':
            return orcctl_usage_error("option '%s' needs a value",
                                      argv[optind - 1]);
        default:
            return orcctl_usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }

    if (optind >= argc) {
        orcctl_usage(stderr);
        return ORCCTL_EXIT_USAGE;
    }

    cmd   = argv[optind];
    args  = argv + optind + 1;
    nargs = argc - optind - 1;

#define ORCCTL_NARGS(_n)                                                 \
    if (nargs != (_n)) {                                                 \
        return orcctl_usage_error("%s: wrong number of arguments", cmd); \
    }
#define ORCCTL_ID(_i)                                                    \
    if (orcctl_parse_u64(args[_i], 1, &id) < 0) {                        \
        return orcctl_usage_error("'%s' is not a node id (integer > 0)", \
                                  args[_i]);                             \
    }

    /* validate the command line before talking to anyone */
    if (!strcmp(cmd, "health") || !strcmp(cmd, "nodes")) {
        ORCCTL_NARGS(0);
    } else if (!strcmp(cmd, "node-get") || !strcmp(cmd, "endpoint-get") ||
               !strcmp(cmd, "mailbox-watch")) {
        ORCCTL_NARGS(1);
        ORCCTL_ID(0);
    } else if (!strcmp(cmd, "endpoint-put") || !strcmp(cmd, "mailbox-send")) {
        ORCCTL_NARGS(2);
        ORCCTL_ID(0);
    } else if (!strcmp(cmd, "kv-put") || !strcmp(cmd, "kv-wait")) {
        ORCCTL_NARGS(2);
        if (!strcmp(cmd, "kv-wait") &&
            (orcctl_parse_seconds(args[1], &opts.wait_ms) < 0)) {
            return orcctl_usage_error("kv-wait: '%s' is not a number of "
                                      "seconds in [0, 86400]",
                                      args[1]);
        }
    } else if (!strcmp(cmd, "kv-get") || !strcmp(cmd, "kv-delete") ||
               !strcmp(cmd, "register")) {
        ORCCTL_NARGS(1);
    } else {
        return orcctl_usage_error("unknown command '%s'", cmd);
    }

    if ((opts.token != NULL) && (opts.token_file != NULL)) {
        return orcctl_usage_error("%s", "--token and --token-file are "
                                        "exclusive");
    }

    params.field_mask =
        ORC_CLIENT_PARAM_FIELD_TIMEOUT | ORC_CLIENT_PARAM_FIELD_LOG;
    params.timeout_ms = opts.timeout_ms;
    params.log        = orcctl_log;
    if (opts.url != NULL) {
        params.url = opts.url;
        params.field_mask |= ORC_CLIENT_PARAM_FIELD_URL;
    }
    if (opts.job != NULL) {
        params.job = opts.job;
        params.field_mask |= ORC_CLIENT_PARAM_FIELD_JOB;
    }
    if (opts.token != NULL) {
        params.token = opts.token;
        params.field_mask |= ORC_CLIENT_PARAM_FIELD_TOKEN;
    } else if (opts.token_file != NULL) {
        status = orc_client_read_token_file(opts.token_file, &token_buf);
        if (status != ORC_CL_OK) {
            return orcctl_fail("--token-file", status);
        }
        params.token = token_buf;
        params.field_mask |= ORC_CLIENT_PARAM_FIELD_TOKEN;
    }

    status = orc_client_params_from_env(&params, &env_token_buf);
    if (status != ORC_CL_OK) {
        free(token_buf);
        return orcctl_fail("environment", status);
    }

    /* register waits for these with sigtimedwait; block them before any
     * thread exists so that no thread takes them */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    if (!strcmp(cmd, "register")) {
        pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    }

    status = orc_client_create(&params, &client);
    free(token_buf);
    free(env_token_buf);
    if (status != ORC_CL_OK) {
        return orcctl_fail("setup", status);
    }

    if (!strcmp(cmd, "health")) {
        ret = orcctl_cmd_health(client, &opts);
    } else if (!strcmp(cmd, "nodes")) {
        ret = orcctl_cmd_nodes(client, &opts);
    } else if (!strcmp(cmd, "node-get")) {
        ret = orcctl_cmd_node_get(client, &opts, id);
    } else if (!strcmp(cmd, "endpoint-get")) {
        ret = orcctl_cmd_endpoint_get(client, &opts, id);
    } else if (!strcmp(cmd, "endpoint-put")) {
        ret = orcctl_cmd_endpoint_put(client, &opts, id, args[1]);
    } else if (!strcmp(cmd, "mailbox-send")) {
        ret = orcctl_cmd_mailbox_send(client, &opts, id, args[1]);
    } else if (!strcmp(cmd, "mailbox-watch")) {
        ret = orcctl_cmd_mailbox_watch(client, &opts, id);
    } else if (!strcmp(cmd, "kv-put")) {
        ret = orcctl_cmd_kv_put(client, &opts, args[0], args[1]);
    } else if (!strcmp(cmd, "kv-get") || !strcmp(cmd, "kv-wait")) {
        ret = orcctl_cmd_kv_get(client, &opts, args[0], opts.wait_ms);
    } else if (!strcmp(cmd, "kv-delete")) {
        ret = orcctl_cmd_kv_delete(client, &opts, args[0]);
    } else {
        ret = orcctl_cmd_register(client, &opts, args[0], &sigs);
    }

    orc_client_destroy(client);
    return ret;
}
