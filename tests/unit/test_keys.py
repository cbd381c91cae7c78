import hashlib
import re

from gateway.domain.keys import hash_key, is_key_id, new_key, parse_key, verify_key


def test_new_key_has_prefix_id_secret_and_checksum():
    key = new_key()
    assert re.fullmatch(r"maas_[0-9A-Za-z]{16}_[0-9A-Za-z]{38}", key.plaintext)
    assert key.key_id == "key_" + key.plaintext[5:21]
    assert is_key_id(key.key_id)


def test_parse_round_trips_and_rejects_any_single_typo():
    key = new_key()
    assert parse_key(key.plaintext) == key
    for position in range(5, len(key.plaintext)):
        if key.plaintext[position] == "_":
            continue
        wrong = "A" if key.plaintext[position] != "A" else "B"
        typo = key.plaintext[:position] + wrong + key.plaintext[position + 1 :]
        assert parse_key(typo) is None, position


def test_parse_rejects_malformed_keys():
    for candidate in ["", "sk-abc", "maas_", "maas_" + "a" * 60, new_key().plaintext + "x", " " + new_key().plaintext]:
        assert parse_key(candidate) is None


def test_secrets_are_unique_and_carry_over_128_bits():
    keys = {new_key().plaintext for _ in range(2000)}
    assert len(keys) == 2000
    assert 32 * 5.95 > 128  # 32 base62 characters


def test_hash_is_keyed_and_verification_constant_time_api():
    key = new_key().plaintext
    stored = hash_key(key, b"pepper")
    assert stored != hashlib.sha256(key.encode()).hexdigest()  # a pepper changes the hash
    assert verify_key(key, stored, b"pepper")
    assert not verify_key(key, stored, b"other pepper")
    assert key not in repr(parse_key(key))
