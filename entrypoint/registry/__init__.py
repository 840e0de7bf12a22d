"""Registries, in go-containerregistry's layers: `reference` parses names, `transport` owns
the session, authentication, where the login may go and the one retry policy, `client`
names the operations of the OCI distribution API, `tags` moves tags (with undo), `transfer`
copies an image registry to registry; `ecr` is the ECR API (boto3) and `session` the one
ECR login a run uses.

May import the ground floor only (github, cancel, errors).
"""
