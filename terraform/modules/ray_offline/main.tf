# The offline path on KubeRay: a long-lived RayCluster (one head, one
# autoscaled worker group) running the FeedRanker image, and a RayJob that runs
# `feedrank pipeline foundation --preset demo --profile cluster` on it (world ->
# features -> feast apply -> online fill -> training set) with Feast's Ray
# offline store and ray.engine compute engine, the same Redis online store and
# SQL registry as the ranker. The KubeRay operator (1.6 or newer: the
# upgradeStrategy field) and its CRDs exist beforehand, like External Secrets
# Operator: docs/deploy.md.

locals {
  # bentoml containerize creates the user bentoml with this uid and gid and owns the bento by it.
  bento_uid      = 1034
  runtime_secret = "${var.name}-runtime"
  job_name       = "${var.name}-foundation"
  data_claim     = "${var.name}-data"

  # Where `bentoml containerize` puts the source (feature_repo/ included);
  # data/ under it is the shared volume below.
  workspace = "/home/bentoml/bento/src"

  # The RayJob's entrypoint: `feedrank pipeline foundation --preset demo
  # --profile cluster`, through `python -c` because the bento holds feedrank's
  # source but not its console script (as the ranker's event consumer).
  # It runs on the head; the driver connects to the job's own cluster
  # (FEEDRANK_RAY_ADDRESS stays unset: auto).
  foundation_entrypoint = "python -c 'from feedrank.cli import main; main()' pipeline foundation --workspace ${local.workspace} --preset demo --profile cluster"

  labels = {
    "app.kubernetes.io/name"       = var.name
    "app.kubernetes.io/component"  = "offline-pipeline"
    "app.kubernetes.io/part-of"    = "feedrank"
    "app.kubernetes.io/managed-by" = "terraform"
  }

  # Environment of the head and worker containers (the driver runs on the
  # head; the workers get the same so any task sees the same settings).
  # Secret values first, so FEEDRANK_REDIS_URL can expand $(FEEDRANK_REDIS_PASSWORD);
  # PGPASSWORD is read by libpq for the registry URL. Every FEEDRANK_ name is
  # one the code reads (tests/unit/test_terraform.py checks it).
  ray_env = [
    {
      name      = "FEEDRANK_REDIS_PASSWORD"
      valueFrom = { secretKeyRef = { name = local.runtime_secret, key = "redis-password" } }
    },
    {
      name      = "PGPASSWORD"
      valueFrom = { secretKeyRef = { name = local.runtime_secret, key = "feast-registry-password" } }
    },
    # Feast's Redis connection string (host:port[,ssl=...][,password=...]).
    { name = "FEEDRANK_REDIS_URL", value = "${var.redis.host}:${var.redis.port},ssl=${var.redis.tls},password=$(FEEDRANK_REDIS_PASSWORD)" },
    { name = "FEEDRANK_REGISTRY_URL", value = var.feast_registry_url },
    { name = "FEEDRANK_WORKSPACE", value = local.workspace },
    # Ray workers import feedrank's modules (core/, features/, ...) by name to
    # run the driver's tasks: the bento's source is on every node's path.
    { name = "PYTHONPATH", value = local.workspace },
    { name = "RAY_USAGE_STATS_ENABLED", value = "0" },
  ]

  pod_security_context = {
    runAsNonRoot   = true
    runAsUser      = local.bento_uid
    runAsGroup     = local.bento_uid
    fsGroup        = local.bento_uid
    seccompProfile = { type = "RuntimeDefault" }
  }
  # Also given to KubeRay's own containers: the autoscaler sidecar (through
  # autoscalerOptions) and the wait-gcs-ready init container of the workers
  # (KubeRay copies the Ray container's), so the namespace can enforce the
  # restricted Pod Security Standard.
  container_security_context = {
    runAsNonRoot             = true
    runAsUser                = local.bento_uid
    allowPrivilegeEscalation = false
    privileged               = false
    readOnlyRootFilesystem   = true
    capabilities             = { drop = ["ALL"] }
  }

  # Read-only root: Ray's session directory lives under /tmp (KubeRay adds
  # /dev/shm for the object store, and /tmp/ray for the autoscaler's logs),
  # caches under ~/.cache, the pipeline's files under the workspace's data/.
  # The submitter and the autoscaler sidecar need only the scratch ones.
  scratch_volumes = [
    { name = "tmp", emptyDir = { sizeLimit = "8Gi" } },
    { name = "cache", emptyDir = { sizeLimit = "2Gi" } },
  ]
  scratch_mounts = [
    { name = "tmp", mountPath = "/tmp" },
    { name = "cache", mountPath = "/home/bentoml/.cache" },
  ]
  ray_volumes = [
    { name = "tmp", emptyDir = { sizeLimit = "8Gi" } },
    { name = "cache", emptyDir = { sizeLimit = "2Gi" } },
    { name = "data", persistentVolumeClaim = { claimName = kubernetes_persistent_volume_claim_v1.data.metadata[0].name } },
  ]
  ray_mounts = [
    { name = "tmp", mountPath = "/tmp" },
    { name = "cache", mountPath = "/home/bentoml/.cache" },
    # Also where the cluster profile stages Ray's offline results (data/ray).
    { name = "data", mountPath = "${local.workspace}/data" },
  ]
}

