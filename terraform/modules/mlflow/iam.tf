# The MLflow server's pods reach the artifact bucket through an IAM role bound
# to their Kubernetes service account (IRSA): no access keys anywhere.

locals {
  oidc_issuer = replace(var.oidc_provider_arn, "/^arn:[^:]+:iam::[0-9]+:oidc-provider\\//", "")
  server_sa   = "mlflow"
}

data "aws_iam_policy_document" "server_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${local.server_sa}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "server" {
  name_prefix        = "${var.name}-server-"
  description        = "MLflow tracking server: read and write its artifact bucket"
  assume_role_policy = data.aws_iam_policy_document.server_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "server" {
  statement {
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.artifacts.arn]
  }
  statement {
    sid       = "ReadWriteArtifacts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.artifacts.arn}/*"]
  }
  statement {
    sid       = "UseArtifactKey"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.mlflow.arn]
  }
}

resource "aws_iam_role_policy" "server" {
  name   = "artifacts"
  role   = aws_iam_role.server.id
  policy = data.aws_iam_policy_document.server.json
}
