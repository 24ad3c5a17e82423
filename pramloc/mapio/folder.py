"""A folder written atomically: staged beside its destination, moved into place when
complete, and read through one directory descriptor (no mix of an old and a new folder).

Concurrency (Linux): replacing a folder swaps the new one and the old one in one atomic
``renameat2(RENAME_EXCHANGE)``, so the destination never disappears. Elsewhere the old
folder is moved aside first, which leaves a moment when it is missing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import socket
import sys
from pathlib import Path

from ..errors import PramlocError

def _staging_tag() -> str:
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:20] or "host"
    return f"{host}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_staging(out: Path) -> list[Path]:
    """Delete the temporary folders beside ``out`` left by builds of this machine that were
    killed (their process is gone). Returns what was removed."""
    out = Path(out)
    host = _staging_tag().rsplit("-", 1)[0]
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:tmp|old)-{re.escape(host)}-(\d+)-[0-9a-f]+")
    removed = []
    if not out.parent.is_dir():
        return removed
    for p in out.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m and not _alive(int(m.group(1))):
            _remove(p)
            removed.append(p)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def staging_dir(out: Path) -> Path:
    """A fresh temporary folder beside ``out`` (same filesystem, so the final rename is
    atomic), named after this process so that a later build can remove it if this one is
    killed. Its permissions follow the umask, like any folder the user creates."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    for _ in range(100):
        p = out.parent / f".{out.name}.tmp-{_staging_tag()}-{secrets.token_hex(4)}"
        try:
            p.mkdir()
            return p
        except FileExistsError:
            continue
    raise PramlocError(f"{out.parent}: cannot create a temporary folder")


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Flush a folder's files and entries to disk (a committed map survives a power cut)."""
    for p in [*folder.rglob("*"), folder]:
        _fsync(p)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``). Returns False where
    the system or the file system does not support it (nothing is changed then)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def commit(staging: Path, out: Path, overwrite: bool) -> Path:
    """Move a complete staging folder into place. An existing ``out`` is replaced only
    with ``overwrite``: swapped with the staging folder in one atomic step where the system
    allows it (Linux), else moved aside first; then the old map is deleted. Readers never
    see a mix of the two (see :func:`pramloc.mapio.load_map`)."""
    staging, out = Path(staging), Path(out)
    _fsync_tree(staging)
    if out.exists() or out.is_symlink():
        if not overwrite:
            shutil.rmtree(staging, ignore_errors=True)
            raise PramlocError(f"{out}: output exists (use --overwrite to replace it)")
        if exchange(staging, out):
            _remove(staging)  # now the old map
        else:
            trash = out.parent / f".{out.name}.old-{_staging_tag()}-{secrets.token_hex(4)}"
            os.replace(out, trash)
            os.replace(staging, out)
            _remove(trash)
    else:
        os.replace(staging, out)
    _fsync(out.parent)
    return out


class _Folder:
    """One map folder, every part opened through one directory descriptor: all parts come
    from the same folder even if ``path`` is replaced (``--overwrite``) meanwhile."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd = None
        if os.open in os.supports_dir_fd:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                raise PramlocError(f"{self.path}: map folder not found") from None
            except OSError as err:
                raise PramlocError(f"{self.path}: cannot open map folder ({err.strerror})") from None
        elif not self.path.is_dir():
            raise PramlocError(f"{self.path}: map folder not found")

    def open(self, name: str):
        """A binary file object of part ``name`` (FileNotFoundError if absent)."""
        if self.fd is None:
            return open(self.path / name, "rb")
        fd = os.open(name, os.O_RDONLY, dir_fd=self.fd)
        return os.fdopen(fd, "rb")

    def replaced(self) -> bool:
        """Whether ``path`` is no longer the folder this object reads."""
        if self.fd is None:
            return False
        try:
            st, own = os.stat(self.path), os.fstat(self.fd)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def part_sizes(path: Path) -> dict[str, int]:
    """Bytes on disk by part: map.h5, recognizer.pt, manifest.json."""
    path = Path(path)
    sizes: dict[str, int] = {}
    for p in path.rglob("*"):
        if p.is_file():
            top = p.relative_to(path).parts[0]
            sizes[top] = sizes.get(top, 0) + p.stat().st_size
    return sizes
