import pytest

from zai_proxy.errors import MethodNotAllowed, NotFound
from zai_proxy.routing import OTHER_V1, Router

OPENAI = "https://api.z.ai/api/paas/v4"
ANTHROPIC = "https://api.z.ai/api/anthropic"
router = Router(OPENAI, ANTHROPIC)


@pytest.mark.parametrize(("method", "path", "template", "url"), [
    ("POST", "/v1/chat/completions", "/v1/chat/completions", OPENAI + "/chat/completions"),
    ("POST", "/v1/completions", "/v1/completions", OPENAI + "/completions"),
    ("POST", "/v1/embeddings", "/v1/embeddings", OPENAI + "/embeddings"),
    ("GET", "/v1/models", "/v1/models", OPENAI + "/models"),
    ("GET", "/v1/models/glm-4.7", OTHER_V1, OPENAI + "/models/glm-4.7"),
    ("DELETE", "/v1/files/file-1", OTHER_V1, OPENAI + "/files/file-1"),
    ("POST", "/v1/messages", "/v1/messages", ANTHROPIC + "/v1/messages"),
    ("POST", "/v1/messages/count_tokens", "/v1/messages/count_tokens",
     ANTHROPIC + "/v1/messages/count_tokens"),
])
def test_routes_map_onto_the_configured_bases(method: str, path: str, template: str,
                                              url: str) -> None:
    route = router.resolve(method, path)
    assert (route.template, route.upstream_url) == (template, url)


def test_query_string_is_kept() -> None:
    assert router.resolve("GET", "/v1/models", "a=1&b=2").upstream_url == OPENAI + "/models?a=1&b=2"


@pytest.mark.parametrize("path", [
    "/v1//evil.example/x", "/v1/../admin", "/v1/./models", "/v1/%2e%2e/x", "/v1/a%2fb",
    "/v1/a%2Fb", "/v1/a%5cb", "/v1/a\\b", "//evil.example/v1/models", "/v1/http://evil/x",
    "http://evil.example/v1/models", "/v1/models/%252e%252e", "/v1/a/../../x", "/v1", "/v2/x",
    "/", "/v1/@evil.example", "/v1/models#frag",
])
def test_path_escapes_are_rejected(path: str) -> None:
    try:
        route = router.resolve("GET", path)
    except NotFound:
        return
    # Anything that resolves must stay on a configured host with a clean path.
    assert route.upstream_url.startswith(OPENAI + "/") or route.upstream_url.startswith(ANTHROPIC)
    assert ".." not in route.upstream_url and "//" not in route.upstream_url.split("://", 1)[1]


def test_wrong_method_on_a_known_route() -> None:
    with pytest.raises(MethodNotAllowed) as info:
        router.resolve("GET", "/v1/chat/completions")
    assert info.value.route == "/v1/chat/completions"
