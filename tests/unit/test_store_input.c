/*
 * test_store_input.c - the api's checks of what a client sends
 * (services/api/store.c): idempotency keys, webhook statuses and order ids,
 * at and around each limit.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <limits.h>
#include <string.h>

#include "api/store.h"
#include "run_tests.h"

/* valid accepts max repetitions of c, and refuses one more. */
static void assert_longest_accepted(int (*valid)(const char *), size_t max, char c)
{
    char text[128];

    ck_assert_uint_lt(max + 1, sizeof(text));
    memset(text, c, max);
    text[max] = '\0';
    ck_assert_int_eq(valid(text), 1);
    text[max] = c;
    text[max + 1] = '\0';
    ck_assert_int_eq(valid(text), 0);
}

START_TEST(keys_are_1_to_100_safe_characters)
{
    ck_assert_int_eq(store_valid_key("a"), 1);
    ck_assert_int_eq(store_valid_key("test-7f3c_9.a:b"), 1);
    assert_longest_accepted(store_valid_key, 100, 'k');
    ck_assert_int_eq(store_valid_key(""), 0);
    /* Anything that could break a notification ("KEY ANSWER", '|') or a log. */
    static const char *const bad[] = {"a b", "a|b", "a/b", "a%00", "a\x7f", "caf\xc3\xa9", "a\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(store_valid_key(bad[i]) == 0, "bad[%zu] accepted", i);
}
END_TEST

START_TEST(statuses_are_lowercase_words)
{
    ck_assert_int_eq(store_valid_status("paid"), 1);
    ck_assert_int_eq(store_valid_status("card_declined"), 1);
    ck_assert_int_eq(store_valid_status(""), 0);
    ck_assert_int_eq(store_valid_status("PAID"), 0);
    ck_assert_int_eq(store_valid_status("paid!"), 0);
    ck_assert_int_eq(store_valid_status("pa id"), 0);
    assert_longest_accepted(store_valid_status, 32, 'x');
}
END_TEST

START_TEST(order_ids_are_digits_and_zero_or_huge_ones_name_no_order)
{
    long long id = 0;

    ck_assert_int_eq(store_parse_order_id("1", &id), 1);
    ck_assert_int_eq(id, 1);
    ck_assert_int_eq(store_parse_order_id("0", &id), 1);
    ck_assert_int_eq(id, 0);
    ck_assert_int_eq(store_parse_order_id("007", &id), 1);
    ck_assert_int_eq(id, 7);
    ck_assert_int_eq(store_parse_order_id("9223372036854775807", &id), 1);
    ck_assert_int_eq(id, LLONG_MAX);
    id = 0;
    ck_assert_int_eq(store_parse_order_id("99999999999999999999", &id), 1);
    ck_assert_int_eq(id, LLONG_MAX);
    static const char *const bad[] = {"",    "-3",  "+3",   " 3",    "3 ",
                                      "abc", "1e3", "0x10", "3\x7f", "-0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(store_parse_order_id(bad[i], &id) == 0, "bad[%zu] \"%s\" accepted", i,
                      bad[i]);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        keys_are_1_to_100_safe_characters,
        statuses_are_lowercase_words,
        order_ids_are_digits_and_zero_or_huge_ones_name_no_order,
    };

    return run_tests("store_input", "core", tests, sizeof(tests) / sizeof(tests[0]));
}
