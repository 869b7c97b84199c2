"""The trust anchor: Intel's SGX Root CA, pinned here so verification needs no network.

Provenance: the DER file `src/TrustedRootCA.der` of the `dcap-qvl` 0.7.0 source distribution
on PyPI (Phala Network, MIT licence), byte-identical to the root certificate embedded in the PCK
chain of that package's real SGX sample quote (`sample/sgx_quote`). Intel publishes the same
certificate as IntelSGXRootCA.der on its certificates service (the address in the certificate's
own CRL distribution point). Subject and issuer: CN=Intel SGX Root CA, O=Intel Corporation,
L=Santa Clara, ST=CA, C=US; valid 2018-05-21 to 2049-12-31; ECDSA P-256.
"""

from __future__ import annotations

import hmac

from cryptography import x509
from cryptography.hazmat.primitives import hashes

INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
"""SHA-256 fingerprint of the DER certificate below; checked on every load."""

INTEL_SGX_ROOT_CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ
BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG
A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0
aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT
AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7
1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB
uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ
MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50
ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI
KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg
AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=
-----END CERTIFICATE-----
"""


def intel_sgx_root_ca() -> x509.Certificate:
    """Intel's SGX Root CA certificate, after checking its pinned fingerprint."""
    cert = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM.encode("ascii"))
    if not hmac.compare_digest(cert.fingerprint(hashes.SHA256()).hex(), INTEL_SGX_ROOT_CA_SHA256):
        raise RuntimeError("the pinned Intel SGX Root CA does not match its fingerprint")
    return cert
