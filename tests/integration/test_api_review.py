"""OpenAI request handling with the real SmolLM2 model: completions that take several choices
(``n``) or ask for logprobs have the OpenAI shapes, prompt token ids are checked, and long
generations neither hold the event loop's default executor nor cost anything once their
caller has left while they wait for a slot."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from inference import LlamaCppBackend
from tests.integration.conftest import MODEL
from tests.integration.core_counter import counting, until
from tests.server import Gateway

pytestmark = pytest.mark.timeout(300)

PROMPTS = ["Once upon a time", "Hello, my name"]
# A story the model keeps writing to max_tokens (seeded), far longer than any test waits.
LONG = {"model": MODEL, "max_tokens": 1500, "temperature": 1.0, "seed": 1,
        "prompt": "Chapter 1.\n\nThe long, long story of the kingdom begins"}
# The same, unable to end on its own (ignore_eos): only its max_tokens or a cancellation end it.
GENERATING = LONG | {"ignore_eos": True}


@pytest.fixture(scope="module")
def several_choices_key(gateway: Gateway) -> str:
    """A key of a tenant whose contract allows up to four choices (``max_n``)."""
    return gateway.new_key("globex-research")


def _post(gateway: Gateway, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gateway.url}{path}", json={"model": MODEL, **body}, timeout=120,
                      headers={"Authorization": f"Bearer {key}"})


def _events(gateway: Gateway, key: str, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{gateway.url}{path}", json={"model": MODEL, **body, "stream": True},
                      timeout=120, headers={"Authorization": f"Bearer {key}"}) as response:
        assert response.status_code == 200
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


# -- echo with several choices ------------------------------------------------------------------
def test_echo_puts_its_prompt_before_every_choice(gateway: Gateway, several_choices_key: str) -> None:
    """Choices of prompt i are numbered i * n + j: each gets its own prompt echoed, not the
    next prompt's (or none)."""
    body = {"prompt": PROMPTS, "n": 2, "max_tokens": 3, "temperature": 0}
    plain = _post(gateway, several_choices_key, "/v1/completions", body).json()["choices"]
    echoed = _post(gateway, several_choices_key, "/v1/completions", body | {"echo": True})
    assert echoed.status_code == 200, echoed.text
    choices = echoed.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    expected = [PROMPTS[c["index"] // 2] + c["text"] for c in plain]
    assert [c["text"] for c in choices] == expected
    streamed = [""] * 4
    for chunk in _events(gateway, several_choices_key, "/v1/completions", body | {"echo": True}):
        for choice in chunk["choices"]:
            streamed[choice["index"]] += choice["text"]
    assert streamed == expected


# -- usage with several choices --------------------------------------------------------------------
@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Say hi"}]}),
    ("/v1/completions", {"prompt": PROMPTS}),
])
def test_a_prompt_is_counted_once_whatever_its_choices(gateway: Gateway, several_choices_key: str,
                                                       path: str, body: dict[str, Any]) -> None:
    """As the OpenAI API counts it: ``n`` choices generate ``n`` times, but read the prompt
    once (the count goes into records and tenant token budgets)."""
    body = body | {"max_tokens": 2, "temperature": 0}
    one, two = (_post(gateway, several_choices_key, path, body | {"n": n}) for n in (1, 2))
    assert one.status_code == two.status_code == 200, (one.text, two.text)
    assert two.json()["usage"]["prompt_tokens"] == one.json()["usage"]["prompt_tokens"]
    assert two.json()["usage"]["total_tokens"] == (two.json()["usage"]["prompt_tokens"]
                                                   + two.json()["usage"]["completion_tokens"])


@pytest.mark.parametrize("top", [{"top_logprobs": 0}, {}], ids=["zero", "unset"])
def test_chat_logprobs_without_alternatives(gateway: Gateway, api_key: str,
                                            top: dict[str, int]) -> None:
    """``top_logprobs: 0``, or none given (as the OpenAI API takes it): every token's own
    logprob, empty lists of alternatives, and only the OpenAI fields."""
    body = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 3,
            "temperature": 0, "logprobs": True, **top}
    response = _post(gateway, api_key, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    content = response.json()["choices"][0]["logprobs"]["content"]
    assert content and all(isinstance(t["logprob"], float) and t["top_logprobs"] == []
                           for t in content)
    assert all(set(t) == {"token", "logprob", "bytes", "top_logprobs"} for t in content), content


def test_chat_top_logprobs_carry_only_the_openai_fields(gateway: Gateway, api_key: str) -> None:
    body = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 3,
            "temperature": 0, "logprobs": True, "top_logprobs": 2}
    response = _post(gateway, api_key, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    for token in response.json()["choices"][0]["logprobs"]["content"]:
        assert set(token) == {"token", "logprob", "bytes", "top_logprobs"}, token
        assert 1 <= len(token["top_logprobs"]) <= 2
        assert all(set(top) == {"token", "logprob", "bytes"} for top in token["top_logprobs"])


# -- legacy completions logprobs -----------------------------------------------------------------
def _check_legacy(logprobs: dict[str, Any], text: str, top: int) -> None:
    """The legacy shape: parallel lists, top_logprobs as token → logprob maps, offsets into
    the choice's text."""
    assert set(logprobs) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    tokens = logprobs["tokens"]
    assert tokens and "".join(tokens) == text
    assert len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) == len(tokens)
    assert all(isinstance(lp, float) for lp in logprobs["token_logprobs"])
    assert logprobs["text_offset"] == [len("".join(tokens[:i])) for i in range(len(tokens))]
    for entry in logprobs["top_logprobs"]:
        assert isinstance(entry, dict) and 1 <= len(entry) <= top
        assert all(isinstance(k, str) and isinstance(v, float) for k, v in entry.items())


