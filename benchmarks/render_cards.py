"""Render every bundled model card's generated block and meta.json metrics from its metrics.json, and the
accuracy-target table of docs/benchmarks.md (``--check``: exit 1 when anything is out of date).

To record a re-measured number: run the card's command (``marrowscope evaluate ... --out E``), then
``python benchmarks/render_cards.py --from-eval MODEL SECTION E/metrics.json --reproduced "DATE, commit"``
which replaces that section's numbers with those of E/metrics.json, then renders.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from marrowscope.models.cards import (
    METRICS_FILE,
    load_metrics,
    section_from_eval,
    sync_benchmarks_doc,
    sync_bundle,
)
from marrowscope.models.registry import BUNDLED_DIR

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


def bundles() -> list[Path]:
    return sorted(p.parent for p in BUNDLED_DIR.glob(f"*/{METRICS_FILE}"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--from-eval", nargs=3, metavar=("MODEL", "SECTION", "METRICS_JSON"))
    ap.add_argument("--reproduced", default=None)
    a = ap.parse_args()
    if a.from_eval:
        model, sid, path = a.from_eval
        folder = BUNDLED_DIR / model
        m = load_metrics(folder)
        (old,) = [s for s in m["sections"] if s["id"] == sid]
        new = section_from_eval(path, section_id=sid, title=old["title"], command=old["command"],
                                reproduced=a.reproduced, note=old.get("note", ""), keys=list(old["metrics"]),
                                targets=old.get("targets", []))
        m["sections"] = [new if s["id"] == sid else s for s in m["sections"]]
        (folder / METRICS_FILE).write_text(json.dumps(m, indent=2) + "\n")
    ok = True
    for b in bundles():
        ok &= sync_bundle(b, check=a.check)
    ok &= sync_benchmarks_doc(DOC, bundles(), check=a.check)
    if a.check and not ok:
        print("model cards or docs/benchmarks.md are out of date: run benchmarks/render_cards.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
