import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from zai_proxy.core.errors import MethodNotAllowed, NotFound, RouteNotAccounted
from zai_proxy.wire import routing
from zai_proxy.wire.routing import (
    ENDPOINTS,
    OTHER_V1,
    PASSTHROUGH_METHODS,
    Endpoint,
    Router,
    Tokens,
)

OPENAI = "https://api.z.ai/api/paas/v4"
ANTHROPIC = "https://api.z.ai/api/anthropic"
router = Router(OPENAI, ANTHROPIC)
passthrough = Router(OPENAI, ANTHROPIC, passthrough_unknown=True)


@pytest.mark.parametrize(("method", "path", "template", "url"), [
    ("POST", "/v1/chat/completions", "/v1/chat/completions", OPENAI + "/chat/completions"),
    ("POST", "/v1/completions", "/v1/completions", OPENAI + "/completions"),
    ("POST", "/v1/embeddings", "/v1/embeddings", OPENAI + "/embeddings"),
    ("GET", "/v1/models", "/v1/models", OPENAI + "/models"),
    ("HEAD", "/v1/models", "/v1/models", OPENAI + "/models"),
    ("GET", "/v1/models/glm-4.7", "/v1/models/{model}", OPENAI + "/models/glm-4.7"),
    ("POST", "/v1/async/chat/completions", "/v1/async/chat/completions",
     OPENAI + "/async/chat/completions"),
    ("GET", "/v1/async-result/task-123", "/v1/async-result/{id}",
     OPENAI + "/async-result/task-123"),
    ("POST", "/v1/images/generations", "/v1/images/generations",
     OPENAI + "/images/generations"),
    ("POST", "/v1/videos/generations", "/v1/videos/generations",
     OPENAI + "/videos/generations"),
    ("GET", "/v1/files", "/v1/files", OPENAI + "/files"),
    ("POST", "/v1/files", "/v1/files", OPENAI + "/files"),
    ("DELETE", "/v1/files/file-1", "/v1/files/{file_id}", OPENAI + "/files/file-1"),
    ("GET", "/v1/files/file-1/content", "/v1/files/{file_id}/content",
     OPENAI + "/files/file-1/content"),
    ("GET", "/v1/files/content/content", "/v1/files/{file_id}/content",
     OPENAI + "/files/content/content"),
    ("POST", "/v1/messages", "/v1/messages", ANTHROPIC + "/v1/messages"),
    ("POST", "/v1/messages/count_tokens", "/v1/messages/count_tokens",
     ANTHROPIC + "/v1/messages/count_tokens"),
    ("POST", "/v1/chat/completions/", "/v1/chat/completions", OPENAI + "/chat/completions"),
])
def test_routes_map_onto_the_configured_bases(method: str, path: str, template: str,
                                              url: str) -> None:
    for r in (router, passthrough):
        route = r.resolve(method, path)
        assert (route.template, route.upstream_url) == (template, url)
        assert route.tokens is ENDPOINTS[template].tokens


def test_the_table_says_how_each_route_spends_tokens() -> None:
    chat = router.resolve("POST", "/v1/chat/completions")
    assert (chat.tokens, chat.json_body, chat.stream_usage) == (Tokens.PROMPT, True, True)
    messages = router.resolve("POST", "/v1/messages")
    assert (messages.tokens, messages.stream_usage) == (Tokens.PROMPT, False)
    assert router.resolve("POST", "/v1/async/chat/completions").tokens is Tokens.DEFERRED
    assert router.resolve("GET", "/v1/async-result/t").tokens is Tokens.RESULT
    assert router.resolve("POST", "/v1/messages/count_tokens").tokens is Tokens.NONE
    assert router.resolve("GET", "/v1/files").tokens is Tokens.NONE


def test_query_string_is_kept() -> None:
    assert router.resolve("GET", "/v1/models", "a=1&b=2").upstream_url == OPENAI + "/models?a=1&b=2"


