"""The application file: the example is valid, every bad value and unsupported key is named,
all problems come at once, and the release plan of the seed's three scenarios."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bluegreen.app import spec as appspec
from bluegreen.app.spec import AppSpecError, HttpTests, ServiceSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hello-world" / "compose.yaml"

GOOD = """\
name: shop
services:
  api:
    image: registry:5000/api:1
    labels:
      bluegreen.port: "5000"
      bluegreen.endpoint: api.local
  web:
    image: web:1
    environment:
      API: http://api.local/v1
    labels:
      bluegreen.route: /
"""


def problems(text: str) -> list[str]:
    with pytest.raises(AppSpecError) as info:
        appspec.loads(textwrap.dedent(text))
    return info.value.problems


def with_service(body: str, extra: str = "") -> str:
    return "name: shop\nservices:\n  web:\n" + textwrap.indent(textwrap.dedent(body), "    ") + extra


# -- the example ------------------------------------------------------------------------


def test_the_example_is_the_seeds_application() -> None:
    assert appspec.check_file(EXAMPLE) == []
    spec = appspec.load(EXAMPLE)
    assert spec.name == "hello-world"
    a, b = spec.services["servicea"], spec.services["serviceb"]
    assert (a.image, a.scale, a.port, a.endpoint, a.route, a.kind) == (
        "bluegreen-servicea:v1", 3, 5000, "servicea.local", None, "routed")
    assert (b.scale, b.route, b.environment, b.kind) == (
        2, "/", {"dep_endpoint": "http://servicea.local"}, "routed")
    assert b.depends_on == ("servicea.local",)  # found in the env URL
    assert spec.endpoints == {"servicea.local": "servicea"}
    assert spec.qualified("servicea") == "hello-world.servicea"
    assert b.tests == HttpTests(("/",), 200, "world!$")
    assert b.tests.to_test_spec().paths == ("/",)


def test_defaults_and_list_forms() -> None:
    spec = appspec.loads(textwrap.dedent("""\
        name: jobs
        services:
          web:
            image: web:1
            scale: 2
            environment: ["A=1", "B=x=y", "EMPTY="]
            labels: ["bluegreen.route=/shop", "bluegreen.test.http=/ /shop/health"]
          worker:
            image: worker:1
            environment: {N: 3, ON: true}
        """))
    web, worker = spec.services["web"], spec.services["worker"]
    assert (web.port, web.scale, web.health_path, web.kind) == (8080, 2, "/", "routed")
    assert web.environment == {"A": "1", "B": "x=y", "EMPTY": ""}
    assert web.tests.paths == ("/", "/shop/health")
    assert (worker.kind, worker.port, worker.scale) == ("worker", None, 1)
    assert worker.environment == {"N": "3", "ON": "true"}


def test_plain_scalars_read_as_compose_reads_them() -> None:
    spec = appspec.loads(with_service("image: a\nenvironment: {ON: yes, T: 1:20, O: 010, "
                                      "D: 2020-01-01, B: false, N: -7}\n"))
    assert spec.services["web"].environment == {"ON": "yes", "T": "1:20", "O": "010",
                                                "D": "2020-01-01", "B": "false", "N": "-7"}


def test_spec_is_immutable() -> None:
    spec = appspec.loads(GOOD)
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.services["x"] = spec.services["web"]  # type: ignore[index]


def test_x_extensions_and_merge_keys_are_compose() -> None:
    spec = appspec.loads(textwrap.dedent("""\
        name: shop
        x-common: &common
          image: base:1
          deploy: {replicas: 2}
        services:
          a:
            <<: *common
            x-note: anything
          b:
            <<: *common
            image: other:2
        """))
    assert (spec.services["a"].image, spec.services["a"].scale) == ("base:1", 2)
    assert spec.services["b"].image == "other:2"


# -- bad values, one named line each ----------------------------------------------------


@pytest.mark.parametrize(("body", "expected"), [
    ("image: 'UPPER/x'\n", "services.web.image: invalid image reference 'UPPER/x'"),
    ("labels: {}\n", "services.web.image: missing"),
    ("image: a\nenvironment: {1BAD: x}\n", "services.web.environment.1BAD: invalid environment "
     "variable name '1BAD'"),
    ("image: a\nenvironment: [X]\n", "services.web.environment[0]: use KEY=VALUE"),
    ("image: a\nenvironment: {K: }\n", "services.web.environment.K: no value"),
    ("image: a\nenvironment: {K: 1.5}\n", "services.web.environment.K: use a string, not float"),
    ("image: a\nenvironment: ['K=1', 'K=2']\n", "services.web.environment.K: given twice"),
    ("image: a\nenvironment: {K: \"a\\0b\"}\n", "services.web.environment.K: NUL byte"),
    ("image: a\nenvironment: x\n", "services.web.environment: use a mapping or a list"),
    ("image: a\ndeploy: {replicas: 0}\n", "services.web.deploy.replicas: invalid scale 0"),
    ("image: a\nscale: 65\n", "services.web.scale: invalid scale 65"),
    ("image: a\nscale: '3'\n", "services.web.scale: invalid scale '3'"),
    ("image: a\nscale: true\n", "services.web.scale: invalid scale True"),
    ("image: a\nscale: 2\ndeploy: {replicas: 3}\n", "services.web.scale: 2 differs from "
     "deploy.replicas 3"),
    ("image: a\nlabels: {bluegreen.port: '0'}\n", "services.web.labels.bluegreen.port: invalid port"),
    ("image: a\nlabels: {bluegreen.route: '/a b'}\n",
     "services.web.labels.bluegreen.route: invalid location '/a b'"),
    ("image: a\nlabels: {bluegreen.route: '/../etc'}\n",
     "services.web.labels.bluegreen.route: invalid location"),
    ("image: a\nlabels: {bluegreen.endpoint: 'A.Local'}\n",
     "services.web.labels.bluegreen.endpoint: invalid endpoint 'A.Local'"),
    ("image: a\nlabels: {bluegreen.endpoint: '10.0.0.1'}\n",
     "services.web.labels.bluegreen.endpoint: invalid endpoint"),
    ("image: a\nlabels: {bluegreen.endpoint: 'a;b'}\n",
     "services.web.labels.bluegreen.endpoint: invalid endpoint"),
    ("image: a\nlabels: {bluegreen.route: /, bluegreen.health-path: 'x y'}\n",
     "services.web.labels.bluegreen.health-path: invalid HTTP path"),
    ("image: a\nlabels: {bluegreen.route: /, bluegreen.test.http: '/ nope'}\n",
     "services.web.labels.bluegreen.test.http: invalid HTTP path 'nope'"),
    ("image: a\nlabels: {bluegreen.route: /, bluegreen.test.expect-status: '99'}\n",
     "services.web.labels.bluegreen.test.expect-status: invalid expected status"),
    ("image: a\nlabels: {bluegreen.route: /, bluegreen.test.expect-body: '(('}\n",
     "services.web.labels.bluegreen.test.expect-body: invalid regular expression"),
    ("image: a\nlabels: {bluegreen.test.http: /}\n",
     "services.web.labels.bluegreen.test.http: a worker"),
    ("image: a\nlabels: {bluegreen.health-path: /h}\n",
     "services.web.labels.bluegreen.health-path: needs bluegreen.port"),
    ("image: a\nlabels: [novalue]\n", "services.web.labels[0]: use KEY=VALUE"),
    ("image: a\nlabels: {bluegreen.port: [1]}\n", "services.web.labels.bluegreen.port: use a string"),
    ("image: a\nlabels: {bluegreen.depends-on: b.local}\n",
     "services.web.labels.bluegreen.depends-on: no service declares endpoint 'b.local'"),
    ("- a\n", "services.web: use a mapping"),
])
def test_bad_value_is_named(body: str, expected: str) -> None:
    found = problems(with_service(body))
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(("text", "expected"), [
    ("services: {web: {image: a}}\n", "name: missing"),
    ("name: Shop\nservices: {web: {image: a}}\n", "name: invalid application name 'Shop'"),
    ("name: a.b\nservices: {web: {image: a}}\n", "name: invalid application name 'a.b'"),
    ("name: shop\n", "services: missing or empty"),
    ("name: shop\nservices: {}\n", "services: missing or empty"),
    ("name: shop\nservices: {serviceA: {image: a}}\n",
     "services.serviceA: invalid service name 'serviceA': use [a-z0-9][a-z0-9._-]*, at most 63 "
     "characters (use 'servicea')"),
    ("name: shop\nservices: {a..b: {image: a}}\n", "services.a..b: invalid service name"),
    (f"name: {'s' * 40}\nservices: {{{'w' * 30}: {{image: a}}}}\n", "is longer than 63 characters"),
    ("- 1\n", "the document must be a mapping"),
    ("just text\n", "the document must be a mapping"),
    ("", "empty file"),
    ("name: [\n", "invalid YAML"),
    ("name: a\n---\nname: b\n", "invalid YAML: expected a single document"),
    ("name: a\nname: b\nservices: {web: {image: a}}\n", "name: duplicate key (line 2)"),
    ("name: !!python/object:os.system x\n", "invalid YAML"),
])
def test_bad_document_is_named(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) or expected in p for p in found), found


@pytest.mark.parametrize(("where", "key", "hint"), [
    ("", "version: '3'", "(obsolete in Compose too: remove it)"),
    ("", "networks: {}", ""),
    ("", "volumes: {}", ""),
    ("services.web", "volumes: [/a:/b]", ""),
    ("services.web", "ports: ['80:80']", "(the proxy publishes the service"),
    ("services.web", "healthcheck: {}", "(use label bluegreen.health-path)"),
    ("services.web", "external_links: [servicea.local]", "(not needed"),
    ("services.web", "command: [x]", ""),
    ("services.web", "build: .", "(build and push the image first"),
    ("services.web.deploy", "resources: {}", ""),
])
def test_unsupported_key_is_refused_by_name(where: str, key: str, hint: str) -> None:
    name = key.split(":")[0]
    if where == "":
        text = f"name: shop\n{key}\nservices: {{web: {{image: a}}}}\n"
    elif where == "services.web":
        text = with_service(f"image: a\n{key}\n")
    else:
        text = with_service(f"image: a\ndeploy:\n  replicas: 1\n  {key}\n")
    line = f"{where + '.' if where else ''}{name}: not supported by bluegreen"
    found = problems(text)
    assert f"{line} {hint}".strip() in [p if hint else p.split(" (")[0] for p in found] or any(
        p.startswith(line) and hint in p for p in found), found


def test_unknown_and_foreign_labels_are_refused() -> None:
    found = problems(with_service("image: a\nlabels: {bluegreen.colour: x, com.example.a: b}\n"))
    assert found[0].startswith("services.web.labels.bluegreen.colour: unknown bluegreen label")
    assert found[1].startswith("services.web.labels.com.example.a: not supported by bluegreen "
                               "(only bluegreen.* labels")


def test_duplicate_routes_and_endpoints_and_unknown_dependency() -> None:
    found = problems("""\
        name: shop
        services:
          a: {image: a, labels: {bluegreen.endpoint: a.local, bluegreen.route: /}}
          b: {image: b, labels: {bluegreen.endpoint: a.local, bluegreen.route: /}}
          c:
            image: c
            environment: {DEP: "http://nope.local:5000/x", OK: "https://example.com", A: "http://a.local"}
        """)
    assert found == [
        "services.b.labels.bluegreen.endpoint: 'a.local' is already the endpoint of service a",
        "services.b.labels.bluegreen.route: '/' is already the route of service a",
        "services.c.environment.DEP: no service declares endpoint 'nope.local' (bluegreen.endpoint)",
    ]


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    f = tmp_path / "compose.yaml"
    f.write_text(textwrap.dedent("""\
        version: "3"
        name: shop
        services:
          serviceA:
            image: "bad image"
            volumes: [/a:/b]
          web:
            image: web:1
            deploy: {replicas: 100}
            labels: {bluegreen.port: "x", bluegreen.route: /}
        """))
    lines = appspec.check_file(f)
    assert lines == [
        f"{f}: version: not supported by bluegreen (obsolete in Compose too: remove it)",
        f"{f}: services.serviceA: invalid service name 'serviceA': use [a-z0-9][a-z0-9._-]*, "
        "at most 63 characters (use 'servicea')",
        f"{f}: services.serviceA.volumes: not supported by bluegreen",
        f"{f}: services.serviceA.image: invalid image reference 'bad image'",
        f"{f}: services.web.deploy.replicas: invalid scale 100: use a number from 1 to 64",
        f"{f}: services.web.labels.bluegreen.port: invalid port 'x': use a number from 1 to 65535",
    ]


# -- limits -----------------------------------------------------------------------------


def test_billion_laughs_is_refused() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        levels.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    found = problems("\n".join(levels) + "\n")
    assert found == [f"more than {appspec.MAX_NODES} YAML nodes (aliases expanded)"]


def test_recursive_alias_and_deep_nesting_are_refused() -> None:
    assert problems("a: &a [*a]\n")[0].endswith("nested more than 32 levels deep")
    assert "levels deep" in problems("a: " + "[" * 200 + "]" * 200 + "\n")[0]


def test_big_file_and_bad_bytes_and_missing_file(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * appspec.MAX_BYTES + "\n")
    assert appspec.check_file(big) == [f"{big}: larger than 8 MiB"]
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: \xff\n")
    assert appspec.check_file(binary) == [f"{binary}: not UTF-8 text (byte 6)"]
    missing = tmp_path / "none.yaml"
    assert appspec.check_file(missing)[0].startswith(f"{missing}: cannot read")


def test_a_5_mb_file_with_long_values_is_read_whole(tmp_path: Path) -> None:
    """Values that made the URL scan quadratic (a 250 KB value took 93 s): long runs of scheme
    characters before and without ``://``. The time is printed, never asserted."""
    run = "x" * 12_000 + "a1." * 4_000  # scheme characters, no ://
    lines = ["name: big", "services:"]
    for i in range(40):
        lines += [f"  s{i}:", f"    image: app:${{TAG:-{i}}}", "    environment:"]
        lines += [f"      A{j}: '{run}http://s{(i + 1) % 40}.local/{'p' * 1_000}'"
                  for j in range(5)]
        lines += ["    labels:", f"      bluegreen.endpoint: s{i}.local"]
    lines.append(f"x-pad: '{run * 2}'")
    big = tmp_path / "big.yaml"
    big.write_text("\n".join(lines) + "\n")
    assert big.stat().st_size > 5_000_000
    started = time.perf_counter()
    spec = appspec.load(big, environ={})
    print(f"5 MB file read in {time.perf_counter() - started:.3f} s")
    assert len(spec.services) == 40
    s7 = spec.services["s7"]
    assert (s7.image, s7.depends_on) == ("app:7", ("s8.local",))
    assert s7.environment["A4"] == run + "http://s8.local/" + "p" * 1_000
    long_value = with_service(f"image: a\nenvironment:\n  K: '{'a' * 250_000}'\n")
    assert appspec.loads(long_value).services["web"].environment["K"] == "a" * 250_000


