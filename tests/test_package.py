"""The package imports as one: each module once, under its package name, none importing another in a
loop, and the command the same as a file and as a module."""
import ast
import os
import re
import subprocess
import sys

from helpers import PACKAGE, ROOT

MODULES = sorted(name[:-3] for name in os.listdir(PACKAGE) if name.endswith(".py"))


def package_imports(module):
    """The package's modules that `module` imports anywhere in its source, functions included."""
    with open(os.path.join(PACKAGE, module + ".py")) as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "dendritic_experiment":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dendritic_experiment."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("dendritic_experiment.")}
    return found


def test_no_module_imports_another_in_a_loop():
    graph = {module: package_imports(module) for module in MODULES}
    assert graph["main"] and all(imported in MODULES for imported in set().union(*graph.values()))

    def loop_from(module, path):
        if module in path:
            return path[path.index(module):] + [module]
        for imported in sorted(graph[module]):
            if found := loop_from(imported, path + [module]):
                return found
        return None

    for module in MODULES:
        assert loop_from(module, []) is None, " -> ".join(loop_from(module, []))


def imported_modules(*command, cwd):
    """Every module a command imports, by name (python -X importtime lists each once it is loaded)."""
    finished = subprocess.run([sys.executable, "-X", "importtime", *command, "--help"], cwd=cwd, capture_output=True,
                              text=True, timeout=120, env=dict(os.environ, PYTHONPATH=""))
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "--batch-size INT" in finished.stdout
    return [match.group(1) for match in re.finditer(r"^import time:.*\|\s+(\S+)$", finished.stderr, re.MULTILINE)]


def test_the_command_runs_as_a_file_and_as_a_module_loading_each_module_once(tmp_path):
    as_file = imported_modules(os.path.join(PACKAGE, "main.py"), cwd=tmp_path)  # from any folder
    as_module = imported_modules("-m", "dendritic_experiment", cwd=ROOT)
    for modules in (as_file, as_module):
        ours = [name for name in modules if name.split(".")[0] == "dendritic_experiment"]
        assert "dendritic_experiment.settings" in ours and len(ours) == len(set(ours))
        assert not set(modules) & set(MODULES), "a module of ours imported under a generic name"
    # As a file, main.py runs as __main__ and nothing imports it again (a second copy of its state).
    assert "dendritic_experiment.main" not in as_file and "dendritic_experiment.main" in as_module
