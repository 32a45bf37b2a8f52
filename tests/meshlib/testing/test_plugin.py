"""meshlib's pytest plugin, run the way users run it: pytest loads it through the
``pytest11`` entry point in a test session of its own (``pytester``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=textwrap.dedent(source))
    return pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", *args)


def test_the_plugin_is_registered_by_its_entry_point(pytester: pytest.Pytester):
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    for fixture in ("mesh_control_plane", "mesh", "mesh_service", "mesh_faults",
                    "mesh_ca", "fake_clock"):
        result.stdout.fnmatch_lines([f"{fixture} -- *meshlib/testing/plugin.py*"])


def test_canary_routing_and_live_edits(pytester: pytest.Pytester):
    result = run(pytester, '''
        from meshlib.testing import config as c

        GET = "/demo.Reviews/Get"

        def test_canary(mesh_control_plane, mesh_service, mesh):
            v1 = mesh_service("reviews", {GET: lambda req, ctx: b"v1"}, version="v1",
                              replicas=2)
            v2 = mesh_service("reviews", {GET: lambda req, ctx: b"v2"}, version="v2")
            mesh_control_plane.apply(c.grpc_route(
                "reviews",
                c.rule("reviews-v2", headers={"x-canary": "true"}),
                c.rule({"reviews-v1": 100, "reviews-v2": 0})))
            mesh_control_plane.wait_synced()
            get = mesh.channel("reviews").unary_unary(GET)
            assert {get(b"", timeout=5) for _ in range(20)} == {b"v1"}
            assert get(b"", timeout=5, metadata=[("x-canary", "true")]) == b"v2"
            assert v1.calls == 20 and all(r.calls == 10 for r in v1.replicas)

            mesh_control_plane.apply(c.split("reviews", {"reviews-v1": 0, "reviews-v2": 100}))
            mesh_control_plane.wait_synced()
            assert get(b"", timeout=5) == b"v2"
            assert v2.calls == 2
    ''')
    result.assert_outcomes(passed=1)


def test_retries_faults_and_the_fake_clock(pytester: pytest.Pytester):
    result = run(pytester, '''
        import grpc
        import pytest
        import meshlib
        from meshlib.testing import config as c

        GET = "/demo.Reviews/Get"

        def test_retries(mesh_control_plane, mesh_service, mesh):
            failures = iter([True, True])

            def flaky(request, context):
                if next(failures, False):
                    context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
                return b"ok"

            reviews = mesh_service("reviews", {GET: flaky})
            mesh_control_plane.apply(c.traffic_policy(
                "reviews", retries={"attempts": 3, "retryOn": ["UNAVAILABLE"]}))
            mesh_control_plane.wait_synced()
            assert mesh.channel("reviews").unary_unary(GET)(b"", timeout=5) == b"ok"
            assert reviews.calls == 3

        def test_faults(mesh_control_plane, mesh_service, mesh_faults, mesh):
            reviews = mesh_service("reviews", {GET: lambda req, ctx: b"ok"})
            get = mesh.channel("reviews").unary_unary(GET)
            mesh_faults.unavailable("reviews")
            with pytest.raises(grpc.RpcError) as err:
                get(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert reviews.calls == 0
            mesh_faults.clear("reviews")
            assert get(b"", timeout=5) == b"ok"

        def test_fake_clock(fake_clock):
            calls = []

            @meshlib.retry(attempts=4, on=[ValueError], sleep=fake_clock.sleep,
                           clock=fake_clock)
            def work():
                calls.append(fake_clock())
                if len(calls) < 4:
                    raise ValueError
                return "done"

            assert work() == "done"
            assert len(fake_clock.sleeps) == 3 and calls[-1] > calls[0]
    ''')
    result.assert_outcomes(passed=3)


def test_authorization_with_the_test_ca(pytester: pytest.Pytester):
    result = run(pytester, '''
        import grpc
        import pytest
        import meshlib
        from meshlib.testing import config as c

        GET = "/demo.Reviews/Get"

        def whoami(request, context):
            return str(meshlib.peer_identity(context)).encode()

        def test_only_frontend_may_call(mesh_control_plane, mesh_service, mesh_ca):
            mesh_control_plane.apply(c.service("reviews"), c.access_policy(
                "reviews", c.allow(service_accounts=["default/frontend"]), mode="STRICT"))
            reviews = mesh_service("reviews", {GET: whoami}, identity=True)
            assert reviews.replicas[0].server.mtls_mode == "STRICT"
            frontend = mesh_control_plane.mesh("frontend", identity=True)
            intruder = mesh_control_plane.mesh("intruder", identity=True)
            assert frontend.identity == mesh_ca.identity("frontend")

            got = frontend.channel("reviews").unary_unary(GET)(b"", timeout=5)
            assert got == str(mesh_ca.identity("frontend")).encode()
            with pytest.raises(grpc.RpcError) as err:
                intruder.channel("reviews").unary_unary(GET)(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ''')
    result.assert_outcomes(passed=1)


def test_http_services_wsgi_and_asgi(pytester: pytest.Pytester):
    result = run(pytester, '''
        from meshlib.testing import config as c

        def wsgi_app(environ, start_response):
            start_response("200 OK", [("content-type", "text/plain")])
            return [b"wsgi " + environ["PATH_INFO"].encode()]

        async def asgi_app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"asgi"})

        def test_http(mesh_control_plane, mesh_service, mesh):
            web = mesh_service.http("web", wsgi_app, replicas=2)
            api = mesh_service.http("api", asgi_app)
            mesh_control_plane.apply(c.access_policy(
                "web", c.deny(paths=["/admin/*"]), c.allow()))
            mesh_control_plane.wait_synced()
            http = mesh.http_client(timeout=5)
            assert http.get("http://web/hello").text == "wsgi /hello"
            assert http.get("http://web/admin/x").status_code == 403
            assert http.get("http://api/").text == "asgi"
            assert web.calls == 1 and api.calls == 1
    ''')
    result.assert_outcomes(passed=1)


def test_async_tests_use_the_same_mesh(pytester: pytest.Pytester):
    result = run(pytester, '''
        import pytest

        GET = "/demo.Reviews/Get"

        @pytest.mark.asyncio
        async def test_aio(mesh_service, mesh):
            mesh_service("reviews", {GET: lambda request, context: b"ok"})
            get = mesh.aio_channel("reviews").unary_unary(GET)
            assert [await get(b"", timeout=5) for _ in range(3)] == [b"ok"] * 3
    ''')
    result.assert_outcomes(passed=1)


def test_config_errors_name_the_object_and_nothing_changes(pytester: pytest.Pytester):
    result = run(pytester, '''
        import pytest
        from meshlib.contract import ConfigError
        from meshlib.testing import config as c

        def test_invalid(mesh_control_plane, tmp_path):
            mesh_control_plane.apply(c.service("reviews"))
            with pytest.raises(ConfigError, match="retries.attempts"):
                mesh_control_plane.apply(c.traffic_policy("reviews",
                                                          retries={"attempts": 0}))
            assert [o["kind"] for o in mesh_control_plane.objects] == ["Service"]
            c.write(tmp_path / "more.yaml", c.service("ratings"))
            mesh_control_plane.apply(tmp_path / "more.yaml",
                                     "kind: Service\\napiVersion: v1\\n"
                                     "metadata: {name: cart}\\n"
                                     "spec: {ports: [{name: grpc, port: 1}]}\\n")
            assert {s.name for s in mesh_control_plane.model.services} == {
                "reviews", "ratings", "cart"}
            mesh_control_plane.delete("Service", "cart")
            with pytest.raises(KeyError):
                mesh_control_plane.delete("Service", "cart")
    ''')
    result.assert_outcomes(passed=1)


def test_importing_the_plugin_is_cheap():
    """pytest imports the plugin in every session of a project with meshlib installed."""
    code = ("import sys, meshlib.testing.plugin; "
            "heavy = [m for m in ('grpc', 'xds_server', 'cryptography', 'envoy') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_the_public_names_are_pinned():
    import meshlib.testing
    from meshlib.testing import config

    assert meshlib.testing.__all__ == [
        "DEFAULT_SYNC_TIMEOUT", "FakeClock", "MeshCA", "MeshControlPlane", "MeshFaults",
        "MeshService", "MeshServices", "NotSyncedError", "Replica", "config"]
    assert config.__all__ == [
        "DEFAULT_PORT", "ZONE", "access_policy", "allow", "deny", "endpoints", "flatten",
        "grpc_route", "http_route", "mesh_config", "rule", "service", "split", "to_yaml",
        "traffic_policy", "write"]
