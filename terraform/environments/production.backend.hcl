# Production's state, kept apart from the other environments'. Read by
# `terraform -chdir=terraform/stack init -backend-config=../environments/production.backend.hcl`;
# bucket, region and lock table are account-specific and given at init too
# (docs/deploy.md).
key = "feedrank/production.tfstate"
