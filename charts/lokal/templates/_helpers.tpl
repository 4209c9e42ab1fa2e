{{/* The name of every object: the release name, unless it already says lokal twice. */}}
{{- define "lokal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels the selectors use: never change them after an install (a DaemonSet selector is immutable). */}}
{{- define "lokal.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lokal.labels" -}}
{{ include "lokal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "lokal.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "lokal.peerTokenSecret" -}}
{{- default (printf "%s-peer-token" (include "lokal.fullname" .)) .Values.peerToken.secretName -}}
{{- end -}}

{{/* Where the peer token Secret is mounted, and the file LOKAL_PEER_TOKEN_FILE names. */}}
{{- define "lokal.peerTokenDir" -}}/etc/lokal/peer-token{{- end -}}

{{/* The settings ConfigMap's data, as YAML: both containers read it as environment variables. */}}
{{- define "lokal.settings" -}}
{{- $v := .Values -}}
{{- $settings := dict
  "LOKAL_LISTEN" (printf "0.0.0.0:%d" (int $v.port))
  "LOKAL_CONTAINERD_SOCKET" $v.containerd.socket
  "LOKAL_CONTAINERD_NAMESPACE" $v.containerd.namespace
  "LOKAL_CONFIG_PATH" $v.containerd.configPath
  "LOKAL_MIRRORED_REGISTRIES" (join "," $v.registries.mirrored)
  "LOKAL_RESOLVE_TAGS" (toString $v.registries.resolveTags)
  "LOKAL_DISCOVERY" $v.discovery
  "LOKAL_TOPOLOGY_MODE" $v.topology.mode
  "LOKAL_CROSS_REGION" $v.topology.crossRegion
  "LOKAL_LOG_FORMAT" $v.logFormat
-}}
{{- if ne $v.topology.regionLabel "topology.kubernetes.io/region" -}}
{{- $_ := set $settings "LOKAL_REGION_LABEL" $v.topology.regionLabel -}}
{{- end -}}
{{- if ne $v.topology.zoneLabel "topology.kubernetes.io/zone" -}}
{{- $_ := set $settings "LOKAL_ZONE_LABEL" $v.topology.zoneLabel -}}
{{- end -}}
{{- if $v.registries.prependExisting -}}
{{- $_ := set $settings "LOKAL_PREPEND_EXISTING" "true" -}}
{{- end -}}
{{- if $v.registries.upstream -}}
{{- $pairs := list -}}
{{- range $registry, $url := $v.registries.upstream -}}
{{- $pairs = append $pairs (printf "%s=%s" $registry $url) -}}
{{- end -}}
{{- $_ := set $settings "LOKAL_UPSTREAM" (join "," $pairs) -}}
{{- end -}}
{{- if $v.monitoring.enabled -}}
{{- $_ := set $settings "LOKAL_METRICS_LISTEN" (printf "0.0.0.0:%d" (int $v.monitoring.port)) -}}
{{- end -}}
{{- if $v.peerToken.enabled -}}
{{- $_ := set $settings "LOKAL_PEER_TOKEN_FILE" (printf "%s/tokens" (include "lokal.peerTokenDir" .)) -}}
{{- end -}}
{{- range $name, $value := $v.extraSettings -}}
{{- $_ := set $settings $name (toString $value) -}}
{{- end -}}
{{- toYaml $settings -}}
{{- end -}}

{{/* Every container: no privilege, no capability, a read-only root file system. */}}
{{- define "lokal.restricted" -}}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
