"""What an outage looks like from here: a store that cannot answer right now (DynamoDB
unreachable, throttled or failing on its side; Redis unreachable). Such an error is the
caller's 503 + Retry-After, never a 500 (CONTRACT.md §7, §10), wherever it surfaces."""

from __future__ import annotations

import sys

from gateway.domain.admission import AdmissionUnavailable

# DynamoDB's own ways of saying "not now" (besides any 5xx).
_DYNAMODB_BUSY = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
                            "InternalServerError", "ServiceUnavailable", "TransactionInProgressException",
                            "LimitExceededException"})


def is_outage(error: BaseException) -> bool:
    if isinstance(error, AdmissionUnavailable):
        return True
    # Only a library already loaded can have raised its errors: nothing is imported here.
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None:
        if isinstance(error, botocore.BotoCoreError):  # unreachable, timed out, connection lost
            return True
        if isinstance(error, botocore.ClientError):
            response = error.response
            code = str(response.get("Error", {}).get("Code", ""))
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            return status >= 500 or code in _DYNAMODB_BUSY
    redis = sys.modules.get("redis.exceptions")
    # ConnectionError covers a Redis still loading its data; READONLY, a failover under way.
    return redis is not None and isinstance(error, redis.ConnectionError | redis.TimeoutError | redis.ReadOnlyError)
