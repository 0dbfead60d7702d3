{{/* Name of the chart, or nameOverride. */}}
{{- define "reson8-kafka.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart (or fullnameOverride), at most 63 characters. */}}
{{- define "reson8-kafka.fullname" -}}
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

{{- define "reson8-kafka.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource, without a component (hooks add their own). */}}
{{- define "reson8-kafka.commonLabels" -}}
helm.sh/chart: {{ include "reson8-kafka.chart" . }}
app.kubernetes.io/name: {{ include "reson8-kafka.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: reson8-kafka
{{- end -}}

{{/* Labels of the worker's resources. */}}
{{- define "reson8-kafka.labels" -}}
{{ include "reson8-kafka.commonLabels" . }}
app.kubernetes.io/component: worker
{{- end -}}

{{/* Labels that select the worker pods (immutable: never add to them). */}}
{{- define "reson8-kafka.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reson8-kafka.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "reson8-kafka.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "reson8-kafka.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "reson8-kafka.image" -}}
{{- $repo := .Values.image.repository -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The worker's web port: /healthz, /ready and /metrics. The container port named
http and RESON8_KAFKA_WEB_PORT both come from here, so the probes, the Service and the
ServiceMonitor reach what the worker listens on. */}}
{{- define "reson8-kafka.webPort" -}}6066{{- end -}}
{{- define "reson8-kafka.webPortName" -}}http{{- end -}}

{{/* Full name of the input topic, whose lag KEDA watches. */}}
{{- define "reson8-kafka.audioTopic" -}}
{{- printf "%sstt.audio" .Values.kafka.topicPrefix -}}
{{- end -}}

{{/* true when the Kafka protocol uses SASL / TLS. */}}
{{- define "reson8-kafka.sasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end -}}
{{- end -}}
{{- define "reson8-kafka.tlsProtocol" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end -}}
{{- end -}}

{{/* The Secret made by the chart, when it holds anything. */}}
{{- define "reson8-kafka.secretName" -}}
{{- include "reson8-kafka.fullname" . -}}
{{- end -}}
{{- define "reson8-kafka.chartSecret" -}}
{{- if or .Values.reson8.apiKey (and (include "reson8-kafka.sasl" .) (not .Values.kafka.sasl.existingSecret)) }}true{{ end -}}
{{- end -}}

{{/* Where the API key comes from: (dict "name" ... "key" ...). */}}
{{- define "reson8-kafka.apiKeyRef" -}}
{{- if .Values.reson8.apiKey -}}
name: {{ include "reson8-kafka.secretName" . }}
key: api-key
{{- else -}}
name: {{ required "set reson8.existingSecret (a Secret with the API key) or reson8.apiKey" .Values.reson8.existingSecret }}
key: {{ .Values.reson8.existingSecretKey }}
{{- end -}}
{{- end -}}

{{/* Where the SASL password comes from; secretName overrides the chart Secret's name. */}}
{{- define "reson8-kafka.saslPasswordRef" -}}
{{- $ctx := .ctx -}}
{{- if $ctx.Values.kafka.sasl.existingSecret -}}
name: {{ $ctx.Values.kafka.sasl.existingSecret }}
key: {{ $ctx.Values.kafka.sasl.existingSecretKey }}
{{- else -}}
name: {{ .secretName | default (include "reson8-kafka.secretName" $ctx) }}
key: kafka-sasl-password
{{- end -}}
{{- end -}}

{{/* Seconds between SIGTERM and SIGKILL: explicit, or drain timeout + margin. */}}
{{- define "reson8-kafka.terminationGracePeriodSeconds" -}}
{{- $drain := .Values.config.drainTimeoutSeconds | float64 | ceil | int -}}
{{- $grace := .Values.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $grace -}}
{{- $grace = add $drain .Values.terminationGraceMarginSeconds -}}
{{- end -}}
{{- if lt (float64 $grace) (addf .Values.config.drainTimeoutSeconds 10) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be at least config.drainTimeoutSeconds (%v) + 10: Kubernetes would kill the worker before it has drained" $grace .Values.config.drainTimeoutSeconds) -}}
{{- end -}}
{{- $grace | int -}}
{{- end -}}

{{/* Fails on value combinations the schema cannot express. */}}
{{- define "reson8-kafka.validate" -}}
{{- $v := .Values -}}
{{- $partitions := int $v.kafka.partitions -}}
{{- if and $v.autoscaling.keda.enabled $v.autoscaling.hpa.enabled -}}
{{- fail "autoscaling.keda.enabled and autoscaling.hpa.enabled are exclusive: two autoscalers would fight over the replicas" -}}
{{- end -}}
{{- if gt (int $v.workload.replicas) $partitions -}}
{{- fail (printf "workload.replicas (%v) exceeds kafka.partitions (%v): the extra consumers would get no partition" $v.workload.replicas $partitions) -}}
{{- end -}}
{{- if and $v.autoscaling.keda.enabled (gt (int $v.autoscaling.keda.maxReplicaCount) $partitions) -}}
{{- fail (printf "autoscaling.keda.maxReplicaCount (%v) exceeds kafka.partitions (%v): replicas beyond the partition count stay idle" $v.autoscaling.keda.maxReplicaCount $partitions) -}}
{{- end -}}
{{- if and $v.autoscaling.hpa.enabled (gt (int $v.autoscaling.hpa.maxReplicas) $partitions) -}}
{{- fail (printf "autoscaling.hpa.maxReplicas (%v) exceeds kafka.partitions (%v): replicas beyond the partition count stay idle" $v.autoscaling.hpa.maxReplicas $partitions) -}}
{{- end -}}
{{- if and $v.autoscaling.keda.enabled (gt (int $v.autoscaling.keda.minReplicaCount) (int $v.autoscaling.keda.maxReplicaCount)) -}}
{{- fail "autoscaling.keda.minReplicaCount exceeds maxReplicaCount" -}}
{{- end -}}
{{- if and $v.autoscaling.hpa.enabled (gt (int $v.autoscaling.hpa.minReplicas) (int $v.autoscaling.hpa.maxReplicas)) -}}
{{- fail "autoscaling.hpa.minReplicas exceeds maxReplicas" -}}
{{- end -}}
{{- if gt (mulf $v.config.heartbeatIntervalSeconds 3.0) (float64 (include "reson8-kafka.sessionTimeout" .)) -}}
{{- fail (printf "config.heartbeatIntervalSeconds (%v) must be at most a third of the session timeout (%v)" $v.config.heartbeatIntervalSeconds (include "reson8-kafka.sessionTimeout" .)) -}}
{{- end -}}
{{- if and $v.staticMembership.enabled (ne $v.workload.kind "StatefulSet") -}}
{{- fail "staticMembership.enabled needs workload.kind=StatefulSet: a Deployment's pods get new names on every rollout, and each departed static member keeps its partitions until the session timeout" -}}
{{- end -}}
{{- if and (include "reson8-kafka.sasl" .) (not $v.kafka.sasl.username) -}}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.username" $v.kafka.securityProtocol) -}}
{{- end -}}
{{- if and (include "reson8-kafka.sasl" .) (not $v.kafka.sasl.existingSecret) (not $v.kafka.sasl.password) -}}
{{- fail "SASL needs a password: set kafka.sasl.existingSecret (recommended) or kafka.sasl.password" -}}
{{- end -}}
{{- if and $v.kafka.tls.enabled (not (include "reson8-kafka.tlsProtocol" .)) -}}
{{- fail "kafka.tls.enabled needs kafka.securityProtocol SSL or SASL_SSL" -}}
{{- end -}}
{{- if and $v.kafka.tls.enabled (not $v.kafka.tls.existingSecret) -}}
{{- fail "kafka.tls.enabled needs kafka.tls.existingSecret (a Secret with the CA and client files)" -}}
{{- end -}}
{{- if ne (empty $v.kafka.tls.certKey) (empty $v.kafka.tls.keyKey) -}}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together (mutual TLS)" -}}
{{- end -}}
{{- if and $v.kafka.tls.enabled (not $v.kafka.tls.caKey) (not $v.kafka.tls.certKey) -}}
{{- fail "kafka.tls.enabled needs kafka.tls.caKey and/or kafka.tls.certKey+keyKey" -}}
{{- end -}}
{{- $_ := include "reson8-kafka.terminationGracePeriodSeconds" . -}}
{{- end -}}

{{/* Folder of the Kafka TLS files inside the containers. */}}
{{- define "reson8-kafka.tlsDir" -}}/etc/reson8-kafka/kafka-tls{{- end -}}

{{/* Environment of Kafka clients (worker and topics Job): KAFKA_* variables. */}}
{{- define "reson8-kafka.kafkaEnv" -}}
KAFKA_BOOTSTRAP_SERVERS: {{ .Values.kafka.bootstrapServers | quote }}
KAFKA_SECURITY_PROTOCOL: {{ .Values.kafka.securityProtocol | quote }}
{{- if include "reson8-kafka.sasl" . }}
KAFKA_SASL_MECHANISM: {{ .Values.kafka.sasl.mechanism | quote }}
KAFKA_SASL_USERNAME: {{ .Values.kafka.sasl.username | quote }}
{{- end }}
{{- if .Values.kafka.tls.enabled }}
{{- if .Values.kafka.tls.caKey }}
KAFKA_SSL_CAFILE: {{ printf "%s/ca.pem" (include "reson8-kafka.tlsDir" .) | quote }}
{{- end }}
{{- if .Values.kafka.tls.certKey }}
KAFKA_SSL_CERTFILE: {{ printf "%s/cert.pem" (include "reson8-kafka.tlsDir" .) | quote }}
KAFKA_SSL_KEYFILE: {{ printf "%s/key.pem" (include "reson8-kafka.tlsDir" .) | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The TLS volume (a Secret projected to fixed file names, read-only, 0400). */}}
{{- define "reson8-kafka.tlsVolume" -}}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret }}
    defaultMode: 0440
    items:
      {{- if .Values.kafka.tls.caKey }}
      - key: {{ .Values.kafka.tls.caKey }}
        path: ca.pem
      {{- end }}
      {{- if .Values.kafka.tls.certKey }}
      - key: {{ .Values.kafka.tls.certKey }}
        path: cert.pem
      - key: {{ .Values.kafka.tls.keyKey }}
        path: key.pem
      {{- end }}
{{- end -}}
{{- define "reson8-kafka.tlsMount" -}}
- name: kafka-tls
  mountPath: {{ include "reson8-kafka.tlsDir" . }}
  readOnly: true
{{- end -}}

{{/* The labels: of one alert: its severity, plus monitoring.prometheusRule.alertLabels. */}}
{{- define "reson8-kafka.alertLabels" -}}
labels:
  {{- toYaml (merge (dict "severity" .alert.severity) .rule.alertLabels) | nindent 2 }}
{{- end -}}

{{/*
Kafka session timeout: staticMembership.sessionTimeoutSeconds with static
membership (a restart must fit in it), else config.sessionTimeoutSeconds.
*/}}
{{- define "reson8-kafka.sessionTimeout" -}}
{{- if .Values.staticMembership.enabled -}}
{{- .Values.staticMembership.sessionTimeoutSeconds -}}
{{- else -}}
{{- .Values.config.sessionTimeoutSeconds -}}
{{- end -}}
{{- end -}}