@pytest.mark.parametrize("path", [
    "/v1//evil.example/x", "/v1/../admin", "/v1/./models", "/v1/%2e%2e/x", "/v1/a%2fb",
    "/v1/a%2Fb", "/v1/a%5cb", "/v1/a\\b", "//evil.example/v1/models", "/v1/http://evil/x",
    "http://evil.example/v1/models", "/v1/models/%252e%252e", "/v1/a/../../x", "/v1", "/v2/x",
    "/", "/v1/models#frag", "/v1/chat/completions//", "/v1/files/a b", "/v1/files/\x00",
])
@pytest.mark.parametrize("r", [router, passthrough], ids=["closed", "passthrough"])
def test_path_escapes_are_rejected(path: str, r: Router) -> None:
    with pytest.raises(NotFound):
        r.resolve("GET", path)


@pytest.mark.parametrize("path", [
    "/v1/chat/completions;x", "/v1/chat/completions;x=1", "/v1/chat;v=1/completions",
    "/v1/files/f;1/content", "/v1/x;y",
])
@pytest.mark.parametrize("r", [router, passthrough], ids=["closed", "passthrough"])
def test_path_parameters_are_rejected(path: str, r: Router) -> None:
    with pytest.raises(NotFound):
        r.resolve("POST", path)


@pytest.mark.parametrize("path", ["/v1/x", "/v1/assistants", "/v1/chat/completions/extra",
                                  "/v1/models/a/b", "/v1/@evil.example"])
def test_unknown_paths_are_404_by_default(path: str) -> None:
    with pytest.raises(NotFound) as info:
        router.resolve("GET", path)
    assert type(info.value) is NotFound and info.value.status == 404


@pytest.mark.parametrize("method", sorted(PASSTHROUGH_METHODS))
def test_passthrough_forwards_unknown_paths_uncounted_on_the_openai_base(method: str) -> None:
    route = passthrough.resolve(method, "/v1/assistants/a1/@x", "q=1")
    assert route.template == OTHER_V1 and route.tokens is Tokens.NONE and not route.json_body
    assert route.upstream_url == OPENAI + "/assistants/a1/@x?q=1"


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "OPTIONS", "PROPFIND", "get", "X"])
def test_passthrough_never_forwards_other_methods(method: str) -> None:
    with pytest.raises(MethodNotAllowed) as info:
        passthrough.resolve(method, "/v1/whatever")
    assert info.value.allow == PASSTHROUGH_METHODS and info.value.route == OTHER_V1


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/v1/chat/completions", {"POST"}),
    ("TRACE", "/v1/chat/completions", {"POST"}),
    ("POST", "/v1/models", {"GET", "HEAD"}),
    ("PUT", "/v1/files/f1", {"GET", "HEAD", "DELETE"}),
])
@pytest.mark.parametrize("r", [router, passthrough], ids=["closed", "passthrough"])
def test_wrong_method_on_a_known_route_names_the_allowed_ones(method: str, path: str,
                                                              allowed: set[str],
                                                              r: Router) -> None:
    with pytest.raises(MethodNotAllowed) as info:
        r.resolve(method, path)
    assert info.value.allow == allowed
    assert info.value.route == r.resolve(sorted(allowed)[0], path).template


@pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/v1/batches", "/v1/agents"])
@pytest.mark.parametrize("r", [router, passthrough], ids=["closed", "passthrough"])
def test_token_spending_routes_the_proxy_cannot_count_are_refused(path: str, r: Router) -> None:
    with pytest.raises(RouteNotAccounted) as info:
        r.resolve("POST", path)
    assert info.value.status == 404 and info.value.route == path


# What the router documents as a valid path (zai_proxy/wire/routing.py, `_SEGMENT`): /v1 and one or
# more segments of unreserved characters and sub-delims but ';', none empty, '.' or '..', and
# one trailing slash at most. Written out here, not imported, so the test checks the router
# against the rule rather than against itself.
_SEGMENT_ALPHABET = "abcxyzABZ019._~:@!$'()*+,=-"
_WORDS = ["chat", "completions", "files", "models", "async-result", "content", "messages",
          "count_tokens", "embeddings", "images", "generations", "glm-4.7"]


def _valid_path(raw: str) -> bool:
    if not raw.startswith("/v1/"):
        return False
    segments = raw[1:].split("/")
    if raw.endswith("/"):
        segments.pop()
    return len(segments) >= 2 and all(
        seg not in {"", ".", ".."} and all(ch in _SEGMENT_ALPHABET or (ch.isascii()
                                           and ch.isalnum()) for ch in seg)
        for seg in segments)