def test_url_hosts_are_found_as_before() -> None:
    env = {"A": "see http://u:p@API.local:80/x and 1ftp://b.local/, git+ssh://c.local",
           "B": "://nohost 12://d.local s:///path", "C": "no url"}
    assert list(appspec._url_hosts(env)) == [("A", "api.local"), ("A", "b.local"),
                                             ("A", "c.local")]


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_only_a_regular_file_is_read(tmp_path: Path, kind: str) -> None:
    """A FIFO without a writer would block a plain open: it is refused at once."""
    path = {"fifo": tmp_path / "pipe.yaml", "directory": tmp_path, "device": Path("/dev/null")}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    name = {"fifo": "a FIFO", "directory": "a directory", "device": "a device"}[kind]
    assert appspec.check_file(path) == [f"{path}: not a regular file ({name})"]


@pytest.mark.parametrize(("value", "char"), [
    ("'a\\nb'", "a newline"), ("'a\\rb'", "a carriage return"), ("'a\\x1bb'", "control character U+001B"),
])
def test_control_characters_in_environment_values_are_refused(value: str, char: str) -> None:
    body = f"image: a\nenvironment:\n  OK: \"tab\\tis fine\"\n  BAD: \"{value[1:-1]}\"\n"
    assert problems(with_service(body)) == [
        f"services.web.environment.BAD: {char} in the value of BAD of service web (environment "
        "values are one line)"]
    block = with_service("image: a\nenvironment:\n  - |\n    K=two\n    lines\n")
    assert problems(block)[0].startswith("services.web.environment.K: a newline")
    assert appspec.loads(with_service('image: a\nenvironment: {T: "a\\tb"}\n')
                         ).services["web"].environment == {"T": "a\tb"}


