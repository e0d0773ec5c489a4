"""The package reads in data-flow order: every module imports only from its own layer or the
layers below (../shared/DESIGN.md), function-local imports included, so no import cycle can
hide behind a function-local import."""

from __future__ import annotations

import ast
from pathlib import Path

import s3tasks

PACKAGE = Path(s3tasks.__file__).parent

# Lowest first. A module is matched by its longest listed prefix.
LAYERS: list[tuple[str, ...]] = [
    # 1. the event value, settings, errors, plain helpers
    ("events", "conf", "exceptions", "text", "signals", "outages", "storage", "logs"),
    # 2. envelope parsing, models, the handler registry, the thin boto3 layer
    ("envelopes", "models", "migrations", "rules.registry", "rules.filters", "aws"),
    # 3. routing, follow-up commands, provisioning, SNS message verification
    ("rules", "followups", "provisioning", "emulator", "sns"),
    # 4. dispatch: records, dedupe, Celery or inline
    (
        "processing.runs",
        "processing.execution",
        "processing.outcomes",
        "processing.handoff",
        "processing.dispatch",
    ),
    # 5. the batch core shared by worker and Lambda, and what drives it again
    ("processing", "batch_jobs", "ops"),
    # 6. entrypoints: thin wiring; `testing`, the helpers users' own tests import
    (
        "worker",
        "lambda_handler",
        "management",
        "admin",
        "checks",
        "apps",
        "templatetags",
        "testing",
        "sns.views",
        "urls",
    ),
]


def layer_of(module: str) -> int:
    name = module.removeprefix("s3tasks.").removeprefix("s3tasks")
    best = (-1, -1)
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                best = max(best, (len(prefix), level))
    if best[1] < 0:
        raise AssertionError(f"s3tasks.{name} is in no layer: add it to LAYERS")
    return best[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("s3tasks."))
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "s3tasks":  # `from s3tasks import signals`
                found.update(f"s3tasks.{a.name}" for a in node.names)
            elif node.module.startswith("s3tasks."):
                found.add(node.module)
    return {m for m in found if m != module}


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if module == "s3tasks" or ".migrations." in module:
            continue  # the package's lazy exports name every layer on purpose
        own = layer_of(module)
        for target in sorted(imported_modules(path, module)):
            if (PACKAGE.parent / (target.replace(".", "/") + ".py")).exists() or (
                PACKAGE.parent / target.replace(".", "/")
            ).is_dir():
                if layer_of(target) > own:
                    found.append(
                        f"{module} (layer {own + 1}) imports {target} (layer "
                        f"{layer_of(target) + 1})"
                    )
    return found


def test_every_module_imports_only_from_its_own_layer_or_below():
    assert violations() == []
