# Tenant rules: what the tenant's contract (policy/data/contracts.yaml) allows.
package sealgate.authz

# SG-MODEL-001: the model must be on the contract's `models` list ("*" allows any model).
# Only requests that send content to a backend name a model.
deny contains denial(
	"SG-MODEL-001",
	"this model is not allowed for the tenant",
) if {
	not model_allowed
	forwards_content
}

model_allowed if model in contract.models

model_allowed if "*" in contract.models

# SG-REGION-001: data residency. The gateway's deployment region must be one of the
# contract's `regions`; there is no wildcard.
deny contains denial(
	"SG-REGION-001",
	"the deployment region is outside the tenant's data residency regions",
) if not region_allowed

region_allowed if region in contract.regions

# SG-TOKENS-001: a requested output-token limit may not exceed the contract's `max_tokens`.
# A request without a limit is bounded by the backend, not given the contract's: OpenAI-style
# servers reserve the whole limit in the model's context, so a limit larger than what is left
# of it refuses a prompt that would fit (`context_length_exceeded`).
deny contains denial(
	"SG-TOKENS-001",
	"max_tokens exceeds the tenant's limit",
) if {
	not max_tokens == null
	not tokens_within_limit
}

tokens_within_limit if {
	is_number(max_tokens)
	max_tokens <= contract.max_tokens
}

# SG-TOKENS-002: the number of choices `n` may not exceed the contract's `max_n`.
deny contains denial(
	"SG-TOKENS-002",
	"n exceeds the tenant's limit on choices",
) if {
	not choices == null
	not choices_within_limit
}

choices_within_limit if {
	is_number(choices)
	choices <= contract.max_n
}

# SG-STREAM-001: streaming responses only when the contract sets `allow_streaming: true`.
streaming_allowed if {
	stream == true
	contract.allow_streaming == true
}

deny contains denial(
	"SG-STREAM-001",
	"streaming is not allowed for the tenant",
) if {
	not stream == false
	not streaming_allowed
}
