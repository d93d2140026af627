import pytest

from zai_proxy.auth import ClientAuth, presented_key
from zai_proxy.errors import Unauthorized


def test_open_proxy_accepts_everyone() -> None:
    assert ClientAuth(()).client_id([]) is None


def test_keys_by_bearer_or_x_api_key() -> None:
    auth = ClientAuth(("worker-key-1", "worker-key-2"))
    a = auth.client_id([(b"authorization", b"Bearer worker-key-1")])
    b = auth.client_id([(b"x-api-key", b"worker-key-2")])
    assert a and b and a != b and "worker" not in a
    for headers in ([], [(b"authorization", b"Bearer nope")], [(b"authorization", b"Basic x")]):
        with pytest.raises(Unauthorized):
            auth.client_id(headers)


def test_presented_key() -> None:
    assert presented_key([(b"authorization", b"bearer  k1 ")]) == "k1"
    assert presented_key([(b"x-api-key", b"k2")]) == "k2"
    assert presented_key([(b"authorization", b"Bearer ")]) is None
