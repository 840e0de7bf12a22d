"""What is checked before anything reaches Lambda: `lambda_rules` (the rules Lambda enforces
on an image, from the engine or a registry), `imagefacts` (what those rules know of one
image), `smoke` and `smoke_probe` (boot the image and probe it as the adapter would),
`tfplan` (the images a Terraform plan deploys), `sizes` (an image's layers and their sizes
from the registry, the change against the environment's previous image, the size budget);
and after the apply, `lambda_api` (Lambda's API: a function's state and the image it
resolved, its function URL) and `url_probe` (a function URL read from the runner as a
stream).

May import the engine, the registry and the ground floor (github, cancel, errors); never
build, inputs or commands.
"""
