"""Extraction over a corpus file: streamed, resumable, sharded over processes (``NERExtractor.predict_file``).

Input: JSON lines (``.jsonl``/``.ndjson``/``.json``: one object per line with a text field, default ``"text"``,
and an optional id field, default ``"id"``; the id defaults to the line number) or plain text (any other
suffix: one text per line, the id is the line number). Lines are numbered from 1.

Output: one JSON line ``{"id", "text", "entities"}`` per input line, in input order, written as the work goes
(a chunk of ``chunk_size`` texts at a time, so memory stays bounded on any file size); an empty text gets an
empty entity list. Beside it, ``<output>.meta.json`` records the model, the entity types and the input file.

- **Resume**: run the same command again after a crash or kill. The output holds the first lines of the
  input in order: those are checked (same ids) and skipped, streaming, so memory stays bounded; a last line
  cut mid-write is removed first (a line is only ever complete or absent); an output written by another
  model, for other types or from another input is refused, naming the fix.
- **Shards**: under ``accelerate launch`` each process takes the lines ``i`` with ``i % num_processes ==
  process_index`` (accelerate's process index and count) into ``<output>.shard-K-of-N`` (resumable the same
  way); when every shard is complete, the main process merges them in input order into ``<output>``.
- **Bad lines**: a JSON line that is not a JSON object or has no string text raises ``ValueError`` naming
  ``file:line``; with ``skip_bad_lines=True`` it is skipped and counted (``CorpusSummary.bad_lines``). An
  empty input gives an empty output.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CorpusRecord", "CorpusSummary", "predict_file", "read_corpus"]

logger = logging.getLogger(__package__)

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
#: Key of the input line number kept in shard files (removed when the shards are merged).
_LINE_KEY = "_line"
_END = object()


@dataclass(frozen=True)
class CorpusRecord:
    """One input line: its number (from 1), its id and its text."""

    line: int
    id: Any
    text: str


@dataclass
class CorpusSummary:
    """What :func:`predict_file` did."""

    output_file: str
    lines: int = 0  # input lines read (this process's share)
    predicted: int = 0  # texts predicted in this run
    resumed: int = 0  # texts skipped because the output already had them
    bad_lines: int = 0  # lines skipped with skip_bad_lines=True
    entities: int = 0  # mentions written in this run
    seconds: float = 0.0
    merged: bool = False  # shards merged into output_file by this call
    shard: str | None = None  # this process's shard file, when sharded
    bad_line_numbers: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_json_lines(path: Path) -> bool:
    return path.suffix.lower() in JSON_SUFFIXES


def read_corpus(
    path: str | os.PathLike[str],
    *,
    text_field: str = "text",
    id_field: str = "id",
    skip_bad_lines: bool = False,
    bad_lines: list[int] | None = None,
) -> Iterator[CorpusRecord]:
    """Stream the records of a corpus file (see the module docstring), one line at a time.

    ``bad_lines`` (a list) receives the numbers of the lines skipped with ``skip_bad_lines``.

    Example:
        >>> next(read_corpus("texts.txt"))  # doctest: +SKIP
        CorpusRecord(line=1, id=1, text='Angela Merkel led the CDU .')
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(
            f"Input file {str(source)!r} does not exist: pass an existing .jsonl or .txt file."
        )
    as_json = _is_json_lines(source)
    # newline="\n": a text's own "\r" (or a CR-only file) is text, not a line break
    with open(source, encoding="utf-8", newline="\n") as handle:
        number = 0
        while True:
            try:
                raw = handle.readline()
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{source}:{number + 1}: not valid UTF-8 ({err}); re-encode the file as UTF-8."
                ) from err
            if not raw:
                break
            number += 1
            line = raw[:-1] if raw.endswith("\n") else raw
            if line.endswith("\r"):
                line = line[:-1]
            if as_json:
                problem = None
                record = None
                if not line.strip():
                    problem = 'an empty line (write {"text": ""} for an empty text)'
                else:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as err:
                        problem = f"not JSON ({err.msg} at column {err.colno})"
                if problem is None and not isinstance(record, dict):
                    problem = f"a JSON {type(record).__name__}, not an object with a {text_field!r} field"
                if problem is None and not isinstance(record.get(text_field), str):
                    problem = (
                        f"no string {text_field!r} field (keys: {sorted(record)})"
                        if text_field not in record
                        else f"{text_field!r} is {type(record[text_field]).__name__}, not a string"
                    )
                if problem is not None:
                    if skip_bad_lines:
                        if bad_lines is not None:
                            bad_lines.append(number)
                        continue
                    raise ValueError(
                        f"{source}:{number}: {problem}. Fix the line, or pass skip_bad_lines=True "
                        "(--skip_bad_lines) to skip such lines and count them."
                    )
                text = record[text_field]
                rid = record.get(id_field, number)
                if not isinstance(rid, (str, int)) or isinstance(rid, bool):
                    raise ValueError(
                        f"{source}:{number}: the {id_field!r} field must be a string or an integer, got "
                        f"{rid!r}."
                    )
            else:
                text, rid = line, number
            yield CorpusRecord(number, rid, text)


