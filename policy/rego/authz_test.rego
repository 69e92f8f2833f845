# Unit tests for package sealgate.authz; run with `sealgate policy test` (or `opa test`).
package sealgate.authz_test

# A sealed, in-contract chat completion in production: allowed.
base := {
	"channel": "sealed",
	"tenant": {"id": "t-1", "name": "acme-health"},
	"endpoint": {"method": "POST", "path": "/v1/chat/completions"},
	"model": "llama-3.1-8b-instruct",
	"request": {
		"stream": false, "store": null, "max_tokens": 256, "n": null,
		"previous_response_id": false, "conversation": false,
		"metadata_keys": [], "purpose": null, "stored_references": false,
	},
	"backend": {"name": "vllm", "retention_tier": "attested-zero"},
	"enclave": {"platform": "sev-snp", "measurement": "00", "simulated": false, "debug": false},
	"time": "2026-01-01T00:00:00Z",
	"deployment": {"mode": "production", "region": "eu-west-1"},
	"dev": {"allow_plaintext": false},
}

# decide(inp): the decision for input document `inp`. Each top-level field is replaced with
# `with input.<field>`: rego-cpp 1.5 rejects `with input as <object>` when the rule under
# test refers to other rules, while OPA accepts both forms.
decide(inp) := d if {
	d := data.sealgate.authz.decision with input.channel as inp.channel
		with input.tenant as inp.tenant
		with input.endpoint as inp.endpoint
		with input.model as inp.model
		with input.request as inp.request
		with input.backend as inp.backend
		with input.enclave as inp.enclave
		with input.time as inp.time
		with input.deployment as inp.deployment
		with input.dev as inp.dev
}

# `inp` with inp[top] set to `value`, and with inp[top][key] set to `value`. inp[top] is
# removed first: OPA's object.union merges nested objects (so a key removed from `value`
# would come back from `inp`), rego-cpp's replaces them; on disjoint keys both agree.
set1(inp, top, value) := object.union(object.remove(inp, [top]), {top: value})

set2(inp, top, key, value) := set1(inp, top, object.union(inp[top], {key: value}))

denied_by(rule_id, d) if {
	some x in d.deny
	x.rule == rule_id
}

test_base_allowed if {
	d := decide(base)
	d.allow == true
	count(d.deny) == 0
	d.obligations == {}
}

test_plaintext_denied if {
	d := decide(set1(base, "channel", "plaintext"))
	d.allow == false
	denied_by("SG-CHANNEL-001", d)
}

test_plaintext_dev_mode_allowed_with_obligation if {
	dev := set2(set2(base, "dev", "allow_plaintext", true), "deployment", "mode", "development")
	d := decide(set1(dev, "channel", "plaintext"))
	d.allow == true
	d.obligations.plaintext_dev_mode == true
}

test_plaintext_flag_ignored_in_production if {
	flagged := set2(base, "dev", "allow_plaintext", true)
	d := decide(set1(flagged, "channel", "plaintext"))
	denied_by("SG-CHANNEL-001", d)
}

test_retention_none_denied_even_with_contractual_zero if {
	globex := set2(set2(base, "tenant", "name", "globex-research"), "deployment", "region", "us-east-1")
	d := decide(set2(globex, "backend", "retention_tier", "none"))
	denied_by("SG-RETENTION-001", d)
}

test_contractual_zero_needs_contract if {
	d := decide(set2(base, "backend", "retention_tier", "contractual-zero"))
	denied_by("SG-RETENTION-001", d)
}

test_store_true_denied if {
	d := decide(set2(base, "request", "store", true))
	denied_by("SG-STORE-001", d)
}

test_store_true_rewritten_per_contract if {
	globex := set2(set2(base, "tenant", "name", "globex-research"), "deployment", "region", "us-east-1")
	d := decide(set2(globex, "request", "store", true))
	d.allow == true
	d.obligations.set_params == {"store": false}
}

test_responses_store_defaults_off if {
	d := decide(set2(base, "endpoint", "path", "/v1/responses"))
	d.allow == true
	d.obligations.set_params == {"store": false}
}

test_previous_response_id_denied if {
	d := decide(set2(base, "request", "previous_response_id", true))
	denied_by("SG-STORE-002", d)
}

test_stored_file_reference_denied if {
	d := decide(set2(base, "request", "stored_references", true))
	denied_by("SG-STORE-006", d)
}

test_missing_stored_references_denied if {
	d := decide(set1(base, "request", object.remove(base.request, ["stored_references"])))
	denied_by("SG-STORE-006", d)
}

test_distill_metadata_denied if {
	d := decide(set2(base, "request", "metadata_keys", ["Distill_Run"]))
	denied_by("SG-STORE-004", d)
}

test_fine_tuning_denied_with_its_own_rule if {
	d := decide(set2(base, "endpoint", "path", "/v1/fine_tuning/jobs"))
	denied_by("SG-TRAIN-001", d)
	not denied_by("SG-ENDPOINT-001", d)
}

test_stored_completion_listing_denied if {
	d := decide(set2(base, "endpoint", "method", "GET"))
	denied_by("SG-TRAIN-005", d)
}

test_unknown_endpoint_denied if {
	d := decide(set2(base, "endpoint", "path", "/v1/audio/speech"))
	denied_by("SG-ENDPOINT-001", d)
}

test_model_not_in_contract_denied if {
	d := decide(set1(base, "model", "gpt-4o"))
	denied_by("SG-MODEL-001", d)
}

test_region_outside_residency_denied if {
	d := decide(set2(base, "deployment", "region", "us-east-1"))
	denied_by("SG-REGION-001", d)
}

test_simulated_enclave_in_production_denied if {
	d := decide(set2(base, "enclave", "simulated", true))
	denied_by("SG-ENCLAVE-001", d)
}

test_debug_enclave_in_production_denied if {
	d := decide(set2(base, "enclave", "debug", true))
	denied_by("SG-ENCLAVE-002", d)
}

test_unknown_tenant_uses_default_contract if {
	d := decide(set2(set2(base, "tenant", "name", "nobody"), "request", "stream", true))
	d.allow == true
}

test_expired_contract_denied if {
	d := decide(set1(base, "time", "2030-01-01T00:00:00Z"))
	denied_by("SG-CONTRACT-001", d)
}

# A field a rule reads that is missing from the input denies with that rule's id: a denial
# negates its check, so an undefined field cannot make the check pass.
without(inp, top, key) := set1(inp, top, object.remove(inp[top], [key]))

test_missing_fields_deny_with_their_rule if {
	denied_by("SG-STORE-001", decide(without(base, "request", "store")))
	denied_by("SG-TOKENS-001", decide(without(base, "request", "max_tokens")))
	denied_by("SG-TOKENS-002", decide(without(base, "request", "n")))
	denied_by("SG-STREAM-001", decide(without(base, "request", "stream")))
	denied_by("SG-RETENTION-001", decide(without(base, "backend", "retention_tier")))
	denied_by("SG-ENCLAVE-002", decide(without(base, "enclave", "debug")))
	denied_by("SG-REGION-001", decide(without(base, "deployment", "region")))
	denied_by("SG-INPUT-001", decide(without(base, "deployment", "mode")))
	denied_by("SG-CONTRACT-001", decide(without(base, "tenant", "name")))
}

test_missing_model_on_content_endpoint_denied if {
	d := decide(set1(base, "model", null))
	denied_by("SG-MODEL-001", d)
}
