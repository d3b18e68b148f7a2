{{/* The name every object of this release starts with. */}}
{{- define "stratus.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object of this release. */}}
{{- define "stratus.labels" -}}
app.kubernetes.io/name: stratus
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The operator's pods. */}}
{{- define "stratus.operatorSelector" -}}
app.kubernetes.io/name: stratus
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The proxy's pods. */}}
{{- define "stratus.proxySelector" -}}
app.kubernetes.io/name: stratus
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
{{- end -}}

{{/* Where clients connect, as each DatabaseService's status shows it. */}}
{{- define "stratus.proxyHost" -}}
{{- .Values.proxy.host | default (printf "%s-proxy.%s.svc" (include "stratus.fullname" .) .Release.Namespace) -}}
{{- end -}}
