/*
 * orc_hello: two UCP processes find each other by name through orcd, with
 * no address exchange of their own, and swap one tagged message.
 *
 *   orcd &
 *   orc_hello --name alice --peer bob &
 *   orc_hello --name bob --peer alice
 *
 * Each publishes its worker address under its name (orc_ucp_publish_worker),
 * creates an endpoint to the peer's name (orc_ucp_ep_create_by_name, which
 * waits until the peer has published), sends "hello from NAME (pid P)" and
 * receives the peer's greeting. A kv handshake ("orc_hello/done/NAME" holding
 * the greeting received) makes sure both got theirs before either closes.
 * The coordinator URL, job and token come from ORC_COORDINATOR_URL, ORC_JOB,
 * ORC_TOKEN / ORC_TOKEN_FILE. Works with any UCX_TLS (tcp, shared memory,
 * orc).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_ucp.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ORC_HELLO_TAG     0x6f7263ull
#define ORC_HELLO_MSG_MAX 256
#define ORC_HELLO_KEY_MAX 160

typedef struct orc_hello_req {
    int done;
    ucs_status_t status;
    size_t length;
} orc_hello_req_t;

static double orc_hello_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void orc_hello_send_cb(void *request, ucs_status_t status, void *arg)
{
    orc_hello_req_t *req = arg;

    (void)request;
    req->status = status;
    req->done   = 1;
}

/*
 * Endpoint error handling (--err-mode peer, the default): once both
 * greetings arrived, the peer closing its side first is the normal end, not
 * a failure. Before that, an error fails the exchange (the pending requests
 * complete with it).
 */
typedef struct orc_hello_ep {
    int done;
    ucs_status_t status;
} orc_hello_ep_t;

static void orc_hello_ep_error(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    orc_hello_ep_t *state = arg;

    (void)ep;
    state->status = status;
    if (!state->done) {
        fprintf(stderr, "orc_hello: endpoint error: %s\n",
                ucs_status_string(status));
    }
}

static void orc_hello_recv_cb(void *request, ucs_status_t status,
                              const ucp_tag_recv_info_t *info, void *arg)
{
    orc_hello_req_t *req = arg;

    (void)request;
    req->status = status;
    req->length = info->length;
    req->done   = 1;
}

/* Progress until `req` completes or the deadline passes */
static ucs_status_t orc_hello_wait(ucp_worker_h worker, void *request,
                                   orc_hello_req_t *req, double deadline,
                                   const char *what)
{
    ucs_status_t status;

    if (request == NULL) {
        return UCS_OK; /* completed in place */
    }
    if (UCS_PTR_IS_ERR(request)) {
        fprintf(stderr, "orc_hello: %s: %s\n", what,
                ucs_status_string(UCS_PTR_STATUS(request)));
        return UCS_PTR_STATUS(request);
    }

    while (!req->done && (orc_hello_now() < deadline)) {
        ucp_worker_progress(worker);
    }

    if (!req->done) {
        ucp_request_cancel(worker, request);
        while (!req->done) {
            ucp_worker_progress(worker);
        }
        fprintf(stderr, "orc_hello: %s: timed out\n", what);
        ucp_request_free(request);
        return UCS_ERR_TIMED_OUT;
    }

    status = req->status;
    ucp_request_free(request);
    if (status != UCS_OK) {
        fprintf(stderr, "orc_hello: %s: %s\n", what, ucs_status_string(status));
    }
    return status;
}

/* Wait for the peer's done key to hold `expect`, progressing the worker */
static int orc_hello_barrier(orc_client_t *client, ucp_worker_h worker,
                             const char *key, const char *expect,
                             double deadline)
{
    double next_poll = 0;
    orc_cl_status_t status;
    size_t length;
    void *value;
    int match;

    while (orc_hello_now() < deadline) {
        ucp_worker_progress(worker);
        if (orc_hello_now() < next_poll) {
            continue;
        }

        status = orc_client_kv_get(client, key, 0, &value, &length);
        if (status == ORC_CL_OK) {
            match =
                (length == strlen(expect)) && !memcmp(value, expect, length);
            free(value);
            if (match) {
                return 0;
            }
        } else if (status != ORC_CL_ERR_NOT_FOUND) {
            fprintf(stderr, "orc_hello: kv get %s: %s (%s)\n", key,
                    orc_cl_status_str(status), orc_client_last_error());
            return -1;
        }
        next_poll = orc_hello_now() + 0.01;
    }

    fprintf(stderr, "orc_hello: peer did not confirm (key %s) in time\n", key);
    return -1;
}

