"""Atomic file and folder writes that never replace what marrowscope did not write.

- An output appears complete or not at all: files and folders are built under a hidden temporary
  name beside the target (``.<name>.XXXX.part``) and renamed into place at the end.
- Ownership: every folder marrowscope creates holds a marker file (:data:`MARKER`); in a folder it did
  not create (a user's folder given as an output path) the marker lists the files marrowscope wrote
  there. An existing file or folder is replaced only when the marker says it is marrowscope's own;
  anything else is refused with an :class:`~marrowscope.errors.InputError` that says how to proceed.
- Leftovers: a process holds a lock on each temporary it builds, so a later run can tell the remains
  of a killed run (lock free) from the work of a live one, and :func:`remove_stale_parts` removes them.
- Permissions: ``mkstemp``/``mkdtemp`` create private (0600/0700) temporaries; before one is moved
  into place it gets the mode a plain ``open``/``mkdir`` would have given it (0666/0777 less the
  process umask: 0644/0755 under the default umask), so outputs stay readable by the other users of a
  shared server like any other file the user writes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from marrowscope.errors import InputError

MARKER = ".marrowscope-owned"
PART = ".part"
_MOVE_AWAY = ("move it away or choose another output path (outputs of older marrowscope versions carry no "
              "marker: delete them to redo)")


# ------------------------------------------------------------------------------------------------ ownership


def _read_marker(folder: Path) -> dict[str, object] | None:
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("owner") == "marrowscope" else None


def _write_marker(folder: Path, *, whole: bool, files: tuple[str, ...] = ()) -> None:
    doc = {"owner": "marrowscope", "folder": whole, "files": sorted(set(files))}
    tmp = folder / f"{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MARKER)


def owns_folder(folder: str | os.PathLike[str]) -> bool:
    """True when marrowscope created ``folder`` or a folder above it (its marker says so)."""
    p = Path(folder).absolute()
    for d in (p, *p.parents):
        m = _read_marker(d)
        if m is not None and m.get("folder") is True:
            return True
    return False


def owns_file(path: str | os.PathLike[str]) -> bool:
    """True when marrowscope wrote ``path`` (in an owned folder, or listed in its folder's marker)."""
    p = Path(path).absolute()
    if owns_folder(p.parent):
        return True
    m = _read_marker(p.parent)
    files = m.get("files") if m is not None else None
    return isinstance(files, list) and p.name in files


def claim_file(path: Path) -> None:
    """Record in the marker of ``path``'s folder that marrowscope wrote it (under a lock: many writers)."""
    folder = path.parent
    if owns_folder(folder):
        return
    lock = os.open(folder, os.O_RDONLY)  # the folder itself is the lock
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        m = _read_marker(folder) or {}
        files = m.get("files")
        names = tuple(str(f) for f in files) if isinstance(files, list) else ()
        if path.name not in names:
            _write_marker(folder, whole=False, files=(*names, path.name))
    finally:
        os.close(lock)


def make_dirs(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p path``; the topmost folder it creates gets the marker (so all below is owned)."""
    p = Path(path)
    missing = []
    d = p.absolute()
    while not d.exists():
        missing.append(d)
        d = d.parent
    if not missing:
        if not p.is_dir():
            raise InputError(p, f"is a file, not a folder; {_MOVE_AWAY}")
        return p
    p.mkdir(parents=True, exist_ok=True)
    top = missing[-1]
    if _read_marker(top) is None:
        _write_marker(top, whole=True)
    return p


def _refuse_foreign_file(target: Path) -> None:
    if target.is_dir():
        raise InputError(target, f"is a folder; marrowscope writes a file here: {_MOVE_AWAY}")
    if (target.exists() or target.is_symlink()) and not owns_file(target):
        raise InputError(target, f"already exists and was not written by marrowscope; refusing to overwrite "
                                 f"it: {_MOVE_AWAY}")


def check_writable_target(path: str | os.PathLike[str]) -> Path:
    """Raise (before any work) when writing ``path`` would overwrite a file marrowscope did not write."""
    p = Path(path)
    _refuse_foreign_file(p)
    return p


# ------------------------------------------------------------------------------------------------ writes


def _umask() -> int:
    """The process umask (Linux: read from /proc, which leaves it untouched for other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no getter elsewhere: set and put it back at once
    os.umask(mask)
    return mask


def normal_permissions(path: str | os.PathLike[str]) -> None:
    """Give ``path`` (a file, or a folder and everything in it) the umask-respecting default mode."""
    mask = _umask()
    p = Path(path)
    if p.is_dir():
        for sub in [p, *p.rglob("*")]:
            if not sub.is_symlink():
                sub.chmod((0o777 if sub.is_dir() else 0o666) & ~mask)
    elif not p.is_symlink():
        p.chmod(0o666 & ~mask)


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was. An existing ``path``
    that marrowscope did not write is refused before anything is written."""
    target = Path(path)
    make_dirs(target.parent)
    _refuse_foreign_file(target)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix + PART,
        dir=target.parent,
    )
    fcntl.flock(fd, fcntl.LOCK_EX)  # held while the temporary exists: a live writer's file is not stale
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _refuse_foreign_file(target)  # nothing foreign appeared there in the meantime
        if tmp_path.exists():
            tmp_path.chmod(0o666 & ~_umask())
        claim_file(target)  # before the rename: a kill between the two must not leave it unclaimed
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _refuse_foreign_dir(target: Path) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise InputError(target, f"exists and is not a folder marrowscope wrote; {_MOVE_AWAY}")
    if target.is_dir():
        m = _read_marker(target)
        if m is None or m.get("folder") is not True:
            raise InputError(target, f"this folder exists and was not written by marrowscope (no {MARKER} "
                                     f"marker); refusing to replace it: {_MOVE_AWAY}")


def check_replaceable_dir(path: str | os.PathLike[str]) -> Path:
    """Raise (before any work) when ``path`` exists and is not a folder marrowscope wrote."""
    p = Path(path)
    _refuse_foreign_dir(p)
    return p


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole.

    ``path`` may already exist only as a folder marrowscope wrote (it holds the marker); any other
    file or folder there is refused before anything is written."""
    target = Path(path)
    make_dirs(target.parent)
    _refuse_foreign_dir(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=PART, dir=target.parent))
    _write_marker(tmp, whole=True)
    lock = os.open(tmp / MARKER, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX)  # held while building: a live run's temporary is not stale
    try:
        yield tmp
        _refuse_foreign_dir(target)
        tmp.chmod(0o777 & ~_umask())
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".old" + PART,
                                        dir=target.parent))
            _write_marker(old, whole=True)  # unlocked: a kill right here leaves a removable leftover
            os.replace(target, old / "x")  # two renames, so the old folder is never half deleted in place
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock)


