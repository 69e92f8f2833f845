# Endpoint rules: only stateless inference endpoints; training-shaped endpoints are named and
# denied with their own rule ids so audit records say why.
package sealgate.authz

# Stateless inference endpoints the gateway serves: the content endpoints below, and the
# model list.
endpoint_allowed if forwards_content

endpoint_allowed if {
	method == "GET"
	path == "/v1/models"
}

# Endpoints that send request content to a model backend; retention and tenant rules apply.
forwards_content if {
	method == "POST"
	content_endpoint
}

content_endpoint if path == "/v1/chat/completions"

content_endpoint if path == "/v1/completions"

content_endpoint if path == "/v1/embeddings"

content_endpoint if path == "/v1/responses"

# GET /v1/models/{model}: a model's name may hold "/" itself (e.g. meta-llama/Llama-3.1-8B).
endpoint_allowed if {
	method == "GET"
	startswith(path, "/v1/models/")
}

# The collection a path belongs to: its first two segments (`/v1/fine_tuning` for
# `/v1/fine_tuning/jobs/ftjob-1`). A path is under `/v1/NAME` (that path itself or anything
# below it) exactly when its collection is `/v1/NAME`.
collection := concat("/", array.slice(split(path, "/"), 0, 3))

# SG-TRAIN-001: fine-tuning jobs.
endpoint_denials contains "SG-TRAIN-001" if collection == "/v1/fine_tuning"

# SG-TRAIN-002: files (or uploads) with purpose `fine-tune`.
endpoint_denials contains "SG-TRAIN-002" if {
	file_endpoint
	purpose == "fine-tune"
}

# SG-TRAIN-003: batches keep inputs and outputs as files.
endpoint_denials contains "SG-TRAIN-003" if collection == "/v1/batches"

# SG-TRAIN-004: evals run over stored completions.
endpoint_denials contains "SG-TRAIN-004" if collection == "/v1/evals"

# SG-TRAIN-005: listing or reading stored completions and stored responses
# (GET /v1/chat/completions and anything below it; anything below /v1/responses).
endpoint_denials contains "SG-TRAIN-005" if {
	method == "GET"
	path == "/v1/chat/completions"
}

endpoint_denials contains "SG-TRAIN-005" if startswith(path, "/v1/chat/completions/")

endpoint_denials contains "SG-TRAIN-005" if startswith(path, "/v1/responses/")

# SG-TRAIN-006: assistants and threads keep messages on the server.
endpoint_denials contains "SG-TRAIN-006" if collection == "/v1/assistants"

endpoint_denials contains "SG-TRAIN-006" if collection == "/v1/threads"

# SG-STORE-005: any other file, upload, vector store or conversation storage.
endpoint_denials contains "SG-STORE-005" if {
	file_endpoint
	purpose != "fine-tune"
}

endpoint_denials contains "SG-STORE-005" if collection == "/v1/vector_stores"

endpoint_denials contains "SG-STORE-005" if collection == "/v1/conversations"

file_endpoint if collection == "/v1/files"

file_endpoint if collection == "/v1/uploads"

endpoint_messages := {
	"SG-TRAIN-001": "fine-tuning is not allowed",
	"SG-TRAIN-002": "files for fine-tuning are not allowed",
	"SG-TRAIN-003": "batches are not allowed: they keep inputs and outputs",
	"SG-TRAIN-004": "evals are not allowed",
	"SG-TRAIN-005": "stored completions and responses cannot be listed or read",
	"SG-TRAIN-006": "assistants and threads are not allowed: they keep messages",
	"SG-STORE-005": "files, uploads, vector stores and conversations are not allowed",
}

# The endpoints named above are none of the allowed ones, so an allowed endpoint skips them.
deny contains denial(id, endpoint_messages[id]) if {
	not endpoint_allowed
	some id in endpoint_denials
}

# SG-ENDPOINT-001: anything that is neither a stateless inference endpoint nor one of the
# named training or storage endpoints above.
deny contains denial(
	"SG-ENDPOINT-001",
	"this endpoint is not served through the gateway",
) if {
	not endpoint_allowed
	count(endpoint_denials) == 0
}
