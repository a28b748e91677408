"""Bursty webhook traffic over many conversations, as a real sender produces it.

Each conversation gets bursts of 1-4 NEW_MESSAGE events 0.3-2 s apart, then a pause of
6-9 s, until the traffic stops. Every HTTP attempt is recorded (send time, answer time,
status). A 503 is retried after its Retry-After, a connection error or timeout after 1 s,
for at most 30 s; a message counts as accepted when an attempt got 202 (or 400
`duplicate_message` after an attempt whose outcome was unknown: the service had it).
"""

import random
import threading
import time
from dataclasses import dataclass, field

import requests

from tests.helpers import new_conversation, new_id, new_message

CLIENT_TIMEOUT = 15.0
MAX_ATTEMPTS = 8
RETRY_BUDGET = 30.0  # seconds from a message's first attempt after which no retry starts


@dataclass
class Attempt:
    message_id: str | None
    sent: float  # wall clock, comparable with the service's timestamps
    answered: float
    status: int | None  # None: no HTTP answer (connection error or timeout)
    error: str = ""
    retry_after: str | None = None  # the answer's Retry-After header, if any

    @property
    def seconds(self):
        return self.answered - self.sent


@dataclass
class Outcome:
    message_id: str
    conversation_id: str
    accepted: bool = False
    status: int | None = None
    error: str = ""
    attempts: list = field(default_factory=list)


class Sender:
    """POSTs events with the retry policy above and records every attempt."""

    def __init__(self, base_url):
        self.url = base_url + "/webhook/"
        self.attempts = []
        self.outcomes = {}
        self.retry_until = None  # wall clock after which no retry starts (None: no limit)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions = []

    def _session(self, fresh=False):
        """This thread's session (keep-alive, as a sender has); `fresh` replaces it."""
        old = getattr(self._local, "session", None)
        if old is None or fresh:
            if old is not None:
                old.close()
            self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(self._local.session)
        return self._local.session

    def close(self):
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def _attempt(self, event, message_id):
        sent = time.time()
        try:
            response = self._session().post(self.url, json=event, timeout=CLIENT_TIMEOUT)
        except requests.RequestException as exc:
            self._session(fresh=True)  # its connection may be dead
            attempt = Attempt(message_id, sent, time.time(), None, type(exc).__name__)
            response = None
        else:
            attempt = Attempt(
                message_id,
                sent,
                time.time(),
                response.status_code,
                retry_after=response.headers.get("Retry-After"),
            )
        with self._lock:
            self.attempts.append(attempt)
        return attempt, response

    def send(self, event, retry_until=None):
        """POST `event`; returns (status, JSON body or None) of the last attempt."""
        message_id = event["data"]["id"] if event["type"] == "NEW_MESSAGE" else None
        outcome = None
        if message_id:
            outcome = Outcome(message_id, event["data"]["conversation_id"])
            with self._lock:
                self.outcomes[message_id] = outcome
        unknown = False  # an earlier attempt may have been processed
        budget = time.time() + RETRY_BUDGET
        for number in range(MAX_ATTEMPTS):
            attempt, response = self._attempt(event, message_id)
            body = _json(response)
            if outcome:
                outcome.attempts.append(attempt)
                outcome.status, outcome.error = attempt.status, (body or {}).get("error", "")
            if attempt.status is None:
                unknown, wait = True, 1.0
            elif attempt.status == 503:
                wait = _retry_after(response)
            else:
                if outcome:
                    duplicate = attempt.status == 400 and outcome.error == "duplicate_message"
                    outcome.accepted = attempt.status == 202 or (unknown and duplicate)
                return attempt.status, body
            limit = min(retry_until or budget, self.retry_until or budget, budget)
            if number == MAX_ATTEMPTS - 1 or time.time() + wait > limit:
                break
            time.sleep(wait)
        return attempt.status, body

    def message(self, conversation_id, message_id=None, retry_until=None):
        """Send one NEW_MESSAGE; returns its Outcome."""
        message_id = message_id or new_id()
        self.send(new_message(message_id, conversation_id), retry_until)
        return self.outcomes[message_id]

    def open(self, conversation_id=None):
        """NEW_CONVERSATION; returns the id (fails the test unless it is created)."""
        conversation_id = conversation_id or new_id()
        status, body = self.send(new_conversation(conversation_id))
        if status != 201:
            raise AssertionError(f"NEW_CONVERSATION got {status}: {body}")
        return conversation_id

    def accepted(self, conversation_ids):
        """Ids of the accepted messages of these conversations (held ones elsewhere are not)."""
        with self._lock:
            return {
                m
                for m, o in self.outcomes.items()
                if o.accepted and o.conversation_id in conversation_ids
            }


def _json(response):
    if response is None:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _retry_after(response):
    try:
        return min(max(float(response.headers.get("Retry-After", "1")), 0.5), 10.0)
    except ValueError:
        return 1.0


class Traffic:
    """Bursts over `conversations` conversations, one thread each, from start() to stop()."""

    def __init__(self, sender, conversation_ids, seed=None):
        self.sender = sender
        self.conversation_ids = list(conversation_ids)
        self.random = random.Random(seed)
        self._stop = threading.Event()
        self._threads = []

    def start(self):
        for conversation_id in self.conversation_ids:
            rng = random.Random(self.random.random())
            thread = threading.Thread(target=self._drive, args=(conversation_id, rng), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _drive(self, conversation_id, rng):
        if self._stop.wait(rng.uniform(0, 3)):  # spread the first bursts
            return
        while not self._stop.is_set():
            for i in range(rng.randint(1, 4)):
                if i and self._stop.wait(rng.uniform(0.3, 2.0)):
                    return
                self.sender.message(conversation_id)
            if self._stop.wait(rng.uniform(6.0, 9.0)):
                return

    def stop(self, retry_for=20.0):
        """No new message from now; retries of pending ones go on for `retry_for` seconds."""
        self.sender.retry_until = time.time() + retry_for
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_TIMEOUT * 2 + retry_for)
