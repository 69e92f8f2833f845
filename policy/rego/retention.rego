# Retention rules: no backend that may keep content, and no request that asks for stored state.
package sealgate.authz

# SG-RETENTION-001: the backend's retention tier must be `attested-zero` (it runs inside the
# attested boundary and keeps nothing), or `contractual-zero` (outside the boundary, under a
# zero-retention contract) when the tenant's contract sets `allow_contractual_zero: true`.
# Tier `none` is never allowed, whatever a contract says. Requests that send no content to a
# backend (e.g. GET /v1/models) have no retention to check.
contractual_zero_allowed if {
	retention_tier == "contractual-zero"
	contract.allow_contractual_zero == true
}

sends_no_content if {
	is_string(path)
	not forwards_content
}

retention_denied := denial(
	"SG-RETENTION-001",
	"the backend's retention tier is not allowed for this tenant",
)

deny contains retention_denied if {
	not retention_tier == "attested-zero"
	not contractual_zero_allowed
	not sends_no_content
}

# Without an endpoint path it cannot be told whether content is sent: no tier passes.
deny contains retention_denied if not path_given

path_given if is_string(path)

# SG-STORE-001: `store: true` asks the backend to keep the completion (chat completions,
# responses). It is denied, or, when the contract sets `rewrite_store: true`, the decision
# carries the obligation `set_params: {store: false}` and the gateway rewrites the request.
# The Responses API stores by default, so a `/v1/responses` request that does not say
# `store: false` always gets that obligation.
store_rewritten if {
	store == true
	contract.rewrite_store == true
}

store_defaults_on if {
	path == "/v1/responses"
	store == null
}

deny contains denial(
	"SG-STORE-001",
	"store=true is not allowed: completions are never kept",
) if {
	not store == null
	not store == false
	not store_rewritten
}

obligations["set_params"] := {"store": false} if store_rewritten

obligations["set_params"] := {"store": false} if store_defaults_on

# SG-STORE-002: `previous_response_id` continues a response kept on the server.
deny contains denial(
	"SG-STORE-002",
	"previous_response_id needs server-side state and is not allowed",
) if not previous_response_id == false

# SG-STORE-003: conversation objects are state kept on the server.
deny contains denial(
	"SG-STORE-003",
	"conversation objects are server-side state and are not allowed",
) if not conversation == false

# SG-STORE-006: a message that refers to something kept by the provider (a chat `file` part
# with `file_id`, or an assistant message's earlier audio answer `audio.id`) makes the answer
# depend on stored content. Inline `file_data` is allowed.
deny contains denial(
	"SG-STORE-006",
	"references to files or answers kept by the provider are not allowed",
) if not stored_references == false

# SG-STORE-004: request metadata whose keys mark it for distillation, evals or training. Keys
# are matched case-insensitively on substrings, so `distill_set` or `EvalRun` are caught;
# only metadata keys reach the policy, never values or message text. The terms are literal
# alternatives of one regular expression, each matching anywhere in the lowercased key.
training_terms := `distill|eval|train|finetun|fine_tun|fine-tun|dataset`

deny contains denial(
	"SG-STORE-004",
	"metadata marked for distillation, evals or training is not allowed",
) if {
	some key in metadata_keys
	is_string(key) # any other is malformed input (SG-INPUT-001)
	regex.match(training_terms, lower(key))
}
