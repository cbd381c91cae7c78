"""DynamoDB's errors as its JSON 1.0 protocol sends them: botocore reads the code after the
``#`` of ``__type`` and raises ``ClientError`` with that code, as it does against AWS."""

from __future__ import annotations

from typing import Any

_PREFIX = "com.amazonaws.dynamodb.v20120810#"


class DynamoError(Exception):
    """An error the server answers with; ``extra`` goes into the body beside the message."""

    code = "InternalServerError"
    status = 400

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"__type": _PREFIX + self.code, "message": self.message, **self.extra}


class ValidationException(DynamoError):
    code = "ValidationException"


class SerializationException(DynamoError):
    code = "SerializationException"


class UnknownOperationException(DynamoError):
    code = "UnknownOperationException"


class ResourceNotFoundException(DynamoError):
    code = "ResourceNotFoundException"


class ResourceInUseException(DynamoError):
    code = "ResourceInUseException"


class ConditionalCheckFailedException(DynamoError):
    code = "ConditionalCheckFailedException"

    def __init__(self) -> None:
        super().__init__("The conditional request failed")


class TransactionCanceledException(DynamoError):
    code = "TransactionCanceledException"

    def __init__(self, reasons: list[dict[str, Any]]) -> None:
        codes = ", ".join(reason["Code"] for reason in reasons)
        super().__init__(f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
                         CancellationReasons=reasons)


class IdempotentParameterMismatchException(DynamoError):
    code = "IdempotentParameterMismatchException"


class InternalServerError(DynamoError):
    code = "InternalServerError"
    status = 500
