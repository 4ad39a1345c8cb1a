/*
 * test_db_sqlstate.c - which failed statements are worth retrying as they
 * are (the database or its set-up is at fault) and which are not (the
 * statement is wrong for its data, so the message may go to the dead-letter
 * topic).
 */
#include <check.h>

#include "db.h"
#include "run_tests.h"

START_TEST(faults_of_the_database_or_its_set_up_are_transient)
{
    const char *transient[] = {"",      "08006", "08001", "40001", "40P01", "53100", "53300",
                               "57P01", "57P03", "57014", "55P03", "25006", "42501"};

    for (size_t i = 0; i < sizeof(transient) / sizeof(transient[0]); i++)
        ck_assert_msg(db_sqlstate_transient(transient[i]), "%s", transient[i]);
    ck_assert(db_sqlstate_transient(NULL));
}
END_TEST

START_TEST(faults_of_the_statement_or_its_data_are_not)
{
    const char *permanent[] = {"23505", "23514", "23503", "22P02", "42P01", "42703",
                               "42601", "P0001", "XX000", "22003", "57000"};

    for (size_t i = 0; i < sizeof(permanent) / sizeof(permanent[0]); i++)
        ck_assert_msg(!db_sqlstate_transient(permanent[i]), "%s", permanent[i]);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        faults_of_the_database_or_its_set_up_are_transient,
        faults_of_the_statement_or_its_data_are_not,
    };

    return run_tests("db_sqlstate", "core", tests, sizeof(tests) / sizeof(tests[0]));
}
