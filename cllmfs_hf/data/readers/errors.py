"""The one error every reader raises: :class:`DataFormatError` (a ``ValueError`` naming where, what and the fix)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DataFormatError"]


class DataFormatError(ValueError):
    """A corpus file (or dataset row) that cannot be read as is.

    The message always says where (``path:line``), what is wrong and how to fix it.

    Example:
        >>> str(DataFormatError("a.txt", 3, "empty tag.", "give every token a tag, 'O' outside entities."))
        "a.txt:3: empty tag. Fix: give every token a tag, 'O' outside entities."
    """

    def __init__(self, path: str | Path, line: int | None, problem: str, fix: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        self.fix = fix
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem} Fix: {fix}")
