"""Unit tests for utils (encryption, redaction, validation) and the offline token estimator."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from apikeyrouter.domain.components.token_estimator import (
    DEFAULT_COMPLETION_TOKENS,
    IMAGE_TOKENS,
    REPLY_PRIMING_TOKENS,
    TOKENS_PER_MESSAGE,
    estimate_prompt_tokens,
    estimate_total_tokens,
)
from apikeyrouter.domain.models.api_key import new_key_id
from apikeyrouter.domain.models.request_context import Endpoint, RequestIntent, RoutingObjective
from apikeyrouter.utils.encryption import MASTER_KEY_ENV, KeyEncryptor, generate_master_key
from apikeyrouter.utils.exceptions import ConfigurationError, InvalidRequestError
from apikeyrouter.utils.redaction import REDACTED, fingerprint, redact
from apikeyrouter.utils.validation import intent_from_openai
from hypothesis import given
from hypothesis import strategies as st

SECRET = "sk-proj-SuperSecretValue0123456789"

# =============================================================================================
# encryption
# =============================================================================================


@pytest.fixture
def master_key() -> str:
    return generate_master_key()


def test_generated_master_keys_are_32_random_bytes() -> None:
    first, second = generate_master_key(), generate_master_key()
    assert len(base64.urlsafe_b64decode(first)) == 32
    assert first != second


def test_round_trip(master_key: str) -> None:
    enc = KeyEncryptor(master_key)
    token = enc.encrypt(SECRET, "key_1")
    assert token.startswith("v1:")
    assert SECRET not in token
    assert enc.decrypt(token, "key_1") == SECRET


def test_round_trip_unicode_and_long_material(master_key: str) -> None:
    enc = KeyEncryptor(master_key)
    material = "ключ-🔑-" + "x" * 5000
    assert enc.decrypt(enc.encrypt(material, "k"), "k") == material


def test_each_encryption_uses_a_fresh_nonce(master_key: str) -> None:
    enc = KeyEncryptor(master_key)
    assert enc.encrypt(SECRET, "k") != enc.encrypt(SECRET, "k")


def test_same_master_key_decrypts_across_instances(master_key: str) -> None:
    token = KeyEncryptor(master_key).encrypt(SECRET, "k")
    assert KeyEncryptor(master_key).decrypt(token, "k") == SECRET


def test_wrong_key_id_fails_without_leaking(master_key: str) -> None:
    enc = KeyEncryptor(master_key)
    token = enc.encrypt(SECRET, "key_a")
    with pytest.raises(ConfigurationError) as info:
        enc.decrypt(token, "key_b")
    message = str(info.value)
    assert "key_b" in message
    assert SECRET not in message
    assert token not in message
    assert master_key not in message
    assert SECRET not in repr(info.value)


def test_wrong_master_key_fails(master_key: str) -> None:
    token = KeyEncryptor(master_key).encrypt(SECRET, "k")
    with pytest.raises(ConfigurationError, match="wrong master key or corrupted"):
        KeyEncryptor(generate_master_key()).decrypt(token, "k")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"),  # tampered tag
        lambda t: t[:10],  # truncated
        lambda t: "v1:",  # empty payload
        lambda t: "v1:@@@@",  # not base64
        lambda t: "v2:" + t[3:],  # unknown version
        lambda t: t[3:],  # no version prefix
    ],
)
def test_corrupted_ciphertext_fails_cleanly(master_key: str, mangle: Any) -> None:
    enc = KeyEncryptor(master_key)
    token = enc.encrypt(SECRET, "k")
    with pytest.raises(ConfigurationError) as info:
        enc.decrypt(mangle(token), "k")
    assert SECRET not in str(info.value)


def test_master_key_from_environment(monkeypatch: pytest.MonkeyPatch, master_key: str) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, master_key)
    from_env = KeyEncryptor()
    assert from_env.ephemeral is False
    token = from_env.encrypt(SECRET, "k")
    assert KeyEncryptor(master_key).decrypt(token, "k") == SECRET


def test_explicit_master_key_overrides_environment(
    monkeypatch: pytest.MonkeyPatch, master_key: str
) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, generate_master_key())
    token = KeyEncryptor(master_key).encrypt(SECRET, "k")
    with pytest.raises(ConfigurationError):
        KeyEncryptor().decrypt(token, "k")


def test_without_master_key_encryptor_is_ephemeral(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    first, second = KeyEncryptor(), KeyEncryptor()
    assert first.ephemeral is True
    token = first.encrypt(SECRET, "k")
    assert first.decrypt(token, "k") == SECRET
    with pytest.raises(ConfigurationError):
        second.decrypt(token, "k")  # a fresh random key each time


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("abc", "not valid urlsafe base64"),
        (base64.urlsafe_b64encode(b"0123456789abcdef").decode(), "must decode to 32 bytes, got 16"),
        (base64.urlsafe_b64encode(b"x" * 33).decode(), "got 33"),
        ("", "got 0"),
    ],
)
def test_bad_master_key_in_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, fragment: str
) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, value)
    with pytest.raises(ConfigurationError) as info:
        KeyEncryptor()
    message = str(info.value)
    assert MASTER_KEY_ENV in message
    assert fragment in message
    if value:
        assert value not in message  # never echo the configured value


def test_repr_reveals_no_key(master_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    enc = KeyEncryptor(master_key)
    assert repr(enc) == "KeyEncryptor(ephemeral=False)"
    assert master_key not in repr(enc)
    assert master_key not in str(enc)
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    assert repr(KeyEncryptor()) == "KeyEncryptor(ephemeral=True)"


# =============================================================================================
# redaction
# =============================================================================================


def test_redact_explicit_secrets() -> None:
    text = "upstream echoed my-custom-token-XYZ in its error"
    assert redact(text, "my-custom-token-XYZ") == f"upstream echoed {REDACTED} in its error"
    assert redact(text, "") == text  # an empty secret is ignored, not replaced everywhere


def test_redact_every_occurrence_of_several_secrets() -> None:
    text = "a=alpha-secret b=beta-secret a=alpha-secret"
    out = redact(text, "alpha-secret", "beta-secret")
    assert "alpha-secret" not in out
    assert "beta-secret" not in out
    assert out.count(REDACTED) == 3


@pytest.mark.parametrize(
    "secret",
    [
        "sk-abcdef1234567890",
        "sk-proj-AbCdEf_123-456",
        "sk-ant-api03-abcdefghijklmnop",
        "rk-abcdef123456",
        "pk-test-123456",
        "AIzaSyA1234567890abcdefghijklmnopqrstu",
    ],
)
def test_redact_credential_patterns(secret: str) -> None:
    out = redact(f"error: key {secret} is invalid")
    assert secret not in out
    assert REDACTED in out
    assert out.startswith("error: key ")
    assert out.endswith(" is invalid")


def test_redact_bearer_tokens() -> None:
    out = redact("Authorization: Bearer abc.def.ghi-123 sent")
    assert "abc.def.ghi-123" not in out
    assert out == f"Authorization: {REDACTED} sent"


def test_redact_openai_masked_echo() -> None:
    message = (
        "Incorrect API key provided: sk-ab***************************cd. "
        "You can find your API key at https://platform.openai.com/account/api-keys."
    )
    out = redact(message)
    assert "sk-ab" not in out
    assert "***" not in out
    assert out.startswith(f"Incorrect API key provided: {REDACTED}")
    assert "You can find your API key" in out


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "Rate limit reached for gpt-4o in organization org-123 on tokens per min."
    assert redact(text) == text


def test_fingerprint_shows_only_last_four() -> None:
    assert fingerprint(SECRET) == "...6789"
    assert fingerprint("sk-123456789") == "...6789"  # 12 characters
    assert fingerprint("sk-12345678") == "..."  # too short to reveal anything
    assert fingerprint("") == "..."


def test_redact_keeps_router_key_ids() -> None:
    # Our own key ids are safe to log (and the logger scrubs every string with redact()).
    key_id = new_key_id()
    assert redact(f"key {key_id} throttled") == f"key {key_id} throttled"


def test_redact_does_not_mangle_words_containing_a_prefix() -> None:
    text = "task-1234 failed: disk-usage high, see work-item desk_lamp"
    assert redact(text) == text


def test_redact_secret_after_punctuation() -> None:
    out = redact('{"api_key":"sk-abcdef123456"} OPENAI_API_KEY=sk-zyxwvu987654')
    assert "abcdef123456" not in out
    assert "zyxwvu987654" not in out
    assert out == '{"api_key":"[redacted]"} OPENAI_API_KEY=[redacted]'


# =============================================================================================
# validation
# =============================================================================================


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **extra}


def param_of(body: Any, endpoint: Endpoint = Endpoint.CHAT, **kwargs: Any) -> str | None:
    with pytest.raises(InvalidRequestError) as info:
        intent_from_openai(body, endpoint, **kwargs)
    assert info.value.status == 400
    error = info.value.to_openai_error()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == info.value.param
    return info.value.param


@pytest.mark.parametrize("body", [None, [], "text", 42, [{"model": "x"}]])
def test_non_object_body(body: Any) -> None:
    assert param_of(body) is None


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user"}]},
        {"model": "", "messages": [{"role": "user"}]},
        {"model": None, "messages": [{"role": "user"}]},
        {"model": 4, "messages": [{"role": "user"}]},
    ],
)
def test_missing_or_empty_model(body: dict[str, Any]) -> None:
    assert param_of(body) == "model"


@pytest.mark.parametrize(
    "messages", [None, "hello", {"role": "user"}, [], ()], ids=["none", "str", "dict", "empty", "t"]
)
def test_messages_must_be_a_non_empty_list(messages: Any) -> None:
    body: dict[str, Any] = {"model": "gpt-4o"}
    if messages is not None:
        body["messages"] = messages
    assert param_of(body) == "messages"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (["hello"], "messages[0]"),
        ([{"content": "no role"}], "messages[0]"),
        ([{"role": "user", "content": "ok"}, {"content": "x"}], "messages[1]"),
        ([{"role": "system"}, {"role": "user"}, {"role": 3}], "messages[2]"),
        ([{"role": "user"}, None], "messages[1]"),
    ],
)
def test_message_without_string_role(messages: list[Any], param: str) -> None:
    assert param_of({"model": "gpt-4o", "messages": messages}) == param


@pytest.mark.parametrize("stream", ["true", 1, 0, None, {}])  # an explicit null too
def test_stream_must_be_boolean(stream: Any) -> None:
    assert param_of(chat_body(stream=stream)) == "stream"


def test_embeddings_cannot_stream() -> None:
    body = {"model": "text-embedding-3-small", "input": "hi", "stream": True}
    assert param_of(body, Endpoint.EMBEDDINGS) == "stream"
    body["stream"] = False
    assert intent_from_openai(body, Endpoint.EMBEDDINGS).stream is False


@pytest.mark.parametrize(
    ("endpoint", "field", "value"),
    [
        (Endpoint.COMPLETIONS, "prompt", None),
        (Endpoint.COMPLETIONS, "prompt", 12),
        (Endpoint.COMPLETIONS, "prompt", {"text": "x"}),
        (Endpoint.EMBEDDINGS, "input", None),
        (Endpoint.EMBEDDINGS, "input", 3.5),
    ],
)
def test_completions_and_embeddings_input(endpoint: Endpoint, field: str, value: Any) -> None:
    body: dict[str, Any] = {"model": "m"}
    if value is not None:
        body[field] = value
    assert param_of(body, endpoint) == field


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [0, -1, "10", 1.5, 10.0, True, False, [5]])
def test_bad_max_tokens(name: str, value: Any) -> None:
    assert param_of(chat_body(**{name: value})) == name


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    intent = intent_from_openai(chat_body(max_tokens=50, max_completion_tokens=70))
    assert intent.max_tokens == 70
    assert intent_from_openai(chat_body(max_tokens=50)).max_tokens == 50
    assert intent_from_openai(chat_body(max_tokens=None)).max_tokens is None
    assert intent_from_openai(chat_body()).max_tokens is None


def test_unknown_objective() -> None:
    assert param_of(chat_body(), objective="cheapest") == "objective"
    with pytest.raises(InvalidRequestError) as info:
        intent_from_openai(chat_body(), objective="cheapest")
    for objective in RoutingObjective:
        assert objective.value in info.value.message


@pytest.mark.parametrize("objective", ["cost", RoutingObjective.LATENCY])
def test_known_objective_is_parsed(objective: str | RoutingObjective) -> None:
    intent = intent_from_openai(chat_body(), objective=objective)
    assert intent.objective is RoutingObjective(objective)


def test_chat_happy_path_keeps_body_untouched() -> None:
    body = chat_body(
        stream=True,
        max_tokens=64,
        tools=[{"type": "function", "function": {"name": "f"}}],
        response_format={"type": "json_object"},
        x_vendor_field={"nested": [1, 2, 3]},
    )
    snapshot = repr(body)
    intent = intent_from_openai(body, client_id="svc-a", request_id="req_fixed")
    assert intent.body is body
    assert repr(body) == snapshot
    assert intent.body["x_vendor_field"] == {"nested": [1, 2, 3]}
    assert intent.endpoint is Endpoint.CHAT
    assert intent.model == "gpt-4o"
    assert intent.stream is True
    assert intent.max_tokens == 64
    assert intent.client_id == "svc-a"
    assert intent.request_id == "req_fixed"
    assert intent.objective is None


def test_request_id_is_generated_when_not_given() -> None:
    first = intent_from_openai(chat_body())
    second = intent_from_openai(chat_body())
    assert first.request_id.startswith("req_")
    assert first.request_id != second.request_id


@pytest.mark.parametrize("prompt", ["Say hi", ["a", "b"], [[1, 2, 3]]])
def test_completions_happy_path(prompt: Any) -> None:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": prompt, "suffix": "!", "echo": False}
    intent = intent_from_openai(body, Endpoint.COMPLETIONS)
    assert intent.body is body
    assert intent.endpoint is Endpoint.COMPLETIONS
    assert intent.stream is False
    assert body == {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": prompt,
        "suffix": "!",
        "echo": False,
    }


@pytest.mark.parametrize("value", ["hello", ["a", "b"]])
def test_embeddings_happy_path(value: Any) -> None:
    body = {"model": "text-embedding-3-small", "input": value, "dimensions": 256}
    intent = intent_from_openai(body, Endpoint.EMBEDDINGS)
    assert intent.body is body
    assert intent.body["dimensions"] == 256
    assert intent.endpoint is Endpoint.EMBEDDINGS


# =============================================================================================
# token estimator
# =============================================================================================


def chat_intent(*contents: Any, max_tokens: int | None = None, **extra: Any) -> RequestIntent:
    messages = [{"role": "user", "content": c} for c in contents]
    body: dict[str, Any] = {"model": "gpt-4o", "messages": messages, **extra}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return intent_from_openai(body)


def test_chat_prompt_estimate_is_framing_plus_text() -> None:
    # "hello world!" is 3 tokens in o200k_base ("hello", " world", "!"); the estimate agrees.
    intent = chat_intent("hello world!")
    assert estimate_prompt_tokens(intent) == REPLY_PRIMING_TOKENS + TOKENS_PER_MESSAGE + 3
    two = chat_intent("hello world!", "hello world!")
    assert estimate_prompt_tokens(two) == REPLY_PRIMING_TOKENS + 2 * (TOKENS_PER_MESSAGE + 3)


def test_max_tokens_is_added_to_the_total() -> None:
    prompt = estimate_prompt_tokens(chat_intent("hi"))
    assert estimate_total_tokens(chat_intent("hi", max_tokens=100)) == prompt + 100
    assert estimate_total_tokens(chat_intent("hi")) == prompt + DEFAULT_COMPLETION_TOKENS
    assert estimate_total_tokens(chat_intent("hi"), default_completion=10) == prompt + 10


@pytest.mark.parametrize("image_type", ["image_url", "image", "input_image"])
def test_images_are_counted(image_type: str) -> None:
    text_only = chat_intent([{"type": "text", "text": "describe"}])
    with_image = chat_intent(
        [{"type": "text", "text": "describe"}, {"type": image_type, "image_url": {"url": "x"}}]
    )
    assert estimate_prompt_tokens(with_image) == estimate_prompt_tokens(text_only) + IMAGE_TOKENS
    # The (possibly huge) base64 image payload is not counted as text.
    huge = chat_intent([{"type": image_type, "image_url": {"url": "data:" + "A" * 100_000}}])
    assert estimate_prompt_tokens(huge) == REPLY_PRIMING_TOKENS + TOKENS_PER_MESSAGE + IMAGE_TOKENS


def test_tools_and_tool_calls_are_counted() -> None:
    plain = estimate_prompt_tokens(chat_intent("hi"))
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"x": 1}}}]
    assert estimate_prompt_tokens(chat_intent("hi", tools=tools)) > plain
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1"}]},
        ],
    }
    with_calls = estimate_prompt_tokens(intent_from_openai(body))
    assert with_calls > plain + TOKENS_PER_MESSAGE


def test_embeddings_have_no_completion_part() -> None:
    intent = intent_from_openai(
        {"model": "text-embedding-3-small", "input": "x" * 40}, Endpoint.EMBEDDINGS
    )
    # 40 letters in one word: 0.40 + 40 * 0.126 -> 6 (o200k_base splits such runs often)
    assert estimate_prompt_tokens(intent) == 6
    assert estimate_total_tokens(intent) == 6
    assert estimate_total_tokens(intent, default_completion=999) == 6
    batch = intent_from_openai(
        {"model": "text-embedding-3-small", "input": ["x" * 40, "y" * 8]}, Endpoint.EMBEDDINGS
    )
    assert estimate_total_tokens(batch) == 6 + 2


def test_completions_prompt_plus_completion() -> None:
    intent = intent_from_openai(
        {"model": "m", "prompt": "x" * 8, "max_tokens": 5}, Endpoint.COMPLETIONS
    )
    assert estimate_prompt_tokens(intent) == 2
    assert estimate_total_tokens(intent) == 2 + 5


text_strategy = st.text(max_size=400)


@given(base=text_strategy, suffix=text_strategy)
def test_estimate_is_monotonic_in_text_length(base: str, suffix: str) -> None:
    shorter = estimate_prompt_tokens(chat_intent(base))
    longer = estimate_prompt_tokens(chat_intent(base + suffix))
    assert longer >= shorter
    # Never zero for a non-empty message.
    assert longer >= REPLY_PRIMING_TOKENS + TOKENS_PER_MESSAGE + (1 if base + suffix else 0)
    # Every character class weighs at least 1/8 token (letters 0.126): eight characters of
    # any kind always add at least one token.
    if len(suffix) >= 8:
        assert longer > shorter


@given(base=text_strategy, suffix=text_strategy)
def test_embedding_estimate_is_monotonic_in_text_length(base: str, suffix: str) -> None:
    def estimate(text: str) -> int:
        intent = intent_from_openai({"model": "e", "input": text}, Endpoint.EMBEDDINGS)
        return estimate_total_tokens(intent)

    assert estimate(base + suffix) >= estimate(base)


@given(contents=st.lists(text_strategy, min_size=1, max_size=8), extra=text_strategy)
def test_adding_a_message_never_lowers_the_estimate(contents: list[str], extra: str) -> None:
    before = estimate_total_tokens(chat_intent(*contents))
    after = estimate_total_tokens(chat_intent(*contents, extra))
    assert after >= before + TOKENS_PER_MESSAGE