resource "kubernetes_namespace_v1" "ray" {
  metadata {
    name = var.namespace
    labels = {
      "pod-security.kubernetes.io/enforce" = "restricted"
      "pod-security.kubernetes.io/warn"    = "restricted"
    }
  }
}

# The Redis auth token and the Feast registry password live in AWS Secrets
# Manager; External Secrets Operator copies them into one Kubernetes Secret
# that the Ray containers read through secretKeyRef.
resource "kubernetes_manifest" "runtime_secret" {
  manifest = {
    apiVersion = "external-secrets.io/v1"
    kind       = "ExternalSecret"
    metadata = {
      name      = local.runtime_secret
      namespace = kubernetes_namespace_v1.ray.metadata[0].name
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

# The workspace's data/ on every Ray node: the driver writes the world, the
# features and the training set there, and Ray tasks on the workers read the
# parquet files by the same path. One node's emptyDir would not be seen by the
# others, so this is a ReadWriteMany volume.
resource "kubernetes_persistent_volume_claim_v1" "data" {
  metadata {
    name      = local.data_claim
    namespace = kubernetes_namespace_v1.ray.metadata[0].name
    labels    = local.labels
  }
  spec {
    access_modes       = ["ReadWriteMany"]
    storage_class_name = var.shared_storage_class
    resources {
      requests = {
        storage = var.shared_storage_size
      }
    }
  }
  # A WaitForFirstConsumer class binds when the head pod starts, after this apply.
  wait_until_bound = false
}

# The job API on the head (8265) runs whatever it is sent with the pods'
# secrets, and Ray has no authentication here: only the namespace's own pods
# (head, workers, the submitter) and the KubeRay operator, which polls the job
# status, may reach the Ray pods.
resource "kubernetes_network_policy_v1" "ray" {
  metadata {
    name      = var.name
    namespace = kubernetes_namespace_v1.ray.metadata[0].name
    labels    = local.labels
  }
  spec {
    pod_selector {}
    policy_types = ["Ingress"]

    ingress {
      from {
        pod_selector {}
      }
    }

    ingress {
      from {
        namespace_selector {
          match_labels = {
            "kubernetes.io/metadata.name" = var.kuberay_operator_namespace
          }
        }
      }
      ports {
        port     = "8265"
        protocol = "TCP"
      }
    }
  }
}

resource "kubernetes_manifest" "cluster" {
  manifest = {
    apiVersion = "ray.io/v1"
    kind       = "RayCluster"
    metadata = {
      name      = var.name
      namespace = kubernetes_namespace_v1.ray.metadata[0].name
      labels    = local.labels
    }
    spec = {
      rayVersion = var.ray_version
      # A new image digest (every deploy) recreates the pods; without it
      # KubeRay keeps running pods on the old template.
      upgradeStrategy = { type = "Recreate" }

      # The autoscaler sidecar on the head scales the worker group between
      # its bounds from the demand of the job's tasks. workerGroupSpecs[].replicas
      # is left out: the autoscaler owns it, and Terraform would reset it.
      enableInTreeAutoscaling = true
      autoscalerOptions = {
        upscalingMode   = "Default"
        securityContext = local.container_security_context
        volumeMounts    = local.scratch_mounts
        resources = {
          requests = { cpu = "500m", memory = "512Mi" }
          limits   = { cpu = "500m", memory = "512Mi" }
        }
      }

      headGroupSpec = {
        serviceType = "ClusterIP"
        rayStartParams = {
          "dashboard-host" = "0.0.0.0"
          # No Ray tasks on the head: it hosts the driver, GCS and the job API.
          "num-cpus" = "0"
        }
        template = {
          metadata = { labels = local.labels }
          spec = {
            # The head keeps its service account token: KubeRay's autoscaler
            # sidecar patches the RayCluster through the API with it (KubeRay
            # creates the account, its Role and RoleBinding).
            securityContext = local.pod_security_context
            containers = [
              {
                name            = "ray-head"
                image           = var.image
                imagePullPolicy = "Always"
                workingDir      = local.workspace
                ports = [
                  { name = "gcs-server", containerPort = 6379, protocol = "TCP" },
                  { name = "dashboard", containerPort = 8265, protocol = "TCP" },
                  { name = "client", containerPort = 10001, protocol = "TCP" },
                ]
                env = local.ray_env
                resources = {
                  requests = { cpu = var.head_resources.cpu_request, memory = var.head_resources.memory_request }
                  limits   = { cpu = var.head_resources.cpu_limit, memory = var.head_resources.memory_limit }
                }
                securityContext = local.container_security_context
                volumeMounts    = local.ray_mounts
              },
            ]
            volumes = local.ray_volumes
          }
        }
      }

      workerGroupSpecs = [
        {
          groupName      = "cpu"
          minReplicas    = var.worker_min_replicas
          maxReplicas    = var.worker_max_replicas
          rayStartParams = {}
          template = {
            metadata = { labels = local.labels }
            spec = {
              automountServiceAccountToken = false
              securityContext              = local.pod_security_context
              containers = [
                {
                  name            = "ray-worker"
                  image           = var.image
                  imagePullPolicy = "Always"
                  workingDir      = local.workspace
                  env             = local.ray_env
                  resources = {
                    requests = { cpu = var.worker_resources.cpu_request, memory = var.worker_resources.memory_request }
                    limits   = { cpu = var.worker_resources.cpu_limit, memory = var.worker_resources.memory_limit }
                  }
                  securityContext = local.container_security_context
                  volumeMounts    = local.ray_mounts
                },
              ]
              volumes = local.ray_volumes
            }
          }
        },
      ]
    }
  }

  depends_on = [kubernetes_manifest.runtime_secret]
}

# One run of the offline pipeline on the cluster above. clusterSelector
# (ray.io/cluster: NAME) is what KubeRay documents for running a RayJob on an
# existing RayCluster (ray-operator/config/samples/ray-job.use-existing-raycluster.yaml);
# rayClusterSpec would create a cluster of its own for every job. In that
# mode KubeRay never deletes the selected cluster, and refuses backoffLimit > 0
# and suspend. Created once; to run it again:
# terraform apply -replace=module.ray_offline.kubernetes_manifest.foundation_job
resource "kubernetes_manifest" "foundation_job" {
  manifest = {
    apiVersion = "ray.io/v1"
    kind       = "RayJob"
    metadata = {
      name      = local.job_name
      namespace = kubernetes_namespace_v1.ray.metadata[0].name
      labels    = local.labels
    }
    spec = {
      clusterSelector = {
        "ray.io/cluster" = var.name
      }
      entrypoint = local.foundation_entrypoint

      # The cluster is shared and outlives the job, and the RayJob stays as
      # the record of the run (status, submitter logs): nothing to shut down.
      # A TTL needs shutdownAfterJobFinishes, so it is 0.
      shutdownAfterJobFinishes = false
      ttlSecondsAfterFinished  = 0
      # A retry would rerun the whole pipeline; KubeRay allows none with clusterSelector.
      backoffLimit          = 0
      activeDeadlineSeconds = var.job_active_deadline_seconds

      # A Kubernetes Job runs `ray job submit` against the head (KubeRay's
      # default mode); it checks `ray job status` first, so its own retries do
      # not submit the pipeline twice.
      submissionMode  = "K8sJobMode"
      submitterConfig = { backoffLimit = 2 }
      submitterPodTemplate = {
        metadata = { labels = local.labels }
        spec = {
          restartPolicy                = "Never"
          automountServiceAccountToken = false
          securityContext              = local.pod_security_context
          containers = [
            {
              name            = "ray-job-submitter"
              image           = var.image
              imagePullPolicy = "Always"
              resources = {
                requests = { cpu = "250m", memory = "512Mi" }
                limits   = { cpu = "1", memory = "1Gi" }
              }
              securityContext = local.container_security_context
              volumeMounts    = local.scratch_mounts
            },
          ]
          volumes = local.scratch_volumes
        }
      }
    }
  }

  depends_on = [kubernetes_manifest.cluster]
}
