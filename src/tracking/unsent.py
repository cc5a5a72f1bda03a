"""`python -m src.tracking.unsent FILE TRACKING_URI`: send what a run could not send to MLflow.

A training run whose tracking server was unreachable when it ended leaves its unsent metrics,
artifacts and final status in `mlflow_unsent.jsonl` in its run folder (one JSON object a line).
This sends them, in order, and renames the file to `*.sent` so that nothing is sent twice.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from mlflow.entities import Metric

from src.tracking.runs import check_store, open_client, send

log = logging.getLogger(__name__)


def send_unsent(path: str | Path, tracking_uri: str) -> int:
    """Send every item in `path` to `tracking_uri`; return how many were sent."""
    path = Path(path)
    check_store(tracking_uri)
    client = open_client(tracking_uri)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        item = json.loads(line)
        payload = item["payload"]
        if item["kind"] == "metrics":
            payload = [Metric(key, value, timestamp, step) for key, value, timestamp, step in payload]
        send(client, (item["kind"], item["run_id"], payload))
        log.info("sent %d/%d", number, len(lines))
    path.rename(path.with_name(path.name + ".sent"))
    return len(lines)


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if len(argv) != 2:
        sys.exit("usage: python -m src.tracking.unsent RUN_FOLDER/mlflow_unsent.jsonl TRACKING_URI")
    count = send_unsent(argv[0], argv[1])
    log.info("%d items sent to %s", count, argv[1])


if __name__ == "__main__":
    main(sys.argv[1:])
