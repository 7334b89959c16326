"""Issue 22: every logit processor shows what it does in an `Examples:` doctest, and the suite runs them (with
the other doctests of generation/: sampling, settings). A doctest that no longer holds fails here."""

from __future__ import annotations

import doctest
import inspect
import types

import pytest

from charlstm.generation import processors, sampling, settings

MODULES = [processors, sampling, settings]
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def run_doctests(module: types.ModuleType) -> doctest.TestResults:
    return doctest.testmod(module, optionflags=FLAGS, report=True)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_the_doctests_hold(module):
    result = run_doctests(module)
    assert result.attempted > 0, f"{module.__name__} has no doctests"
    assert result.failed == 0, f"{result.failed} doctest(s) of {module.__name__} failed (see the output above)"


def test_every_processor_has_an_example_that_runs():
    classes = [c for _, c in inspect.getmembers(processors, inspect.isclass)
               if c.__module__ == processors.__name__ and c is not processors.LogitProcessor
               and "__call__" in vars(c) and "history" in inspect.signature(c.__call__).parameters]
    names = {c.__name__ for c in classes}
    assert {"RepeatGuard", "NoRepeatNGram", "RepetitionPenalty", "PresenceFrequencyPenalty", "LogitBias"} <= names
    finder = doctest.DocTestFinder()
    for cls in classes:
        assert "Examples:" in (cls.__doc__ or ""), f"{cls.__name__} has no Examples: section"
        tests = [t for t in finder.find(cls, cls.__name__, module=processors) if t.name == cls.__name__]
        assert tests and tests[0].examples, f"{cls.__name__}'s Examples: has no doctest"


def test_a_broken_doctest_fails():
    module = types.ModuleType("broken")
    module.__doc__ = ">>> 1 + 1\n3\n"
    assert run_doctests(module).failed == 1
