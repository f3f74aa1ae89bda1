"""The apps' layer order, read from the source: every import between apps points down.

    jobs → studies → quality → rating → analytics → datasets → twoafc

An app may import the apps to its left, never one to its right (``twoafc`` is the project's
glue: settings, URLs, the demo). ``twoafc_codecs`` is a Django-free library below them all,
and imports none of them. An import inside a function defers a heavy library; each carries
a comment that says so, on its line or the line above.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["jobs", "studies", "quality", "rating", "analytics", "datasets", "twoafc"]
CODECS = "twoafc_codecs"


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def sources(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def layer_violations(app: str, folder: Path) -> list[str]:
    rank = LAYERS.index(app)
    bad = []
    for path, tree in sources(folder):
        for line, module in imported_modules(tree):
            top = module.split(".")[0]
            if top in LAYERS and LAYERS.index(top) > rank:
                bad.append(f"{path.relative_to(folder.parent)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("app", LAYERS)
def test_an_app_imports_only_the_apps_below_it(app):
    assert layer_violations(app, ROOT / "platform" / app) == []


def test_the_codec_library_imports_no_app():
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path, tree in sources(ROOT / "codecs" / CODECS)
        for line, module in imported_modules(tree)
        if module.split(".")[0] in LAYERS or module.split(".")[0] == "django"
    ]
    assert bad == []


def test_every_app_folder_has_a_layer():
    apps = {p.name for p in (ROOT / "platform").iterdir() if (p / "__init__.py").exists()}
    assert apps == set(LAYERS)


def test_each_import_inside_a_function_says_why_it_is_deferred():
    bare = []
    for path, tree in sources(ROOT / "platform"):
        lines = path.read_text().splitlines()
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    line, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
                    if "#" not in line and not above.startswith("#"):
                        bare.append(f"{path.relative_to(ROOT)}:{node.lineno}: {line.strip()}")
    assert bare == []


def test_the_checks_see_a_violation(tmp_path):
    """The layer check itself: an upward import in a low app is found."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "bad.py").write_text("def f():\n    from rating.models import Vote\n")
    assert layer_violations("jobs", tmp_path / "jobs") == ["jobs/bad.py:2 imports rating.models"]
