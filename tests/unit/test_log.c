/*
 * test_log.c - every event is one line on stderr: quoted text that spans
 * lines (libpq's errors do) is joined, a long message is cut but still ends
 * its line, levels below the minimum write nothing, and text quoted into a
 * value (libpq's messages quote names) cannot end the value early.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "run_tests.h"

/* Runs log_write(level, "%s", text) with stderr on a pipe; returns what was
 * written (NUL-terminated in out). */
static size_t captured(enum log_level level, const char *text, char *out, size_t outlen)
{
    int fds[2], saved = dup(STDERR_FILENO);
    size_t len = 0;
    ssize_t n;

    ck_assert_int_eq(pipe(fds), 0);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    log_write(level, "msg=\"%s\"", text);
    dup2(saved, STDERR_FILENO); /* closes the pipe's last write end */
    close(saved);
    while ((n = read(fds[0], out + len, outlen - 1 - len)) > 0)
        len += (size_t)n;
    close(fds[0]);
    out[len] = '\0';
    return len;
}

static int newlines(const char *text)
{
    int count = 0;

    for (; *text; text++)
        count += *text == '\n';
    return count;
}

START_TEST(text_over_several_lines_is_joined_into_one)
{
    char out[4096];
    size_t len;

    log_init("test", LOG_LEVEL_INFO);
    len = captured(LOG_LEVEL_WARN, "connection failed\n\tIs the server running on that host?\r\n",
                   out, sizeof(out));
    ck_assert_int_eq(newlines(out), 1);
    ck_assert_int_eq(out[len - 1], '\n');
    ck_assert_ptr_nonnull(strstr(out, "level=warn service=test msg=\"connection failed  Is the "
                                      "server running on that host?  \""));
}
END_TEST

START_TEST(a_long_message_is_cut_and_still_ends_its_line)
{
    char text[5000], out[8192];
    size_t len;

    memset(text, 'x', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    log_init("test", LOG_LEVEL_INFO);
    len = captured(LOG_LEVEL_ERROR, text, out, sizeof(out));
    ck_assert_uint_le(len, 2048);
    ck_assert_int_eq(newlines(out), 1);
    ck_assert_int_eq(out[len - 1], '\n');
}
END_TEST

START_TEST(levels_below_the_minimum_write_nothing)
{
    char out[256];

    log_init("test", LOG_LEVEL_WARN);
    ck_assert_uint_eq(captured(LOG_LEVEL_INFO, "quiet", out, sizeof(out)), 0);
    ck_assert_uint_gt(captured(LOG_LEVEL_WARN, "loud", out, sizeof(out)), 0);
}
END_TEST

START_TEST(quoted_text_is_escaped_and_never_cut_inside_an_escape)
{
    char out[64];

    ck_assert_str_eq(log_quote(out, sizeof(out), "relation \"inbox\" exists", 24),
                     "relation \\\"inbox\\\" exists");
    ck_assert_str_eq(log_quote(out, sizeof(out), "C:\\dir\x01\x7f.", 9), "C:\\\\dir  .");
    ck_assert_str_eq(log_quote(out, sizeof(out), "abcdef", 3), "abc");
    ck_assert_str_eq(log_quote(out, 4, "ab\"c", 4), "ab");
    ck_assert_str_eq(log_quote(out, 4, "abcdef", 6), "abc");
}
END_TEST

START_TEST(a_postgres_notice_quoting_a_name_stays_one_value)
{
    int fds[2], saved = dup(STDERR_FILENO);
    char out[1024];
    ssize_t n;
    size_t len = 0;

    log_init("test", LOG_LEVEL_INFO);
    ck_assert_int_eq(pipe(fds), 0);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    log_pq_notice(NULL, "NOTICE:  relation \"inbox\" already exists, skipping\n");
    dup2(saved, STDERR_FILENO);
    close(saved);
    while ((n = read(fds[0], out + len, sizeof(out) - 1 - len)) > 0)
        len += (size_t)n;
    close(fds[0]);
    out[len] = '\0';
    ck_assert_ptr_nonnull(strstr(out, " detail=\"NOTICE:  relation \\\"inbox\\\" already exists, "
                                      "skipping\"\n"));
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        text_over_several_lines_is_joined_into_one,
        a_long_message_is_cut_and_still_ends_its_line,
        levels_below_the_minimum_write_nothing,
        quoted_text_is_escaped_and_never_cut_inside_an_escape,
        a_postgres_notice_quoting_a_name_stays_one_value,
    };

    return run_tests("log", "lines", tests, sizeof(tests) / sizeof(tests[0]));
}
