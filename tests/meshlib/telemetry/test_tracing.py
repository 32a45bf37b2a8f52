"""Trace context and sampling decisions: the W3C header, parent-based sampling, and
the client record's cheap unsampled path against the propagator's own output."""

from __future__ import annotations

import json

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from meshlib.telemetry._access_log import ACCESS_LOG_FIELDS, write_access_log
from meshlib.telemetry._client import ClientTelemetry
from meshlib.telemetry._metrics import MeshMetrics, caller_label
from meshlib.telemetry._tracing import (
    format_traceparent,
    parse_traceparent,
    start_server_span,
    w3c_only,
)

EXPORTER = InMemorySpanExporter()
TID, SID = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7


def _export_to(exporter: InMemorySpanExporter) -> None:
    """Send every span to ``exporter``: the global provider is set once per process,
    so join it when another test module set it first."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))


_export_to(EXPORTER)


@pytest.fixture(autouse=True)
def provider() -> None:
    EXPORTER.clear()


def test_traceparent_round_trips():
    value = format_traceparent(TID, SID, True)
    assert value == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    parsed = parse_traceparent(value)
    assert parsed is not None
    assert (parsed.trace_id, parsed.span_id, parsed.trace_flags.sampled) == (TID, SID, True)
    assert not parse_traceparent(format_traceparent(TID, SID, False)).trace_flags.sampled


@pytest.mark.parametrize("value", [
    "", "garbage", "00-0000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
    "00-4BF92F3577B34DA6A3CE929D0E0E473G-00f067aa0ba902b7-01",  # not hex
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 has 4 parts
])
def test_malformed_traceparents_are_ignored(value):
    assert parse_traceparent(value) is None


def test_a_future_version_with_more_fields_is_read():
    assert parse_traceparent(
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever") is not None


def test_root_server_calls_are_sampled_by_share():
    sampled = sum(start_server_span("Recv.x", None, None, 0.25, {}, attach=False).span
                  is not None for _ in range(4000))
    assert 800 < sampled < 1200


def test_a_sampled_parent_makes_a_child_server_span_made_current():
    server = start_server_span("Recv.x", format_traceparent(TID, SID, True),
                               lambda: {"traceparent": format_traceparent(TID, SID, True)},
                               0.0, {"a": 1})
    assert server.span is not None
    current = trace.get_current_span().get_span_context()
    assert current.trace_id == TID and current.span_id != SID
    server.end("OK", False)
    assert trace.get_current_span().get_span_context().is_valid is False
    (span,) = EXPORTER.get_finished_spans()
    assert span.parent.span_id == SID and span.kind is trace.SpanKind.SERVER


def test_an_unsampled_parent_is_followed_and_passed_on():
    server = start_server_span("Recv.x", format_traceparent(TID, SID, False), None, 1.0, {})
    assert server.span is None
    current = trace.get_current_span().get_span_context()
    assert (current.trace_id, current.trace_flags.sampled) == (TID, False)
    assert server.ids[0] == f"{TID:032x}"
    server.end("OK", False)
    assert EXPORTER.get_finished_spans() == ()


def test_an_unsampled_root_still_gives_nested_calls_one_decision():
    server = start_server_span("Recv.x", None, None, 0.0, {})
    current = trace.get_current_span().get_span_context()
    assert current.is_valid and not current.trace_flags.sampled
    server.end("OK", False)


def _telemetry() -> ClientTelemetry:
    return ClientTelemetry(MeshMetrics(source_service="frontend"), "frontend")


def test_unsampled_client_calls_carry_what_the_propagator_would_write():
    assert w3c_only()
    parent = SpanContext(TID, SID, is_remote=True, trace_flags=TraceFlags(0))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    try:
        record = _telemetry().start("store", "default", "store.default:50051", "/a/B",
                                    (("x", "1"),), 1.0, False)
        ours = dict(record.attempt("127.0.0.1:1"))
        theirs: dict[str, str] = {}
        propagate.inject(theirs)
    finally:
        otel_context.detach(token)
    assert ours["x"] == "1"
    ours_ctx, theirs_ctx = (parse_traceparent(v["traceparent"]) for v in (ours, theirs))
    assert (ours_ctx.trace_id, ours_ctx.trace_flags) == (theirs_ctx.trace_id,
                                                          theirs_ctx.trace_flags)
    assert set(ours) - {"x"} == set(theirs)


def test_a_sampled_client_call_has_one_span_per_attempt():
    telemetry = _telemetry()
    record = telemetry.start("store", "r", "store.default:50051", "/a/B", None, 1.0, False)
    first = dict(record.attempt("127.0.0.1:1"))
    record.attempt_end("UNAVAILABLE", True)
    second = dict(record.attempt("127.0.0.1:2"))
    record.attempt_end("OK", False)
    record.finish("OK", False)
    assert first["traceparent"] != second["traceparent"]
    spans = {s.name + str(s.attributes.get("meshlib.attempt", "")): s
             for s in EXPORTER.get_finished_spans()}
    call = spans["Sent.a/B"]
    assert call.attributes["meshlib.attempts"] == 2
    assert spans["Attempt.a/B1"].parent.span_id == call.context.span_id
    assert spans["Attempt.a/B2"].attributes["server.address"] == "127.0.0.1:2"
    assert parse_traceparent(second["traceparent"]).span_id == \
        spans["Attempt.a/B2"].context.span_id


def test_client_metrics_count_calls_and_retries():
    telemetry = _telemetry()
    for attempts in (1, 3):
        record = telemetry.start("store", "r", "b", "/a/B", None, 0.0, False)
        for _ in range(attempts):
            record.attempt("127.0.0.1:1")
            record.attempt_end("OK", False)
        record.finish("OK", False)
    registry = telemetry.metrics.registry
    assert registry.get_sample_value("meshlib_client_requests_total", {
        "source_service": "frontend", "destination_service": "store", "route": "r",
        "backend": "b", "code": "OK"}) == 2
    assert registry.get_sample_value("meshlib_client_retries_total", {
        "destination_service": "store", "route": "r", "backend": "b"}) == 2


def test_access_log_lines_have_every_field_in_order(capsys):
    write_access_log("server", "grpc", started=1_780_000_000.25, seconds=0.0015,
                     method="/a/B", code="OK")
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert list(line) == list(ACCESS_LOG_FIELDS)
    assert line["time"] == "2026-05-28T20:26:40.250Z"
    assert (line["kind"], line["duration_ms"], line["trace_id"]) == ("server", 1.5, None)


def test_caller_labels_are_namespace_and_service_account():
    assert caller_label("spiffe://cluster.local/ns/shop/sa/frontend") == "shop/frontend"
    assert caller_label(None) == "unknown"


def test_an_unsampled_root_call_leaves_the_decision_to_the_next_hop():
    record = _telemetry().start("store", "r", "b", "/a/B", (("x", "1"),), 0.0, False)
    assert record.attempt("127.0.0.1:1") == (("x", "1"),)  # no traceparent: it costs
    assert record.ids() == (None, None)                     # ~10 % of a call's CPU


def test_a_non_hex_version_is_refused():
    assert parse_traceparent(f"zz-{TID:032x}-{SID:016x}-01") is None


def test_access_logs_do_not_make_every_root_call_sampled():
    records = [_telemetry().start("s", "r", "b", "/a/B", None, 0.0, True) for _ in range(50)]
    assert all(r.span is None for r in records)
    assert EXPORTER.get_finished_spans() == ()


def test_a_call_refused_before_any_attempt_counts_no_retry():
    telemetry = _telemetry()
    telemetry.start("s", "r", "b", "/a/B", None, 0.0, False).finish("UNAVAILABLE", True)
    telemetry.start("s", "r", "b", "/a/B", None, 1.0, True).finish("UNAVAILABLE", True)
    assert telemetry.metrics.registry.get_sample_value("meshlib_client_retries_total", {
        "destination_service": "s", "route": "r", "backend": "b"}) == 0


def test_a_sampled_parent_stays_sampled_when_no_span_is_recorded():
    from opentelemetry.trace import NonRecordingSpan as Span

    parent = SpanContext(TID, SID, is_remote=True, trace_flags=TraceFlags(1))
    telemetry = _telemetry()
    token = otel_context.attach(trace.set_span_in_context(Span(parent)))
    try:
        original = trace.get_tracer_provider
        trace.get_tracer_provider = lambda: trace.NoOpTracerProvider()  # no SDK
        try:
            record = telemetry.start("s", "r", "b", "/a/B", None, 0.0, False)
        finally:
            trace.get_tracer_provider = original
        sent = dict(record.attempt("127.0.0.1:1"))
    finally:
        otel_context.detach(token)
    assert record.span is None  # nothing recorded here, yet the decision travels on
    assert parse_traceparent(sent["traceparent"]).trace_flags.sampled
