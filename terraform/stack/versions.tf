terraform {
  required_version = ">= 1.9.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80, < 7.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.32, < 3.0"
    }
  }

  # Partial configuration: the state key of each environment comes from
  # ../environments/ENV.backend.hcl; bucket, region and dynamodb_table are given
  # at `terraform init -backend-config=...` (docs/deploy.md); no account-specific
  # value and no credential lives in code.
  backend "s3" {
    encrypt = true
  }
}
