"""``spinn certs``: the certificates of a secured drone <-> cloud link, made with openssl.

One directory holds a CA (``ca.pem``, ``ca.key``), the cloud's certificate (``cloud.pem``,
``cloud.key``; SAN: localhost, 127.0.0.1 and every ``--san``), and for every drone a
certificate whose common name is the drone's name (``<drone>.pem``) plus one for its
monitor (``<drone>-monitor.pem``). The cloud's access control lets each drone reach only
its own tail key (spinn_ros/transport/zenoh_link.py); its name is the one its tail key uses
(the drone node's namespace without slashes, ``default`` without one).

    spinn certs --out ~/.spinn/certs --drone drone1 --drone drone2 [--san cloud.example.org] [--force]

Existing files are kept (``--force`` remakes them): adding a drone later signs its cert with
the CA already there. The ``.key`` files are private keys (mode 0600); a drone needs only
``ca.pem`` and its own two pairs, never ``ca.key``.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import re
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from ..transport.zenoh_link import CLOUD_IDENTITY, DEFAULT_CERTS_DIR, monitor_name

DAYS_CA, DAYS_LEAF = 3650, 825
EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()[-500:]}")


def make_ca(out: Path, name: str = "spinn-ca") -> None:
    _openssl("req", "-x509", *EC_KEY, "-keyout", str(out / "ca.key"), "-out", str(out / "ca.pem"),
             "-days", str(DAYS_CA), "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    os.chmod(out / "ca.key", 0o600)


def _san(host: str) -> str:
    try:
        return f"IP:{ipaddress.ip_address(host)}"
    except ValueError:
        return f"DNS:{host}"


def make_cert(out: Path, name: str, hosts: list[str]) -> None:
    """``<name>.pem``/``.key`` signed by the CA in ``out``: CN = name, usable as TLS server and client."""
    ext = ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
           "extendedKeyUsage=serverAuth,clientAuth\n"
           f"subjectAltName={','.join(_san(h) for h in dict.fromkeys([name, *hosts]))}\n")
    with tempfile.TemporaryDirectory() as tmp:
        csr, extfile = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        extfile.write_text(ext)
        _openssl("req", *EC_KEY, "-keyout", str(out / f"{name}.key"), "-out", str(csr), "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(out / "ca.pem"), "-CAkey", str(out / "ca.key"),
                 "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(DAYS_LEAF), "-extfile", str(extfile),
                 "-out", str(out / f"{name}.pem"))
    os.chmod(out / f"{name}.key", 0o600)


def ensure_certs(out: Path, drones: list[str], cloud_hosts: list[str] = (), force: bool = False) -> list[str]:
    """Make whatever of the CA, the cloud's and the drones' (and their monitors') certs is missing;
    returns the names made."""
    out.mkdir(parents=True, exist_ok=True)
    made = []
    if force or not (out / "ca.pem").is_file():
        make_ca(out)
        made.append("ca")
        force = True        # a new CA: every certificate must be signed again
    wanted = {CLOUD_IDENTITY: ["localhost", "127.0.0.1", *cloud_hosts]}
    for drone in drones:
        wanted[drone] = []
        wanted[monitor_name(drone)] = []
    for name, hosts in wanted.items():
        if force or not (out / f"{name}.pem").is_file() or not (out / f"{name}.key").is_file():
            make_cert(out, name, hosts)
            made.append(name)
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spinn certs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_CERTS_DIR, help=f"certificate directory (default {DEFAULT_CERTS_DIR})")
    ap.add_argument("--drone", action="append", default=[],
                    help="a drone's name (repeatable or comma-separated); default: 'default' (a drone without namespace)")
    ap.add_argument("--san", action="append", default=[],
                    help="another DNS name or IP the cloud is reached at (repeatable)")
    ap.add_argument("--force", action="store_true", help="remake everything, the CA included")
    opts = ap.parse_args(argv)
    drones = [d.strip() for item in opts.drone for d in item.split(",") if d.strip()] or ["default"]
    bad = [d for d in drones if not re.fullmatch(r"[A-Za-z0-9_\-]+", d)]
    if bad:
        print(f"spinn certs: drone names are tail-key chunks (letters, digits, '-', '_'): {bad}", file=sys.stderr)
        return 2
    out = Path(opts.out).expanduser()
    try:
        made = ensure_certs(out, drones, opts.san, opts.force)
    except (RuntimeError, OSError) as exc:
        print(f"spinn certs: {exc}", file=sys.stderr)
        return 1
    print(f"{out}: {'made ' + ', '.join(made) if made else 'all certificates already there'}; "
          f"cloud + drones {', '.join(drones)} (and their monitors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
