"""Read PyTorch ``state_dict`` checkpoints with NumPy only, through a restricted unpickler.

Two on-disk formats are understood:

* the legacy format (``torch.save(..., _use_new_zipfile_serialization=False)`` and every
  ``.pth`` written before PyTorch 1.6): a run of concatenated pickles -- magic number,
  protocol version, ``sys_info``, the main pickle (whose persistent ids name storages),
  a pickle listing the storage keys in write order -- followed by each storage's raw
  bytes, each preceded by its element count as an 8-byte little-endian integer;
* the zip format (PyTorch >= 1.6): ``<archive>/data.pkl`` plus one ``<archive>/data/<key>``
  entry of raw bytes per storage.

Torch is never imported.  Every pickle goes through :class:`_RestrictedUnpickler`, whose
``find_class`` hands out local stand-ins for the handful of globals a tensor state dict
needs and raises :class:`UnsafePickleError` for anything else, so a crafted checkpoint
cannot run code (``os.system``, ``builtins.eval``, ...) while it is being read.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["UnsafePickleError", "read_torch_state_dict"]

# Written by torch's legacy serializer as the first pickle of the file.
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

# torch.<Name>Storage -> element dtype (little-endian; byte order is fixed up on read).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafePickleError(ValueError):
    """Raised when a checkpoint pickle references a global outside the tensor allow-list."""


class _StorageType:
    """Stand-in for ``torch.<Name>Storage``: only records the element dtype."""

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _StorageRef:
    """A storage named by a persistent id; its bytes are read after unpickling."""

    def __init__(self, key: str, dtype: np.dtype, numel: int, offset: int = 0) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel  # elements visible through this reference
        self.offset = offset  # element offset into the root storage (legacy views)


class _TensorRef:
    """Stand-in for a tensor: storage reference plus the view geometry, resolved later."""

    def __init__(self, storage: _StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    """Validate a tuple of non-negative ints coming from the pickle."""
    if not isinstance(value, tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise ValueError(f"malformed tensor {what} in checkpoint: {value!r}")
    return value


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``; extra arguments are ignored."""
    if not isinstance(storage, _StorageRef):
        raise ValueError(f"tensor rebuilt from a non-storage object: {type(storage).__name__}")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise ValueError(f"malformed tensor storage offset in checkpoint: {storage_offset!r}")
    size_t = _int_tuple(size, "size")
    stride_t = _int_tuple(stride, "stride")
    if len(size_t) != len(stride_t):
        raise ValueError(f"tensor size {size_t} and stride {stride_t} differ in rank")
    return _TensorRef(storage, storage_offset, size_t, stride_t)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _TensorRef:
    """Stand-in for the older ``torch._utils._rebuild_tensor``."""
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Any:
    """Stand-in for ``torch._utils._rebuild_parameter``: a Parameter is just its tensor here."""
    if not isinstance(data, _TensorRef):
        raise ValueError("parameter rebuilt from a non-tensor object")
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dt) for name, dt in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and torch storage persistent ids."""

    def __init__(self, file: BinaryIO, allow_storages: bool = False) -> None:
        super().__init__(file)
        self._allow_storages = allow_storages

    def find_class(self, module: str, name: str) -> Any:
        """Return a safe stand-in for an allow-listed global, refuse everything else."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global '{module}.{name}' from checkpoint: only tensor "
                "state-dict globals (collections.OrderedDict, torch._utils._rebuild_tensor_v2, "
                "torch.*Storage) are allowed"
            ) from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        """Turn a ``('storage', type, key, location, numel[, view])`` id into a reference."""
        if not self._allow_storages:
            raise ValueError("unexpected persistent id outside the checkpoint's main pickle")
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise ValueError(f"unsupported persistent id in checkpoint: {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"persistent id names a non-storage type: {storage_type!r}")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise ValueError(f"malformed storage persistent id: {pid!r}")
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return _StorageRef(key, storage_type.dtype, numel)
        # Legacy storage views: (root_key, element offset, view size).
        if not (
            isinstance(view, tuple)
            and len(view) == 3
            and isinstance(view[0], str)
            and all(isinstance(v, int) and v >= 0 for v in view[1:])
        ):
            raise ValueError(f"malformed storage view in checkpoint: {view!r}")
        return _StorageRef(view[0], storage_type.dtype, view[2], offset=view[1])


def _unpickle(f: BinaryIO, allow_storages: bool = False) -> Any:
    """Load one pickle from ``f``, converting low-level failures into ValueError."""
    try:
        return _RestrictedUnpickler(f, allow_storages).load()
    except (UnsafePickleError, ValueError):
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        struct.error,
        UnicodeDecodeError,
        MemoryError,
    ) as exc:
        raise ValueError(f"corrupt or unsupported torch checkpoint: {exc}") from exc


