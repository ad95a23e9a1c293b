"""Reading ``.npy`` files that hold pickled numpy object arrays, without trusting the pickle.

W-TALC / CO2-Net ship their annotations (and the joint feature file) as ``np.save`` of object
arrays: the ``.npy`` header is followed by a pickle of the whole array (Python 2 era files use
pickle protocol 2 with byte strings).  ``np.load(allow_pickle=True)`` would run whatever that
pickle names, so here the header is parsed by hand and the payload is fed to an unpickler whose
``find_class`` resolves only the few numpy callables that rebuild arrays, dtypes and scalars.
Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) is refused with an
:class:`~wtalcli.core.errors.InputError` *before* it is called.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from wtalcli.core.errors import InputError

# Errors that a malformed (not malicious) pickle stream can raise while being decoded.
_DECODE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    MemoryError,
    OverflowError,
    UnicodeError,
    RecursionError,
)


@dataclass(frozen=True)
class NpyHeader:
    """The parsed header of a ``.npy`` file; ``data_offset`` is where the payload starts."""

    version: tuple[int, int]
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    data_offset: int


def _read_header(f: BinaryIO, source: str | Path) -> NpyHeader:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise InputError(
                f".npy format version {version} is not supported",
                "re-save the array with numpy's np.save (format 1.0 or 2.0)",
                path=source,
            )
    except (ValueError, EOFError, OSError) as exc:
        raise InputError(
            f"not a readable .npy file ({exc})", "re-create or re-download the file", path=source
        ) from exc
    return NpyHeader(version, tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype), f.tell())


def read_npy_header(path: Path) -> NpyHeader:
    """Parse a ``.npy`` header without reading the data (cheap for thousands of files)."""
    try:
        with open(path, "rb") as f:
            return _read_header(f, path)
    except FileNotFoundError as exc:
        raise InputError("missing .npy file", "check the path", path=path) from exc


def _latin1_encode(obj: Any, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``: protocol-2 pickles written by Python 3 store bytes as
    ``_codecs.encode(text, 'latin1')``; only that exact use is accepted."""
    if not isinstance(obj, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is only allowed as encode(str, 'latin1')")
    return obj.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2 keeps the implementation in numpy._core
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    # Pickles name the module they were written with: numpy.core (1.x) or numpy._core (2.x).
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = numeric._frombuffer
    return allowed


_ALLOWED = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays/dtypes/scalars and plain Python values only."""

    def __init__(self, file: BinaryIO, source: str | Path, encoding: str = "latin1"):
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise InputError(
                f"refusing to unpickle {module}.{name}: only numpy arrays, dtypes and plain values are allowed",
                "this is not a plain numpy object array; re-create the file from a trusted source",
                path=self.source,
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise InputError(
            "refusing a pickle with persistent ids",
            "re-create the file from a trusted source",
            path=self.source,
        )


def _restricted_load(f: BinaryIO, source: str | Path, encoding: str) -> Any:
    try:
        return RestrictedUnpickler(f, source, encoding).load()  # restricted unpickler
    except InputError:
        raise
    except _DECODE_ERRORS as exc:
        raise InputError(
            f"cannot decode the pickled payload ({type(exc).__name__}: {exc})",
            "the file is truncated or not a numpy object array; re-download it",
            path=source,
        ) from exc


def safe_load_object_npy(path: Path, encoding: str = "latin1") -> np.ndarray:
    """Load any ``.npy``: plain arrays with ``allow_pickle=False``, object arrays through the
    restricted unpickler.  ``encoding='latin1'`` reads Python 2 pickles of numeric arrays."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError as exc:
        raise InputError("missing .npy file", "check the path", path=path) from exc
    with f:
        header = _read_header(f, path)
        if not header.dtype.hasobject:
            f.seek(0)
            try:
                return np.load(f, allow_pickle=False)
            except (ValueError, EOFError, OSError) as exc:
                raise InputError(
                    f"cannot read array ({exc})", "re-create or re-download the file", path=path
                ) from exc
        obj = _restricted_load(f, path, encoding)
    if not isinstance(obj, np.ndarray):
        raise InputError(
            f"the pickled payload is a {type(obj).__name__}, not a numpy array",
            "save the data with np.save as an array",
            path=path,
        )
    if obj.shape != header.shape:
        raise InputError(
            f"the pickled array has shape {obj.shape} but the header says {header.shape}",
            "the file is damaged; re-download it",
            path=path,
        )
    return obj
