"""Model backends behind one protocol: embedded llama.cpp, OpenAI-compatible upstreams, vLLM."""

from inference._base import Backend, GenerationKind, ModelRoute, RetentionTier
from inference._errors import BackendError, BackendRejected, BackendUnavailable, ModelNotFound
from inference._llamacpp import LlamaCppBackend, LlamaCppConfig, default_model_path
from inference._openai import OpenAIBackend, OpenAIConfig
from inference._router import BackendRouter
from inference._vllm import VLLMBackend, VLLMConfig

__all__ = [
    "Backend",
    "BackendError",
    "BackendRejected",
    "BackendRouter",
    "BackendUnavailable",
    "GenerationKind",
    "LlamaCppBackend",
    "LlamaCppConfig",
    "ModelNotFound",
    "ModelRoute",
    "OpenAIBackend",
    "OpenAIConfig",
    "RetentionTier",
    "VLLMBackend",
    "VLLMConfig",
    "default_model_path",
]
