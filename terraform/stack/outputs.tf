output "ranker_namespace" {
  description = "Namespace of the ranker; CD port-forwards its Service for the smoke test."
  value       = module.ranker.namespace
}

output "ranker_service" {
  description = "ClusterIP Service of the ranker (port 80 -> 3000)."
  value       = module.ranker.service_name
}

output "ranker_deployment" {
  description = "Deployment of the ranker; CD waits for its rollout."
  value       = module.ranker.deployment_name
}

output "ranker_image" {
  description = "Image, by digest, the ranker runs."
  value       = module.ranker.image
}

output "event_consumer_deployment" {
  description = "Deployment of the event consumer; CD waits for its rollout."
  value       = module.ranker.event_consumer_deployment_name
}

output "event_stream_endpoint" {
  description = "Event stream Redis host:port. Sensitive: an internal endpoint, kept out of CI logs."
  value       = "${module.event_stream.host}:${module.event_stream.port}"
  sensitive   = true
}

output "mlflow_tracking_uri" {
  description = "In-cluster URL of the MLflow tracking server."
  value       = module.mlflow.tracking_uri
}

output "mlflow_artifact_bucket" {
  description = "S3 bucket of the MLflow artifacts."
  value       = module.mlflow.artifact_bucket
}

output "db_master_user_secret_arn" {
  description = "RDS-managed secret with the database master credentials (a reference)."
  value       = module.mlflow.db_master_user_secret_arn
}

output "feast_registry_url" {
  description = "Feast SQL registry URL (no password in it). Sensitive: it names internal hosts and the role, which stay out of CI logs."
  value       = module.feast_registry.registry_url
  sensitive   = true
}

output "online_store_endpoint" {
  description = "Feast online store host:port. Sensitive: an internal endpoint, kept out of CI logs."
  value       = "${module.online_store.host}:${module.online_store.port}"
  sensitive   = true
}

output "cluster_name" {
  description = "EKS cluster the services run on; CD points kubectl at it for the smoke test."
  value       = data.aws_eks_cluster.this.name
}

output "aws_region" {
  description = "AWS region of the environment."
  value       = var.aws_region
}

output "ray_namespace" {
  description = "Namespace of the offline path's RayCluster and RayJob."
  value       = module.ray_offline.namespace
}

output "ray_job" {
  description = "RayJob running the offline pipeline (kubectl get rayjob NAME -n NAMESPACE)."
  value       = module.ray_offline.job_name
}

output "ray_dashboard_url" {
  description = "In-cluster Ray dashboard and job API. Sensitive: an internal endpoint, kept out of CI logs."
  value       = module.ray_offline.dashboard_url
  sensitive   = true
}
