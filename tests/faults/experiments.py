"""The faults, each a run of bursty traffic with one fault injected at a known moment, and
the scenarios of issue 11 placed inside the run whose fault they need (each scenario's own
conversation follows its exact timeline around the fault).

Each function takes the FaultEnv and returns a dict: "report" (the checker's Report of the
whole run) and the scenario's own figures. Short by default; FAULTS_FULL=1 runs the long
version (docs/reliability.md).
"""

import signal
import threading
import time

from tests.faults.deps import wait_until
from tests.faults.harness import FULL, Run
from tests.helpers import new_id

PRE = 20.0 if FULL else 3.0  # traffic before the fault
POST = 40.0 if FULL else 5.0  # traffic after the fault's repair
PG_DOWN = 10.0
REDIS_DOWN = 2.0
# Stalls outlast the 10 s bound on an answer, so a request that hangs shows.
PG_STALL = 25.0 if FULL else 13.0
REDIS_STALL = 30.0 if FULL else 13.0
WORKER_DOWN = 90.0 if FULL else 65.0  # more than 60 s, the periodic jobs' result_ttl
AFTER_PG = 130.0 if FULL else 10.0  # scenario 5: stale connections show up late
SCENARIO_1_UNTIL = 75.0 if FULL else 20.0


def accepted_at(outcome):
    """Wall clock of the answer that accepted a message (its arrival, give or take)."""
    return outcome.attempts[-1].answered


def poll(checks, deadline, interval=0.2):
    """Poll named predicates until all are true or the deadline (wall clock); returns
    {name: wall clock when it first held, or None}."""
    done = dict.fromkeys(checks)
    while True:
        for name, predicate in checks.items():
            if done[name] is None:
                try:
                    if predicate():
                        done[name] = time.time()
                except Exception:  # a probe of a dependency still coming back
                    pass
        if all(done.values()) or time.time() > deadline:
            return done
        time.sleep(interval)


def in_threads(functions):
    """Start each function in a thread; returns the threads and their results (a dict)."""
    results = {}

    def call(key, fn):
        results[key] = fn()

    threads = [threading.Thread(target=call, args=(k, f), daemon=True) for k, f in functions]
    for thread in threads:
        thread.start()
    return threads, results


def burst_probes(run, conversation_ids):
    """One message to each conversation at once (threads); returns the threads and outcomes."""
    return in_threads([(c, lambda c=c: run.sender.message(c)) for c in conversation_ids])


def first_attempts(outcomes):
    return [(o.attempts[0].status, o.attempts[0].seconds) for o in outcomes.values()]


def held_status(env, message_id):
    rows = env.sql("SELECT status FROM held_messages WHERE id = %s", (message_id,))
    return rows[0][0] if rows else None


def answered(env, message_id):
    rows = env.sql("SELECT reply_id FROM messages WHERE id = %s", (message_id,))
    return bool(rows and rows[0][0])


# --- process faults -------------------------------------------------------------------


def worker_kill(env):
    """SIGKILL the worker while a flush waits inside its transaction; restart it at once."""
    run = Run(env, "worker SIGKILL mid-flush").begin()
    victim = run.conversation()
    run.at(PRE - 4.6)
    run.sender.message(victim)  # its flush is due 0.4 s after PRE
    run.at(PRE)
    blocker = env.db()
    blocker.autocommit = False
    with blocker.cursor() as cur:
        # Hold the conversation row, so the flush stops inside its transaction.
        cur.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (victim,))
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND query LIKE '%FOR UPDATE%'"
    )
    name = env.stack.named("worker")[0]
    with run.fault("worker SIGKILL"):
        seen = poll({"flush": lambda: env.sql(waiting)[0][0] > 0}, time.time() + 8)
        if seen["flush"] is None:
            run.notes.append("the flush was not seen waiting on the row lock; killed anyway")
        env.kill(name)
        blocker.rollback()
        blocker.close()
        env.restart(name)
    run.at(run.fault_end() - run.t0 + POST)
    return {"report": run.finish(), "flush_seen": seen["flush"] is not None}


def scheduler_kill(env):
    """SIGKILL the scheduler under load; restart it at once."""
    run = Run(env, "scheduler SIGKILL").begin()
    run.at(PRE)
    with run.fault("scheduler SIGKILL"):
        name = env.kill(env.stack.named("scheduler")[0])
        env.restart(name)
    run.at(run.fault_end() - run.t0 + POST)
    return {"report": run.finish()}


def web_worker_kill(env):
    """SIGKILL one gunicorn worker process under load; the master starts another."""
    run = Run(env, "gunicorn worker SIGKILL").begin()
    run.at(PRE)
    with run.fault("gunicorn worker SIGKILL"):
        before = set(env.stack.web_workers())
        pid = env.stack.kill_web_worker()
        wait_until(lambda: len(set(env.stack.web_workers()) - before) >= 1, 30, "a new worker")
    run.notes.append(f"killed gunicorn worker {pid}")
    run.at(run.fault_end() - run.t0 + POST)
    return {"report": run.finish()}


