# The Feast SQL registry lives in a database of its own on the MLflow
# PostgreSQL instance, owned by a login role of its own: the ranker and the
# training pipeline get that role's password, never the master's.
# A Job run as the master user creates (or re-syncs) both; it is idempotent.

locals {
  password_secret = "${replace(var.database, "_", "-")}-password"
  labels = {
    "app.kubernetes.io/name"       = "feast-registry-bootstrap"
    "app.kubernetes.io/part-of"    = "feedrank"
    "app.kubernetes.io/managed-by" = "terraform"
  }
}

resource "kubernetes_manifest" "password" {
  manifest = {
    apiVersion = "external-secrets.io/v1"
    kind       = "ExternalSecret"
    metadata = {
      name      = local.password_secret
      namespace = var.namespace
      labels    = local.labels
    }
    spec = {
      refreshInterval = "1h"
      secretStoreRef = {
        kind = "ClusterSecretStore"
        name = var.secret_store_name
      }
      target = {
        name           = local.password_secret
        creationPolicy = "Owner"
      }
      data = [
        {
          secretKey = "password"
          remoteRef = { key = var.password_secret_name }
        },
      ]
    }
  }
}

resource "kubernetes_config_map_v1" "bootstrap" {
  metadata {
    name      = "${local.password_secret}-bootstrap"
    namespace = var.namespace
    labels    = local.labels
  }

  data = {
    "bootstrap.sql" = <<-SQL
      \set ON_ERROR_STOP on
      \getenv role_password FEAST_REGISTRY_PASSWORD
      SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role')\gexec
      ALTER ROLE :"role" WITH LOGIN PASSWORD :'role_password';
      GRANT :"role" TO CURRENT_USER;
      SELECT format('CREATE DATABASE %I OWNER %I', :'role', :'role') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'role')\gexec
      REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
    SQL
  }
}

resource "kubernetes_job_v1" "bootstrap" {
  metadata {
    name      = "${local.password_secret}-bootstrap"
    namespace = var.namespace
    labels    = local.labels
  }

  spec {
    backoff_limit = 4

    template {
      metadata {
        labels = local.labels
      }

      spec {
        restart_policy                  = "OnFailure"
        automount_service_account_token = false

        security_context {
          run_as_non_root = true
          # The postgres user of the official alpine image.
          run_as_user  = 70
          run_as_group = 70
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name              = "psql"
          image             = var.client_image
          image_pull_policy = "Always"
          command           = ["psql", "-v", "role=${var.database}", "-f", "/sql/bootstrap.sql"]

          env {
            name  = "PGHOST"
            value = var.db_host
          }
          env {
            name  = "PGPORT"
            value = tostring(var.db_port)
          }
          env {
            name  = "PGDATABASE"
            value = "postgres"
          }
          env {
            name  = "PGSSLMODE"
            value = "require"
          }
          env {
            name = "PGUSER"
            value_from {
              secret_key_ref {
                name = var.admin_secret_name
                key  = "username"
              }
            }
          }
          env {
            name = "PGPASSWORD"
            value_from {
              secret_key_ref {
                name = var.admin_secret_name
                key  = "password"
              }
            }
          }
          env {
            name = "FEAST_REGISTRY_PASSWORD"
            value_from {
              secret_key_ref {
                name = local.password_secret
                key  = "password"
              }
            }
          }

          resources {
            requests = {
              cpu    = "50m"
              memory = "64Mi"
            }
            limits = {
              cpu    = "250m"
              memory = "128Mi"
            }
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
            name       = "sql"
            mount_path = "/sql"
            read_only  = true
          }
        }

        volume {
          name = "sql"
          config_map {
            name = kubernetes_config_map_v1.bootstrap.metadata[0].name
          }
        }
      }
    }
  }

  wait_for_completion = true

  timeouts {
    create = "5m"
    update = "5m"
  }

  depends_on = [kubernetes_manifest.password]
}
