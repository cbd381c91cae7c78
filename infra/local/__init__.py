"""Development and tests only, never deployed: what stands in for AWS on one machine (the
local stack, the DynamoDB and API Gateway emulators). The product imports nothing of it
(an import-linter contract), and the Lambda artifact does not ship it."""
