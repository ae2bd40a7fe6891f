output "namespace" {
  description = "Namespace of the Ray cluster and its job."
  value       = kubernetes_namespace_v1.ray.metadata[0].name
}

output "cluster_name" {
  description = "Name of the RayCluster (the ray.io/cluster label of its pods)."
  value       = kubernetes_manifest.cluster.manifest.metadata.name
}

output "job_name" {
  description = "Name of the RayJob that runs the offline pipeline (and of its submitter Kubernetes Job)."
  value       = kubernetes_manifest.foundation_job.manifest.metadata.name
}

output "ray_address" {
  description = "Ray client address of the head (FEEDRANK_RAY_ADDRESS for a driver elsewhere in the namespace); KubeRay names the head Service NAME-head-svc."
  value       = "ray://${var.name}-head-svc.${kubernetes_namespace_v1.ray.metadata[0].name}.svc.cluster.local:10001"
}

output "dashboard_url" {
  description = "Ray dashboard and job API of the head (ray job submit --address)."
  value       = "http://${var.name}-head-svc.${kubernetes_namespace_v1.ray.metadata[0].name}.svc.cluster.local:8265"
}
