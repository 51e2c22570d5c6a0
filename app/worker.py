"""The Faust host of a worker: web server, pages, the health timer and the lifecycle of the built components.

:func:`app.components.build` makes every component from the settings (the composition root); :func:`create_app`
hands them to a Faust app: its pages (:mod:`app.serving.web`), its health timer (:mod:`app.monitoring.monitor`)
and one service that starts and stops the loops. ``python -m app`` (:mod:`app.__main__`) creates the topics first,
then runs :func:`main`. Importing this module builds nothing.
"""

from __future__ import annotations

import asyncio

import faust
from faust.app.base import BootStrategy
from mode import Service

from app import allocator
from app.components import Components, build
from app.kafka.clients import Connection
from app.kafka.security import faust_credentials
from app.kafka.tuning import apply_tuning
from app.monitoring import monitor
from app.serving import web
from app.settings import Settings


class DecisionPathBoot(BootStrategy):
    """Faust's own Kafka clients stay off: no agent reads a topic here (a Faust consumer group would hold a
    restarted worker back for its session timeout, 60 s, after a SIGKILL), and a Faust producer that cannot
    bootstrap at start ends the worker while the broker is away; the health events have a producer of their own."""

    enable_kafka = False


class FraudApp(faust.App):
    BootStrategy = DecisionPathBoot


def create_app(components: Components) -> faust.App:
    """A Faust app hosting ``components``: the pages, the health timer, and the loops started and stopped with it."""
    settings = components.settings
    apply_tuning(fetch_pause_ms=settings.fetch_pause_ms)
    app = FraudApp(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        broker_credentials=faust_credentials(settings),
        store="memory://",
        datadir=settings.data_dir,
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        producer_linger=settings.producer_linger_ms / 1000.0,
        autodiscover=False,
    )
    health = monitor.HealthPublisher(Connection.of(settings), settings.health_topic)

    @app.timer(interval=settings.health_interval_s)
    async def publish_health() -> None:
        await monitor.publish_health(components, health.send)

    if settings.memory_trim_interval_s > 0:

        @app.timer(interval=settings.memory_trim_interval_s)
        async def trim_memory() -> None:
            await asyncio.to_thread(allocator.trim_and_count)

    web.register(app, components)

    @app.service
    class DecisionPath(Service):
        """The terminal feed, the model follower, the decision loop and the trainer, started and stopped with it."""

        async def on_started(self) -> None:
            await components.start()

        async def on_stop(self) -> None:
            await components.stop()
            await health.close()

    return app


def main(settings: Settings, faust_argv: list[str]) -> None:
    """Build the components, host them in a Faust app and hand it the command line (``worker ...``)."""
    import sys

    sys.argv = [sys.argv[0], *faust_argv]
    create_app(build(settings)).main()
