"""Build an AWS Lambda container image with BuildKit and publish it to Amazon ECR.

The package is the entrypoint of the `lambda-image-publish` GitHub Action
(`python -m entrypoint`); every outside system sits behind one module:
`buildkit` (docker CLI, given what `cli_env` allows), `engine` (docker-py), `ecr` (boto3), `registry` over
`transport` (the registry's HTTP API) and `github` (log commands and files).
Inputs are parsed in `inputs`; the Dockerfile is read by `dockerfile`.
"""
