# Production: Multi-AZ everything, managed Redis. No secrets here: the Redis
# auth tokens and the Feast registry password are Secrets Manager names.
# The image digest and the API key file are not here either: CD passes
# -var image_digest=... and TF_VAR_api_keys_yaml (a secret).

environment        = "production"
aws_region         = "eu-west-1"
cluster_name       = "feedrank-production"
vpc_id             = "vpc-0a1b2c3d4e5f60002"
private_subnet_ids = ["subnet-0a1b2c3d4e5f60021", "subnet-0a1b2c3d4e5f60022", "subnet-0a1b2c3d4e5f60023"]

image_repository = "ghcr.io/feedrank/feedrank"
min_replicas     = 3
max_replicas     = 30
ranker_resources = {
  cpu_request    = "1"
  cpu_limit      = "2"
  memory_request = "2Gi"
  memory_limit   = "2Gi"
}

mlflow_image             = "ghcr.io/feedrank/mlflow-server:3.17.0"
mlflow_replicas          = 2
db_instance_class        = "db.r7g.large"
db_allocated_storage_gb  = 100
db_backup_retention_days = 30

feast_registry_password_secret_name = "feedrank/production/feast-registry-password"

online_store_mode            = "managed"
redis_auth_token_secret_name = "feedrank/production/redis-auth-token"
redis_node_type              = "cache.r7g.large"
redis_num_cache_clusters     = 3

event_stream_auth_token_secret_name = "feedrank/production/event-stream-auth-token"
event_stream_node_type              = "cache.r7g.large"

ray_version = "2.58.1"
ray_head_resources = {
  cpu_request    = "4"
  cpu_limit      = "4"
  memory_request = "16Gi"
  memory_limit   = "16Gi"
}
ray_worker_resources = {
  cpu_request    = "4"
  cpu_limit      = "4"
  memory_request = "16Gi"
  memory_limit   = "16Gi"
}
ray_worker_min_replicas  = 1
ray_worker_max_replicas  = 8
ray_shared_storage_class = "efs-sc"