# -- interpolation ----------------------------------------------------------------------

ENV = {"TAG": "7", "EMPTY": "", "HOST": "api.local", "NL": "a\nb"}


@pytest.mark.parametrize(("text", "expected"), [
    ("app:${TAG}", "app:7"), ("app:$TAG", "app:7"), ("$TAG$TAG", "77"),
    ("${MISSING:-d}", "d"), ("${EMPTY:-d}", "d"), ("${EMPTY-d}", ""), ("${MISSING-d}", "d"),
    ("${TAG:-d}", "7"), ("${TAG:?no tag}", "7"), ("${EMPTY?x}", ""),
    ("${TAG:+set}", "set"), ("${EMPTY:+set}", ""), ("${EMPTY+set}", "set"), ("${MISSING+s}", ""),
    ("$$TAG", "$TAG"), ("$${TAG}", "${TAG}"), ("a$$$$b", "a$$b"), ("$$$TAG", "$7"),
    ("world!$", "world!$"), ("$1 $-", "$1 $-"),  # a $ before anything else stays, as in Compose
    ("${MISSING:-${TAG}}", "7"), ("${MISSING:-x${MISSING2:-y}z}", "xyz"),
    ("${TAG:-${MISSING}}", "7"),  # a default not taken is not evaluated
    ("${MISSING:-a:b/c}", "a:b/c"), ("no dollar", "no dollar"),
])
def test_interpolation_as_compose(text: str, expected: str) -> None:
    assert appspec.interpolate(text, ENV) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("app:${BUILD_NUMBER}", "variable BUILD_NUMBER is not set (set it, or give a default: "
                            "${BUILD_NUMBER:-default})"),
    ("$MISSING", "variable MISSING is not set"),
    ("${MISSING:?give the tag}", "required variable MISSING is not set: give the tag"),
    ("${EMPTY:?}", "required variable EMPTY is empty"),
    ("${MISSING?}", "required variable MISSING is not set"),
    ("${}", "invalid interpolation '${}'"), ("${1A}", "invalid interpolation"),
    ("${TAG", "invalid interpolation"), ("${TAG:=x}", "invalid interpolation"),
    ("${A:-${B:-${C:-${D:-${E:-${F:-${G:-${H:-${I:-x}}}}}}}}}", "interpolation nested more than 8 levels"),
    ("${MISSING:-x", "invalid interpolation: no }"),
])
def test_interpolation_refusals_name_the_variable(text: str, message: str) -> None:
    with pytest.raises(appspec.UsageError) as info:
        appspec.interpolate(text, ENV)
    assert str(info.value).startswith(message), str(info.value)


