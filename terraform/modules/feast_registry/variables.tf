variable "namespace" {
  description = "Namespace holding the database admin Secret, where the bootstrap Job runs (the MLflow namespace)."
  type        = string
}

variable "db_host" {
  description = "Host name of the PostgreSQL instance shared with MLflow."
  type        = string
}

variable "db_port" {
  description = "Port of the PostgreSQL instance."
  type        = number
  default     = 5432
}

variable "admin_secret_name" {
  description = "Kubernetes Secret in var.namespace with keys username and password of the database master user."
  type        = string
}

variable "database" {
  description = "Database created for the Feast SQL registry; the role of the same name owns it."
  type        = string
  default     = "feast_registry"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.database))
    error_message = "database must be a lowercase PostgreSQL identifier."
  }
}

variable "password_secret_name" {
  description = "AWS Secrets Manager secret (plain string) holding the registry role's password. Created once by an operator, never in code."
  type        = string
}

variable "secret_store_name" {
  description = "External Secrets Operator ClusterSecretStore backed by AWS Secrets Manager."
  type        = string
}

variable "client_image" {
  description = "Image with psql 15 or newer (for \\getenv), with an explicit version tag or digest."
  type        = string
  default     = "postgres:16.6-alpine"

  validation {
    condition     = can(regex("[:@]", var.client_image)) && !can(regex(":latest(@|$)", var.client_image))
    error_message = "client_image must carry an explicit version tag or digest, never latest."
  }
}
