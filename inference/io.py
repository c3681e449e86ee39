"""Reading and writing DataTrees as NetCDF files, atomically and without silent overwrites."""

import os
import tempfile
from pathlib import Path

import xarray as xr


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

    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(descriptor)
    try:
        datatree.to_netcdf(temporary, engine="h5netcdf")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load(path):
    """Read a DataTree written by :func:`save`, fully into memory (the file is closed on return)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with xr.open_datatree(path, engine="h5netcdf") as tree:
        return tree.load()
