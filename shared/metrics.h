/*
 * metrics.h - process-wide counters, gauges and histograms, rendered in the
 * Prometheus text exposition format for the admin server's /metrics.
 *
 * Metrics are registered once at start-up and never freed; updating one is a
 * lock-free atomic operation, so hot paths may count freely.
 */
#ifndef SHARED_METRICS_H
#define SHARED_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_MAX     128
#define METRICS_BUCKETS 12

struct metric; /* opaque */

/*
 * Registers (or finds, if the same name and labels were registered before) a
 * metric. labels is either NULL or a Prometheus label list without braces,
 * e.g. "topic=\"orders\"". Strings are copied. Returns NULL when the registry
 * is full or the name is not a valid metric name.
 */
struct metric *metrics_counter(const char *name, const char *labels, const char *help);
struct metric *metrics_gauge(const char *name, const char *labels, const char *help);
/* Histogram of durations in milliseconds, with fixed buckets from 0.5 ms to 10 s. */
struct metric *metrics_histogram(const char *name, const char *labels, const char *help);

/* Updates; all accept NULL (a metric that failed to register) and do nothing. */
void metrics_add(struct metric *m, uint64_t delta);
void metrics_inc(struct metric *m);
void metrics_set(struct metric *m, int64_t value);
/* Adds delta (which may be negative) to a gauge that several threads share,
 * each adding the change in its own part. */
void metrics_gauge_add(struct metric *m, int64_t delta);
void metrics_observe_ms(struct metric *m, double ms);

/* Current value of a counter or gauge (for tests and readiness checks). */
int64_t metrics_value(const struct metric *m);

/*
 * Renders every metric into a new NUL-terminated buffer the caller frees with
 * free(). *len receives its length. Returns NULL on allocation failure.
 */
char *metrics_render(size_t *len);

/* Forgets every metric. Only for tests; not thread-safe against updates. */
void metrics_reset_for_tests(void);

#endif
