# The BentoML FeedRanker service on Kubernetes: POST /rank, POST /events and
# BentoML's /livez, /readyz and /metrics, all on BentoML's default port 3000;
# the API key Secret, and the event consumer Deployment (`feedrank events
# consume`) that applies the shared event stream.

locals {
  # BentoML serves on 3000 unless told otherwise; the probes and the Service target this port.
  container_port = 3000
  # bentoml containerize creates the user bentoml with this uid and gid and owns the bento by it.
  bento_uid      = 1034
  runtime_secret = "${var.name}-runtime"

  selector = {
    "app.kubernetes.io/name"     = var.name
    "app.kubernetes.io/instance" = var.name
  }
  labels = merge(local.selector, {
    "app.kubernetes.io/component"  = "ranker"
    "app.kubernetes.io/part-of"    = "feedrank"
    "app.kubernetes.io/managed-by" = "terraform"
  })

  consumer_name     = "${var.name}-event-consumer"
  consumer_selector = { for key, value in local.selector : key => key == "app.kubernetes.io/name" ? local.consumer_name : value }
  consumer_labels = merge(local.labels, local.consumer_selector, {
    "app.kubernetes.io/component" = "event-consumer"
  })

  # Where `bentoml containerize` puts the service's source; the bento sets
  # FEEDRANK_WORKSPACE to it as well. data/ under it is an emptyDir (below).
  workspace = "/home/bentoml/bento/src"

  # The API key file (hashed keys, serving/auth.py) is the Secret api_keys,
  # mounted read-only here; the service re-reads it when it changes.
  api_keys_dir  = "/etc/feedrank/api-keys"
  api_keys_file = "api_keys.yaml"

  redis_scheme  = var.redis.tls ? "rediss" : "redis"
  stream_scheme = var.event_stream.tls ? "rediss" : "redis"

  # Environment of both containers (the ranker and the event consumer): every
  # name here is one the code reads (tests/unit/test_terraform.py checks it).
  # Secret values (keyed by their key in the runtime Secret) come first, so the
  # URLs below can expand $(NAME); PGPASSWORD is read by libpq for the
  # registry URL, the two *_PASSWORD names only feed the $(NAME) expansions.
  secret_env = {
    "event-stream-password"   = "FEEDRANK_EVENT_STREAM_PASSWORD"
    "feast-registry-password" = "PGPASSWORD"
    "redis-password"          = "FEEDRANK_REDIS_PASSWORD"
  }
  plain_env = {
    # Feast's Redis connection string (core/feast_store.py).
    FEEDRANK_REDIS_URL    = "${var.redis.host}:${var.redis.port},ssl=${var.redis.tls},password=$(FEEDRANK_REDIS_PASSWORD)"
    FEEDRANK_REGISTRY_URL = var.feast_registry_url
    # The Redis Stream every replica appends /events to and the consumer reads.
    FEEDRANK_EVENT_STREAM_URL = "${local.stream_scheme}://:$(FEEDRANK_EVENT_STREAM_PASSWORD)@${var.event_stream.host}:${var.event_stream.port}/0"
    FEEDRANK_FEAST_PROFILE    = "production"
    FEEDRANK_WORKSPACE        = local.workspace
    # The image carries its model (the champion when CD built it): no MLflow at start.
    FEEDRANK_MODEL_SOURCE  = "bentoml"
    MLFLOW_TRACKING_URI    = var.mlflow_tracking_uri
    FEEDRANK_AUTH          = "required"
    FEEDRANK_API_KEYS_FILE = "${local.api_keys_dir}/${local.api_keys_file}"
    FEEDRANK_RATE_LIMIT    = var.rate_limit
    # Explored feeds carry propensities, so other policies can be evaluated off-policy.
    FEEDRANK_EXPLORE_SHARE = var.explore_share
    # One count per key across every replica, in the online store's Redis.
    FEEDRANK_RATE_LIMIT_STORAGE = "${local.redis_scheme}://:$(FEEDRANK_REDIS_PASSWORD)@${var.redis.host}:${var.redis.port}/0"
  }
}

