{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "data-processor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; component names are appended to it. */}}
{{- define "data-processor.fullname" -}}
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

{{- define "data-processor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of everything the chart creates. */}}
{{- define "data-processor.labels" -}}
helm.sh/chart: {{ include "data-processor.chart" . }}
app.kubernetes.io/name: {{ include "data-processor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: data-processor
{{- end }}

{{/* Selector labels of one component. Call with (dict "root" $ "component" "flusher"). */}}
{{- define "data-processor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "data-processor.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component. Call with (dict "root" $ "component" "flusher"). */}}
{{- define "data-processor.componentLabels" -}}
{{ include "data-processor.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "data-processor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "data-processor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "data-processor.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the ClusterIP Service workers reach the scheduler through. */}}
{{- define "data-processor.schedulerService" -}}
{{- printf "%s-scheduler" (include "data-processor.fullname" .) }}
{{- end }}

{{/* Name of the Secret holding S3 credentials ("" when pods use none, e.g. IRSA). */}}
{{- define "data-processor.s3SecretName" -}}
{{- if eq .Values.storage.type "s3" }}
{{- if .Values.storage.s3.existingSecret }}
{{- .Values.storage.s3.existingSecret }}
{{- else if .Values.storage.s3.credentials.accessKeyId }}
{{- printf "%s-s3" (include "data-processor.fullname" .) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "data-processor.storageClaimName" -}}
{{- default (printf "%s-storage" (include "data-processor.fullname" .)) .Values.storage.shared.existingClaim }}
{{- end }}

{{/*
The config file every pod mounts: the values' `config` sections, overlaid with the keys
the chart owns (ports, listen host, storage, catalog path, scheduler endpoint), so the
ports in the file, the Services and the probes cannot disagree.
*/}}
{{- define "data-processor.config" -}}
{{- $v := .Values }}
{{- $server := dict "host" "0.0.0.0" }}
{{- range $c := list "scheduler" "replayer" "flusher" "compactor" }}
{{- $ports := (index $v $c).ports }}
{{- $_ := set $server $c (dict "grpc_port" $ports.grpc "http_port" $ports.http) }}
{{- end }}
{{- $storage := dict }}
{{- if eq $v.storage.type "s3" }}
{{- $url := printf "s3://%s" $v.storage.s3.bucket }}
{{- if $v.storage.s3.prefix }}{{ $url = printf "%s/%s" $url (trimAll "/" $v.storage.s3.prefix) }}{{ end }}
{{- $storage = dict "url" $url "s3" (dict "endpoint" $v.storage.s3.endpoint "region" $v.storage.s3.region "allow_http" $v.storage.s3.allowHttp) }}
{{- else }}
{{- $storage = dict "url" "file:///var/lib/data-processor/storage" }}
{{- end }}
{{- if $v.tls.enabled }}
{{- $tls := dict
  "cert" "/etc/data-processor/tls/tls.crt"
  "key" "/etc/data-processor/tls/tls.key"
  "ca" "/etc/data-processor/tls/ca.crt"
  "server_name" $v.tls.serviceName
  "worker_names" (list $v.tls.serviceName)
}}
{{- if $v.tls.mutual }}{{ $_ := set $tls "client_ca" "/etc/data-processor/tls/ca.crt" }}{{ end }}
{{- $_ := set $server "tls" $tls }}
{{- end }}
{{- $owned := dict
  "server" $server
  "storage" $storage
  "catalog" (dict "path" "/var/lib/data-processor/catalog")
  "scheduler" (dict "endpoint" (printf "http://%s:%v" (include "data-processor.schedulerService" .) $v.scheduler.ports.grpc))
}}
{{- if $v.adminTokens.existingSecret }}
{{- $_ := set $owned "admin" (dict "tokens_file" (printf "/etc/data-processor/admin/%s" $v.adminTokens.key)) }}
{{- end }}
{{- toYaml (mustMergeOverwrite (deepCopy $v.config) $owned) }}
{{- end }}

{{/*
Container env shared by every service: the pod IP (for advertised addresses) and, with S3,
the credentials from the Secret. Call with (dict "root" $ "component" "flusher").
*/}}
{{- define "data-processor.env" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- $secret := include "data-processor.s3SecretName" .root }}
{{- if $secret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .root.Values.storage.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .root.Values.storage.s3.secretAccessKeyKey }}
{{- end }}
{{- end }}

{{/* The Secret with the services' certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "data-processor.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "data-processor.fullname" .)) .Values.tls.secretName }}
{{- end }}

{{/*
Probes of one component: native gRPC Health on its gRPC port; with TLS on, the kubelet's
gRPC probe cannot speak TLS, so the HTTP port's /health and /ready answer instead.
*/}}
{{- define "data-processor.probes" -}}
{{- $p := .root.Values.probes -}}
{{- if .root.Values.tls.enabled }}
livenessProbe:
  httpGet:
    path: /health
    port: http
  initialDelaySeconds: {{ $p.liveness.initialDelaySeconds }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /ready
    port: http
  initialDelaySeconds: {{ $p.readiness.initialDelaySeconds }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- else }}
livenessProbe:
  grpc:
    port: {{ .port }}
  initialDelaySeconds: {{ $p.liveness.initialDelaySeconds }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  grpc:
    port: {{ .port }}
    service: {{ .service }}
  initialDelaySeconds: {{ $p.readiness.initialDelaySeconds }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end }}
{{- end }}

{{/* Pod-level fields every component shares. Call with (dict "root" $ "values" .Values.flusher). */}}
{{- define "data-processor.podCommon" -}}
serviceAccountName: {{ include "data-processor.serviceAccountName" .root }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .values.terminationGracePeriodSeconds }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Volumes every component shares: config, /tmp, and the shared storage claim. */}}
{{- define "data-processor.volumes" -}}
- name: config
  configMap:
    name: {{ include "data-processor.fullname" . }}-config
- name: tmp
  emptyDir: {}
{{- if eq .Values.storage.type "shared" }}
- name: storage
  persistentVolumeClaim:
    claimName: {{ include "data-processor.storageClaimName" . }}
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "data-processor.tlsSecretName" . }}
{{- end }}
{{- if .Values.adminTokens.existingSecret }}
- name: admin-tokens
  secret:
    secretName: {{ .Values.adminTokens.existingSecret }}
{{- end }}
{{- end }}

{{- define "data-processor.volumeMounts" -}}
- name: config
  mountPath: /etc/data-processor
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if eq .Values.storage.type "shared" }}
- name: storage
  mountPath: /var/lib/data-processor/storage
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/data-processor/tls
  readOnly: true
{{- end }}
{{- if .Values.adminTokens.existingSecret }}
- name: admin-tokens
  mountPath: /etc/data-processor/admin
  readOnly: true
{{- end }}
{{- end }}
