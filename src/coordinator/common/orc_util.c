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

char *orc_util_read_file(const char *path, size_t max, size_t *len_p, char *err,
                         size_t errlen)
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
        n = fread(data + len, 1, cap - len - 1, f);
        len += n;
        if (len > max) {
            snprintf(err, errlen,
                     "%s:1:1: file too large (more than %zu "
                     "bytes)",
                     path, max);
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

/* ----------------------------------------------------------------- base64 */

static const char orc_util_b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int orc_util_buf_append(orc_util_buf_t *b, const void *data, size_t len)
{
    size_t cap;
    char *p;

    if ((b->max > 0) && ((len > b->max) || (b->len > b->max - len))) {
        b->overflow = 1;
        return -1;
    }
    if (b->len + len + 1 > b->cap) {
        cap = (b->cap == 0) ? 1024 : b->cap;
        while (cap < b->len + len + 1) {
            cap *= 2;
        }
        p = realloc(b->data, cap);
        if (p == NULL) {
            b->overflow = 1;
            return -1;
        }
        b->data = p;
        b->cap  = cap;
    }
    if (len > 0) {
        memcpy(b->data + b->len, data, len);
    }
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

size_t orc_util_buf_curl_write(char *ptr, size_t size, size_t nmemb, void *buf)
{
    size_t len = size * nmemb;

    return orc_util_buf_append(buf, ptr, len) ? 0 : len;
}

char *orc_util_b64_encode(const void *data, size_t length)
{
    const unsigned char *in = data;
    size_t out_len          = 4 * ((length + 2) / 3);
    char *out, *p;
    uint32_t v;
    size_t i;

    if (length > (SIZE_MAX / 4) * 3 - 3) {
        return NULL;
    }

    out = malloc(out_len + 1);
    if (out == NULL) {
        return NULL;
    }

    p = out;
    for (i = 0; i + 2 < length; i += 3) {
        v    = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        *p++ = orc_util_b64_alphabet[(v >> 18) & 63];
        *p++ = orc_util_b64_alphabet[(v >> 12) & 63];
        *p++ = orc_util_b64_alphabet[(v >> 6) & 63];
        *p++ = orc_util_b64_alphabet[v & 63];
    }

    if (i < length) {
        v = (uint32_t)in[i] << 16;
        if (i + 1 < length) {
            v |= (uint32_t)in[i + 1] << 8;
        }
        *p++ = orc_util_b64_alphabet[(v >> 18) & 63];
        *p++ = orc_util_b64_alphabet[(v >> 12) & 63];
        *p++ = (i + 1 < length) ? orc_util_b64_alphabet[(v >> 6) & 63] : '=';
        *p++ = '=';
    }

    *p = '\0';
    return out;
}

static int orc_util_b64_value(char c)
{
    if ((c >= 'A') && (c <= 'Z')) {
        return c - 'A';
    } else if ((c >= 'a') && (c <= 'z')) {
        return c - 'a' + 26;
    } else if ((c >= '0') && (c <= '9')) {
        return c - '0' + 52;
    } else if (c == '+') {
        return 62;
    } else if (c == '/') {
        return 63;
    }
    return -1;
}

int orc_util_b64_decode(const char *text, size_t text_len, void **data_p,
                        size_t *length_p)
{
    unsigned char *out;
    size_t i, out_len, pad;
    int v[4], k;

    if ((text_len % 4) != 0) {
        return -1;
    }

    pad = 0;
    if ((text_len > 0) && (text[text_len - 1] == '=')) {
        pad = ((text_len > 1) && (text[text_len - 2] == '=')) ? 2 : 1;
    }

    out_len = (text_len / 4) * 3 - pad;
    out     = malloc(out_len + 1); /* +1: never malloc(0), and NUL-terminate */
    if (out == NULL) {
        return -2;
    }

    for (i = 0; i < text_len; i += 4) {
        for (k = 0; k < 4; ++k) {
            if ((text[i + k] == '=') && (i + 4 == text_len) &&
                (k >= 4 - (int)pad)) {
                v[k] = 0;
                continue;
            }
            v[k] = orc_util_b64_value(text[i + k]);
            if (v[k] < 0) {
                free(out);
                return -1;
            }
        }

        out[(i / 4) * 3] = (unsigned char)((v[0] << 2) | (v[1] >> 4));
        if ((i / 4) * 3 + 1 < out_len) {
            out[(i / 4) * 3 + 1] =
                (unsigned char)(((v[1] & 15) << 4) | (v[2] >> 2));
        }
        if ((i / 4) * 3 + 2 < out_len) {
            out[(i / 4) * 3 + 2] = (unsigned char)(((v[2] & 3) << 6) | v[3]);
        }
    }

    /* canonical encoding only: the bits dropped by the padding are zero */
    if (((pad == 1) && ((v[2] & 3) != 0)) ||
        ((pad == 2) && ((v[1] & 15) != 0))) {
        free(out);
        return -1;
    }

    out[out_len] = '\0';
    *data_p      = out;
    *length_p    = out_len;
    return 0;
}
