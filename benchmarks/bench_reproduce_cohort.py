"""The whole study, timed: ``marrowscope reproduce`` on a synthetic cohort of real-size ROIs with the default
(CPU) schedule, as a user runs it, plus the machine's load while it ran.

Writes ``--json`` (wall time of the command, each stage's seconds from ``reproduction.json``, peak RSS, load
averages sampled every 30 s, the table's numbers beside the paper's) and, with ``--doc``, the generated block
of ``docs/reproduction.md``. The cohort is written first unless ``--cohort`` names one (written with the
same ``marrowscope synth`` command, printed in the JSON).

Run (idle machine; issue 11's target: 48 patients on 2 CPU cores in <= 60 min):

    .venv/bin/python benchmarks/bench_reproduce_cohort.py --patients 48 --seed 48 --threads 2 \\
        --work runs/repro48 --json benchmarks/results/reproduce48.json --doc docs/reproduction.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BEGIN = ("<!-- BEGIN GENERATED reproduce48 from benchmarks/results/reproduce48.json "
         "by bench_reproduce_cohort.py -->")
KEYS = ("detection_ap50", "classification_macro_auc", "classification_macro_f1", "diagnosis_macro_f1_true",
        "diagnosis_macro_f1_predicted")


def _cli() -> list[str]:
    return [sys.executable, "-m", "marrowscope"]


def _sample_load(stop: threading.Event, out: list[list[float]]) -> None:
    while not stop.wait(30.0):
        out.append([round(x, 2) for x in os.getloadavg()])


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    cohort = args.cohort or work / "cohort"
    synth_cmd = _cli() + ["synth", "--patients", str(args.patients), "--seed", str(args.seed), "--out",
                          str(cohort)]
    synth_s = None
    if args.cohort is None and not (cohort / "csv").is_dir():
        t0 = time.perf_counter()
        subprocess.run(synth_cmd, check=True, stdout=subprocess.DEVNULL)
        synth_s = time.perf_counter() - t0
    out = work / "study"
    cmd = _cli() + ["reproduce", "--data", str(cohort), "--out", str(out), "--threads", str(args.threads),
                    "--device", "cpu"]
    load: list[list[float]] = [[round(x, 2) for x in os.getloadavg()]]
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_load, args=(stop, load), daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with open(work / "reproduce.log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    stop.set()
    load.append([round(x, 2) for x in os.getloadavg()])
    if rc != 0:
        raise SystemExit(f"reproduce failed (exit {rc}); see {work / 'reproduce.log'}")
    doc = json.loads((out / "reproduction.json").read_text())
    stages = doc["run"]["stages"]
    return {
        "command": " ".join(cmd),
        "synth_command": " ".join(synth_cmd[2:]),
        "cohort": str(cohort), "cohort_written_here": synth_s is not None,
        "synth_s": synth_s,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads,
                    "python": platform.python_version()},
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                 cwd=HERE.parent).stdout.strip(),
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "load_avg_1_5_15": load,
        "stage_seconds": {k: round(v["seconds"], 1) for k, v in stages.items()},
        "n_patients": doc["n_patients"],
        "ours": {k: doc.get(k) for k in KEYS},
        "ci": {k: doc.get("ci", {}).get(k) for k in KEYS},
        "paper": {k: doc["paper"].get(k) for k in KEYS},
        "detection_ap": doc.get("detection_ap"),
        "classification_balanced_accuracy": doc.get("classification_balanced_accuracy"),
        "diagnosis_rule_baseline_predicted": doc.get("diagnosis_rule_baseline_predicted"),
    }


def _f(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}"


def render(r: dict[str, Any]) -> str:
    from marrowscope.study.table import LABELS

    peak = max(max(x) for x in r["load_avg_1_5_15"])
    order = ("split", "detector", "classifier", "diagnosis")
    stages = dict(sorted(r["stage_seconds"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order
                         else len(order)))
    lines = [
        BEGIN, "",
        f"`{r['command']}` (commit {r['commit'][:7]}; cohort: `{r['synth_command']}`), "
        f"{r['machine']['cpu_count']} CPU cores, {r['machine']['threads']} threads: "
        f"**{r['wall_s'] / 60:.1f} min** wall for the whole study, peak RSS {r['peak_rss_mib']} MiB, "
        f"load average at most {peak:.1f} (sampled every 30 s).", "",
        "| stage | " + " | ".join(stages) + " | total |",
        "|---|" + "---|" * (len(stages) + 1),
        "| minutes | " + " | ".join(f"{s / 60:.1f}" for s in stages.values())
        + f" | {r['wall_s'] / 60:.1f} |", "",
        "| metric | paper | ours (48 synthetic patients) | 95 % CI |", "|---|---|---|---|",
    ]
    for k in KEYS:
        ci = r["ci"].get(k)
        lines.append(f"| {LABELS[k]} | {_f(r['paper'][k])} | {_f(r['ours'][k])} | "
                     f"{f'[{ci[0]:.3f}, {ci[1]:.3f}]' if ci else '—'} |")
    n = r["n_patients"]
    lines += ["", "Patients per split: " + ", ".join(f"{k} {v}" for k, v in n.items()) + ". "
              "Synthetic patients: these numbers say that the study runs end to end at this size, not how "
              "the models do on real slides.", "", "<!-- END GENERATED -->"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=48)
    ap.add_argument("--seed", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("runs/repro48"))
    ap.add_argument("--cohort", type=Path, default=None, help="an existing cohort (else written to WORK)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--doc", type=Path, default=None)
    ap.add_argument("--render-only", action="store_true", help="re-render --doc from --json")
    a = ap.parse_args()
    if a.render_only:
        r = json.loads(a.json.read_text())
    else:
        r = run(a)
        if a.json:
            a.json.write_text(json.dumps(r, indent=1) + "\n")
    print(json.dumps(r, indent=1))
    if a.doc:
        from marrowscope.models.cards import replace_block

        a.doc.write_text(replace_block(a.doc.read_text(), render(r), begin=BEGIN))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
