"""A node's facts in Facter 4's schema, without Facter.

Each fact is read in two steps, as pyinfra's facts are: a small read function that does
the I/O (one file, one ``statvfs``, one netlink dump) and a pure parse that turns what
was read into the fact's value. The parses follow Facter's own resolvers, so that names,
nesting and value types are Facter's (``os.release.major`` is a string, ``mtu`` an
integer, sizes come as ``"23.54 GiB"`` beside ``*_bytes``).

- :mod:`.parse`: pure parses of ``/proc``, ``/sys``, ``/etc/os-release`` and friends.
- :mod:`.network`: the ``networking`` fact from interface records shaped like
  ``ip -j addr`` output, and the decoder of the kernel's netlink dump that makes them.
- :mod:`.collect`: the reads, and the whole set (or ``facter --json`` when Facter is
  installed).
- :mod:`.external`: external facts from ``facts.d`` folders, as Facter reads them.
"""