def _materialize(obj: Any, storages: dict[str, np.ndarray], big_endian: bool) -> dict[str, np.ndarray]:
    """Resolve the unpickled ``{name: _TensorRef}`` mapping into contiguous NumPy arrays."""
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint does not hold a state dict (top level is {type(obj).__name__})")
    out: dict[str, np.ndarray] = {}
    for name, ref in obj.items():
        if not isinstance(name, str) or not isinstance(ref, _TensorRef):
            raise ValueError(f"checkpoint entry {name!r} is not a tensor ({type(ref).__name__})")
        st = ref.storage
        if st.key not in storages:
            raise ValueError(f"tensor {name!r} refers to missing storage {st.key!r}")
        root = storages[st.key]
        if root.dtype.str.lstrip("<>|=") != st.dtype.str.lstrip("<>|="):
            raise ValueError(f"storage {st.key!r} is used with two different dtypes")
        if st.offset + st.numel > root.size:
            raise ValueError(f"storage view for {name!r} exceeds its root storage")
        base = root[st.offset : st.offset + st.numel]
        if math.prod(ref.size) > base.size:
            # Only broadcast/overlapping views (stride 0, torch.expand) can hold more elements
            # than their storage; refusing them also stops tiny files expanding into huge arrays.
            raise ValueError(
                f"tensor {name!r} (size {ref.size}) has more elements than its storage "
                f"({base.size}); broadcast/overlapping views are not supported"
            )
        if any(s == 0 for s in ref.size):
            out[name] = np.zeros(ref.size, dtype=base.dtype.newbyteorder("="))
            continue
        # Highest element index the view touches must lie inside the storage.
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
        if last >= base.size:
            raise ValueError(
                f"tensor {name!r} (size {ref.size}, stride {ref.stride}, offset {ref.offset}) "
                f"reads past its storage of {base.size} elements"
            )
        item = base.dtype.itemsize
        # Strides from the file are arbitrary (e.g. permuted TF kernels); view then copy to
        # get an owned, C-contiguous array detached from the storage buffer.
        view = np.lib.stride_tricks.as_strided(
            base[ref.offset :],
            shape=ref.size,
            strides=tuple(s * item for s in ref.stride),
            writeable=False,
        )
        arr = np.array(view, copy=True, order="C")
        if big_endian:
            arr = arr.byteswap().view(arr.dtype.newbyteorder())
        out[name] = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    return out


def _storage_dtype(refs: dict[str, _StorageRef], key: str, big_endian: bool) -> np.dtype:
    """Dtype of storage ``key`` in file byte order."""
    if key not in refs:
        raise ValueError(f"storage {key!r} is not referenced by any tensor")
    dt = refs[key].dtype
    return dt.newbyteorder(">") if big_endian else dt


def _collect_refs(obj: Any) -> dict[str, _StorageRef]:
    """Map root storage key -> reference for every tensor in the unpickled state dict."""
    refs: dict[str, _StorageRef] = {}
    if isinstance(obj, dict):
        for ref in obj.values():
            if isinstance(ref, _TensorRef):
                refs.setdefault(ref.storage.key, ref.storage)
    return refs


def _read_legacy(f: BinaryIO, size: int) -> dict[str, np.ndarray]:
    """Parse the legacy (pre-1.6, concatenated pickles) torch format from ``size`` bytes."""
    magic = _unpickle(f)
    if magic != _LEGACY_MAGIC_NUMBER:
        raise ValueError("not a torch checkpoint: legacy magic number missing")
    protocol = _unpickle(f)
    if protocol != _LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"unsupported legacy torch protocol version {protocol!r}")
    sys_info = _unpickle(f)
    if not isinstance(sys_info, dict):
        raise ValueError("malformed legacy torch checkpoint: bad sys_info record")
    big_endian = not sys_info.get("little_endian", True)
    obj = _unpickle(f, allow_storages=True)
    keys = _unpickle(f)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("malformed legacy torch checkpoint: bad storage key list")
    refs = _collect_refs(obj)
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        header = f.read(8)
        if len(header) != 8:
            raise ValueError(f"truncated torch checkpoint: no size header for storage {key!r}")
        numel = struct.unpack(">q" if big_endian else "<q", header)[0]
        dt = _storage_dtype(refs, key, big_endian)
        nbytes = numel * dt.itemsize
        # Compare with what is left before reading, so a forged size cannot force a huge read.
        if numel < 0 or nbytes > size - f.tell():
            raise ValueError(f"truncated torch checkpoint: storage {key!r} is incomplete")
        storages[key] = np.frombuffer(f.read(nbytes), dtype=dt)
    return _materialize(obj, storages, big_endian)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    """Parse the zip (PyTorch >= 1.6) torch format."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ValueError("not a torch checkpoint: zip archive has no single <name>/data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        big_endian = False
        if prefix + "byteorder" in names:
            big_endian = zf.read(prefix + "byteorder").strip() == b"big"
        obj = _unpickle(io.BytesIO(zf.read(pkl[0])), allow_storages=True)
        refs = _collect_refs(obj)
        storages: dict[str, np.ndarray] = {}
        for key in refs:
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise ValueError(f"torch checkpoint zip lacks storage entry {entry!r}")
            dt = _storage_dtype(refs, key, big_endian)
            # torch writes exactly numel * itemsize bytes; checking the declared size first
            # also keeps a compressed entry from inflating beyond what the pickle announced.
            expected = refs[key].numel * dt.itemsize
            if zf.getinfo(entry).file_size != expected:
                raise ValueError(f"storage {key!r} holds {zf.getinfo(entry).file_size} bytes, expected {expected}")
            storages[key] = np.frombuffer(zf.read(entry), dtype=dt)
    return _materialize(obj, storages, big_endian)


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a torch state-dict file (legacy or zip format) into ``{name: np.ndarray}`` safely."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        raise ValueError(f"not a torch checkpoint: {path} is empty")
    if head.startswith(b"PK\x03\x04"):
        try:
            return _read_zip(path)
        except zipfile.BadZipFile as exc:
            raise ValueError(f"not a torch checkpoint: {path} is a damaged zip: {exc}") from exc
    if head[0] != 0x80:  # every legacy record is a pickle with protocol >= 2
        raise ValueError(f"not a torch checkpoint: {path} is neither a zip nor a pickle")
    # Parse from memory: pickle length fields then cannot trigger large speculative file reads,
    # and checkpoints of this kind are small enough (tens of MB) to hold twice.
    data = path.read_bytes()
    return _read_legacy(io.BytesIO(data), len(data))
