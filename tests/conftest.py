from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data in ../shared/data; tests that need it skip with a clear reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (expected ../shared/data beside the checkout)")
    return SHARED_DATA


def require_program(name: str, package: str) -> str:
    """Path of a system program a test needs (e.g. ``chromium``, ``dciodvfy``, ``Orthanc``).

    Locally a missing program skips the test, naming the Debian package that brings it; under CI
    (``CI`` set) it fails, because ``make test`` installs these packages and CI must not skip them.
    """
    import os
    import shutil

    path = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        reason = f"{name} not found: install the Debian package '{package}' (make test does so as root)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path
