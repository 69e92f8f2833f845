# Sealgate authorization policy: may this request reach a model backend?
#
# Default deny. `allow` is true only when no rule in `deny` fired, and every rule below is
# written as "deny unless the request positively passes the check", so a missing or malformed
# input field denies instead of slipping through. Each denial carries a stable rule id
# (SG-AREA-NNN) that proof-of-secrecy records cite; ids are never reused for a new meaning.
#
# The rules live in several files of this one package:
#   authz.rego      decision document, contract lookup, input shape (SG-INPUT, SG-CONTRACT),
#                   the input fields by name
#   channel.rego    sealed channel (SG-CHANNEL)
#   retention.rego  backend retention tier and stored state (SG-RETENTION, SG-STORE-001..004)
#   endpoints.rego  training-shaped and storage endpoints, endpoint allowlist (SG-TRAIN,
#                   SG-STORE-005, SG-ENDPOINT)
#   tenant.rego     per-tenant limits: models, regions, tokens, streaming (SG-MODEL, SG-REGION,
#                   SG-TOKENS, SG-STREAM)
#   enclave.rego    enclave evidence in production (SG-ENCLAVE)
#
# Builtins are limited to those both OPA and the embedded rego-cpp engine provide.
#
# Rules read input fields through the names bound at the end of this file, never `input.a.b`
# directly: each dotted lookup costs the embedded engine a scan of that object's keys, while a
# rule's value is computed once per decision. A name is undefined exactly when its input field
# is missing, so each rule means what it would with the field written out.
#
# A denial states an equality check in its own body, negated (`not store == null`): a missing
# field still denies, as `store == null` is then undefined and `not` holds, in both engines.
# Any other check (`<=`, `in`, `is_array`, ...) is a helper rule that holds when the request
# passes (`tokens_within_limit`), and the denial says `not` of that rule. Written inline,
# `not max_tokens <= limit` would let a missing field through on OPA, which evaluates the
# operands of a negated call before the negation: an undefined operand leaves the whole
# body undefined there, not the negation true. `opa test` and `sealgate policy test` run the
# same unit tests (authz_test.rego, "missing fields deny").
package sealgate.authz

default allow := false

allow if count(deny) == 0

# The decision document the gateway reads (docs/policy.md, "Decision document"). The gateway
# adds the bundle digest; obligations must be honoured before the request is forwarded.
decision := {
	"allow": allow,
	"deny": [d | some d in deny],
	"obligations": obligations,
}

# `obligations` is an object with one key per obligation, set by the rule that imposes it
# (channel.rego, retention.rego); `{}` when none applies.

# One entry of `deny`: the rule id and why. Rules add `denial(id, message)`, so the entry is
# built only when the rule fires (an object written in a rule's head is built whether or not
# its body holds).
denial(rule, message) := {"rule": rule, "message": message}

# The tenant's contract (policy/data/contracts.yaml), looked up by tenant name. A tenant
# without a contract of its own is held to the `default` contract.
contract := object.get(data.contracts, tenant_name, data.contracts["default"])

# SG-INPUT-001: the input fields that no other rule checks positively must have the shape
# the gateway builds (docs/policy.md, "Input document"): a known deployment mode (the enclave
# rules depend on it) and a list of metadata keys that are strings. Every other rule already
# denies when its field is missing or has an unexpected value (a token limit that is not a
# number included).
malformed_input := denial("SG-INPUT-001", "the policy input document is incomplete or malformed")

deny contains malformed_input if not metadata_keys_listed

metadata_keys_listed if {
	is_array(metadata_keys)
	count([key | some key in metadata_keys; not is_string(key)]) == 0
}

deny contains malformed_input if {
	not mode == "production"
	not mode == "development"
}

# SG-CONTRACT-001: a contract with an `expires` instant stops covering requests from that
# instant on. Both `expires` and the input's `time` are UTC in the fixed RFC 3339 form
# YYYY-MM-DDTHH:MM:SSZ, so comparing them as strings compares them as instants. Contracts
# without `expires` do not lapse.
no_contract := denial("SG-CONTRACT-001", "the tenant's contract is missing or has expired")

deny contains no_contract if not contract_found

contract_found if is_object(contract)

deny contains no_contract if {
	contract.expires
	not before_expiry
}

before_expiry if request_time < contract.expires

# The input fields, read once per decision (docs/policy.md, "Input document"). The request,
# endpoint, enclave and deployment objects are read once too, and their fields from them.
channel := input.channel

tenant_name := input.tenant.name

endpoint := input.endpoint

method := endpoint.method

path := endpoint.path

model := input.model

request := input.request

stream := request.stream

store := request.store

max_tokens := request.max_tokens

choices := request.n

previous_response_id := request.previous_response_id

conversation := request.conversation

metadata_keys := request.metadata_keys

purpose := request.purpose

stored_references := request.stored_references

retention_tier := input.backend.retention_tier

enclave := input.enclave

enclave_platform := enclave.platform

enclave_simulated := enclave.simulated

enclave_debug := enclave.debug

request_time := input.time

deployment := input.deployment

mode := deployment.mode

region := deployment.region

allow_plaintext := input.dev.allow_plaintext
