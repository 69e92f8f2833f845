"""Canary: a unique prompt string (and the completion text) never reaches disk or logs."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import openai

from tests.integration.conftest import MODEL
from tests.server import Gateway


def files_containing(root: Path, needle: bytes) -> list[Path]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    hits.append(path)
            except OSError:
                continue
    return hits


def test_canary_never_written(gateway: Gateway, api_key: str, workdir: Path) -> None:
    canary = "CANARY" + secrets.token_hex(16)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)
    chat = client.chat.completions.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": f"Repeat: {canary}"}])
    list(client.chat.completions.create(
        model=MODEL, max_tokens=8, stream=True, messages=[{"role": "user", "content": canary}]))
    client.completions.create(model=MODEL, prompt=canary, max_tokens=4)
    client.embeddings.create(model=MODEL, input=canary)
    # Error paths must not echo it either.
    headers = {"Authorization": f"Bearer {api_key}"}
    for body in ({"model": MODEL, "messages": [{"role": canary, "content": canary}]},
                 {"model": canary, "messages": [{"role": "user", "content": canary}]},
                 {"model": MODEL, "messages": [{"role": "user", "content": canary}], "n": canary}):
        response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
        assert response.status_code in (400, 404) and canary not in response.text
    completion = chat.choices[0].message.content or ""
    needles = [canary.encode()]
    if len(completion.strip()) >= 12:
        needles.append(completion.strip().encode())
    for needle in needles:
        assert files_containing(workdir, needle) == []
    assert canary not in gateway.output()
    assert canary not in httpx.get(f"{gateway.url}/metrics").text
