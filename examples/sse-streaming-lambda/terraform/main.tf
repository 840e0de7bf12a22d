provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Application = "sse-streaming-lambda"
      Environment = var.env
      ManagedBy   = "terraform"
    }
  }
}

locals {
  # Also the ECR repository name that lambda-image-publish pushes to by default
  # ("{env}-sse-streaming-lambda"); change both together.
  name = "${var.env}-sse-streaming-lambda"
}

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

# ---------------------------------------------------------------------------------
# ECR repository
#
# The repository must exist before the first publish: the deploy workflow builds and
# pushes the image *before* `terraform plan`, because the function needs the image's
# digest. On a fresh account, create it once with a targeted apply (this is what
# lambda-image-publish tells you when the repository is missing):
#
#   terraform apply -target=aws_ecr_repository.this -var env=preprod -var region=eu-west-1
#
# image_uri may stay unset for that apply; every later apply needs it.
# ---------------------------------------------------------------------------------
resource "aws_ecr_repository" "this" {
  name = "${var.env}-sse-streaming-lambda"

  # MUTABLE so the publish action can move convenience tags; the function never uses a
  # tag, it is pinned by digest (see var.image_uri).
  image_tag_mutability = "MUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }
}

# Keeps the 30 most recent images and expires untagged ones after 7 days (rules in
# lifecycle-policy.json). The running image must stay among them: Lambda periodically
# re-fetches the function's image, and if it no longer exists in ECR the function goes
# to the Failed state and every invocation fails. The publish action tags every image,
# so a deployed digest is only at risk once 30 newer images have been pushed, or if
# all of its tags were moved to other images.
resource "aws_ecr_lifecycle_policy" "this" {
  repository = aws_ecr_repository.this.name
  policy     = file("${path.module}/lifecycle-policy.json")
}

# Lets the Lambda service pull images from this repository for this account's
# functions. Lambda tries to add such a statement by itself when the deploying
# principal may change repository policies; declaring it here does not depend on that.
data "aws_iam_policy_document" "ecr_lambda_pull" {
  statement {
    sid     = "LambdaECRImageRetrievalPolicy"
    actions = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }

    condition {
      test     = "StringLike"
      variable = "aws:sourceArn"
      values   = ["arn:${data.aws_partition.current.partition}:lambda:${var.region}:${data.aws_caller_identity.current.account_id}:function:*"]
    }
  }

  # Cross-account promotion: the next environment's deploy role (another account) reads
  # this repository's images to copy them, byte for byte, into its own. Read-only.
  dynamic "statement" {
    for_each = length(var.pull_principal_arns) > 0 ? [1] : []
    content {
      sid = "PromoteFromThisRepository"
      actions = [
        "ecr:BatchGetImage",
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
      ]

      principals {
        type        = "AWS"
        identifiers = var.pull_principal_arns
      }
    }
  }
}

resource "aws_ecr_repository_policy" "this" {
  repository = aws_ecr_repository.this.name
  policy     = data.aws_iam_policy_document.ecr_lambda_pull.json
}

# ---------------------------------------------------------------------------------
# Execution role: CloudWatch Logs only. The image pull is not made with this role
# (see aws_ecr_repository_policy.this).
# ---------------------------------------------------------------------------------
data "aws_iam_policy_document" "lambda_assume_role" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = local.name
  assume_role_policy = data.aws_iam_policy_document.lambda_assume_role.json
}

resource "aws_iam_role_policy_attachment" "basic_execution" {
  role       = aws_iam_role.this.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
}

# Created here so it has a retention period; Lambda would otherwise create it on the
# first invocation with logs kept forever.
resource "aws_cloudwatch_log_group" "this" {
  name              = "/aws/lambda/${local.name}"
  retention_in_days = 14
}

# ---------------------------------------------------------------------------------
# Function
# ---------------------------------------------------------------------------------
resource "aws_lambda_function" "this" {
  function_name = local.name
  role          = aws_iam_role.this.arn

  package_type = "Image"
  # Digest-pinned: each publish yields a new digest, so Terraform sees a change and
  # updates the function code.
  image_uri = var.image_uri
  # Must match the platform the image was built for (linux/amd64).
  architectures = ["x86_64"]

  memory_size = var.memory_size
  timeout     = var.timeout

  environment {
    variables = {
      # Already set in the Dockerfile; repeated so that the adapter's mode and the
      # Function URL's invoke mode below are visible side by side.
      AWS_LWA_INVOKE_MODE     = "response_stream"
      APP_ENV                 = var.env
      SSE_EVENT_DELAY_SECONDS = "0.5"
    }
  }

  lifecycle {
    precondition {
      condition     = var.image_uri != null
      error_message = "image_uri is required (the digest-pinned output image-uri of lambda-image-publish). Only the bootstrap apply targeting aws_ecr_repository.this may omit it."
    }
  }

  depends_on = [
    aws_ecr_repository_policy.this,
    aws_iam_role_policy_attachment.basic_execution,
    aws_cloudwatch_log_group.this,
  ]
}

resource "aws_lambda_function_url" "this" {
  function_name = aws_lambda_function.this.function_name

  # AWS_IAM: the URL is not public; callers sign requests with SigV4 (for example
  # `curl --aws-sigv4 "aws:amz:<region>:lambda"`), or put CloudFront in front with
  # origin access control. Use "NONE" only if the stream is meant to be public.
  authorization_type = "AWS_IAM"

  # Sends the body to the client as the app produces it, for as long as the function
  # timeout allows. BUFFERED would hold every event until the response ends. Must agree
  # with AWS_LWA_INVOKE_MODE=response_stream.
  invoke_mode = "RESPONSE_STREAM"
}
