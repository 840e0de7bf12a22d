terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }

  # Configure a remote backend before running the deploy workflow: with the default
  # local backend every CI run starts from empty state and tries to create everything
  # again. The workflow passes a per-environment state key at init time
  # (-backend-config="key=sse-streaming-lambda/<env>.tfstate"), so leave `key` out here.
  #
  # backend "s3" {
  #   bucket       = "my-terraform-state-bucket"
  #   region       = "eu-west-1"
  #   use_lockfile = true # S3-native state locking (Terraform >= 1.10)
  # }
}
