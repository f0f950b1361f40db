"""The error every invalid query raises: HTTP 400 with what is wrong and what is valid."""

from __future__ import annotations

from typing import Final

from podium.errors import ValidationError

# The kind the PQL parser gives its errors too (HTTP 400).
QUERY_ERROR: Final = "puppetlabs.puppetdb.query/invalid"


class QueryError(ValidationError):
    """A query that is malformed, names a field or entity that does not exist, or uses
    an operator or value a field does not take."""

    kind = QUERY_ERROR
