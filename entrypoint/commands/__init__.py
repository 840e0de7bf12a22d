"""The actions, each a command of `python -m entrypoint`: `cli` (arguments and the one place
errors become an exit code), `publish` (one image's steps) driven by `release` (one image
or a `config` file's many), `plan` (what will be built, tagged and pushed, before any side
effect), `image_build` (one image built and checked), `promote` (and rollback), `verify`.

May import every other layer: inputs, build, checks, registry, engine and the ground floor
(github, cancel, errors). Nothing imports a command but another command.
"""
