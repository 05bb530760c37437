/*
 * Helpers shared by the softnic test suite (test_softnic) and its helper
 * process (softnic_peer): the byte pattern used to fill and verify memory,
 * and the "key=value" line format of the command channel between them.
 *
 * Command channel: the test writes one line per command to the peer's
 * socket; the peer answers with exactly one line that starts with "OK" or
 * "ERR", followed by space-separated key=value fields. Completions are
 * reported as repeated "wc=wr_id:status:opcode:byte_len:imm:wc_flags" fields.
 */
#ifndef ORC_TEST_SOFTNIC_UTIL_H_
#define ORC_TEST_SOFTNIC_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace softnic_test
{

/* Byte i of the pattern with the given seed. Position-relative, so data
 * moved by WRITE/READ from one offset to another still verifies. */
static inline uint8_t pattern_byte(uint32_t seed, size_t i)
{
    uint64_t x =
        (uint64_t)seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return (uint8_t)(x ^ (x >> 17) ^ seed);
}

typedef std::map<std::string, std::string> kv_t;

/* Split "word k1=v1 k2=v2 wc=a wc=b" into the first word, a key/value map
 * (last value wins) and the list of every "wc=" value. */
static inline void parse_line(const std::string &line, std::string *head,
                              kv_t *kv, std::vector<std::string> *wcs)
{
    std::istringstream in(line);
    std::string tok;
    bool first = true;

    while (in >> tok) {
        if (first) {
            *head = tok;
            first = false;
            continue;
        }
        size_t eq = tok.find('=');
        if (eq == std::string::npos) {
            (*kv)[tok] = "";
            continue;
        }
        std::string k = tok.substr(0, eq), v = tok.substr(eq + 1);
        if ((k == "wc") && (wcs != NULL)) {
            wcs->push_back(v);
        } else {
            (*kv)[k] = v;
        }
    }
}

static inline std::string to_hex(const void *buf, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p           = (const uint8_t *)buf;
    std::string s;
    for (size_t i = 0; i < len; ++i) {
        s += digits[p[i] >> 4];
        s += digits[p[i] & 0xf];
    }
    return s;
}

/* One hex digit's value, or -1 */
static inline int hex_digit(char c)
{
    if ((c >= '0') && (c <= '9'))
        return c - '0';
    if ((c >= 'a') && (c <= 'f'))
        return c - 'a' + 10;
    if ((c >= 'A') && (c <= 'F'))
        return c - 'A' + 10;
    return -1;
}

/* (digit by digit, not sscanf: a frame of a few MiB, as the hostile
 * REQ_DATA cases send, decodes in milliseconds) */
static inline bool from_hex(const std::string &s, std::vector<uint8_t> *out)
{
    if (s.size() % 2) {
        return false;
    }
    out->clear();
    out->reserve(s.size() / 2);
    for (size_t i = 0; i < s.size(); i += 2) {
        int hi = hex_digit(s[i]), lo = hex_digit(s[i + 1]);
        if ((hi < 0) || (lo < 0)) {
            return false;
        }
        out->push_back((uint8_t)((hi << 4) | lo));
    }
    return true;
}

} /* namespace softnic_test */

#endif
