"""Child process of the fault-injection tests (test_faults.py): runs one command and SIGKILLs itself.

``python fault_child.py MODE OUT KILL_AT DATA``

MODE: ``analyze`` (the stub-model batch over the images in DATA), ``classifier`` (``marrowscope train
classifier`` on the PBC-layout folder DATA) or ``detector`` (the detector loop on tiny images).
KILL_AT: the number of the side-effecting event (a file write, rename, temporary, checkpoint, detector
call or optimiser step) before which the process kills itself with SIGKILL; ``-1`` runs to the end and
prints ``EVENTS <n>``. :func:`count_events` counts them in the test's own process (an uninterrupted
reference run), so only the killed runs pay for a new process.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

_count = [0]
_kill_at = [-1]


def _event() -> None:
    _count[0] += 1
    if _count[0] == _kill_at[0]:
        os.kill(os.getpid(), signal.SIGKILL)


def _hooked(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*a: Any, **k: Any) -> Any:
        _event()
        return fn(*a, **k)

    return wrapper


def install_hooks(put: Callable[[Any, str, Any], None] = setattr) -> None:
    """Count (and kill at) every side-effecting event; ``put`` is ``setattr`` or a monkeypatch's."""
    import torch

    from pipeline_stubs import BlobDetector

    for owner, name in ((os, "replace"), (tempfile, "mkstemp"), (tempfile, "mkdtemp"), (Path, "write_text"),
                        (Path, "write_bytes"), (torch, "save"), (torch.optim.AdamW, "step"),
                        (BlobDetector, "__call__")):
        put(owner, name, _hooked(getattr(owner, name)))


def count_events(mode: str, out: Path, data: Path, put: Callable[[Any, str, Any], None]) -> int:
    """Run ``mode`` in this process with the hooks installed (no kill); the number of its events."""
    _count[0], _kill_at[0] = 0, -1
    install_hooks(put)
    run(mode, out, data)
    return _count[0]


def run(mode: str, out: Path, data: Path) -> None:
    if mode == "analyze":
        from marrowscope.engines.batch import analyze_batch
        from pipeline_stubs import stub_models
        from test_faults import CFG

        analyze_batch([data], out, CFG, mpp=0.5, models=stub_models(), progress=False)
    elif mode == "classifier":
        from marrowscope.cli.main import main
        from test_faults import CLASSIFIER_ARGS

        rc = main(["train", "classifier", "--dataset", f"pbc:{data}", "--out", str(out), *CLASSIFIER_ARGS])
        if rc != 0:
            raise SystemExit(rc)
    elif mode == "detector":
        from marrowscope.engines.train_detector import train_detector
        from test_detector_train import _config, _samples
        from test_faults import DETECTOR_KW

        train_detector(_samples(4), [], _config(**DETECTOR_KW), out, progress=False)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    mode, out, kill_at, data = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    _kill_at[0] = kill_at
    install_hooks()
    run(mode, out, data)
    print(f"EVENTS {_count[0]}", flush=True)
