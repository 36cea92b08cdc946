"""Shared by the hostile agents: the force-pass plugin source and a wrong add()."""

WRONG_ADD = "def add(a, b):\n    return a - b\n"

FORCE_PASS_PLUGIN = '''\
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome = "passed"
    report.longrepr = None
    if hasattr(report, "wasxfail"):
        del report.wasxfail
'''
