# The BentoML FeedRanker service on Kubernetes: POST /rank, POST /events and
# BentoML's /livez, /readyz and /metrics, all on BentoML's default port 3000.

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

# The Redis auth token and the Feast registry password live in AWS Secrets
# Manager; External Secrets Operator copies them into one Kubernetes Secret.
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
          secretKey = "feast-registry-password"
          remoteRef = { key = var.feast_registry_password_remote_key }
        },
      ]
    }
  }
}

resource "kubernetes_deployment_v1" "ranker" {
  #checkov:skip=CKV_K8S_14:var.image is validated to be pinned by digest and never latest; its value exists only at plan time (CD passes -var image_digest), so checkov cannot read it.
  #checkov:skip=CKV_K8S_43:var.image must match REPOSITORY[:TAG]@sha256:<64 hex digits> or terraform refuses the plan; checkov cannot read a value given only at plan time.
  #checkov:skip=CKV_K8S_35:Feast reads the online-store password by ${ENV} substitution in feature_store.yaml and libpq reads PGPASSWORD; both values come from secretKeyRef, never from the spec.
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

          # Secret values first: the connection string below expands $(FEEDRANK_REDIS_PASSWORD).
          env {
            name = "FEEDRANK_REDIS_PASSWORD"
            value_from {
              secret_key_ref {
                name = local.runtime_secret
                key  = "redis-password"
              }
            }
          }
          env {
            name = "PGPASSWORD"
            value_from {
              secret_key_ref {
                name = local.runtime_secret
                key  = "feast-registry-password"
              }
            }
          }
          env {
            name  = "FEEDRANK_ONLINE_STORE_CONNECTION_STRING"
            value = "${var.redis.host}:${var.redis.port},ssl=${var.redis.tls},password=$(FEEDRANK_REDIS_PASSWORD)"
          }
          env {
            name  = "FEEDRANK_REGISTRY_URL"
            value = var.feast_registry_url
          }
          env {
            name  = "MLFLOW_TRACKING_URI"
            value = var.mlflow_tracking_uri
          }
          env {
            name  = "FEEDRANK_MODEL_VERSION"
            value = var.model_version
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
