"""The build: the Dockerfile read once (`dockerfile_syntax`, `dockerfile`), the build context
(`context`) and the fingerprint that decides whether anything changed (`fingerprint`), which
layers a code change rebuilds (`layering`), the BuildKit build through the docker CLI
(`buildkit`, its environment in `cli_env`, its progress log in `buildlog`) and the cache
modes (`cache`).

May import the engine, the registry and the ground floor (github, cancel, errors); never
checks, inputs or commands.
"""
