"""Text for ``crossent demo``: Python's own documentation by default, split into word-level tokens."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import torch

from crossent.cli._errors import CLIError

# Words (letters, digits, underscore) and single punctuation marks; whitespace separates tokens.
_TOKEN = re.compile(r"\w+|[^\w\s]")
UNKNOWN = "<unk>"


@dataclass(frozen=True)
class Corpus:
    """A text as token ids, with the vocabulary that maps ids back to tokens."""

    name: str
    ids: torch.Tensor  # (tokens,) int64
    vocabulary: list[str]  # vocabulary[0] is UNKNOWN, then the most frequent tokens


def default_text() -> tuple[str, str]:
    """pydoc_data.topics: about 465k characters of English documentation shipped with CPython."""
    from pydoc_data.topics import topics

    return "pydoc_data.topics", "\n".join(topics[key] for key in sorted(topics))


def read_text(path: str) -> tuple[str, str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return path, file.read()
    except OSError as exc:
        raise CLIError(f"--text {path}: {exc.strerror or exc}") from None


def tokenize(name: str, text: str, vocabulary_size: int, min_tokens: int) -> Corpus:
    """Word-level tokens; the ``vocabulary_size − 1`` most frequent ones get their own id, the rest UNKNOWN."""
    tokens = _TOKEN.findall(text)
    if len(tokens) < min_tokens:
        raise CLIError(f"{name} has {len(tokens)} tokens; the demo needs at least {min_tokens}")
    # most_common breaks ties by first appearance, so the vocabulary is the same on every run
    vocabulary = [UNKNOWN, *(token for token, _ in Counter(tokens).most_common(vocabulary_size - 1))]
    index = {token: i for i, token in enumerate(vocabulary)}
    ids = torch.tensor([index.get(token, 0) for token in tokens], dtype=torch.int64)
    return Corpus(name, ids, vocabulary)
