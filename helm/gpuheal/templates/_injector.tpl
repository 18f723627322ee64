{{- /* The injector's token Secret: the user's, or the chart's own. */}}
{{- define "gpuheal.injector.tokenSecret" -}}
{{- default (printf "%s-injector-token" (include "gpuheal.fullname" .)) .Values.injector.token.existingSecret }}
{{- end }}

{{- /* Where the token is mounted in the injector's pods, and the flag that reads it. */}}
{{- define "gpuheal.injector.tokenDir" -}}
/etc/gpuheal/injector
{{- end }}

{{- /* The token volume of an injector pod. No subPath: the kubelet then updates the file when the
       Secret changes, and both servers read it again on their next request. That is why the pods
       carry no checksum of the token: a rotation needs no restart, and under `helm template` (GitOps),
       where the chart's generated token is new at every render, a checksum would restart every agent
       at every sync. */}}
{{- define "gpuheal.injector.tokenVolume" -}}
- name: token
  secret:
    secretName: {{ include "gpuheal.injector.tokenSecret" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.injector.token.key }}
        path: token
{{- end }}

{{- /* Where an injector server listens: every address of its pod, IPv4 and IPv6 (each family the
       pod's kernel has), so single-stack IPv4, single-stack IPv6 and dual-stack pods are all served:
       at the pod IP the API and the kubelet's probes call, and on loopback, where `kubectl
       port-forward` connects. A pod IP from the downward API would miss port-forward, and a single
       [::] socket is IPv6-only in asyncio, missing IPv4 pods. */}}
{{- define "gpuheal.injector.listen" -}}
{{ printf "*:%d" (int .) | quote }}
{{- end }}

{{- /* How the kubelet tells an injector server is up: /health, which needs no token. */}}
{{- define "gpuheal.injector.probes" -}}
readinessProbe:
  httpGet:
    path: /health
    port: http
livenessProbe:
  httpGet:
    path: /health
    port: http
  # Restart only a server that stops answering for a while, not one busy for a moment.
  periodSeconds: 20
  failureThreshold: 3
{{- end }}

{{- define "gpuheal.injector.tokenMount" -}}
- name: token
  mountPath: {{ include "gpuheal.injector.tokenDir" . }}
  readOnly: true
{{- end }}
