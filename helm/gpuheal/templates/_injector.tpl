{{- /* The injector's token Secret: the user's, or the chart's own. */}}
{{- define "gpuheal.injector.tokenSecret" -}}
{{- default (printf "%s-injector-token" (include "gpuheal.fullname" .)) .Values.injector.token.existingSecret }}
{{- end }}

{{- /* Where the token is mounted in the injector's pods, and the flag that reads it. */}}
{{- define "gpuheal.injector.tokenDir" -}}
/etc/gpuheal/injector
{{- end }}

{{- /* The token volume of an injector pod. */}}
{{- define "gpuheal.injector.tokenVolume" -}}
- name: token
  secret:
    secretName: {{ include "gpuheal.injector.tokenSecret" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.injector.token.key }}
        path: token
{{- end }}

{{- define "gpuheal.injector.tokenMount" -}}
- name: token
  mountPath: {{ include "gpuheal.injector.tokenDir" . }}
  readOnly: true
{{- end }}
