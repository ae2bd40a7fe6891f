# Redis for the Feast online store, in one of two shapes selected by var.mode:
# - managed: an ElastiCache replication group, Multi-AZ with automatic failover,
#   encrypted at rest (KMS) and in transit, auth token from Secrets Manager;
# - in_cluster: one Redis pod without persistence (the online store is a cache
#   that `feedrank features materialize` rebuilds), password from the same secret.

locals {
  managed    = var.mode == "managed"
  in_cluster = var.mode == "in_cluster"
  port       = 6379

  labels = {
    "app.kubernetes.io/name"       = var.name
    "app.kubernetes.io/component"  = "online-store"
    "app.kubernetes.io/part-of"    = "feedrank"
    "app.kubernetes.io/managed-by" = "terraform"
  }
}

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

# ---------------------------------------------------------------- managed

data "aws_secretsmanager_secret_version" "auth_token" {
  count     = local.managed ? 1 : 0
  secret_id = var.auth_token_secret_name
}

resource "aws_kms_key" "redis" {
  count                   = local.managed ? 1 : 0
  description             = "${var.name}: ElastiCache at-rest encryption and slow-log group"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsEncrypts"
        Effect    = "Allow"
        Principal = { Service = "logs.${data.aws_region.current.name}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:/feedrank/${var.name}/*"
          }
        }
      },
    ]
  })
  tags = var.tags
}

resource "aws_cloudwatch_log_group" "slow_log" {
  count             = local.managed ? 1 : 0
  name              = "/feedrank/${var.name}/redis-slow-log"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.redis[0].arn
  tags              = var.tags
}

resource "aws_elasticache_subnet_group" "redis" {
  count       = local.managed ? 1 : 0
  name        = var.name
  description = "Private subnets of the feedrank online store"
  subnet_ids  = var.subnet_ids
  tags        = var.tags
}

resource "aws_security_group" "redis" {
  count       = local.managed ? 1 : 0
  name        = "${var.name}-redis"
  description = "Feast online store: Redis reachable from the cluster nodes only"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "redis" {
  for_each                     = local.managed ? toset(var.client_security_group_ids) : toset([])
  security_group_id            = aws_security_group.redis[0].id
  description                  = "Redis from the cluster nodes"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  tags                         = var.tags
}

resource "aws_elasticache_replication_group" "redis" {
  count                      = local.managed ? 1 : 0
  replication_group_id       = var.name
  description                = "Feast online store of feedrank"
  engine                     = "redis"
  engine_version             = var.engine_version
  node_type                  = var.node_type
  num_cache_clusters         = var.num_cache_clusters
  port                       = local.port
  subnet_group_name          = aws_elasticache_subnet_group.redis[0].name
  security_group_ids         = [aws_security_group.redis[0].id]
  automatic_failover_enabled = true
  multi_az_enabled           = true
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.redis[0].arn
  transit_encryption_enabled = true
  auth_token                 = data.aws_secretsmanager_secret_version.auth_token[0].secret_string
  auth_token_update_strategy = "ROTATE"
  auto_minor_version_upgrade = true
  snapshot_retention_limit   = var.snapshot_retention_days
  snapshot_window            = "03:00-04:00"
  maintenance_window         = "sun:05:00-sun:06:00"
  apply_immediately          = false

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.slow_log[0].name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }

  tags = var.tags
}

# ------------------------------------------------------------- in_cluster

resource "kubernetes_namespace_v1" "redis" {
  count = local.in_cluster ? 1 : 0
  metadata {
    name = var.namespace
    labels = {
      "pod-security.kubernetes.io/enforce" = "restricted"
    }
  }
}

# redis.conf rendered by External Secrets Operator from the auth token, so the
# password reaches Redis as a mounted file, never as an argument or env var.
resource "kubernetes_manifest" "redis_config" {
  count = local.in_cluster ? 1 : 0
  manifest = {
    apiVersion = "external-secrets.io/v1"
    kind       = "ExternalSecret"
    metadata = {
      name      = "${var.name}-config"
      namespace = kubernetes_namespace_v1.redis[0].metadata[0].name
      labels    = local.labels
    }
    spec = {
      refreshInterval = "1h"
      secretStoreRef = {
        kind = "ClusterSecretStore"
        name = var.secret_store_name
      }
      target = {
        name           = "${var.name}-config"
        creationPolicy = "Owner"
        template = {
          engineVersion = "v2"
          data = {
            "redis.conf" = join("\n", [
              "bind 0.0.0.0",
              "port ${local.port}",
              "requirepass \"{{ .token }}\"",
              "save \"\"",
              "appendonly no",
              "dir /data",
              "maxmemory ${floor(var.memory_limit_mib * 0.8)}mb",
              "maxmemory-policy noeviction",
              "",
            ])
          }
        }
      }
      data = [
        {
          secretKey = "token"
          remoteRef = { key = var.auth_token_secret_name }
        },
      ]
    }
  }
}

resource "kubernetes_deployment_v1" "redis" {
  count = local.in_cluster ? 1 : 0
  #checkov:skip=CKV_K8S_43:Third-party image pinned to an exact release tag validated by var.image; mirror it and pass a digest there to pin further.
  metadata {
    name      = var.name
    namespace = kubernetes_namespace_v1.redis[0].metadata[0].name
    labels    = local.labels
  }

  spec {
    replicas = 1

    selector {
      match_labels = { "app.kubernetes.io/name" = var.name }
    }

    # One pod with no persistence: replace it rather than run two side by side.
    strategy {
      type = "Recreate"
    }

    template {
      metadata {
        labels = local.labels
      }

      spec {
        automount_service_account_token = false

        security_context {
          run_as_non_root = true
          # The redis user of the official image.
          run_as_user  = 999
          run_as_group = 999
          fs_group     = 999
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name              = "redis"
          image             = var.image
          image_pull_policy = "Always"
          args              = ["redis-server", "/etc/redis/redis.conf"]

          port {
            name           = "redis"
            container_port = local.port
            protocol       = "TCP"
          }

          resources {
            requests = {
              cpu    = "100m"
              memory = "${var.memory_limit_mib}Mi"
            }
            limits = {
              cpu    = "1"
              memory = "${var.memory_limit_mib}Mi"
            }
          }

          readiness_probe {
            tcp_socket {
              port = local.port
            }
            period_seconds = 5
          }

          liveness_probe {
            tcp_socket {
              port = local.port
            }
            initial_delay_seconds = 10
            period_seconds        = 10
          }

          security_context {
            run_as_non_root            = true
            allow_privilege_escalation = false
            privileged                 = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "config"
            mount_path = "/etc/redis"
            read_only  = true
          }
          volume_mount {
            name       = "data"
            mount_path = "/data"
          }
        }

        volume {
          name = "config"
          secret {
            secret_name  = "${var.name}-config"
            default_mode = "0440"
          }
        }
        volume {
          name = "data"
          empty_dir {
            size_limit = "64Mi"
          }
        }
      }
    }
  }

  depends_on = [kubernetes_manifest.redis_config]
}

resource "kubernetes_service_v1" "redis" {
  count = local.in_cluster ? 1 : 0
  metadata {
    name      = var.name
    namespace = kubernetes_namespace_v1.redis[0].metadata[0].name
    labels    = local.labels
  }

  spec {
    type     = "ClusterIP"
    selector = { "app.kubernetes.io/name" = var.name }

    port {
      name        = "redis"
      port        = local.port
      target_port = local.port
      protocol    = "TCP"
    }
  }
}
