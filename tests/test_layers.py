"""Every module imports on its own, and no module reaches itself through its imports.

Import order hides cycles: `import silkie.a` may work only because something imported `silkie.b`
first. So each module is imported into a process where no silkie module has been imported yet.
A fresh interpreter per module would spend most of a minute re-importing torch, transformers and
datasets; instead one interpreter imports those third-party packages once and forks a child per
module. Third-party packages never import silkie, so each child still starts with none of it.

The layer order itself is `lint-imports`' to check (pyproject.toml, run by .ci/run); the cycle test
here also covers a package's __init__ and its own modules, which import-linter's sibling check skips.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "silkie"

# Imported once, before the forks: the slow third-party imports at the top of silkie's modules
# (schema needs datasets; the OpenAI backend openai; the tiny models and the recipe torch,
# transformers' modelling code and peft). An optional one that is missing is left to its importer.
THIRD_PARTY = ("datasets", "openai", "PIL.Image", "torch", "transformers.modeling_utils", "peft")
PARALLEL = 4  # children importing at once: forks are cheap, and a child mostly waits on the disk

FORK_EACH = textwrap.dedent("""
    import importlib, os, sys, traceback
    for name in sys.argv[1].split(","):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    assert not [m for m in sys.modules if m.split(".")[0] == "silkie"], "a third-party package imported silkie"
    todo, running, failed = sys.argv[2:], {}, []
    while todo or running:
        while todo and len(running) < int(os.environ["PARALLEL"]):
            name = todo.pop(0)
            pid = os.fork()
            if pid == 0:
                try:
                    importlib.import_module(name)
                except BaseException:
                    os.write(2, f"--- import {name}\\n{traceback.format_exc()}".encode())
                    os._exit(1)
                os._exit(0)
            running[pid] = name
        pid, status = os.wait()
        if status:
            failed.append(running[pid])
        del running[pid]
    print("FAILED:" + ",".join(sorted(failed)))
""")


def modules() -> list[str]:
    """Every module of the package, found on disk (importing packages to walk them would pre-import them)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":  # runs the command when imported
            continue
        # Only folders that are packages: silkie/resources holds the Space's app as data.
        if not all((PACKAGE.parent.joinpath(*parts[:i]) / "__init__.py").is_file() for i in range(1, len(parts))):
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_on_its_own():
    names = modules()
    assert "silkie.openai_api" in names and "silkie.eval.mini" in names
    done = subprocess.run([sys.executable, "-c", FORK_EACH, ",".join(THIRD_PARTY), *names], capture_output=True,
                          text=True, timeout=300, cwd=PACKAGE.parent, env={**os.environ, "PARALLEL": str(PARALLEL)})
    assert done.returncode == 0, done.stderr[-3000:]
    failed = done.stdout.rsplit("FAILED:", 1)[1].strip()
    assert not failed, f"modules that fail to import on their own: {failed}\n{done.stderr[-3000:]}"


def test_no_module_imports_itself_through_others():
    grimp = pytest.importorskip("grimp")  # installed with import-linter (the dev extra)
    graph = grimp.build_graph("silkie", cache_dir=None)  # imports inside functions count too
    cycles = [sorted(group) for group in _strongly_connected(graph) if len(group) > 1]
    assert not cycles, f"import cycles: {cycles}"


def _strongly_connected(graph) -> list[set[str]]:
    """Tarjan's algorithm over the module import graph, iterative (no recursion limit to meet)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                groups.append(group)
    return groups
