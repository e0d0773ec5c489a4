"""Which handlers an event runs: the handler registry and its decorators (`registry`), event
patterns and filters (`filters`), rules declared in code (`code_bindings`) and routing."""
