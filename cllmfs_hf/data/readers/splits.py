"""Split discovery: :func:`find_splits` locates the train/dev/test files of a dataset folder."""

from __future__ import annotations

import re
from pathlib import Path

from .conll import COLUMN_EXTENSIONS, _lines
from .dispatch import _suffix
from .errors import DataFormatError
from .jsonl import JSON_EXTENSIONS
from .tags import _MULTI_LABEL

__all__ = ["find_splits"]

_SPLIT_PATTERNS: dict[str, re.Pattern[str]] = {
    "train": re.compile(r"(?<![a-z])train(ing)?(?![a-z])"),
    "dev": re.compile(r"(?<![a-z])(dev|devel|development|valid|validation|val)(?![a-z])"),
    "test": re.compile(r"(?<![a-z])test(ing)?(?![a-z])"),
}
_DOC_NAMES = re.compile(
    r"^(readme|license|licence|copying|notice|source|sources|changelog|changes|citation|authors)(\.|$)",
    re.IGNORECASE,
)


def _is_data_file(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and not _DOC_NAMES.match(path.name)
        and _suffix(path) in COLUMN_EXTENSIONS + JSON_EXTENSIONS
    )


def _has_multi_label_tags(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    for ln in _lines(text):
        fields = ln.split("\t") if "\t" in ln else ln.split()
        if len(fields) >= 2 and _MULTI_LABEL.match(fields[-1].strip()):
            return True
    return False


def find_splits(folder: str | Path) -> dict[str, Path]:
    """Locate the train/dev/test files of a dataset folder.

    Rule:

    1. Data files are files ending in a column or JSON extension (:data:`COLUMN_EXTENSIONS`,
       :data:`JSON_EXTENSIONS`) that are not README/LICENSE/SOURCE-like documents. They are looked for in
       ``folder`` itself, else in its sub-folders at the shallowest depth that has any.
    2. A file belongs to a split when its lower-cased name contains, not inside a longer word, ``train`` /
       ``training`` (-> ``"train"``), ``dev`` / ``devel`` / ``development`` / ``val`` / ``valid`` /
       ``validation`` (-> ``"dev"``) or ``test`` / ``testing`` (-> ``"test"``); digits may touch the word
       (``wnut17train.conll``). Files naming no split are ignored, files naming several are an error.
    3. When several files claim one split, files whose tags carry several labels per token
       (``B-a,B-b``: unusable for single-label evaluation) are dropped; if several still remain, that is an
       error listing them.
    4. A folder whose data files name no split and hold exactly one file gives ``{"all": file}``.

    Returns:
        ``{"train": Path, "dev": Path, "test": Path}`` restricted to the splits present (order kept).

    Raises:
        DataFormatError: no data file, an ambiguous split (candidates listed) or a file naming two splits.

    Example:
        >>> import pathlib, tempfile
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for n in ("train.tsv", "devel.tsv", "test.tsv", "README.md"): _ = (d / n).write_text("a\\tO\\n")
        >>> {k: v.name for k, v in find_splits(d).items()}
        {'train': 'train.tsv', 'dev': 'devel.tsv', 'test': 'test.tsv'}
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: not a folder. Fix: pass the dataset folder (it holds train/dev/test files)."
        )
    files: list[Path] = []
    level = [folder]
    while level and not files:
        files = sorted(p for d in level for p in d.iterdir() if _is_data_file(p))
        level = sorted(p for d in level for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not files:
        raise DataFormatError(
            folder,
            None,
            "no data file found (looked for " + " ".join(COLUMN_EXTENSIONS + JSON_EXTENSIONS) + ").",
            "point to the folder that holds the dataset's train/dev/test files.",
        )
    claims: dict[str, list[Path]] = {k: [] for k in _SPLIT_PATTERNS}
    for f in files:
        stem = f.name.lower()
        hits = [k for k, pat in _SPLIT_PATTERNS.items() if pat.search(stem)]
        if len(hits) > 1:
            raise DataFormatError(
                f,
                None,
                f"the file name names several splits ({', '.join(hits)}).",
                "rename it to name one split.",
            )
        if hits:
            claims[hits[0]].append(f)
    if not any(claims.values()):
        if len(files) == 1:
            return {"all": files[0]}
        raise DataFormatError(
            folder,
            None,
            "no file names a split and there are several data files: "
            + ", ".join(str(f) for f in files)
            + ".",
            "name the files train/dev/test (e.g. train.txt, dev.txt, test.txt) or pass the file you want.",
        )
    out: dict[str, Path] = {}
    for split, cands in claims.items():
        if len(cands) > 1:
            single = [c for c in cands if not _has_multi_label_tags(c)]
            cands = single or cands
        if len(cands) > 1:
            raise DataFormatError(
                folder,
                None,
                f"several candidate {split} files: " + ", ".join(str(c) for c in cands) + ".",
                "keep one file per split in the folder, or pass the file you want to read_dataset().",
            )
        if cands:
            out[split] = cands[0]
    return out
