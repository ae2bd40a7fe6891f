# The shared event stream of the production profile: a Redis that holds the
# /events log as a Redis Stream with consumer groups (FEEDRANK_EVENT_STREAM_URL),
# written by every ranker replica and read by the `feedrank events consume`
# Deployment. Kept apart from the online store: the online store is a cache
# that `feedrank features materialize` rebuilds, the stream is the record of
# what was acknowledged, so it must refuse writes when full (noeviction)
# instead of evicting, and it is sized and backed up on its own.
#
# Two shapes, selected by var.mode:
# - managed: an ElastiCache replication group, Multi-AZ with automatic
#   failover, encrypted at rest (KMS) and in transit, AUTH token from Secrets
#   Manager. ElastiCache has no AOF on Redis 2.8.22 or later (appendonly is
#   not a modifiable parameter; AWS recommends Multi-AZ replicas instead), so
#   an acknowledged event lives in the primary's memory and, asynchronously,
#   on the replicas in other zones, plus the daily snapshot. A failover can
#   lose the writes the replica had not yet received (normally well under a
#   second); the service's AOF check gets no answer to CONFIG there and logs
#   a warning instead of refusing to start. Amazon MemoryDB (a multi-AZ transaction log before the ack) or
#   Amazon MSK can stand behind the same FEEDRANK_EVENT_STREAM_URL interface
#   when that window is not acceptable: docs/deploy.md.
# - in_cluster: one Redis pod with `appendonly yes` and `appendfsync` (default
#   always: the reply to an append comes after its fsync) on a persistent
#   volume, password from the same kind of secret.

locals {
  managed    = var.mode == "managed"
  in_cluster = var.mode == "in_cluster"
  port       = 6379

  labels = {
    "app.kubernetes.io/name"       = var.name
    "app.kubernetes.io/component"  = "event-stream"
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

resource "aws_kms_key" "stream" {
  count                   = local.managed ? 1 : 0
  description             = "${var.name}: ElastiCache at-rest encryption and slow-log group of the event stream"
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
  kms_key_id        = aws_kms_key.stream[0].arn
  tags              = var.tags
}

resource "aws_elasticache_subnet_group" "stream" {
  count       = local.managed ? 1 : 0
  name        = var.name
  description = "Private subnets of the feedrank event stream"
  subnet_ids  = var.subnet_ids
  tags        = var.tags
}

resource "aws_security_group" "stream" {
  count       = local.managed ? 1 : 0
  name        = "${var.name}-redis"
  description = "feedrank event stream: Redis reachable from the cluster nodes only"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "stream" {
  for_each                     = local.managed ? toset(var.client_security_group_ids) : toset([])
  security_group_id            = aws_security_group.stream[0].id
  description                  = "Event stream Redis from the cluster nodes"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  tags                         = var.tags
}

# appendonly and appendfsync are not modifiable on ElastiCache for Redis 7
# (AOF is unsupported from 2.8.22 on); the durability is the Multi-AZ replicas
# below. What a log does need: never evict an entry to make room.
resource "aws_elasticache_parameter_group" "stream" {
  count       = local.managed ? 1 : 0
  name        = "${var.name}-stream"
  family      = "redis${split(".", var.engine_version)[0]}"
  description = "feedrank event stream: refuse writes when full instead of evicting events"

  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }

  tags = var.tags
}

resource "aws_elasticache_replication_group" "stream" {
  count                      = local.managed ? 1 : 0
  replication_group_id       = var.name
  description                = "Event stream of feedrank (Redis Streams)"
  engine                     = "redis"
  engine_version             = var.engine_version
  node_type                  = var.node_type
  num_cache_clusters         = var.num_cache_clusters
  port                       = local.port
  parameter_group_name       = aws_elasticache_parameter_group.stream[0].name
  subnet_group_name          = aws_elasticache_subnet_group.stream[0].name
  security_group_ids         = [aws_security_group.stream[0].id]
  automatic_failover_enabled = true
  multi_az_enabled           = true
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.stream[0].arn
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

resource "kubernetes_namespace_v1" "stream" {
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
resource "kubernetes_manifest" "stream_config" {
  count = local.in_cluster ? 1 : 0
  manifest = {
    apiVersion = "external-secrets.io/v1"
    kind       = "ExternalSecret"
    metadata = {
      name      = "${var.name}-config"
      namespace = kubernetes_namespace_v1.stream[0].metadata[0].name
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
              "appendonly yes",
              "appendfsync ${var.appendfsync}",
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

resource "kubernetes_persistent_volume_claim_v1" "stream" {
  count = local.in_cluster ? 1 : 0
  metadata {
    name      = "${var.name}-data"
    namespace = kubernetes_namespace_v1.stream[0].metadata[0].name
    labels    = local.labels
  }

  spec {
    access_modes       = ["ReadWriteOnce"]
    storage_class_name = var.storage_class_name
    resources {
      requests = {
        storage = var.storage_size
      }
    }
  }

  wait_until_bound = false
}

resource "kubernetes_deployment_v1" "stream" {
  count = local.in_cluster ? 1 : 0
  #checkov:skip=CKV_K8S_43:Third-party image pinned to an exact release tag validated by var.image; mirror it and pass a digest there to pin further.
  metadata {
    name      = var.name
    namespace = kubernetes_namespace_v1.stream[0].metadata[0].name
    labels    = local.labels
  }

  spec {
    replicas = 1

    selector {
      match_labels = { "app.kubernetes.io/name" = var.name }
    }

    # One writer on one ReadWriteOnce volume: replace the pod, never run two.
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
            initial_delay_seconds = 30
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
          persistent_volume_claim {
            claim_name = kubernetes_persistent_volume_claim_v1.stream[0].metadata[0].name
          }
        }
      }
    }
  }

  depends_on = [kubernetes_manifest.stream_config]
}

resource "kubernetes_service_v1" "stream" {
  count = local.in_cluster ? 1 : 0
  metadata {
    name      = var.name
    namespace = kubernetes_namespace_v1.stream[0].metadata[0].name
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
