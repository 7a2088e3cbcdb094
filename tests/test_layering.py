"""The dependency rules of docs/architecture.md, read from the source: breaking one fails here."""

import ast
import glob
import os

import pytest

from tests.conftest import REPO


def imported_modules(path: str) -> set:
    """Every ``radio.*`` module a file imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("radio")}


def called_names(path: str) -> set:
    tree = ast.parse(open(path).read())
    return {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def sources(package: str) -> list:
    """Every module of ``radio/<package>``, sub-packages included."""
    return sorted(glob.glob(os.path.join(REPO, "radio", package, "**", "*.py"), recursive=True))


@pytest.mark.parametrize("path", sources("config"), ids=os.path.basename)
def test_config_depends_on_nothing_below_it_but_the_model_registry(path):
    allowed = ("radio.config", "radio.errors", "radio.models.registry")
    assert {m for m in imported_modules(path) if not m.startswith(allowed)} == set()


@pytest.mark.parametrize("path", sources("eval") + sources("export"), ids=os.path.basename)
def test_eval_and_export_assemble_through_the_run_builder(path):
    assert (
        called_names(path) & {"FrozenTeacher", "AdaptedStudent", "build_feature_normalizer", "build_student"} == set()
    )
    assert {m for m in imported_modules(path) if m.startswith("radio.engine")} == set()


@pytest.mark.parametrize("path", sources("data") + sources("models") + sources("losses"), ids=os.path.basename)
def test_components_do_not_reach_into_the_engine(path):
    assert {m for m in imported_modules(path) if m.startswith("radio.engine")} == set()


DETECTION_ENGINE_USERS = ("task.py", "step.py", "run_files.py", "commands.py")  # what the engine's loop drives


@pytest.mark.parametrize(
    "path", [p for p in sources("detection") if os.path.basename(p) not in DETECTION_ENGINE_USERS], ids=os.path.basename
)
def test_detection_components_do_not_reach_into_the_engine(path):
    assert {m for m in imported_modules(path) if m.startswith("radio.engine")} == set()
