/*
 * test_payload.c - exact money arithmetic for order amounts
 * (payload_amount_times), which checkout computes without asking the database,
 * text cut to fit without breaking UTF-8 (payload_copy_text), and optional
 * UUID fields (payload_optional_uuid).
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
    /* A product of price and quantity past 64 bits: refused, not wrapped. */
    ck_assert_str_eq(times("100000000000", "1000000"), "error");
    ck_assert_str_eq(times("92233720368.55", "1000000"), "error");
    ck_assert_str_eq(times("0.01", "1000000"), "10000.00");
}
END_TEST

START_TEST(text_is_cut_only_between_utf8_sequences)
{
    /* Into 6 bytes: at most 5 of text, then the NUL. */
    static const struct {
        const char *text, *copied;
        int cut;
    } cases[] = {
        {"abcde", "abcde", 0},
        {"abcdef", "abcde", 1},
        {"abc\xC3\xA9", "abc\xC3\xA9", 0},              /* e-acute (2 bytes) fits exactly */
        {"abcd\xC3\xA9", "abcd", 1},                    /* it would be split: left out */
        {"abc\xE2\x82\xAC", "abc", 1},                  /* a euro sign (3 bytes) at 3-5 */
        {"ab\xF0\x9F\x98\x80", "ab", 1},                /* a 4-byte emoji at 2-5 */
        {"a\xF0\x9F\x98\x80z", "a\xF0\x9F\x98\x80", 1}, /* at 1-4 it fits whole */
    };
    char out[6];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_assert_int_eq(payload_copy_text(out, sizeof(out), cases[i].text), cases[i].cut);
        ck_assert_str_eq(out, cases[i].copied);
    }
    ck_assert_int_eq(payload_copy_text(out, 1, "abc"), 1);
    ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(an_optional_uuid_is_absent_or_a_uuid_string)
{
    cJSON *payload = cJSON_Parse("{\"ok\":\"0191e5a2-7b3c-7d4e-8f00-0123456789ab\","
                                 "\"number\":5,\"null\":null,\"short\":\"0191e5a2\","
                                 "\"quote\":\"1' OR 1=1\"}");
    const char *out = "unset";

    ck_assert_ptr_nonnull(payload);
    ck_assert_int_eq(payload_optional_uuid(payload, "absent", &out), 0);
    ck_assert_ptr_null(out);
    ck_assert_int_eq(payload_optional_uuid(payload, "ok", &out), 0);
    ck_assert_str_eq(out, "0191e5a2-7b3c-7d4e-8f00-0123456789ab");
    ck_assert_int_eq(payload_optional_uuid(payload, "number", &out), -1);
    ck_assert_int_eq(payload_optional_uuid(payload, "null", &out), -1);
    ck_assert_int_eq(payload_optional_uuid(payload, "short", &out), -1);
    ck_assert_int_eq(payload_optional_uuid(payload, "quote", &out), -1);
    ck_assert_ptr_null(out);
    cJSON_Delete(payload);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        amounts_are_exact_in_cents,
        malformed_or_too_large_is_refused,
        text_is_cut_only_between_utf8_sequences,
        an_optional_uuid_is_absent_or_a_uuid_string,
    };

    return run_tests("payload", "amount", tests, sizeof(tests) / sizeof(tests[0]));
}
