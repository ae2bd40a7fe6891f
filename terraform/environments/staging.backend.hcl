# Staging's state, kept apart from the other environments'. Read by
# `terraform -chdir=terraform/stack init -backend-config=../environments/staging.backend.hcl`;
# bucket, region and lock table are account-specific and given at init too
# (docs/deploy.md).
key = "feedrank/staging.tfstate"
