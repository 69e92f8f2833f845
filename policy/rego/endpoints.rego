# Endpoint rules: only stateless inference endpoints; training-shaped endpoints are named and
# denied with their own rule ids so audit records say why.
package sealgate.authz

# Stateless inference endpoints the gateway serves: the content endpoints below, and the
# model list.
endpoint_allowed if forwards_content

endpoint_allowed if {
	input.endpoint.method == "GET"
	input.endpoint.path == "/v1/models"
}

# Endpoints that send request content to a model backend; retention and tenant rules apply.
content_endpoints := {
	"/v1/chat/completions": true,
	"/v1/completions": true,
	"/v1/embeddings": true,
	"/v1/responses": true,
}

forwards_content if {
	input.endpoint.method == "POST"
	content_endpoints[input.endpoint.path]
}

# GET /v1/models/{model}: a model's name may hold "/" itself (e.g. meta-llama/Llama-3.1-8B).
endpoint_allowed if {
	input.endpoint.method == "GET"
	startswith(input.endpoint.path, "/v1/models/")
}

endpoint_path := input.endpoint.path

# SG-TRAIN-001: fine-tuning jobs.
endpoint_denials contains "SG-TRAIN-001" if under(endpoint_path, "/v1/fine_tuning")

# SG-TRAIN-002: files (or uploads) with purpose `fine-tune`.
endpoint_denials contains "SG-TRAIN-002" if {
	file_endpoint
	input.request.purpose == "fine-tune"
}

# SG-TRAIN-003: batches keep inputs and outputs as files.
endpoint_denials contains "SG-TRAIN-003" if under(endpoint_path, "/v1/batches")

# SG-TRAIN-004: evals run over stored completions.
endpoint_denials contains "SG-TRAIN-004" if under(endpoint_path, "/v1/evals")

# SG-TRAIN-005: listing or reading stored completions and stored responses
# (GET /v1/chat/completions and anything below it; anything below /v1/responses).
endpoint_denials contains "SG-TRAIN-005" if {
	input.endpoint.method == "GET"
	endpoint_path == "/v1/chat/completions"
}

endpoint_denials contains "SG-TRAIN-005" if startswith(endpoint_path, "/v1/chat/completions/")

endpoint_denials contains "SG-TRAIN-005" if startswith(endpoint_path, "/v1/responses/")

# SG-TRAIN-006: assistants and threads keep messages on the server.
endpoint_denials contains "SG-TRAIN-006" if under(endpoint_path, "/v1/assistants")

endpoint_denials contains "SG-TRAIN-006" if under(endpoint_path, "/v1/threads")

# SG-STORE-005: any other file, upload, vector store or conversation storage.
endpoint_denials contains "SG-STORE-005" if {
	file_endpoint
	input.request.purpose != "fine-tune"
}

endpoint_denials contains "SG-STORE-005" if under(endpoint_path, "/v1/vector_stores")

endpoint_denials contains "SG-STORE-005" if under(endpoint_path, "/v1/conversations")

file_endpoint if under(endpoint_path, "/v1/files")

file_endpoint if under(endpoint_path, "/v1/uploads")

endpoint_messages := {
	"SG-TRAIN-001": "fine-tuning is not allowed",
	"SG-TRAIN-002": "files for fine-tuning are not allowed",
	"SG-TRAIN-003": "batches are not allowed: they keep inputs and outputs",
	"SG-TRAIN-004": "evals are not allowed",
	"SG-TRAIN-005": "stored completions and responses cannot be listed or read",
	"SG-TRAIN-006": "assistants and threads are not allowed: they keep messages",
	"SG-STORE-005": "files, uploads, vector stores and conversations are not allowed",
}

deny contains {"rule": id, "message": endpoint_messages[id]} if some id in endpoint_denials

# SG-ENDPOINT-001: anything that is neither a stateless inference endpoint nor one of the
# named training or storage endpoints above.
deny contains {
	"rule": "SG-ENDPOINT-001",
	"message": "this endpoint is not served through the gateway",
} if {
	not endpoint_allowed
	count(endpoint_denials) == 0
}
