/*
 * softnic's log: each message goes to the log callback of the device's
 * configuration, or to stderr without one, if its level is within the
 * configured log_level (softnic.h).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "sn_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

static void sn_vlog(const softnic_config_t *config, const char *dev_name,
                    softnic_log_level_t level, const char *fmt, va_list ap)
{
    char buf[256];

    vsnprintf(buf, sizeof(buf), fmt, ap);
    if (config->log_fn != NULL) {
        config->log_fn(config->log_arg, level, dev_name, buf);
    } else {
        fprintf(stderr, "[softnic %d %s] %s\n", (int)getpid(), dev_name, buf);
    }
}

void sn_log(sn_inst_t *inst, softnic_log_level_t level, const char *fmt, ...)
{
    va_list ap;

    if (level > inst->config.log_level) {
        return;
    }
    va_start(ap, fmt);
    sn_vlog(&inst->config, inst->super.name, level, fmt, ap);
    va_end(ap);
}

void sn_log_cfg(const softnic_config_t *config, softnic_log_level_t level,
                const char *fmt, ...)
{
    static const softnic_config_t defaults;
    va_list ap;

    if (config == NULL) {
        config = &defaults;
    }
    if (level > config->log_level) {
        return;
    }
    va_start(ap, fmt);
    sn_vlog(config, "-", level, fmt, ap);
    va_end(ap);
}