resource "kubernetes_namespace_v1" "ranker" {
  metadata {
    name = var.namespace
    labels = {
      "pod-security.kubernetes.io/enforce" = "restricted"
      "pod-security.kubernetes.io/warn"    = "restricted"
    }
  }
}

resource "kubernetes_service_account_v1" "ranker" {
  metadata {
    name      = var.name
    namespace = kubernetes_namespace_v1.ranker.metadata[0].name
    labels    = local.labels
  }
  automount_service_account_token = false
}

# The Redis auth tokens (online store, event stream) and the Feast registry
# password live in AWS Secrets Manager; External Secrets Operator copies them
# into one Kubernetes Secret.
resource "kubernetes_manifest" "runtime_secret" {
  manifest = {
    apiVersion = "external-secrets.io/v1"
    kind       = "ExternalSecret"
    metadata = {
      name      = local.runtime_secret
      namespace = kubernetes_namespace_v1.ranker.metadata[0].name
      labels    = local.labels
    }
    spec = {
      refreshInterval = "1h"
      secretStoreRef = {
        kind = "ClusterSecretStore"
        name = var.secret_store_name
      }
      target = {
        name           = local.runtime_secret
        creationPolicy = "Owner"
      }
      data = [
        {
          secretKey = "redis-password"
          remoteRef = { key = var.redis_password_remote_key }
        },
        {
          secretKey = "event-stream-password"
          remoteRef = { key = var.event_stream_password_remote_key }
        },
        {
          secretKey = "feast-registry-password"
          remoteRef = { key = var.feast_registry_password_remote_key }
        },
      ]
    }
  }
}

# The API key file: hashed keys, scopes and bound users (`feedrank keys create`
# writes it; docs/deploy.md). Its content comes from the sensitive variable
# api_keys_yaml, which CD passes from a GitHub secret; no key material is in
# the repository, and the file holds only SHA-256 hashes of the keys.
resource "kubernetes_secret_v1" "api_keys" {
  metadata {
    name      = "${var.name}-api-keys"
    namespace = kubernetes_namespace_v1.ranker.metadata[0].name
    labels    = local.labels
  }
  type = "Opaque"
  data = {
    (local.api_keys_file) = var.api_keys_yaml
  }
}