def two_and_two(env):
    """Two workers and two schedulers for the whole run, and scenario 8 in it: a scheduler
    lock left behind (`SET rq:scheduler_lock x EX 10 NX`) 4.5 s after a message. No fault
    window: a lock left by a dead scheduler may delay nothing past the lateness bound."""
    env.heal()
    env.stack.start_workers(1)
    env.stack.start_schedulers(1)
    env.wait_worker()
    extra = [env.stack.named("worker")[-1], env.stack.named("scheduler")[-1]]
    run = Run(env, "two workers, two schedulers (+ lock left)").begin()
    eight = run.conversation()
    run.at(PRE)
    message = run.sender.message(eight)
    run.at(PRE + 4.5)
    names = env.stack.named("scheduler")
    offsets = {n: env.log_size(n) for n in names}
    client = env.redis_client()
    # NX: a live scheduler holds the lock for a moment at each poll; take it when it is free.
    lock = poll(
        {"set": lambda: client.set("rq:scheduler_lock", "x", ex=10, nx=True)}, time.time() + 1, 0.01
    )
    run.at(PRE + 14.5)  # the lock's whole life
    warnings = sum(env.log_since(n, offsets[n]).count("Lock already taken") for n in names)
    run.at(PRE + 14.5 + POST)
    report = run.finish()
    for name in extra:
        env.kill(name, signal.SIGTERM)
    return {
        "report": report,
        "lock_set": lock["set"] is not None,
        "lock_warnings": warnings,
        "message_at": accepted_at(message),
        "ids": [message.message_id],
        "replies": run.answer_times(eight),
    }


