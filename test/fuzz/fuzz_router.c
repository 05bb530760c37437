/*
 * libFuzzer harness for orcd's request router (orcd_api_handle and
 * orcd_api_precheck), no sockets.
 *
 * Input: "<F><METHOD>\n<PATH>\n<QUERY>\n<AUTHORIZATION>\n<BODY...>"
 *   F      one flag byte: bit 0 auth on, bit 1 may_block;
 *   QUERY  k=v pairs separated by '&' (a key without '=' has no value);
 *   AUTHORIZATION  header value, empty = absent.
 * The router state persists across inputs (nodes, mailboxes, kv), and is
 * rebuilt every ORC_FUZZ_RESET inputs to keep memory bounded.
 */
#include "coordinator/orcd/orcd.h"
#include "coordinator/orcd/orcd_api.h"
#include "coordinator/store/orc_store.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ORC_FUZZ_RESET 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct orc_fuzz_router {
    orc_store_t *store;
    orcd_api_t *api;
} orc_fuzz_router_t;

static orc_fuzz_router_t orc_fuzz_routers[2];
static unsigned orc_fuzz_count;

static void orc_fuzz_router_make(orc_fuzz_router_t *r, int auth)
{
    static const char yaml_auth[] =
        "auth: {enabled: true, metrics_auth: true, tokens: "
        "{j: tok-j-12345678, k: [tok-k-12345678, tok-k2-12345678]}}\n"
        "limits: {mailbox_depth: 8, max_body: 4096, endpoint_max: 512, "
        "mailbox_msg_max: 512}\nttl: {min: 1}\n";
    static const char yaml_open[] =
        "limits: {mailbox_depth: 8, max_wait: 0.5}\n";
    const orc_store_params_t params = {.group_depth = ORCD_STORE_GROUP_DEPTH,
                                       .classify    = orcd_key_class};
    const char *yaml                = auth ? yaml_auth : yaml_open;
    orcd_config_t *cfg              = calloc(1, sizeof(*cfg));
    char err[256];

    if ((cfg == NULL) || orcd_config_init_defaults(cfg) ||
        orcd_config_load_buffer(cfg, "fuzz", (const unsigned char *)yaml,
                                strlen(yaml), err, sizeof(err)) ||
        orcd_config_finalize(cfg, err, sizeof(err)) ||
        (orc_store_mem_open(&params, &r->store) != ORC_STORE_OK) ||
        orcd_api_create(cfg, r->store, &r->api)) {
        abort(); /* harness set-up cannot fail */
    }
}

static void orc_fuzz_router_free(orc_fuzz_router_t *r)
{
    orcd_api_destroy(r->api);
    orc_store_close(r->store);
    r->api   = NULL;
    r->store = NULL;
}

/* next '\n'-terminated field as a NUL-terminated copy (NULL at the end) */
static char *orc_fuzz_field(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *nl;
    char *s;

    if (*p > end) {
        return NULL;
    }
    nl = memchr(*p, '\n', (size_t)(end - *p));
    if (nl == NULL) {
        nl = end;
    }
    s = malloc((size_t)(nl - *p) + 1);
    if (s == NULL) {
        abort();
    }
    memcpy(s, *p, (size_t)(nl - *p));
    s[nl - *p] = '\0';
    *p         = nl + 1;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    orcd_query_arg_t args[ORCD_MAX_QUERY_ARGS];
    char *method, *path, *query, *auth, *q, *amp, *eq;
    orcd_request_t req;
    orcd_response_t resp;
    orc_fuzz_router_t *r;
    size_t max_body;
    uint8_t flags;
    int i;

    if (size < 1) {
        return 0;
    }
    if ((orc_fuzz_count++ % ORC_FUZZ_RESET) == 0) {
        for (i = 0; i < 2; ++i) {
            if (orc_fuzz_routers[i].api != NULL) {
                orc_fuzz_router_free(&orc_fuzz_routers[i]);
            }
            orc_fuzz_router_make(&orc_fuzz_routers[i], i);
        }
    }
    flags = *p++;
    r     = &orc_fuzz_routers[flags & 1];

    method = orc_fuzz_field(&p, end);
    path   = orc_fuzz_field(&p, end);
    query  = orc_fuzz_field(&p, end);
    auth   = orc_fuzz_field(&p, end);

    memset(&req, 0, sizeof(req));
    req.method        = (method != NULL) ? method : "";
    req.path          = (path != NULL) ? path : "";
    req.authorization = ((auth != NULL) && (auth[0] != '\0')) ? auth : NULL;
    req.args          = args;
    for (q = query;
         (q != NULL) && (*q != '\0') && (req.nargs < ORCD_MAX_QUERY_ARGS);
         q = amp) {
        amp = strchr(q, '&');
        if (amp != NULL) {
            *amp++ = '\0';
        }
        eq = strchr(q, '=');
        if (eq != NULL) {
            *eq++ = '\0';
        }
        args[req.nargs].key   = q;
        args[req.nargs].value = eq;
        ++req.nargs;
    }
    if (p < end) {
        req.body     = (const char *)p;
        req.body_len = (size_t)(end - p);
    }
    req.may_block = (flags >> 1) & 1;

    if (orcd_api_precheck(r->api, &req, (long long)req.body_len, &max_body,
                          &resp) == 0) {
        orcd_api_response_free(&resp);
        orcd_api_handle(r->api, &req, &resp);
        if ((resp.status < 200) || (resp.status > 599) ||
            (resp.block && (resp.watch_key == NULL))) {
            abort(); /* the router must always answer sensibly */
        }
    }
    orcd_api_response_free(&resp);
    free(method);
    free(path);
    free(query);
    free(auth);
    return 0;
}
