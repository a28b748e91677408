"""Replay tooling for the WhatsApp webhook receiver; standard library only (Python 3.11+).

Run from the repository root: ``python3 -m scripts.replay --help``. Subcommands:
``scenario NAME|PATH`` plays (and with ``--expect`` verifies) a scenario of ``scenarios/``,
``file PATH.jsonl`` replays a capture with its original spacing, ``load`` runs sustained load
with reply accounting, ``seed`` posts the seed payloads of the brief.

Modules, each depending only on those listed before it:

* ``events``    - webhook event builders, ``{name}``/``{now}`` placeholders, reply parsing.
* ``client``    - HTTP client: keep-alive connections, per-thread pool, signing, 503 retries.
* ``player``    - timed playback of steps; JSON-lines files.
* ``scenarios`` - scenario files: load, validate, run, verify the expectations.
* ``load``      - load runner, reply analysis, percentiles, report.
* ``cli``       - argument parsing, subcommands, exit codes; ``__main__`` runs it.
"""
