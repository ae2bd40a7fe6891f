variable "name" {
  description = "Name of the RayCluster (KubeRay names its head Service NAME-head-svc); the RayJob is NAME-foundation. At most 36 characters, so NAME-foundation stays within the 47 KubeRay allows a RayJob."
  type        = string
  default     = "feedrank-ray"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,34}[a-z0-9])?$", var.name))
    error_message = "name must be a DNS label of at most 36 characters."
  }
}

variable "namespace" {
  description = "Kubernetes namespace created for the Ray cluster, its job and its shared volume."
  type        = string
  default     = "feedrank-offline"
}

variable "image" {
  description = "Container image of the Ray head, workers and job submitter: the FeedRanker image (feedrank's source, Ray and Feast), pinned by digest (REPOSITORY[:TAG]@sha256:DIGEST)."
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

variable "ray_version" {
  description = "Ray version installed in the image (the project's ray pin). KubeRay reads spec.rayVersion to choose features: from 2.53 on its probes are HTTP checks of /api/healthz."
  type        = string

  validation {
    condition     = can(regex("^[0-9]+[.][0-9]+[.][0-9]+$", var.ray_version))
    error_message = "ray_version must be an exact release such as 2.58.1."
  }
}

variable "head_resources" {
  description = "CPU and memory requests and limits of the Ray head container; the job's driver (the pipeline's own process) runs there. Ray expects requests equal to limits."
  type = object({
    cpu_request    = string
    cpu_limit      = string
    memory_request = string
    memory_limit   = string
  })
}

variable "worker_resources" {
  description = "CPU and memory requests and limits of each Ray worker container; KubeRay gives Ray the CPU limit as the node's num-cpus."
  type = object({
    cpu_request    = string
    cpu_limit      = string
    memory_request = string
    memory_limit   = string
  })
}

variable "worker_min_replicas" {
  description = "Fewest Ray worker pods the autoscaler keeps (0: the workers go when the cluster is idle)."
  type        = number

  validation {
    condition     = var.worker_min_replicas >= 0
    error_message = "worker_min_replicas must be 0 or more."
  }
}

variable "worker_max_replicas" {
  description = "Most Ray worker pods the autoscaler may run."
  type        = number

  validation {
    condition     = var.worker_max_replicas >= 1 && var.worker_max_replicas >= var.worker_min_replicas
    error_message = "worker_max_replicas must be at least 1 and at least worker_min_replicas."
  }
}

variable "redis" {
  description = "Endpoint of the Feast online store (Redis) the job fills: host, port and whether it speaks TLS."
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

variable "shared_storage_class" {
  description = "StorageClass of the ReadWriteMany volume mounted at the workspace's data/ on the head and every worker (on EKS an EFS CSI class whose access points use uid and gid 1034): Ray workers read the parquet files the driver writes."
  type        = string

  validation {
    condition     = length(trimspace(var.shared_storage_class)) > 0
    error_message = "shared_storage_class must name a StorageClass that provides ReadWriteMany volumes."
  }
}

variable "shared_storage_size" {
  description = "Requested size of the shared data volume (a Kubernetes quantity)."
  type        = string
  default     = "50Gi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi|Ti)$", var.shared_storage_size))
    error_message = "shared_storage_size must be a quantity such as 50Gi."
  }
}

variable "job_active_deadline_seconds" {
  description = "Seconds the RayJob may run before KubeRay stops it and marks it failed (RayJob spec.activeDeadlineSeconds)."
  type        = number
  default     = 14400

  validation {
    condition     = var.job_active_deadline_seconds > 0
    error_message = "job_active_deadline_seconds must be positive."
  }
}

variable "kuberay_operator_namespace" {
  description = "Namespace of the KubeRay operator: the NetworkPolicy lets it reach the head's job API (port 8265), which it polls for the RayJob's status."
  type        = string
  default     = "kuberay-operator"
}