# ------------------------------------------------------------------------------------------------ leftovers


def _lock_free(path: Path) -> bool:
    """True when no live process holds the lock on ``path`` (its writer is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    finally:
        os.close(fd)
    return True


def _pid_alive(text: str) -> bool:
    try:
        os.kill(int(text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _only_marker_temps(folder: Path) -> bool:
    """A temporary folder of a dead process killed before its marker was in place: empty, or the marker
    half written."""
    m = re.search(r"\.(\d+)\.[^.]+(\.old)?\.part$", folder.name)
    if m is None or _pid_alive(m.group(1)):
        return False
    return all(c.name.startswith(f"{MARKER}.") and not _pid_alive(c.name[len(MARKER) + 1 : -len(".tmp")])
               for c in folder.iterdir())


def remove_stale_parts(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries that killed marrowscope runs left in ``folder``; return what was removed.

    Only ``.*.part`` folders holding marrowscope's marker, and ``.*.part`` files in a folder marrowscope
    owns, whose writer is no longer alive (its lock is free). Anything else is left alone."""
    root = Path(folder)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    owned = owns_folder(root)
    for p in sorted(root.iterdir()):
        if p.name.startswith(f"{MARKER}.") and p.name.endswith(".tmp") and p.is_file():
            if not _pid_alive(p.name[len(MARKER) + 1 : -len(".tmp")]):
                p.unlink(missing_ok=True)  # a marker update cut short
                removed.append(p)
            continue
        if not (p.name.startswith(".") and p.name.endswith(PART)) or p.is_symlink():
            continue
        if p.is_dir():
            marker = p / MARKER
            if _read_marker(p) is not None and _lock_free(marker) or (owned and _only_marker_temps(p)):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        elif p.is_file() and owned and _lock_free(p):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_probe(folder: str | os.PathLike[str]) -> OSError | None:
    """None when a small file can be written in ``folder`` now, else the error (disk full, read-only...)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=PART, dir=folder)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # live: another process cleaning the folder leaves it alone
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            Path(probe).unlink(missing_ok=True)  # (or it took it in the instant before the lock)
    except OSError as e:
        return e
    return None


def prepare_output_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Create ``path`` if needed, remove stale temporaries there and check it can be written, all before
    any work starts (a read-only or full folder is found at once, not after the first result)."""
    p = Path(path)
    try:
        make_dirs(p)
        remove_stale_parts(p)
        error = write_probe(p)
        if error is not None:
            raise error
    except OSError as e:
        raise InputError(p, f"cannot write to this output folder ({e.strerror or e}); check its "
                            f"permissions and free space, or choose another {what}") from e
    return p
