output "namespace" {
  description = "Namespace of the MLflow server."
  value       = kubernetes_namespace_v1.mlflow.metadata[0].name
}

output "tracking_uri" {
  description = "In-cluster URL of the MLflow tracking server (Service port 80)."
  value       = "http://${kubernetes_service_v1.server.metadata[0].name}.${kubernetes_namespace_v1.mlflow.metadata[0].name}.svc.cluster.local"
}

output "artifact_bucket" {
  description = "S3 bucket holding the MLflow artifacts."
  value       = aws_s3_bucket.artifacts.bucket
}

output "db_address" {
  description = "Host name of the PostgreSQL instance."
  value       = aws_db_instance.mlflow.address
}

output "db_port" {
  description = "Port of the PostgreSQL instance."
  value       = aws_db_instance.mlflow.port
}

output "db_master_user_secret_arn" {
  description = "ARN of the RDS-managed Secrets Manager secret with the master credentials: a reference, not the password."
  value       = aws_db_instance.mlflow.master_user_secret[0].secret_arn
}

output "db_admin_secret_name" {
  description = "Kubernetes Secret (keys username, password) in the MLflow namespace holding the master credentials."
  value       = kubernetes_manifest.db_secret.manifest.spec.target.name
}
