"""Build an AWS Lambda container image with BuildKit and publish it to Amazon ECR.

The package is the entrypoint of the `lambda-image-publish` GitHub Action
(`python -m entrypoint`). Its folders are its layers; imports only go down this list
(tests/test_layers.py holds it, and that there are no import circles):

    commands/   the actions: publish and release, promote and rollback, verify, the CLI
    inputs/     every action's inputs (and the `config` file) parsed once into frozen objects
    build/      the Dockerfile, the build context and its fingerprint, BuildKit, cache modes
    checks/     Lambda's rules, image facts, the smoke boot, the Terraform plan
    registry/   image references, the registry's HTTP API, tags and copies, ECR
    engine/     the Docker engine (docker-py): find it, inspect, run, push
    github.py   GitHub's side: log commands, outputs, the job summary
    cancel.py   SIGTERM/SIGINT: stop what runs and put back what moved
    errors.py   the exception hierarchy: every failure's cause and fix

`build` and `checks` sit side by side and do not import each other; `engine` may name a
`registry` login's type, never the reverse.
"""
