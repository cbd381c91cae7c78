"""Tokenization with the model's own tokenizer (HF ``tokenizers``), done once in the
gateway: the exact token count is known before admission and the container gets ids."""

from __future__ import annotations

from tokenizers import Tokenizer

from gateway.domain.registry import ModelSpec
from gateway.errors import InvalidRequestError

# What a text may have per token it is allowed, before the tokenizer runs: the vocabulary's
# longest piece is 18 characters, English averages about 4. Whitespace and accents the
# normaliser drops make no token at all, so a longer text is refused (or cut, with truncate)
# unread: tokenizing costs about 1 µs a character.
CHARS_PER_TOKEN = 32


class ModelTokenizer:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._exact = self._load()
        # Separate instance: truncation is tokenizer state, and instances are shared by threads.
        self._truncating = self._load()
        self._truncating.enable_truncation(max_length=spec.max_tokens)
        self.max_chars = spec.max_tokens * CHARS_PER_TOKEN
        self.vocab_size = self._exact.get_vocab_size(with_added_tokens=True)
        # The tokens the model's post-processor frames an input with: [CLS]/[SEP] for BERT
        # (MiniLM), <s>/</s> for MPNet. An empty text is exactly the frame.
        frame = self._exact.encode("", add_special_tokens=True).ids
        if len(frame) != 2:
            raise ValueError(f"{spec.tokenizer_file} frames an input with {frame}, not a start and an end token")
        self.cls_id, self.sep_id = frame

    def _load(self) -> Tokenizer:
        tokenizer = Tokenizer.from_file(str(self.spec.tokenizer_file))
        # The packaged tokenizer.json pads every input to 128 tokens: never pay for padding.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return tokenizer

    def encode_texts(self, texts: list[str], *, truncate: bool) -> list[list[int]]:
        tokenizer = self._truncating if truncate else self._exact
        bounded = [self._bounded(index, text, truncate) for index, text in enumerate(texts)]
        ids = [encoding.ids for encoding in tokenizer.encode_batch(bounded, add_special_tokens=True)]
        self._check_lengths(ids)
        return ids

    def _bounded(self, index: int, text: str, truncate: bool) -> str:
        if len(text) <= self.max_chars:
            return text
        if truncate:  # the cut lies far past the text's first max_tokens tokens
            return text[:self.max_chars]
        raise InvalidRequestError(
            f"input[{index}] is {len(text)} characters, more than the {self.max_chars} an input of the "
            f"model's {self.spec.max_tokens} tokens may have; shorten it or send \"truncate\": true",
            param="input", code="context_length_exceeded")

    def wrap_ids(self, sequences: list[list[int]], *, truncate: bool) -> list[list[int]]:
        """Token ids given by the caller are the text's tokens; the model's start and end
        tokens ([CLS]/[SEP], <s>/</s>) are added unless the sequence already has them."""
        wrapped = []
        for index, ids in enumerate(sequences):
            if not ids:
                raise InvalidRequestError(f"input[{index}] is empty", param="input")
            if any(not 0 <= token < self.vocab_size for token in ids):
                raise InvalidRequestError(
                    f"input[{index}] has token ids outside [0, {self.vocab_size})", param="input"
                )
            if not (ids[0] == self.cls_id and ids[-1] == self.sep_id and len(ids) >= 2):
                ids = [self.cls_id, *ids, self.sep_id]
            if truncate and len(ids) > self.spec.max_tokens:
                ids = [*ids[: self.spec.max_tokens - 1], self.sep_id]
            wrapped.append(ids)
        self._check_lengths(wrapped)
        return wrapped

    def _check_lengths(self, sequences: list[list[int]]) -> None:
        for index, ids in enumerate(sequences):
            if len(ids) > self.spec.max_tokens:
                raise InvalidRequestError(
                    f"input[{index}] is {len(ids)} tokens, over the model's limit of "
                    f"{self.spec.max_tokens}; shorten it or send \"truncate\": true",
                    param="input",
                    code="context_length_exceeded",
                )