def test_interpolation_comes_before_validation_in_every_value() -> None:
    text = with_service("""\
        image: registry:5000/app:${TAG}
        deploy: {replicas: "${SCALE:-2}"}
        environment:
          API: http://${HOST}/v1
          PRICE: "$$5"
        labels:
          bluegreen.route: ${ROUTE:-/}
          bluegreen.test.expect-body: "ok$"
        """, "  api:\n    image: a\n    labels: {bluegreen.endpoint: api.local}\n")
    web = appspec.loads(text, environ=ENV).services["web"]
    assert (web.image, web.scale, web.route, web.tests.expect_body) == (
        "registry:5000/app:7", 2, "/", "ok$")
    assert web.environment == {"API": "http://api.local/v1", "PRICE": "$5"}
    assert web.depends_on == ("api.local",)  # found in the interpolated URL
    assert appspec.loads(text.replace("${TAG}", "$TAG"), environ=ENV).services["web"].image \
        == "registry:5000/app:7"
    # an interpolated value is validated; an unset variable is named where it is used
    found = problems_in(text.replace("${TAG}", "${BAD}").replace("${HOST}", "${NL}"),
                        ENV | {"BAD": "UPPER CASE"})
    assert found[0].startswith("services.web.image: invalid image reference 'registry:5000/app:UPPER CASE'")
    assert found[1].startswith("services.web.environment.API: a newline in the value of API")
    assert problems_in(text.replace("${TAG}", "${BUILD_NUMBER}"), ENV) == [
        "services.web.image: variable BUILD_NUMBER is not set (set it, or give a default: "
        "${BUILD_NUMBER:-default})"]


