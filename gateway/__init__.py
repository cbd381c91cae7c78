"""maas-gateway: a metered, OpenAI-compatible embeddings API.

Layers (see docs/ARCHITECTURE.md): ``models`` (request/response schemas),
``domain`` (keys, limits, plans, money), ``adapters`` (Redis, DynamoDB, inference,
tokenizer), ``http`` (auth, errors, headers) and ``services`` that tie them together.
``wiring`` builds the clients once per Lambda container.
"""

__version__ = "0.1.0"
