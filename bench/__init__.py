"""Benchmark of issue 3: the action against a plain `docker login/build/tag/push`.

`bash bench/run.sh [--runs N]` sets up the local stack and runs `python -m bench`, which
publishes the example SSE Lambda both ways in four situations (clean, no change, code
changed, dependencies changed), each measured run on a freshly emptied engine like a new
GitHub runner, and writes `bench/results.md` and the README's benchmark section.
"""
