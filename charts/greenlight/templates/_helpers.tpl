{{/* Names and labels shared by every template. */}}

{{- define "greenlight.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* At most 51 characters, so "-webhook-tls" and "-identity" still fit in 63. */}}
{{- define "greenlight.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 51 | trimSuffix "-" -}}
{{- else if contains (include "greenlight.name" .) .Release.Name -}}
{{- .Release.Name | trunc 51 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "greenlight.name" .) | trunc 51 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "greenlight.selectorLabels" -}}
app.kubernetes.io/name: {{ include "greenlight.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "greenlight.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "greenlight.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: greenlight
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "greenlight.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "greenlight.fullname" .) .Values.serviceAccount.name -}}
{{- else if .Values.serviceAccount.name -}}
{{- .Values.serviceAccount.name -}}
{{- else -}}
{{- fail "serviceAccount.create=false needs serviceAccount.name: the operator's rights must not go to the namespace's default ServiceAccount" -}}
{{- end -}}
{{- end -}}

{{- define "greenlight.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "greenlight.webhookService" -}}
{{- printf "%s-webhook" (include "greenlight.fullname" .) -}}
{{- end -}}

{{- define "greenlight.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "greenlight.fullname" .) -}}
{{- end -}}

{{- define "greenlight.identitySecret" -}}
{{- default (printf "%s-identity" (include "greenlight.fullname" .)) .Values.identity.existingSecret -}}
{{- end -}}

{{/* The documents of a YAML file shipped in files/, parsed, as a list under "docs". */}}
{{- define "greenlight.documents" -}}
{{- $docs := list -}}
{{- range regexSplit "(?m)^---[ \\t]*$" (.Files.Get .path) -1 -}}
{{- $doc := fromYaml . -}}
{{- if $doc.kind -}}{{- $docs = append $docs $doc -}}{{- end -}}
{{- end -}}
{{- toYaml (dict "docs" $docs) -}}
{{- end -}}
