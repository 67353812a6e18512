/* log: one line per event, to stderr or syslog, with levels from <syslog.h>.
 * Thread-safe: each line is formatted into a stack buffer and written with
 * one call.  Callers never pass secrets here (docs/ARCHITECTURE.md, "Secrets"). */
#ifndef IMAPMUX_COMMON_LOG_H
#define IMAPMUX_COMMON_LOG_H

#include <stdarg.h>
#include <syslog.h>

#define LOG_MAX_LINE_LEN 2048 /* bytes of one formatted line; longer is cut */

/* log_init sets the threshold level and the target (to_syslog: 1 for syslog,
 * 0 for stderr).  ident names the program in syslog.  May be called again
 * (reload); not concurrently with itself. */
void log_init(const char *ident, int level, int to_syslog);

/* log_enabled returns 1 if a message at level would be written. */
int log_enabled(int level);

/* log_msg writes one line at level.  Printf-style. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(int level, const char *prefix, const char *fmt, va_list ap);

#endif