def test_interpolation_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILD_NUMBER", "42")
    assert appspec.loads(with_service("image: app:${BUILD_NUMBER}\n")).services["web"].image \
        == "app:42"


def problems_in(text: str, environ: dict[str, str]) -> list[str]:
    with pytest.raises(AppSpecError) as info:
        appspec.loads(text, environ=environ)
    return info.value.problems


# -- the release plan: the seed's three scenarios ---------------------------------------


def _live(a_image: str = "bluegreen-servicea:v1", b_image: str = "bluegreen-serviceb:v1") -> dict:
    spec = appspec.load(EXAMPLE)
    a, b = spec.services["servicea"], spec.services["serviceb"]
    return {"servicea": {**a.record("blue"), "image": a_image},
            "serviceb": {**b.record("green"), "image": b_image}}


def _spec(a_image: str, b_image: str) -> appspec.AppSpec:
    text = EXAMPLE.read_text().replace("bluegreen-servicea:v1", a_image)
    return appspec.loads(text.replace("bluegreen-serviceb:v1", b_image))


def test_plan_nothing_changed() -> None:
    plan = appspec.changed(appspec.load(EXAMPLE), _live())
    assert plan.nothing
    assert plan.kept == ("servicea", "serviceb")
    assert [s.color for s in plan.services] == ["blue", "green"]


def test_plan_frontend_release_keeps_servicea_shared() -> None:
    plan = appspec.changed(_spec("bluegreen-servicea:v1", "bluegreen-serviceb:v2"), _live())
    assert (plan.changed, plan.kept, plan.new, plan.removed) == (("serviceb",), ("servicea",), (), ())
    b = plan.services[1]
    assert (b.live_color, b.color, b.reasons) == (
        "green", "blue", ("image bluegreen-serviceb:v1 -> bluegreen-serviceb:v2",))
    assert not plan.nothing


def test_plan_backend_release_keeps_serviceb_shared() -> None:
    plan = appspec.changed(_spec("bluegreen-servicea:v2", "bluegreen-serviceb:v1"), _live())
    assert (plan.changed, plan.kept) == (("servicea",), ("serviceb",))
    assert (plan.services[0].live_color, plan.services[0].color) == ("blue", "green")


def test_plan_both_change() -> None:
    plan = appspec.changed(_spec("bluegreen-servicea:v2", "bluegreen-serviceb:v2"), _live())
    assert (plan.changed, plan.kept) == (("servicea", "serviceb"), ())


