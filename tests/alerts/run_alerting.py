"""Runs one AlertingService until killed (for the crash test): python -m tests.alerts.run_alerting BOOTSTRAP PREFIX APP ROUTING ID."""

import asyncio
import sys

from core.settings import Settings
from streams.alerting import AlertingService


async def main(bootstrap: str, prefix: str, app_id: str, routing: str, worker_id: str) -> None:
    settings = Settings(kafka=bootstrap, topic_prefix=prefix, app_id=app_id, partitions=4, commit_interval=0.2,
                        clock="wall")
    svc = AlertingService(settings, bootstrap, routing, worker_id=worker_id)
    await svc.start()
    print("started", flush=True)
    while True:  # progress for the test's failure message
        await asyncio.sleep(2)
        print(f"processor {svc.processor.stats} deliverer {svc.deliverer.stats} views_ready {svc.views_ready()} "
              f"assigned {sorted(tp.partition for tp in svc.deliverer.consumer.assignment())}",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    asyncio.run(main(*sys.argv[1:6]))
