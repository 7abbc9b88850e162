{{/* Names, labels and the pieces every pod shares. */}}

{{- define "kubecrawl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-kubecrawl, or <release> when the release name already says kubecrawl. Components append
"-operator", "-worker-metrics" (15 chars), so the base stays within 47 characters for 63-character names. */}}
{{- define "kubecrawl.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubecrawl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubecrawl.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every object; call with (dict "root" $ "component" "api"). */}}
{{- define "kubecrawl.labels" -}}
{{ include "kubecrawl.selectorLabels" . }}
app.kubernetes.io/part-of: kubecrawl
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "kubecrawl.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "kubecrawl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubecrawl.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubecrawl.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "kubecrawl.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches, as a JSON list (empty: all). The release's own namespace is added when
the chart's CrawlWorkerPool lives there, or the operator would never see it. */}}
{{- define "kubecrawl.operator.namespaces" -}}
{{- $namespaces := .Values.operator.namespaces -}}
{{- if and $namespaces .Values.worker.pool.enabled (not (has .Release.Namespace $namespaces)) -}}
{{- $namespaces = append $namespaces .Release.Namespace -}}
{{- end -}}
{{- toJson $namespaces -}}
{{- end -}}

{{/* The API as every pod of the cluster sees it (trigger pods run in the CrawlSites' namespaces). */}}
{{- define "kubecrawl.apiUrl" -}}
{{- printf "http://%s-api.%s.svc:%d" (include "kubecrawl.fullname" .) .Release.Namespace (int .Values.api.service.port) -}}
{{- end -}}

{{/* Seconds a worker may take to drain: see worker.terminationGracePeriodSeconds in values.yaml. */}}
{{- define "kubecrawl.worker.terminationGracePeriodSeconds" -}}
{{- if .Values.worker.terminationGracePeriodSeconds -}}
{{- .Values.worker.terminationGracePeriodSeconds | int -}}
{{- else -}}
{{- $fetch := .Values.config.fetch -}}
{{- $publisher := .Values.config.publisher -}}
{{- $fetching := mulf 2 $fetch.timeoutSeconds -}}
{{- $publishing := addf (mulf 2 $publisher.confirmTimeoutSeconds) $publisher.shutdownTimeoutSeconds -}}
{{- addf $fetching $publishing .Values.worker.drainMarginSeconds | ceil | int -}}
{{- end -}}
{{- end -}}

{{/* KUBECRAWL_DATABASE_URL / KUBECRAWL_RABBITMQ_URL from the existing Secrets. */}}
{{- define "kubecrawl.env.database" -}}
- name: KUBECRAWL_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
{{- end -}}

{{- define "kubecrawl.env.rabbitmq" -}}
- name: KUBECRAWL_RABBITMQ_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.rabbitmq.existingSecret }}
      key: {{ .Values.rabbitmq.secretKey }}
{{- end -}}

{{- define "kubecrawl.env.podName" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end -}}

{{/* Pod-level fields every Deployment shares; call with (dict "root" $ "values" .Values.api). */}}
{{- define "kubecrawl.podScheduling" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* /tmp is the image's working directory; the root filesystem is read-only. */}}
{{- define "kubecrawl.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{- define "kubecrawl.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Restart pods when the settings ConfigMap changes. */}}
{{- define "kubecrawl.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}

{{/* KUBECRAWL_OPERATOR_WORKER_POOL: the CrawlWorkerPool that sizes the worker Deployment, as JSON for the operator,
which applies it at start-up (src/kubecrawl/operator/pool/provisioning.py; docs/deploy.md, "The worker pool and
the CRDs", says why helm cannot create it). Unset keys of worker.pool are left out, so the CRD's defaults apply.
With the pool off, the spec is null: the operator deletes the pool it made before. */}}
{{- define "kubecrawl.workerPool" -}}
{{- $pool := .Values.worker.pool -}}
{{- $spec := dict "deploymentName" (printf "%s-worker" (include "kubecrawl.fullname" .)) "queue" $pool.queue -}}
{{- range $key := list "targetPerReplica" "minReplicas" "maxReplicas" "paused" -}}
{{- $_ := set $spec $key (index $pool $key) -}}
{{- end -}}
{{- range $key := list "activation" "pollSeconds" "cooldownToZeroSeconds" -}}
{{- if not (kindIs "invalid" (index $pool $key)) -}}
{{- $_ := set $spec $key (index $pool $key) -}}
{{- end -}}
{{- end -}}
{{- range $key := list "scaleUp" "scaleDown" "fallback" -}}
{{- with index $pool $key -}}
{{- $_ := set $spec $key . -}}
{{- end -}}
{{- end -}}
{{- $labels := include "kubecrawl.labels" (dict "root" . "component" "worker") | fromYaml -}}
{{- toJson (dict
  "name" (printf "%s-worker" (include "kubecrawl.fullname" .))
  "namespace" .Release.Namespace
  "labels" $labels
  "spec" (ternary $spec nil $pool.enabled)
) -}}
{{- end -}}
