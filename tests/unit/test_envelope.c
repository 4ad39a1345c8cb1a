/*
 * test_envelope.c - envelope round trip, and rejection of malformed,
 * truncated, oversized, incomplete and non-UTF-8 input.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envelope.h"
#include "run_tests.h"

static char *valid_json(void)
{
    struct envelope env;
    cJSON *payload = cJSON_CreateObject();
    char *text;

    cJSON_AddNumberToObject(payload, "order_id", 42);
    ck_assert_int_eq(envelope_build(&env, "order_created", "saga-1", "checkout", NULL, payload), 0);
    text = envelope_encode(&env);
    envelope_free(&env);
    return text;
}

START_TEST(round_trip_keeps_every_field)
{
    struct envelope cause, env, back;
    char err[128];
    char *text;

    ck_assert_int_eq(envelope_build(&cause, "first", "saga-7", "api", NULL, NULL), 0);
    ck_assert_int_eq(envelope_build(&env, "second", "saga-7", "checkout", &cause,
                                    cJSON_Parse("{\"n\":3,\"s\":\"x\"}")),
                     0);
    text = envelope_encode(&env);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(envelope_decode(text, strlen(text), &back, err, sizeof(err)), 0);
    ck_assert_str_eq(back.id, env.id);
    ck_assert_str_eq(back.type, "second");
    ck_assert_int_eq(back.version, 1);
    ck_assert_str_eq(back.saga_id, "saga-7");
    ck_assert_str_eq(back.causation_id, cause.id);
    ck_assert_str_eq(back.correlation_id, "saga-7");
    ck_assert_str_eq(back.occurred_at, env.occurred_at);
    ck_assert_str_eq(back.producer, "checkout");
    ck_assert_int_eq(cJSON_GetObjectItem(back.payload, "n")->valueint, 3);
    ck_assert_str_eq(cJSON_GetObjectItem(back.payload, "s")->valuestring, "x");
    free(text);
    envelope_free(&cause);
    envelope_free(&env);
    envelope_free(&back);
}
END_TEST

START_TEST(null_causation_round_trips_as_empty)
{
    struct envelope back;
    char err[128];
    char *text = valid_json();

    ck_assert_ptr_nonnull(strstr(text, "\"causation_id\":null"));
    ck_assert_int_eq(envelope_decode(text, strlen(text), &back, err, sizeof(err)), 0);
    ck_assert_str_eq(back.causation_id, "");
    envelope_free(&back);
    free(text);
}
END_TEST

START_TEST(unknown_fields_are_ignored)
{
    struct envelope back;
    char err[128];
    char *text = valid_json();
    size_t len = strlen(text);
    char *extended = malloc(len + 32);

    /* Replace the closing brace with an extra member. */
    memcpy(extended, text, len - 1);
    strcpy(extended + len - 1, ",\"future\":[1,2]}");
    ck_assert_int_eq(envelope_decode(extended, strlen(extended), &back, err, sizeof(err)), 0);
    envelope_free(&back);
    free(extended);
    free(text);
}
END_TEST

START_TEST(every_truncation_is_rejected)
{
    struct envelope back;
    char err[128];
    char *text = valid_json();
    size_t len = strlen(text);

    for (size_t cut = 0; cut < len; cut++) {
        ck_assert_msg(envelope_decode(text, cut, &back, err, sizeof(err)) == -1,
                      "accepted a prefix of %zu bytes", cut);
        ck_assert_ptr_null(back.payload);
    }
    free(text);
}
END_TEST

START_TEST(oversized_input_is_rejected_unread)
{
    struct envelope back;
    char err[128];
    size_t len = ENVELOPE_MAX_BYTES + 1;
    char *big = malloc(len);

    memset(big, ' ', len);
    ck_assert_int_eq(envelope_decode(big, len, &back, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "exceeds"));
    free(big);
}
END_TEST

static void expect_rejected(const char *json, const char *reason_part)
{
    struct envelope back;
    char err[128] = "";

    ck_assert_msg(envelope_decode(json, strlen(json), &back, err, sizeof(err)) == -1, "accepted %s",
                  json);
    ck_assert_msg(strstr(err, reason_part) != NULL, "reason \"%s\" lacks \"%s\"", err, reason_part);
}

