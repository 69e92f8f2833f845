"""The ``purpose`` of a form upload, read for the policy from a body that is never forwarded:
exact on real forms, and bounded on hostile ones (linear parsing, a cap on parts, never an
exception)."""

from __future__ import annotations

import httpx
import pytest

from proxy.api.openai.serving import _FORM_PARTS, _body_fields


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]] | None = None
               ) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/v1/files", data=fields, files=files)
    return request.read(), request.headers["content-type"]


def test_purpose_of_a_real_upload() -> None:
    body, content_type = _multipart({"purpose": "fine-tune"},
                                    {"file": ("train.jsonl", b'{"prompt": "CANARY"}\n')})
    assert _body_fields(body, content_type) == {"purpose": "fine-tune"}


def test_a_file_part_named_purpose_is_not_the_field() -> None:
    body, content_type = _multipart({}, {"purpose": ("purpose.txt", b"fine-tune")})
    assert _body_fields(body, content_type) == {}


def test_urlencoded_purpose() -> None:
    assert _body_fields(b"purpose=batch&x=1", "application/x-www-form-urlencoded") == {
        "purpose": "batch"}
    many = b"purpose=fine-tune" + b"&x=1" * 5000  # read although more fields follow
    assert _body_fields(many, "application/x-www-form-urlencoded") == {"purpose": "fine-tune"}


def _hostile(kind: str) -> tuple[bytes, str]:
    b = "B0UNDARY"
    head = f"multipart/form-data; boundary={b}"
    if kind == "nested":  # parts inside parts, 2,000 deep
        body = "".join(f"--{b}{i}\r\nContent-Type: multipart/mixed; boundary={b}{i + 1}\r\n\r\n"
                       for i in range(2000))
        return (f"--{b}\r\nContent-Type: multipart/mixed; boundary={b}0\r\n\r\n" + body).encode(), head
    if kind == "parameters":  # one header with 60,000 RFC 2231 parameters
        params = "".join(f"; x*{i}*=utf-8''a" for i in range(60_000))
        return (f"--{b}\r\nContent-Disposition: form-data; name=purpose{params}\r\n\r\n"
                f"fine-tune\r\n--{b}--\r\n").encode(), head
    if kind == "many-parts":  # the purpose after more parts than are read
        parts = "".join(f'--{b}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n'
                        for i in range(_FORM_PARTS))
        return (parts + f'--{b}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
                f"fine-tune\r\n--{b}--\r\n").encode(), head
    if kind == "many-fields":  # the purpose after more fields than are read (was a 500)
        fields = "&".join(f"f{i}=x" for i in range(1001))
        return f"{fields}&purpose=fine-tune".encode(), "application/x-www-form-urlencoded"
    if kind == "no-boundary":
        return b"purpose=fine-tune", "multipart/form-data"
    return b"--B0UNDARY\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-", head


@pytest.mark.parametrize("kind", ["nested", "parameters", "many-parts", "many-fields", "no-boundary",
                                  "truncated"])
def test_a_hostile_form_counts_as_having_no_purpose(kind: str) -> None:
    """Denied all the same (the endpoints that take forms are refused); only the rule id may
    differ. The old email-parser path took seconds of event-loop time on such bodies, or
    raised RecursionError (a 500)."""
    body, content_type = _hostile(kind)
    assert _body_fields(body, content_type) == {}
