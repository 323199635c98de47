"""The house: no import circles among cmpl/, pipelines/, preprocess/ and bench/, no code under results/, and
every command's `__main__` block goes through preprocess.entry.run_main (closed pipe and Ctrl-C: one exit code,
no traceback).

What counts as an import: every `import` / `from ... import` statement of a module, at module level and inside
functions alike. A function-level import is how a command keeps torch and DALI out of `--help`, but deferring an
import does not change which module depends on which: a loop closed by one is still a loop (the two modules
can no longer be read, tested or moved apart, and it turns into an import-time failure as soon as the import
moves to the top). Only an `if __name__ == "__main__":` block is left out: when `python -m pkg.mod` runs it,
it is code of the module `__main__`, a second module object next to `pkg.mod`, so it can start a chain of
imports but never close one (`python -m cmpl.config` runs cmpl.cli's body this way).
`from pkg import name` is an import of the module `pkg.name` when there is one, else of `pkg`.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cmpl", "pipelines", "preprocess", "bench")


def _modules() -> dict[str, Path]:
    """The modules of the four packages: files in folders that are packages (an `__init__.py` all the way down),
    so build and download folders under them (bench/wheels/, ignored by git) are not walked."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            folders = path.relative_to(REPO).parents
            if not all((REPO / f / "__init__.py").is_file() for f in folders if f != Path(".")):
                continue
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _is_main_block(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators))


def _known(name: str) -> str | None:
    """The deepest module of the four packages that `name` (a dotted import target) lies in, if any."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path) -> set[str]:
    """The modules of the four packages that module `name` imports anywhere but in its `__main__` block."""
    return imports_in(path.read_text(), name, is_package=path.name == "__init__.py")


def imports_in(source: str, name: str, *, is_package: bool = False) -> set[str]:
    """`imports_of` for the source text of module `name`."""
    tree = ast.parse(source)
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if node is tree and _is_main_block(child):
                continue
            if isinstance(child, ast.Import):
                targets.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[:len(package.split(".")) - (child.level - 1)]
                    base = ".".join(up + ([child.module] if child.module else []))
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in MODULES else base)
            visit(child)

    visit(tree)
    return {m for m in map(_known, targets) if m is not None and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` as [a, b, ..., a], or None (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := dfs(start)):
            return cycle
    return None


def test_no_import_circles():
    graph = {name: imports_of(name, path) for name, path in MODULES.items()}
    assert sum(map(len, graph.values())) > 100  # the walk sees the imports (a broken walk finds no circle)
    assert "cmpl.config" in graph["cmpl.cli"] and "cmpl.cli" not in graph["cmpl.config"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_walk_counts_function_level_imports_and_finds_circles():
    source = ("import os\nfrom . import registry\n\ndef f():\n    from cmpl import cli\n\n"
              "if __name__ == '__main__':\n    from cmpl import train\n")
    assert imports_in(source, "cmpl.x") == {"cmpl.registry", "cmpl.cli"}  # not os, not the __main__ block's
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_code_under_results():
    code = [p.relative_to(REPO) for p in (REPO / "results").rglob("*") if p.suffix in (".py", ".sh", ".ipynb")]
    assert not code, f"code belongs in a package or examples/, not under results/: {code}"


def _main_blocks() -> dict[str, ast.If]:
    blocks = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if _is_main_block(node):
                blocks[name] = node
    return blocks


def test_every_command_exits_through_run_main():
    blocks = _main_blocks()
    assert {"cmpl.train", "cmpl.predict", "preprocess.ucf101", "bench.loader"} <= set(blocks)
    missing = [name for name, node in blocks.items()
               if "run_main(" not in ast.unparse(node) or "preprocess.entry" not in ast.unparse(node)]
    assert not missing, f"__main__ blocks that do not call preprocess.entry.run_main: {missing}"


def _closed_stdout(*args: str) -> subprocess.CompletedProcess:
    """Run `python ARGS` with the reading end of its stdout closed before it writes (`... | head -1` at its
    worst), stderr captured."""
    p = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    return subprocess.CompletedProcess(p.args, p.returncode, "", err)


@pytest.mark.parametrize("args", [("-m", "cmpl.predict", "--help"), ("-m", "cmpl.config", "--list"),
                                  ("-m", "cmpl.config", "--preset", "tiny")])
def test_closed_pipe_is_a_quiet_exit_141(args):
    from preprocess.entry import EXIT_CLOSED_PIPE

    r = _closed_stdout(*args)
    assert r.returncode == EXIT_CLOSED_PIPE == 141 and r.stderr == "", r.stderr[-2000:]


@pytest.mark.parametrize("module", ["cmpl.demo", "preprocess.splits", "bench.models"])
def test_closed_pipe_under_argparse_help_is_quiet(module):
    # argparse ignores an OSError while it prints --help and exits 0; nothing reaches stderr either way.
    r = _closed_stdout("-m", module, "--help")
    assert r.returncode in (0, 141) and r.stderr == "", r.stderr[-2000:]


def test_a_broken_pipe_that_is_not_stdout_keeps_its_traceback(tmp_path):
    script = tmp_path / "other_pipe.py"
    script.write_text("from preprocess.entry import run_main\n"
                      "def main():\n    raise BrokenPipeError(32, 'Broken pipe (a subprocess)')\n"
                      "run_main(main)\n")
    r = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 1 and "BrokenPipeError" in r.stderr
