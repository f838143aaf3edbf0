"""The CLLMFS instruction template, in exactly one place (METHOD.md section 1).

Both the record builder (training) and the decoder/extractor (inference) read these constants and
functions, so the prompt a model is trained on is the prompt it is queried with.

The user message is ``{instruction}\\nInput: {sentence}``; the assistant answer is the preamble followed by
`` <<< mention >>>`` for every mention in order of appearance (nothing after the preamble for a negative).

Example:
    >>> content, type_span, sentence_offset = render_user_content("person", "a human being", "Ada wrote.")
    >>> content[sentence_offset:]
    'Ada wrote.'
    >>> format_completion(["Ada"])
    'I can extract entities for you, the extracted entities are <<< Ada >>>'
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "INSTRUCTION_TEMPLATE",
    "INPUT_PREFIX",
    "PREAMBLE",
    "SPAN_OPEN",
    "SPAN_CLOSE",
    "render_user_content",
    "format_completion",
    "prompt_messages",
]

INSTRUCTION_TEMPLATE = (
    "Please extract the entity of {type} in the input sentence given below, "
    "the entity of {type} refers to {description}."
)
INPUT_PREFIX = "\nInput: "
PREAMBLE = "I can extract entities for you, the extracted entities are"
SPAN_OPEN = "<<<"
SPAN_CLOSE = ">>>"


def render_user_content(type_name: str, description: str, sentence: str) -> tuple[str, tuple[int, int], int]:
    """The user message text, the character span of the first type name in it, and the sentence's offset."""
    instruction = INSTRUCTION_TEMPLATE.format(type=type_name, description=description.rstrip(". "))
    content = instruction + INPUT_PREFIX + sentence
    type_start = instruction.index(type_name)
    return content, (type_start, type_start + len(type_name)), len(instruction) + len(INPUT_PREFIX)


def format_completion(mention_texts: Sequence[str]) -> str:
    """Preamble then `` <<< m >>>`` for each mention text, in the order given."""
    return PREAMBLE + "".join(f" {SPAN_OPEN} {m} {SPAN_CLOSE}" for m in mention_texts)


def prompt_messages(type_name: str, description: str, sentence: str) -> list[dict[str, str]]:
    """The conversational prompt (TRL format) for one sentence x type query."""
    content, _, _ = render_user_content(type_name, description, sentence)
    return [{"role": "user", "content": content}]
