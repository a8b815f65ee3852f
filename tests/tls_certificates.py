"""Test-only certificates, made with `cryptography`: a CA, server certificates it signs for
127.0.0.1 and localhost, and client certificates whose subject common name names an access key.
Keys are EC P-256 (quick to make); everything is written as PEM files.

    ca = CertificateAuthority(tmp_path, "test CA")
    server = ca.issue("server", server=True)      # server.certificate_file, server.key_file
    client = ca.issue("alice")                    # a client certificate for the key "alice"
    context = client.client_context(ca.certificate_file)
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_HOSTS = ("127.0.0.1", "localhost")


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class Issued(NamedTuple):
    certificate_file: str
    key_file: str
    certificate: x509.Certificate

    def client_context(self, ca_file: str) -> ssl.SSLContext:
        """A client's context that trusts ca_file and presents this certificate."""
        context = ssl.create_default_context(cafile=ca_file)
        context.load_cert_chain(self.certificate_file, self.key_file)
        return context

    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


class CertificateAuthority:
    def __init__(self, directory: Path | str, name: str = "dovecote test CA") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            self._builder(self.name, self._key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        stem = name.replace(" ", "-")
        self.certificate_file = str(self.directory / f"{stem}.pem")
        Path(self.certificate_file).write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject: x509.Name, public_key, now: datetime.datetime) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder().subject_name(subject).issuer_name(self.name).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
        )

    def issue(self, common_name: str, *, server: bool = False, hosts: tuple[str, ...] = SERVER_HOSTS, stem: str | None = None) -> Issued:
        """A certificate this CA signs, and its key, written as STEM.pem and STEM.key (STEM: the
        common name). server=True: for the hosts, as a TLS server; otherwise a client certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (
            self._builder(subject, key.public_key(), datetime.datetime.now(datetime.UTC))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ), critical=False)
        )
        if server:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        stem = stem or common_name
        certificate_file, key_file = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.touch(mode=0o600)
        key_file.write_bytes(_pem_key(key))
        return Issued(str(certificate_file), str(key_file), certificate)
