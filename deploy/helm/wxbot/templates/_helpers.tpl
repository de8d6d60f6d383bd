{{/*
The service catalog: what the chart knows about each wxbot service that values cannot change
(its Python module, the variable naming its HTTP port, its extra ports and labels). `delivery` is
the gateway's image as a component of its own (GATEWAY_ROLE=delivery): it sends the replies, so
the gateway pods only answer callbacks.
*/}}
{{- define "wxbot.catalog" -}}
gateway: {portEnv: GATEWAY_PORT, public: true}
delivery: {portEnv: GATEWAY_PORT, image: gateway}
safety: {portEnv: SAFETY_HTTP_PORT}
nlp: {portEnv: NLP_HTTP_PORT}
context: {portEnv: CONTEXT_HTTP_PORT, grpc: true}
skills: {portEnv: SKILLS_HTTP_PORT, role: skill}
analytics: {portEnv: ANALYTICS_PORT}
console: {portEnv: CONSOLE_PORT}
{{- end }}

{{/* The services in start order; each is a top-level key of values. */}}
{{- define "wxbot.serviceNames" -}}
{{- list "gateway" "delivery" "safety" "nlp" "context" "skills" "analytics" "console" | toJson -}}
{{- end }}

{{- define "wxbot.fullname" -}}
{{- if contains "wxbot" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-wxbot" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{/* A component's object name: <fullname>-<component>. Call with (list $ "gateway"). */}}
{{- define "wxbot.name" -}}
{{- printf "%s-%s" (include "wxbot.fullname" (index . 0)) (index . 1) -}}
{{- end }}

{{- define "wxbot.labels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/part-of: wxbot
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version }}
{{- end }}

{{- define "wxbot.selector" -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
{{- end }}

{{- define "wxbot.image" -}}
{{- $root := index . 0 -}}
{{- printf "%s/%s:%s" $root.Values.image.registry (index . 1) ($root.Values.image.tag | default $root.Chart.AppVersion) -}}
{{- end }}

{{- define "wxbot.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "wxbot.name" (list . "secrets")) -}}
{{- end }}

{{- define "wxbot.natsUrl" -}}
{{- if .Values.nats.enabled -}}
nats://{{ include "wxbot.name" (list . "nats") }}:4222
{{- else -}}
{{- required "nats.url is required when nats.enabled is false" .Values.nats.url -}}
{{- end -}}
{{- end }}

{{- define "wxbot.redisUrl" -}}
{{- if .Values.redis.enabled -}}
redis://{{ include "wxbot.name" (list . "redis") }}:6379/0
{{- else -}}
{{- required "redis.url is required when redis.enabled is false" .Values.redis.url -}}
{{- end -}}
{{- end }}

{{- define "wxbot.otlpEndpoint" -}}
{{- if .Values.otel.collector.enabled -}}
http://{{ include "wxbot.name" (list . "otel-collector") }}:4317
{{- else -}}
{{- .Values.otel.endpoint -}}
{{- end -}}
{{- end }}

{{/* Whether the Prometheus Operator objects are rendered: "auto" asks the cluster's API list. */}}
{{- define "wxbot.wants" -}}
{{- $setting := index . 1 -}}
{{- if eq (toString $setting) "auto" -}}
{{- if (index . 0).Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- else if $setting -}}true{{- end -}}
{{- end }}

{{/* Pod and container hardening shared by every workload: non-root, read-only root, no privileges. */}}
{{- define "wxbot.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "wxbot.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Egress rules to NATS: the bundled pods, or any address on 4222 when NATS is external. */}}
{{- define "wxbot.egressToNats" -}}
- to:
    {{- if .Values.nats.enabled }}
    - podSelector:
        matchLabels:
          {{- include "wxbot.selector" (list . "nats") | nindent 10 }}
    {{- else }}
    - ipBlock: {cidr: 0.0.0.0/0}
    {{- end }}
  ports:
    - {protocol: TCP, port: 4222}
{{- end }}

{{/* Egress every service needs: NATS, Redis, the trace collector. */}}
{{- define "wxbot.egressToInfrastructure" -}}
{{ include "wxbot.egressToNats" . }}
- to:
    {{- if .Values.redis.enabled }}
    - podSelector:
        matchLabels:
          {{- include "wxbot.selector" (list . "redis") | nindent 10 }}
    {{- else }}
    - ipBlock: {cidr: 0.0.0.0/0}
    {{- end }}
  ports:
    - {protocol: TCP, port: 6379}
- to:
    {{- if .Values.otel.collector.enabled }}
    - podSelector:
        matchLabels:
          {{- include "wxbot.selector" (list . "otel-collector") | nindent 10 }}
    {{- else }}
    - ipBlock: {cidr: 0.0.0.0/0}
    {{- end }}
  ports:
    - {protocol: TCP, port: 4317}
    - {protocol: TCP, port: 4318}
{{- end }}
