/*
 * log.c - logfmt lines on stderr, one write(2) each so lines from several
 * threads never interleave.
 */
#define _POSIX_C_SOURCE 200809L
#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048

static char log_service[64] = "unknown";
static atomic_int log_min_level = LOG_LEVEL_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(const char *service, enum log_level min_level)
{
    snprintf(log_service, sizeof(log_service), "%s", service ? service : "unknown");
    atomic_store(&log_min_level, (int)min_level);
}

int log_level_parse(const char *name, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (name && strcasecmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_enabled(enum log_level level)
{
    return (int)level >= atomic_load(&log_min_level);
}

void log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];
    struct timespec now;
    struct tm tm;
    size_t len;
    int n;

    if (!log_enabled(level))
        return;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s service=%s ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 now.tv_nsec / 1000000, level_names[level], log_service);
    if (n < 0)
        return;
    len = (size_t)n;
    n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
    if (n < 0)
        return;
    len += (size_t)n;
    /* A truncated line still ends in a newline so the next one starts clean. */
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    while (len > 0 && line[len - 1] == '\n')
        len--;
    /* One event, one line: messages quoted from libpq run over several. */
    for (size_t i = 0; i < len; i++) {
        if (line[i] == '\n' || line[i] == '\r' || line[i] == '\t')
            line[i] = ' ';
    }
    line[len++] = '\n';
    if (write(STDERR_FILENO, line, len) < 0) {
        /* Nowhere left to report a failed log write. */
    }
}

void log_write(enum log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}

char *log_quote(char *out, size_t cap, const char *text, size_t len)
{
    size_t n = 0;

    if (cap == 0)
        return out;
    for (size_t i = 0; i < len && text[i] != '\0'; i++) {
        unsigned char c = (unsigned char)text[i];
        int escaped = c == '"' || c == '\\';

        if (n + (escaped ? 2 : 1) >= cap)
            break;
        if (escaped)
            out[n++] = '\\';
        out[n++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    out[n] = '\0';
    return out;
}

void log_rdkafka_cb(const void *rk, int syslog_level, const char *facility, const char *buf)
{
    enum log_level level = LOG_LEVEL_DEBUG;
    char detail[1024];

    (void)rk;
    if (syslog_level <= 3)
        level = LOG_LEVEL_ERROR;
    else if (syslog_level == 4)
        level = LOG_LEVEL_WARN;
    else if (syslog_level <= 6)
        level = LOG_LEVEL_INFO;
    if (log_enabled(level))
        log_write(level, "msg=\"librdkafka\" facility=%s detail=\"%s\"", facility,
                  log_quote(detail, sizeof(detail), buf, strlen(buf)));
}

void log_pq_notice(void *arg, const char *message)
{
    size_t len = strlen(message);
    char detail[1024];

    (void)arg;
    /* libpq notices end in a newline; drop it to keep one line per event. */
    while (len > 0 && message[len - 1] == '\n')
        len--;
    log_info("msg=\"postgres notice\" detail=\"%s\"",
             log_quote(detail, sizeof(detail), message, len));
}
