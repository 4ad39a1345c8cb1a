/*
 * test_backoff.c - the retry schedule doubles, is capped, and its jitter
 * stays within [cap/2, cap]; deadlines for timed waits are well formed.
 */
#include <check.h>
#include <limits.h>
#include <time.h>

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
    /* A maximum near the type's end: capped there, not overflowed. */
    ck_assert_int_eq(backoff_cap(1, LONG_MAX, 100), LONG_MAX);
    ck_assert_int_eq(backoff_cap(3, LONG_MAX - 1, 70), LONG_MAX - 1);
}
END_TEST

START_TEST(a_deadline_is_well_formed_and_never_in_the_future_for_a_negative_wait)
{
    struct timespec before, at, after;

    clock_gettime(CLOCK_REALTIME, &before);
    at = backoff_deadline(CLOCK_REALTIME, -500);
    clock_gettime(CLOCK_REALTIME, &after);
    ck_assert(at.tv_nsec >= 0 && at.tv_nsec < 1000000000L);
    ck_assert(at.tv_sec > before.tv_sec ||
              (at.tv_sec == before.tv_sec && at.tv_nsec >= before.tv_nsec));
    ck_assert(at.tv_sec < after.tv_sec ||
              (at.tv_sec == after.tv_sec && at.tv_nsec <= after.tv_nsec));
    for (long ms = 0; ms < 3000; ms += 137) {
        at = backoff_deadline(CLOCK_REALTIME, ms);
        ck_assert(at.tv_nsec >= 0 && at.tv_nsec < 1000000000L);
    }
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
        a_deadline_is_well_formed_and_never_in_the_future_for_a_negative_wait,
    };

    return run_tests("backoff", "core", tests, sizeof(tests) / sizeof(tests[0]));
}
