import pytest

from gateway.adapters.tokenizer import ModelTokenizer
from gateway.domain.registry import MINILM
from gateway.errors import InvalidRequestError


@pytest.fixture(scope="module")
def tokenizer() -> ModelTokenizer:
    return ModelTokenizer(MINILM)


def test_counts_special_tokens_and_never_pads(tokenizer):
    assert tokenizer.encode_texts(["a"], truncate=False) == [[101, 1037, 102]]
    lengths = [len(ids) for ids in tokenizer.encode_texts(["a", "a b c d e f"], truncate=False)]
    assert lengths == [3, 8]


def test_over_long_input_is_rejected_unless_truncated(tokenizer):
    text = "word " * 300
    with pytest.raises(InvalidRequestError) as error:
        tokenizer.encode_texts([text], truncate=False)
    assert error.value.code == "context_length_exceeded"
    (ids,) = tokenizer.encode_texts([text], truncate=True)
    assert len(ids) == 256 and ids[-1] == 102


def test_token_ids_are_wrapped_once_and_validated(tokenizer):
    assert tokenizer.wrap_ids([[1037]], truncate=False) == [[101, 1037, 102]]
    assert tokenizer.wrap_ids([[101, 1037, 102]], truncate=False) == [[101, 1037, 102]]
    with pytest.raises(InvalidRequestError):
        tokenizer.wrap_ids([[tokenizer.vocab_size]], truncate=False)
    with pytest.raises(InvalidRequestError):
        tokenizer.wrap_ids([[-1]], truncate=False)
    assert len(tokenizer.wrap_ids([[1037] * 400], truncate=True)[0]) == 256
