"""OpenAI-compatible endpoints: routes (thin), protocol (schemas), serving (logic)."""

from proxy.api.openai.routes import openai_handlers
from proxy.api.openai.serving import Gate, OpenAIService

__all__ = ["Gate", "OpenAIService", "openai_handlers"]