def _check_outcome(router_: Router, method: str, raw: str) -> None:
    """A valid path is routed (or refused for its method, or as uncountable, by the table);
    an invalid one is a plain 404. Never the other way round."""
    try:
        route = router_.resolve(method, raw)
    except RouteNotAccounted as exc:
        assert _valid_path(raw), raw
        assert ENDPOINTS[exc.route].tokens is Tokens.UNCOUNTABLE, (raw, exc.route)
        return
    except MethodNotAllowed as exc:
        assert _valid_path(raw), raw
        allowed = ENDPOINTS[exc.route].methods if exc.route in ENDPOINTS else PASSTHROUGH_METHODS
        assert method not in allowed and exc.allow == allowed, (method, raw, exc.route)
        return
    except NotFound:
        assert not _valid_path(raw) or not router_.passthrough_unknown, \
            f"a valid path was refused: {raw!r}"
        return
    assert _valid_path(raw), f"an invalid path was accepted: {raw!r} -> {route}"
    labels = set(ENDPOINTS) | {OTHER_V1}
    assert route.template in labels
    assert route.upstream_url.startswith((OPENAI + "/", ANTHROPIC + "/v1/"))
    rest = route.upstream_url.split("://", 1)[1]
    assert "//" not in rest and "/../" not in rest and "/./" not in rest and ";" not in rest
    assert "%" not in rest and "\\" not in rest and "#" not in rest


_segment = st.one_of(st.sampled_from(_WORDS),
                     st.text(alphabet=_SEGMENT_ALPHABET, min_size=1, max_size=6)
                     ).filter(lambda seg: seg not in {".", ".."})
_BAD_SEGMENTS = ["", ".", "..", "a;b", ";", "%2e", "a%2fb", "%41", "a\\b", "a b", "a#b", "a?b",
                 "\x00", "\u00e9", "a\"b", "<x>", "a[1]", "{x}", "a|b", "a^b", "`"]


@hsettings(max_examples=300, deadline=None, derandomize=True)
@given(segments=st.lists(_segment, min_size=1, max_size=5), trailing=st.booleans(),
       method=st.sampled_from(sorted(PASSTHROUGH_METHODS)))
def test_valid_paths_are_accepted(segments: list[str], trailing: bool, method: str) -> None:
    """Every valid path gets a route from the passthrough router: the table's route for its
    method, or /v1/other; refused only for a method its table entry does not take, or as a
    route whose tokens cannot be counted."""
    raw = "/v1/" + "/".join(segments) + ("/" if trailing else "")
    assert _valid_path(raw)
    _check_outcome(passthrough, method, raw)
    try:
        route = passthrough.resolve(method, raw)
    except (MethodNotAllowed, RouteNotAccounted):
        return
    assert route.template == OTHER_V1 or route.template in ENDPOINTS


@hsettings(max_examples=200, deadline=None, derandomize=True)
@given(template=st.sampled_from(sorted(ENDPOINTS)),
       ident=st.text(alphabet=_SEGMENT_ALPHABET, min_size=1, max_size=8), data=st.data())
def test_every_table_route_is_accepted_with_its_methods(template: str, ident: str,
                                                        data: st.DataObject) -> None:
    """A table path with any valid id resolves to that very template, on both routers."""
    endpoint = ENDPOINTS[template]
    method = data.draw(st.sampled_from(sorted(endpoint.methods)))
    raw = "/".join(f"id-{ident}" if part.startswith("{") else part
                   for part in template.split("/"))
    for r in (router, passthrough):
        if endpoint.tokens is Tokens.UNCOUNTABLE:
            with pytest.raises(RouteNotAccounted):
                r.resolve(method, raw)
            continue
        route = r.resolve(method, raw)
        assert route.template == template, (raw, route.template)


@hsettings(max_examples=300, deadline=None, derandomize=True)
@given(segments=st.lists(_segment, min_size=1, max_size=5), bad=st.sampled_from(_BAD_SEGMENTS),
       data=st.data(), method=st.sampled_from(["GET", "POST", "HEAD", "DELETE", "TRACE"]))