def test_plan_env_scale_new_and_removed() -> None:
    live = _live()
    live["serviceb"]["env"] = {"dep_endpoint": "http://old.local", "SECRET": "x"}
    live["serviceb"]["scale"] = 4
    live["gone"] = {"image": "g:1", "env": {}, "scale": 1, "color": "green"}
    del live["servicea"]
    plan = appspec.changed(appspec.load(EXAMPLE), live)
    assert (plan.new, plan.changed, plan.removed) == (("servicea",), ("serviceb",), ("gone",))
    by = {s.name: s for s in plan.services}
    assert by["serviceb"].reasons == ("environment SECRET, dep_endpoint", "scale 4 -> 2")
    assert by["servicea"].color == "blue"  # a new service starts blue, as a first deployment
    assert by["gone"].color is None and by["gone"].live_color == "green"


def test_plan_port_and_health_path_count_when_recorded() -> None:
    live = _live()
    live["servicea"]["port"] = 5005
    del live["serviceb"]["health_path"]  # an older record without it: not compared
    plan = appspec.changed(appspec.load(EXAMPLE), live)
    assert plan.changed == ("servicea",)
    assert plan.services[0].reasons == ("port 5005 -> 5000",)


def test_service_record_hides_env_values_and_compares_either_form() -> None:
    s = ServiceSpec("w", "w:1", (("A", "1"),), 2, 8080, None, "/", "/h")
    assert s.record("blue", hashed=False) == {"image": "w:1", "env": {"A": "1"}, "scale": 2,
                                              "port": 8080, "health_path": "/h", "color": "blue"}
    hashed = s.record("blue")["env"]["A"]
    assert hashed == appspec.env_digest("1") and hashed.startswith("sha256:") and hashed != "1"
    spec = appspec.AppSpec("app", {"w": s})
    assert appspec.changed(spec, {"w": s.record("blue")}).nothing
    assert appspec.changed(spec, {"w": s.record("blue", hashed=False)}).nothing
    other = ServiceSpec("w", "w:1", (("A", "2"),), 2, 8080, None, "/", "/h")
    assert appspec.changed(spec, {"w": other.record("blue")}).services[0].reasons == ("environment A",)


WORKER = """\
  mailer:
    image: mailer:1
    environment:
      API: http://servicea.local/queue
"""


def _with_worker(image: str = "mailer:1") -> appspec.AppSpec:
    return appspec.loads(EXAMPLE.read_text() + "\n" + WORKER.replace("mailer:1", image))


def test_worker_changes_get_the_next_color_and_say_they_are_swapped() -> None:
    live = _live() | {"mailer": _with_worker().services["mailer"].record("green")}
    assert appspec.changed(_with_worker(), live).nothing
    plan = appspec.changed(_with_worker("mailer:2"), live)
    mailer = plan.services[2]
    assert (plan.changed, mailer.kind, mailer.live_color, mailer.color) == (
        ("mailer",), "worker", "green", "blue")
    assert mailer.describe() == ("mailer change (image mailer:1 -> mailer:2) green -> blue "
                                 "[worker: swapped at promotion, not blue-green]")
    assert plan.services[0].describe() == "servicea keep"
    new = appspec.changed(_with_worker(), _live()).services[2]
    assert (new.action, new.color, new.kind) == ("new", "blue", "worker")
    assert _with_worker().services["mailer"].depends_on == ("servicea.local",)


def test_removed_services_are_described_by_their_live_kind() -> None:
    live = _live() | {"mailer": {"image": "m:1", "env": {}, "scale": 1, "color": "green"},
                      "admin": {"image": "a:1", "env": {}, "scale": 1, "color": "blue",
                                "route": "/admin", "endpoint": None}}
    plan = appspec.changed(appspec.load(EXAMPLE), live)
    assert plan.removed == ("mailer", "admin") and not plan.nothing
    by = {p.name: p for p in plan.services}
    assert by["mailer"].describe() == "mailer remove (not in the file) green -> - [stops at promotion]"
    assert by["admin"].describe() == ("admin remove (not in the file) blue -> - "
                                      "[serves until promotion, then leaves the proxy and stops]")
    assert (appspec.kind_of(live["admin"]), appspec.kind_of(live["mailer"])) == ("routed", "worker")


def test_a_service_still_calling_a_removed_endpoint_is_named() -> None:
    live = _live()
    live["servicea"] |= {"endpoint": "servicea.local", "route": None}
    live["serviceb"] |= {"endpoint": None, "route": "/"}
    only_b = appspec.loads(EXAMPLE.read_text().split("  serviceb:")[0].replace(
        "servicea:", "serviceb:", 1).replace("bluegreen.endpoint: servicea.local",
                                             "bluegreen.route: /"))
    assert appspec.live_conflicts(only_b, live) == []  # serviceb no longer calls anything
    text = EXAMPLE.read_text()
    without_a = appspec.loads("name: hello-world\nservices:\n" + text[text.index("  serviceb:"):])
    assert without_a.services["serviceb"].depends_on == ()  # an unknown name: app check passes
    assert appspec.live_conflicts(without_a, live) == [
        "serviceb calls servicea.local, the endpoint of servicea, which the file removes"]
    assert appspec.live_conflicts(appspec.load(EXAMPLE), live) == []  # nothing removed


