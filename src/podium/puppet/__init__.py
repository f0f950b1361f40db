"""Puppet runs: packing environments, run order, comparing what nodes report."""
