"""The OpenAI SDK through Sealgate to a real vLLM (CPU build) that the ``vllm`` backend supervises."""

from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path

import openai
import pytest

from tests.vllm.conftest import MODEL, VLLMGateway

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1800)]

RESTART_TIMEOUT_S = float(os.environ.get("SEALGATE_VLLM_RESTART_S", "600"))


@pytest.fixture
def client(vllm_gateway: VLLMGateway, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{vllm_gateway.gateway.url}/v1", api_key=api_key,
                         max_retries=0, timeout=300)


def vllm_children(parent: int) -> list[int]:
    """Pids of the vLLM API servers whose parent is ``parent`` (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"vllm.entrypoints.openai.api_server" in cmdline:
            pids.append(int(entry.name))
    return pids


def files_containing(root: Path, needle: bytes) -> list[Path]:
    hits = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                hits.append(path)
        except OSError:
            continue
    return hits


def test_tenants_never_share_cached_prompts(vllm_gateway: VLLMGateway,
                                            client: openai.OpenAI) -> None:
    """vLLM's prefix cache, salted per tenant by the gateway: a tenant's repeated prompt is
    served from the cache, the same prompt from another tenant is evaluated in full (a hit
    would show in its timing and ``cached_tokens``)."""
    other = openai.OpenAI(base_url=f"{vllm_gateway.gateway.url}/v1", max_retries=0, timeout=300,
                          api_key=vllm_gateway.gateway.new_key("globex"))
    memo = "Summarise this memo. " + " ".join(f"clause{i}" for i in range(150))

    def cached(tenant: openai.OpenAI) -> int:
        usage = tenant.completions.create(model=MODEL, prompt=memo, max_tokens=1).usage
        assert usage is not None and usage.prompt_tokens > 400
        return (usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens) or 0

    cached(client)
    assert cached(client) > 0
    assert cached(other) == 0


def test_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL]


def test_chat_completion(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=12)
    assert result.object == "chat.completion" and result.model == MODEL
    choice = result.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.role == "assistant" and choice.message.content
    assert result.usage is not None and result.usage.completion_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


def test_chat_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=10,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes and finishes[-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_completions(client: openai.OpenAI) -> None:
    result = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=6)
    assert result.object == "text_completion" and result.model == MODEL
    assert result.choices[0].text and result.choices[0].finish_reason in ("stop", "length")
    assert result.usage is not None and result.usage.completion_tokens > 0


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_prompt_past_the_context_is_refused_as_openai_does(client: openai.OpenAI,
                                                           endpoint: str) -> None:
    """vLLM's 400 for a prompt longer than its context (1024 tokens here) reaches the client as
    the OpenAI API's ``context_length_exceeded``, naming the prompt's field, with none of
    vLLM's message."""
    canary = "CANARY" + secrets.token_hex(16)
    prompt = f"{canary} " + "word " * 2000
    with pytest.raises(openai.BadRequestError) as caught:
        if endpoint == "chat":
            client.chat.completions.create(model=MODEL, max_tokens=8,
                                           messages=[{"role": "user", "content": prompt}])
        else:
            client.completions.create(model=MODEL, max_tokens=8, prompt=prompt)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == ("messages" if endpoint == "chat" else "prompt")
    assert canary not in str(caught.value.body) and "word" not in str(caught.value.body)


def test_prompts_never_reach_vllm_output_or_any_file(
        client: openai.OpenAI, vllm_gateway: VLLMGateway) -> None:
    canary = "CANARY" + secrets.token_hex(16)
    chat = client.chat.completions.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": f"Repeat: {canary}"}])
    list(client.chat.completions.create(
        model=MODEL, max_tokens=4, stream=True, messages=[{"role": "user", "content": canary}]))
    client.completions.create(model=MODEL, prompt=canary, max_tokens=4)
    # The child's whole stdout+stderr is captured under the workdir (as are its cache, HOME and
    # TMPDIR), so this also shows vLLM's request logging is off.
    assert vllm_gateway.debug_log.stat().st_size > 0
    needles = [canary.encode()]
    completion = (chat.choices[0].message.content or "").strip()
    if len(completion) >= 12:
        needles.append(completion.encode())
    for needle in needles:
        for root in (vllm_gateway.workdir, Path("/dev/shm")):
            assert files_containing(root, needle) == []


def test_supervisor_restarts_a_killed_vllm(
        client: openai.OpenAI, vllm_gateway: VLLMGateway) -> None:
    (old,) = vllm_children(vllm_gateway.gateway.proc.pid)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while True:
        try:
            result = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
            break
        except openai.APIError as exc:
            assert time.monotonic() < deadline, f"vLLM was not back within {RESTART_TIMEOUT_S}s"
            assert isinstance(exc, openai.APIStatusError) and exc.status_code in (502, 503), exc
            time.sleep(2.0)
    assert result.choices[0].message.content is not None
    (new,) = vllm_children(vllm_gateway.gateway.proc.pid)
    assert new != old