def test_a_route_or_endpoint_of_another_live_service_is_a_conflict() -> None:
    """Renaming a service onto the live route passed check and --dry-run, then nginx refused
    (duplicate location "/"): the removed service serves until promotion."""
    live = _live()
    live["servicea"] |= {"endpoint": "servicea.local", "route": None}
    live["serviceb"] |= {"endpoint": None, "route": "/"}
    text = EXAMPLE.read_text()
    renamed = appspec.loads(text.replace("  serviceb:", "  frontend:"))
    assert appspec.live_conflicts(renamed, live) == [
        "frontend takes route / of serviceb, which the file removes (it serves until "
        "promotion): the proxy cannot serve both; move it in two releases"]
    assert appspec.live_conflicts(appspec.load(EXAMPLE), live) == []  # each keeps its own
    backend = appspec.loads(text.replace("  servicea:", "  backend:"))
    assert "backend takes endpoint servicea.local of servicea, which the file removes (it " \
           "serves until promotion): the proxy cannot serve both; move it in two releases" \
           in appspec.live_conflicts(backend, live)
    moved = {n: r | ({"route": "/old"} if n == "serviceb" else {}) for n, r in live.items()}
    moved["servicea"] |= {"route": "/"}  # the live release gives / to servicea
    assert appspec.live_conflicts(appspec.load(EXAMPLE), moved) == [
        "serviceb takes route / of servicea, in the live release: the proxy cannot serve "
        "both; move it in two releases"]


def test_a_service_cannot_turn_between_routed_and_worker() -> None:
    live = {n: r | {"route": "/" if n == "serviceb" else None, "endpoint": None}
            for n, r in _live().items()}  # servicea recorded as a worker
    assert appspec.live_conflicts(appspec.load(EXAMPLE), live) == [
        "servicea would turn from worker to routed: remove it in one release and add it in "
        "the next"]


# -- version-consistent chains ----------------------------------------------------------

A = "servicea.local"


def test_chains_frontend_release_both_b_colors_reach_the_one_a() -> None:
    spec = _spec("bluegreen-servicea:v1", "bluegreen-serviceb:v2")
    table = appspec.chain_routes(spec, appspec.changed(spec, _live()), 50)
    assert table == {("serviceb", "green"): {A: {"blue": 100}}, ("serviceb", "blue"): {A: {"blue": 100}}}
    assert appspec.per_color_conflicts(table) == []


def test_chains_backend_release_shared_b_follows_the_weight() -> None:
    spec = _spec("bluegreen-servicea:v2", "bluegreen-serviceb:v1")
    plan = appspec.changed(spec, _live())
    assert appspec.chain_routes(spec, plan, 10) == {("serviceb", "green"): {A: {"blue": 90, "green": 10}}}
    assert appspec.chain_routes(spec, plan, 0) == {("serviceb", "green"): {A: {"blue": 100}}}
    assert appspec.chain_routes(spec, plan, 100) == {("serviceb", "green"): {A: {"green": 100}}}


def test_chains_both_change_never_mix_at_any_step() -> None:
    spec = _spec("bluegreen-servicea:v2", "bluegreen-serviceb:v2")
    plan = appspec.changed(spec, _live())  # A blue -> green, B green -> blue
    for weight in (0, 10, 50, 100):
        assert appspec.chain_routes(spec, plan, weight) == {
            ("serviceb", "green"): {A: {"blue": 100}},   # old B -> old A
            ("serviceb", "blue"): {A: {"green": 100}},   # new B -> new A
        }


def test_one_listener_per_color_is_not_always_enough() -> None:
    text = EXAMPLE.read_text() + (
        "  servicec:\n    image: c:2\n    environment: {dep_endpoint: 'http://servicea.local'}\n")
    spec = appspec.loads(text.replace("bluegreen-servicea:v1", "bluegreen-servicea:v2")
                         .replace("bluegreen-serviceb:v1", "bluegreen-serviceb:v2"))
    live = {**_live(), "servicec": {"image": "c:1", "env": {"dep_endpoint": "http://servicea.local"},
                                    "scale": 1, "color": "blue"}}
    table = appspec.chain_routes(spec, appspec.changed(spec, live), 50)
    # serviceb's new color is blue, servicec's old color is blue: both call servicea.local
    assert table[("serviceb", "blue")] == {A: {"green": 100}}
    assert table[("servicec", "blue")] == {A: {"blue": 100}}
    assert appspec.per_color_conflicts(table) == [
        "blue callers of servicea.local: serviceb needs {'green': 100}, servicec needs {'blue': 100}",
        "green callers of servicea.local: serviceb needs {'blue': 100}, servicec needs {'green': 100}"]



