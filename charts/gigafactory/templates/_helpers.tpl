{{- define "gigafactory.fullname" -}}
{{- printf "%s" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gigafactory.labels" -}}
app.kubernetes.io/name: gigafactory
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "gigafactory.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Restricted pod security: non-root, read-only root, nothing added, RuntimeDefault seccomp. */}}
{{- define "gigafactory.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gigafactory.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* A runner pool's admission policy up to its variables (policies.yaml): metadata, the one kind it
matches, the pool's service account as match condition, and the calling pod as `variables.pod`. */}}
{{- define "gigafactory.runnerPolicyHead" }}
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {{ .pool }}-runner-{{ .suffix }}
  labels: {{- include "gigafactory.labels" .root | nindent 4 }}
    gigafactory.dev/factory: {{ .name }}
  annotations:
    # Argo CD: in force before the runners start (wave 0).
    argocd.argoproj.io/sync-wave: "-1"
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [{{ .group | quote }}]
        apiVersions: ["*"]
        operations: {{ toJson .operations }}
        resources: [{{ .resource }}]
  matchConditions:
    - name: this-pools-runner
      expression: "request.userInfo.username == 'system:serviceaccount:{{ .root.Release.Namespace }}:{{ .pool }}-runner'"
  variables:
    # The pod a pod-bound service-account token (every runner pod's) was issued to; '' for a token
    # bound to no pod (`kubectl create token`), which is held to the factory only.
    - name: pod
      expression: >-
        has(request.userInfo.extra) && 'authentication.kubernetes.io/pod-name' in request.userInfo.extra ?
        request.userInfo.extra['authentication.kubernetes.io/pod-name'][0] : ''
{{- end }}

{{- define "gigafactory.runnerPolicyBinding" }}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {{ .pool }}-runner-{{ .suffix }}
  labels: {{- include "gigafactory.labels" .root | nindent 4 }}
    gigafactory.dev/factory: {{ .name }}
  annotations:
    argocd.argoproj.io/sync-wave: "-1"
spec:
  policyName: {{ .pool }}-runner-{{ .suffix }}
  validationActions: [Deny]
{{- end }}
