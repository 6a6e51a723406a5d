"""House rules checked on the source itself (AST of every module) and by behaviour:

- layering: ``io`` never imports ``models``/``engines``/``eval``/``report``; ``eval`` never imports
  ``engines``; ``report`` never imports ``engines``; ``models`` never imports ``engines``/``eval``/``report``;
  only ``cli`` imports ``cli`` (every import counts: module level, in functions, under TYPE_CHECKING);
- no library call changes process-wide state: ``matplotlib.use``, pyplot, ``torch.manual_seed``,
  ``torch.set_num_threads`` and ``np.random.seed`` appear only in ``runtime.py`` or in functions wrapped
  by ``@isolated_state``, which restores them;
- supported file suffixes are listed once, in ``io/formats.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import marrowscope

SRC = Path(marrowscope.__file__).resolve().parent
MODULES = sorted(p for p in SRC.rglob("*.py"))

#: package -> packages it must never import
FORBIDDEN = {
    "io": ("models", "engines", "eval", "report", "cli", "study", "review"),
    "eval": ("engines", "cli"),
    "report": ("engines", "cli"),
    "models": ("engines", "eval", "report", "cli"),
    "data": ("engines", "eval", "report", "cli"),
    "engines": ("cli",),
}
GLOBAL_STATE_CALLS = {"matplotlib.use", "torch.manual_seed", "torch.set_num_threads", "np.random.seed",
                      "numpy.random.seed", "torch.cuda.manual_seed_all"}


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(tree: ast.AST, path: Path) -> set[str]:
    out: set[str] = set()
    rel = path.relative_to(SRC)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the module's package
                base = list(("marrowscope", *rel.parts[:-1]))[: len(rel.parts) - node.level + 1]
                out.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                out.add(node.module)
    return {m for m in out if m == "marrowscope" or m.startswith("marrowscope.")}


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def test_import_layering() -> None:
    bad = []
    for path in MODULES:
        pkg = _package(path)
        for mod in _imports(ast.parse(path.read_text()), path):
            parts = mod.split(".")
            target = parts[1] if len(parts) > 1 else ""
            if target in FORBIDDEN.get(pkg, ()):
                bad.append(f"{path.relative_to(SRC)} imports {mod}")
            if target == "cli" and pkg not in ("cli", "__main__"):
                bad.append(f"{path.relative_to(SRC)} imports the CLI ({mod})")
    assert not bad, "\n".join(bad)


def test_the_layering_check_can_fail(tmp_path: Path) -> None:
    fake = SRC / "eval" / "x.py"
    tree = ast.parse("def f():\n    from marrowscope.engines.detect import detect_image\n")
    assert "marrowscope.engines.detect" in _imports(tree, fake)
    tree = ast.parse("from ..engines import batch\n")
    assert "marrowscope.engines" in _imports(tree, SRC / "report" / "index.py")


def test_no_process_wide_state_changes() -> None:
    bad = []
    for path in MODULES:
        if path.name == "runtime.py":
            continue
        tree = ast.parse(path.read_text())
        isolated: set[int] = set()
        for fn in ast.walk(tree):
            decorators = fn.decorator_list if isinstance(fn, ast.FunctionDef) else []
            if any(_dotted(d) == "isolated_state" for d in decorators):
                isolated.update(id(n) for n in ast.walk(fn))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and id(node) not in isolated:
                name = _dotted(node.func)
                if name in GLOBAL_STATE_CALLS:
                    bad.append(f"{path.relative_to(SRC)}:{node.lineno} calls {name}")
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.startswith("matplotlib.pyplot") for n in names):
                    bad.append(f"{path.relative_to(SRC)}:{node.lineno} imports matplotlib.pyplot")
    assert not bad, "\n".join(bad)


SLIDE_OR_IMAGE = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".mrxs", ".svs",
                  ".ndpi", ".scn", ".bif", ".vms", ".vmu", ".svslide", ".dcm", ".dicom"}


def test_suffixes_are_listed_once_in_io_formats() -> None:
    """No module but io/formats.py holds a list (tuple, set) of two or more slide/image suffixes."""
    owners = set()
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                values = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if len({v for v in values if isinstance(v, str)} & SLIDE_OR_IMAGE) >= 2:
                    owners.add(str(path.relative_to(SRC)))
    assert owners == {"io/formats.py"}


def test_info_and_analyze_accept_the_same_slide_files() -> None:
    from marrowscope.io import formats

    for suffix in formats.SLIDE_FILE_SUFFIXES:
        assert suffix in formats.OPENSLIDE_SUFFIXES or suffix in formats.IMAGE_SUFFIXES
    assert ".webp" in formats.SLIDE_FILE_SUFFIXES


def _state() -> tuple[bytes, int, tuple[object, ...]]:
    np_state = np.random.get_state()
    return (bytes(torch.get_rng_state().numpy()), torch.get_num_threads(),
            (np_state[1].tobytes(), *np_state[2:]))  # type: ignore[index]


def test_library_calls_leave_global_state_alone(tmp_path: Path) -> None:
    import matplotlib

    from marrowscope.engines.pipeline import AnalysisConfig, analyze_slide
    from marrowscope.eval.detection import evaluate_detections, plot_pr_curve
    from marrowscope.models.classifier import create_classifier, make_spec
    from pipeline_stubs import smear_slide, stub_models, two_rois

    models = stub_models()  # the test's own stand-ins may draw from the generator: made beforehand
    torch.manual_seed(1234)
    np.random.seed(99)
    backend = matplotlib.get_backend()
    before = _state()
    create_classifier(make_spec(["myeloblast", "lymphocyte"], input_size=32), seed=5)
    assert _state() == before
    analyze_slide(smear_slide(), models, AnalysisConfig(target_cells=5, tta=1, threads=1),
                  annotations=two_rois())
    assert _state() == before
    from marrowscope.cells import CellAnnotations, Detections

    m = evaluate_detections([Detections.empty(("cell",))], [CellAnnotations(cells=(), width=8, height=8)],
                            ("cell",))
    plot_pr_curve(m, tmp_path / "pr.png")
    assert _state() == before
    assert matplotlib.get_backend() == backend
    assert (tmp_path / "pr.png").stat().st_size > 1000


@pytest.mark.parametrize("seed", [3])
def test_analysis_is_still_seeded(seed: int) -> None:
    """Restoring the caller's generator does not make the analysis itself any less reproducible."""
    from marrowscope.engines.pipeline import AnalysisConfig, analyze_slide
    from pipeline_stubs import smear_slide, stub_models, two_rois

    cfg = AnalysisConfig(target_cells=5, tta=2, seed=seed)
    a = analyze_slide(smear_slide(), stub_models(), cfg, annotations=two_rois())
    torch.rand(10)
    b = analyze_slide(smear_slide(), stub_models(), cfg, annotations=two_rois())
    assert [c.probabilities for c in a.cells.cells] == [c.probabilities for c in b.cells.cells]