def reload_web(env):
    """Two SIGHUPs to the gunicorn master under load (scenario 9): nothing lost, no window
    allowed, and webhook_events_total never goes down."""
    run = Run(env, "graceful reload (2x SIGHUP)").begin()
    samples, stop = [], threading.Event()

    def sample():
        while not stop.wait(0.5):
            samples.append((time.time(), env.events_total()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run.at(PRE)
    env.stack.reload_web()
    run.at(PRE + 4)
    env.stack.reload_web()
    run.at(PRE + 4 + POST)
    report = run.finish()
    stop.set()
    sampler.join()
    values = [v for _, v in samples if v is not None]
    drops = [(a, b) for a, b in zip(values, values[1:], strict=False) if b < a]
    return {
        "report": report,
        "samples": len(values),
        "failed_scrapes": len(samples) - len(values),
        "drops": drops,
        "peak": max(values, default=0),
        "final": values[-1] if values else None,
    }


# --- PostgreSQL -----------------------------------------------------------------------


def postgres_stop(env):
    """PostgreSQL stopped 10 s under load (scenario 5: no 5xx once it is back)."""
    run = Run(env, "PostgreSQL stopped 10 s").begin()
    run.at(PRE)
    with run.fault("PostgreSQL stopped"):
        env.stop_postgres()
        time.sleep(PG_DOWN)  # the fault itself
        env.start_postgres()
    end = run.fault_end()
    run.at(end - run.t0 + AFTER_PG)
    report = run.finish()
    after = [a for a in run.sender.attempts if a.sent >= end + 1.0]
    failed = [a for a in after if a.status is not None and a.status >= 500]
    return {
        "report": report,
        "after_requests": len(after),
        "after_5xx": len(failed),
        "after_5xx_at": [round(a.sent - end, 1) for a in failed],
    }


def scenario_1(env):
    """Issue 11, scenario 1: message at t=0, PostgreSQL stopped at t=1 and started at t=8,
    then one message every 6.5 s until t=75 (t=20 in the short version)."""
    run = Run(env, "scenario 1: failed flush, busy conversation", conversations=0).begin()
    c = run.conversation()
    run.t0 = time.time()

    def messages():
        k = 0
        while 6.5 * k <= SCENARIO_1_UNTIL:
            run.at(6.5 * k)
            run.sender.message(c)
            k += 1

    sender = threading.Thread(target=messages, daemon=True)
    sender.start()
    run.at(1)
    with run.fault("PostgreSQL stopped"):
        env.stop_postgres()
        run.at(8)
        env.start_postgres()
    sender.join()
    report = run.finish()
    return {"report": report, "replies": run.answer_times(c)}


def postgres_stall(env):
    """PostgreSQL stalled behind the proxy (scenario 7: 20 concurrent webhooks and /readyz
    during the stall answer within the bound)."""
    run = Run(env, "PostgreSQL stalled").begin()
    probes = [run.conversation() for _ in range(20)]
    run.at(PRE)
    with run.fault("PostgreSQL stalled"):
        env.pg_proxy.stall()
        time.sleep(1)  # then the probes, inside the stall
        threads, outcomes = burst_probes(run, probes)
        ready_threads, ready = in_threads([("readyz", env.readyz)])
        run.at(PRE + PG_STALL)
        env.pg_proxy.resume()
    for thread in threads + ready_threads:
        thread.join(timeout=60)
    run.at(run.fault_end() - run.t0 + POST)
    return {
        "report": run.finish(),
        "probes": first_attempts(outcomes),
        "readyz": ready.get("readyz"),
    }


# --- Redis ----------------------------------------------------------------------------


def redis_restart(env):
    """Redis killed and started again empty after 2 s (scenario 4: worker and scheduler
    survive it)."""
    run = Run(env, "Redis restarted").begin()
    run.at(PRE)
    with run.fault("Redis restarted"):
        env.restart_redis(REDIS_DOWN)
    run.at(run.fault_end() - run.t0 + POST)
    return {"report": run.finish()}


def flushall(env):
    """FLUSHALL under load, with scenario 2 (m1 at -3 s, m2 at +3.5 s: two replies) and
    scenario 3 (a message 2 s before: answered; a held message: expires; /readyz)."""
    run = Run(env, "FLUSHALL").begin()
    two, three = run.conversation(), run.conversation()
    run.at(PRE - 3)
    m1 = run.sender.message(two)
    run.at(PRE - 2)
    before = run.sender.message(three)
    run.at(PRE - 1)
    held = run.sender.message(new_id())  # its conversation never comes: it must expire
    run.at(PRE)
    with run.fault("FLUSHALL"):
        env.flushall()
    flushed = run.fault_end()
    run.at(PRE + 3.5)
    m2 = run.sender.message(two)
    times = poll(
        {
            "answered": lambda: answered(env, before.message_id),
            "expired": lambda: held_status(env, held.message_id) == "EXPIRED",
            "ready": lambda: env.readyz(timeout=3)[0] == 200,
        },
        flushed + 13,
    )
    run.at(max(run.elapsed(), PRE + 3.5 + POST))
    report = run.finish()
    return {
        "report": report,
        "flushed": flushed,
        "two": {"ids": [[m1.message_id], [m2.message_id]], "replies": run.answer_times(two)},
        "m2_at": accepted_at(m2),
        "held_accepted": held.accepted,
        "held_status": held_status(env, held.message_id),
        "before_at": accepted_at(before),
        "after": {k: (v - flushed if v else None) for k, v in times.items()},
    }


def redis_stall(env):
    """Redis stalled behind the proxy after /readyz ran in the web workers (scenario 7:
    webhooks answer within the bound; scheduler and worker survive)."""
    run = Run(env, "Redis stalled").begin()
    probes = [run.conversation() for _ in range(12)]
    for _ in range(8):
        env.readyz(timeout=5)  # every web worker has run Worker.all() now
    run.at(PRE)
    with run.fault("Redis stalled"):
        env.redis_proxy.stall()
        time.sleep(1)  # then the probes, inside the stall
        threads, outcomes = burst_probes(run, probes)
        run.at(PRE + REDIS_STALL)
        env.redis_proxy.resume()
    for thread in threads:
        thread.join(timeout=60)
    run.at(run.fault_end() - run.t0 + POST)
    return {"report": run.finish(), "probes": first_attempts(outcomes)}


def worker_down(env):
    """The worker down for 65 s (90 s in full), then started again (scenario 6: a held
    message expires, a group whose buffer keys were lost is answered, /readyz says so)."""
    run = Run(env, f"worker down {WORKER_DOWN:.0f} s").begin()
    lost = run.conversation()
    name = env.stack.named("worker")[0]
    statuses = []

    def watch_ready(until):
        while run.elapsed() < until:
            statuses.append((run.elapsed(), env.readyz(timeout=3)[0]))
            run.at(min(run.elapsed() + 3, until))

    run.at(PRE)
    with run.fault("worker down"):
        env.kill(name)
        run.at(PRE + 1)
        lost_message = run.sender.message(lost)
        run.at(PRE + 2)
        client = env.redis_client()
        dropped = [key for key in client.scan_iter(match=f"*{lost}*")]
        if dropped:
            client.delete(*dropped)
        watch_ready(PRE + WORKER_DOWN - 8)
        held = run.sender.message(new_id())  # its window ends while the worker is down
        watch_ready(PRE + WORKER_DOWN)
        env.restart(name)
    end = run.fault_end()
    times = poll(
        {
            "answered": lambda: answered(env, lost_message.message_id),
            "expired": lambda: held_status(env, held.message_id) == "EXPIRED",
        },
        end + 12,
    )
    run.at(max(run.elapsed(), end - run.t0 + POST))
    report = run.finish()
    return {
        "report": report,
        "dropped_keys": dropped,
        "readyz": statuses,
        "held_accepted": held.accepted,
        "held_status": held_status(env, held.message_id),
        "after": {k: (v - end if v else None) for k, v in times.items()},
    }
