"""The httpx transport's small decisions: what bypasses the mesh, what may be retried,
what counts as an endpoint failure."""

from __future__ import annotations

import grpc
import httpx
import pytest

from meshlib._http import _direct, _replayable, _status_code


@pytest.mark.parametrize(("url", "direct"), [
    ("http://reviews/x", False), ("http://reviews.shop:8080/x", False),
    ("http://reviews.shop.svc.cluster.local/x", False),
    ("https://api.github.com/x", True), ("https://reviews/x", True),
    ("http://127.0.0.1:8080/x", True), ("http://[::1]:8080/x", True),
    ("http://localhost/x", True),
])
def test_what_goes_around_the_mesh(url, direct):
    assert _direct(httpx.URL(url)) is direct


def test_only_bodies_that_can_be_sent_again_are_retried():
    assert _replayable(httpx.Request("PUT", "http://a/", content=b"x"))
    assert _replayable(httpx.Request("GET", "http://a/"))
    assert not _replayable(httpx.Request("PUT", "http://a/", content=iter([b"x"])))


@pytest.mark.parametrize(("status", "code"), [
    (200, None), (404, None), (429, None), (500, grpc.StatusCode.UNKNOWN),
    (502, grpc.StatusCode.UNAVAILABLE), (503, grpc.StatusCode.UNAVAILABLE),
    (504, grpc.StatusCode.UNAVAILABLE), (599, grpc.StatusCode.UNKNOWN),
])
def test_which_statuses_count_against_the_endpoint(status, code):
    assert _status_code(status) is code
