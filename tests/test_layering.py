"""The toolchain's modules import each other without a circle (module-level and function-local imports alike:
a local import that only dodges a circle still hides one), and the program format imports under `python -OO`."""

import ast
import subprocess
import sys
from pathlib import Path

QUANT = Path(__file__).resolve().parents[1] / "quant"


def _module(path):
    rel = path.relative_to(QUANT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["stackcam.quant", *parts]), path.name == "__init__.py"


def _import_graph():
    graph = {}
    for path in sorted(QUANT.rglob("*.py")):
        name, is_pkg = _module(path)
        package = name if is_pkg else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            for t in targets:
                if t.startswith("stackcam.quant"):
                    deps.add(t)
        graph[name] = deps
    known = set(graph)
    return {m: {d for d in deps if d in known and d != m} for m, deps in graph.items()}


def test_quant_has_no_import_circle():
    graph = _import_graph()
    # Packages' __init__ importing their own submodules is not a circle of the toolchain's layers.
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert "stackcam.quant.golden" in graph and "stackcam.quant.report" in graph


def test_program_format_imports_under_OO():
    r = subprocess.run([sys.executable, "-OO", "-c", "import stackcam.quant.program as p; "
                        "print(len(p.FIELDS), p.Descriptor().op, len(p.pack(p.Descriptor(opcode=15))))"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["66", "INVALID", "128"]


def test_the_docs_table_is_generated_from_the_format():
    from stackcam.quant.program import format_markdown
    docs = Path(__file__).resolve().parents[1] / "docs" / "program-format.md"
    assert docs.read_text() == format_markdown()


def test_the_rtl_layout_is_the_format():
    from stackcam.quant.program import DESCRIPTOR_BYTES, FIELDS
    from stackcam.rtl.npu.ports import descriptor_layout
    layout = descriptor_layout()
    assert layout.size == 8 * DESCRIPTOR_BYTES
    for f in FIELDS:
        shape = layout[f.name].shape
        assert (shape.width, shape.signed) == (f.bits, f.signed)
        assert layout[f.name].offset == 8 * f.offset


def _private_format_imports(path, package):
    """[(line, module.name)] of underscore names `path` imports from the format modules."""
    public_only = {f"stackcam.quant.{m}" for m in ("program", "romimage", "golden", "report")}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".")
                mod = ".".join(base[:len(base) - (node.level - 1)] + ([mod] if mod else []))
            if mod in public_only:
                found += [(node.lineno, f"{mod}.{a.name}") for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_private_names_of_the_format_modules_are_imported_elsewhere():
    """The program format, the ROM image, the golden executor and the reports are used through public names only
    (the die's model loader reads the ROM layout as `romimage.HEADER`/`ENTRY`/`ALIGN`)."""
    root = QUANT.parent
    packages = {"quant": "stackcam.quant", "rtl": "stackcam.rtl", "sim": "stackcam.sim",
                "boards": "stackcam.boards", "stackcam": "stackcam", "tests": "tests"}
    offenders = []
    for folder, pkg in packages.items():
        for path in sorted((root / folder).rglob("*.py")):
            package = ".".join([pkg, *path.relative_to(root / folder).parent.parts])
            offenders += [f"{path.relative_to(root)}:{line} imports {name}"
                          for line, name in _private_format_imports(path, package)]
    assert not offenders, offenders


def test_the_private_import_check_sees_one(tmp_path):
    planted = tmp_path / "loader.py"
    planted.write_text("from stackcam.quant.romimage import HEADER, _ENTRY\nfrom ...quant.program import _x\n")
    assert _private_format_imports(planted, "stackcam.rtl.npu") == [
        (1, "stackcam.quant.romimage._ENTRY"), (2, "stackcam.quant.program._x")]
