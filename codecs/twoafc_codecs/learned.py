"""Learned image codecs: pretrained models from the CompressAI zoo.

Five zoo architectures are offered, each as one codec whose ``quality`` knob
(1..8, or 1..6 for cheng2020-anchor, as in the zoo) picks the zoo's
MSE-optimised checkpoint for that quality. Models run on CUDA when
``torch.cuda.is_available()``, else on the CPU, and are cached per process.

Weights are never downloaded behind the caller's back. For a quality ``q``
the zoo's own file name (the basename of its download URL, e.g.
``bmshj2018-factorized-prior-3-5c6f152b.pth.tar``) is looked up in

1. ``$TWOAFC_CODEC_WEIGHTS/`` (a folder of checkpoints, if the variable is set)
2. torch hub's checkpoint cache, ``torch.hub.get_dir()/checkpoints/``
   (where ``compressai.zoo`` itself saves what it downloads)

If neither has it and ``TWOAFC_CODEC_DOWNLOAD=1`` is set, the zoo downloads
it into the hub cache; otherwise encoding raises CodecError naming the file
and both folders. An untrained model is never used in place of a missing one.

The bytes ``encode`` returns are a small self-describing container (see
``_pack``) followed by the entropy-coded strings. ``bits`` counts only the
strings, so a bitrate is the model's real coded length. Inputs are padded on
the right and bottom to a multiple of 64 by repeating the edge pixels
(replicate padding: no artificial edge for the model to spend bits on), and
the decoded image is cropped back; the bits spent on the padding are counted.

Determinism: on the CPU repeated encodes of the same image give the same
bytes, batched or not (tested). On a GPU the network's float results may
differ from the CPU's and between batch sizes, so GPU bytes may differ from
CPU bytes; worse, for the hyperprior models data must be decoded on the same
kind of device it was encoded on, or the entropy decoder may desynchronise.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import struct
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .base import BatchedCodec, CodecError, check_rgb_image
from .registry import register

WEIGHTS_ENV = "TWOAFC_CODEC_WEIGHTS"
DOWNLOAD_ENV = "TWOAFC_CODEC_DOWNLOAD"
METRIC = "mse"
PAD_MULTIPLE = 64

# Container layout (big-endian):
#   magic "2AFL", format version (B), architecture name length (B) + ASCII name,
#   quality (B), height, width, padded height, padded width (4 x I),
#   latent shape passed to decompress() (2 x I), first 8 bytes of the
#   checkpoint's SHA-256, number of strings (B), each string's length (I),
#   then the strings themselves, in the order compress() returned them.
_MAGIC = b"2AFL"
_FORMAT = 1
_FIXED = struct.Struct(">B6I8sB")
_HASH_BYTES = 8

_CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


# --- lazy imports: importing the codec library must not import torch -----


def _torch():
    import torch

    return torch


def _compressai():
    with warnings.catch_warnings():
        # compressai's import uses torch.jit.script, which torch now flags.
        warnings.simplefilter("ignore", FutureWarning)
        import compressai
        import compressai.zoo
        import compressai.zoo.image
        import compressai.zoo.pretrained
    return compressai


def compressai_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "compressai"))


# --- finding weights -----------------------------------------------------


def checkpoint_name(arch: str, quality: int) -> str:
    """The zoo's file name for ``arch`` at ``quality`` (MSE-optimised weights)."""
    urls = _compressai().zoo.image.model_urls
    try:
        url = urls[arch][METRIC][quality]
    except KeyError:
        raise CodecError(
            f"the CompressAI zoo has no {METRIC} weights for {arch} q{quality}"
        ) from None
    return url.rsplit("/", 1)[-1]


def weight_folders() -> list[Path]:
    """The folders searched for checkpoints, in order."""
    folders = []
    local = os.environ.get(WEIGHTS_ENV, "").strip()
    if local:
        folders.append(Path(local).expanduser())
    folders.append(Path(_torch().hub.get_dir()) / "checkpoints")
    return folders


def find_checkpoint(arch: str, quality: int) -> Path | None:
    name = checkpoint_name(arch, quality)
    for folder in weight_folders():
        path = folder / name
        if path.is_file():
            return path
    return None


def _missing_message(arch: str, quality: int) -> str:
    name = checkpoint_name(arch, quality)
    local = os.environ.get(WEIGHTS_ENV, "").strip()
    first = f"${WEIGHTS_ENV} ({Path(local).expanduser()})" if local else f"${WEIGHTS_ENV} (not set)"
    hub = Path(_torch().hub.get_dir()) / "checkpoints"
    return (
        f"no weights for {arch} quality {quality}: {name} is in neither {first} "
        f"nor torch hub's cache ({hub}); copy the CompressAI zoo checkpoint there, "
        f"or set {DOWNLOAD_ENV}=1 to let CompressAI download it"
    )


