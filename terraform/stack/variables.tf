variable "environment" {
  description = "Environment name, used in resource names and tags."
  type        = string

  validation {
    condition     = contains(["staging", "production"], var.environment)
    error_message = "environment must be staging or production."
  }
}

variable "aws_region" {
  description = "AWS region of the cluster and every managed service."
  type        = string
}

variable "cluster_name" {
  description = "Name of the existing EKS cluster the services run on."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the cluster; the database and managed Redis are placed in it."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123abcd."
  }
}

variable "private_subnet_ids" {
  description = "Private subnets (at least two availability zones) for the database and managed Redis."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2 && alltrue([for s in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "private_subnet_ids must list at least two subnet-... ids."
  }
}

variable "secret_store_name" {
  description = "External Secrets Operator ClusterSecretStore backed by AWS Secrets Manager."
  type        = string
  default     = "aws-secrets-manager"
}

# ranker

variable "image_repository" {
  description = "Repository of the FeedRanker image, without tag or digest (CD pushes ghcr.io/OWNER/feedrank:GIT_SHA)."
  type        = string

  validation {
    condition     = length(trimspace(var.image_repository)) > 0
    error_message = "image_repository must not be empty."
  }

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+$", var.image_repository))
    error_message = "image_repository must be a lowercase REGISTRY/PATH with no tag (never latest) and no digest: the digest is image_digest."
  }
}

variable "image_digest" {
  description = "Digest of the FeedRanker image to run (sha256:...). CD passes the digest it pushed: -var image_digest=..."
  type        = string

  validation {
    condition     = can(regex("^sha256:[0-9a-f]{64}$", var.image_digest))
    error_message = "image_digest must be sha256: followed by 64 hex digits."
  }
}

variable "model_version" {
  description = "MLflow registry version of the ranking model, or champion. Continuous training passes the version it promoted."
  type        = string
  default     = "champion"

  validation {
    condition     = can(regex("^([0-9]+|champion)$", var.model_version))
    error_message = "model_version must be a registry version number or champion."
  }
}

variable "api_keys_yaml" {
  description = "Content of the ranker's API key file (hashed keys; `feedrank keys create` writes it). CD passes it from a secret as TF_VAR_api_keys_yaml, like image_digest never in a .tfvars file."
  type        = string
  sensitive   = true

  validation {
    condition     = length(trimspace(var.api_keys_yaml)) > 0
    error_message = "api_keys_yaml must not be empty."
  }
}

variable "rate_limit" {
  description = "Default per-key rate limit of the ranker (limits notation, e.g. 100/second)."
  type        = string
  default     = "100/second"
}

variable "explore_share" {
  description = "Share of the ranker's requests that explore (FEEDRANK_EXPLORE_SHARE, a decimal from 0 to 1)."
  type        = string
  default     = "0.05"

  validation {
    condition     = can(regex("^(0([.][0-9]+)?|1([.]0+)?)$", var.explore_share))
    error_message = "explore_share must be a decimal from 0 to 1, e.g. 0.05."
  }
}

variable "event_consumer_replicas" {
  description = "Pods of the event consumer (feedrank events consume)."
  type        = number
  default     = 1

  validation {
    condition     = var.event_consumer_replicas >= 1
    error_message = "event_consumer_replicas must be at least 1."
  }
}

variable "min_replicas" {
  description = "Fewest ranker pods."
  type        = number

  validation {
    condition     = var.min_replicas >= 1
    error_message = "min_replicas must be at least 1."
  }
}

variable "max_replicas" {
  description = "Most ranker pods the autoscaler may run."
  type        = number

  validation {
    condition     = var.max_replicas >= var.min_replicas
    error_message = "max_replicas must be greater than or equal to min_replicas."
  }
}

variable "ranker_resources" {
  description = "CPU and memory requests and limits of each ranker pod."
  type = object({
    cpu_request    = string
    cpu_limit      = string
    memory_request = string
    memory_limit   = string
  })
}

# MLflow and its PostgreSQL

variable "mlflow_image" {
  description = "MLflow server image (see docs/deploy.md) with an explicit version tag or digest."
  type        = string

  validation {
    condition     = length(trimspace(var.mlflow_image)) > 0 && !can(regex(":latest(@|$)", var.mlflow_image))
    error_message = "mlflow_image must not be empty or use the tag latest."
  }
}

variable "mlflow_replicas" {
  description = "MLflow server pods."
  type        = number

  validation {
    condition     = var.mlflow_replicas >= 1
    error_message = "mlflow_replicas must be at least 1."
  }
}

