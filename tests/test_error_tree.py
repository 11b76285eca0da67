"""Every error class of the service lives in `workers.errors`, under `HeavyResearchError`, and
is named in the tree its docstring draws (what users read to know what can be raised)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import app
import workers
import workers.errors
from workers.errors import HeavyResearchError


def defined_exceptions() -> dict[str, type[BaseException]]:
    """Public exception classes defined in any module of app/ and workers/."""
    found: dict[str, type[BaseException]] = {}
    for package in (app, workers):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__ == module.__name__
                    and not name.startswith("_")
                ):
                    found[f"{module.__name__}.{name}"] = value
    return found


def test_every_error_class_is_in_the_one_module() -> None:
    found = defined_exceptions()
    elsewhere = sorted(where for where, cls in found.items() if cls.__module__ != "workers.errors")
    assert elsewhere == []
    assert len(found) > 20  # the walk did see the tree


def test_every_error_class_is_in_the_documented_tree() -> None:
    doc = workers.errors.__doc__ or ""
    assert "\nHeavyResearchError\n├── " in doc  # the root, then its branches
    drawn = set(re.findall(r"^[│ ]*[├└]──\s+([A-Z]\w+)", doc, re.M)) | {"HeavyResearchError"}
    classes = {name: cls for name, cls in vars(workers.errors).items() if inspect.isclass(cls)}
    errors = {name for name, cls in classes.items() if issubclass(cls, BaseException)}
    assert errors <= drawn, errors - drawn
    assert drawn <= errors, drawn - errors
    for name in errors:
        assert issubclass(classes[name], HeavyResearchError), name