def test_on_a_runtime_without_caller_addresses_a_release_needing_chains_is_refused() -> None:
    """--runtime swarm: tasks reach the proxy from their node's address, so only the releases
    that need no chain pass (a caller and its callee changing together need one)."""
    from bluegreen.app.target import unchainable
    from bluegreen.runtime.docker import DockerRuntime
    from bluegreen.runtime.swarm import SwarmRuntime

    swarm = SwarmRuntime.__new__(SwarmRuntime)
    docker = DockerRuntime.__new__(DockerRuntime)
    both = _spec("bluegreen-servicea:v2", "bluegreen-serviceb:v2")
    plan = appspec.changed(both, _live())
    assert unchainable(both, plan, swarm) == [
        "serviceb calls servicea.local and both change: keeping each release's callers on its "
        "release needs the proxy to tell them apart by address, which tasks on --runtime swarm "
        "do not allow (they reach it through their node's address); release servicea first, "
        "then serviceb"]
    assert unchainable(both, plan, docker) == [] and unchainable(both, plan, None) == []
    for a, b in (("v2", "v1"), ("v1", "v2"), ("v1", "v1")):  # backend, frontend, nothing
        spec = _spec(f"bluegreen-servicea:{a}", f"bluegreen-serviceb:{b}")
        assert unchainable(spec, appspec.changed(spec, _live()), swarm) == []
    first = appspec.changed(both, {})  # a first release: no callee has a live color
    assert unchainable(both, first, swarm) == []


def test_swarm_service_names_are_dns_labels() -> None:
    from bluegreen.runtime.swarm import _DNS_LABEL, swarm_name

    assert swarm_name("books", "blue") == "books-blue"
    name = swarm_name("hello-world.servicea", "green")
    assert name.startswith("hello-world-servicea-green-") and _DNS_LABEL.fullmatch(name)
    assert name != swarm_name("hello-world-servicea", "green")  # unique: the digest
    long = swarm_name("a" * 60 + ".b_c", "green")
    assert len(long) <= 63 and _DNS_LABEL.fullmatch(long)


# -- the command ------------------------------------------------------------------------


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from bluegreen.app import spec as appspec; sys.exit(appspec.cmd_app_check(" \
           "{'file': sys.argv[1], 'json': len(sys.argv) > 2}))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=False, timeout=60)


def test_cmd_app_check_exit_codes(tmp_path: Path) -> None:
    ok = _check(str(EXAMPLE))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == (f"{EXAMPLE}: ok: application hello-world: servicea (routed), "
                                 "serviceb (routed)")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nservices: {web: {image: a, ports: ['80'], scale: 0}}\n")
    out = _check(str(bad))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"{bad}: services.web.ports: not supported by bluegreen (the proxy publishes the service: "
        "use labels bluegreen.port and bluegreen.route)",
        f"{bad}: services.web.scale: invalid scale 0: use a number from 1 to 64",
    ]
    assert out.stdout == ""
    assert '"valid": false' in _check(str(bad), "json").stdout
    good = json.loads(_check(str(EXAMPLE), "json").stdout)
    assert (good["name"], good["phases"]) == ("hello-world", list(appspec.model.PHASES))


# -- sessions that stay on one release ---------------------------------------------------------


def test_the_sticky_label_opts_a_service_in() -> None:
    spec = appspec.loads(textwrap.dedent(GOOD).replace(
        "      bluegreen.route: /\n", "      bluegreen.route: /\n      bluegreen.sticky: \"true\"\n"))
    assert spec.services["web"].sticky and not spec.services["api"].sticky
    spec = appspec.loads(with_service("image: a\nlabels: {bluegreen.route: /, "
                                      "bluegreen.sticky: false}\n"))
    assert not spec.services["web"].sticky  # a YAML boolean reads as Compose reads it


@pytest.mark.parametrize(("labels", "expected"), [
    ("{bluegreen.route: /, bluegreen.sticky: \"yes\"}",
     "services.web.labels.bluegreen.sticky: invalid value 'yes': use \"true\" or \"false\""),
    ("{bluegreen.route: /, bluegreen.sticky: \"True\"}",
     "services.web.labels.bluegreen.sticky: invalid value 'True'"),
    ("{bluegreen.sticky: \"true\"}",
     "services.web.labels.bluegreen.sticky: a worker (no bluegreen.route or bluegreen.endpoint) "
     "serves no client to keep"),
])
def test_a_sticky_label_that_cannot_be_is_refused_by_name(labels: str, expected: str) -> None:
    found = problems(with_service(f"image: a\nlabels: {labels}\n"))
    assert any(p.startswith(expected) for p in found), found
