"""Reads the tensors of a weights file as numpy arrays, treating the file as untrusted data.

Three formats, chosen by the file's content, not its name:
- PyTorch `.pth`/`.pt`/`.bin` (zip archives of torch >= 1.6, and the older sequential format):
  a pickle, read by an unpickler that knows only the handful of names a state dict is made of
  (OrderedDict, tensor and storage rebuilders), so a file that tries to run code is refused
  before anything runs. torch is not needed.
- `.safetensors`: a JSON header and raw little-endian data, read directly; no package needed.
- Keras `.h5` (model.save or save_weights): through h5py, datasets only.
"""
import collections
import io
import json
import os
import pickle
import struct
import zipfile

import numpy as np


class WeightsFileError(ValueError):
    """A weights file that cannot be read; the message says why and what to do."""


_TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001


class _StorageType(object):
    """Stands for torch.<X>Storage inside the pickle: only its element type matters."""

    def __init__(self, name):
        self.name = name
        self.dtype = _TORCH_STORAGE_DTYPES[name]


class _Storage(object):
    """A flat array of one storage's elements."""

    def __init__(self, values):
        self.values = values


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """Replaces torch._utils._rebuild_tensor(_v2): a strided view of the storage, copied, after checking
    that it stays inside the storage (a crafted file must not make it read other memory)."""
    values = storage.values
    offset, size, stride = int(storage_offset), tuple(int(n) for n in size), tuple(int(n) for n in stride)
    if len(size) != len(stride) or min(size + stride + (offset,)) < 0:
        raise ValueError("a tensor has a negative or inconsistent size %s / stride %s" % (size, stride))
    end = offset + sum((n - 1) * step for n, step in zip(size, stride)) + 1 if all(size) else 0
    if end > values.size:
        raise ValueError("a tensor of size %s reaches past its storage of %d elements" % (size, values.size))
    if not all(size):
        return np.zeros(size, values.dtype)
    view = np.lib.stride_tricks.as_strided(values[offset:], shape=size,
                                           strides=tuple(step * values.itemsize for step in stride))
    return np.array(view)


def _rebuild_parameter(data, *unused):
    """Replaces torch._utils._rebuild_parameter: a parameter is its tensor."""
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds state dicts and nothing else: any global name outside `allowed` is refused before it is used."""

    def __init__(self, handle, path, load_storage, allowed):
        pickle.Unpickler.__init__(self, handle)
        self._path = path
        self._load_storage = load_storage
        self._allowed = allowed

    def find_class(self, module, name):
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return _StorageType(name)
        raise WeightsFileError(
            "%s is not a plain state dict: its pickle asks for %s.%s, which could run code, so it was not "
            "loaded; save the weights alone (torch.save(model.state_dict(), path)) or as .safetensors"
            % (self._path, module, name))

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise WeightsFileError("%s holds an object that is not a tensor storage (%r): pass a state dict"
                                   % (self._path, pid[:1] if isinstance(pid, tuple) else type(pid).__name__))
        return self._load_storage(pid)


def _to_numpy_dtype(dtype):
    return np.dtype(np.uint16) if dtype == "bfloat16" else np.dtype(dtype)


def _decode(raw, dtype):
    """The bytes of one storage or tensor as an array; bfloat16 (its uint16 bits) becomes float32."""
    values = np.frombuffer(raw, dtype=_to_numpy_dtype(dtype))
    return (values.astype(np.uint32) << 16).view(np.float32) if dtype == "bfloat16" else values


def _read_torch_zip(path):
    """torch >= 1.6 format: <root>/data.pkl plus one <root>/data/<key> file per storage."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise WeightsFileError("%s is a zip file but not a torch.save archive (no single data.pkl): "
                                   "pass a .pth written by torch.save" % path)
        root = pickles[0][:-len("data.pkl")]
        byteorder_name = root + "byteorder"
        if byteorder_name in names and archive.read(byteorder_name).strip() not in (b"little", b""):
            raise WeightsFileError("%s was saved on a big-endian machine: re-save it on a little-endian one" % path)

        def load_storage(pid):
            storage_type, key = pid[1], str(pid[2])
            try:
                raw = archive.read("%sdata/%s" % (root, key))
            except KeyError:
                raise WeightsFileError("%s lacks the data of storage %s: the file is truncated" % (path, key))
            return _Storage(_decode(raw, storage_type.dtype))

        with archive.open(pickles[0]) as handle:
            return _unpickle(io.BytesIO(handle.read()), path, load_storage)


