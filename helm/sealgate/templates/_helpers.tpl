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

{{/* An image reference; a digest wins over the tag. Call with (dict "image" ... "default" ...). */}}
{{- define "sealgate.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .default .image.tag) }}
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
{{- else if and (eq $c.configfsTsm.mount "auto") (eq $c.evidenceProvider "configfs-tsm") (not $c.runtimeClassName) }}true
{{- end }}
{{- end }}

{{- define "sealgate.auditSecretName" -}}
{{- if .Values.postgresql.existingSecret }}
{{- .Values.postgresql.existingSecret }}
{{- else }}
{{- printf "%s-audit-db" (include "sealgate.fullname" .) }}
{{- end }}
{{- end }}

{{/* Model routes: the vLLM route (when on) merged with values.models. */}}
{{- define "sealgate.models" -}}
{{- $models := dict }}
{{- if .Values.vllm.enabled }}
{{- $url := printf "http://%s:%d/v1" (include "sealgate.vllmName" .) (int .Values.vllm.port) }}
{{- $_ := set $models .Values.vllm.servedModelName (dict "backend" "openai" "url" $url "retentionTier" .Values.vllm.retentionTier) }}
{{- end }}
{{- range $name, $m := .Values.models }}
{{- $_ := set $models $name $m }}
{{- end }}
{{- toJson $models }}
{{- end }}

{{/* Policy files: chart policy/*.rego and policy/*.json, overlaid by values.policy.files. */}}
{{- define "sealgate.policyFiles" -}}
{{- $files := dict }}
{{- range $path, $_ := .Files.Glob "policy/*.rego" }}
{{- $_ := set $files (base $path) ($.Files.Get $path) }}
{{- end }}
{{- range $path, $_ := .Files.Glob "policy/*.json" }}
{{- $_ := set $files (base $path) ($.Files.Get $path) }}
{{- end }}
{{- range $name, $content := .Values.policy.files }}
{{- $_ := set $files $name $content }}
{{- end }}
{{- toJson $files }}
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
{{- end }}
{{- if and $v.metrics.serviceMonitor.enabled (not $v.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if and $v.proxy.autoscaling.enabled (lt (int $v.proxy.autoscaling.maxReplicas) (int $v.proxy.autoscaling.minReplicas)) }}
{{- fail "proxy.autoscaling.maxReplicas must be at least minReplicas" }}
{{- end }}
{{- end }}
