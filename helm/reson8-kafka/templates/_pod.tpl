{{/* Pod securityContext, container securityContext: shared by every pod of the chart. */}}
{{- define "reson8-kafka.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/* The worker's pod template (Deployment and StatefulSet). */}}
{{- define "reson8-kafka.podTemplate" -}}
metadata:
  labels:
    {{- include "reson8-kafka.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # Roll the pods when their settings change.
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "reson8-kafka.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  # SIGTERM starts the drain (flush, wait for finals, commit) bounded by
  # config.drainTimeoutSeconds; this leaves that plus a margin before SIGKILL.
  terminationGracePeriodSeconds: {{ include "reson8-kafka.terminationGracePeriodSeconds" . }}
  {{- include "reson8-kafka.podSecurity" . | nindent 2 }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  containers:
    - name: worker
      image: {{ include "reson8-kafka.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: [worker]
      # Faust keeps its data folder under the working directory (.cache/faust/<app id>).
      workingDir: /var/lib/reson8-kafka
      ports:
        - name: {{ include "reson8-kafka.webPortName" . }}
          containerPort: {{ include "reson8-kafka.webPort" . }}
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "reson8-kafka.fullname" . }}
      env:
        - name: RESON8_API_KEY
          valueFrom:
            secretKeyRef:
              {{- include "reson8-kafka.apiKeyRef" . | nindent 14 }}
        {{- if include "reson8-kafka.sasl" . }}
        - name: KAFKA_SASL_PASSWORD
          valueFrom:
            secretKeyRef:
              {{- include "reson8-kafka.saslPasswordRef" (dict "ctx" .) | nindent 14 }}
        {{- end }}
        {{- if .Values.staticMembership.enabled }}
        # Static membership: the (stable) pod name is the group.instance.id.
        - name: RESON8_KAFKA_GROUP_INSTANCE_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      startupProbe:
        httpGet:
          path: /healthz
          port: {{ include "reson8-kafka.webPortName" . }}
        periodSeconds: {{ .Values.probes.startup.periodSeconds }}
        failureThreshold: {{ .Values.probes.startup.failureThreshold }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: {{ include "reson8-kafka.webPortName" . }}
        periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
        timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
        failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
      readinessProbe:
        httpGet:
          path: /ready
          port: {{ include "reson8-kafka.webPortName" . }}
        periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
        timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
        failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: data
          mountPath: /var/lib/reson8-kafka
        {{- if .Values.kafka.tls.enabled }}
        {{- include "reson8-kafka.tlsMount" . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 256Mi
    {{- if not (and (eq .Values.workload.kind "StatefulSet") .Values.workload.persistence.enabled) }}
    - name: data
      emptyDir:
        sizeLimit: {{ .Values.workload.dataSizeLimit }}
    {{- end }}
    {{- if .Values.kafka.tls.enabled }}
    {{- include "reson8-kafka.tlsVolume" . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
