/*
 * test_outbox.c - W3C trace context propagation for outbox rows, and log
 * level parsing (the pure parts of outbox.c and log.c).
 */
#include <check.h>
#include <string.h>

#include "log.h"
#include "outbox.h"
#include "run_tests.h"

START_TEST(child_keeps_the_trace_id_and_gets_a_new_span)
{
    const char *parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    char child[OUTBOX_TRACEPARENT_LEN + 1];

    outbox_traceparent_child(parent, child);
    ck_assert_int_eq(strlen(child), OUTBOX_TRACEPARENT_LEN);
    ck_assert_int_eq(strncmp(child, parent, 36), 0);
    ck_assert_str_ne(child + 36, parent + 36);
    ck_assert_str_eq(child + 52, "-01");
}
END_TEST

START_TEST(invalid_parent_starts_a_new_trace)
{
    char a[OUTBOX_TRACEPARENT_LEN + 1], b[OUTBOX_TRACEPARENT_LEN + 1];

    outbox_traceparent_child(NULL, a);
    outbox_traceparent_child("00-zz-yy-01", b);
    ck_assert_int_eq(strlen(a), OUTBOX_TRACEPARENT_LEN);
    ck_assert_int_eq(strncmp(a, "00-", 3), 0);
    ck_assert_int_ne(strncmp(a, b, 35), 0);
}
END_TEST

START_TEST(log_levels_parse)
{
    enum log_level level;

    ck_assert_int_eq(log_level_parse("WARN", &level), 0);
    ck_assert_int_eq(level, LOG_LEVEL_WARN);
    ck_assert_int_eq(log_level_parse("verbose", &level), -1);
    log_init("unit", LOG_LEVEL_ERROR);
    ck_assert(!log_enabled(LOG_LEVEL_INFO));
    ck_assert(log_enabled(LOG_LEVEL_ERROR));
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        child_keeps_the_trace_id_and_gets_a_new_span,
        invalid_parent_starts_a_new_trace,
        log_levels_parse,
    };

    return run_tests("outbox", "core", tests, sizeof(tests) / sizeof(tests[0]));
}
