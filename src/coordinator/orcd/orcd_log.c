/*
 * orcd logging: one line per message on stderr, with a UTC timestamp and the
 * level. Messages never contain tokens (callers' contract).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd.h"

#include <errno.h>

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

/* read by every thread, written by main (start-up, SIGHUP): relaxed atomic */
static _Atomic int orcd_log_level = ORCD_LOG_INFO;

void orcd_log_set_level(orcd_log_level_t level)
{
    atomic_store_explicit(&orcd_log_level, (int)level, memory_order_relaxed);
}

int orcd_log_enabled(orcd_log_level_t level)
{
    return (int)level <=
           atomic_load_explicit(&orcd_log_level, memory_order_relaxed);
}

void orcd_vlog(orcd_log_level_t level, const char *fmt, va_list ap)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    char line[1024], stamp[32];
    int saved_errno = errno; /* for %m in fmt */
    struct timeval tv;
    struct tm tm;
    int n;

    if (!orcd_log_enabled(level)) {
        return;
    }
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    n     = snprintf(line, sizeof(line), "%s.%03dZ orcd %s: ", stamp,
                     (int)(tv.tv_usec / 1000), names[level]);
    errno = saved_errno;
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    /* one fprintf per line: stdio locks the stream, lines do not
     * interleave */
    fprintf(stderr, "%s\n", line);
    errno = saved_errno;
}

void orcd_log(orcd_log_level_t level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    orcd_vlog(level, fmt, ap);
    va_end(ap);
}

_Static_assert((int)ORC_STORE_LOG_ERROR == (int)ORCD_LOG_ERROR &&
                   (int)ORC_STORE_LOG_WARN == (int)ORCD_LOG_WARN &&
                   (int)ORC_STORE_LOG_INFO == (int)ORCD_LOG_INFO &&
                   (int)ORC_STORE_LOG_DEBUG == (int)ORCD_LOG_DEBUG,
               "store log levels follow orcd's");

void orcd_log_store(orc_store_log_level_t level, const char *fmt, va_list ap)
{
    orcd_vlog((orcd_log_level_t)level, fmt, ap);
}