# --------------------------------------------------------------------------------------------------------
# Output files: complete lines only, resumable
# --------------------------------------------------------------------------------------------------------
def _drop_partial_last_line(path: Path) -> None:
    """Cut a last line that a killed run left without its newline (never a partial record)."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        # find the last newline, reading backwards in blocks
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            block = handle.read(end - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                handle.truncate(start + cut + 1)
                logger.warning("%s: removed a partial last line left by an interrupted run.", path)
                return
            end = start
        handle.truncate(0)
        logger.warning("%s: removed a partial last line left by an interrupted run.", path)


def _written_ids(path: Path) -> Iterator[Any]:
    """The ids of the lines already in an output (or shard) file, in order, streamed (a cut last line is
    removed first)."""
    if not path.exists():
        return
    _drop_partial_last_line(path)
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                yield json.loads(line)["id"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(
                    f"{path}:{number}: not an output line of predict_file ({err}): pass another --output_file, "
                    "or remove this file to start over."
                ) from err


def _check_meta(meta_path: Path, meta: dict[str, Any], output: Path) -> None:
    """Refuse to resume an output written by another model, for other types or from another input."""
    if not meta_path.exists():
        if output.exists() and output.stat().st_size > 0:
            raise ValueError(
                f"{output} exists but has no {meta_path.name} (it was not written by predict_file): pass another "
                "--output_file, or remove it to start over."
            )
        return
    old = json.loads(meta_path.read_text(encoding="utf-8"))
    differ = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
    if differ:
        detail = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items())
        raise ValueError(
            f"{output} was written with other settings ({detail}): resuming would mix answers. Pass another "
            "--output_file, or remove it (and its .meta.json) to start over."
        )


def _write_meta(meta_path: Path, meta: dict[str, Any]) -> None:
    tmp = meta_path.with_name(meta_path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, meta_path)


def _shard_path(output: Path, index: int, count: int) -> Path:
    return output.with_name(f"{output.name}.shard-{index}-of-{count}")


def _done_marker(shard: Path) -> Path:
    return shard.with_name(shard.name + ".done")


def _merge_shards(output: Path, count: int) -> None:
    """Merge complete shards into ``output`` in input order (a streamed k-way merge), atomically."""
    shards = [_shard_path(output, k, count) for k in range(count)]
    handles = [open(s, encoding="utf-8") for s in shards]
    tmp = output.with_name(output.name + ".merging")
    try:
        streams = [((json.loads(line)[_LINE_KEY], line) for line in h) for h in handles]
        with open(tmp, "w", encoding="utf-8") as out:
            for _, line in heapq.merge(*streams, key=lambda item: item[0]):
                record = json.loads(line)
                record.pop(_LINE_KEY, None)
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, output)
    finally:
        for h in handles:
            h.close()
    for s in shards:
        s.unlink()
        _done_marker(s).unlink(missing_ok=True)


def _distribution(process_index: int | None, num_processes: int | None) -> tuple[int, int, Any]:
    """(index, count, accelerate state or None): explicit values, else accelerate's when launched by it."""
    if process_index is not None or num_processes is not None:
        index, count = int(process_index or 0), int(num_processes or 1)
        if count < 1 or not 0 <= index < count:
            raise ValueError(
                f"process_index must be in [0, num_processes) and num_processes >= 1, got {index} of {count}."
            )
        return index, count, None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch
        from accelerate import PartialState

        # without a GPU, accelerate joins the processes only when told to run on the CPU (gloo)
        state = PartialState(cpu=not torch.cuda.is_available())
        if state.num_processes != world:  # every process would write every line
            raise RuntimeError(
                f"WORLD_SIZE is {world} but accelerate sees {state.num_processes} process(es) "
                f"({state.distributed_type}): launch with accelerate launch (or torchrun) so the processes join."
            )
        return state.process_index, state.num_processes, state
    return 0, 1, None