class _LegacyLoader(object):
    """Reads the sequential torch.save format; tensors are rebuilt once their storages are read."""

    def __init__(self, path):
        self.path = path

    def _header(self, handle):
        refuse = self._refuse_storage
        if _unpickle(handle, self.path, refuse) != _LEGACY_MAGIC:
            raise WeightsFileError("%s is neither a torch.save file, a .safetensors file nor a Keras .h5 file: "
                                   "pass one of those" % self.path)
        if _unpickle(handle, self.path, refuse) != _LEGACY_PROTOCOL:
            raise WeightsFileError("%s uses an unknown torch.save protocol: re-save it with a current torch"
                                   % self.path)
        system = _unpickle(handle, self.path, refuse)
        if not (isinstance(system, dict) and system.get("little_endian", True)):
            raise WeightsFileError("%s was saved on a big-endian machine: re-save it on a little-endian one"
                                   % self.path)

    def _refuse_storage(self, pid):
        raise WeightsFileError("%s has a tensor in its header: pass a file written by torch.save" % self.path)

    def load(self):
        with open(self.path, "rb") as handle:
            self._header(handle)
            storages, pending = {}, []

            def load_storage(pid):
                key = str(pid[2])
                storages.setdefault(key, pid[1])
                placeholder = _PendingStorage(key, pid[5] if len(pid) > 5 else None)
                pending.append(placeholder)
                return placeholder

            # Tensor rebuilding needs the storage data, which follows the pickle: collect the calls first.
            deferred = dict(_ALLOWED_GLOBALS)
            deferred[("torch._utils", "_rebuild_tensor")] = _DeferredTensor
            deferred[("torch._utils", "_rebuild_tensor_v2")] = _DeferredTensor
            state = _unpickle(handle, self.path, load_storage, deferred)
            keys = _unpickle(handle, self.path, self._refuse_storage)
            if not isinstance(keys, list):
                raise WeightsFileError("%s has no storage list after its state dict: pass a file written by "
                                       "torch.save" % self.path)
            data = {}
            for key in keys:
                key = str(key)
                if key not in storages:
                    raise WeightsFileError("%s lists storage %s that no tensor uses: the file is damaged"
                                           % (self.path, key))
                dtype = storages[key].dtype
                numpy_dtype = _to_numpy_dtype(dtype)
                header = handle.read(8)
                count = struct.unpack("<q", header)[0] if len(header) == 8 else -1
                raw = handle.read(max(count, 0) * numpy_dtype.itemsize)
                if count < 0 or len(raw) != count * numpy_dtype.itemsize:
                    raise WeightsFileError("%s is truncated (storage %s): download it again" % (self.path, key))
                data[key] = _decode(raw, dtype)
        for placeholder in pending:
            if placeholder.key not in data:
                raise WeightsFileError("%s lacks the data of storage %s: the file is truncated"
                                       % (self.path, placeholder.key))
            values = data[placeholder.key]
            if placeholder.view:
                offset, size = int(placeholder.view[1]), int(placeholder.view[2])
                values = values[offset:offset + size]
            placeholder.values = values
        try:
            return _materialize(state)
        except (TypeError, ValueError) as err:
            raise WeightsFileError("cannot read %s as a PyTorch state dict (%s): the file is damaged"
                                   % (self.path, err))


class _PendingStorage(_Storage):
    def __init__(self, key, view):
        _Storage.__init__(self, None)
        self.key = key
        self.view = view


class _DeferredTensor(object):
    """A _rebuild_tensor call recorded while unpickling, evaluated once the storage data is read."""

    def __init__(self, *args):
        self.args = args