resource "kubernetes_deployment_v1" "ranker" {
  #checkov:skip=CKV_K8S_14:var.image is validated to be pinned by digest and never latest; its value exists only at plan time (CD passes -var image_digest), so checkov cannot read it.
  #checkov:skip=CKV_K8S_43:var.image must match REPOSITORY[:TAG]@sha256:<64 hex digits> or terraform refuses the plan; checkov cannot read a value given only at plan time.
  #checkov:skip=CKV_K8S_35:The code reads Redis URLs, so the auth tokens come in as env vars (secretKeyRef) for $(NAME) expansion into FEEDRANK_REDIS_URL and FEEDRANK_EVENT_STREAM_URL; libpq reads PGPASSWORD. Never in the spec.
  metadata {
    name      = var.name
    namespace = kubernetes_namespace_v1.ranker.metadata[0].name
    labels    = local.labels
  }

  spec {
    # The HorizontalPodAutoscaler owns the replica count after creation.
    replicas = var.min_replicas

    selector {
      match_labels = local.selector
    }

    strategy {
      type = "RollingUpdate"
      rolling_update {
        max_surge       = "25%"
        max_unavailable = "0"
      }
    }

    template {
      metadata {
        labels = local.labels
        annotations = {
          "feedrank.io/model-version" = var.model_version
        }
      }

      spec {
        service_account_name            = kubernetes_service_account_v1.ranker.metadata[0].name
        automount_service_account_token = false

        security_context {
          run_as_non_root = true
          run_as_user     = local.bento_uid
          run_as_group    = local.bento_uid
          fs_group        = local.bento_uid
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        topology_spread_constraint {
          max_skew           = 1
          topology_key       = "topology.kubernetes.io/zone"
          when_unsatisfiable = "ScheduleAnyway"
          label_selector {
            match_labels = local.selector
          }
        }

        container {
          name              = "ranker"
          image             = var.image
          image_pull_policy = "Always"

          port {
            name           = "http"
            container_port = local.container_port
            protocol       = "TCP"
          }

          dynamic "env" {
            for_each = local.secret_env
            content {
              name = env.value
              value_from {
                secret_key_ref {
                  name = local.runtime_secret
                  key  = env.key
                }
              }
            }
          }
          dynamic "env" {
            for_each = local.plain_env
            content {
              name  = env.key
              value = env.value
            }
          }

          resources {
            requests = {
              cpu    = var.resources.cpu_request
              memory = var.resources.memory_request
            }
            limits = {
              cpu    = var.resources.cpu_limit
              memory = var.resources.memory_limit
            }
          }

          readiness_probe {
            http_get {
              path = "/readyz"
              port = local.container_port
            }
            period_seconds    = 5
            timeout_seconds   = 2
            failure_threshold = 3
          }

          liveness_probe {
            http_get {
              path = "/livez"
              port = local.container_port
            }
            initial_delay_seconds = 10
            period_seconds        = 10
            timeout_seconds       = 2
            failure_threshold     = 6
          }

          security_context {
            run_as_non_root            = true
            run_as_user                = local.bento_uid
            allow_privilege_escalation = false
            privileged                 = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }

          # Writable places BentoML and its libraries need under a read-only root.
          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }
          volume_mount {
            name       = "prometheus"
            mount_path = "/home/bentoml/prometheus_multiproc_dir"
          }
          volume_mount {
            name       = "cache"
            mount_path = "/home/bentoml/.cache"
          }
          volume_mount {
            name       = "data"
            mount_path = "${local.workspace}/data"
          }
          volume_mount {
            name       = "api-keys"
            mount_path = local.api_keys_dir
            read_only  = true
          }
        }

        volume {
          name = "tmp"
          empty_dir {
            size_limit = "256Mi"
          }
        }
        volume {
          name = "prometheus"
          empty_dir {
            size_limit = "64Mi"
          }
        }
        volume {
          name = "cache"
          empty_dir {
            size_limit = "1Gi"
          }
        }
        volume {
          name = "data"
          empty_dir {
            size_limit = "1Gi"
          }
        }
        volume {
          name = "api-keys"
          secret {
            secret_name  = kubernetes_secret_v1.api_keys.metadata[0].name
            default_mode = "0440"
          }
        }
      }
    }
  }

  timeouts {
    create = "10m"
    update = "10m"
  }

  lifecycle {
    ignore_changes = [spec[0].replicas]
  }

  depends_on = [kubernetes_manifest.runtime_secret]
}

