"""Flask CLI commands: the worker, the scheduler, and operator tools.

An action's command has the name of its job and use case (`flask reconcile_groups`,
`flask expire_held`, `flask prune_held`). May import: `service.pipeline` and below.
Never `service.api`.
"""

import json
import logging

import click
from flask import current_app
from flask.cli import AppGroup

from service.domain.clock import seconds_us
from service.domain.rules import EXPIRED, HELD
from service.infra.database import bound_waits_of_serving_process
from service.infra.queueing import get_scheduler, run_worker
from service.pipeline import holds, replies
from service.pipeline.queries import list_held
from service.runtime import freeze_startup_objects

log = logging.getLogger(__name__)


@click.command("worker")
@click.option("--burst", is_flag=True, help="Run the jobs already queued, then exit.")
@click.option("--name", default=None, help="Worker name (default: generated).")
def worker_command(burst, name):
    """Run an RQ worker for flush_group and the periodic jobs (warm shutdown on SIGTERM);
    it waits out Redis outages."""
    # rq logs every job at INFO; our own flush_group lines say what matters.
    level = "DEBUG" if current_app.config["LOG_LEVEL"] == "DEBUG" else "WARNING"
    bound_waits_of_serving_process(current_app)
    freeze_startup_objects()
    run_worker(name, burst=burst, logging_level=level)


@click.command("scheduler")
@click.option("--burst", is_flag=True, help="Move due jobs to the queue once, then exit.")
def scheduler_command(burst):
    """Run rq-scheduler: moves due flush_group jobs to the queue and keeps the periodic ones
    (expire_held, reconcile_groups) scheduled; it waits out Redis outages."""
    scheduler = get_scheduler()
    freeze_startup_objects()
    scheduler.run(burst=burst)


held_cli = AppGroup("held", help="Messages that arrived before their conversation.")


@held_cli.command("list")
@click.option("--expired", "status", flag_value=EXPIRED, help="Only expired (dropped) ones.")
@click.option("--waiting", "status", flag_value=HELD, help="Only ones still waiting.")
@click.option("--limit", default=100, show_default=True)
def held_list(status, limit):
    """List held and expired messages as JSON lines, newest first."""
    for row in list_held(status=status, limit=limit):
        click.echo(json.dumps({k: str(v) if v is not None else None for k, v in row.items()}))


@click.command("prune_held")
@click.option(
    "--older-than",
    "days",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    help="Days since the message expired.",
)
def prune_held(days):
    """Delete records of expired held messages (redeliveries of those ids are then new)."""
    deleted = holds.prune_held(seconds_us(days * 86400))
    click.echo(f"deleted {deleted} expired hold record(s)")


@click.command("reconcile_groups")
def reconcile_groups():
    """Re-arm overdue groups from the database now (after a Redis outage, say)."""
    ids = replies.reconcile_groups()
    click.echo(f"re-armed {len(ids)} conversation(s)")


@click.command("expire_held")
def expire_held():
    """Join or expire held messages whose hold window has passed, now."""
    dropped = holds.expire_held()
    click.echo(f"expired {dropped} held message(s)")


def init_app(app):
    app.cli.add_command(worker_command)
    app.cli.add_command(scheduler_command)
    app.cli.add_command(held_cli)
    for command in (prune_held, reconcile_groups, expire_held):
        app.cli.add_command(command)
