"""``maas models list`` prints the catalogue with each plan's prices, from the files."""

from __future__ import annotations

import json

from gateway.cli import main as maas


def test_models_list_prints_the_catalogue_and_the_prices(capsys) -> None:  # type: ignore[no-untyped-def]
    assert maas(["models", "list", "--json"]) == 0
    rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)["data"]}
    assert (rows["all-mpnet-base-v2"]["dimensions"], rows["all-mpnet-base-v2"]["max_input_tokens"]) == (768, 384)
    assert rows["all-mpnet-base-v2"]["prices_per_1k_tokens"] == {"starter": "0.0200", "pro": "0.0080", "internal": "0"}
    assert rows["all-MiniLM-L6-v2"]["prices_per_1k_tokens"]["free"] == "0"
    assert maas(["models", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["ID", "DIMENSIONS", "MAX_INPUT_TOKENS"] and len(table) == 3
