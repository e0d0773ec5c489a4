"""A plan as text for people: one line per step, `+`/`~`/`-`/`=` for create/change/remove/
record, `!` for notes and `✗` for what blocks it, each marked `[ours]`, `[adopted]` or
`[foreign]`."""

from __future__ import annotations

from s3tasks.provisioning.steps import Plan, Step

MARK_WIDTH = len("[adopted]")


def _line(step: Step) -> str:
    return f"  {step.symbol} {f'[{step.ownership}]':<{MARK_WIDTH}} {step.message}"


def render_plan(plan: Plan, *, color: bool = False) -> str:
    """The plan as lines; `color` uses rich markup rendered to ANSI (for a terminal)."""
    scope = ", ".join(plan.buckets) if plan.buckets is not None else "all buckets"
    lines = [
        f"s3tasks sync plan for {scope} (account {plan.desired.account.id}, "
        f"{plan.desired.account.region}):"
    ]
    if not plan.steps:
        lines.append("  Everything is in sync; no changes.")
    lines += [_line(step) for step in plan.steps]
    if plan.blocked:
        lines.append(
            f"Blocked by {len(plan.foreign)} resource(s) s3tasks did not make (✗): nothing will "
            "be changed. Run again with --adopt to adopt them, or change the models."
        )
    elif plan.has_changes:
        lines.append(f"{len(plan.changes)} change(s) pending.")
    elif plan.steps:
        lines.append("No changes to apply (notes above need --prune or are for information).")
    text = "\n".join(lines)
    return _colorize(text) if color else text


def _colorize(text: str) -> str:
    try:
        from rich.console import Console
        from rich.text import Text
    except ImportError:  # rich is optional: plain text is fine
        return text
    styles = {"+": "green", "-": "red", "~": "yellow", "=": "cyan", "!": "magenta", "✗": "bold red"}
    console = Console(force_terminal=True, width=200)
    rendered = Text()
    for line in text.splitlines():
        style = styles.get(line.strip()[:1], "")
        rendered.append(line + "\n", style=style if line.startswith("  ") else "bold")
    with console.capture() as capture:
        console.print(rendered, end="")
    return capture.get().rstrip("\n")
