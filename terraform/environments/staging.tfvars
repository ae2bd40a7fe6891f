# Staging: small and cheap, same shape as production. No secrets here: the
# Redis auth tokens and the Feast registry password are Secrets Manager names.
# The image digest and the API key file are not here either: CD passes
# -var image_digest=... and TF_VAR_api_keys_yaml (a secret).

environment        = "staging"
aws_region         = "eu-west-1"
cluster_name       = "feedrank-staging"
vpc_id             = "vpc-0a1b2c3d4e5f60001"
private_subnet_ids = ["subnet-0a1b2c3d4e5f60011", "subnet-0a1b2c3d4e5f60012"]

image_repository = "ghcr.io/feedrank/feedrank"
min_replicas     = 1
max_replicas     = 3
ranker_resources = {
  cpu_request    = "500m"
  cpu_limit      = "1"
  memory_request = "1Gi"
  memory_limit   = "2Gi"
}

mlflow_image             = "ghcr.io/feedrank/mlflow-server:3.17.0"
mlflow_replicas          = 1
db_instance_class        = "db.t4g.medium"
db_allocated_storage_gb  = 20
db_backup_retention_days = 7

feast_registry_password_secret_name = "feedrank/staging/feast-registry-password"

online_store_mode            = "in_cluster"
redis_auth_token_secret_name = "feedrank/staging/redis-auth-token"
redis_node_type              = "cache.t4g.small"
redis_num_cache_clusters     = 2

event_stream_auth_token_secret_name = "feedrank/staging/event-stream-auth-token"
event_stream_node_type              = "cache.t4g.small"

ray_version = "2.58.1"
ray_head_resources = {
  cpu_request    = "2"
  cpu_limit      = "2"
  memory_request = "8Gi"
  memory_limit   = "8Gi"
}
ray_worker_resources = {
  cpu_request    = "2"
  cpu_limit      = "2"
  memory_request = "8Gi"
  memory_limit   = "8Gi"
}
ray_worker_min_replicas  = 0
ray_worker_max_replicas  = 2
ray_shared_storage_class = "efs-sc"
