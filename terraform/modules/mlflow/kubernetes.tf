# The MLflow tracking server in the cluster: backend store on the PostgreSQL
# above, artifacts proxied to the S3 bucket (--serve-artifacts), so clients
# need neither database nor bucket credentials.

locals {
  server_port = 5000
  db_secret   = "${local.server_sa}-db"
  # The server answers only to its in-cluster names and to port-forwards (CI).
  allowed_hosts = join(",", [
    "${local.server_sa}",
    "${local.server_sa}.${var.namespace}",
    "${local.server_sa}.${var.namespace}.svc",
    "${local.server_sa}.${var.namespace}.svc.cluster.local",
    "${local.server_sa}.${var.namespace}.svc.cluster.local:*",
    "localhost:*",
    "127.0.0.1:*",
  ])

  labels = {
    "app.kubernetes.io/name"       = "mlflow"
    "app.kubernetes.io/component"  = "tracking-server"
    "app.kubernetes.io/part-of"    = "feedrank"
    "app.kubernetes.io/managed-by" = "terraform"
  }
  selector = { "app.kubernetes.io/name" = "mlflow" }
}

resource "kubernetes_namespace_v1" "mlflow" {
  metadata {
    name = var.namespace
    labels = {
      "pod-security.kubernetes.io/enforce" = "restricted"
    }
  }
}

resource "kubernetes_service_account_v1" "server" {
  metadata {
    name      = local.server_sa
    namespace = kubernetes_namespace_v1.mlflow.metadata[0].name
    labels    = local.labels
    annotations = {
      "eks.amazonaws.com/role-arn" = aws_iam_role.server.arn
    }
  }
  automount_service_account_token = false
}

# The RDS-managed master secret (JSON with username and password), copied
# into the namespace and refreshed after every RDS rotation.
resource "kubernetes_manifest" "db_secret" {
  manifest = {
    apiVersion = "external-secrets.io/v1"
    kind       = "ExternalSecret"
    metadata = {
      name      = local.db_secret
      namespace = kubernetes_namespace_v1.mlflow.metadata[0].name
      labels    = local.labels
    }
    spec = {
      refreshInterval = "1h"
      secretStoreRef = {
        kind = "ClusterSecretStore"
        name = var.secret_store_name
      }
      target = {
        name           = local.db_secret
        creationPolicy = "Owner"
      }
      data = [
        {
          secretKey = "username"
          remoteRef = { key = aws_db_instance.mlflow.master_user_secret[0].secret_arn, property = "username" }
        },
        {
          secretKey = "password"
          remoteRef = { key = aws_db_instance.mlflow.master_user_secret[0].secret_arn, property = "password" }
        },
      ]
    }
  }
}

resource "kubernetes_deployment_v1" "server" {
  #checkov:skip=CKV_K8S_43:The MLflow image is built outside this repo's CD (docs/deploy.md) and pinned to an exact version tag validated by var.image; pass a digest there to pin further.
  #checkov:skip=CKV_K8S_35:libpq takes the password from PGPASSWORD or a pgpass file it refuses unless owner-only, which a secret volume read through fsGroup is not; the env value comes from a secretKeyRef, never from the spec.
  metadata {
    name      = "mlflow"
    namespace = kubernetes_namespace_v1.mlflow.metadata[0].name
    labels    = local.labels
  }

  spec {
    replicas = var.replicas

    selector {
      match_labels = local.selector
    }

    template {
      metadata {
        labels = local.labels
      }

      spec {
        service_account_name            = kubernetes_service_account_v1.server.metadata[0].name
        automount_service_account_token = false

        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          run_as_group    = 10001
          fs_group        = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name              = "mlflow"
          image             = var.image
          image_pull_policy = "Always"
          args = [
            "mlflow", "server",
            "--host", "0.0.0.0",
            "--port", tostring(local.server_port),
            "--backend-store-uri", "postgresql://${local.db_username}@${aws_db_instance.mlflow.address}:${local.db_port}/${local.db_name}?sslmode=require",
            "--serve-artifacts",
            "--artifacts-destination", "s3://${aws_s3_bucket.artifacts.bucket}/artifacts",
            "--allowed-hosts", local.allowed_hosts,
          ]

          port {
            name           = "http"
            container_port = local.server_port
            protocol       = "TCP"
          }

          env {
            name = "PGPASSWORD"
            value_from {
              secret_key_ref {
                name = local.db_secret
                key  = "password"
              }
            }
          }
          env {
            name  = "HOME"
            value = "/tmp"
          }
          env {
            name  = "AWS_REGION"
            value = data.aws_region.current.name
          }

          resources {
            requests = {
              cpu    = "250m"
              memory = "512Mi"
            }
            limits = {
              cpu    = "1"
              memory = "1Gi"
            }
          }

          readiness_probe {
            http_get {
              path = "/health"
              port = local.server_port
            }
            period_seconds = 10
          }

          liveness_probe {
            http_get {
              path = "/health"
              port = local.server_port
            }
            initial_delay_seconds = 30
            period_seconds        = 15
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
            name       = "tmp"
            mount_path = "/tmp"
          }
        }

        volume {
          name = "tmp"
          empty_dir {
            size_limit = "1Gi"
          }
        }
      }
    }
  }

  depends_on = [kubernetes_manifest.db_secret]
}

resource "kubernetes_service_v1" "server" {
  metadata {
    name      = "mlflow"
    namespace = kubernetes_namespace_v1.mlflow.metadata[0].name
    labels    = local.labels
  }

  spec {
    type     = "ClusterIP"
    selector = local.selector

    port {
      name        = "http"
      port        = 80
      target_port = local.server_port
      protocol    = "TCP"
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "server" {
  metadata {
    name      = "mlflow"
    namespace = kubernetes_namespace_v1.mlflow.metadata[0].name
    labels    = local.labels
  }

  spec {
    max_unavailable = "1"
    selector {
      match_labels = local.selector
    }
  }
}
