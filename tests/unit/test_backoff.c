/*
 * test_backoff.c - the retry schedule doubles, is capped, and its jitter
 * stays within [cap/2, cap].
 */
#include <check.h>

#include "backoff.h"
#include "run_tests.h"

START_TEST(cap_doubles_until_the_maximum)
{
    ck_assert_int_eq(backoff_cap(100, 5000, 1), 100);
    ck_assert_int_eq(backoff_cap(100, 5000, 2), 200);
    ck_assert_int_eq(backoff_cap(100, 5000, 3), 400);
    ck_assert_int_eq(backoff_cap(100, 5000, 6), 3200);
    ck_assert_int_eq(backoff_cap(100, 5000, 7), 5000);
    ck_assert_int_eq(backoff_cap(100, 5000, 1000), 5000);
}
END_TEST

START_TEST(delays_stay_within_the_jitter_window)
{
    struct backoff b;

    backoff_init(&b, 100, 5000, 42);
    for (unsigned attempt = 1; attempt <= 40; attempt++) {
        long cap = backoff_cap(100, 5000, attempt);
        long delay = backoff_next(&b);

        ck_assert_msg(delay >= cap / 2 && delay <= cap, "attempt %u: %ld not in [%ld, %ld]",
                      attempt, delay, cap / 2, cap);
    }
}
END_TEST

START_TEST(jitter_varies_and_reset_restarts)
{
    struct backoff b;
    long first[20];
    int distinct = 0;

    backoff_init(&b, 1000, 1000, 7);
    for (int i = 0; i < 20; i++)
        first[i] = backoff_next(&b);
    for (int i = 1; i < 20; i++)
        distinct += first[i] != first[0];
    ck_assert_int_gt(distinct, 0);
    backoff_init(&b, 10, 10000, 9);
    for (int i = 0; i < 10; i++)
        backoff_next(&b);
    backoff_reset(&b);
    ck_assert_int_le(backoff_next(&b), 10);
}
END_TEST

START_TEST(bad_bounds_are_clamped)
{
    struct backoff b;

    backoff_init(&b, 0, -5, 1);
    ck_assert_int_ge(b.base_ms, 1);
    ck_assert_int_ge(b.max_ms, b.base_ms);
    ck_assert_int_le(backoff_next(&b), 1);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        cap_doubles_until_the_maximum,
        delays_stay_within_the_jitter_window,
        jitter_varies_and_reset_restarts,
        bad_bounds_are_clamped,
    };

    return run_tests("backoff", "core", tests, sizeof(tests) / sizeof(tests[0]));
}
