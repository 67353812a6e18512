#include "common/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = LOG_INFO;
static atomic_int log_to_syslog = 0;

static const char *const log_level_names[] = {
    [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
    [LOG_ERR] = "error",   [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
    [LOG_INFO] = "info",   [LOG_DEBUG] = "debug",
};

void log_init(const char *ident, int level, int to_syslog)
{
    atomic_store(&log_level, level);
    if (to_syslog && !atomic_load(&log_to_syslog)) {
        openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
    }
    atomic_store(&log_to_syslog, to_syslog);
}

int log_enabled(int level)
{
    return level <= atomic_load(&log_level);
}

void log_vmsg(int level, const char *prefix, const char *fmt, va_list ap)
{
    char line[LOG_MAX_LINE_LEN];
    size_t off = 0;
    int n;

    if (!log_enabled(level)) {
        return;
    }
    if (level < LOG_EMERG || level > LOG_DEBUG) {
        level = LOG_ERR;
    }
    if (!atomic_load(&log_to_syslog)) {
        struct timeval tv;
        struct tm tm;
        gettimeofday(&tv, NULL);
        gmtime_r(&tv.tv_sec, &tm);
        off = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        n = snprintf(line + off, sizeof(line) - off, ".%06ldZ %s: ", (long)tv.tv_usec,
                     log_level_names[level]);
        off += n > 0 ? (size_t)n : 0;
    }
    if (prefix != NULL && off < sizeof(line)) {
        n = snprintf(line + off, sizeof(line) - off, "%s", prefix);
        off += n > 0 ? (size_t)n : 0;
    }
    if (off < sizeof(line)) {
        n = vsnprintf(line + off, sizeof(line) - off, fmt, ap);
        off += n > 0 ? (size_t)n : 0;
    }
    if (off >= sizeof(line) - 1) {
        off = sizeof(line) - 2; /* cut, keep room for the newline */
    }
    /* Peer-controlled text may reach a log line (a command name, say): never
     * let it forge a second line or control the terminal. */
    for (size_t i = 0; i < off; i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch < 0x20 || ch == 0x7f) {
            line[i] = '?';
        }
    }
    if (atomic_load(&log_to_syslog)) {
        line[off] = '\0';
        syslog(level, "%s", line);
    } else {
        line[off++] = '\n';
        /* one write(2) per line keeps lines of threads apart */
        ssize_t w = write(STDERR_FILENO, line, off);
        (void)w;
    }
}

void log_msg(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, NULL, fmt, ap);
    va_end(ap);
}
