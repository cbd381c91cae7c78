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


def test_mpnet_has_its_own_frame_and_limit():
    from gateway.domain.registry import resolve

    spec = resolve("all-mpnet-base-v2")
    assert spec is not None

    mpnet = ModelTokenizer(spec)
    assert (mpnet.cls_id, mpnet.sep_id, mpnet.spec.max_tokens) == (0, 2, 384)
    text = "word " * 300  # 302 tokens: over MiniLM's limit, inside MPNet's
    assert len(mpnet.encode_texts([text], truncate=False)[0]) == 302
    (ids,) = mpnet.encode_texts(["word " * 500], truncate=True)
    assert len(ids) == 384 and (ids[0], ids[-1]) == (0, 2)
    assert mpnet.wrap_ids([[7596]], truncate=False) == [[0, 7596, 2]]
    assert spec.max_request_tokens == 131072  # the catalogue's per-model limit
