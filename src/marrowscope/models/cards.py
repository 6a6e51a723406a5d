"""Model-card numbers from metrics files: one source of truth per number.

Each bundled model folder holds ``metrics.json``::

    {"model": "detector-synth",
     "sections": [{"id": "test", "title": "...", "command": "marrowscope evaluate detector ... --out E",
                   "reproduced": "2026-12-01, main at <commit>" | null, "note": "...",
                   "metrics": {"ap50": 0.953, ...},
                   "targets": [{"target": "AP@0.5 >= 0.95 on unseen synthetic patients",
                                "metric": "ap50", "min": 0.95}]}]}

``metrics`` of a section are the scalar numbers of the ``metrics.json`` that the section's command wrote
(:func:`section_from_eval` picks them), or, where a number could not be re-measured (``reproduced`` is
null), the numbers recorded when the model was built, said so in the card. :func:`sync_bundle` renders
the card's generated block (between :data:`BEGIN` and :data:`END`) and ``meta.json``'s ``metrics`` from
it; :func:`render_targets` renders the accuracy-target rows of ``docs/benchmarks.md``. A test checks that
every bundled card and meta agree with their metrics file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from marrowscope.errors import InputError

METRICS_FILE = "metrics.json"
BEGIN = "<!-- BEGIN GENERATED from metrics.json by marrowscope.models.cards: do not edit by hand -->"
END = "<!-- END GENERATED -->"
BENCH_BEGIN = "<!-- BEGIN GENERATED accuracy targets from src/marrowscope/bundled/*/metrics.json -->"

#: scalar keys of the evaluate commands' metrics.json files worth a card row (others are curves/arrays)
_SKIP = {"pr_curve_50", "recall_thresholds", "confusion", "classes", "model_classes", "per_class",
         "weights", "dataset", "contract", "weights_sha256"}


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    if isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, int | float) for x in v):
        return f"[{_fmt(float(v[0]))}, {_fmt(float(v[1]))}]"
    return str(v)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, int | float | str | bool) or v is None or (
                isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, int | float) for x in v)):
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def section_from_eval(eval_metrics: str | Path | Mapping[str, Any], *, section_id: str, title: str,
                      command: str, reproduced: str | None, note: str = "",
                      keys: Sequence[str] | None = None,
                      targets: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A card section from the ``metrics.json`` an ``evaluate`` command wrote (path or loaded dict):
    its scalar numbers (``keys`` picks and orders them; nested ones as ``a.b``)."""
    if isinstance(eval_metrics, str | Path):
        d = json.loads(Path(eval_metrics).read_text())
    else:
        d = dict(eval_metrics)
    flat = _flatten({k: v for k, v in d.items() if k not in _SKIP})
    if keys is not None:
        missing = [k for k in keys if k not in flat]
        if missing:
            raise InputError(str(eval_metrics)[:200], f"metrics file lacks {', '.join(missing)}")
        flat = {k: flat[k] for k in keys}
    return {"id": section_id, "title": title, "command": command, "reproduced": reproduced, "note": note,
            "metrics": flat, "targets": [dict(t) for t in targets]}


def load_metrics(folder: str | Path) -> dict[str, Any]:
    p = Path(folder) / METRICS_FILE
    if not p.is_file():
        raise InputError(p, "no metrics file: a bundled model's numbers come from metrics.json")
    d = json.loads(p.read_text())
    if not isinstance(d, dict) or not isinstance(d.get("sections"), list):
        raise InputError(p, "metrics.json must hold {'model': ..., 'sections': [...]}")
    return d


def render_card_block(metrics: Mapping[str, Any]) -> str:
    """The generated part of a model card (markdown, between :data:`BEGIN` and :data:`END`)."""
    lines = [BEGIN, "", "## Measured numbers", ""]
    for s in metrics["sections"]:
        lines.append(f"### {s['title']}")
        lines.append("")
        lines.append(f"Command: `{s['command']}`")
        lines.append("")
        if s.get("reproduced"):
            lines.append(f"Re-measured with this command: {s['reproduced']}.")
        else:
            lines.append("**Not re-measured for this card**: numbers recorded earlier with this command "
                         "(see the note); its inputs are not kept here, so it was not re-run.")
        if s.get("note"):
            lines.append(s["note"])
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in s["metrics"].items()]
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


