# One environment of feedrank: the MLflow tracking server on PostgreSQL with an
# S3 artifact store, the Feast SQL registry on the same PostgreSQL, Redis for
# the Feast online store, a second Redis for the shared event stream, the
# BentoML ranker with its event consumer, and the offline pipeline on a KubeRay
# RayCluster. The EKS cluster, its VPC, External Secrets Operator (with a
# ClusterSecretStore for Secrets Manager), the KubeRay operator and a
# ReadWriteMany StorageClass exist beforehand: docs/deploy.md.
#
# This root module is shared by every environment; an environment is only its
# settings, ../environments/ENV.tfvars, and its state, ../environments/ENV.backend.hcl.

locals {
  name                = "feedrank-${var.environment}"
  node_security_group = data.aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

module "mlflow" {
  source = "../modules/mlflow"

  name                      = "${local.name}-mlflow"
  vpc_id                    = var.vpc_id
  subnet_ids                = var.private_subnet_ids
  client_security_group_ids = [local.node_security_group]
  oidc_provider_arn         = data.aws_iam_openid_connect_provider.cluster.arn
  db_instance_class         = var.db_instance_class
  db_allocated_storage_gb   = var.db_allocated_storage_gb
  db_backup_retention_days  = var.db_backup_retention_days
  image                     = var.mlflow_image
  replicas                  = var.mlflow_replicas
  secret_store_name         = var.secret_store_name
}

module "feast_registry" {
  source = "../modules/feast_registry"

  namespace            = module.mlflow.namespace
  db_host              = module.mlflow.db_address
  db_port              = module.mlflow.db_port
  admin_secret_name    = module.mlflow.db_admin_secret_name
  password_secret_name = var.feast_registry_password_secret_name
  secret_store_name    = var.secret_store_name
}

module "online_store" {
  source = "../modules/online_store"

  mode                      = var.online_store_mode
  name                      = "${local.name}-online"
  auth_token_secret_name    = var.redis_auth_token_secret_name
  vpc_id                    = var.vpc_id
  subnet_ids                = var.private_subnet_ids
  client_security_group_ids = [local.node_security_group]
  node_type                 = var.redis_node_type
  num_cache_clusters        = var.redis_num_cache_clusters
  secret_store_name         = var.secret_store_name
}

# The shared event stream: Redis Streams that every ranker replica appends
# /events to and the event consumer applies (same managed/in_cluster shape as
# the online store).
module "event_stream" {
  source = "../modules/event_stream"

  mode                      = var.online_store_mode
  name                      = "${local.name}-events"
  auth_token_secret_name    = var.event_stream_auth_token_secret_name
  vpc_id                    = var.vpc_id
  subnet_ids                = var.private_subnet_ids
  client_security_group_ids = [local.node_security_group]
  node_type                 = var.event_stream_node_type
  num_cache_clusters        = var.redis_num_cache_clusters
  secret_store_name         = var.secret_store_name
}

module "ranker" {
  source = "../modules/ranker"

  image                              = "${var.image_repository}@${var.image_digest}"
  model_version                      = var.model_version
  min_replicas                       = var.min_replicas
  max_replicas                       = var.max_replicas
  resources                          = var.ranker_resources
  mlflow_tracking_uri                = module.mlflow.tracking_uri
  redis                              = { host = module.online_store.host, port = module.online_store.port, tls = module.online_store.tls }
  redis_password_remote_key          = module.online_store.auth_token_secret_name
  event_stream                       = { host = module.event_stream.host, port = module.event_stream.port, tls = module.event_stream.tls }
  event_stream_password_remote_key   = module.event_stream.auth_token_secret_name
  api_keys_yaml                      = var.api_keys_yaml
  rate_limit                         = var.rate_limit
  explore_share                      = var.explore_share
  consumer_replicas                  = var.event_consumer_replicas
  feast_registry_url                 = module.feast_registry.registry_url
  feast_registry_password_remote_key = module.feast_registry.password_secret_name
  secret_store_name                  = var.secret_store_name
}

# The offline path: a RayCluster running the ranker's image and a RayJob that
# runs `feedrank pipeline foundation --preset demo --profile cluster` on it,
# filling the same online store and registry the ranker reads.
module "ray_offline" {
  source = "../modules/ray_offline"

  image                              = "${var.image_repository}@${var.image_digest}"
  ray_version                        = var.ray_version
  head_resources                     = var.ray_head_resources
  worker_resources                   = var.ray_worker_resources
  worker_min_replicas                = var.ray_worker_min_replicas
  worker_max_replicas                = var.ray_worker_max_replicas
  redis                              = { host = module.online_store.host, port = module.online_store.port, tls = module.online_store.tls }
  redis_password_remote_key          = module.online_store.auth_token_secret_name
  feast_registry_url                 = module.feast_registry.registry_url
  feast_registry_password_remote_key = module.feast_registry.password_secret_name
  secret_store_name                  = var.secret_store_name
  shared_storage_class               = var.ray_shared_storage_class
  shared_storage_size                = var.ray_shared_storage_size
  job_active_deadline_seconds        = var.ray_job_active_deadline_seconds
  kuberay_operator_namespace         = var.kuberay_operator_namespace
}
