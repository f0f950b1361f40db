"""Certnames: the identity of a node, its certificate's CN, and a file name in the CA."""

from podium.protocol.names import CERTNAME_RULE, is_certname, validate_certname

__all__ = ["CERTNAME_RULE", "is_certname", "validate_certname"]
