"""Make AWS match the models: desired state → plan (pure) → apply (read-merge-write).

Read in order: `model_rows` (ORM → plain rows), `notifications` (compile rules into S3
entries, merge into a bucket's configuration), `policies` (our statements, merged by Sid),
`desired`, `current` (boto3 reads), `ownership` (what is ours: records, tags, decisions) and
`ledger` (those records in the database), `steps` (typed plan values), `plan` with
`plan_queues`, `plan_subscriptions` and `plan_stale`, `apply`, `records` (sync status on the
rows), `service` (the callables), `text` (the plan for people), `iam` (least-privilege
policies).
"""

from __future__ import annotations
