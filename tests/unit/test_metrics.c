/*
 * test_metrics.c - registration, updates and the Prometheus text rendering.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "run_tests.h"

START_TEST(counters_render_with_help_and_type_once)
{
    struct metric *a, *b;
    char *text;

    metrics_reset_for_tests();
    a = metrics_counter("jobs_total", "kind=\"a\"", "Jobs done");
    b = metrics_counter("jobs_total", "kind=\"b\"", "Jobs done");
    metrics_add(a, 3);
    metrics_inc(b);
    text = metrics_render(NULL);
    ck_assert_ptr_nonnull(strstr(text, "# TYPE jobs_total counter\n"));
    ck_assert_ptr_eq(strstr(text, "# TYPE jobs_total"), strstr(text, "# TYPE jobs_total counter"));
    ck_assert_ptr_null(strstr(strstr(text, "# TYPE jobs_total") + 1, "# TYPE jobs_total"));
    ck_assert_ptr_nonnull(strstr(text, "jobs_total{kind=\"a\"} 3\n"));
    ck_assert_ptr_nonnull(strstr(text, "jobs_total{kind=\"b\"} 1\n"));
    free(text);
}
END_TEST

START_TEST(registering_twice_returns_the_same_metric)
{
    metrics_reset_for_tests();
    ck_assert_ptr_eq(metrics_gauge("up", NULL, "x"), metrics_gauge("up", NULL, "x"));
    ck_assert_ptr_null(metrics_gauge("9bad name", NULL, "x"));
    metrics_set(metrics_gauge("up", NULL, "x"), 7);
    ck_assert_int_eq(metrics_value(metrics_gauge("up", NULL, "x")), 7);
    /* Updates on a metric that failed to register are harmless. */
    metrics_inc(NULL);
}
END_TEST

START_TEST(a_shared_gauge_sums_each_part_and_renders_negative_steps_right)
{
    struct metric *lag;
    char *text;

    metrics_reset_for_tests();
    lag = metrics_gauge("lag", NULL, "Lag");
    metrics_gauge_add(lag, 5);  /* one part reports 5 */
    metrics_gauge_add(lag, 3);  /* another reports 3 */
    metrics_gauge_add(lag, -4); /* the first falls to 1 */
    ck_assert_int_eq(metrics_value(lag), 4);
    metrics_gauge_add(lag, -1);
    metrics_gauge_add(lag, -3);
    ck_assert_int_eq(metrics_value(lag), 0);
    metrics_gauge_add(lag, -2);
    text = metrics_render(NULL);
    ck_assert_ptr_nonnull(strstr(text, "lag -2\n"));
    free(text);
    metrics_gauge_add(NULL, 1);
}
END_TEST

START_TEST(histogram_buckets_are_cumulative)
{
    struct metric *h;
    char *text;

    metrics_reset_for_tests();
    h = metrics_histogram("latency_ms", NULL, "Latency");
    metrics_observe_ms(h, 0.2);
    metrics_observe_ms(h, 3);
    metrics_observe_ms(h, 20000);
    text = metrics_render(NULL);
    ck_assert_ptr_nonnull(strstr(text, "latency_ms_bucket{le=\"0.5\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "latency_ms_bucket{le=\"5\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(text, "latency_ms_bucket{le=\"10000\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(text, "latency_ms_bucket{le=\"+Inf\"} 3\n"));
    ck_assert_ptr_nonnull(strstr(text, "latency_ms_count 3\n"));
    ck_assert_ptr_nonnull(strstr(text, "latency_ms_sum 20003.200\n"));
    free(text);
}
END_TEST

static atomic_int observing;

/* Observes values past every finite bound but the last, until told to stop. */
static void *observe_until_stopped(void *arg)
{
    while (atomic_load(&observing))
        metrics_observe_ms(arg, 9000);
    return NULL;
}

/* The value of series (a whole line's name part, e.g. "h_ms_count") in text. */
static long long series_value(const char *text, const char *series)
{
    const char *at = strstr(text, series);

    ck_assert_ptr_nonnull(at);
    return atoll(at + strlen(series));
}

START_TEST(a_histogram_rendered_while_observed_stays_consistent)
{
    pthread_t threads[3];
    struct metric *h;

    metrics_reset_for_tests();
    h = metrics_histogram("busy_ms", NULL, "Busy");
    atomic_store(&observing, 1);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_create(&threads[i], NULL, observe_until_stopped, h), 0);
    for (int i = 0; i < 20000; i++) {
        char *text = metrics_render(NULL);
        long long finite = series_value(text, "busy_ms_bucket{le=\"10000\"} ");
        long long inf = series_value(text, "busy_ms_bucket{le=\"+Inf\"} ");
        long long count = series_value(text, "busy_ms_count ");

        free(text);
        ck_assert_msg(finite <= inf && inf == count,
                      "render %d: le=10000 %lld, +Inf %lld, count %lld", i, finite, inf, count);
    }
    atomic_store(&observing, 0);
    for (int i = 0; i < 3; i++)
        pthread_join(threads[i], NULL);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        counters_render_with_help_and_type_once,
        registering_twice_returns_the_same_metric,
        a_shared_gauge_sums_each_part_and_renders_negative_steps_right,
        histogram_buckets_are_cumulative,
        a_histogram_rendered_while_observed_stays_consistent,
    };

    return run_tests("metrics", "core", tests, sizeof(tests) / sizeof(tests[0]));
}
