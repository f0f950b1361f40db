"""PQL, PuppetDB's query language: text to PuppetDB's AST query.

``parse_pql("nodes { certname ~ 'web' }")`` gives
``["from", "nodes", ["~", "certname", "web"]]``, the AST PuppetDB's ``/pdb/query/v4``
takes; text that is not a query raises :class:`PQLSyntaxError`.
"""

from podium.inventory.pql.errors import PQLSyntaxError
from podium.inventory.pql.parser import ENTITIES, MAX_DEPTH, MAX_QUERY_BYTES, parse_pql

__all__ = ["ENTITIES", "MAX_DEPTH", "MAX_QUERY_BYTES", "PQLSyntaxError", "parse_pql"]
