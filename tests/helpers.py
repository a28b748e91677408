"""Event builders and job drivers shared by the tests."""

import contextlib
import time
import uuid

from pytest_httpserver import HTTPServer
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from service.extensions import db
from service.infra.queueing import ROLES, get_queue, get_scheduler, get_worker


def new_id():
    return str(uuid.uuid4())


def new_conversation(conversation_id, timestamp="2025-06-04T14:20:00Z"):
    return {"type": "NEW_CONVERSATION", "timestamp": timestamp, "data": {"id": conversation_id}}


def new_message(
    message_id, conversation_id, content="Olá", timestamp="2025-06-04T14:20:05Z", **extra
):
    data = {"id": message_id, "conversation_id": conversation_id, "content": content, **extra}
    return {"type": "NEW_MESSAGE", "timestamp": timestamp, "data": data}


def close_conversation(conversation_id, timestamp="2025-06-04T14:25:00Z"):
    return {"type": "CLOSE_CONVERSATION", "timestamp": timestamp, "data": {"id": conversation_id}}


def post(client, event, status=None):
    """POST an event; check the status when given."""
    response = client.post("/webhook/", json=event)
    if status is not None:
        assert response.status_code == status, response.get_json()
    return response


def send(client, conversation_id, message_id=None):
    """POST a NEW_MESSAGE that must be accepted; return its id."""
    message_id = message_id or new_id()
    post(client, new_message(message_id, conversation_id), 202)
    return message_id


def open_conversation(client):
    conversation_id = new_id()
    post(client, new_conversation(conversation_id), 201)
    return conversation_id


def messages(client, conversation_id):
    response = client.get(f"/conversations/{conversation_id}/")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["messages"]


def replies(client, conversation_id):
    return [m for m in messages(client, conversation_id) if m["type"] == "OUTBOUND"]


def reply_ids(reply):
    """The message ids a reply lists."""
    header, *ids = reply["content"].rstrip("\n").split("\n")
    assert header == "Mensagens recebidas:"
    return ids


def run_due_jobs(max_rounds=50):
    """Move due scheduled jobs to the queue and run them in-process until none is due."""
    scheduler, worker = get_scheduler(), get_worker(roles=ROLES)
    queues = [get_queue(role) for role in ROLES]
    for _ in range(max_rounds):
        scheduler.enqueue_jobs()
        if not any(queue.count for queue in queues):
            break
        worker.work(burst=True)
    for queue in queues:
        failed = FailedJobRegistry(queue=queue)
        assert failed.count == 0, [queue.fetch_job(j).exc_info for j in failed.get_job_ids()]


def wait_for(predicate, timeout=15.0, interval=0.05):
    """Poll until predicate() is truthy; return its value or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def error(response, status, code=None):
    """The JSON error body of `response`, checked against SPEC's shape and `status`."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["code"] == status
    assert body["status"] and body["error"] and body["message"]
    if code is not None:
        assert body["error"] == code, body
    return body


@contextlib.contextmanager
def http_peer(make):
    """A peer of the service (a receiver, a bot: `make(server)` of a started threaded
    pytest-httpserver on a free local port, with a `release` event for its blocked answers);
    released and stopped on exit."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    peer = make(server)
    try:
        yield peer
    finally:
        peer.release.set()
        if server.is_running():
            server.stop()


def row_of(model, reply_id):
    """The row of `model` (Delivery, Generation) keyed by this reply id, as a dict (None when
    there is none)."""
    found = db.session.execute(
        select(model.__table__).where(model.reply_id == uuid.UUID(str(reply_id)))
    ).first()
    db.session.rollback()
    return dict(found._mapping) if found else None