def meta_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``meta.json``'s ``metrics``: ``<section id>.<metric>`` -> value, from the metrics file."""
    return {f"{s['id']}.{k}": v for s in metrics["sections"] for k, v in s["metrics"].items()}


def replace_block(text: str, block: str, begin: str = BEGIN) -> str:
    """``text`` with its generated block (from ``begin`` to the next :data:`END`) replaced by ``block``,
    or ``block`` appended when there is none."""
    if begin in text and END in text[text.index(begin):]:
        a = text.index(begin)
        b = text.index(END, a) + len(END)
        return text[:a] + block.rstrip("\n") + text[b:]
    return text.rstrip("\n") + "\n\n" + block


def write_generated_block(doc: str | Path, begin: str, body: str) -> None:
    """Rewrite ``doc``'s generated block that starts with ``begin`` (appended when there is none) to hold
    ``body``: how a benchmark writes the numbers it measured into a doc."""
    path = Path(doc)
    block = f"{begin}\n\n{body.rstrip()}\n\n{END}\n"
    path.write_text(replace_block(path.read_text(encoding="utf-8"), block, begin=begin), encoding="utf-8")


def sync_bundle(folder: str | Path, *, check: bool = False) -> bool:
    """Render ``card.md``'s generated block and ``meta.json``'s ``metrics`` from ``metrics.json``.

    ``check``: write nothing, return whether both already agree. Otherwise rewrite them (returns True)."""
    from marrowscope.io.atomic import write_text_atomic

    folder = Path(folder)
    metrics = load_metrics(folder)
    card_p, meta_p = folder / "card.md", folder / "meta.json"
    card = card_p.read_text() if card_p.is_file() else f"# {metrics.get('model', folder.name)}\n"
    new_card = replace_block(card, render_card_block(metrics))
    meta = json.loads(meta_p.read_text())
    new_meta = {**meta, "metrics": meta_metrics(metrics)}
    same = new_card == card and new_meta == meta
    if check or same:
        return same
    write_text_atomic(card_p, new_card)
    write_text_atomic(meta_p, json.dumps(new_meta, indent=2, sort_keys=True) + "\n")
    return True


def render_targets(bundles: Sequence[str | Path]) -> str:
    """The accuracy-target table of ``docs/benchmarks.md`` from the bundles' metrics files."""
    rows = ["| model | target | measured | status | command |", "|---|---|---|---|---|"]
    for folder in bundles:
        m = load_metrics(folder)
        for s in m["sections"]:
            for t in s.get("targets", []):
                v = s["metrics"][t["metric"]]
                ok = v >= t["min"] if "min" in t else v <= t["max"]
                rows.append(f"| `{m['model']}` | {t['target']} | {_fmt(v)} ({t['metric']}) | "
                            f"{'met' if ok else 'not met'} | `{s['command']}` |")
    return "\n".join([BENCH_BEGIN, "", *rows, "", END]) + "\n"


def sync_benchmarks_doc(doc: str | Path, bundles: Sequence[str | Path], *, check: bool = False) -> bool:
    """Rewrite (or with ``check`` compare) the generated target table in ``docs/benchmarks.md`` (a
    hand-written doc of the repository: only its generated block changes)."""
    p = Path(doc)
    text = p.read_text()
    if BENCH_BEGIN not in text:
        raise InputError(p, f"no generated block; add a line {BENCH_BEGIN!r} … {END!r} where it goes")
    new = replace_block(text, render_targets(bundles), begin=BENCH_BEGIN)
    if check or new == text:
        return new == text
    p.write_text(new, encoding="utf-8")
    return True
