"""Deterministic validation texts and the comparison used to accept an exported model.

The same texts serve the export gate, the tests and the offline benchmark, so "equal to
sentence-transformers" means one thing everywhere.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

_HANDWRITTEN: tuple[str, ...] = (
    "a",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "   leading and trailing spaces   ",
    "UPPER CASE TEXT SHOULD BE LOWERED BY THE TOKENIZER",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "!!!???...,,,;;;:::---",
    "\"Quotes\", 'apostrophes' and (parentheses) [brackets] {braces} <angles>",
    "3.14159 2.71828 1.41421 42 1e-9 -17 +3 0x1F 1,000,000",
    "Order #12345 shipped on 2026-11-29 at 13:40 UTC for $1,299.99 (tax 8.5%).",
    "def add(a: int, b: int) -> int:\n    return a + b  # simple",
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days';",
    '{"key": [1, 2, 3], "nested": {"ok": true, "value": null}}',
    "for (let i = 0; i < n; i++) { sum += arr[i] * 2; }",
    "https://example.com/path?query=value&other=1#fragment",
    "user.name+tag@example.org",
    "Crème brûlée, naïve café, jalapeño, São Paulo, Zürich, Ångström.",
    "Ça va? Où est la bibliothèque? Je ne sais pas.",
    "Größenwahn ist keine Straße für Übermut.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
    "机器学习是人工智能的一个分支。",
    "東京は日本の首都です。ラーメンが好きです。",
    "한국어 문장도 잘 처리되어야 합니다.",
    "שלום עולם, זהו משפט בעברית.",
    "مرحبا بالعالم، هذه جملة باللغة العربية.",
    "नमस्ते दुनिया, यह हिंदी में एक वाक्य है।",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "I love pizza 🍕🍕 and tacos 🌮! 😀😃😄 👍🏽 👨‍👩‍👧‍👦",
    "Mixed: English, 中文, العربية, עברית, русский, emoji 🚀 and numbers 123.",
    "tab\tseparated\tvalues\nand new\nlines\r\nwindows",
    "zero\u200bwidth\u200bspace and non\u00a0breaking space",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "A man, a plan, a canal: Panama.",
    "The mitochondria is the powerhouse of the cell.",
    "Embeddings map text to vectors so that similar meanings are close together.",
    "¿Dónde está la estación de tren? ¡Está muy lejos!",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
)

_WORDS: tuple[str, ...] = (
    "the", "model", "embedding", "vector", "token", "batch", "server", "request", "latency",
    "throughput", "gpu", "cpu", "memory", "cache", "quota", "tenant", "billing", "invoice",
    "river", "mountain", "coffee", "music", "history", "science", "language", "city", "night",
    "café", "naïve", "東京", "数据", "🙂", "42", "3.5", "x+y", "don't", "e-mail", "C++",
    "ownership", "semantic", "search", "retrieval", "ranking", "similarity", "cosine",
)


def _word_salad(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n_words))


def _exact_length(count: Callable[[str], int], target: int, seed: int) -> str:
    """A text whose token count (special tokens included) is exactly ``target``."""
    rng = random.Random(seed)
    words: list[str] = []
    while True:
        candidates = list(_WORDS)
        rng.shuffle(candidates)
        for word in candidates:
            n = count(" ".join([*words, word]))
            if n <= target:
                words.append(word)
                if n == target:
                    return " ".join(words)
                break
        else:  # nothing fits any more: close the gap with single-token words
            while count(" ".join(words)) < target:
                words.append("a")
            if count(" ".join(words)) == target:
                return " ".join(words)
            words = words[:-2]


def validation_texts(count_tokens: Callable[[str], int] | None = None, max_tokens: int = 256) -> list[str]:
    """>= 50 varied, deterministic texts.

    With ``count_tokens`` (untruncated count, special tokens included) the list also holds texts
    of exactly m-6, m-2, m-1, m (three of them), m+1 and m+44 tokens, m = ``max_tokens``
    (250 ... 300 for the 256-token MiniLM).
    """
    rng = random.Random(20261129)
    texts = list(_HANDWRITTEN)
    for n_words in (5, 12, 30, 60, 100, 160):
        texts.append(_word_salad(rng, n_words))
    texts.append(" ".join(_HANDWRITTEN[:12]))  # a long paragraph of mixed content
    texts.append(("This sentence repeats to make a long input. " * 40).strip())  # > 256 tokens
    if count_tokens is not None:
        m = max_tokens
        for i, target in enumerate((m - 6, m - 2, m - 1, m, m, m, m + 1, m + 44)):
            texts.append(_exact_length(count_tokens, target, seed=1000 + i))
    return texts


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [n, d] arrays (float64 arithmetic)."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    num = (a64 * b64).sum(axis=1)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return num / np.maximum(den, 1e-30)


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad ``ids`` to the longest item: (input_ids, attention_mask), both int64."""
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return input_ids, mask
