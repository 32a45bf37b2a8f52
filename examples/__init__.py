"""Runnable examples; a package so that tests import them by name
(``examples.reviews_server``)."""