def test_invalid_paths_are_refused(segments: list[str], bad: str, data: st.DataObject,
                                   method: str) -> None:
    """A path with one bad segment (with a valid one after it: a trailing empty segment is the
    one harmless slash) is a plain 404 on both routers, whatever the method."""
    at = data.draw(st.integers(0, len(segments) - 1))
    raw = "/v1/" + "/".join([*segments[:at], bad, *segments[at:]])
    assert not _valid_path(raw)
    for r in (router, passthrough):
        with pytest.raises(NotFound) as info:
            r.resolve(method, raw)
        assert type(info.value) is NotFound, (raw, info.value)


_PATH_CHARS = st.sampled_from([*"abv1/.;%:@~-_=+?#\\ ", "..", "//", "%2e", "%2f", "chat",
                               "completions", "files", "models", "async-result"])


@hsettings(max_examples=400, deadline=None, derandomize=True)
@given(tail=st.lists(_PATH_CHARS, max_size=12).map("".join),
       method=st.sampled_from(["GET", "POST", "HEAD", "DELETE", "TRACE", "PUT"]))
def test_any_path_stays_on_a_base_under_a_bounded_label(tail: str, method: str) -> None:
    """Whatever the path: routed exactly when it is valid (by the documented rule), then to a
    table template or /v1/other, at a base plus a clean path; otherwise a plain 404."""
    _check_outcome(passthrough, method, "/v1/" + tail)


# --- error messages, flags and table helpers pinned exactly (mutation-test gaps) ---

_PASS_LISTED = "DELETE, GET, HEAD, PATCH, POST, PUT"


@pytest.mark.parametrize(("path", "message"), [
    ("/v2/x", "no route for '/v2/x'"),  # not under /v1 at all
    ("XX/v1XX", "no route for 'XX/v1XX'"),  # not even an absolute path
    ("/V1", "no route for '/V1'"),  # the prefix is case-sensitive
    ("/v1", "no route for '/v1'"),  # /v1 alone names no endpoint
    ("/v1/", "no route for '/v1/'"),
    ("/v1//x", "path '/v1//x' is not allowed"),  # an empty segment
    ("/v1/../x", "path '/v1/../x' is not allowed"),
    ("/v1/a%2fb", "path '/v1/a/b' is not allowed"),  # the message shows the path unquoted
])
@pytest.mark.parametrize("r", [router, passthrough], ids=["closed", "passthrough"])
def test_rejected_paths_say_why_in_the_message(path: str, message: str, r: Router) -> None:
    with pytest.raises(NotFound) as info:
        r.resolve("GET", path)
    assert type(info.value) is NotFound and info.value.message == message


def test_unknown_path_404_names_the_path() -> None:
    # The closed router's 404 for a well-formed but unknown path names that path.
    with pytest.raises(NotFound) as info:
        router.resolve("GET", "/v1/x")
    assert info.value.message == "no route for '/v1/x'"


def test_a_segment_that_is_only_unusual_is_still_forwarded() -> None:
    # Only '', '.', '..' and characters outside the segment alphabet are refused: a plain
    # segment (even one spelled like a placeholder) goes through on passthrough.
    route = passthrough.resolve("GET", "/v1/XXXX")
    assert (route.template, route.upstream_url) == (OTHER_V1, OPENAI + "/XXXX")


def test_the_path_in_an_error_message_is_cut_at_200_characters() -> None:
    path = "/v2/" + "a" * 300
    with pytest.raises(NotFound) as info:
        router.resolve("GET", path)
    assert info.value.message == "no route for " + repr(path[:200])


def test_passthrough_route_is_never_json_nor_stream_usage() -> None:
    # The flags are exactly False (not merely falsy) on the /v1/other route.
    route = passthrough.resolve("POST", "/v1/assistants")
    assert route.json_body is False and route.stream_usage is False
    assert route.tokens is Tokens.NONE and route.surface == "openai"