# The event consumer: `feedrank events consume` reads the shared stream with a
# consumer group and applies each event once (counters, candidates, seen sets,
# Feast pushes) and archives it for training. Same image, same environment and
# secrets as the ranker; its own Deployment so it scales and restarts apart
# from the request path.
resource "kubernetes_deployment_v1" "event_consumer" {
  #checkov:skip=CKV_K8S_14:var.image is validated to be pinned by digest and never latest; its value exists only at plan time (CD passes -var image_digest), so checkov cannot read it.
  #checkov:skip=CKV_K8S_43:var.image must match REPOSITORY[:TAG]@sha256:<64 hex digits> or terraform refuses the plan; checkov cannot read a value given only at plan time.
  #checkov:skip=CKV_K8S_35:The code reads Redis URLs, so the auth tokens come in as env vars (secretKeyRef) for $(NAME) expansion into FEEDRANK_REDIS_URL and FEEDRANK_EVENT_STREAM_URL; libpq reads PGPASSWORD. Never in the spec.
  #checkov:skip=CKV_K8S_8:The consumer serves no port to probe; it exits on an unrecoverable error and Kubernetes restarts it, and an unacknowledged event stays pending in the consumer group for the next one.
  #checkov:skip=CKV_K8S_9:The consumer takes no traffic, so there is nothing for a readiness probe to gate; its progress is the consumer group's lag on the stream.
  metadata {
    name      = local.consumer_name
    namespace = kubernetes_namespace_v1.ranker.metadata[0].name
    labels    = local.consumer_labels
  }

  spec {
    replicas = var.consumer_replicas

    selector {
      match_labels = local.consumer_selector
    }

    strategy {
      type = "RollingUpdate"
      rolling_update {
        max_surge       = "1"
        max_unavailable = "0"
      }
    }

    template {
      metadata {
        labels = local.consumer_labels
        annotations = {
          "feedrank.io/model-version" = var.model_version
        }
      }

      spec {
        service_account_name            = kubernetes_service_account_v1.ranker.metadata[0].name
        automount_service_account_token = false

        security_context {
          run_as_non_root = true
          run_as_user     = local.bento_uid
          run_as_group    = local.bento_uid
          fs_group        = local.bento_uid
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name              = "event-consumer"
          image             = var.image
          image_pull_policy = "Always"
          working_dir       = local.workspace
          # The bento holds the feedrank source, not its console script.
          command = [
            "python", "-c", "from feedrank.cli import main; main()",
            "events", "consume", "--workspace", local.workspace, "--profile", "production",
          ]

          dynamic "env" {
            for_each = local.secret_env
            content {
              name = env.value
              value_from {
                secret_key_ref {
                  name = local.runtime_secret
                  key  = env.key
                }
              }
            }
          }
          dynamic "env" {
            for_each = local.plain_env
            content {
              name  = env.key
              value = env.value
            }
          }

          resources {
            requests = {
              cpu    = var.consumer_resources.cpu_request
              memory = var.consumer_resources.memory_request
            }
            limits = {
              cpu    = var.consumer_resources.cpu_limit
              memory = var.consumer_resources.memory_limit
            }
          }

          security_context {
            run_as_non_root            = true
            run_as_user                = local.bento_uid
            allow_privilege_escalation = false
            privileged                 = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }
          volume_mount {
            name       = "cache"
            mount_path = "/home/bentoml/.cache"
          }
          volume_mount {
            name       = "data"
            mount_path = "${local.workspace}/data"
          }
          volume_mount {
            name       = "api-keys"
            mount_path = local.api_keys_dir
            read_only  = true
          }
        }

        volume {
          name = "tmp"
          empty_dir {
            size_limit = "256Mi"
          }
        }
        volume {
          name = "cache"
          empty_dir {
            size_limit = "1Gi"
          }
        }
        volume {
          name = "data"
          empty_dir {
            size_limit = "4Gi"
          }
        }
        volume {
          name = "api-keys"
          secret {
            secret_name  = kubernetes_secret_v1.api_keys.metadata[0].name
            default_mode = "0440"
          }
        }
      }
    }
  }

  timeouts {
    create = "10m"
    update = "10m"
  }

  depends_on = [kubernetes_manifest.runtime_secret]
}

resource "kubernetes_service_v1" "ranker" {
  metadata {
    name      = var.name
    namespace = kubernetes_namespace_v1.ranker.metadata[0].name
    labels    = local.labels
  }

  spec {
    type     = "ClusterIP"
    selector = local.selector

    port {
      name        = "http"
      port        = 80
      target_port = local.container_port
      protocol    = "TCP"
    }
  }
}

resource "kubernetes_horizontal_pod_autoscaler_v2" "ranker" {
  metadata {
    name      = var.name
    namespace = kubernetes_namespace_v1.ranker.metadata[0].name
    labels    = local.labels
  }

  spec {
    min_replicas = var.min_replicas
    max_replicas = var.max_replicas

    scale_target_ref {
      api_version = "apps/v1"
      kind        = "Deployment"
      name        = kubernetes_deployment_v1.ranker.metadata[0].name
    }

    metric {
      type = "Resource"
      resource {
        name = "cpu"
        target {
          type                = "Utilization"
          average_utilization = var.target_cpu_utilization
        }
      }
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "ranker" {
  metadata {
    name      = var.name
    namespace = kubernetes_namespace_v1.ranker.metadata[0].name
    labels    = local.labels
  }

  spec {
    # One pod at a time may go during a drain, whatever the replica count.
    max_unavailable = "1"
    selector {
      match_labels = local.selector
    }
  }
}
