/*
 * metrics.c - a fixed-size registry of atomic metrics and its Prometheus
 * renderer. Histogram sums are kept in microseconds as integers so every
 * update stays a single atomic add.
 */
#define _POSIX_C_SOURCE 200809L
#include "metrics.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM };

struct metric {
    enum metric_kind kind;
    char name[96];
    char labels[160];
    char help[160];
    atomic_int_fast64_t value;                    /* counter, gauge; histogram count */
    atomic_int_fast64_t sum_us;                   /* histogram */
    atomic_int_fast64_t buckets[METRICS_BUCKETS]; /* histogram, non-cumulative */
};

static const double bucket_bounds_ms[METRICS_BUCKETS] = {0.5, 1,   2.5, 5,    10,   25,
                                                         50,  100, 250, 1000, 2500, 10000};

static struct metric registry[METRICS_MAX];
static int registry_len;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;

static int valid_name(const char *name)
{
    if (name == NULL || !(isalpha((unsigned char)name[0]) || name[0] == '_'))
        return 0;
    for (const char *p = name; *p; p++) {
        if (!(isalnum((unsigned char)*p) || *p == '_' || *p == ':'))
            return 0;
    }
    return 1;
}

static struct metric *metrics_register(enum metric_kind kind, const char *name, const char *labels,
                                       const char *help)
{
    struct metric *found = NULL;

    if (!valid_name(name) || strlen(name) >= sizeof(registry[0].name) ||
        (labels && strlen(labels) >= sizeof(registry[0].labels)))
        return NULL;
    pthread_mutex_lock(&registry_lock);
    for (int i = 0; i < registry_len; i++) {
        if (strcmp(registry[i].name, name) == 0 &&
            strcmp(registry[i].labels, labels ? labels : "") == 0) {
            found = &registry[i];
            break;
        }
    }
    if (found == NULL && registry_len < METRICS_MAX) {
        found = &registry[registry_len++];
        memset(found, 0, sizeof(*found));
        found->kind = kind;
        snprintf(found->name, sizeof(found->name), "%s", name);
        snprintf(found->labels, sizeof(found->labels), "%s", labels ? labels : "");
        snprintf(found->help, sizeof(found->help), "%s", help ? help : "");
    }
    pthread_mutex_unlock(&registry_lock);
    return found;
}

struct metric *metrics_counter(const char *name, const char *labels, const char *help)
{
    return metrics_register(KIND_COUNTER, name, labels, help);
}

struct metric *metrics_gauge(const char *name, const char *labels, const char *help)
{
    return metrics_register(KIND_GAUGE, name, labels, help);
}

struct metric *metrics_histogram(const char *name, const char *labels, const char *help)
{
    return metrics_register(KIND_HISTOGRAM, name, labels, help);
}

void metrics_gauge_add(struct metric *m, int64_t delta)
{
    if (m)
        atomic_fetch_add(&m->value, (int_fast64_t)delta);
}

void metrics_add(struct metric *m, uint64_t delta)
{
    metrics_gauge_add(m, (int64_t)delta);
}

void metrics_inc(struct metric *m)
{
    metrics_add(m, 1);
}

void metrics_set(struct metric *m, int64_t value)
{
    if (m)
        atomic_store(&m->value, value);
}

void metrics_observe_ms(struct metric *m, double ms)
{
    int i;

    if (m == NULL)
        return;
    for (i = 0; i < METRICS_BUCKETS - 1 && ms > bucket_bounds_ms[i]; i++)
        ;
    /* The count before the bucket, and render_histogram reads them the
     * other way round: a page rendered meanwhile never shows a bucket above
     * +Inf. Values beyond the last bound only count towards +Inf. */
    atomic_fetch_add(&m->value, 1);
    atomic_fetch_add(&m->sum_us, (int_fast64_t)(ms * 1000.0));
    if (ms <= bucket_bounds_ms[i])
        atomic_fetch_add(&m->buckets[i], 1);
}

int64_t metrics_value(const struct metric *m)
{
    return m ? (int64_t)atomic_load(&((struct metric *)m)->value) : 0;
}

struct text_buf {
    char *data;
    size_t len, cap;
    int failed;
};

static void buf_printf(struct text_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void buf_printf(struct text_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        char *grown = realloc(b->data, b->cap * 2 + (size_t)n);
        if (grown == NULL) {
            b->failed = 1;
            return;
        }
        b->data = grown;
        b->cap = b->cap * 2 + (size_t)n;
    }
}

static const char *kind_name(enum metric_kind kind)
{
    return kind == KIND_COUNTER ? "counter" : kind == KIND_GAUGE ? "gauge" : "histogram";
}

static void render_histogram(struct text_buf *b, struct metric *m)
{
    int64_t cumulative = 0, count;
    const char *sep = m->labels[0] ? "," : "";

    for (int i = 0; i < METRICS_BUCKETS; i++) {
        cumulative += atomic_load(&m->buckets[i]);
        buf_printf(b, "%s_bucket{%s%sle=\"%g\"} %lld\n", m->name, m->labels, sep,
                   bucket_bounds_ms[i], (long long)cumulative);
    }
    /* Read after the buckets, once: +Inf and _count are the same number. */
    count = atomic_load(&m->value);
    buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %lld\n", m->name, m->labels, sep, (long long)count);
    buf_printf(b, "%s_sum%s%s%s %.3f\n", m->name, m->labels[0] ? "{" : "", m->labels,
               m->labels[0] ? "}" : "", (double)atomic_load(&m->sum_us) / 1000.0);
    buf_printf(b, "%s_count%s%s%s %lld\n", m->name, m->labels[0] ? "{" : "", m->labels,
               m->labels[0] ? "}" : "", (long long)count);
}

char *metrics_render(size_t *len)
{
    struct text_buf b = {malloc(4096), 0, 4096, 0};

    if (b.data == NULL)
        return NULL;
    b.data[0] = '\0';
    pthread_mutex_lock(&registry_lock);
    for (int i = 0; i < registry_len; i++) {
        struct metric *m = &registry[i];
        int first = 1;

        /* HELP and TYPE once per name, before its first series. */
        for (int j = 0; j < i; j++) {
            if (strcmp(registry[j].name, m->name) == 0)
                first = 0;
        }
        if (first)
            buf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
                       kind_name(m->kind));
        if (m->kind == KIND_HISTOGRAM)
            render_histogram(&b, m);
        else
            buf_printf(&b, "%s%s%s%s %lld\n", m->name, m->labels[0] ? "{" : "", m->labels,
                       m->labels[0] ? "}" : "", (long long)atomic_load(&m->value));
    }
    pthread_mutex_unlock(&registry_lock);
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.data;
}

void metrics_reset_for_tests(void)
{
    pthread_mutex_lock(&registry_lock);
    registry_len = 0;
    pthread_mutex_unlock(&registry_lock);
}
