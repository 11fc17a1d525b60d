{{- define "aserve.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aserve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "aserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "aserve.labels" -}}
{{ include "aserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "aserve.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The chart's own config files, in one ConfigMap mounted at /etc/aserve/config. */}}
{{- define "aserve.monitoringConfig" -}}
prometheus_config {
  enable: true
  path: {{ .Values.metrics.path | quote }}
}
{{- end -}}

{{- define "aserve.batchingParameters" -}}
{{- with .Values.batching -}}
{{- if .maxBatchSize }}
max_batch_size { value: {{ int .maxBatchSize }} }
{{- end }}
{{- if .batchTimeoutMicros }}
batch_timeout_micros { value: {{ int .batchTimeoutMicros }} }
{{- end }}
{{- if .maxEnqueuedBatches }}
max_enqueued_batches { value: {{ int .maxEnqueuedBatches }} }
{{- end }}
{{- if .numBatchThreads }}
num_batch_threads { value: {{ int .numBatchThreads }} }
{{- end }}
{{- range .allowedBatchSizes }}
allowed_batch_sizes: {{ int . }}
{{- end }}
{{- if .padVariableLengthInputs }}
pad_variable_length_inputs: true
{{- end }}
{{- end }}
{{- end -}}

{{/* aserve's flags, appended to the image's entrypoint (TF Serving's). */}}
{{- define "aserve.args" -}}
- --drain_delay_seconds={{ .Values.shutdown.drainDelaySeconds }}
- --shutdown_grace_seconds={{ .Values.shutdown.graceSeconds }}
- --file_system_poll_wait_seconds={{ .Values.model.versionPollSeconds }}
- --enable_grpc_healthcheck_service
{{- if .Values.metrics.enabled }}
- --monitoring_config_file=/etc/aserve/config/monitoring.config
{{- end }}
{{- if .Values.model.config }}
- --model_config_file=/etc/aserve/config/model_config.pbtxt
{{- else if .Values.model.configMap }}
- --model_config_file=/etc/aserve/models/model_config.pbtxt
{{- end }}
{{- if or .Values.model.config .Values.model.configMap }}
- --model_config_file_poll_wait_seconds={{ .Values.model.configPollSeconds }}
{{- end }}
{{- if .Values.batching.enabled }}
- --enable_batching
- --batching_parameters_file=/etc/aserve/config/batching_parameters.pbtxt
{{- end }}
{{- if .Values.auth.tokensSecret }}
- --auth_token_file=/etc/aserve/tokens/{{ .Values.auth.secretKey }}
{{- end }}
{{- if .Values.auth.adminTokensSecret }}
- --admin_token_file=/etc/aserve/admin-tokens/{{ .Values.auth.secretKey }}
{{- end }}
{{- if .Values.auth.metrics }}
- --auth_metrics
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}
