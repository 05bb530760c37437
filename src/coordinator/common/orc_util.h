/*
 * orc coordinator helpers shared by orcd, its store, the client library and
 * orcctl: the monotonic clock, job-name and kv-key validation, strict number
 * and duration parsing, reading whole files and token files, reply buffers,
 * base64.
 *
 * Private: compiled into each of them (liborcutil.la, a convenience library)
 * with hidden visibility, so the client library does not export these names.
 * Every function is thread-safe and reentrant.
 */
#ifndef ORC_UTIL_H_
#define ORC_UTIL_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ORC_UTIL_HIDDEN __attribute__((visibility("hidden")))

/* Longest job name and kv key */
#define ORC_UTIL_NAME_MAX 128

/* CLOCK_MONOTONIC */
ORC_UTIL_HIDDEN uint64_t orc_util_now_ns(void);
ORC_UTIL_HIDDEN uint64_t orc_util_now_ms(void);

/*
 * A job name: 1..ORC_UTIL_NAME_MAX characters of [A-Za-z0-9._-], not "." or
 * "..". With is_key (kv keys) '/' is allowed too, but no leading or trailing
 * '/', no "//" and no "..". s need not be NUL-terminated; a NUL inside the
 * first len bytes makes it invalid.
 */
ORC_UTIL_HIDDEN int orc_util_name_valid(const char *s, size_t len, int is_key);

/* Decimal digits only (no sign, space or suffix), value fits in 64 bits.
 * 0 and *value_p set, or -1. */
ORC_UTIL_HIDDEN int orc_util_parse_u64(const char *s, uint64_t *value_p);

/* A duration in seconds: at most 16 digits with at most one '.' ("5", "0.25"),
 * no more than max. 0 and *seconds_p set, or -1. */
ORC_UTIL_HIDDEN int orc_util_parse_seconds(const char *s, double max,
                                           double *seconds_p);

/*
 * The whole file, NUL-terminated (*len_p bytes before the NUL), or NULL with
 * "PATH: reason" in err when it cannot be opened or read, or holds more than
 * max bytes.
 */
ORC_UTIL_HIDDEN char *orc_util_read_file(const char *path, size_t max,
                                         size_t *len_p, char *err,
                                         size_t errlen);

/* The first line of a token file, whitespace-trimmed and non-empty:
 * malloc'ed in *token_p (free() it), or -1 with the reason in err. */
ORC_UTIL_HIDDEN int orc_util_read_token_file(const char *path, char **token_p,
                                             char *err, size_t errlen);

/*
 * Base64 (RFC 4648, padded). encode: malloc'ed NUL-terminated text or NULL
 * (no memory). decode: 0 and a malloc'ed buffer (NUL-terminated beyond
 * *length_p), -1 on malformed or non-canonical input, -2 without memory.
 */
/*
 * A reply being received (an HTTP body, a stream's bytes): data holds len
 * bytes and a NUL after them. max bounds len (0: no bound); an append past
 * it, or without memory, sets overflow and fails. Zero-initialise it (max
 * set), free(data) when done.
 */
typedef struct orc_util_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
    int overflow;
} orc_util_buf_t;

/* Append len bytes: 0, or -1 with overflow set */
ORC_UTIL_HIDDEN int orc_util_buf_append(orc_util_buf_t *b, const void *data,
                                        size_t len);
/* The same as a libcurl CURLOPT_WRITEFUNCTION (CURLOPT_WRITEDATA: the
 * orc_util_buf_t): the bytes taken, 0 to abort the transfer */
ORC_UTIL_HIDDEN size_t orc_util_buf_curl_write(char *ptr, size_t size,
                                               size_t nmemb, void *buf);

ORC_UTIL_HIDDEN char *orc_util_b64_encode(const void *data, size_t length);
ORC_UTIL_HIDDEN int orc_util_b64_decode(const char *text, size_t text_len,
                                        void **data_p, size_t *length_p);

#ifdef __cplusplus
}
#endif

#endif
