{{/* Names and labels. */}}
{{- define "inferstream.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "inferstream.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "inferstream.labels" -}}
{{ include "inferstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* A worker's component name: worker-<model>-<version> (DNS-safe). */}}
{{- define "inferstream.workerName" -}}
{{- printf "worker-%s-%s" .model (toString .version) | lower | replace "." "-" | replace "_" "-" | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret with the Kafka and Elasticsearch credentials. */}}
{{- define "inferstream.settingsSecret" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-settings" (include "inferstream.fullname" .)) -}}
{{- end -}}

{{- define "inferstream.gatewaySecret" -}}
{{- .Values.gateway.existingSecret | default (printf "%s-gateway" (include "inferstream.fullname" .)) -}}
{{- end -}}

{{/* The models volume: the claim, else an emptyDir the build-demo init container fills. */}}
{{- define "inferstream.modelsVolume" -}}
- name: models
{{- if .Values.models.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.models.existingClaim }}
    readOnly: true
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{/* The container that builds the demo models into /models (when no claim holds them). */}}
{{- define "inferstream.buildModels" -}}
- name: build-models
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["models", "build-demo", "--reference", "/models/breast-cancer-reference.parquet"]
  envFrom:
{{ include "inferstream.envFrom" . | indent 4 }}
  volumeMounts:
    - {name: models, mountPath: /models}
    - {name: state, mountPath: /var/lib/inferstream}
{{- end -}}

{{/* The platform topics, created before a process starts (idempotent: existing ones stay as they are). */}}
{{- define "inferstream.createTopics" -}}
- name: topics
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["topics", "create", "--platform"]
  envFrom:
{{ include "inferstream.envFrom" . | indent 4 }}
{{- if .Values.kafka.security.tlsSecret }}
  volumeMounts:
    - {name: kafka-tls, mountPath: /etc/inferstream/kafka-tls, readOnly: true}
{{- end }}
{{- end -}}

{{- define "inferstream.envFrom" -}}
- configMapRef:
    name: {{ include "inferstream.fullname" . }}-settings
- secretRef:
    name: {{ include "inferstream.settingsSecret" . }}
{{- end -}}

{{/*
One process as a Deployment. Takes a dict:
  root, component, args (the CLI command), replicas (left to KEDA when autoscaled), strategy,
  resources, gpu (count), port, probe (path), scrape, extraEnv, initContainers, extraMounts,
  extraVolumes, stateVolume (a volume source, default emptyDir).
*/}}
{{- define "inferstream.deployment" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
{{- $gpu := int (.gpu | default 0) -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "inferstream.fullname" $root }}-{{ .component }}
  labels:
{{ include "inferstream.labels" . | indent 4 }}
spec:
{{- if not .autoscaled }}
  replicas: {{ .replicas }}
{{- end }}
{{- with .strategy }}
  strategy:
    type: {{ . }}
{{- end }}
  selector:
    matchLabels:
{{ include "inferstream.selectorLabels" . | indent 6 }}
  template:
    metadata:
      labels:
{{ include "inferstream.selectorLabels" . | indent 8 }}
      annotations:
        checksum/settings: {{ include (print $root.Template.BasePath "/settings.yaml") $root | sha256sum }}
{{- if and $values.metrics.annotations .scrape }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ .port | quote }}
        prometheus.io/path: /metrics
{{- end }}
    spec:
      securityContext:
{{ toYaml $values.podSecurityContext | indent 8 }}
      initContainers:
{{ include "inferstream.createTopics" $root | indent 8 }}
{{- if not $values.models.existingClaim }}
{{ include "inferstream.buildModels" $root | indent 8 }}
{{- end }}
{{- with .initContainers }}
{{ toYaml . | indent 8 }}
{{- end }}
      containers:
        - name: {{ .component }}
{{- if gt $gpu 0 }}
          image: "{{ $values.image.gpuRepository }}:{{ $values.image.gpuTag }}"
{{- else }}
          image: "{{ $values.image.repository }}:{{ $values.image.tag }}"
{{- end }}
          imagePullPolicy: {{ $values.image.pullPolicy }}
          args:
{{ toYaml .args | indent 12 }}
          envFrom:
{{ include "inferstream.envFrom" $root | indent 12 }}
{{- with .extraEnv }}
          env:
{{ toYaml . | indent 12 }}
{{- end }}
          ports:
            - name: http
              containerPort: {{ .port }}
          livenessProbe:
            httpGet: {path: {{ .probe }}, port: http}
            initialDelaySeconds: 30
            periodSeconds: 20
            timeoutSeconds: 5
            failureThreshold: 3
          readinessProbe:
            httpGet: {path: {{ .probe }}, port: http}
            periodSeconds: 10
            timeoutSeconds: 5
          startupProbe:
            httpGet: {path: {{ .probe }}, port: http}
            periodSeconds: 5
            failureThreshold: 60
          resources:
{{- $resources := deepCopy (.resources | default dict) }}
{{- if gt $gpu 0 }}
{{- $limits := merge (dict "nvidia.com/gpu" $gpu) ($resources.limits | default dict) }}
{{- $_ := set $resources "limits" $limits }}
{{- end }}
{{ toYaml $resources | indent 12 }}
          volumeMounts:
            - {name: models, mountPath: /models, readOnly: true}
            - {name: state, mountPath: /var/lib/inferstream}
{{- if $values.kafka.security.tlsSecret }}
            - {name: kafka-tls, mountPath: /etc/inferstream/kafka-tls, readOnly: true}
{{- end }}
{{- with .extraMounts }}
{{ toYaml . | indent 12 }}
{{- end }}
      volumes:
{{ include "inferstream.modelsVolume" $root | indent 8 }}
        - name: state
{{ toYaml (.stateVolume | default (dict "emptyDir" dict)) | indent 10 }}
{{- with .extraVolumes }}
{{ toYaml . | indent 8 }}
{{- end }}
{{- if $values.kafka.security.tlsSecret }}
        - name: kafka-tls
          secret:
            secretName: {{ $values.kafka.security.tlsSecret }}
{{- end }}
{{- with $values.nodeSelector }}
      nodeSelector:
{{ toYaml . | indent 8 }}
{{- end }}
{{- with $values.tolerations }}
      tolerations:
{{ toYaml . | indent 8 }}
{{- end }}
{{- end -}}

{{/* A PodDisruptionBudget for one component. */}}
{{- define "inferstream.pdb" -}}
{{- if .root.Values.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "inferstream.fullname" .root }}-{{ .component }}
  labels:
{{ include "inferstream.labels" . | indent 4 }}
spec:
  maxUnavailable: {{ .root.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
{{ include "inferstream.selectorLabels" . | indent 6 }}
{{- end }}
{{- end -}}