#define GOOD_ID "\"id\":\"0b9f3c1e-8c1d-4c55-9a4e-2f1d7d2a9b10\""
#define GOOD_REST                                                                                  \
    "\"correlation_id\":\"c\",\"occurred_at\":\"2026-11-22T10:00:00.123Z\","                       \
    "\"producer\":\"api\",\"payload\":{}"

START_TEST(malformed_input_is_rejected_with_a_reason)
{
    expect_rejected("", "empty");
    expect_rejected("not json", "JSON");
    expect_rejected("[1,2,3]", "object");
    expect_rejected("{\"id\":\"nope\",\"type\":\"t\"}", "UUID");
    expect_rejected("{" GOOD_ID ",\"version\":1,\"saga_id\":\"s\"," GOOD_REST "}", "type");
    expect_rejected("{" GOOD_ID ",\"type\":\"\",\"version\":1,\"saga_id\":\"s\"," GOOD_REST "}",
                    "type is empty");
    expect_rejected("{" GOOD_ID ",\"type\":\"t\",\"version\":0,\"saga_id\":\"s\"," GOOD_REST "}",
                    "version");
    expect_rejected("{" GOOD_ID ",\"type\":\"t\",\"version\":1.5,\"saga_id\":\"s\"," GOOD_REST "}",
                    "version");
    expect_rejected("{" GOOD_ID ",\"type\":\"t\",\"version\":1,\"saga_id\":7," GOOD_REST "}",
                    "saga_id");
    expect_rejected("{" GOOD_ID ",\"type\":\"t\",\"version\":1,\"saga_id\":\"s\","
                    "\"causation_id\":\"x\"," GOOD_REST "}",
                    "causation_id");
    expect_rejected("{" GOOD_ID ",\"type\":\"t\",\"version\":1,\"saga_id\":\"s\","
                    "\"correlation_id\":\"c\",\"occurred_at\":\"yesterday\","
                    "\"producer\":\"api\",\"payload\":{}}",
                    "occurred_at");
    expect_rejected("{" GOOD_ID ",\"type\":\"t\",\"version\":1,\"saga_id\":\"s\","
                    "\"correlation_id\":\"c\",\"occurred_at\":\"2026-11-22T10:00:00Z\","
                    "\"producer\":\"api\",\"payload\":[]}",
                    "payload");
}
END_TEST

START_TEST(overlong_fields_are_rejected)
{
    char json[1024];
    char type[200];

    memset(type, 'a', sizeof(type) - 1);
    type[sizeof(type) - 1] = '\0';
    snprintf(json, sizeof(json),
             "{" GOOD_ID ",\"type\":\"%s\",\"version\":1,\"saga_id\":\"s\"," GOOD_REST "}", type);
    expect_rejected(json, "longer than");
}
END_TEST

/* The envelope with saga_id set to saga (raw bytes). */
static int decode_with_saga(const char *saga, struct envelope *env, char *err, size_t errlen)
{
    char json[512];
    int n = snprintf(json, sizeof(json),
                     "{" GOOD_ID ",\"type\":\"t\",\"version\":1,\"saga_id\":\"%s\"," GOOD_REST "}",
                     saga);

    return envelope_decode(json, (size_t)n, env, err, errlen);
}