def _materialize(value):
    if isinstance(value, _DeferredTensor):
        return _rebuild_tensor(*value.args)
    if isinstance(value, dict):
        return collections.OrderedDict((k, _materialize(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_materialize(v) for v in value)
    return value


def _unpickle(handle, path, load_storage, allowed=_ALLOWED_GLOBALS):
    try:
        return _RestrictedUnpickler(handle, path, load_storage, allowed).load()
    except WeightsFileError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError,
            RecursionError, struct.error) as err:
        raise WeightsFileError("cannot read %s as a PyTorch state dict (%s): pass a file written by torch.save"
                               % (path, str(err).splitlines()[0] if str(err) else type(err).__name__))


_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema")


def _state_dict(obj, path):
    """The {name: ndarray} dict in what torch.save stored: a state dict, or a training checkpoint
    holding one under a usual key. A DataParallel `module.` prefix is dropped."""
    if isinstance(obj, dict) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        for key in _NESTED_STATE_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise WeightsFileError("%s holds a %s, not a state dict: save model.state_dict()" % (path, type(obj).__name__))
    tensors = collections.OrderedDict()
    for name, value in obj.items():
        if isinstance(value, np.ndarray):
            tensors[name[len("module."):] if str(name).startswith("module.") else str(name)] = value
    if not tensors:
        raise WeightsFileError("%s holds no tensors at the top level or under %s: save model.state_dict()"
                               % (path, "/".join(_NESTED_STATE_KEYS)))
    return tensors


def read_torch(path):
    """The state dict of a torch.save file as {name: ndarray}; never runs code from the file."""
    if zipfile.is_zipfile(path):
        return _state_dict(_read_torch_zip(path), path)
    return _state_dict(_LegacyLoader(path).load(), path)


_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bfloat16", "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def read_safetensors(path):
    """A .safetensors file as {name: ndarray}: an 8-byte header length, a JSON header, raw data."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        size = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
        if not 2 <= size <= _MAX_SAFETENSORS_HEADER:
            raise WeightsFileError("%s is not a .safetensors file (bad header length): download it again" % path)
        try:
            header = json.loads(handle.read(size).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise WeightsFileError("%s is not a .safetensors file (its header is not JSON): download it again" % path)
        data = handle.read()
    tensors = collections.OrderedDict()
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
            begin, end = [int(x) for x in entry["data_offsets"]]
            shape = tuple(int(x) for x in entry["shape"])
        except (KeyError, TypeError, ValueError):
            raise WeightsFileError("%s: tensor %s has an unsupported or broken header entry %r" % (path, name, entry))
        itemsize = _to_numpy_dtype(dtype).itemsize
        if not 0 <= begin <= end <= len(data) or end - begin != itemsize * int(np.prod(shape)):
            raise WeightsFileError("%s is truncated or damaged (tensor %s): download it again" % (path, name))
        tensors[name] = _decode(data[begin:end], dtype).reshape(shape)
    return tensors


def read_h5(path):
    """The weights of a Keras .h5 file (model.save or model.save_weights) as {"layer/weight": ndarray}."""
    try:
        import h5py
    except ImportError:
        raise WeightsFileError("reading Keras .h5 files needs h5py: pip install h5py")
    tensors = collections.OrderedDict()
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise WeightsFileError("%s starts as a Keras .h5 file but cannot be opened, it is truncated or damaged (%s): "
                               "download it again" % (path, str(error).splitlines()[0]))
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle

        def collect(name, item):
            # <layer>/<layer>/<weight>:0, or <model>/<layer>/<weight>:0 for a model nested in another one.
            if isinstance(item, h5py.Dataset):
                parts = name.split("/")
                key = "%s/%s" % (parts[-2] if len(parts) > 1 else "", parts[-1].split(":")[0])
                if key in tensors:
                    raise WeightsFileError("%s holds two weights named %s (layers of nested models?): save the "
                                           "EfficientNet model alone" % (path, key))
                tensors[key] = np.array(item)

        root.visititems(collect)
    if not tensors:
        raise WeightsFileError("%s holds no weights: pass a Keras .h5 saved with its weights" % path)
    return tensors


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"


def read_weights(path):
    """{name: ndarray} from a PyTorch, .safetensors or Keras .h5 file, told apart by their content."""
    if not os.path.isfile(path):
        raise WeightsFileError("weights file %s not found: pass --source=<.h5, .pth/.pt or .safetensors file>" % path)
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head.startswith(_HDF5_SIGNATURE):
        return read_h5(path)
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":
        return read_torch(path)
    if head.startswith(_ZIP_SIGNATURE):
        raise WeightsFileError("%s starts as a PyTorch .pth/.pt file (a zip archive) but is truncated or damaged (its "
                               "end-of-archive record is missing): download it again" % path)
    if len(head) == 9 and head[8:9] == b"{":
        return read_safetensors(path)
    raise WeightsFileError("%s is neither a Keras .h5, a PyTorch .pth/.pt nor a .safetensors file: pass one of "
                           "those" % path)
