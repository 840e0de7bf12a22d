output "repository_url" {
  description = "ECR repository URL (<account>.dkr.ecr.<region>.amazonaws.com/<env>-sse-streaming-lambda)."
  value       = aws_ecr_repository.this.repository_url
}

output "function_name" {
  description = "Name of the Lambda function."
  value       = aws_lambda_function.this.function_name
}

output "function_url" {
  description = "Function URL serving /health and /stream (requires SigV4-signed requests)."
  value       = aws_lambda_function_url.this.function_url
}
