{{/* Names, labels and the per-workload facts every template shares. */}}

{{- define "tradeflow.fullname" -}}
{{- if contains "tradeflow" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tradeflow" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tradeflow.labels" -}}
app.kubernetes.io/name: tradeflow
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The workloads of the chosen topology, space separated. */}}
{{- define "tradeflow.active" -}}
{{- if eq .Values.topology "node" -}}
node
{{- else if eq .Values.topology "per-service" -}}
order payment inventory
{{- else -}}
{{- fail (printf "topology must be node or per-service, not %q" .Values.topology) -}}
{{- end -}}
{{- end -}}

{{/* The services a workload runs (tradeflow run --services). */}}
{{- define "tradeflow.services" -}}
{{- if eq . "node" -}}order,payment,inventory{{- else -}}{{ . }}{{- end -}}
{{- end -}}

{{/* Whether a workload serves the Order API: "true" or "". */}}
{{- define "tradeflow.api" -}}
{{- if or (eq . "node") (eq . "order") -}}true{{- end -}}
{{- end -}}

{{/* application.id, as services::deployment::default_application_id makes it:
     also the KafkaUser (and its Secret) of the workload. Args: (list root name). */}}
{{- define "tradeflow.applicationId" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $base := ternary "tradeflow" (printf "tradeflow-%s" $name) (eq $name "node") -}}
{{- if $root.Values.kafka.topicNamespace -}}
{{- printf "%s-%s" $root.Values.kafka.topicNamespace $base -}}
{{- else -}}
{{- $base -}}
{{- end -}}
{{- end -}}

{{- define "tradeflow.bootstrap" -}}
{{- default (printf "%s-kafka-bootstrap:9093" .Values.kafka.cluster) .Values.kafka.bootstrap -}}
{{- end -}}

{{/* One pod's core map as TOML. Args: dict root, workload (values), pod (name), index. */}}
{{- define "tradeflow.coreMap" -}}
{{- $cm := .workload.coreMap -}}
{{- $nodes := $cm.nodes -}}
{{- $node := dict -}}
{{- if lt .index (len $nodes) -}}
{{- $node = index $nodes .index -}}
{{- else if eq $cm.mode "consumer-group" -}}
{{- $node = index $nodes 0 -}}
{{- else -}}
{{- fail (printf "%s: ownership mode core-map needs a coreMap.nodes entry per replica (%d given)" .pod (len $nodes)) -}}
{{- end -}}
# Rendered by the tradeflow chart from values (see tuning/README.md).
[node]
name = {{ .pod | quote }}

[ownership]
mode = {{ $cm.mode | quote }}
partitions = {{ int $cm.partitions }}
{{- range $node.shards }}

[[shard]]
core = {{ int .core }}
{{- if .partitions }}
partitions = [{{ range $i, $p := .partitions }}{{ if $i }}, {{ end }}{{ $p | toString | quote }}{{ end }}]
{{- end }}
{{- end }}

[runtime]
idle = {{ $cm.idle | quote }}
{{- if eq $cm.idle "park" }}
park_us = {{ int $cm.parkUs }}
{{- end }}
{{- if $cm.clientThreads }}
client_threads = { cores = [{{ range $i, $c := $cm.clientThreads }}{{ if $i }}, {{ end }}{{ int $c }}{{ end }}] }
{{- else }}
client_threads = "unpinned"
{{- end }}

[commit]
interval_ms = {{ int $cm.commit.intervalMs }}
on_drain = {{ $cm.commit.onDrain }}
guarantee = {{ $cm.commit.guarantee | quote }}

# One changelog topic for every store (tuning/README.md, "Changelog layout"):
# deploy/strimzi/generated/ creates `<application id>-changelog` and grants it.
[state]
changelog_layout = {{ $cm.changelogLayout | default "shared" | quote }}

# The password comes from the pod's environment (the workload's Secret), never
# from the command line, where /proc/<pid>/cmdline would show it.
[kafka.security]
protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
username = {{ .applicationId | quote }}
password_env = "KAFKA_PASSWORD"
ca_file = "/etc/kafka-ca/ca.crt"
{{- end -}}

{{/* Whole CPUs, requests = limits: Guaranteed QoS the static CPU manager pins. */}}
{{- define "tradeflow.resources" -}}
{{- $cpu := .cpu | toString -}}
{{- if not (regexMatch "^[1-9][0-9]*$" $cpu) -}}
{{- fail (printf "workload cpu must be a whole number of CPUs (requests = limits for the static CPU manager), not %q" $cpu) -}}
{{- end -}}
requests:
  cpu: {{ $cpu | quote }}
  memory: {{ .memory }}
limits:
  cpu: {{ $cpu | quote }}
  memory: {{ .memory }}
{{- end -}}
