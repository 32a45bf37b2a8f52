"""Benchmarks, run as scripts; a package so that tests import their helpers by
name (``benchmarks.mesh_gen``)."""
