"""TrafficPolicy rateLimit → the server Listener's optional LocalRateLimit filter."""

from __future__ import annotations

import pytest
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2

from meshlib.xds._listener import _rate_limit
from xds_server.model import RateLimit
from xds_server.translate.listeners import local_rate_limit_filter
from xds_server.translate.names import LOCAL_RATE_LIMIT_FILTER


@pytest.mark.parametrize(("rate", "burst", "tokens", "interval"), [
    (10.0, 10, 1 * 10, 1.0),
    (0.5, 2, 1, 2.0),
    (2.5, 3, 1, 0.4),
])
def test_the_bucket_carries_the_rate(rate, burst, tokens, interval):
    http_filter = local_rate_limit_filter(RateLimit(requests_per_second=rate, burst=burst))
    assert http_filter.name == LOCAL_RATE_LIMIT_FILTER
    assert http_filter.is_optional  # gRPC servers skip it instead of NACKing
    config = local_rate_limit_pb2.LocalRateLimit()
    http_filter.typed_config.Unpack(config)
    bucket = config.token_bucket
    assert bucket.max_tokens == burst and bucket.tokens_per_fill.value == tokens
    assert bucket.fill_interval.ToNanoseconds() / 1e9 == pytest.approx(interval)
    assert config.filter_enforced.default_value.numerator == 100


def test_meshlib_reads_back_the_rate():
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )
    hcm = hcm_pb2.HttpConnectionManager(http_filters=[
        local_rate_limit_filter(RateLimit(requests_per_second=2.5, burst=3))])
    rate, burst = _rate_limit(hcm, ValueError)  # type: ignore[misc, arg-type]
    assert rate == pytest.approx(2.5) and burst == 3