def resolve_checkpoint(arch: str, quality: int) -> Path:
    """The checkpoint file for (arch, quality), downloading it only if allowed."""
    path = find_checkpoint(arch, quality)
    if path is not None:
        return path
    if os.environ.get(DOWNLOAD_ENV, "").strip() != "1":
        raise CodecError(_missing_message(arch, quality))
    try:
        # The zoo downloads into torch hub's cache; the model it builds is
        # discarded so that every checkpoint goes through load_checkpoint().
        _compressai().zoo.image_models[arch](quality=quality, metric=METRIC, pretrained=True)
    except Exception as exc:
        raise CodecError(f"downloading {checkpoint_name(arch, quality)} failed: {exc}") from exc
    path = find_checkpoint(arch, quality)
    if path is None:
        raise CodecError(_missing_message(arch, quality) + " (download finished elsewhere)")
    return path


# --- loading -------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    model: Any  # a compressai CompressionModel, in eval mode, on ``device``
    path: Path
    sha256: str
    device: str


_FileId = tuple[str, int, int]
_LOCK = threading.RLock()
_MODELS: dict[tuple[str, int, str], tuple[_FileId, LoadedModel]] = {}
_HASHES: dict[_FileId, str] = {}


def _file_id(path: Path) -> _FileId:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def clear_model_cache() -> None:
    with _LOCK:
        _MODELS.clear()
        _HASHES.clear()


def file_sha256(path: Path) -> str:
    file_id = _file_id(path)
    with _LOCK:
        digest = _HASHES.get(file_id)
    if digest is None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        with _LOCK:
            _HASHES[file_id] = digest
    return digest


def load_checkpoint(path: Path, arch: str, device: str = "cpu") -> LoadedModel:
    """Build ``arch`` from the state dict in ``path``: zoo files and any other alike.

    The network size (N, M) is read from the tensors by the architecture's
    ``from_state_dict``. Old key names are renamed as the zoo does, and entropy
    coder tables missing from the file are computed with ``update(force=True)``.
    """
    torch = _torch()
    compressai = _compressai()
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]  # a training checkpoint, not a bare state dict
        state = compressai.zoo.pretrained.load_pretrained(dict(state))
        model = _from_state_dict(compressai.zoo.image.model_architectures[arch], state)
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError(f"cannot load {path} as {arch} weights: {exc}") from exc
    if _tables_missing(model):
        model.update(force=True)
    model = model.to(device).eval()
    with _LOCK:
        _HASHES[_file_id(path)] = digest
    return LoadedModel(model=model, path=path, sha256=digest, device=device)


def _from_state_dict(cls, state: dict) -> Any:
    torch = _torch()
    # load_state_dict() sizes the entropy coders' buffers from the state dict
    # and fails with KeyError when a file lacks them; give it empty ones, and
    # let update() compute the tables afterwards.
    for _ in range(16):
        try:
            return cls.from_state_dict(state)
        except KeyError as exc:
            key = exc.args[0] if exc.args else None
            if (
                not isinstance(key, str)
                or key in state
                or key.rsplit(".", 1)[-1] not in _CDF_BUFFERS
            ):
                raise
            dtype = torch.float32 if key.endswith("scale_table") else torch.int32
            state[key] = torch.empty(0, dtype=dtype)
    raise CodecError("too many entropy coder tables missing from the checkpoint")


def _tables_missing(model) -> bool:
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional

    for module in model.modules():
        if isinstance(module, EntropyBottleneck | GaussianConditional):
            if module._quantized_cdf.numel() == 0 or module._offset.numel() == 0:
                return True
    return False


def get_model(arch: str, quality: int, device: str) -> LoadedModel:
    """The cached model for (arch, quality, device), reloaded if its file changed."""
    path = resolve_checkpoint(arch, quality)
    file_id = _file_id(path)
    key = (arch, quality, device)
    with _LOCK:
        cached = _MODELS.get(key)
        if cached is not None and cached[0] == file_id:
            return cached[1]
        loaded = load_checkpoint(path, arch, device)
        _MODELS[key] = (file_id, loaded)
        return loaded


# --- the container -------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    arch: str
    quality: int
    height: int
    width: int
    padded: tuple[int, int]
    latent: tuple[int, int]
    weights: bytes
    lengths: tuple[int, ...]


def _pack(header: _Header, strings: Sequence[bytes]) -> bytes:
    arch = header.arch.encode("ascii")
    head = (
        _MAGIC
        + struct.pack(">BB", _FORMAT, len(arch))
        + arch
        + _FIXED.pack(
            header.quality,
            header.height,
            header.width,
            *header.padded,
            *header.latent,
            header.weights,
            len(strings),
        )
        + struct.pack(f">{len(strings)}I", *(len(s) for s in strings))
    )
    return head + b"".join(strings)


