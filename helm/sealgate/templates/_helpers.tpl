{{/* Names, labels, images, the fixed security context, and the value checks. */}}

{{- define "sealgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sealgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sealgate.vllmName" -}}
{{- printf "%s-vllm" (include "sealgate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret holding the API key vLLM requires and the proxy sends. */}}
{{- define "sealgate.vllmKeySecret" -}}
{{- .Values.vllm.apiKeySecret.name | default (printf "%s-vllm-api-key" (include "sealgate.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}

{{- define "sealgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sealgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sealgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "sealgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sealgate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels; call with (dict "ctx" $ "component" "proxy"). */}}
{{- define "sealgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sealgate.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* An image reference; a digest wins over the tag. Call with (dict "image" ... "key" "opa.image")
and, for the proxy only, "default" (the appVersion). There is no fallback to latest: with neither
a tag, a digest nor a default, rendering stops. */}}
{{- define "sealgate.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- $tag := default .default .image.tag }}
{{- if not $tag }}
{{- fail (printf "%s needs a tag or a digest; the chart never falls back to latest" .key) }}
{{- end }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{- define "sealgate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "sealgate.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* True when the host's configfs-tsm directory is mounted into the proxy. */}}
{{- define "sealgate.mountTsm" -}}
{{- $c := .Values.confidential }}
{{- if eq $c.configfsTsm.mount "hostPath" }}true
{{- else if and (eq $c.configfsTsm.mount "auto") (has $c.evidenceProvider (list "configfs-tsm" "auto")) (not $c.runtimeClassName) }}true
{{- end }}
{{- end }}

{{- define "sealgate.auditSecretName" -}}
{{- if .Values.postgresql.existingSecret }}
{{- .Values.postgresql.existingSecret }}
{{- else }}
{{- printf "%s-audit-db" (include "sealgate.fullname" .) }}
{{- end }}
{{- end }}

{{/* Backends: the vLLM service (when on) merged with values.backends. */}}
{{- define "sealgate.backends" -}}
{{- $backends := dict }}
{{- if .Values.vllm.enabled }}
{{- $url := printf "http://%s:%d/v1" (include "sealgate.vllmName" .) (int .Values.vllm.port) }}
{{- $key := dict "name" (include "sealgate.vllmKeySecret" .) "key" .Values.vllm.apiKeySecret.key }}
{{- $_ := set $backends "vllm" (dict "type" "vllm" "url" $url "apiKeySecret" $key) }}
{{- end }}
{{- range $name, $b := .Values.backends }}
{{- $_ := set $backends $name $b }}
{{- end }}
{{- toJson $backends }}
{{- end }}

{{/* Model routes: the vLLM route (when on) merged with values.models. */}}
{{- define "sealgate.models" -}}
{{- $models := dict }}
{{- if .Values.vllm.enabled }}
{{- $_ := set $models .Values.vllm.servedModelName (dict "backend" "vllm" "retentionTier" .Values.vllm.retentionTier) }}
{{- end }}
{{- range $name, $m := .Values.models }}
{{- $_ := set $models $name $m }}
{{- end }}
{{- toJson $models }}
{{- end }}

{{/* Variable carrying a backend's API key: UPSTREAM_API_KEY_<NAME>. */}}
{{- define "sealgate.apiKeyEnv" -}}
{{- printf "UPSTREAM_API_KEY_%s" (regexReplaceAll "[^A-Z0-9]" (upper .) "_") }}
{{- end }}

{{/* Policy bundle: bundle path → content. The chart's policy/rego/ and policy/data/ folders
(laid out like the repository's policy/ bundle), overlaid by values.policy.files. */}}
{{- define "sealgate.policyFiles" -}}
{{- $files := dict }}
{{- range $pattern := list "policy/rego/**.rego" "policy/data/**.yaml" "policy/data/**.yml" "policy/data/**.json" }}
{{- range $path, $_ := $.Files.Glob $pattern }}
{{- $_ := set $files (trimPrefix "policy/" $path) ($.Files.Get $path) }}
{{- end }}
{{- end }}
{{- range $name, $content := .Values.policy.files }}
{{- $_ := set $files $name $content }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/* ConfigMap key of a bundle path (keys cannot hold "/"). */}}
{{- define "sealgate.policyKey" -}}
{{- replace "/" "__" . }}
{{- end }}

{{/* Combinations the schema cannot express; rendering stops with a clear message. */}}
{{- define "sealgate.validate" -}}
{{- $v := .Values }}
{{- if and (eq $v.confidential.evidenceProvider "simulated") (eq $v.proxy.deploymentMode "production") }}
{{- fail "confidential.evidenceProvider=simulated needs proxy.deploymentMode=development" }}
{{- end }}
{{- if and (not $v.postgresql.enabled) (or (gt (int $v.proxy.replicas) 1) $v.proxy.autoscaling.enabled) }}
{{- fail "more than one proxy replica needs postgresql.enabled: without it each pod keeps its audit log in an emptyDir" }}
{{- end }}
{{- if $v.postgresql.enabled }}
{{- if and $v.postgresql.existingSecret $v.postgresql.createSecret }}
{{- fail "set either postgresql.existingSecret or postgresql.createSecret, not both" }}
{{- end }}
{{- if not (or $v.postgresql.existingSecret $v.postgresql.createSecret) }}
{{- fail "postgresql.enabled needs postgresql.existingSecret (or createSecret with url)" }}
{{- end }}
{{- if and $v.postgresql.createSecret (not $v.postgresql.url) }}
{{- fail "postgresql.createSecret needs postgresql.url" }}
{{- end }}
{{- if and $v.networkPolicy.enabled (not $v.postgresql.egress.to) }}
{{- fail "postgresql.enabled with networkPolicy.enabled needs postgresql.egress.to: the chart does not deploy PostgreSQL, so name the database's peers (an ipBlock for an external database, podSelector/namespaceSelector for one in the cluster); an empty list would open the port to every address, the internet included" }}
{{- end }}
{{- end }}
{{- if and $v.metrics.serviceMonitor.enabled (not $v.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- $models := include "sealgate.models" . | fromJson }}
{{- if not $models }}
{{- fail "no model route: enable vllm or name models (with backends); the proxy would otherwise serve its built-in development model" }}
{{- end }}
{{- $keyVars := dict }}
{{- range $name, $b := (include "sealgate.backends" . | fromJson) }}
{{- if $b.apiKeySecret }}
{{- $var := include "sealgate.apiKeyEnv" $name }}
{{- if hasKey $keyVars $var }}
{{- fail (printf "backends %q and %q would share the API key variable %s: rename one" (get $keyVars $var) $name $var) }}
{{- end }}
{{- $_ := set $keyVars $var $name }}
{{- end }}
{{- end }}
{{- /* What the chart sets itself, request logging, which stays off (prompts would reach
vLLM's logs), and options that put code of the operator's choosing in the request path or send
content out (inference/_vllm.py, _RESERVED). argparse takes any unambiguous abbreviation, so a
prefix of one is refused too. */}}
{{- $reserved := list "--host" "--port" "--uds" "--model" "--served-model-name" "--tensor-parallel-size" "--enable-log-requests" "--no-enable-log-requests" "--enable-log-outputs" "--disable-log-requests" "--disable-uvicorn-access-log" "--middleware" "--config" "--log-config-file" "--kv-events-config" "--kv-transfer-config" "--ec-transfer-config" "--otlp-traces-endpoint" "--collect-detailed-traces" "--tool-parser-plugin" "--reasoning-parser-plugin" "--io-processor-plugin" "--logits-processors" "--worker-cls" "--worker-extension-cls" "--scheduler-cls" "--allowed-local-media-path" }}
{{- range $arg := $v.vllm.extraArgs }}
{{- /* vLLM's parser reads "_" as "-" in option names, and "--name.key value" as a JSON
value of "--name" */}}
{{- $flag := replace "_" "-" (trimSuffix "+" (first (splitList "." (first (splitList "=" $arg))))) }}
{{- $hit := or (contains "log-requests" $flag) (contains "log-outputs" $flag) (contains "log-config" $flag) }}
{{- if and (hasPrefix "--" $flag) (gt (len $flag) 2) }}
{{- range $reserved }}
{{- if hasPrefix $flag . }}
{{- $hit = true }}
{{- end }}
{{- end }}
{{- end }}
{{- if $hit }}
{{- fail (printf "vllm.extraArgs may not set %s: the chart fixes vLLM's address, model and request logging (off), and keeps content inside vLLM" $flag) }}
{{- end }}
{{- end }}
{{- /* Settings the chart controls itself: its SEALGATE_* variables (deployment.yaml) and
serve's --host/--port win over sealgate.toml, so proxy.extraConfig setting one would be ignored.
A top-level key is one on a line before the first table header. */}}
{{- $controlled := dict "host" "the chart listens on 0.0.0.0" "port" "use proxy.port" "log_origin" "the chart derives it from the pod name" "deployment_mode" "use proxy.deploymentMode" "data_dir" "use proxy.dataDir" "region" "use proxy.region" "log_level" "use proxy.logLevel" "trusted_proxies" "use proxy.trustedProxies" "tenant_max_concurrent" "use proxy.tenantMaxConcurrent" "tenant_requests_per_minute" "use proxy.tenantRequestsPerMinute" "tenant_tokens_per_minute" "use proxy.tenantTokensPerMinute" "evidence_provider" "use confidential.evidenceProvider" "policy_engine" "use policy.engine" "policy_bundle" "use policy.files or the chart's policy/ folder" "opa_url" "use opa.port" "audit_url" "use postgresql.existingSecret" "database_url" "use postgresql.existingSecret" "release_measurement" "use proxy.releaseMeasurement" "session_secret" "use proxy.sessionSecret.existingSecret" }}
{{- $topLevel := true }}
{{- range $line := splitList "\n" $v.proxy.extraConfig }}
{{- if regexMatch `^\s*\[.*\]\s*(#.*)?$` $line }}
{{- $topLevel = false }}
{{- end }}
{{- if $topLevel }}
{{- range $key, $instead := $controlled }}
{{- if regexMatch (printf `^\s*(%s|"%s"|'%s')\s*=` $key $key $key) $line }}
{{- fail (printf "proxy.extraConfig may not set %s, which the chart controls (its SEALGATE_* variables and serve arguments win over sealgate.toml): %s" $key $instead) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $name, $m := $models }}
{{- if not (hasKey (include "sealgate.backends" $ | fromJson) $m.backend) }}
{{- fail (printf "model %q names backend %q, which is neither in backends nor the vLLM backend" $name $m.backend) }}
{{- end }}
{{- end }}
{{- $keys := dict }}
{{- range $path, $_ := (include "sealgate.policyFiles" . | fromJson) }}
{{- range splitList "/" $path }}
{{- if hasPrefix "." . }}
{{- fail (printf "policy file %q has a path component starting with \".\": OPA (--ignore=.*) would skip it while the proxy's attested digest covers it" $path) }}
{{- end }}
{{- end }}
{{- $key := include "sealgate.policyKey" $path }}
{{- if hasKey $keys $key }}
{{- fail (printf "policy files %q and %q share the ConfigMap key %q" (get $keys $key) $path $key) }}
{{- end }}
{{- $_ := set $keys $key $path }}
{{- end }}
{{- if and $v.proxy.autoscaling.enabled (lt (int $v.proxy.autoscaling.maxReplicas) (int $v.proxy.autoscaling.minReplicas)) }}
{{- fail "proxy.autoscaling.maxReplicas must be at least minReplicas" }}
{{- end }}
{{- if and (ne $v.confidential.evidenceProvider "simulated") (not $v.proxy.releaseMeasurement) }}
{{- fail "proxy.releaseMeasurement is required with a hardware evidence provider: the measurement from the release manifest (the proxy refuses to start without it, as every client would refuse its identity)" }}
{{- end }}
{{- end }}
