/*
 * test_config.c - configuration validation: defaults, bounds, booleans,
 * required variables, and every bad variable named at once.
 */
#include <check.h>
#include <string.h>

#include "config.h"
#include "run_tests.h"

struct fake_env {
    const char *names[8];
    const char *values[8];
};

static const char *fake_lookup(const char *name, void *arg)
{
    struct fake_env *env = arg;

    for (int i = 0; i < 8 && env->names[i]; i++) {
        if (strcmp(env->names[i], name) == 0)
            return env->values[i];
    }
    return NULL;
}

static char url[32];
static long port;
static int verbose;

static const struct config_entry table[] = {
    {"DB_URL", CONFIG_STRING, url, sizeof(url), NULL, 0, 0, "database"},
    {"PORT", CONFIG_INT, &port, 0, "8080", 1, 65535, "port"},
    {"VERBOSE", CONFIG_BOOL, &verbose, 0, "false", 0, 0, "chatty"},
};

START_TEST(defaults_apply_when_unset)
{
    struct fake_env env = {{"DB_URL"}, {"postgres://x"}};
    char err[512];

    ck_assert_int_eq(config_load_with(table, 3, fake_lookup, &env, err, sizeof(err)), 0);
    ck_assert_str_eq(url, "postgres://x");
    ck_assert_int_eq(port, 8080);
    ck_assert_int_eq(verbose, 0);
}
END_TEST

START_TEST(values_override_defaults)
{
    struct fake_env env = {{"DB_URL", "PORT", "VERBOSE"}, {"u", "9000", "YES"}};
    char err[512];

    ck_assert_int_eq(config_load_with(table, 3, fake_lookup, &env, err, sizeof(err)), 0);
    ck_assert_int_eq(port, 9000);
    ck_assert_int_eq(verbose, 1);
}
END_TEST

START_TEST(every_bad_variable_is_named)
{
    struct fake_env env = {{"PORT", "VERBOSE"}, {"70000", "maybe"}};
    char err[512];

    ck_assert_int_eq(config_load_with(table, 3, fake_lookup, &env, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "DB_URL: required"));
    ck_assert_ptr_nonnull(strstr(err, "PORT: \"70000\""));
    ck_assert_ptr_nonnull(strstr(err, "VERBOSE: \"maybe\""));
}
END_TEST

START_TEST(overlong_string_is_rejected)
{
    struct fake_env env = {{"DB_URL"}, {"0123456789012345678901234567890123456789"}};
    char err[512];

    ck_assert_int_eq(config_load_with(table, 3, fake_lookup, &env, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "DB_URL: longer than 31 bytes"));
}
END_TEST

START_TEST(integers_must_parse_whole)
{
    long out;

    ck_assert_int_eq(config_parse_long("12", 0, 100, &out), 0);
    ck_assert_int_eq(out, 12);
    ck_assert_int_eq(config_parse_long("12abc", 0, 100, &out), -1);
    ck_assert_int_eq(config_parse_long("", 0, 100, &out), -1);
    ck_assert_int_eq(config_parse_long("-1", 0, 100, &out), -1);
    ck_assert_int_eq(config_parse_long("99999999999999999999999", 0, 100, &out), -1);
    ck_assert_int_eq(config_parse_long(" 12", 0, 100, &out), -1);
    ck_assert_int_eq(config_parse_long("\n12", 0, 100, &out), -1);
    ck_assert_int_eq(config_parse_long("+12", 0, 100, &out), -1);
    ck_assert_int_eq(config_parse_long("-", -10, 100, &out), -1);
    ck_assert_int_eq(config_parse_long("-5", -10, 100, &out), 0);
    ck_assert_int_eq(out, -5);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        defaults_apply_when_unset,   values_override_defaults,  every_bad_variable_is_named,
        overlong_string_is_rejected, integers_must_parse_whole,
    };

    return run_tests("config", "core", tests, sizeof(tests) / sizeof(tests[0]));
}
