output "registry_url" {
  description = "SQLAlchemy URL of the Feast SQL registry (feature_store.yaml registry.path). No password: libpq reads it from PGPASSWORD."
  value       = "postgresql+psycopg://${var.database}@${var.db_host}:${var.db_port}/${var.database}?sslmode=require"
  depends_on  = [kubernetes_job_v1.bootstrap]
}

output "password_secret_name" {
  description = "Secrets Manager secret with the registry role's password: a reference, not the password."
  value       = var.password_secret_name
}
