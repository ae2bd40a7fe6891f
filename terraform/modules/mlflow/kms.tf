data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

# One customer-managed key for everything the tracking server stores: the
# artifact bucket, the database, its Performance Insights and its master secret.
resource "aws_kms_key" "mlflow" {
  description             = "${var.name}: MLflow artifacts, database and database credentials"
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
    ]
  })
  tags = var.tags
}

resource "aws_kms_alias" "mlflow" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.mlflow.key_id
}
