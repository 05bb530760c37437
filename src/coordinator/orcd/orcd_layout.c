/*
 * orcd store layout (orcd_api_int.h): check that a store holds nothing but
 * what orcd itself writes, as it writes it (a restored snapshot is checked
 * before orcd serves it).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd_api_int.h"

#include <stdio.h>
#include <string.h>

/* "<20 digits>" followed by end, returning the rest after it */
static const char *orcd_layout_id(const char *p)
{
    size_t n = strspn(p, "0123456789");

    return ((n == 20) && (p[0] != '\0')) ? p + 20 : NULL;
}

static int orcd_layout_json(const orc_store_kv_t *kv, int want_object,
                            json_t **o_p)
{
    json_t *o = json_loadb(kv->value, kv->value_len, JSON_DECODE_ANY, NULL);

    if ((o == NULL) || (want_object && !json_is_object(o))) {
        json_decref(o);
        return -1;
    }
    *o_p = o;
    return 0;
}

static int orcd_layout_node(const orc_store_kv_t *kv)
{
    json_t *o, *labels;
    const char *host;
    json_int_t pid, ttl;
    int ret;

    if (orcd_layout_json(kv, 1, &o)) {
        return -1;
    }
    ret = json_unpack(o, "{s:s, s:I, s:o, s:I}", "host", &host, "pid", &pid,
                      "labels", &labels, "ttl", &ttl);
    ret = (ret == 0) && json_is_object(labels) && (ttl > 0) ? 0 : -1;
    json_decref(o);
    return ret;
}

static int orcd_layout_message(const orc_store_kv_t *kv)
{
    json_t *o, *body;
    json_int_t from;
    int ret;

    if (orcd_layout_json(kv, 1, &o)) {
        return -1;
    }
    ret = json_unpack(o, "{s:I, s:o}", "from", &from, "body", &body);
    ret = (ret == 0) && json_is_object(body) && (from >= 0) ? 0 : -1;
    json_decref(o);
    return ret;
}

unsigned orcd_key_class(const char *key)
{
    const char *rest, *p;

    if (strncmp(key, "/jobs/", 6) || ((rest = strchr(key + 6, '/')) == NULL)) {
        return ORCD_CLASS_OTHER;
    }
    if (!strncmp(rest, "/nodes/", 7) &&
        ((p = orcd_layout_id(rest + 7)) != NULL) && (*p == '\0')) {
        return ORCD_CLASS_NODE;
    }
    if (!strncmp(rest, "/mbox/", 6) &&
        ((p = orcd_layout_id(rest + 6)) != NULL) && !strncmp(p, "/m/", 3)) {
        return ORCD_CLASS_MESSAGE;
    }
    return ORCD_CLASS_OTHER;
}

/* An ack record of an earlier orcd version: "rid:seq" entries separated
 * by single spaces */
static int orcd_layout_ack(const char *p)
{
    size_t n;

    while (*p != '\0') {
        n = strspn(p, ORCD_RID_CHARS);
        if ((n == 0) || (n > ORCD_RID_MAX) || (p[n] != ':')) {
            return -1;
        }
        p += n + 1;
        n = strspn(p, "0123456789");
        if ((n == 0) || ((p[n] != ' ') && (p[n] != '\0')) ||
            ((p[n] == ' ') && (p[n + 1] == '\0'))) {
            return -1;
        }
        p += n + (p[n] == ' ');
    }
    return 0;
}

/* One key of job space (after "/jobs/<job>") and its value */
static int orcd_layout_key(const char *rest, const orc_store_kv_t *kv)
{
    const char *p;
    json_t *o;

    if (!strcmp(rest, "/meta/ids")) {
        return (kv->value_len == 0) ? 0 : -1;
    }
    if (!strncmp(rest, "/rid/", 5)) {
        if (!orcd_rid_valid(rest + 5) || orcd_layout_json(kv, 1, &o)) {
            return -1;
        }
        json_decref(o);
        return 0;
    }
    if (!strncmp(rest, "/gone/", 6)) {
        p = orcd_layout_id(rest + 6);
        return ((p != NULL) && (*p == '\0') && (kv->value_len == 0)) ? 0 : -1;
    }
    if (!strncmp(rest, "/nodes/", 7) &&
        ((p = orcd_layout_id(rest + 7)) != NULL)) {
        if (*p == '\0') {
            return orcd_layout_node(kv);
        }
        if (strcmp(p, "/ep") || orcd_layout_json(kv, 1, &o)) {
            return -1;
        }
        json_decref(o);
        return 0;
    }
    if (!strncmp(rest, "/mbox/", 6) &&
        ((p = orcd_layout_id(rest + 6)) != NULL)) {
        if (!strcmp(p, "/seq")) {
            return (kv->value_len == 0) ? 0 : -1;
        }
        if (!strcmp(p, "/ack")) {
            return orcd_layout_ack(kv->value);
        }
        if (strncmp(p, "/m/", 3) || (orcd_layout_id(p + 3) == NULL) ||
            (*orcd_layout_id(p + 3) != '\0')) {
            return -1;
        }
        return orcd_layout_message(kv);
    }
    if (!strncmp(rest, "/kv/", 4) &&
        orc_util_name_valid(rest + 4, strlen(rest + 4), 1) &&
        !orcd_layout_json(kv, 0, &o)) {
        json_decref(o);
        return 0;
    }
    return -1;
}

int orcd_api_check_store(orc_store_t *store, char *err, size_t errlen)
{
    orc_store_range_result_t res;
    const char *key, *slash;
    size_t i;
    int status;

    status = store->ops->range(store, "", "\0", 0, 0, 0, &res);
    if (status != ORC_STORE_OK) {
        snprintf(err, errlen, "store: %s", orc_store_status_str(status));
        return -1;
    }
    for (i = 0; i < res.count; ++i) {
        key   = res.kvs[i].key;
        slash = (strncmp(key, "/jobs/", 6) == 0) ? strchr(key + 6, '/') : NULL;
        if ((slash == NULL) ||
            !orc_util_name_valid(key + 6, (size_t)(slash - key - 6), 0) ||
            orcd_layout_key(slash, &res.kvs[i])) {
            snprintf(err, errlen,
                     "key '%.200s' or its value is not what "
                     "orcd writes",
                     key);
            orc_store_range_result_free(&res);
            return -1;
        }
    }
    orc_store_range_result_free(&res);
    return 0;
}
