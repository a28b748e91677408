"""CPU per delivery, in-process: N replies put straight into the outbox of the `bench`
database, then deliver_replies passes in this process until none is left, to the reference
receiver (scripts/receiver.py) running as its own process (its CPU is not counted).

Prints the deliveries made, this process's CPU time per delivery (ms, the sending threads
included; PostgreSQL's and Redis's are not) and the wall time. The database's schema is wiped
and migrated first; Redis index 11 is used for the metrics and notices.

    .venv/bin/python scripts/bench_delivery_cpu.py            # 1,000 replies
    .venv/bin/python scripts/bench_delivery_cpu.py --replies 5000
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    args = parser.parse_args()

    receiver = subprocess.Popen(
        [sys.executable, "-m", "scripts.receiver", "--port", "0", "--json", "--secret", SECRET],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = json.loads(receiver.stdout.readline())["url"]
    threading.Thread(target=lambda: [None for _ in receiver.stdout], daemon=True).start()
    os.environ.update(
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        REPLY_WEBHOOK_URL=url,
        REPLY_WEBHOOK_SECRET=SECRET,
    )
    sys.path.insert(0, str(ROOT))
    from flask_migrate import upgrade
    from sqlalchemy import text

    from service import create_app
    from service.extensions import db
    from service.pipeline import deliveries

    app = create_app()
    try:
        with app.app_context():
            db.session.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            db.session.commit()
            upgrade()
            fill(db, text, args.replies)
            started, cpu = time.monotonic(), time.process_time()
            total = 0
            while got := deliveries.deliver_replies()["delivered"]:
                total += got
            cpu_ms = (time.process_time() - cpu) / max(total, 1) * 1000
            print(
                f"{total} delivered; cpu ms per delivery {cpu_ms:.3f}; "
                f"wall {time.monotonic() - started:.2f} s"
            )
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


def fill(db, text, count):
    """`count` conversations, each with one message and its reply, the reply's delivery due."""
    now = datetime.now(UTC)
    connection = db.session.connection()
    for _ in range(count):
        ids = {"c": uuid.uuid4(), "r": uuid.uuid4(), "m": uuid.uuid4(), "t": now}
        connection.execute(text("INSERT INTO conversations VALUES (:c, 'OPEN', :t, :t)"), ids)
        connection.execute(
            text(
                "INSERT INTO messages (id, conversation_id, type, content, timestamp,"
                " received_at, generated, reply_id) VALUES (:r, :c, 'OUTBOUND', 'reply', :t, :t,"
                " true, NULL), (:m, :c, 'INBOUND', 'hi', :t, :t, false, :r)"
            ),
            ids,
        )
        connection.execute(
            text(
                "INSERT INTO deliveries (reply_id, conversation_id, status, attempts,"
                " created_at, retry_from, next_attempt_at)"
                " VALUES (:r, :c, 'pending', 0, :t, :t, :t)"
            ),
            ids,
        )
    db.session.commit()


if __name__ == "__main__":
    main()
