"""Puppet on the node: reading its reports (:mod:`.report`, pure) and running it
(:mod:`.runner`: command lines, packed environments, the node classifier script and
Puppet's own lock files)."""
