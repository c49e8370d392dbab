"""Under CI (the CI environment variable set, as `.ci/run` and hosted CI do), a skipped test is a
failed test: a skip there means something CI promised to check was not checked (a missing binary,
a missing corpus, a command that does not exist). Expected failures (xfail) are left alone.
Outside CI, skips stay skips, so a partial checkout can still run what it can."""

import os

import pytest


def in_ci():
    return bool(os.environ.get("CI"))


def _reason(rep):
    lr = rep.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:  # (path, line, "Skipped: why")
        return f"{lr[0]}:{lr[1]}: {lr[2]}"
    return str(lr)


def _fail_skip(rep):
    if in_ci() and rep.skipped and not hasattr(rep, "wasxfail"):
        rep.longrepr = f"skipped under CI, which must not skip (CI={os.environ['CI']!r}): {_reason(rep)}"
        rep.outcome = "failed"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    _fail_skip(rep)
    return rep


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    # A whole module skipped at import (pytest.skip(allow_module_level=True), importorskip).
    rep = yield
    _fail_skip(rep)
    return rep