def _unpack(data: bytes) -> tuple[_Header, list[bytes]]:
    """Parse a container; raises ValueError or struct.error on anything malformed."""
    data = bytes(data)
    if data[:4] != _MAGIC:
        raise ValueError("not a twoafc learned-codec container")
    version, arch_len = struct.unpack_from(">BB", data, 4)
    if version != _FORMAT:
        raise ValueError(f"container format {version} is not {_FORMAT}")
    offset = 6
    arch = data[offset : offset + arch_len].decode("ascii")
    offset += arch_len
    quality, height, width, ph, pw, lh, lw, weights, count = _FIXED.unpack_from(data, offset)
    offset += _FIXED.size
    lengths = struct.unpack_from(f">{count}I", data, offset)
    offset += 4 * count
    if offset + sum(lengths) != len(data):
        raise ValueError("container is truncated or has trailing bytes")
    strings = []
    for length in lengths:
        strings.append(data[offset : offset + length])
        offset += length
    header = _Header(arch, quality, height, width, (ph, pw), (lh, lw), weights, tuple(lengths))
    return header, strings


# --- the codec -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CompressAICodec(BatchedCodec):
    """One CompressAI zoo architecture; ``quality`` picks the zoo checkpoint."""

    arch: str
    queue: ClassVar[str] = "gpu"  # the worker pool that should run it
    max_batch: int = 16  # images per network call in encode_batch/decode_batch

    def available(self) -> bool:
        return compressai_available()

    def device(self) -> str:
        return "cuda" if _torch().cuda.is_available() else "cpu"

    def checkpoint_name(self, level: int) -> str:
        return checkpoint_name(self.arch, self.validate_level(level))

    def version(self, level: int | None = None) -> str:
        """E.g. "CompressAI 1.2.8 bmshj2018-factorized q3 (bmshj2018-...-5c6f152b.pth.tar, sha256 1a2b...)".

        Without ``level`` only the library and architecture are named, since
        each quality is a different checkpoint.
        """
        head = f"CompressAI {_compressai().__version__} {self.arch}"
        if level is None:
            return f"{head} (zoo {METRIC} weights, one checkpoint per quality)"
        level = self.validate_level(level)
        name = checkpoint_name(self.arch, level)
        path = find_checkpoint(self.arch, level)
        digest = file_sha256(path)[:16] if path is not None else "not found"
        return f"{head} q{level} ({name}, sha256 {digest})"

    def version_at(self, level: int) -> str:
        return self.version(level)

    def check_ready(self, level: int | None) -> None:
        """Every checkpoint the condition needs must be on disk (or downloading allowed)."""
        if os.environ.get(DOWNLOAD_ENV, "").strip() == "1":
            return
        levels = [level] if level is not None else range(self.level_min, self.level_max + 1)
        for quality in levels:
            if find_checkpoint(self.arch, quality) is None:
                raise CodecError(_missing_message(self.arch, quality))

    def bits(self, data: bytes) -> int:
        """The entropy-coded length: 8 x the total length of compress()'s strings."""
        return 8 * sum(self._parse(data)[0].lengths)

    def encode_batch(self, images: Sequence[np.ndarray], level: int) -> list[bytes]:
        """Encode images at one level; same-size images share one network call."""
        level = self.validate_level(level)
        arrays = [check_rgb_image(image) for image in images]
        if not arrays:
            return []
        loaded = get_model(self.arch, level, self.device())
        weights = bytes.fromhex(loaded.sha256[: 2 * _HASH_BYTES])
        out: list[bytes | None] = [None] * len(arrays)
        for indexes in self._groups([a.shape for a in arrays]):
            height, width = arrays[indexes[0]].shape[:2]
            x, padded = self._to_tensor([arrays[i] for i in indexes], loaded.device)
            with self._quiet(), _torch().inference_mode():
                result = loaded.model.compress(x)
            latent = tuple(int(v) for v in result["shape"])
            for j, i in enumerate(indexes):
                strings = [bytes(stream[j]) for stream in result["strings"]]
                header = _Header(
                    self.arch,
                    level,
                    height,
                    width,
                    padded,
                    latent,
                    weights,
                    tuple(len(s) for s in strings),
                )
                out[i] = _pack(header, strings)
        return out  # type: ignore[return-value]

    def decode_batch(self, datas: Sequence[bytes]) -> list[np.ndarray]:
        """Decode containers; those of one quality and size share one network call."""
        parsed = [self._parse(data) for data in datas]
        out: list[np.ndarray | None] = [None] * len(parsed)
        keys = [(h.quality, h.padded, h.latent, len(h.lengths)) for h, _ in parsed]
        for indexes in self._groups(keys):
            first = parsed[indexes[0]][0]
            loaded = get_model(self.arch, first.quality, self.device())
            weights = bytes.fromhex(loaded.sha256[: 2 * _HASH_BYTES])
            for i in indexes:
                if parsed[i][0].weights != weights:
                    raise CodecError(
                        f"{self.name} data was made with other weights (sha256 "
                        f"{parsed[i][0].weights.hex()}) than {loaded.path.name} "
                        f"(sha256 {loaded.sha256[:16]})"
                    )
            streams = [[parsed[i][1][k] for i in indexes] for k in range(len(first.lengths))]
            try:
                with self._quiet(), _torch().inference_mode():
                    x_hat = loaded.model.decompress(streams, list(first.latent))["x_hat"]
            except Exception as exc:
                raise CodecError(f"{self.name} cannot decode the data: {exc}") from exc
            if tuple(x_hat.shape[-2:]) != first.padded:
                raise CodecError(
                    f"{self.name} decoded {tuple(x_hat.shape[-2:])}, header says {first.padded}"
                )
            pixels = self._to_uint8(x_hat)
            for j, i in enumerate(indexes):
                header = parsed[i][0]
                out[i] = np.ascontiguousarray(pixels[j, : header.height, : header.width])
        return out  # type: ignore[return-value]

    # --- helpers ---

    def _parse(self, data: bytes) -> tuple[_Header, list[bytes]]:
        try:
            header, strings = _unpack(data)
        except (ValueError, struct.error, UnicodeDecodeError) as exc:
            raise CodecError(f"{self.name} cannot decode the data: {exc}") from exc
        if header.arch != self.arch:
            raise CodecError(f"{self.name} cannot decode {header.arch} data")
        self.validate_level(header.quality)
        ph, pw = header.padded
        if not (0 < header.height <= ph and 0 < header.width <= pw):
            raise CodecError(f"{self.name} cannot decode the data: bad image size in header")
        return header, strings

    def _groups(self, keys: Sequence[object]) -> list[list[int]]:
        """Indexes with equal keys, in first-seen order, in chunks of max_batch."""
        by_key: dict[object, list[int]] = {}
        for i, key in enumerate(keys):
            by_key.setdefault(key, []).append(i)
        size = max(1, self.max_batch)
        return [g[s : s + size] for g in by_key.values() for s in range(0, len(g), size)]

    @staticmethod
    def _to_tensor(arrays: list[np.ndarray], device: str):
        torch = _torch()
        height, width = arrays[0].shape[:2]
        ph = -(-height // PAD_MULTIPLE) * PAD_MULTIPLE
        pw = -(-width // PAD_MULTIPLE) * PAD_MULTIPLE
        x = torch.from_numpy(np.stack(arrays)).to(device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if (ph, pw) != (height, width):
            x = torch.nn.functional.pad(x, (0, pw - width, 0, ph - height), mode="replicate")
        return x.contiguous(), (ph, pw)

    @staticmethod
    def _to_uint8(x_hat) -> np.ndarray:
        pixels = x_hat.clamp(0, 1).mul(255.0).round().to(_torch().uint8)
        return pixels.permute(0, 2, 3, 1).cpu().numpy()

    @staticmethod
    @contextlib.contextmanager
    def _quiet():
        with warnings.catch_warnings():
            # mbt2018/cheng2020 warn that their autoregressive entropy coding runs
            # serially on the CPU even when the network is on a GPU: known, accepted.
            warnings.filterwarnings("ignore", message="Inference on GPU is not recommended")
            yield


def _codec(arch: str, label: str, level_max: int) -> CompressAICodec:
    return CompressAICodec(
        name=arch,
        label=label,
        level_name="quality",
        level_min=1,
        level_max=level_max,
        arch=arch,
    )


LEARNED_CODECS: tuple[CompressAICodec, ...] = (
    _codec("bmshj2018-factorized", "Ballé 2018 factorized prior (CompressAI)", 8),
    _codec("bmshj2018-hyperprior", "Ballé 2018 scale hyperprior (CompressAI)", 8),
    _codec("mbt2018-mean", "Minnen 2018 mean-scale hyperprior (CompressAI)", 8),
    _codec("mbt2018", "Minnen 2018 joint autoregressive prior (CompressAI)", 8),
    _codec("cheng2020-anchor", "Cheng 2020 anchor (CompressAI)", 6),
)


def register_all() -> list[CompressAICodec]:
    """Register the learned codecs if torch and CompressAI are installed; returns them."""
    if not compressai_available():
        return []
    return [register(codec) for codec in LEARNED_CODECS]
