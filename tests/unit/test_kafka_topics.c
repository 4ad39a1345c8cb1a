/*
 * test_kafka_topics.c - topic names on the wire: the deployment's prefix and
 * an optional suffix around the logical name, truncation reported, and the
 * logical name recovered from the wire name.
 */
#include <check.h>
#include <string.h>

#include "kafka.h"
#include "run_tests.h"

START_TEST(prefix_and_suffix_surround_the_logical_name)
{
    char wire[64];

    ck_assert_int_eq(kafka_wire_topic(wire, sizeof(wire), "t1.", "checkout.events", ".dlq"), 0);
    ck_assert_str_eq(wire, "t1.checkout.events.dlq");
    ck_assert_int_eq(kafka_wire_topic(wire, sizeof(wire), NULL, "checkout.events", NULL), 0);
    ck_assert_str_eq(wire, "checkout.events");
    ck_assert_int_eq(kafka_wire_topic(wire, sizeof(wire), "", "checkout.events", ""), 0);
    ck_assert_str_eq(wire, "checkout.events");
}
END_TEST

START_TEST(a_name_that_does_not_fit_is_reported)
{
    char wire[16];

    ck_assert_int_eq(kafka_wire_topic(wire, sizeof(wire), "t1.", "inventory.events", NULL), -1);
    ck_assert_uint_eq(strlen(wire), sizeof(wire) - 1);
    /* One character too many for the terminator. */
    ck_assert_int_eq(kafka_wire_topic(wire, sizeof(wire), "t1.", "payment.cmds", "s"), -1);
    /* Exactly full (15 characters and the terminator) still fits. */
    ck_assert_int_eq(kafka_wire_topic(wire, sizeof(wire), "t1.", "payment.cmds", NULL), 0);
    ck_assert_str_eq(wire, "t1.payment.cmds");
}
END_TEST

START_TEST(the_logical_name_comes_back_from_the_wire)
{
    struct kafka_settings prefixed = {.topic_prefix = "t1."};
    struct kafka_settings bare = {.topic_prefix = NULL};
    char wire[64];

    kafka_wire_topic(wire, sizeof(wire), prefixed.topic_prefix, "dispatch.events", NULL);
    ck_assert_str_eq(kafka_logical_topic(&prefixed, wire), "dispatch.events");
    ck_assert_str_eq(kafka_logical_topic(&bare, "dispatch.events"), "dispatch.events");
    /* A topic of another deployment keeps its full name. */
    ck_assert_str_eq(kafka_logical_topic(&prefixed, "t2.dispatch.events"), "t2.dispatch.events");
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        prefix_and_suffix_surround_the_logical_name,
        a_name_that_does_not_fit_is_reported,
        the_logical_name_comes_back_from_the_wire,
    };

    return run_tests("kafka_topics", "core", tests, sizeof(tests) / sizeof(tests[0]));
}
