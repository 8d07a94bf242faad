"""A throw-away CA (trustme) and one server certificate for every simulated region.

The certificate's subject alternative names hold every region's IP address (so `https://198.19.0.1` verifies),
`<region>.sim.invalid` (for clients that set SNI / server_hostname), `localhost` and 127.0.0.1 (proxy mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SIM_DOMAIN = "sim.invalid"


@dataclass(frozen=True, slots=True)
class CertFiles:
    ca_file: Path  # PEM CA bundle for clients (httpx verify=, curl --cacert, blackbox tls_config.ca_file)
    server_file: Path  # PEM private key + certificate chain for the servers


def hostname(region: str) -> str:
    return f"{region}.{SIM_DOMAIN}"


def make_certs(directory: Path, regions: list[str], addresses: list[str]) -> CertFiles:
    """Write ca.pem and server.pem into DIRECTORY (which should be private: server.pem holds the key)."""
    try:
        import trustme
    except ImportError as e:
        raise RuntimeError("the region simulator needs `trustme` (pip install 'region-latency-exporter[demo]')") from e
    ca = trustme.CA(organization_name="region-latency-exporter simulator")
    identities = sorted(set(addresses)) + [hostname(r) for r in regions] + ["localhost", "127.0.0.1"]
    cert = ca.issue_cert(*dict.fromkeys(identities))
    files = CertFiles(directory / "ca.pem", directory / "server.pem")
    ca.cert_pem.write_to_path(str(files.ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(files.server_file))
    files.ca_file.chmod(0o644)
    return files
