/*
 * softnic's configuration from strings (softnic_config_set) and from the
 * environment (softnic_config_from_env): strict parsing, a bad value is an
 * error with a message saying what was expected, never ignored.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_int.h"

#include <errno.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *sn_log_level_names[] = {"error", "warn", "info", "debug"};

#define SN_NUM_LOG_LEVELS \
    (sizeof(sn_log_level_names) / sizeof(sn_log_level_names[0]))

/* 0, or -1 when value is not one the setting takes */
typedef int (*sn_config_parse_fn_t)(softnic_config_t *config,
                                    const char *value);

typedef struct sn_config_knob {
    const char *name;
    const char *expected; /* the values it takes, for messages */
    sn_config_parse_fn_t parse;
} sn_config_knob_t;

static int sn_config_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int sn_config_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    if ((err != NULL) && (err_len > 0)) {
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return EINVAL;
}

/* y, yes, on, 1 / n, no, off, 0 (any case) */
static int sn_config_bool(const char *value, int *flag_p)
{
    static const char *yes[] = {"y", "yes", "on", "1"};
    static const char *no[]  = {"n", "no", "off", "0"};
    unsigned i;

    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); ++i) {
        if (!strcasecmp(value, yes[i])) {
            *flag_p = 1;
            return 0;
        }
        if (!strcasecmp(value, no[i])) {
            *flag_p = 0;
            return 0;
        }
    }
    return -1;
}

static int sn_config_no_cma(softnic_config_t *config, const char *value)
{
    return sn_config_bool(value, &config->no_cma);
}

static int sn_config_no_ring(softnic_config_t *config, const char *value)
{
    return sn_config_bool(value, &config->no_ring);
}

static int sn_config_log(softnic_config_t *config, const char *value)
{
    softnic_log_level_t level;

    if (!strcasecmp(value, "none")) {
        config->log_level = SOFTNIC_LOG_NONE;
        return 0;
    }
    for (level = SOFTNIC_LOG_ERROR; level <= SOFTNIC_LOG_DEBUG; ++level) {
        if (!strcasecmp(value, sn_log_level_names[level])) {
            config->log_level = level;
            return 0;
        }
    }
    return -1;
}

/* Comma-separated interface names, each 1 .. IF_NAMESIZE - 1 characters;
 * "" selects every interface. The value itself is kept (not copied). */
static int sn_config_ifaces(softnic_config_t *config, const char *value)
{
    const char *p, *end;

    for (p = value; *p != '\0'; p = (*end == ',') ? end + 1 : end) {
        end = strchr(p, ',');
        if (end == NULL) {
            end = p + strlen(p);
        }
        if ((end == p) || ((size_t)(end - p) >= IF_NAMESIZE) ||
            ((*end == ',') && (end[1] == '\0'))) {
            return -1;
        }
    }
    config->ifaces = value;
    return 0;
}

static const sn_config_knob_t sn_config_knobs[] = {
    {"IFACES",
     "comma-separated network interface names (\"lo,eth0\"), or "
     "nothing for all",
     sn_config_ifaces},
    {"NO_CMA", "one of y, yes, on, 1, n, no, off, 0", sn_config_no_cma},
    {"NO_RING", "one of y, yes, on, 1, n, no, off, 0", sn_config_no_ring},
    {"LOG", "one of none, error, warn, info, debug", sn_config_log},
};

#define SN_NUM_KNOBS (sizeof(sn_config_knobs) / sizeof(sn_config_knobs[0]))

/* EINVAL, err = the unknown name and the known ones */
static int sn_config_unknown(const char *name, char *err, size_t err_len)
{
    size_t len;
    unsigned i;

    if ((err == NULL) || (err_len == 0)) {
        return EINVAL;
    }
    len = snprintf(err, err_len, "unknown setting '%s': expected one of", name);
    for (i = 0; (i < SN_NUM_KNOBS) && (len < err_len); ++i) {
        len += snprintf(err + len, err_len - len, "%s %s", (i > 0) ? "," : "",
                        sn_config_knobs[i].name);
    }
    return EINVAL;
}

/* Apply value to config; on EINVAL, err says what the setting takes */
static int sn_config_apply(const sn_config_knob_t *knob,
                           softnic_config_t *config, const char *value,
                           char *err, size_t err_len)
{
    if (value == NULL) {
        return sn_config_err(err, err_len, "no value: expected %s",
                             knob->expected);
    }
    if (knob->parse(config, value) != 0) {
        return sn_config_err(err, err_len, "invalid value '%s': expected %s",
                             value, knob->expected);
    }
    return 0;
}

int softnic_config_set(softnic_config_t *config, const char *name,
                       const char *value, char *err, size_t err_len)
{
    unsigned i;

    for (i = 0; i < SN_NUM_KNOBS; ++i) {
        if (!strcmp(name, sn_config_knobs[i].name)) {
            return sn_config_apply(&sn_config_knobs[i], config, value, err,
                                   err_len);
        }
    }
    return sn_config_unknown(name, err, err_len);
}

int softnic_config_from_env(softnic_config_t *config, const char *prefix,
                            char *err, size_t err_len)
{
    softnic_config_t parsed = *config;
    char var[64], why[192];
    const char *value;
    unsigned i;
    int ret;

    for (i = 0; i < SN_NUM_KNOBS; ++i) {
        if (snprintf(var, sizeof(var), "%s%s", prefix,
                     sn_config_knobs[i].name) >= (int)sizeof(var)) {
            return sn_config_err(err, err_len, "prefix '%s' is too long",
                                 prefix);
        }
        value = getenv(var);
        if (value == NULL) {
            continue;
        }
        ret = sn_config_apply(&sn_config_knobs[i], &parsed, value, why,
                              sizeof(why));
        if (ret != 0) {
            return sn_config_err(err, err_len, "%s: %s", var, why);
        }
    }
    *config = parsed; /* all or nothing */
    return 0;
}

const char *softnic_log_level_name(softnic_log_level_t level)
{
    if (level == SOFTNIC_LOG_NONE) {
        return "none";
    }
    if ((level < SOFTNIC_LOG_ERROR) || ((unsigned)level >= SN_NUM_LOG_LEVELS)) {
        return "unknown";
    }
    return sn_log_level_names[level];
}
