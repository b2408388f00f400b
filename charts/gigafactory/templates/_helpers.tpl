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

{{/* The API version of ValidatingAdmissionPolicy(Binding) to render: what the cluster offers.
v1 (GA in Kubernetes 1.30) where discovery lists it, else v1beta1 (1.28 and 1.29, with the
ValidatingAdmissionPolicy feature gate and --runtime-config=admissionregistration.k8s.io/v1beta1=true).
Without a cluster (`helm template`, whose default API versions name no kinds) the Kubernetes version
decides: v1 from 1.30 on. Anything else fails the render: installing the runners without the policies
would leave every runner token free to write any job's status (docs/security.md). */}}
{{- define "gigafactory.policyAPIVersion" -}}
{{- $api := .Capabilities.APIVersions -}}
{{- if $api.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy" -}}
admissionregistration.k8s.io/v1
{{- else if $api.Has "admissionregistration.k8s.io/v1beta1/ValidatingAdmissionPolicy" -}}
admissionregistration.k8s.io/v1beta1
{{- else if semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version -}}
admissionregistration.k8s.io/v1
{{- else -}}
{{- fail (printf "tokenScoping.enabled (and jobAdmission.enabled) need ValidatingAdmissionPolicy, which this cluster (Kubernetes %s) does not offer: on 1.28 and 1.29 start kube-apiserver with --feature-gates=ValidatingAdmissionPolicy=true --runtime-config=admissionregistration.k8s.io/v1beta1=true (with helm template, pass --api-versions admissionregistration.k8s.io/v1beta1/ValidatingAdmissionPolicy); or set tokenScoping.enabled=false, which lets every runner write any job's status, and jobAdmission.enabled=false (docs/security.md)" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- end -}}

{{/* A runner pool's admission policy up to its variables (policies.yaml): metadata, the one kind it
matches, the pool's service account as match condition, and the calling pod as `variables.pod`. */}}
{{- define "gigafactory.runnerPolicyHead" }}
apiVersion: {{ include "gigafactory.policyAPIVersion" .root }}
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
    # One version below, not "*": the API server type-checks the CEL only against named versions
    # (status.typeChecking), and matchPolicy Equivalent still matches a request through any other.
    matchPolicy: Equivalent
    resourceRules:
      - apiGroups: [{{ .group | quote }}]
        apiVersions: [{{ .version | quote }}]
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
apiVersion: {{ include "gigafactory.policyAPIVersion" .root }}
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

{{/* The runner pod template of a pool: in its Deployment, or in its Factory's spec.scaling.template
when the operator scales the pool with demand. Context: dict "root" $ "pool" <pool values> "name" <pool full name>. */}}
{{- define "gigafactory.runnerPodTemplate" -}}
{{- $root := .root -}}
{{- $poolName := .name -}}
{{- with .pool -}}
{{- $sandbox := merge (deepCopy (.sandbox | default dict)) (deepCopy ($root.Values.runnerDefaults.sandbox | default dict)) -}}
{{- $gateway := merge (deepCopy (.gateway | default dict)) (deepCopy ($root.Values.runnerDefaults.gateway | default dict)) -}}
metadata:
  labels: {{- include "gigafactory.labels" $root | nindent 4 }}
    app.kubernetes.io/component: runner
    gigafactory.dev/factory: {{ .name }}
spec:
  serviceAccountName: {{ $poolName }}-runner
  # Running agents get the runner's shutdown grace plus time to report and release.
  terminationGracePeriodSeconds: 60
  securityContext: {{- include "gigafactory.podSecurityContext" $root | nindent 4 }}
  {{- if not (kindIs "invalid" $sandbox.hostUsers) }}
  hostUsers: {{ $sandbox.hostUsers }}
  {{- end }}
  containers:
    - name: runner
      image: {{ include "gigafactory.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args: [runner]
      env:
        - name: GIGAFACTORY_RUNNER_POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: GIGAFACTORY_RUNNER_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        - {name: GIGAFACTORY_RUNNER_FACTORY, value: {{ .name | quote }}}
        - {name: GIGAFACTORY_RUNNER_SLOTS, value: {{ .slotsPerPod | default 1 | quote }}}
        - {name: GIGAFACTORY_RUNNER_WORK_DIR, value: /work}
        - {name: GIGAFACTORY_RUNNER_PROFILES_FILE, value: /etc/gigafactory/profiles.yaml}
        - {name: GIGAFACTORY_RUNNER_SHUTDOWN_GRACE_SECONDS, value: "40"}
        - {name: HOME, value: /tmp}
        - {name: GIGAFACTORY_RUNNER_SANDBOX, value: {{ $sandbox.mode | default "namespaces" | quote }}}
        - {name: GIGAFACTORY_RUNNER_SANDBOX_NETWORK, value: {{ $sandbox.network | default "shared" | quote }}}
        {{- /* The model gateway's upstream keys (docs/agents.md#the-chart): each from the pool's Secret, as a
        file in this container only (under /var/run/secrets, which the agent sandbox never shows); the runner
        hands its agents a loopback URL and a per-attempt token instead. */}}
        {{- range $api, $env := dict "anthropic" "ANTHROPIC" "openai" "OPENAI" }}
        {{- with index $gateway $api }}
        - {name: GIGAFACTORY_RUNNER_{{ $env }}_API_KEY_FILE, value: /var/run/secrets/gigafactory/{{ $api }}/api-key}
        {{- with .baseURL }}
        - {name: GIGAFACTORY_RUNNER_{{ $env }}_BASE_URL, value: {{ . | quote }}}
        {{- end }}
        {{- end }}
        {{- end }}
        {{- with $gateway.port }}
        - {name: GIGAFACTORY_RUNNER_GATEWAY_PORT, value: {{ . | quote }}}
        {{- end }}
        {{- with concat ($root.Values.runnerDefaults.extraEnv | default list) (.extraEnv | default list) }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      resources: {{- toYaml (.resources | default $root.Values.runnerDefaults.resources) | nindent 8 }}
      securityContext:
        {{- include "gigafactory.containerSecurityContext" $root | nindent 8 }}
        {{- with $sandbox.seccompProfile }}
        seccompProfile: {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- with $sandbox.appArmorProfile }}
        appArmorProfile: {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- with $sandbox.procMount }}
        procMount: {{ . }}
        {{- end }}
      volumeMounts:
        - {name: work, mountPath: /work}
        - {name: tmp, mountPath: /tmp}
        - {name: profiles, mountPath: /etc/gigafactory, readOnly: true}
        {{- range $api := list "anthropic" "openai" }}
        {{- if index $gateway $api }}
        - {name: gateway-{{ $api }}, mountPath: /var/run/secrets/gigafactory/{{ $api }}, readOnly: true}
        {{- end }}
        {{- end }}
  volumes:
    - {name: work, emptyDir: {}}
    - {name: tmp, emptyDir: {}}
    - name: profiles
      configMap: {name: {{ $poolName }}-profiles}
    {{- range $api := list "anthropic" "openai" }}
    {{- with index $gateway $api }}
    - name: gateway-{{ $api }}
      secret:
        secretName: {{ required (printf "gateway.%s.secretName is required" $api) .secretName | quote }}
        items: [{key: {{ .key | default "api-key" | quote }}, path: api-key}]
        defaultMode: 0440  # the runner's group (fsGroup) reads it; nobody else
    {{- end }}
    {{- end }}
{{- end }}
{{- end }}
