import pytest

from gateway.domain.scopes import Scope, grants
from gateway.errors import AuthenticationError
from gateway.http.auth import credential_from


def test_bearer_and_x_api_key_are_both_accepted():
    assert credential_from({"Authorization": "Bearer abc"}, None) == "abc"
    assert credential_from({"x-api-key": "abc"}, None) == "abc"
    assert credential_from({"authorization": "bearer abc", "X-Api-Key": "abc"}, None) == "abc"


@pytest.mark.parametrize("headers, multi", [
    ({}, None),
    ({"Authorization": "Basic abc"}, None),
    ({"Authorization": "Bearer "}, None),
    ({"Authorization": "Bearer abc", "x-api-key": "def"}, None),
    ({"Authorization": "Bearer abc"}, {"Authorization": ["Bearer abc", "Bearer def"]}),
])
def test_missing_malformed_or_conflicting_credentials_are_401(headers, multi):
    with pytest.raises(AuthenticationError):
        credential_from(headers, multi)


def test_admin_implies_finance_but_not_inference():
    assert grants(["admin"], Scope.FINANCE)
    assert grants(["admin"], Scope.ADMIN)
    assert not grants(["admin"], Scope.INFERENCE)
    assert not grants(["finance"], Scope.ADMIN)
    assert not grants(["inference", "bogus"], Scope.USAGE_READ)
