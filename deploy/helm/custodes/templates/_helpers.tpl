{{/* The release's base name: the release name, prefixed to the chart's name unless it holds it already. */}}
{{- define "custodes.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "custodes.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The labels that select one role's pods; takes (dict "root" $ "role" "receiver"). */}}
{{- define "custodes.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "custodes.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* custodes.yaml: the secrets as references to the variables "custodes.env" sets, then .Values.config. */}}
{{- define "custodes.config" -}}
{{- $base := dict
  "database" (dict "audit_key" "env:CUSTODES_AUDIT_KEY")
  "server" (dict "api_tokens" (list (dict "name" "soc-admin" "token" "env:CUSTODES_ADMIN_TOKEN" "role" "admin")))
  "scoring" (dict "pseudonym_key" "env:CUSTODES_PSEUDONYM_KEY")
  "cluster" (dict "amqp_url" "env:CUSTODES_AMQP_URL") -}}
{{- toYaml (mustMergeOverwrite $base (deepCopy .Values.config)) -}}
{{- end -}}

{{/* One environment variable read from the chart's Secret; takes (list $ "NAME" "valuesKey"). */}}
{{- define "custodes.secretEnv" -}}
{{- $root := index . 0 -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.secret.name | quote }}
      key: {{ index $root.Values.secret.keys (index . 2) | quote }}
{{- end -}}

{{/* What opening the store needs (the migration Job has nothing more). */}}
{{- define "custodes.storeEnv" -}}
{{ include "custodes.secretEnv" (list . "CUSTODES_DATABASE_URL" "databaseUrl") }}
{{- with .Values.database.schemaName }}
- name: CUSTODES_DATABASE__SCHEMA_NAME
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The environment of every serving container: secrets from the Secret, settings as CUSTODES_* overrides. */}}
{{- define "custodes.env" -}}
{{ include "custodes.storeEnv" . }}
{{ include "custodes.secretEnv" (list . "CUSTODES_AMQP_URL" "amqpUrl") }}
{{ include "custodes.secretEnv" (list . "CUSTODES_AUDIT_KEY" "auditKey") }}
{{ include "custodes.secretEnv" (list . "CUSTODES_PSEUDONYM_KEY" "pseudonymKey") }}
{{ include "custodes.secretEnv" (list . "CUSTODES_ADMIN_TOKEN" "adminToken") }}
- name: CUSTODES_SERVER__HOST
  value: "0.0.0.0"
- name: CUSTODES_SERVER__PORT
  value: {{ .Values.receiver.port | quote }}
- name: CUSTODES_CLUSTER__PARTITIONS
  value: {{ .Values.cluster.partitions | quote }}
- name: CUSTODES_CLUSTER__EXCHANGE
  value: {{ .Values.cluster.exchange | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The pod-level settings every Custodes pod shares. */}}
{{- define "custodes.podSettings" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Writable folders on a read-only root: the working folder (var/) and /tmp. */}}
{{- define "custodes.workVolumes" -}}
- name: work
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "custodes.workMounts" -}}
- name: work
  mountPath: /var/lib/custodes
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}
