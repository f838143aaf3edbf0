"""Long texts: splitting a text into overlapping token windows at word boundaries, and merging the
mentions found in the windows back into one list per text.

Window policy (also in the package docstring): a mention that touches a window edge which is not an edge
of the text is dropped from that window (the neighbouring window, which overlaps it by about ``overlap``
tokens, sees it whole); identical mentions from two windows count once; overlapping mentions of the same
type from different windows are resolved in favour of the one farther from its window's edges.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["count_tokens", "merge_windows", "split_windows"]

_WORD_RE = re.compile(r"\S+")


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` without special tokens."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def split_windows(tokenizer: Any, text: str, budget: int, overlap: int) -> list[tuple[int, int]]:
    """Character windows ``[(start, end)]`` of at most ``budget`` tokens, overlapping, at word boundaries.

    Consecutive windows share about ``overlap`` tokens.
    """
    if count_tokens(tokenizer, text) <= budget:
        return [(0, len(text))]
    pieces: list[tuple[int, int]] = []
    words = [(m.start(), m.end()) for m in _WORD_RE.finditer(text)]
    counts = [
        len(ids)
        for ids in tokenizer([" " + text[s:e] for s, e in words], add_special_tokens=False)["input_ids"]
    ]
    # a "word" longer than a window (a URL, a table row, a text without spaces: Chinese, Japanese, Thai) is
    # cut into chunks of about half the overlap, so that windows built from several chunks still overlap
    chunk = max(1, min(budget, overlap) // 2)
    for (s, e), c in zip(words, counts):
        if c <= budget:
            pieces.append((s, e))
            continue
        step = max(1, (e - s) * chunk // (c + 1))
        pos = s
        while pos < e:
            end = min(e, pos + step)
            while end - pos > 1 and count_tokens(tokenizer, " " + text[pos:end]) > budget:
                end = pos + max(1, (end - pos) // 2)
            pieces.append((pos, end))
            pos = end
    piece_tokens = [count_tokens(tokenizer, " " + text[s:e]) for s, e in pieces]
    windows: list[tuple[int, int]] = []
    i = 0
    while i < len(pieces):
        j, total = i, 0
        while j < len(pieces) and total + piece_tokens[j] <= budget:
            total += piece_tokens[j]
            j += 1
        j = max(j, i + 1)
        # exact check (merges across word boundaries can change the count slightly)
        while j > i + 1 and count_tokens(tokenizer, text[pieces[i][0] : pieces[j - 1][1]]) > budget:
            j -= 1
        windows.append((pieces[i][0], pieces[j - 1][1]))
        if j >= len(pieces):
            break
        # next window starts so that about `overlap` tokens are shared
        k, shared = j, 0
        while k - 1 > i and shared + piece_tokens[k - 1] <= overlap:
            shared += piece_tokens[k - 1]
            k -= 1
        i = max(k, i + 1)
    return windows


def merge_windows(
    found: list[tuple[int, int, str, int]], windows: list[tuple[int, int]], length: int
) -> list[tuple[int, int, str]]:
    """The mentions ``(start, end, label)`` of one text from its windows' ``(start, end, label, window)``
    (offsets in the text), by the window policy above."""
    if len(windows) <= 1:
        return sorted({(s, e, label) for s, e, label, _ in found})
    candidates: list[tuple[int, int, int, str]] = []  # (-margin, start, end, label)
    for s, e, label, w in found:
        ws, we = windows[w]
        if (s == ws and ws > 0) or (e == we and we < length):
            continue  # touches a cut edge: the overlapping neighbour sees this mention whole
        candidates.append(
            (-min(s - ws if ws > 0 else length, we - e if we < length else length), s, e, label)
        )
    kept: list[tuple[int, int, str]] = []
    for _, s, e, label in sorted(candidates):
        if (s, e, label) in kept:
            continue
        if any(label == kl and s < ke and ks < e for ks, ke, kl in kept):
            continue
        kept.append((s, e, label))
    return kept
