/*
 * test_waiters.c - the api's parked requests (services/api/waiters.c): a
 * park suspends at once and resumes exactly once when its timeout passes,
 * also while the database is unreachable; an early timeout cuts the
 * listener's sleep short; closing resumes everything and refuses new parks;
 * an unregistered waiter is never resumed. Notifications themselves need
 * PostgreSQL and are covered by the integration tests.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <stdatomic.h>
#include <time.h>

#include "api/waiters.h"
#include "backoff.h"
#include "log.h"
#include "run_tests.h"

/* Nothing listens there: the listener keeps failing to connect. */
#define NO_DATABASE "postgresql://127.0.0.1:1/none?connect_timeout=1"

struct parked_request {
    atomic_int suspended, resumed;
    _Atomic double resumed_at_ms;
};

static double now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec * 1000.0 + (double)now.tv_nsec / 1e6;
}

static void suspend(void *arg)
{
    struct parked_request *request = arg;

    atomic_fetch_add(&request->suspended, 1);
}

static void resume(void *arg)
{
    struct parked_request *request = arg;

    atomic_store(&request->resumed_at_ms, now_ms());
    atomic_fetch_add(&request->resumed, 1);
}

/* Waits up to within_ms for request to be resumed; returns 1 if it was. */
static int await_resume(struct parked_request *request, long within_ms)
{
    double until = now_ms() + (double)within_ms;

    while (atomic_load(&request->resumed) == 0 && now_ms() < until)
        backoff_sleep_ms(1);
    return atomic_load(&request->resumed) > 0;
}

static struct waiters *start(void)
{
    struct waiters *waiters;

    log_init("test_waiters", LOG_LEVEL_ERROR); /* the failed connections are expected */
    waiters = waiters_start(NO_DATABASE);
    ck_assert_ptr_nonnull(waiters);
    return waiters;
}

START_TEST(a_park_resumes_once_when_its_timeout_passes)
{
    struct waiters *waiters = start();
    struct parked_request request = {0};
    struct waiter w;
    char answer[WAITER_ANSWER_MAX];
    double parked_at, waited;

    waiter_register(waiters, &w, "order:a");
    parked_at = now_ms();
    ck_assert_int_eq(waiter_park(waiters, &w, 150, suspend, resume, &request), 1);
    ck_assert_int_eq(atomic_load(&request.suspended), 1);
    ck_assert_int_eq(atomic_load(&request.resumed), 0);
    ck_assert(await_resume(&request, 2000));
    waited = atomic_load(&request.resumed_at_ms) - parked_at;
    ck_assert_double_ge(waited, 150.0);
    backoff_sleep_ms(300);
    ck_assert_int_eq(atomic_load(&request.resumed), 1);
    /* A timeout brings no answer: the request reads the row itself. */
    ck_assert_int_eq(waiter_take(waiters, &w, answer, sizeof(answer)), 0);
    waiter_unregister(waiters, &w);
    waiters_stop(waiters);
}
END_TEST

START_TEST(an_earlier_timeout_cuts_the_listeners_sleep_short)
{
    struct waiters *waiters = start();
    struct parked_request slow = {0}, quick = {0};
    struct waiter w_slow, w_quick;
    double parked_at, waited;

    waiter_register(waiters, &w_slow, "order:slow");
    waiter_register(waiters, &w_quick, "order:quick");
    ck_assert_int_eq(waiter_park(waiters, &w_slow, 10000, suspend, resume, &slow), 1);
    /* By now the listener's failed connections are retried about a second
     * apart, and it sleeps in between. */
    backoff_sleep_ms(1500);
    parked_at = now_ms();
    ck_assert_int_eq(waiter_park(waiters, &w_quick, 5, suspend, resume, &quick), 1);
    ck_assert(await_resume(&quick, 2000));
    /* Without a wake-up it would sleep on, up to a second. */
    waited = atomic_load(&quick.resumed_at_ms) - parked_at;
    ck_assert_double_lt(waited, 100.0);
    ck_assert_int_eq(atomic_load(&slow.resumed), 0);
    waiter_unregister(waiters, &w_quick);
    waiter_unregister(waiters, &w_slow);
    waiters_stop(waiters);
}
END_TEST

START_TEST(closing_resumes_every_park_and_refuses_new_ones)
{
    struct waiters *waiters = start();
    struct parked_request first = {0}, second = {0}, late = {0};
    struct waiter w1, w2;

    waiter_register(waiters, &w1, "order:one");
    waiter_register(waiters, &w2, "product:1");
    ck_assert_int_eq(waiter_park(waiters, &w1, 60000, suspend, resume, &first), 1);
    ck_assert_int_eq(waiter_park(waiters, &w2, 60000, suspend, resume, &second), 1);
    waiters_close(waiters);
    ck_assert_int_eq(atomic_load(&first.resumed), 1);
    ck_assert_int_eq(atomic_load(&second.resumed), 1);
    ck_assert_int_eq(waiter_park(waiters, &w1, 60000, suspend, resume, &late), -1);
    ck_assert_int_eq(atomic_load(&late.suspended), 0);
    waiter_unregister(waiters, &w1);
    waiter_unregister(waiters, &w2);
    waiters_stop(waiters);
}
END_TEST

START_TEST(an_unregistered_waiter_is_never_resumed)
{
    struct waiters *waiters = start();
    struct parked_request request = {0}, other = {0};
    struct waiter w, w_other;

    waiter_register(waiters, &w, "order:gone");
    waiter_register(waiters, &w_other, "order:stays");
    ck_assert_int_eq(waiter_park(waiters, &w, 30, suspend, resume, &request), 1);
    ck_assert_int_eq(waiter_park(waiters, &w_other, 60, suspend, resume, &other), 1);
    waiter_unregister(waiters, &w);
    /* The other waiter's timeout, later than w's, shows the listener ran. */
    ck_assert(await_resume(&other, 2000));
    ck_assert_int_eq(atomic_load(&request.resumed), 0);
    waiter_unregister(waiters, &w_other);
    waiters_stop(waiters);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        a_park_resumes_once_when_its_timeout_passes,
        an_earlier_timeout_cuts_the_listeners_sleep_short,
        closing_resumes_every_park_and_refuses_new_ones,
        an_unregistered_waiter_is_never_resumed,
    };

    return run_tests("waiters", "parking", tests, sizeof(tests) / sizeof(tests[0]));
}
