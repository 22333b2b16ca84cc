"""Test certificates made on the spot with the openssl CLI: a CA, certificates it signs, a PKCS#12 keystore."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _run(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, f"openssl {' '.join(args)}: {res.stderr}"


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def ca(folder: Path, name: str = "ca") -> Pair:
    folder.mkdir(parents=True, exist_ok=True)
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=kubesight test {name}",
         "-keyout", f"{name}.key", "-out", f"{name}.crt", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    return Pair(folder / f"{name}.crt", folder / f"{name}.key")


def signed(folder: Path, by: Pair, name: str, sans: str = "IP:127.0.0.1,DNS:localhost", client: bool = False) -> Pair:
    """A certificate for ``name`` with those subjectAltNames, signed by ``by``."""
    _run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
         "-out", f"{name}.csr", cwd=folder)
    ext = folder / f"{name}.ext"
    ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage={'clientAuth' if client else 'serverAuth'}\n"
                   "basicConstraints=CA:FALSE\n")
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", str(by.cert), "-CAkey", str(by.key), "-CAcreateserial",
         "-days", "2", "-out", f"{name}.crt", "-extfile", ext.name, cwd=folder)
    return Pair(folder / f"{name}.crt", folder / f"{name}.key")


def pkcs12(folder: Path, pair: Pair, password: str, name: str = "keystore") -> Path:
    _run("pkcs12", "-export", "-in", str(pair.cert), "-inkey", str(pair.key), "-name", "kafka",
         "-out", f"{name}.p12", "-passout", f"pass:{password}", cwd=folder)
    return folder / f"{name}.p12"
