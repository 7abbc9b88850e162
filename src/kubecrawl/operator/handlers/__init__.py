"""kopf handlers: unpack kopf's arguments, call the modules that do the work, map errors to kopf's."""

from typing import Any

import kopf


def is_deletion(event: kopf.RawEvent, **_: Any) -> bool:
    """A ``when=`` filter for ``kopf.on.event``: the object is gone."""
    return event.get("type") == "DELETED"
