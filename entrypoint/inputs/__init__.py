"""Inputs of every action (publish, verify, promote, rollback): read once, validated once, frozen.

`read_raw` is the only reader of `INPUT_*` (through actions-toolkit, which names them as
the runner does: `INPUT_` + the name upper-cased, hyphens kept) and of the command-line
flags that stand in for them locally. Each `parse_*` turns that raw mapping into a frozen
object or one `InputError` naming the input and the fix; it touches nothing but the file
system it is told to look at.

`common` holds what the actions share (patterns, the environment, region, registry,
repository, platform and tag parsers); `publish` the publish action's inputs, a `config`
file's images (read by `config`) included; `promote`, `verify` and `deployed` the other
actions'.

May import build, checks and registry for the value types they define (cache modes, smoke
specs, references) and the ground floor; never a command.
"""

from entrypoint.checks.lambda_rules import parse_invoke_mode
from entrypoint.inputs.common import (
    DEFAULT_PLATFORM,
    PLATFORMS,
    SHA_RE,
    parse_cache_mode,
    parse_smoke,
    path_in,
    read_raw,
)
from entrypoint.inputs.deployed import DEPLOYED_INPUTS, DeployedInputs, parse_deployed
from entrypoint.inputs.promote import (
    PROMOTE_INPUTS,
    ROLLBACK_INPUTS,
    PromoteInputs,
    RollbackInputs,
    parse_promote,
    parse_rollback,
)
from entrypoint.inputs.publish import (
    PUBLISH_INPUTS,
    PublishInputs,
    ReleaseInputs,
    parse_parallel,
    parse_publish,
    parse_release,
)
from entrypoint.inputs.verify import VERIFY_INPUTS, VerifyInputs, parse_verify

__all__ = [
    "DEFAULT_PLATFORM",
    "DEPLOYED_INPUTS",
    "PLATFORMS",
    "PROMOTE_INPUTS",
    "PUBLISH_INPUTS",
    "ROLLBACK_INPUTS",
    "SHA_RE",
    "VERIFY_INPUTS",
    "DeployedInputs",
    "PromoteInputs",
    "PublishInputs",
    "ReleaseInputs",
    "RollbackInputs",
    "VerifyInputs",
    "parse_cache_mode",
    "parse_deployed",
    "parse_invoke_mode",
    "parse_parallel",
    "parse_promote",
    "parse_publish",
    "parse_release",
    "parse_rollback",
    "parse_smoke",
    "parse_verify",
    "path_in",
    "read_raw",
]
