"""DOCKER_HOST=tcp://127.0.0.1:PORT with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, as the docker
CLI reads them, against a real dockerd started here with ``--tlsverify`` (certificates made
by the test with openssl): a full run through it, and its TLS errors."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from bluegreen_dev.certs import CA
from bluegreen_dev.tls_dockerd import TLSDockerd
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration


def cert_dir(d: Path, ca: Path, pair) -> Path:
    """A DOCKER_CERT_PATH: ca.pem, cert.pem, key.pem."""
    d.mkdir(parents=True)
    shutil.copy(ca, d / "ca.pem")
    shutil.copy(pair.cert, d / "cert.pem")
    shutil.copy(pair.key, d / "key.pem")
    return d


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Iterator[SimpleNamespace]:
    d = tmp_path_factory.mktemp("docker-tls")
    ca, other = CA.make(d / "pki", "ca"), CA.make(d / "pki", "other")
    dockerd = TLSDockerd(d / "engine", ca.cert, ca.issue("server")).start()
    try:
        dockerd.load("bluegreen-sample:v1", "bluegreen-sample:v2")
        yield SimpleNamespace(
            dockerd=dockerd, certs=cert_dir(d / "client", ca.cert, ca.issue("client")),
            strangers=cert_dir(d / "stranger", other.cert, other.issue("stranger")))
    finally:
        dockerd.stop()


def tls_env(svc: Env, engine: SimpleNamespace, certs: Path) -> dict[str, str]:
    env = svc.env | {"DOCKER_HOST": engine.dockerd.host, "DOCKER_TLS_VERIFY": "1",
                     "DOCKER_CERT_PATH": str(certs)}
    env.pop("BLUEGREEN_PUBLISH_IP")  # published on 0.0.0.0; registered at the DOCKER_HOST's host
    return env


def engine_containers(engine: SimpleNamespace, service: str) -> list[str]:
    out = engine.dockerd.local("ps", "-a", "--filter", f"label=bluegreen.service={service}",
                               "--format", "{{.Names}} {{.State}}")
    assert out.returncode == 0, out.stderr
    return sorted(out.stdout.splitlines())


def test_run_and_rollback_through_a_tls_docker_host(svc, engine):
    env = tls_env(svc, engine, engine.certs)
    for image in ("v1", "v2"):
        r = svc.bg("run", svc.service, "--image", f"bluegreen-sample:{image}", "--http",
                   "/api/v1/books", env=env)
        assert r.code == 0, r.err
    assert svc.version() == "v2"
    assert engine_containers(engine, svc.service)  # on the TLS engine, not the main one
    assert svc.containers() == {}
    addrs = svc.bg("address", svc.service, "--color", "green", env=env).out.split()
    assert len(addrs) == 1 and addrs[0].startswith("127.0.0.1:")
    r = svc.bg("rollback", svc.service, env=env)
    assert r.code == 0, r.err
    assert svc.version() == "v1"
    r = svc.bg("status", svc.service, "--json", env=env)
    assert r.code == 0, r.err


def test_a_client_certificate_the_engine_does_not_trust_exit_4(svc, engine):
    before = svc.snapshot()
    r = svc.bg("run", svc.service, "--image", "bluegreen-sample:v1", "--http", "/api/v1/books",
               env=tls_env(svc, engine, engine.strangers))
    assert r.code == 4, r.err
    assert f"TLS with Docker at {engine.dockerd.host} failed" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert svc.snapshot() == before and engine_containers(engine, svc.service) == []


def test_missing_tls_files_exit_5(svc, engine, tmp_path):
    r = svc.bg("run", svc.service, "--image", "bluegreen-sample:v1", "--http", "/api/v1/books",
               env=tls_env(svc, engine, tmp_path))
    assert r.code == 5, r.err
    assert str(tmp_path / "cert.pem") in r.err and len(r.err.strip().splitlines()) == 1
