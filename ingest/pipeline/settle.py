"""Settlement: the one place that decides each message's fate from its records' outcomes.

- **delete**: every record is durable, settled (duplicate, stale) or dead-lettered;
- **dead-letter** a record, with its reason: refused by the database, unreadable, refused
  by routing, or still failing at its last allowed attempt;
- **resend** (standard queues): the records that must be tried again go back as a new
  message carrying the attempts so far (the attribute `ingest-attempts`), delayed by the
  retry policy; the source is deleted once they are sent. The count survives the resend,
  where SQS's receive count would start again at 0;
- **retry** (FIFO queues): the whole message turns visible again after the delay, so its
  group keeps its order; its attempts are the carried ones plus its receive count;
- **release**: not the message's fault (MongoDB down, shutting down): visible again at
  once, no attempt counted. At its last receive it is resent as it is instead, so SQS's
  own redrive never moves it without a reason. A message whose payload S3 could not give
  (S3 down) is released *later*: visible again after the retry policy's delay.

A message whose body is a pointer to its payload in S3 (producer/wire/pointers.py) goes
as it came, pointer and all, wherever it goes: one dead letter for its bad records (a
redrive writes the good ones again, as duplicates), and resent whole.

A failure counts as an attempt only when it may be the record's fault; the write stage
raises SinkUnavailable (-> release) for anything that is the database's. After
`max_attempts` attempts the records still failing are dead-lettered alone, with their
last failure as the reason, and their neighbours are not held back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from ingest.flow.retry import RetryPolicy
from ingest.pipeline.messages import DecodedMessage, Settlement
from ingest.queues.base import (
    DeadLetter,
    Message,
    Resend,
    resend_attributes,
    sendable_attributes,
)
from ingest.sinks.base import ConflictPolicy, Outcome, OutcomeKind, rejected
from producer import wire

#: Attempts when neither the settings nor the queue's redrive policy give a bound.
DEFAULT_MAX_ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class SettleOptions:
    on_conflict: ConflictPolicy = ConflictPolicy.COUNT
    max_attempts: int = 0  # 0: the queue's maxReceiveCount, else DEFAULT_MAX_ATTEMPTS
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class Settler:
    def __init__(self, options: SettleOptions | None = None) -> None:
        self._options = options or SettleOptions()
        self.on_conflict = self._options.on_conflict
        self._dead_kinds = {OutcomeKind.REJECTED}
        if self._options.on_conflict is ConflictPolicy.DEAD_LETTER:
            self._dead_kinds.add(OutcomeKind.CONFLICT)

    # -------------------------------------------------------------- decisions

    def settle(self, decoded: Sequence[DecodedMessage], outcomes: Sequence[Outcome]) -> Settlement:
        """One outcome per record of `decoded`, in order."""
        settlement = Settlement()
        position = 0
        for item in decoded:
            mine = outcomes[position : position + len(item.records)]
            position += len(item.records)
            self._settle_message(item, list(mine), settlement)
        return settlement

    def released(self, messages: Sequence[Message], *, later: bool = False) -> Settlement:
        """Not their fault: visible again at once (`later`: after the retry delay), or
        resent as they are at their last receive (with the attempts they carry, none added)."""
        settlement = Settlement()
        for message in messages:
            delay = self._delay(message.receive_count) if later else 0
            if message.last_receive:
                self._resend_whole(message, message.attempts, settlement, delay=delay)
            elif later:
                settlement.retry.append((message, delay))
            else:
                settlement.release.append(message)
        return settlement

    def failed(self, message: Message, reason: str) -> Settlement:
        """Handling the message failed as a whole: one attempt of each of its records."""
        settlement = Settlement()
        self._settle_message(DecodedMessage(message, failure=reason), [], settlement)
        return settlement

    # ------------------------------------------------------------------ parts

    def _settle_message(
        self, item: DecodedMessage, outcomes: list[Outcome], settlement: Settlement
    ) -> None:
        message = item.message
        if item.error is not None:  # unreadable as a whole: it goes as it came
            settlement.dead_letters.append(
                DeadLetter(message, message.body, item.error, message.attributes)
            )
            settlement.delete_after_sends.append(message)
            return
        letters = self._bad_letters(item)
        pairs = list(zip(item.records, outcomes, strict=True))
        letters += [_letter(message, r, o.reason) for r, o in pairs if o.kind in self._dead_kinds]
        whole = [letter for letter in letters if letter.body is message.body]
        if whole:  # the message goes as it came: its records' own letters would repeat them
            letters = whole[:1]
        failing = [(r, o) for r, o in pairs if o.kind is OutcomeKind.RETRY]
        blocked = any(o.kind is OutcomeKind.BLOCKED for _, o in pairs)
        if item.failure is None and not failing:
            if blocked:  # an earlier record of its group must go first: not its fault
                self._wait_turn(message, settlement)
            else:
                self._finish(message, letters, settlement)
            return
        attempt = self._attempt(message)
        if attempt >= self._limit(message):
            if blocked:  # its records after the exhausted one: this comes back whole
                self._wait_turn(message, settlement)
                return
            letters += self._exhausted(item, failing, attempt)
            self._finish(message, letters, settlement)
        elif message.fifo:
            self._retry_in_order(message, attempt, settlement)
        else:
            self._resend_failing(item, failing, attempt, letters, settlement)

    def last_attempt(self, message: Message) -> bool:
        """Is this receive the message's last allowed attempt?"""
        return self._attempt(message) >= self._limit(message)

    def given_up(self, message: Message, outcome: Outcome) -> Outcome:
        """A record still failing at its message's last attempt: refused, with the failure.
        (Ordered writes use it to go on with the rest of the group.)"""
        return rejected(f"still failing after {self._attempt(message)} attempts: {outcome.reason}")

    def _wait_turn(self, message: Message, settlement: Settlement) -> None:
        """Back as it is, no attempt counted; its bad records are dead-lettered when it
        is finally settled (they are found again on every delivery)."""
        if message.last_receive:
            self._resend_whole(message, message.attempts, settlement, delay=0)
        else:
            settlement.retry.append((message, 0))

    def _attempt(self, message: Message) -> int:
        """This receive's attempt, counting from 1. FIFO messages are retried in place,
        so their receives count (a release among them too: see docs/operations.md)."""
        return message.attempts + (message.receive_count if message.fifo else 1)

    def _limit(self, message: Message) -> int:
        return self._options.max_attempts or message.max_receive_count or DEFAULT_MAX_ATTEMPTS

    def _exhausted(
        self, item: DecodedMessage, failing: list[tuple[wire.Record, Outcome]], attempt: int
    ) -> list[DeadLetter]:
        """Dead letters for what still fails at the last allowed attempt."""
        message = item.message
        if item.failure is not None:
            reason = f"still failing after {attempt} attempts: {item.failure}"
            return [DeadLetter(message, message.body, reason, message.attributes)]
        return [_letter(message, r, self.given_up(message, o).reason) for r, o in failing]

    def _retry_in_order(self, message: Message, attempt: int, settlement: Settlement) -> None:
        """FIFO: the whole message again later, its bad records dead-lettered only when it is
        finally settled (they are found again on every delivery)."""
        if message.last_receive:  # past the queue's own count: it goes to its group's end
            self._resend_whole(message, attempt, settlement, self._delay(attempt))
        else:
            settlement.retry.append((message, self._delay(attempt)))

    def _resend_failing(
        self,
        item: DecodedMessage,
        failing: list[tuple[wire.Record, Outcome]],
        attempt: int,
        letters: list[DeadLetter],
        settlement: Settlement,
    ) -> None:
        message, delay = item.message, self._delay(attempt)
        whole = item.failure is not None or wire.is_pointer(message.attributes)
        whole = whole or (
            not letters and len(failing) == len(item.records) and not item.bad_records
        )
        if whole:  # one message, as it came, rather than one per record
            self._resend_whole(message, attempt, settlement, delay)
            return
        for record, _ in failing:
            body, attributes = wire.record_message(record)
            carried = resend_attributes(attributes, attempt, carried=message.attributes)
            settlement.resends.append(Resend(message, body, carried, delay))
        settlement.dead_letters += letters
        settlement.delete_after_sends.append(message)

    def _resend_whole(
        self, message: Message, attempts: int, settlement: Settlement, delay: int
    ) -> None:
        attributes = resend_attributes(sendable_attributes(message.attributes), attempts)
        settlement.resends.append(Resend(message, message.body, attributes, delay))
        settlement.delete_after_sends.append(message)

    @staticmethod
    def _finish(message: Message, letters: list[DeadLetter], settlement: Settlement) -> None:
        """Settled: deleted, after its dead letters when it has any."""
        if not letters:
            settlement.delete.append(message)
            return
        if wire.is_pointer(message.attributes):  # its payload stays, for the pointer
            reason = "; ".join(dict.fromkeys(letter.reason for letter in letters))
            letters = [DeadLetter(message, message.body, reason, message.attributes)]
        settlement.dead_letters += letters
        settlement.delete_after_sends.append(message)

    def _delay(self, attempt: int) -> int:
        return self._options.retry.delay(attempt)

    @staticmethod
    def _bad_letters(item: DecodedMessage) -> list[DeadLetter]:
        message = item.message
        letters = [_bad_letter(message, bad) for bad in item.bad_records]
        return letters + [_letter(message, r.record, r.reason) for r in item.refused]


def _letter(message: Message, record: wire.Record | wire.BadRecord, reason: str) -> DeadLetter:
    """One record as a message of its own: a redrive sends it back as it came."""
    body, attributes = wire.record_message(record)
    return DeadLetter(message, body, reason, attributes)


def _bad_letter(message: Message, bad: wire.BadRecord) -> DeadLetter:
    where = f"line {bad.number}" if isinstance(bad.source, str) else f"record {bad.number}"
    if bad.rest_unreadable:  # what follows cannot be found: the message goes whole
        return DeadLetter(message, message.body, f"{where}: {bad.reason}", message.attributes)
    return _letter(message, bad, f"{where}: {bad.reason}")
