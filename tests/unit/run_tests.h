/*
 * run_tests.h - the runner every unit test's main() shares: one suite of one
 * test case holding tests, run with Check's normal output. Returns the exit
 * status: 0 when every test passed, 1 otherwise.
 */
#ifndef TESTS_UNIT_RUN_TESTS_H
#define TESTS_UNIT_RUN_TESTS_H

#include <check.h>
#include <stddef.h>

static inline int run_tests(const char *suite_name, const char *case_name,
                            const TTest *const *tests, size_t count)
{
    Suite *suite = suite_create(suite_name);
    TCase *tc = tcase_create(case_name);
    SRunner *runner;
    int failed;

    for (size_t i = 0; i < count; i++)
        tcase_add_test(tc, tests[i]);
    suite_add_tcase(suite, tc);
    runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? 0 : 1;
}

#endif
