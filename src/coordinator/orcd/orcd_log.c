/*
 * orcd logging: one line per message on stderr, with a UTC timestamp and the
 * level. Messages never contain tokens (callers' contract).
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "orcd.h"

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

void orcd_log(orcd_log_level_t level, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    char line[1024], stamp[32];
    struct timeval tv;
    struct tm tm;
    va_list ap;
    int n;

    if (!orcd_log_enabled(level)) {
        return;
    }
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    n = snprintf(line, sizeof(line), "%s.%03dZ orcd %s: ", stamp,
                 (int)(tv.tv_usec / 1000), names[level]);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    /* one fputs per line: stdio locks the stream, lines do not interleave */
    fprintf(stderr, "%s\n", line);
}
