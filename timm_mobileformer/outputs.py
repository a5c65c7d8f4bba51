"""Writing outputs so that nothing is ever half-written or lost.

`check_output` looks at an output path before any work starts: a writable place, the right extension, not
one of the inputs, and not an existing file or folder unless overwriting was asked for. `staged` is where a
writer puts its output: a staging name in the same folder, moved into place with `os.replace` only when the
block completes. On any failure (an exception, Ctrl-C, or SIGTERM once `sigterm_raises` is in force) the
staging file or folder is removed, and so are the parent folders it had to create.
"""
import errno
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Union

from .errors import MobileFormerError

__all__ = ['OutputError', 'Terminated', 'check_output', 'staged', 'sigterm_raises', 'STAGING_MARK']

PathLike = Union[str, os.PathLike]
STAGING_MARK = '.partial'  # every staging name holds it: `.<name>.<random>.partial[<suffix>]`


class OutputError(MobileFormerError):
    """An output that can't or mustn't be written."""


class Terminated(BaseException):
    """SIGTERM arrived: like KeyboardInterrupt, it unwinds every `finally` block, then the command exits 143."""


def _describe(path: Path) -> str:
    return 'folder' if path.is_dir() else 'file'


def _same_or_inside(candidate: Path, other: Path) -> bool:
    """True when `candidate` is `other` or a folder that holds it (so replacing it would destroy `other`)."""
    try:
        if candidate.exists() and other.exists() and os.path.samefile(candidate, other):
            return True
    except OSError:
        pass
    a, b = Path(os.path.realpath(candidate)), Path(os.path.realpath(other))
    return a == b or a in b.parents


def _nearest_existing(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            return parent
    return Path('.')


def check_output(
        path: PathLike,
        *,
        kind: str = 'file',
        suffixes: Optional[Sequence[str]] = None,
        inputs: Iterable[PathLike] = (),
        overwrite: bool = False,
        option: str = '--out',
) -> Path:
    """Refuse an output before any work: wrong extension, one of the inputs, an existing file or non-empty
    folder (unless `overwrite`), a dangling symlink, or a place this user can't write. `kind` is 'file' or
    'dir'. Returns the path; creates nothing."""
    path = Path(path)
    name = f'{option} {path}' if option else str(path)
    if path.name in ('', '.', '..'):
        raise OutputError(f'{name}: not a name a file or folder can have: give a path such as out/result')
    if kind == 'file' and suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f'{name}: must end in {" or ".join(suffixes)}')
    for source in inputs:
        if source is not None and _same_or_inside(path, Path(source)):
            raise OutputError(f'{name} is (or holds) the input {source}: writing it would destroy the input; '
                              f'choose another output')
    if path.is_symlink() and not path.exists():
        raise OutputError(f'{name} is a symbolic link to nothing ({os.readlink(path)}): remove it or choose '
                          f'another output')
    if path.exists():
        if kind == 'file' and path.is_dir():
            raise OutputError(f'{name} is an existing folder: give a file name')
        if kind == 'dir' and not path.is_dir():
            raise OutputError(f'{name} is an existing file: give a folder name')
        empty_dir = kind == 'dir' and not any(path.iterdir())
        if not empty_dir and not overwrite:
            what = 'folder is not empty' if path.is_dir() else 'file exists'
            raise OutputError(f'{name}: the {what}: choose a new name, or pass --overwrite to replace it')
    parent = _nearest_existing(path)
    if not parent.is_dir():
        raise OutputError(f'{name}: {parent} is not a folder: choose another output')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f'{name}: cannot write in {parent} (no write permission for you): choose another output')
    try:  # the only sure test (a read-only mount, a special file system): create and remove a probe file
        fd, probe = tempfile.mkstemp(prefix='.timm-mobileformer-probe-', dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f'{name}: cannot write in {parent} ({err.strerror or type(err).__name__}): choose '
                          f'another output') from None
    return path


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders it created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            _remove_created(created)
            raise OutputError(f'cannot create the folder {d} ({err.strerror}): choose another output') from err
        created.append(d)
    return created


def _remove_created(created: list[Path]) -> None:
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            pass  # something else was put there meanwhile: leave it


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def staging_name(path: Path) -> Path:
    token = secrets.token_hex(4)
    suffix = path.suffix if path.suffix else ''
    return path.with_name(f'.{path.stem if suffix else path.name}.{token}{STAGING_MARK}{suffix}')


@contextmanager
def staged(path: PathLike, kind: str = 'file', overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging path next to `path` (a folder already created for kind='dir'; for a file, only a
    name, keeping the extension so writers that go by it still work). When the block completes, the
    staging path replaces `path`; when it fails, the staging path and any parents created are removed.

        with staged(out, 'dir') as tmp:
            write_everything(tmp)
            verify(tmp)
    """
    path = Path(path)
    created = _make_parents(path.parent)
    stage = staging_name(path)
    old = None
    try:
        if kind == 'dir':
            stage.mkdir()
        else:  # reserve the name (and show the run is under way); the writer replaces the empty file
            os.close(os.open(stage, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield stage
        if not stage.exists() or (kind == 'file' and stage.stat().st_size == 0):
            raise OutputError(f'{path}: nothing was written (a bug: please report it)')
        if path.exists():
            if not overwrite and not (kind == 'dir' and path.is_dir() and not any(path.iterdir())):
                raise OutputError(f'{path} appeared while this command ran: nothing was replaced; '
                                  f'remove it or pass --overwrite')
            if kind == 'file' and path.is_dir():
                raise OutputError(f'{path} is an existing folder: nothing was replaced; give a file name')
            if path.is_dir() and not path.is_symlink():
                old = path.with_name(f'.{path.name}.{secrets.token_hex(4)}{STAGING_MARK}-old')
                os.rename(path, old)
        os.replace(stage, path)
    except BaseException as err:
        _remove(stage)
        if old is not None and not path.exists():
            os.rename(old, path)  # the replaced folder comes back
            old = None
        _remove_created(created)
        if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                                                      errno.EDQUOT):
            raise OutputError(f'cannot write {path} ({err.strerror}): nothing was written; choose another '
                              f'place or free some space') from err
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While in force, SIGTERM raises `Terminated` in the main thread, so staging cleanup runs as on Ctrl-C."""
    def handler(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