static void orc_hello_usage(FILE *out)
{
    fprintf(
        out,
        "usage: orc_hello --name NAME --peer PEER [--timeout S]\n"
        "                 [--err-mode peer|none]\n"
        "  Publishes this UCP worker under NAME in orcd, connects to the\n"
        "  worker published as PEER (waiting up to S seconds, default 30)\n"
        "  and exchanges a greeting. --err-mode: UCP error handling of the\n"
        "  endpoint (default peer: the peer leaving after the exchange is\n"
        "  fine). orcd URL/job/token from\n"
        "  " ORC_CLIENT_ENV_URL ", " ORC_CLIENT_ENV_JOB
        ", " ORC_CLIENT_ENV_TOKEN " / " ORC_CLIENT_ENV_TOKEN_FILE ".\n");
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"name", required_argument, NULL, 'n'},
        {"peer", required_argument, NULL, 'p'},
        {"timeout", required_argument, NULL, 't'},
        {"err-mode", required_argument, NULL, 'e'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    orc_client_params_t cl_params = {0};
    const char *name = NULL, *peer = NULL;
    char msg[ORC_HELLO_MSG_MAX], rx[ORC_HELLO_MSG_MAX + 1];
    char key[ORC_HELLO_KEY_MAX];
    ucp_request_param_t req_param;
    ucp_worker_params_t worker_params;
    orc_hello_req_t send_req, recv_req, close_req;
    ucp_params_t ucp_params;
    orc_client_t *client;
    ucp_context_h context;
    ucp_worker_h worker;
    char *token_buf;
    void *send_request, *recv_request, *close_request;
    double timeout = 30, deadline;
    orc_cl_status_t cl_status;
    ucs_status_t status;
    ucp_ep_h ep;
    ucp_ep_params_t ep_params;
    orc_hello_ep_t ep_state = {0};
    int err_mode_peer       = 1;
    int c, ret = 1;

    while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            name = optarg;
            break;
        case 'p':
            peer = optarg;
            break;
        case 't':
            timeout = strtod(optarg, NULL);
            if (!(timeout > 0) || (timeout > 3600)) {
                fprintf(stderr, "orc_hello: --timeout must be in (0, 3600]\n");
                return 1;
            }
            break;
        case 'e':
            if (!strcmp(optarg, "peer") || !strcmp(optarg, "none")) {
                err_mode_peer = !strcmp(optarg, "peer");
                break;
            }
            fprintf(stderr, "orc_hello: --err-mode: peer or none\n");
            return 1;
        case 'h':
            orc_hello_usage(stdout);
            return 0;
        default:
            orc_hello_usage(stderr);
            return 1;
        }
    }

    if ((name == NULL) || (peer == NULL) || (optind != argc) ||
        !strcmp(name, peer)) {
        orc_hello_usage(stderr);
        return 1;
    }

    deadline = orc_hello_now() + timeout;
    snprintf(msg, sizeof(msg), "hello from %s (pid %d)", name, (int)getpid());

    cl_status = orc_client_params_from_env(&cl_params, &token_buf);
    if (cl_status == ORC_CL_OK) {
        cl_status = orc_client_create(&cl_params, &client);
        free(token_buf);
    }
    if (cl_status != ORC_CL_OK) {
        fprintf(stderr, "orc_hello: coordinator client: %s (%s)\n",
                orc_cl_status_str(cl_status), orc_client_last_error());
        return 1;
    }

    memset(&ucp_params, 0, sizeof(ucp_params));
    ucp_params.field_mask = UCP_PARAM_FIELD_FEATURES;
    ucp_params.features   = UCP_FEATURE_TAG;
    status                = ucp_init(&ucp_params, NULL, &context);
    if (status != UCS_OK) {
        fprintf(stderr, "orc_hello: ucp_init: %s\n", ucs_status_string(status));
        goto out_client;
    }

    memset(&worker_params, 0, sizeof(worker_params));
    worker_params.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;
    status = ucp_worker_create(context, &worker_params, &worker);
    if (status != UCS_OK) {
        fprintf(stderr, "orc_hello: ucp_worker_create: %s\n",
                ucs_status_string(status));
        goto out_context;
    }

    status = orc_ucp_publish_worker(client, worker, name);
    if (status != UCS_OK) {
        fprintf(stderr, "orc_hello: publish '%s': %s (%s)\n", name,
                ucs_status_string(status), orc_client_last_error());
        goto out_worker;
    }

    memset(&ep_params, 0, sizeof(ep_params));
    if (err_mode_peer) {
        ep_params.field_mask = UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                               UCP_EP_PARAM_FIELD_ERR_HANDLER;
        ep_params.err_mode        = UCP_ERR_HANDLING_MODE_PEER;
        ep_params.err_handler.cb  = orc_hello_ep_error;
        ep_params.err_handler.arg = &ep_state;
    }
    status = orc_ucp_ep_create_by_name_params(client, worker, peer,
                                              (int)(timeout * 1000), &ep_params,
                                              &ep);
    if (status != UCS_OK) {
        fprintf(stderr, "orc_hello: connect to '%s': %s (%s)\n", peer,
                ucs_status_string(status), orc_client_last_error());
        goto out_unpublish;
    }

    memset(&recv_req, 0, sizeof(recv_req));
    memset(&req_param, 0, sizeof(req_param));
    req_param.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    req_param.cb.recv   = orc_hello_recv_cb;
    req_param.user_data = &recv_req;
    recv_request        = ucp_tag_recv_nbx(worker, rx, ORC_HELLO_MSG_MAX,
                                           ORC_HELLO_TAG, (ucp_tag_t)-1, &req_param);

    memset(&send_req, 0, sizeof(send_req));
    memset(&req_param, 0, sizeof(req_param));
    req_param.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    req_param.cb.send   = orc_hello_send_cb;
    req_param.user_data = &send_req;
    send_request =
        ucp_tag_send_nbx(ep, msg, strlen(msg), ORC_HELLO_TAG, &req_param);

    if ((orc_hello_wait(worker, send_request, &send_req, deadline, "send") !=
         UCS_OK) ||
        (orc_hello_wait(worker, recv_request, &recv_req, deadline, "receive") !=
         UCS_OK)) {
        goto out_ep;
    }

    rx[recv_req.length] = '\0';
    ep_state.done       = 1; /* from here on the peer may leave first */
    printf("orc_hello %s: received '%s'\n", name, rx);
    fflush(stdout);

    /* tell the peer what we got; wait until it got ours */
    snprintf(key, sizeof(key), "orc_hello/done/%s", name);
    cl_status = orc_client_kv_put(client, key, rx, recv_req.length);
    if (cl_status != ORC_CL_OK) {
        fprintf(stderr, "orc_hello: kv put %s: %s (%s)\n", key,
                orc_cl_status_str(cl_status), orc_client_last_error());
        goto out_ep;
    }

    snprintf(key, sizeof(key), "orc_hello/done/%s", peer);
    if (orc_hello_barrier(client, worker, key, msg, deadline) == 0) {
        ret = 0;
    }

out_ep:
    memset(&close_req, 0, sizeof(close_req));
    memset(&req_param, 0, sizeof(req_param));
    req_param.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    req_param.cb.send   = orc_hello_send_cb;
    req_param.user_data = &close_req;
    close_request       = ucp_ep_close_nbx(ep, &req_param);
    if (UCS_PTR_IS_PTR(close_request)) {
        while (!close_req.done && (orc_hello_now() < deadline + 5)) {
            ucp_worker_progress(worker);
        }
        if (close_req.done) {
            ucp_request_free(close_request);
        }
    }
out_unpublish:
    orc_ucp_unpublish_worker(client, name);
out_worker:
    ucp_worker_destroy(worker);
out_context:
    ucp_cleanup(context);
out_client:
    orc_client_destroy(client);
    return ret;
}