START_TEST(text_that_is_not_utf8_is_rejected)
{
    static const char *const bad[] = {
        "k\xff",            /* never valid */
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong, three bytes */
        "\xed\xa0\x80",     /* a UTF-16 surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xc3",             /* cut short before the closing quote */
        "\xe2\x82",         /* cut short */
        "\x80",             /* a continuation byte alone */
    };
    static const char *const good[] = {
        "caf\xc3\xa9",      /* U+00E9 */
        "\xe2\x82\xac",     /* U+20AC */
        "\xed\x9f\xbf",     /* U+D7FF, just below the surrogates */
        "\xf0\x9f\x93\xa6", /* U+1F4E6 */
        "\xf4\x8f\xbf\xbf", /* U+10FFFF */
    };
    struct envelope env;
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(decode_with_saga(bad[i], &env, err, sizeof(err)) == -1, "bad[%zu] accepted",
                      i);
        ck_assert_msg(strstr(err, "not valid UTF-8") != NULL, "bad[%zu]: %s", i, err);
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ck_assert_msg(decode_with_saga(good[i], &env, err, sizeof(err)) == 0, "good[%zu]: %s", i,
                      err);
        ck_assert_str_eq(env.saga_id, good[i]);
        envelope_free(&env);
    }
}
END_TEST

START_TEST(helpers_validate_uuid_and_time)
{
    char id[ENVELOPE_UUID_LEN + 1], now[ENVELOPE_TIME_MAX];

    envelope_new_uuid(id);
    ck_assert(envelope_is_uuid(id));
    ck_assert(!envelope_is_uuid("0b9f3c1e-8c1d-4c55-9a4e-2f1d7d2a9b1"));
    ck_assert(!envelope_is_uuid(NULL));
    envelope_now_rfc3339(now);
    ck_assert(envelope_is_rfc3339(now));
    ck_assert(envelope_is_rfc3339("2026-01-02T03:04:05+01:00"));
    ck_assert(!envelope_is_rfc3339("2026-01-02 03:04:05Z"));
    ck_assert(!envelope_is_rfc3339("2026-01-02T03:04:05"));
}
END_TEST

START_TEST(new_ids_are_version_7_and_sort_by_time)
{
    char first[ENVELOPE_UUID_LEN + 1], second[ENVELOPE_UUID_LEN + 1], other[ENVELOPE_UUID_LEN + 1];
    struct timespec pause = {0, 2000000}, now;
    unsigned long long stamp = 0, ms;

    envelope_new_uuid(first);
    envelope_new_uuid(other);
    nanosleep(&pause, NULL);
    envelope_new_uuid(second);
    clock_gettime(CLOCK_REALTIME, &now);
    ms = (unsigned long long)now.tv_sec * 1000u + (unsigned long long)now.tv_nsec / 1000000u;
    ck_assert(envelope_is_uuid(first) && envelope_is_uuid(second));
    ck_assert_int_eq(first[14], '7');
    ck_assert(strchr("89ab", first[19]) != NULL);
    ck_assert_str_ne(first, other); /* same millisecond, still unique */
    ck_assert_int_lt(strcmp(first, second), 0);
    /* The first 48 bits are the Unix time in milliseconds. */
    for (int i = 0; i < 13; i++) {
        if (second[i] != '-')
            stamp = stamp * 16 + (unsigned long long)(isdigit((unsigned char)second[i])
                                                          ? second[i] - '0'
                                                          : second[i] - 'a' + 10);
    }
    ck_assert(stamp <= ms && ms - stamp < 1000);
}
END_TEST

START_TEST(build_rejects_overlong_strings_and_frees_payload)
{
    struct envelope env;
    char saga[ENVELOPE_KEY_MAX + 10];

    memset(saga, 's', sizeof(saga) - 1);
    saga[sizeof(saga) - 1] = '\0';
    /* The payload is freed on failure; the sanitizer build would report a leak. */
    ck_assert_int_eq(envelope_build(&env, "t", saga, "p", NULL, cJSON_CreateObject()), -1);
    ck_assert_ptr_null(env.payload);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        round_trip_keeps_every_field,
        null_causation_round_trips_as_empty,
        unknown_fields_are_ignored,
        every_truncation_is_rejected,
        oversized_input_is_rejected_unread,
        malformed_input_is_rejected_with_a_reason,
        overlong_fields_are_rejected,
        text_that_is_not_utf8_is_rejected,
        helpers_validate_uuid_and_time,
        new_ids_are_version_7_and_sort_by_time,
        build_rejects_overlong_strings_and_frees_payload,
    };

    return run_tests("envelope", "core", tests, sizeof(tests) / sizeof(tests[0]));
}
