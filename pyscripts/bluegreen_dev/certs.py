"""A throwaway certificate authority for tests: a CA, server and client certificates made
with the ``openssl`` command (EC P-256, valid two days), in one directory."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

SUBJECT_CA = "/CN=bluegreen test CA"


def _openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {out.stderr.strip()[-300:]}")


@dataclass
class Pair:
    """A certificate and its key."""

    cert: Path
    key: Path


@dataclass
class CA:
    dir: Path

    @property
    def cert(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def key(self) -> Path:
        return self.dir / "ca.key"

    @classmethod
    def make(cls, directory: Path, name: str = "ca") -> CA:
        """A new CA in ``directory`` (its own files: ``<name>.pem``, ``<name>.key``)."""
        directory.mkdir(parents=True, exist_ok=True)
        ca = cls(directory / name)
        ca.dir.mkdir(exist_ok=True)
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                 "-subj", f"{SUBJECT_CA} {name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=ca.dir)
        return ca

    def issue(self, name: str, dns: tuple[str, ...] = ("localhost",),
              ips: tuple[str, ...] = ("127.0.0.1", "::1")) -> Pair:
        """A certificate for server and client use, named ``name`` (its CN), valid for
        ``dns`` and ``ips``."""
        sans = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
        (self.dir / f"{name}.ext").write_text(
            f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n"
            "keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
                 cwd=self.dir)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=self.dir)
        return Pair(self.dir / f"{name}.pem", self.dir / f"{name}.key")
