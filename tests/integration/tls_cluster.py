"""A local Redis Cluster that looks like MemoryDB from a client: three TLS-only masters with
cluster mode on, certificates from a CA made here, and nodes that announce themselves by IP
address while their certificate names only ``localhost`` (so the hostname-check question is
the one MemoryDB's cluster discovery raises)."""

from __future__ import annotations

import datetime
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.local.services import Service, redis_binary

SLOTS = 16384


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing of this cluster


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_pki(directory: Path) -> Pki:
    """A CA, and a server certificate it signs for DNS name ``localhost`` only (no IP SAN)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("maas test CA")
    _, other_cert = _ca("maas unrelated CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pki = Pki(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key",
              other_ca=directory / "other-ca.pem")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.other_ca.write_bytes(other_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, pki.key)
    return pki


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tls_port_open(port: int, pki: Pki) -> bool:
    try:
        admin_client(port, pki).ping()
        return True
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def admin_client(port: int, pki: Pki) -> redis.Redis:
    """The node's default user over TLS (CA verified; the test addresses nodes by IP)."""
    return redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(pki.ca), ssl_check_hostname=False,
                       socket_timeout=2, socket_connect_timeout=2)


@dataclass
class TlsCluster:
    pki: Pki
    ports: list[int]
    services: list[Service]

    @property
    def seed_url(self) -> str:
        """What MemoryDB gives: a DNS name for the cluster's configuration endpoint."""
        return f"rediss://localhost:{self.ports[0]}"

    def admins(self) -> list[redis.Redis]:
        return [admin_client(port, self.pki) for port in self.ports]

    def stop(self) -> None:
        for service in self.services:
            service.stop()


def start_tls_cluster(workdir: Path, masters: int = 3) -> TlsCluster:
    pki = make_pki(workdir / "pki")
    ports = _free_ports(2 * masters)
    data_ports, bus_ports = ports[:masters], ports[masters:]
    services: list[Service] = []
    try:
        for i, (port, bus) in enumerate(zip(data_ports, bus_ports, strict=True)):
            node_dir = workdir / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            argv = [redis_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                    "--tls-cert-file", str(pki.cert), "--tls-key-file", str(pki.key),
                    "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "no", "--tls-cluster", "yes",
                    "--cluster-enabled", "yes", "--cluster-port", str(bus),
                    "--cluster-config-file", str(node_dir / "nodes.conf"), "--dir", str(node_dir),
                    "--save", "", "--appendonly", "no"]
            service = Service(name=f"redis-tls-{i}", argv=argv, port=port,
                              ready=lambda p=port: _tls_port_open(p, pki), log_path=node_dir / "redis.log")
            services.append(service.start(timeout_s=30))
        admins = [admin_client(port, pki) for port in data_ports]
        share = SLOTS // masters
        for i, admin in enumerate(admins):
            last = SLOTS - 1 if i == masters - 1 else (i + 1) * share - 1
            admin.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        for port, bus in zip(data_ports[1:], bus_ports[1:], strict=True):
            admins[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            infos = [admin.cluster("info") for admin in admins]
            if all(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == masters for info in infos):
                return TlsCluster(pki=pki, ports=data_ports, services=services)
            time.sleep(0.1)
        raise TimeoutError("the TLS cluster did not reach cluster_state:ok")
    except BaseException:
        for service in services:
            service.stop()
        raise
