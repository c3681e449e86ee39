"""Reading and writing DataTrees as NetCDF files, atomically and without silent overwrites."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import xarray as xr


def new_file_mode() -> int:
    """Return the permission bits a newly created file gets under the current umask."""
    # os.umask can only be read by setting it, so set it back at once.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

    If the block raises, the temporary file is removed and ``path`` is left as it was. The file
    gets the permissions of a new file (``mkstemp`` alone would make it readable by its owner only).
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    temporary = Path(temporary)
    try:
        yield temporary
        os.chmod(temporary, new_file_mode())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save(datatree, path, *, overwrite: bool = False) -> Path:
    """Write ``datatree`` to a NetCDF file at ``path`` and return the path.

    The tree is written to a temporary file in the same folder and then renamed over ``path``, so
    a reader never sees a half-written file and an interrupted write leaves nothing behind.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        If the folder of ``path`` does not exist.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists: pass overwrite=True to replace it, or choose another path")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist: create it first or choose another path")

    with atomic_path(path) as temporary:
        datatree.to_netcdf(temporary, engine="h5netcdf")
    return path


def load(path):
    """Read a DataTree written by :func:`save`, fully into memory (the file is closed on return)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with xr.open_datatree(path, engine="h5netcdf") as tree:
        return tree.load()