def _chunks(records: Iterable[CorpusRecord], size: int) -> Iterator[list[CorpusRecord]]:
    chunk: list[CorpusRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def predict_file(
    extractor: Any,  # a NERExtractor (not imported: api imports this module)
    input_file: str | os.PathLike[str],
    output_file: str | os.PathLike[str],
    entity_types: Sequence[str] | None = None,
    *,
    chunk_size: int = 256,
    text_field: str = "text",
    id_field: str = "id",
    skip_bad_lines: bool = False,
    process_index: int | None = None,
    num_processes: int | None = None,
    progress: bool | None = None,
    model_name: str | None = None,
    **predict_kwargs: Any,
) -> CorpusSummary:
    """Predict every text of ``input_file`` into ``output_file`` (see the module docstring).

    Args:
        extractor: the :class:`~cllmfs_hf.extractor.NERExtractor` to use.
        input_file: JSON lines or plain text, one text per line.
        output_file: the JSON-lines output (resumed if it exists and was written with the same settings).
        entity_types: the types to extract (default: the extractor's).
        chunk_size: texts read, predicted and written at a time.
        text_field, id_field: the JSON-lines field names.
        skip_bad_lines: skip (and count) JSON lines without a string text instead of raising.
        process_index, num_processes: this process's shard (default: accelerate's, when launched with it).
        progress: a progress bar with texts/s (default: on for a terminal).
        model_name: what the output's ``.meta.json`` records as the model (default: the model's own name).
        **predict_kwargs: passed to :meth:`NERExtractor.predict` (``batch_size``, ``max_new_tokens``, ...).

    Example:
        >>> extractor.predict_file("texts.jsonl", "entities.jsonl", ["person"])  # doctest: +SKIP
        CorpusSummary(output_file='entities.jsonl', lines=1000, predicted=1000, ...)
    """
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}.")
    source, output = Path(input_file), Path(output_file)
    if source.resolve() == output.resolve():
        raise ValueError(f"output_file is the input file {str(source)!r}: choose another output path.")
    if output.exists() and output.is_dir():
        raise IsADirectoryError(f"output_file {str(output)!r} is a folder: pass a file path, e.g. out.jsonl.")
    types = list(entity_types) if entity_types is not None else extractor.entity_types
    if not types:
        raise ValueError("predict_file needs entity types: pass entity_types=[...] (--entity_types).")
    index, count, state = _distribution(process_index, num_processes)
    meta = {
        "model": str(model_name or getattr(getattr(extractor.model, "config", None), "name_or_path", "")),
        "entity_types": list(types),
        "input_file": str(source.resolve()),
        "processes": count,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    meta_path = output.with_name(output.name + ".meta.json")
    target = _shard_path(output, index, count) if count > 1 else output
    summary = CorpusSummary(output_file=str(output), shard=str(target) if count > 1 else None)
    _check_meta(meta_path, meta, output)
    if (
        count > 1
        and output.exists()
        and not any(_shard_path(output, k, count).exists() for k in range(count))
    ):
        logger.info("%s is complete (its shards were merged): nothing to do.", output)
        return summary
    if index == 0 or count == 1:
        if not meta_path.exists():
            _write_meta(meta_path, meta)
    written = _written_ids(target)  # the output is in input order: a resumed run checks and skips its lines
    resuming = True
    start = time.perf_counter()
    show = progress if progress is not None else (os.isatty(2) and index == 0)
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=-(-_count_lines(source) // count), desc="NER texts", unit="text")
    bad: list[int] = []
    records = read_corpus(
        source, text_field=text_field, id_field=id_field, skip_bad_lines=skip_bad_lines, bad_lines=bad
    )
    mine = (r for i, r in enumerate(records) if i % count == index)
    try:
        with open(target, "a", encoding="utf-8") as out:
            for chunk in _chunks(mine, chunk_size):
                summary.lines += len(chunk)
                todo = []
                for r in chunk:
                    if resuming:
                        wid = next(written, _END)
                        if wid is _END:
                            resuming = False
                        elif wid != r.id:
                            raise ValueError(
                                f"{target} line {summary.resumed + 1} has id {wid!r}, but {source}:{r.line} (the "
                                f"next input line) has id {r.id!r}: the input changed since that output was "
                                "written. Pass another --output_file, or remove it to start over."
                            )
                        else:
                            summary.resumed += 1
                            continue
                    todo.append(r)
                texts = [r.text for r in todo]
                keep = [i for i, t in enumerate(texts) if t.strip()]
                predicted = (
                    extractor.predict([texts[i] for i in keep], types, progress=False, **predict_kwargs)
                    if keep
                    else []
                )
                entities: list[list[dict[str, Any]]] = [[] for _ in todo]
                for i, found in zip(keep, predicted):
                    entities[i] = found
                lines = []
                for r, found in zip(todo, entities):
                    row: dict[str, Any] = {"id": r.id, "text": r.text, "entities": found}
                    if count > 1:
                        row[_LINE_KEY] = r.line
                    lines.append(json.dumps(row, ensure_ascii=False) + "\n")
                    summary.entities += len(found)
                # one write per chunk, flushed: a kill leaves complete lines and at most one cut line,
                # which the next run removes
                out.write("".join(lines))
                out.flush()
                summary.predicted += len(todo)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    summary.bad_lines = len(bad)
    summary.bad_line_numbers = bad[:100]
    summary.seconds = time.perf_counter() - start
    if bad:
        logger.warning("%s: skipped %d bad line(s) (first: %s).", source, len(bad), bad[:10])
    if count > 1:
        _done_marker(target).write_text("done\n", encoding="utf-8")
        if state is not None:
            state.wait_for_everyone()
        is_main = state.is_main_process if state is not None else True
        all_done = all(_done_marker(_shard_path(output, k, count)).exists() for k in range(count))
        if is_main and all_done:
            _merge_shards(output, count)
            summary.merged = True
        if state is not None:
            state.wait_for_everyone()
    return summary
