variable "name" {
  description = "Name of the Deployment, Service, HPA and PodDisruptionBudget."
  type        = string
  default     = "feedrank"
}

variable "namespace" {
  description = "Kubernetes namespace created for the ranker."
  type        = string
  default     = "feedrank"
}

variable "image" {
  description = "Container image of the BentoML FeedRanker service, pinned by digest (REPOSITORY[:TAG]@sha256:DIGEST). CD passes the digest it pushed."
  type        = string

  validation {
    condition     = length(trimspace(var.image)) > 0
    error_message = "image must not be empty."
  }

  validation {
    condition     = !can(regex(":latest(@|$)", var.image))
    error_message = "image must not use the mutable tag latest."
  }

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be pinned by digest: REPOSITORY[:TAG]@sha256:<64 hex digits>."
  }
}

variable "model_version" {
  description = "MLflow registry version of the ranking model the image carries, or champion: a pod annotation only (the pods serve the model in their image, FEEDRANK_MODEL_SOURCE=bentoml); a change rolls the pods."
  type        = string
  default     = "champion"

  validation {
    condition     = can(regex("^([0-9]+|champion)$", var.model_version))
    error_message = "model_version must be a registry version number or champion."
  }
}

variable "min_replicas" {
  description = "Fewest ranker pods the HorizontalPodAutoscaler keeps."
  type        = number

  validation {
    condition     = var.min_replicas >= 1
    error_message = "min_replicas must be at least 1."
  }
}

variable "max_replicas" {
  description = "Most ranker pods the HorizontalPodAutoscaler may run."
  type        = number

  validation {
    condition     = var.max_replicas >= var.min_replicas
    error_message = "max_replicas must be greater than or equal to min_replicas."
  }
}

variable "target_cpu_utilization" {
  description = "Average CPU utilisation (percent of the request) the HorizontalPodAutoscaler aims for."
  type        = number
  default     = 60

  validation {
    condition     = var.target_cpu_utilization > 0 && var.target_cpu_utilization <= 100
    error_message = "target_cpu_utilization must be in (0, 100]."
  }
}

variable "resources" {
  description = "CPU and memory requests and limits of the ranker container (Kubernetes quantities)."
  type = object({
    cpu_request    = string
    cpu_limit      = string
    memory_request = string
    memory_limit   = string
  })
}

variable "mlflow_tracking_uri" {
  description = "URL of the MLflow tracking server the service loads the model from."
  type        = string

  validation {
    condition     = can(regex("^https?://", var.mlflow_tracking_uri))
    error_message = "mlflow_tracking_uri must be an http(s) URL."
  }
}

variable "redis" {
  description = "Endpoint of the Feast online store (Redis): host, port and whether it speaks TLS."
  type = object({
    host = string
    port = number
    tls  = bool
  })
}

variable "redis_password_remote_key" {
  description = "Name of the AWS Secrets Manager secret holding the Redis auth token (synced into the namespace by External Secrets Operator)."
  type        = string
}

variable "feast_registry_url" {
  description = "SQLAlchemy URL of the Feast SQL registry, without a password (libpq reads PGPASSWORD)."
  type        = string
}

variable "feast_registry_password_remote_key" {
  description = "Name of the AWS Secrets Manager secret holding the Feast registry role's password."
  type        = string
}

variable "secret_store_name" {
  description = "External Secrets Operator ClusterSecretStore backed by AWS Secrets Manager."
  type        = string
}

variable "event_stream" {
  description = "Endpoint of the shared event stream (Redis Streams): host, port and whether it speaks TLS (rediss://)."
  type = object({
    host = string
    port = number
    tls  = bool
  })
}

variable "event_stream_password_remote_key" {
  description = "Name of the AWS Secrets Manager secret holding the event stream's AUTH token (synced into the namespace by External Secrets Operator)."
  type        = string
}

variable "api_keys_yaml" {
  description = "Content of the API key file (FEEDRANK_API_KEYS_FILE): hashed keys, scopes and bound users as `feedrank keys create` writes them. CD passes it from a secret (TF_VAR_api_keys_yaml); never in a .tfvars file."
  type        = string
  sensitive   = true

  validation {
    condition     = length(trimspace(var.api_keys_yaml)) > 0
    error_message = "api_keys_yaml must not be empty: with authentication required, no key means no caller."
  }
}

variable "rate_limit" {
  description = "Default per-key rate limit (FEEDRANK_RATE_LIMIT) in the limits library's notation, e.g. 100/second; counted across all replicas in the online store's Redis."
  type        = string
  default     = "100/second"

  validation {
    condition     = can(regex("^[0-9]+ ?(/| per )[0-9]* ?(second|minute|hour|day)s?$", var.rate_limit))
    error_message = "rate_limit must look like 100/second or 6000 per minute."
  }
}

variable "explore_share" {
  description = "Share of ranked requests whose feed is a Plackett-Luce draw with logged propensities (FEEDRANK_EXPLORE_SHARE): what off-policy evaluation of other policies needs (docs/metrics.md), at a cost in engagement shown by feedrank_explore_cost."
  type        = string
  default     = "0.05"

  validation {
    condition     = can(regex("^(0([.][0-9]+)?|1([.]0+)?)$", var.explore_share))
    error_message = "explore_share must be a decimal from 0 to 1, e.g. 0.05."
  }
}

variable "consumer_replicas" {
  description = "Pods of the event consumer (feedrank events consume); they share one consumer group, so each event is applied once whatever the count."
  type        = number
  default     = 1

  validation {
    condition     = var.consumer_replicas >= 1
    error_message = "consumer_replicas must be at least 1: without a consumer no event is applied."
  }
}

variable "consumer_resources" {
  description = "CPU and memory requests and limits of each event consumer pod (Kubernetes quantities)."
  type = object({
    cpu_request    = string
    cpu_limit      = string
    memory_request = string
    memory_limit   = string
  })
  default = {
    cpu_request    = "250m"
    cpu_limit      = "1"
    memory_request = "1Gi"
    memory_limit   = "1Gi"
  }
}
