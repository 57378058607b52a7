"""The message-id rule: a message is (originator, message id); ids are unique per originator.

The signature proves who wrote a message, not that its id was new: another
party may publish under an id already used (by mistake, or to shadow a
report). So every consumer identifies a message by (proven originator,
message id) and deduplicates by that pair, never by the id alone; the audit
store records a ``message_id_reused`` finding when two originators use one id.

The gateway adds a refusal where it can: its acknowledgement reader notes the
id and originator of every record on the topics partners release to its
agency (from the record headers, without decoding), and a report whose
client-chosen ``message_id`` another party was seen using is refused (409,
``message_id_taken``) instead of put on the bus beside it.
"""

from __future__ import annotations

from services.bus import FieldIssue
from services.gateway._errors import MessageIdTakenError
from services.gateway._store import Store


def refuse_foreign_id(store: Store, message_id: str, agency: str, seen: str | None = None) -> None:
    """Refuse ``message_id`` if another party than ``agency`` was seen using it.

    ``seen``: the party already looked up with others (see :class:`ForeignIds`),
    or None to look it up here.

    Raises:
        MessageIdTakenError: naming the party that used it.
    """
    other = seen or store.foreign_originators([message_id]).get(message_id)
    if other is not None and other != agency:
        raise MessageIdTakenError(
            f"message id {message_id} is already used by {other}; a message is "
            "(originator, message id) and an id names one message: choose a new id",
            [FieldIssue("header.message_id", f"already used by {other}")],
            message_id=message_id,
        )


class ForeignIds:
    """Other parties' use of new message ids, looked up once for a group of reports.

    Valid for the set of unseen ids it was made with, until the next await
    (as that set is): a report whose id is in it needs no query of its own.
    """

    def __init__(self) -> None:
        self._for: set[str] | None = None
        self._seen: dict[str, str] = {}

    def look_up(self, store: Store, unseen: set[str]) -> None:
        """Look up every id of ``unseen`` at once."""
        self._for = unseen
        self._seen = store.foreign_originators(unseen) if unseen else {}

    def refuse(self, store: Store, message_id: str, agency: str, unseen: set[str]) -> None:
        """:func:`refuse_foreign_id`, from the group's lookup when it covers ``message_id``."""
        if unseen is self._for and message_id in unseen:
            other = self._seen.get(message_id)
            if other is None:
                return
            refuse_foreign_id(store, message_id, agency, other)
        else:
            refuse_foreign_id(store, message_id, agency)
