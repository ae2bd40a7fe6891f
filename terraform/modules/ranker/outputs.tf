output "namespace" {
  description = "Namespace the ranker runs in."
  value       = kubernetes_namespace_v1.ranker.metadata[0].name
}

output "service_name" {
  description = "ClusterIP Service in front of the ranker pods (port 80)."
  value       = kubernetes_service_v1.ranker.metadata[0].name
}

output "deployment_name" {
  description = "Deployment whose rollout CD waits for."
  value       = kubernetes_deployment_v1.ranker.metadata[0].name
}

output "image" {
  description = "Image (by digest) the Deployment runs."
  value       = var.image
}

output "event_consumer_deployment_name" {
  description = "Deployment of the event consumer (feedrank events consume); CD waits for its rollout too."
  value       = kubernetes_deployment_v1.event_consumer.metadata[0].name
}
