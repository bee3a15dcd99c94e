{{/* Names and labels shared by the templates. */}}

{{- define "paddock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "paddock.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "paddock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "paddock.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "paddock.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "paddock.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "paddock.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "paddock.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "paddock.mongodbSecret" -}}
{{- if .Values.mongodb.uri -}}
{{- printf "%s-mongodb" (include "paddock.fullname" .) -}}
{{- else -}}
{{- default (printf "%s-mongodb" (include "paddock.fullname" .)) .Values.mongodb.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "paddock.keysSecret" -}}
{{- default (printf "%s-keys" (include "paddock.fullname" .)) .Values.keys.existingSecret -}}
{{- end -}}

{{- define "paddock.sandboxNamespace" -}}
{{- required "sandboxNamespace.name is required" .Values.sandboxNamespace.name -}}
{{- end -}}
