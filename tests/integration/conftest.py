"""When an integration test fails, its report ends with the last lines of
each process log the test wrote (.local/test-logs), so a failure in CI shows
what the services saw, not only the assertion."""

import collections
import os

import pytest

from harness import LOG_DIR

LOG_LINES = 20


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed or not os.path.isdir(LOG_DIR):
        return
    written = []
    for name in os.listdir(LOG_DIR):
        path = os.path.join(LOG_DIR, name)
        if os.path.isfile(path) and os.path.getmtime(path) >= call.start - 1:
            written.append(path)
    for path in sorted(written):
        with open(path, errors="replace") as log:
            tail = collections.deque(log, LOG_LINES)
        report.sections.append((f"{os.path.basename(path)}, last {len(tail)} lines",
                                "".join(tail)))
