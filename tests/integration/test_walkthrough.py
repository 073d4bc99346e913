"""The book's manual walkthrough, command by command, on real Docker, Consul and nginx."""

from __future__ import annotations

import json
import subprocess

import pytest

pytestmark = pytest.mark.integration


def test_book_walkthrough(svc):
    s = svc.service
    assert svc.bg("color", "current", s).out.strip() == ""
    assert svc.bg("color", "next", s).out.strip() == "blue"

    # Deploy blue: registered in Consul, but not yet behind the proxy (404).
    r = svc.bg("deploy", s, "--color", "blue", "--image", "bluegreen-sample:v1")
    assert r.code == 0, r.err
    assert svc.containers() == {f"{s}-blue": "running"}
    assert f"{s}-blue" in svc.catalog_services()
    inspect = subprocess.run(["docker", "inspect", f"{s}-blue"], capture_output=True, text=True,
                             check=True).stdout
    labels = json.loads(inspect)[0]["Config"]["Labels"]
    assert labels["SERVICE_IGNORE"] == "true"  # Registrator skips it: no double registration
    assert labels["bluegreen.service"] == s and labels["bluegreen.color"] == "blue"
    assert f"SERVICE_NAME={s}-blue" in json.loads(inspect)[0]["Config"]["Env"]
    assert svc.get().status_code == 404
    addr = svc.bg("address", s, "--color", "blue").out.split()
    assert len(addr) == 1 and addr[0].startswith("127.0.0.1:")

    # Integrate blue: 200 from blue; the color is recorded.
    r = svc.bg("switch", s, "--color", "blue")
    assert r.code == 0, r.err
    assert svc.version() == "v1"
    assert svc.kv("color") == "blue"

    # Deploy green beside blue: the proxy still serves blue.
    assert svc.bg("color", "next", s).out.strip() == "green"
    r = svc.bg("deploy", s, "--color", "green", "--image", "bluegreen-sample:v2")
    assert r.code == 0, r.err
    assert svc.containers() == {f"{s}-blue": "running", f"{s}-green": "running"}
    assert svc.version() == "v1"

    # Integrate green, then stop blue.
    assert svc.bg("switch", s, "--color", "green").code == 0
    assert svc.version() == "v2"
    r = svc.bg("stop", s, "--color", "blue")
    assert r.code == 0, r.err
    assert svc.containers() == {f"{s}-blue": "exited", f"{s}-green": "running"}
    assert svc.version() == "v2"

    assert svc.kv("color") == "green"
    assert svc.bg("color", "next", s).out.strip() == "blue"
    assert f"{s}-blue" not in svc.catalog_services()
    assert [n["Service"]["Service"] for n in svc.passing("green")] == [f"{s}-green"]
    assert svc.passing("blue") == []
    svc.assert_safe()


def test_switch_reloads_only_on_change(svc):
    s = svc.service
    assert svc.bg("deploy", s, "--color", "blue", "--image", "bluegreen-sample:v1").code == 0
    assert svc.bg("switch", s, "--color", "blue").code == 0
    again = svc.bg("switch", s, "--color", "blue")
    assert again.code == 0 and "(unchanged)" in again.out


def test_scale_and_weights(svc):
    s = svc.service
    r = svc.bg("deploy", s, "--color", "blue", "--image", "bluegreen-sample:v1", "--scale", "3")
    assert r.code == 0, r.err
    assert sorted(svc.containers()) == [f"{s}-blue-1", f"{s}-blue-2", f"{s}-blue-3"]
    assert len(svc.bg("address", s, "--color", "blue").out.split()) == 3
    assert svc.bg("switch", s, "--color", "blue").code == 0
    assert svc.bg("deploy", s, "--color", "green", "--image", "bluegreen-sample:v2").code == 0
    # The multi-service seed's route weights: some traffic on green, the rest on blue.
    r = svc.bg("switch", s, "--color", "green", "--weight", "50")
    assert r.code == 0, r.err
    assert svc.kv("color") == "blue"  # recorded only at 100
    seen = {svc.version() for _ in range(40)}
    assert seen == {"v1", "v2"}
    assert svc.bg("switch", s, "--color", "green", "--weight", "100").code == 0
    assert {svc.version() for _ in range(10)} == {"v2"}
    assert svc.kv("color") == "green"


def test_stop_refuses_the_live_color(svc):
    s = svc.service
    assert svc.bg("deploy", s, "--color", "blue", "--image", "bluegreen-sample:v1").code == 0
    assert svc.bg("switch", s, "--color", "blue").code == 0
    r = svc.bg("stop", s, "--color", "blue")
    assert r.code == 1 and "live" in r.err
    assert svc.version() == "v1"
    r = svc.bg("deploy", s, "--color", "blue", "--image", "bluegreen-sample:v2")
    assert r.code == 1 and "live" in r.err
    assert svc.version() == "v1"
