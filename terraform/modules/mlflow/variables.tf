variable "name" {
  description = "Prefix of every AWS resource name of the tracking server (lowercase, hyphens; at most 26 characters so that \"NAME-artifacts-\" fits S3's 37-character bucket_prefix)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,25}$", var.name))
    error_message = "name must be 3-26 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "namespace" {
  description = "Kubernetes namespace created for the MLflow server."
  type        = string
  default     = "mlflow"
}

variable "tags" {
  description = "Tags added to every AWS resource."
  type        = map(string)
  default     = {}
}

variable "vpc_id" {
  description = "VPC of the database."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, in at least two availability zones, for the database."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must name at least two subnets (two availability zones)."
  }
}

variable "client_security_group_ids" {
  description = "Security groups (the cluster's nodes) allowed to connect to PostgreSQL on 5432."
  type        = list(string)
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider, for the server's IAM role (IRSA)."
  type        = string
}

variable "db_engine_version" {
  description = "PostgreSQL major version."
  type        = string
  default     = "16"
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
}

variable "db_allocated_storage_gb" {
  description = "Initial storage in GiB; storage autoscaling may grow it up to 4x."
  type        = number
  default     = 20

  validation {
    condition     = var.db_allocated_storage_gb >= 20
    error_message = "db_allocated_storage_gb must be at least 20."
  }
}

variable "db_backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)."
  type        = number
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 7 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be between 7 and 35."
  }
}

variable "artifact_noncurrent_days" {
  description = "Days an overwritten or deleted artifact version is kept before expiry."
  type        = number
  default     = 90
}

variable "access_log_retention_days" {
  description = "Days S3 access logs are kept."
  type        = number
  default     = 365
}

variable "image" {
  description = "MLflow server image (mlflow with psycopg2 and boto3, see docs/deploy.md) with an explicit version tag or digest."
  type        = string

  validation {
    condition     = can(regex("[:@]", var.image)) && !can(regex(":latest(@|$)", var.image))
    error_message = "image must carry an explicit version tag or digest, never latest."
  }
}

variable "replicas" {
  description = "MLflow server pods."
  type        = number
  default     = 2

  validation {
    condition     = var.replicas >= 1
    error_message = "replicas must be at least 1."
  }
}

variable "secret_store_name" {
  description = "External Secrets Operator ClusterSecretStore backed by AWS Secrets Manager."
  type        = string
}
