variable "env" {
  description = "Deployment environment; part of every resource name."
  type        = string

  validation {
    condition     = contains(["preprod", "prod"], var.env)
    error_message = "env must be \"preprod\" or \"prod\"."
  }
}

variable "region" {
  description = "AWS region of the ECR repository and the function (for example eu-west-1)."
  type        = string
}

variable "image_uri" {
  description = <<-EOT
    Image for the function, pinned by digest:
    <account>.dkr.ecr.<region>.amazonaws.com/<env>-sse-streaming-lambda@sha256:<64 hex>.
    The deploy workflow passes the image-uri output of lambda-image-publish.
    Left null only for the bootstrap apply that creates the ECR repository.
  EOT
  type        = string
  default     = null

  validation {
    # null passes here so that `terraform apply -target=aws_ecr_repository.this` works
    # before any image exists; the function's precondition (main.tf) rejects null.
    condition     = var.image_uri == null || can(regex("^[^@]+@sha256:[0-9a-f]{64}$", var.image_uri))
    error_message = "image_uri must be pinned by digest (<repository>@sha256:<64 lowercase hex>), not a tag: Lambda resolves a tag only when the function code is updated, and Terraform sees an unchanged tag as no change, so pushing a new image under the same tag would never redeploy the function."
  }
}

variable "memory_size" {
  description = "Function memory in MB (CPU is allocated in proportion)."
  type        = number
  default     = 512

  validation {
    condition     = var.memory_size >= 128 && var.memory_size <= 10240
    error_message = "memory_size must be between 128 and 10240 MB."
  }
}

variable "timeout" {
  description = "Function timeout in seconds. It also caps how long one SSE stream can last; the app's largest stream (50 events, 2 s apart) takes about 100 s."
  type        = number
  default     = 120

  validation {
    condition     = var.timeout >= 1 && var.timeout <= 900
    error_message = "timeout must be between 1 and 900 seconds."
  }
}

variable "pull_principal_arns" {
  description = "IAM role ARNs of other accounts that may pull this repository's images to promote them (the prod deploy role, on preprod's repository). Empty: none."
  type        = list(string)
  default     = []
}
