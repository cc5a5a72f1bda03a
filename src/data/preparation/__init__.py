"""Dataset preparation: one builder per dataset, writing the shared layout atomically and idempotently."""
