"""The exception tree drawn in core/errors.py's docstring names every error class the module defines."""

from __future__ import annotations

import inspect

from kubecrawl.core import errors


def test_the_docstring_tree_names_every_error_class() -> None:
    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.KubecrawlError) and value.__module__ == errors.__name__
    }
    branches = [line.replace("└──", "├──").partition("├── ")[2] for line in (errors.__doc__ or "").splitlines()]
    drawn = {branch.split()[0] for branch in branches if branch}
    assert defined - {"KubecrawlError"} == drawn
