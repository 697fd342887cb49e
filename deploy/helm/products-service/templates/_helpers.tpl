{{/* Names and labels. */}}
{{- define "products-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "products-service.fullname" -}}
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

{{- define "products-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "products-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "products-service.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "products-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: api
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "products-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "products-service.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Where the mounted files live in the pod. */}}
{{- define "products-service.secretDir" -}}/run/secrets/products{{- end -}}
{{- define "products-service.configPath" -}}/etc/products-service/config.yaml{{- end -}}

{{/*
File-mounted secrets: name (volume and directory), the values entry, and the
file name inside the directory. Only the entries with an existingSecret are
mounted. secrets.mongoUri / secrets.redisUrl are env vars, not files.
*/}}
{{- define "products-service.fileSecrets" -}}
{{- $s := .Values.secrets -}}
{{- $t := .Values.tls -}}
{{- $list := list
  (dict "name" "mongo-password" "ref" $s.mongoPassword "file" "password")
  (dict "name" "redis-password" "ref" $s.redisPassword "file" "password")
  (dict "name" "kafka-sasl-password" "ref" $s.kafkaSaslPassword "file" "password")
  (dict "name" "jwt-secret" "ref" $s.jwtSecret "file" "secret")
  (dict "name" "jwt-public-key" "ref" $s.jwtPublicKey "file" "public.pem")
  (dict "name" "api-keys" "ref" $s.apiKeys "file" "api-keys")
  (dict "name" "mongo-ca" "ref" $t.mongoCa "file" "ca.crt")
  (dict "name" "redis-ca" "ref" $t.redisCa "file" "ca.crt")
  (dict "name" "kafka-ca" "ref" $t.kafkaCa "file" "ca.crt")
-}}
{{- $out := list -}}
{{- range $list -}}
{{- if .ref.existingSecret -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "items" $out) -}}
{{- end -}}

{{- define "products-service.secretFile" -}}
{{- printf "%s/%s/%s" (include "products-service.secretDir" .root) .name .file -}}
{{- end -}}

{{- define "products-service.serverTls" -}}
{{- if or .Values.tls.server.http .Values.tls.server.grpc -}}true{{- end -}}
{{- end -}}

{{/*
The settings file (same keys as config/default.yaml). The chart-managed part
is built here and wins over .Values.config. The listener addresses are env
vars (HTTP_ADDR...), which win over any file.
*/}}
{{- define "products-service.settings" -}}
{{- $v := .Values -}}
{{- $dir := include "products-service.secretDir" . -}}
{{- $tlsDir := printf "%s/server-tls" $dir -}}
{{- $managed := dict
  "shutdown_timeout_secs" (int $v.shutdownTimeoutSecs)
  "http" (dict "tls" (dict "enabled" $v.tls.server.http))
  "grpc" (dict "tls" (dict "enabled" $v.tls.server.grpc))
  "mongo" (dict "uri" $v.mongo.uri "database" $v.mongo.database "collection" $v.mongo.collection)
  "redis" (dict "enabled" $v.redis.enabled "url" $v.redis.url)
  "kafka" (dict
      "brokers" $v.kafka.brokers
      "group_id" $v.kafka.groupId
      "topics" (dict "create" $v.kafka.topics.create "update" $v.kafka.topics.update "dead_letter" $v.kafka.topics.deadLetter)
      "partitions" (int $v.kafka.partitions)
      "replication_factor" (int $v.kafka.replicationFactor)
      "min_insync_replicas" (int $v.kafka.minInsyncReplicas)
      "security" (dict "protocol" $v.kafka.security.protocol "sasl" (dict "mechanism" $v.kafka.security.saslMechanism)))
  "telemetry" (dict "service_name" $v.telemetry.serviceName "log_format" $v.telemetry.logFormat)
  "auth" (dict "enabled" $v.auth.enabled "protect_reads" $v.auth.protectReads "jwt" (dict "algorithm" $v.auth.jwt.algorithm))
-}}
{{- $serverCert := dict "cert_file" (printf "%s/tls.crt" $tlsDir) "key_file" (printf "%s/tls.key" $tlsDir) -}}
{{- if $v.tls.server.http }}{{ $_ := mergeOverwrite $managed.http.tls $serverCert }}{{ end -}}
{{- if $v.tls.server.grpc }}{{ $_ := mergeOverwrite $managed.grpc.tls $serverCert }}{{ end -}}
{{- with $v.telemetry.otlpEndpoint }}{{ $_ := set $managed.telemetry "otlp_endpoint" . }}{{ end -}}
{{- with $v.mongo.username }}{{ $_ := set $managed.mongo "auth" (dict "username" .) }}{{ end -}}
{{- with $v.redis.username }}{{ $_ := set $managed.redis "auth" (dict "username" .) }}{{ end -}}
{{- with $v.kafka.security.saslUsername }}{{ $_ := set $managed.kafka.security.sasl "username" . }}{{ end -}}
{{- with $v.auth.jwt.issuer }}{{ $_ := set $managed.auth.jwt "issuer" . }}{{ end -}}
{{- with $v.auth.jwt.audience }}{{ $_ := set $managed.auth.jwt "audience" . }}{{ end -}}
{{- $files := dict -}}
{{- range (include "products-service.fileSecrets" . | fromJson).items -}}
{{- $_ := set $files .name (include "products-service.secretFile" (dict "root" $ "name" .name "file" .file)) -}}
{{- end -}}
{{- $extra := dict -}}
{{- with $files -}}
{{- if hasKey . "mongo-password" }}{{ $extra = mergeOverwrite $extra (dict "mongo" (dict "auth" (dict "password_file" (get . "mongo-password")))) }}{{ end -}}
{{- if hasKey . "mongo-ca" }}{{ $extra = mergeOverwrite $extra (dict "mongo" (dict "tls" (dict "enabled" true "ca_file" (get . "mongo-ca")))) }}{{ end -}}
{{- if hasKey . "redis-password" }}{{ $extra = mergeOverwrite $extra (dict "redis" (dict "auth" (dict "password_file" (get . "redis-password")))) }}{{ end -}}
{{- if hasKey . "redis-ca" }}{{ $extra = mergeOverwrite $extra (dict "redis" (dict "tls_ca_file" (get . "redis-ca"))) }}{{ end -}}
{{- if hasKey . "kafka-sasl-password" }}{{ $extra = mergeOverwrite $extra (dict "kafka" (dict "security" (dict "sasl" (dict "password_file" (get . "kafka-sasl-password"))))) }}{{ end -}}
{{- if hasKey . "kafka-ca" }}{{ $extra = mergeOverwrite $extra (dict "kafka" (dict "security" (dict "ssl_ca_file" (get . "kafka-ca")))) }}{{ end -}}
{{- if hasKey . "jwt-secret" }}{{ $extra = mergeOverwrite $extra (dict "auth" (dict "jwt" (dict "secret_file" (get . "jwt-secret")))) }}{{ end -}}
{{- if hasKey . "jwt-public-key" }}{{ $extra = mergeOverwrite $extra (dict "auth" (dict "jwt" (dict "public_key_file" (get . "jwt-public-key")))) }}{{ end -}}
{{- if hasKey . "api-keys" }}{{ $extra = mergeOverwrite $extra (dict "auth" (dict "api_keys_file" (get . "api-keys"))) }}{{ end -}}
{{- end -}}
{{- $settings := mergeOverwrite (deepCopy $v.config) $managed $extra -}}
{{- toYaml $settings -}}
{{- end -}}

{{/* Checks across values that the JSON schema cannot express. */}}
{{- define "products-service.validate" -}}
{{- $v := .Values -}}
{{- if and $v.keda.enabled $v.autoscaling.enabled -}}
{{- fail "keda.enabled and autoscaling.enabled: choose one (KEDA creates its own HorizontalPodAutoscaler)" -}}
{{- end -}}
{{- if and $v.keda.enabled (gt (int $v.keda.maxReplicaCount) (int $v.kafka.partitions)) -}}
{{- fail (printf "keda.maxReplicaCount (%d) is above kafka.partitions (%d): replicas beyond the partition count get no partition and would idle; raise the partitions or lower the cap" (int $v.keda.maxReplicaCount) (int $v.kafka.partitions)) -}}
{{- end -}}
{{- if and $v.keda.enabled (gt (int $v.keda.minReplicaCount) (int $v.keda.maxReplicaCount)) -}}
{{- fail "keda.minReplicaCount is above keda.maxReplicaCount" -}}
{{- end -}}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas is above autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and (or $v.autoscaling.enabled (and $v.keda.enabled (gt (int $v.keda.cpuUtilization) 0))) (not (and $v.resources.requests $v.resources.requests.cpu)) -}}
{{- fail "CPU autoscaling needs resources.requests.cpu" -}}
{{- end -}}
{{- $minGrace := add (int $v.preStopSleepSeconds) (int $v.shutdownTimeoutSecs) 5 -}}
{{- if le (int $v.terminationGracePeriodSeconds) (int $minGrace) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than preStopSleepSeconds + shutdownTimeoutSecs + 5 s of producer flush (%d): the drain would be cut short by SIGKILL" (int $v.terminationGracePeriodSeconds) (int $minGrace)) -}}
{{- end -}}
{{- if and $v.probes.grpc.enabled $v.tls.server.grpc -}}
{{- fail "probes.grpc.enabled with tls.server.grpc: the kubelet's gRPC probe cannot speak TLS" -}}
{{- end -}}
{{- if and (include "products-service.serverTls" .) (not $v.tls.server.existingSecret) -}}
{{- fail "tls.server.http/grpc need tls.server.existingSecret (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- if and $v.auth.enabled (not (or $v.secrets.jwtSecret.existingSecret $v.secrets.jwtPublicKey.existingSecret $v.secrets.apiKeys.existingSecret)) -}}
{{- fail "auth.enabled needs secrets.jwtSecret, secrets.jwtPublicKey or secrets.apiKeys (the service refuses to start otherwise)" -}}
{{- end -}}
{{- if and $v.kafka.security.saslUsername (not (has $v.kafka.security.protocol (list "sasl_plaintext" "sasl_ssl"))) -}}
{{- fail "kafka.security.saslUsername is only used with protocol sasl_plaintext or sasl_ssl" -}}
{{- end -}}
{{- end -}}
