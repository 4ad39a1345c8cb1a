/*
 * test_kafka_keep.c - how long a topic may hold a message, from its
 * configuration: retention plus one segment's lifetime, for ever when
 * retention is off or the topic is only compacted, and an error for values
 * that are not numbers.
 */
#include <check.h>

#include "kafka.h"
#include "run_tests.h"

#define WEEK_MS 604800000LL

START_TEST(retention_and_segment_add_up)
{
    long long keep = 0;

    ck_assert_int_eq(kafka_keep_ms("604800000", "604800000", "delete", &keep), 0);
    ck_assert_int_eq(keep, 2 * WEEK_MS);
    ck_assert_int_eq(kafka_keep_ms("3600000", "60000", "compact,delete", &keep), 0);
    ck_assert_int_eq(keep, 3660000);
    ck_assert_int_eq(kafka_keep_ms("0", "1", "delete", &keep), 0);
    ck_assert_int_eq(keep, 1);
}
END_TEST

START_TEST(unlimited_retention_or_compaction_alone_keeps_for_ever)
{
    long long keep = 0;

    ck_assert_int_eq(kafka_keep_ms("-1", "604800000", "delete", &keep), 0);
    ck_assert_int_eq(keep, -1);
    keep = 0;
    ck_assert_int_eq(kafka_keep_ms("604800000", "604800000", "compact", &keep), 0);
    ck_assert_int_eq(keep, -1);
    keep = 0;
    ck_assert_int_eq(kafka_keep_ms("9223372036854775807", "604800000", "delete", &keep), 0);
    ck_assert_int_eq(keep, -1);
    /* "Practically for ever": the inbox pruner could not reckon back that
     * far, so it is for ever. A century less a segment still counts. */
    ck_assert_int_eq(kafka_keep_ms("1000000000000000", "604800000", "delete", &keep), 0);
    ck_assert_int_eq(keep, -1);
    ck_assert_int_eq(kafka_keep_ms("3152995200000", "604800000", "delete", &keep), 0);
    ck_assert_int_eq(keep, KAFKA_KEEP_FOREVER_MS);
    ck_assert_int_eq(kafka_keep_ms("3152995200001", "604800000", "delete", &keep), 0);
    ck_assert_int_eq(keep, -1);
}
END_TEST

START_TEST(missing_or_malformed_values_are_errors)
{
    long long keep = 7;

    ck_assert_int_eq(kafka_keep_ms(NULL, "1", "delete", &keep), -1);
    ck_assert_int_eq(kafka_keep_ms("1", NULL, "delete", &keep), -1);
    ck_assert_int_eq(kafka_keep_ms("1", "1", NULL, &keep), -1);
    ck_assert_int_eq(kafka_keep_ms("", "1", "delete", &keep), -1);
    ck_assert_int_eq(kafka_keep_ms("7d", "1", "delete", &keep), -1);
    ck_assert_int_eq(kafka_keep_ms("-2", "1", "delete", &keep), -1);
    ck_assert_int_eq(kafka_keep_ms("1", "0", "delete", &keep), -1);
    ck_assert_int_eq(kafka_keep_ms("99999999999999999999", "1", "delete", &keep), -1);
    ck_assert_int_eq(keep, 7);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        retention_and_segment_add_up,
        unlimited_retention_or_compaction_alone_keeps_for_ever,
        missing_or_malformed_values_are_errors,
    };

    return run_tests("kafka_keep", "core", tests, sizeof(tests) / sizeof(tests[0]));
}
