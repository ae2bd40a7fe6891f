output "host" {
  description = "Host name clients connect to: the replication group's primary endpoint, or the in-cluster Service's DNS name."
  value       = local.managed ? aws_elasticache_replication_group.stream[0].primary_endpoint_address : "${kubernetes_service_v1.stream[0].metadata[0].name}.${kubernetes_namespace_v1.stream[0].metadata[0].name}.svc.cluster.local"
}

output "port" {
  description = "Redis port."
  value       = local.port
}

output "tls" {
  description = "Whether clients must speak TLS (rediss://): true for the managed replication group."
  value       = local.managed
}

output "auth_token_secret_name" {
  description = "Secrets Manager secret holding the stream's auth token: a reference, not the token."
  value       = var.auth_token_secret_name
}