variable "db_instance_class" {
  description = "RDS instance class of the MLflow and Feast registry database."
  type        = string

  validation {
    condition     = startswith(var.db_instance_class, "db.")
    error_message = "db_instance_class must be an RDS class such as db.t4g.medium."
  }
}

variable "db_allocated_storage_gb" {
  description = "Initial database storage in GiB."
  type        = number

  validation {
    condition     = var.db_allocated_storage_gb >= 20
    error_message = "db_allocated_storage_gb must be at least 20."
  }
}

variable "db_backup_retention_days" {
  description = "Days of automated database backups."
  type        = number

  validation {
    condition     = var.db_backup_retention_days >= 7 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be between 7 and 35."
  }
}

variable "feast_registry_password_secret_name" {
  description = "Secrets Manager secret holding the Feast registry role's password (created once by an operator)."
  type        = string
}

# Feast online store

variable "online_store_mode" {
  description = "managed (ElastiCache, Multi-AZ) or in_cluster (one Redis pod)."
  type        = string

  validation {
    condition     = contains(["managed", "in_cluster"], var.online_store_mode)
    error_message = "online_store_mode must be managed or in_cluster."
  }
}

variable "redis_auth_token_secret_name" {
  description = "Secrets Manager secret holding the Redis auth token (created once by an operator)."
  type        = string
}

variable "redis_node_type" {
  description = "ElastiCache node type (managed mode)."
  type        = string

  validation {
    condition     = startswith(var.redis_node_type, "cache.")
    error_message = "redis_node_type must be an ElastiCache node type such as cache.r7g.large."
  }
}

variable "redis_num_cache_clusters" {
  description = "ElastiCache nodes, primary included (managed mode); at least 2 for failover."
  type        = number

  validation {
    condition     = var.redis_num_cache_clusters >= 2
    error_message = "redis_num_cache_clusters must be at least 2."
  }
}

# Event stream

variable "event_stream_auth_token_secret_name" {
  description = "Secrets Manager secret holding the event stream's Redis AUTH token (created once by an operator; URL-safe characters, it goes into a redis URL)."
  type        = string
}

variable "event_stream_node_type" {
  description = "ElastiCache node type of the event stream (managed mode)."
  type        = string

  validation {
    condition     = startswith(var.event_stream_node_type, "cache.")
    error_message = "event_stream_node_type must be an ElastiCache node type such as cache.r7g.large."
  }
}

# The offline path on KubeRay

variable "ray_version" {
  description = "Ray version of the image (the project's ray pin); the RayCluster's spec.rayVersion."
  type        = string

  validation {
    condition     = can(regex("^[0-9]+[.][0-9]+[.][0-9]+$", var.ray_version))
    error_message = "ray_version must be an exact release such as 2.58.1."
  }
}

variable "ray_head_resources" {
  description = "CPU and memory requests and limits of the Ray head, where the offline pipeline's driver runs."
  type = object({
    cpu_request    = string
    cpu_limit      = string
    memory_request = string
    memory_limit   = string
  })
}

variable "ray_worker_resources" {
  description = "CPU and memory requests and limits of each Ray worker pod."
  type = object({
    cpu_request    = string
    cpu_limit      = string
    memory_request = string
    memory_limit   = string
  })
}

variable "ray_worker_min_replicas" {
  description = "Fewest Ray worker pods (0: none while the cluster is idle)."
  type        = number

  validation {
    condition     = var.ray_worker_min_replicas >= 0
    error_message = "ray_worker_min_replicas must be 0 or more."
  }
}

variable "ray_worker_max_replicas" {
  description = "Most Ray worker pods the Ray autoscaler may run."
  type        = number

  validation {
    condition     = var.ray_worker_max_replicas >= 1 && var.ray_worker_max_replicas >= var.ray_worker_min_replicas
    error_message = "ray_worker_max_replicas must be at least 1 and at least ray_worker_min_replicas."
  }
}

variable "ray_shared_storage_class" {
  description = "ReadWriteMany StorageClass (on EKS an EFS CSI class, access points owned by uid/gid 1034) of the volume the Ray head and workers share for the pipeline's files."
  type        = string
}

variable "ray_shared_storage_size" {
  description = "Size of the Ray cluster's shared data volume."
  type        = string
  default     = "50Gi"
}

variable "ray_job_active_deadline_seconds" {
  description = "Seconds the offline pipeline's RayJob may run before KubeRay stops it."
  type        = number
  default     = 14400
}

variable "kuberay_operator_namespace" {
  description = "Namespace the KubeRay operator runs in (allowed through the Ray pods' NetworkPolicy to the job API)."
  type        = string
  default     = "kuberay-operator"
}
