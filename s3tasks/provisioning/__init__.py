"""Make AWS match the models: desired state → plan (pure) → apply (read-merge-write).

Read in order: `model_rows` (ORM → plain rows), `notifications` (compile rules into S3
entries, merge into a bucket's configuration), `desired`, `current` (boto3 reads), `plan`,
`apply`, `records`, `service` (the callables), `iam` (least-privilege policies).
"""

from __future__ import annotations
