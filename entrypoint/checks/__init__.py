"""What is checked before anything reaches Lambda: `lambda_rules` (the rules Lambda enforces
on an image, from the engine or a registry), `imagefacts` (what those rules know of one
image), `smoke` and `smoke_probe` (boot the image and probe it as the adapter would),
`tfplan` (the images a Terraform plan deploys).

May import the engine, the registry and the ground floor (github, cancel, errors); never
build, inputs or commands.
"""