def test_known_route_carries_its_flags_exactly() -> None:
    chat = router.resolve("POST", "/v1/chat/completions")
    assert chat.json_body is True and chat.stream_usage is True and chat.surface == "openai"
    messages = router.resolve("POST", "/v1/messages")
    assert messages.json_body is True and messages.stream_usage is False
    assert messages.surface == "anthropic"


@pytest.mark.parametrize("r", [router, passthrough], ids=["closed", "passthrough"])
def test_wrong_method_message_names_method_path_and_allowed_methods(r: Router) -> None:
    with pytest.raises(MethodNotAllowed) as info:
        r.resolve("PUT", "/v1/files/f1/")
    assert info.value.message == "PUT is not allowed on /v1/files/f1; use DELETE, GET, HEAD"
    assert info.value.status == 405 and info.value.code == "proxy_method_not_allowed"


def test_passthrough_wrong_method_message_lists_the_passthrough_methods() -> None:
    with pytest.raises(MethodNotAllowed) as info:
        passthrough.resolve("TRACE", "/v1/whatever")
    assert info.value.message == f"TRACE is not allowed on /v1/whatever; use {_PASS_LISTED}"


@pytest.mark.parametrize(("method", "shown"), [
    ("GET", "GET"),  # plain ASCII methods are shown as they are
    ("M" * 40, "M" * 32),  # cut at 32 characters
    ("\x00X", repr("\x00X")),  # non-printable: shown as a repr
    ("\u00e9", repr("\u00e9")),  # printable but not ASCII: shown as a repr
    ("\x00" * 20, repr("\x00" * 20)[:32]),  # the repr is cut too
])
def test_wrong_method_message_shows_the_method_safely(method: str, shown: str) -> None:
    with pytest.raises(MethodNotAllowed) as info:
        router.resolve(method, "/v1/chat/completions")
    assert info.value.message == f"{shown} is not allowed on /v1/chat/completions; use POST"


def test_uncountable_route_refusal_says_why() -> None:
    with pytest.raises(RouteNotAccounted) as info:
        router.resolve("POST", "/v1/batches")
    assert info.value.message == (
        "/v1/batches spends tokens the proxy cannot count; it is not served")
    assert info.value.code == "proxy_route_not_accounted"


def test_a_base_whose_host_the_path_could_change_is_refused() -> None:
    # The netloc check: with a base of "https:/" the suffix would become the host, so the
    # route is a 404 naming the path rather than a request to another host.
    odd = Router("https:/", "https:/")
    with pytest.raises(NotFound) as info:
        odd.resolve("POST", "/v1/chat/completions")
    assert info.value.message == "no route for /v1/chat/completions"


def test_endpoint_builder_adds_head_to_get_and_keeps_every_field() -> None:
    # _endpoint is called at import time; call it directly to pin what it builds.
    built = routing._endpoint("/v1/x/{id}", "anthropic", "GET POST", Tokens.RESULT,
                              json_body=True, stream_usage=True)
    assert built == Endpoint("/v1/x/{id}", "anthropic", frozenset({"GET", "HEAD", "POST"}),
                             Tokens.RESULT, json_body=True, stream_usage=True)
    assert type(built.methods) is frozenset


def test_endpoint_builder_adds_no_head_without_get() -> None:
    built = routing._endpoint("/v1/y", "openai", "POST DELETE", Tokens.NONE)
    assert built == Endpoint("/v1/y", "openai", frozenset({"POST", "DELETE"}), Tokens.NONE)
    assert built.json_body is False and built.stream_usage is False
    assert type(built.methods) is frozenset


def test_endpoint_builder_get_only() -> None:
    built = routing._endpoint("/v1/z", "openai", "GET", Tokens.NONE)
    assert built.methods == frozenset({"GET", "HEAD"})


@pytest.mark.parametrize(("template", "shape"), [
    ("/v1/files/{file_id}/content", ("v1", "files", "{}", "content")),
    ("/v1/models/{model}", ("v1", "models", "{}")),
    ("/v1/chat/completions", ("v1", "chat", "completions")),
])
def test_shape_replaces_id_segments_with_a_placeholder(template: str,
                                                       shape: tuple[str, ...]) -> None:
    # _shape builds the parametrised lookup keys at import time; pinned directly.
    assert routing._shape(template) == shape
