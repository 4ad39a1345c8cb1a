/*
 * log.h - structured, one-line-per-event logging (logfmt: key=value pairs).
 *
 * Every line carries ts, level, service and msg; callers add their own
 * key=value pairs inside the message. The level is tested before anything is
 * formatted, so disabled debug logging costs one comparison. librdkafka's and
 * libpq's own messages are routed here through log_rdkafka_cb() and
 * log_pq_notice().
 */
#ifndef SHARED_LOG_H
#define SHARED_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* Sets the service name printed on every line and the minimum level.
 * service is copied. Safe to call again (tests do). */
void log_init(const char *service, enum log_level min_level);

/* Parses "debug", "info", "warn", "error" (case-insensitive).
 * Returns 0 and sets *out, or -1 if the name is unknown. */
int log_level_parse(const char *name, enum log_level *out);

/* Returns non-zero if a message of this level would be printed. */
int log_enabled(enum log_level level);

/* Writes one line to stderr. fmt is the msg part; it should quote free text
 * and may append key=value pairs. Thread-safe (one write(2) per line). */
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vwrite(enum log_level level, const char *fmt, va_list ap);

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_DEBUG))                                                          \
            log_write(LOG_LEVEL_DEBUG, __VA_ARGS__);                                               \
    } while (0)
#define log_info(...)                                                                              \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_INFO))                                                           \
            log_write(LOG_LEVEL_INFO, __VA_ARGS__);                                                \
    } while (0)
#define log_warn(...)                                                                              \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_WARN))                                                           \
            log_write(LOG_LEVEL_WARN, __VA_ARGS__);                                                \
    } while (0)
#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)

/* Copies len bytes of text into out (cap bytes, NUL-terminated) for use
 * inside a quoted value: '"' and '\\' are escaped with a backslash, other
 * control bytes become spaces, and a cut never splits an escape. libpq's
 * messages quote names ('relation "inbox"'), which would otherwise end the
 * value early. Returns out. */
char *log_quote(char *out, size_t cap, const char *text, size_t len);

/* librdkafka log callback: install with rd_kafka_conf_set_log_cb(). The
 * rd_kafka_t pointer is declared void here so this header does not pull in
 * librdkafka. */
void log_rdkafka_cb(const void *rk, int syslog_level, const char *facility, const char *buf);

/* libpq notice processor: install with PQsetNoticeProcessor(conn,
 * log_pq_notice, NULL). */
void log_pq_notice(void *arg, const char *message);

#endif
