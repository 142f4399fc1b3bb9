"""Run a benchmark another module owns (`bench.mirror`, `bench.dashboard`) in its own process.

The module exposes one function, found by name in FUNCTIONS order; it is called with the keyword arguments
its signature names, taken from the context the harness passes (see CONTEXT_KEYS), and returns a JSON-able dict.
Usage: python -m bench.external <module> '<context JSON>'
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import traceback

from bench.common import emit, mask

FUNCTIONS = ("run", "benchmark", "bench", "measure", "main")
# keys of the context: lake, source, data_dir, dsn, events, workdir, quick, repeat; plus `settings` and `context`
CONTEXT_KEYS = ("lake", "source", "data_dir", "dsn", "events", "workdir", "quick", "repeat")


def find_function(module):
    for name in FUNCTIONS:
        fn = getattr(module, name, None)
        if callable(fn):
            return fn
    return None


def call(module_name: str, context: dict) -> dict:
    """Import `bench.<module_name>`, call its function with what it asks for; errors become a report."""
    try:
        module = importlib.import_module(f"bench.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name in (f"bench.{module_name}",):
            return {"ok": False, "missing": True, "error": f"bench/{module_name}.py does not exist yet"}
        return {"ok": False, "error": mask(f"import failed: {exc}")}
    fn = find_function(module)
    if fn is None:
        return {
            "ok": False,
            "missing": True,
            "error": f"bench/{module_name}.py has none of the functions {', '.join(FUNCTIONS)}",
        }
    kwargs = {}
    params = inspect.signature(fn).parameters
    for name, param in params.items():
        if name in context:
            kwargs[name] = context[name]
        elif name in ("context", "ctx"):
            kwargs[name] = context
        elif name == "settings":
            from lakehouse.config import Settings

            kwargs[name] = Settings()
        elif param.kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update({k: v for k, v in context.items() if k not in kwargs})
        elif param.default is inspect.Parameter.empty and param.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            return {
                "ok": False,
                "error": f"bench.{module_name}.{fn.__name__} needs {name!r}, which the harness "
                f"does not provide (it provides {', '.join(CONTEXT_KEYS)}, settings)",
            }
    try:
        report = fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - recorded, the harness goes on
        return {
            "ok": False,
            "error": mask(f"{type(exc).__name__}: {exc}")[:600],
            "traceback": mask(traceback.format_exc()[-2000:]),
        }
    if not isinstance(report, dict):
        report = {"value": report}
    return {"ok": True, "function": fn.__name__, "report": report}


if __name__ == "__main__":
    emit(call(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
