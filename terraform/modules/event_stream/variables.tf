variable "mode" {
  description = "Where the stream's Redis runs: managed (ElastiCache replication group, Multi-AZ) or in_cluster (one Redis pod with AOF on a persistent volume)."
  type        = string

  validation {
    condition     = contains(["managed", "in_cluster"], var.mode)
    error_message = "mode must be managed or in_cluster."
  }
}

variable "name" {
  description = "Name of the replication group (managed) or the Deployment, Service and volume claim (in_cluster)."
  type        = string
}

variable "auth_token_secret_name" {
  description = "AWS Secrets Manager secret (plain string, 16-128 URL-safe characters, e.g. openssl rand -hex 32: it goes into a redis URL) holding the stream's AUTH token. Created once by an operator, never in code."
  type        = string
}

variable "tags" {
  description = "Tags added to every AWS resource."
  type        = map(string)
  default     = {}
}

# managed

variable "vpc_id" {
  description = "VPC of the ElastiCache subnet group and security group (managed)."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Private subnets, in at least two availability zones, for the replication group (managed)."
  type        = list(string)
  default     = []
}

variable "client_security_group_ids" {
  description = "Security groups (the cluster's nodes) allowed to connect to the stream on 6379 (managed)."
  type        = list(string)
  default     = []
}

variable "node_type" {
  description = "ElastiCache node type (managed)."
  type        = string
  default     = "cache.t4g.small"
}

variable "num_cache_clusters" {
  description = "Nodes in the replication group, primary included; at least 2: an acknowledged event survives the loss of one node only on a replica (managed)."
  type        = number
  default     = 2

  validation {
    condition     = var.num_cache_clusters >= 2
    error_message = "num_cache_clusters must be at least 2: Multi-AZ replication is the stream's durability on ElastiCache."
  }
}

variable "engine_version" {
  description = "Redis engine version (managed); 7.x, the parameter group family is redis7."
  type        = string
  default     = "7.1"
}

variable "snapshot_retention_days" {
  description = "Days of daily snapshots kept (managed)."
  type        = number
  default     = 7

  validation {
    condition     = var.snapshot_retention_days >= 1 && var.snapshot_retention_days <= 35
    error_message = "snapshot_retention_days must be between 1 and 35."
  }
}

variable "log_retention_days" {
  description = "Days the slow log is kept in CloudWatch Logs (managed)."
  type        = number
  default     = 365
}

# in_cluster

variable "namespace" {
  description = "Namespace created for the in-cluster stream Redis (in_cluster)."
  type        = string
  default     = "feedrank-event-stream"
}

variable "image" {
  description = "Redis image with an explicit version tag or digest (in_cluster)."
  type        = string
  default     = "redis:7.4.2-alpine"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?(@sha256:[0-9a-f]{64})?$", var.image)) && can(regex("[:@]", var.image)) && !can(regex(":latest(@|$)", var.image))
    error_message = "image must carry an explicit version tag or digest, never latest."
  }
}

variable "secret_store_name" {
  description = "External Secrets Operator ClusterSecretStore backed by AWS Secrets Manager (in_cluster)."
  type        = string
  default     = "aws-secrets-manager"
}

variable "appendfsync" {
  description = "AOF fsync policy of the in-cluster Redis: always (an acknowledged batch is fsynced before the reply; what serving/event_stream.py expects) or everysec (the last second may be lost on a node crash; the service logs a warning) (in_cluster)."
  type        = string
  default     = "always"

  validation {
    condition     = contains(["everysec", "always"], var.appendfsync)
    error_message = "appendfsync must be everysec or always."
  }
}

variable "memory_limit_mib" {
  description = "Memory limit of the Redis pod in MiB; maxmemory is 80% of it, and a full stream refuses writes (noeviction) (in_cluster)."
  type        = number
  default     = 1024

  validation {
    condition     = var.memory_limit_mib >= 128
    error_message = "memory_limit_mib must be at least 128."
  }
}

variable "storage_size" {
  description = "Size of the persistent volume holding the AOF (Kubernetes quantity) (in_cluster)."
  type        = string
  default     = "10Gi"
}

variable "storage_class_name" {
  description = "StorageClass of the AOF volume; null uses the cluster's default (in_cluster)."
  type        = string
  default     = null
}
