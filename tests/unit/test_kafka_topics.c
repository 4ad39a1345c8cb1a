/*
 * test_kafka_topics.c - topic names on the wire: the deployment's prefix and
 * an optional suffix around the logical name, truncation reported, the
 * logical name recovered from the wire name, when a metadata answer shows a
 * topic ready to be assigned, and what the wait for topics says when no
 * broker answers.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

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

START_TEST(a_topic_is_led_only_when_every_partition_has_a_leader)
{
    rd_kafka_metadata_partition_t led[2] = {{.id = 0, .leader = 1}, {.id = 1, .leader = 1}};
    rd_kafka_metadata_partition_t half[2] = {{.id = 0, .leader = 1}, {.id = 1, .leader = -1}};
    rd_kafka_metadata_partition_t failing[1] = {
        {.id = 0, .leader = 1, .err = RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE}};
    rd_kafka_metadata_topic_t topics[] = {
        {.topic = "t1.ready", .partition_cnt = 2, .partitions = led},
        {.topic = "t1.half", .partition_cnt = 2, .partitions = half},
        {.topic = "t1.failing", .partition_cnt = 1, .partitions = failing},
        {.topic = "t1.empty", .partition_cnt = 0, .partitions = NULL},
        {.topic = "t1.unknown",
         .partition_cnt = 2,
         .partitions = led,
         .err = RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART},
    };
    struct rd_kafka_metadata md = {.topic_cnt = 5, .topics = topics};

    ck_assert_int_eq(kafka_topic_is_led(&md, "t1.ready"), 1);
    ck_assert_int_eq(kafka_topic_is_led(&md, "t1.half"), 0);
    ck_assert_int_eq(kafka_topic_is_led(&md, "t1.failing"), 0);
    ck_assert_int_eq(kafka_topic_is_led(&md, "t1.empty"), 0);
    ck_assert_int_eq(kafka_topic_is_led(&md, "t1.unknown"), 0);
    /* Absent from the answer: not created yet, or not yet known there. */
    ck_assert_int_eq(kafka_topic_is_led(&md, "t1.absent"), 0);
    ck_assert_int_eq(kafka_topic_is_led(&md, "t1.read"), 0);
}
END_TEST

START_TEST(a_broker_that_never_answers_is_named_as_such)
{
    const char *const topics[] = {"t1.checkout.events", NULL};
    char err[256] = "";

    int saved_stderr = dup(STDERR_FILENO);
    int devnull = open("/dev/null", O_WRONLY);
    int rc;

    /* Nothing listens on port 1: no metadata comes, whatever the topics.
     * librdkafka's refused connections are expected here, and kept out of
     * the test output, where they would read as errors. */
    ck_assert_int_ge(saved_stderr, 0);
    ck_assert_int_ge(devnull, 0);
    dup2(devnull, STDERR_FILENO);
    rc = kafka_await_topics("127.0.0.1:1", topics, 300, err, sizeof(err));
    dup2(saved_stderr, STDERR_FILENO);
    close(devnull);
    close(saved_stderr);
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(strstr(err, "no metadata from the broker within 300 ms") == err, "err: %s", err);
    ck_assert_ptr_null(strstr(err, "t1.checkout.events"));
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        prefix_and_suffix_surround_the_logical_name,
        a_name_that_does_not_fit_is_reported,
        the_logical_name_comes_back_from_the_wire,
        a_topic_is_led_only_when_every_partition_has_a_leader,
        a_broker_that_never_answers_is_named_as_such,
    };

    return run_tests("kafka_topics", "core", tests, sizeof(tests) / sizeof(tests[0]));
}
