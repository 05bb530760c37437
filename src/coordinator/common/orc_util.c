/*
 * orc coordinator helpers (see orc_util.h).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orc_util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t orc_util_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t orc_util_now_ms(void)
{
    return orc_util_now_ns() / 1000000u;
}

int orc_util_name_valid(const char *s, size_t len, int is_key)
{
    size_t i;

    if ((s == NULL) || (len == 0) || (len > ORC_UTIL_NAME_MAX) ||
        ((len == 1) && (s[0] == '.')) ||
        ((len == 2) && (s[0] == '.') && (s[1] == '.'))) {
        return 0;
    }
    for (i = 0; i < len; ++i) {
        if (isalnum((unsigned char)s[i]) || (s[i] == '.') || (s[i] == '_') ||
            (s[i] == '-')) {
            continue;
        }
        if (!is_key || (s[i] != '/') || (i == 0) || (i == len - 1) ||
            (s[i - 1] == '/')) {
            return 0;
        }
    }
    if (is_key) {
        for (i = 0; i + 1 < len; ++i) {
            if ((s[i] == '.') && (s[i + 1] == '.')) {
                return 0;
            }
        }
    }
    return 1;
}

int orc_util_parse_u64(const char *s, uint64_t *value_p)
{
    uint64_t v = 0;
    size_t i;

    if ((s == NULL) || (s[0] == '\0')) {
        return -1;
    }
    for (i = 0; s[i] != '\0'; ++i) {
        if (!isdigit((unsigned char)s[i]) ||
            (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)) {
            return -1;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *value_p = v;
    return 0;
}

int orc_util_parse_seconds(const char *s, double max, double *seconds_p)
{
    size_t i, dots = 0;
    char *end;
    double d;

    if ((s == NULL) || !isdigit((unsigned char)s[0]) || (strlen(s) > 16)) {
        return -1;
    }
    for (i = 0; s[i] != '\0'; ++i) {
        if (s[i] == '.') {
            ++dots;
        } else if (!isdigit((unsigned char)s[i])) {
            return -1;
        }
    }
    if (dots > 1) {
        return -1;
    }
    errno = 0;
    d     = strtod(s, &end);
    if ((errno != 0) || (*end != '\0') || !isfinite(d) || (d > max)) {
        return -1;
    }
    *seconds_p = d;
    return 0;
}

char *orc_util_read_file(const char *path, size_t max, size_t *len_p,
                         char *err, size_t errlen)
{
    size_t len = 0, cap = 0, n;
    char *data = NULL, *p;
    FILE *f;

    f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (len + 1 >= cap) { /* room for one more byte and the NUL */
            cap = (cap == 0) ? 4096 : cap * 2;
            p   = realloc(data, cap);
            if (p == NULL) {
                snprintf(err, errlen, "%s: out of memory", path);
                goto err;
            }
            data = p;
        }
        n    = fread(data + len, 1, cap - len - 1, f);
        len += n;
        if (len > max) {
            snprintf(err, errlen, "%s:1:1: file too large (more than %zu "
                     "bytes)", path, max);
            goto err;
        }
        if (n == 0) {
            break;
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
        goto err;
    }
    fclose(f);
    data[len] = '\0';
    *len_p    = len;
    return data;

err:
    free(data);
    fclose(f);
    return NULL;
}

int orc_util_read_token_file(const char *path, char **token_p, char *err,
                             size_t errlen)
{
    size_t flen, len, start = 0;
    char *data, *token;
    int ret = -1;

    data = orc_util_read_file(path, 64 * 1024, &flen, err, errlen);
    if (data == NULL) {
        return -1;
    }
    len = strcspn(data, "\r\n");
    if ((len == strlen(data)) && (len < flen)) {
        snprintf(err, errlen, "%s: the token contains a NUL byte", path);
        goto out;
    }
    while ((start < len) && isspace((unsigned char)data[start])) {
        ++start;
    }
    while ((len > start) && isspace((unsigned char)data[len - 1])) {
        --len;
    }
    if (len == start) {
        snprintf(err, errlen, "%s: the first line holds no token", path);
        goto out;
    }
    token = strndup(data + start, len - start);
    if (token == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    *token_p = token;
    ret      = 0;
out:
    memset(data, 0, flen); /* holds a secret */
    free(data);
    return ret;
}
