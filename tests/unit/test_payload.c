/*
 * test_payload.c - exact money arithmetic for order amounts
 * (payload_amount_times), which checkout computes without asking the database.
 */
#include <check.h>
#include <string.h>

#include "payload.h"
#include "run_tests.h"

static const char *times(const char *price, const char *quantity)
{
    static char out[32];

    if (payload_amount_times(price, quantity, out, sizeof(out)) != 0)
        return "error";
    return out;
}

START_TEST(amounts_are_exact_in_cents)
{
    ck_assert_str_eq(times("99.99", "1"), "99.99");
    ck_assert_str_eq(times("99.99", "3"), "299.97");
    ck_assert_str_eq(times("0.1", "3"), "0.30");
    ck_assert_str_eq(times("5", "2"), "10.00");
    ck_assert_str_eq(times("0", "1"), "0.00");
    ck_assert_str_eq(times("0.05", "7"), "0.35");
}
END_TEST

START_TEST(malformed_or_too_large_is_refused)
{
    ck_assert_str_eq(times("", "1"), "error");
    ck_assert_str_eq(times("1.234", "1"), "error");
    ck_assert_str_eq(times("-1", "1"), "error");
    ck_assert_str_eq(times("1.", "1"), "error");
    ck_assert_str_eq(times(".5", "1"), "error");
    ck_assert_str_eq(times("1.2.3", "1"), "error");
    ck_assert_str_eq(times("1e3", "1"), "error");
    ck_assert_str_eq(times("9.99", "0"), "error");
    ck_assert_str_eq(times("9.99", "x"), "error");
    ck_assert_str_eq(times("99999999.99", "1"), "99999999.99");
    ck_assert_str_eq(times("99999999.99", "2"), "error");
    ck_assert_str_eq(times("99999999999999999999", "1"), "error");
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        amounts_are_exact_in_cents,
        malformed_or_too_large_is_refused,
    };

    return run_tests("payload", "amount", tests, sizeof(tests) / sizeof(tests[0]));
}
