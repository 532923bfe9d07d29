"""Query engine: pure mergeable aggregates, a per-fragment plan and an in-process executor.

Never imports Ray: the Ray executor lives in ``actlake.service.query_ray`` and runs the same plan
items with the same aggregates, so its results equal the local executor's."""
