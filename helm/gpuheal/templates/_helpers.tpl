{{/* Chart name. */}}
{{- define "gpuheal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name, the prefix of every resource's name. Kept short enough that it and
     the longest suffix the chart appends ("-agent-own-node-events", 22 characters) fit a DNS label's
     63: a Job's name is its pods' job-name label, a Service's a DNS-1035 label. A longer name is cut
     and ends in a hash of the whole, so two long names sharing a beginning still differ. */}}
{{- define "gpuheal.fullname" -}}
{{- $full := "" }}
{{- if .Values.fullnameOverride }}
{{- $full = .Values.fullnameOverride }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- $full = ternary .Release.Name (printf "%s-%s" .Release.Name $name) (contains $name .Release.Name) }}
{{- end }}
{{- $full = trimSuffix "-" $full }}
{{- if gt (len $full) 41 }}
{{- printf "%s-%s" ($full | trunc 34 | trimSuffix "-") ($full | sha256sum | trunc 6) }}
{{- else }}
{{- $full }}
{{- end }}
{{- end }}

{{- define "gpuheal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "gpuheal.labels" -}}
helm.sh/chart: {{ include "gpuheal.chart" . }}
app.kubernetes.io/name: {{ include "gpuheal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gpuheal
{{- end }}

{{/* Selector labels; call with (dict "ctx" $ "component" "worker"). */}}
{{- define "gpuheal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpuheal.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- /* The log format of every `gpuheal` process (`gpuheal --log-format`). */}}
{{- define "gpuheal.logFormat.env" -}}
- name: GPUHEAL_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- end }}

{{- define "gpuheal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "gpuheal.worker.serviceAccountName" -}}
{{- if .Values.worker.serviceAccount.create }}
{{- default (printf "%s-worker" (include "gpuheal.fullname" .)) .Values.worker.serviceAccount.name }}
{{- else }}
{{- required "worker.serviceAccount.name is required when worker.serviceAccount.create is false" .Values.worker.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gpuheal.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (printf "%s-agent" (include "gpuheal.fullname" .)) .Values.agent.serviceAccount.name }}
{{- else }}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create is false" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{- /* The namespace the agent records its node's Events in (as the kubelet does); fixed in the agent. */}}
{{- define "gpuheal.agent.eventsNamespace" -}}
default
{{- end }}

{{- define "gpuheal.temporal.tlsEnabled" -}}
{{- if or .Values.temporal.tls.enabled .Values.temporal.tls.secretName }}true{{ end }}
{{- end }}

{{- /* The TLS files the Secret temporal.tls.secretName provides, as a YAML map of the environment
       variable naming each file to its key: the client certificate and key (both or neither), the
       server CA bundle, or any of those together (a private CA with an API key needs only the CA). */}}
{{- define "gpuheal.temporal.tlsFiles" -}}
{{- $tls := .Values.temporal.tls }}
{{- if ne (empty $tls.certKey) (empty $tls.keyKey) }}
{{- fail "temporal.tls.certKey and temporal.tls.keyKey name the client certificate and its key: set both, or both empty for no client certificate" }}
{{- end }}
{{- if and (empty $tls.certKey) (empty $tls.caKey) }}
{{- fail "temporal.tls.secretName provides no file: set temporal.tls.certKey and keyKey (a client certificate), caKey (a CA bundle), or both" }}
{{- end }}
{{- with $tls.certKey }}
TEMPORAL_TLS_CLIENT_CERT_PATH: {{ . | quote }}
TEMPORAL_TLS_CLIENT_KEY_PATH: {{ $tls.keyKey | quote }}
{{- end }}
{{- with $tls.caKey }}
TEMPORAL_TLS_SERVER_CA_CERT_PATH: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Temporal settings as environment variables (secrets only by reference). */}}
{{- define "gpuheal.temporal.env" -}}
- name: TEMPORAL_ADDRESS
  value: {{ .Values.temporal.address | quote }}
- name: TEMPORAL_NAMESPACE
  value: {{ .Values.temporal.namespace | quote }}
{{- if include "gpuheal.temporal.tlsEnabled" . }}
- name: TEMPORAL_TLS
  value: "true"
{{- with .Values.temporal.tls.serverName }}
- name: TEMPORAL_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if .Values.temporal.tls.secretName }}
{{- range $env, $key := include "gpuheal.temporal.tlsFiles" . | fromYaml }}
- name: {{ $env }}
  value: /etc/gpuheal/temporal-tls/{{ $key }}
{{- end }}
{{- end }}
{{- with .Values.temporal.apiKey.secretName }}
- name: TEMPORAL_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.temporal.apiKey.key | quote }}
{{- end }}
{{- end }}

{{- define "gpuheal.temporal.volumeMounts" -}}
{{- if .Values.temporal.tls.secretName }}
- name: temporal-tls
  mountPath: /etc/gpuheal/temporal-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "gpuheal.temporal.volumes" -}}
{{- with .Values.temporal.tls.secretName }}
# Only the keys named are projected: one missing from the Secret fails the mount with an event naming it.
- name: temporal-tls
  secret:
    secretName: {{ . | quote }}
    defaultMode: 0440
    items:
      {{- range $key := include "gpuheal.temporal.tlsFiles" $ | fromYaml | values | sortAlpha }}
      - key: {{ $key | quote }}
        path: {{ $key | quote }}
      {{- end }}
{{- end }}
{{- end }}

{{- /* The policy file's ConfigMap, mounted read-only where `gpuheal worker|agent --policy` reads it. */}}
{{- define "gpuheal.policy.path" -}}
/etc/gpuheal/policy/policy.yaml
{{- end }}

{{- define "gpuheal.policy.volumeMount" -}}
- name: policy
  mountPath: /etc/gpuheal/policy
  readOnly: true
{{- end }}

{{- define "gpuheal.policy.volume" -}}
- name: policy
  configMap:
    name: {{ include "gpuheal.fullname" . }}-policy
{{- end }}

{{- /* Whether Prometheus scrapes gpuheal (a ServiceMonitor): only then do the metrics listeners bind
       the pod's address; otherwise the worker's stays on loopback. */}}
{{- define "gpuheal.metrics.scraped" -}}
{{- if .Values.metrics.serviceMonitor.enabled }}true{{ end }}
{{- end }}

{{- /* A ServiceAccount for a component that never calls the Kubernetes API: no token, no RBAC.
       Call with (dict "ctx" $ "component" "eventgen"). */}}
{{- define "gpuheal.tokenlessServiceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "gpuheal.fullname" .ctx }}-{{ .component }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "gpuheal.labels" .ctx | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
automountServiceAccountToken: false
{{- end }}
