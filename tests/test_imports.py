"""
The three floors (the README's Layout): scripts/ -> tasks/ -> nanoocr/, imports only downward, and
a script imports no other script except its own parts (the bench's and the server's), and a name is
imported from the module that defines it, never re-exported through another.
"""

import ast
import glob
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# script -> the scripts it may import: its own parts, which import no script themselves
SCRIPT_PARTS = {"bench": {"bench_common", "bench_encoder", "bench_generate"}, "bench_encoder": {"bench_common"},
                "bench_generate": {"bench_common"}, "serve": {"serve_queue"}}


def imported(path):
    """{(package, module)} of every `import nanoocr.x` / `from tasks.x import y` / `from scripts import z`
    in a file, lazy imports inside functions included."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            pkg = node.module.split(".")
            names = [node.module] if len(pkg) > 1 else [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            parts = n.split(".")
            if parts[0] in ("nanoocr", "tasks", "scripts"):
                found.add((parts[0], parts[1] if len(parts) > 1 else ""))
    return found


def test_floors_import_only_downward_and_no_script_imports_another():
    def modules(floor):
        return {os.path.splitext(os.path.basename(p))[0]: p for p in glob.glob(os.path.join(REPO, floor, "*.py"))}
    assert len(modules("nanoocr")) > 20 and len(modules("scripts")) > 10  # the globs found the floors
    for name, path in modules("nanoocr").items():
        assert not {p for p, _ in imported(path)} & {"tasks", "scripts"}, f"nanoocr/{name}.py imports from above"
    for name, path in modules("tasks").items():
        assert "scripts" not in {p for p, _ in imported(path)}, f"tasks/{name}.py imports a script"
    for name, path in modules("scripts").items():
        scripts = {m for p, m in imported(path) if p == "scripts"}
        assert scripts <= SCRIPT_PARTS.get(name, set()), f"scripts/{name}.py imports scripts {sorted(scripts)}"


def _top_level(path):
    """(names a module defines at its top level, names it only imports there)."""
    defined, imports = set(), set()
    for node in ast.parse(open(path, encoding="utf-8").read()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imports |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return defined, imports - defined


def test_no_module_re_exports_another_modules_names():
    """`from nanoocr.X import name` takes name from the module that defines it, never from one that
    imported it (a re-export keeps two addresses for one thing)."""
    def source(module):
        base = os.path.join(REPO, *module.split("."))
        return next((p for p in (base + ".py", os.path.join(base, "__init__.py")) if os.path.exists(p)), None)
    bad = []
    for path in glob.glob(os.path.join(REPO, "*", "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, REPO)
        if rel.split(os.sep)[0] not in ("nanoocr", "tasks", "scripts", "tests", "dev"):
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                    and node.module.split(".")[0] in ("nanoocr", "tasks", "scripts")):
                continue
            src = source(node.module)
            if src is None or src.endswith("__init__.py"):
                continue
            _, only_imported = _top_level(src)
            bad += [f"{rel}:{node.lineno}: {a.name} from {node.module}" for a in node.names
                    if a.name in only_imported and source(f"{node.module}.{a.name}") is None]
    assert not bad, "re-exported names; import them from where they are defined:\n" + "\n".join(bad)