@pytest.mark.parametrize("logprobs", [0, 2])
def test_completion_logprobs_have_the_legacy_shape(gateway: Gateway, api_key: str,
                                                   logprobs: int) -> None:
    body = {"prompt": "Once", "max_tokens": 4, "temperature": 0, "logprobs": logprobs}
    response = _post(gateway, api_key, "/v1/completions", body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    _check_legacy(choice["logprobs"], choice["text"], max(logprobs, 1))
    if logprobs == 0:  # the sampled token's own logprob only
        assert choice["logprobs"]["top_logprobs"] == [
            {t: lp} for t, lp in zip(choice["logprobs"]["tokens"],
                                     choice["logprobs"]["token_logprobs"], strict=True)]
    merged: dict[str, list[Any]] = {}
    text = ""
    for chunk in _events(gateway, api_key, "/v1/completions", body):
        for part in chunk["choices"]:
            text += part["text"]
            for key, values in (part["logprobs"] or {}).items():
                merged.setdefault(key, []).extend(values)
    assert text == choice["text"] and merged == choice["logprobs"]


# -- prompt token ids ----------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/completions", {"prompt": [2**32 + 5], "max_tokens": 2}, "prompt[0]"),
    ("/v1/completions", {"prompt": [[1, 2**63]], "max_tokens": 2}, "prompt[0][1]"),
    ("/v1/completions", {"prompt": [-1], "max_tokens": 2}, "prompt[0]"),
    ("/v1/embeddings", {"input": [2**32]}, "input[0]"),
])
def test_token_ids_beyond_32_bits_are_refused(gateway: Gateway, api_key: str, path: str,
                                              body: dict[str, Any], param: str) -> None:
    """llama.cpp wrapped such an id into another token and answered 200."""
    response = _post(gateway, api_key, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request_error" and error["param"] == param


# -- threads of the embedded backend (`one_slot`, tests/integration/conftest.py) -----------------


async def _drain(model: LlamaCppBackend, body: dict[str, Any]) -> None:
    async for _ in model.stream("completions", body):
        pass


def test_generations_leave_the_default_executor_free(one_slot: LlamaCppBackend) -> None:
    """The audit log, policy reloads and the dashboard run in the default executor: a
    generation that held one of its threads for its whole length stalled them. With its one
    thread, the default executor runs a job while a generation is still going."""
    async def run() -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))
        with counting(one_slot) as core:
            task = asyncio.create_task(_drain(one_slot, GENERATING))
            await until(lambda: core.calls and core.calls[0].text_chunks, "first token")
            await asyncio.wait_for(asyncio.to_thread(int), 300)
            (generating,) = core.calls
            # Held by it, the job would have waited for all 1500 tokens ("length"), on any machine.
            assert not generating.returned and generating.finish_reason is None, generating
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(run())


def test_a_queued_request_whose_caller_left_costs_nothing(one_slot: LlamaCppBackend) -> None:
    """With the one slot busy, a request whose caller leaves while it waits is dropped at once:
    it neither waits for the slot nor runs its prefill once the slot is free."""
    async def run() -> None:
        with counting(one_slot) as core:
            busy = asyncio.create_task(_drain(one_slot, GENERATING))
            await until(lambda: core.calls and core.calls[0].text_chunks, "first token")
            queued = asyncio.create_task(one_slot.generate("completions", dict(LONG)))
            # Waiting for the slot: its job is in the backend's pool, behind the busy one.
            await until(lambda: one_slot._pool._work_queue.qsize() == 1, "queued call")
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            # Dropped while the busy call still generates (waiting for the slot, it would have
            # been dropped only after all 1500 of its tokens, on any machine), never having
            # reached the core.
            generating = core.calls[0]
            assert not generating.returned and generating.finish_reason is None, core.calls
            assert len(core.calls) == 1, core.calls
            assert not busy.done()
            busy.cancel()
            with pytest.raises(asyncio.CancelledError):
                await busy
            assert generating.returned
            # The slot is free: the next call runs, and the one whose caller left never does.
            await one_slot.generate("completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 2})
            assert [c.max_tokens for c in core.calls] == [LONG["max_tokens"], 2]

    asyncio.run(run())
