{{/* Names and labels, as `helm create` makes them. */}}
{{- define "rle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rle.fullname" -}}
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

{{- define "rle.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rle.labels" -}}
helm.sh/chart: {{ include "rle.chart" . }}
{{ include "rle.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: exporter
app.kubernetes.io/part-of: region-latency-exporter
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rle.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rle.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: repository@digest when a digest is given, else repository:tag (tag defaults to appVersion). */}}
{{- define "rle.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The port the exporter listens on inside the pod (the image's EXPOSE and HEALTHCHECK). */}}
{{- define "rle.containerPort" -}}9720{{- end }}

{{/* Where the image and the chart put the config file. */}}
{{- define "rle.configDir" -}}/etc/region-latency-exporter{{- end }}

{{/* The exporter's configuration: values.config plus `listen` and `cache` from the chart's own settings. */}}
{{- define "rle.config" -}}
{{- $cache := dict "type" .Values.cache.type }}
{{- if eq .Values.cache.type "file" }}
{{- $_ := set $cache "path" (printf "%s/region-latency-exporter/latencies.json" (trimSuffix "/" .Values.cache.file.mountPath)) }}
{{- else if eq .Values.cache.type "redis" }}
{{- $_ := set $cache "key_prefix" .Values.cache.redis.keyPrefix }}
{{- with .Values.cache.redis.url }}
{{- $_ := set $cache "url" . }}
{{- end }}
{{- end }}
{{- $config := merge (dict "listen" (printf ":%s" (include "rle.containerPort" .)) "cache" $cache) (deepCopy .Values.config) }}
{{- toYaml $config }}
{{- end }}

{{/* Rule files of the repository's prometheus/ (through the files/prometheus symlink): every YAML file with a
top-level `groups` list, in path order. promtool unit tests and scrape configs have none and are left out. */}}
{{- define "rle.ruleGroups" -}}
{{- $groups := list }}
{{- range $path, $_ := .Files.Glob "files/prometheus/**.{yml,yaml}" }}
{{- $document := fromYaml ($.Files.Get $path) }}
{{- if and (kindIs "map" $document) (hasKey $document "groups") (not (hasKey $document "Error")) }}
{{- $groups = concat $groups $document.groups }}
{{- end }}
{{- end }}
{{- toYaml (dict "groups" $groups) }}
{{- end }}

{{/* Checks the schema cannot express; each fails the render with one line. */}}
{{- define "rle.validate" -}}
{{- if and (eq .Values.cache.type "redis") (not .Values.cache.redis.url) (not .Values.cache.redis.existingSecret) }}
{{- fail "cache.type is redis: set cache.redis.url or cache.redis.existingSecret" }}
{{- end }}
{{- if and (eq .Values.cache.type "file") .Values.cache.file.persistence.enabled (gt (int .Values.replicaCount) 1) (has "ReadWriteOnce" .Values.cache.file.persistence.accessModes) }}
{{- fail "replicaCount > 1 cannot share a ReadWriteOnce cache volume: use cache.type redis (one ranking for all replicas), or an emptyDir cache" }}
{{- end }}
{{- end }}
