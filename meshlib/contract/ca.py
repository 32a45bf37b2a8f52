"""The certificate service's wire protocol: Istio's ``IstioCertificateService``.

meshlib speaks the CA protocol Istio's agents speak (``istio/api`` security/v1alpha1
``ca.proto``), so the messages are well known and field-compatible::

    service IstioCertificateService {
      rpc CreateCertificate(IstioCertificateRequest) returns (IstioCertificateResponse);
    }
    message IstioCertificateRequest  { string csr = 1; int64 validity_duration = 3; }
    message IstioCertificateResponse { repeated string cert_chain = 200; }

``validity_duration`` is in seconds (0: the mesh default; negative or past
:data:`MAX_VALIDITY_DURATION` is refused); ``cert_chain`` is the
workload certificate first and the root last, PEM. The caller authenticates with
``authorization: Bearer <token>`` metadata. (Istio's optional ``metadata`` Struct,
field 4, is not used; unknown fields are ignored either way.)

The two message classes are built at import from a descriptor, in a private pool: no
generated code, and nothing registered globally. This module imports protobuf, so
:mod:`meshlib.contract` does not re-export it: the CA client and the certificate
service import it by name.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "CREATE_CERTIFICATE",
    "MAX_VALIDITY_DURATION",
    "SERVICE_NAME",
    "CertificateRequest",
    "CertificateResponse",
]

SERVICE_NAME = "istio.v1.auth.IstioCertificateService"
CREATE_CERTIFICATE = f"/{SERVICE_NAME}/CreateCertificate"
# The longest validity_duration a request may carry (then capped at the mesh's
# certificate TTL); more is a caller's bug, answered INVALID_ARGUMENT.
MAX_VALIDITY_DURATION = 10 * 365 * 24 * 3600  # seconds

_F = descriptor_pb2.FieldDescriptorProto


def _build() -> tuple[type, type]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="meshlib/istio_ca.proto", package="istio.v1.auth", syntax="proto3")
    request = proto.message_type.add(name="IstioCertificateRequest")
    request.field.add(name="csr", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    request.field.add(name="validity_duration", number=3, type=_F.TYPE_INT64,
                      label=_F.LABEL_OPTIONAL)
    response = proto.message_type.add(name="IstioCertificateResponse")
    response.field.add(name="cert_chain", number=200, type=_F.TYPE_STRING,
                       label=_F.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return (message_factory.GetMessageClass(
                pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateRequest")),
            message_factory.GetMessageClass(
                pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateResponse")))


CertificateRequest, CertificateResponse = _build()
CertificateRequest.__doc__ = ("``IstioCertificateRequest``: ``csr`` (PEM) and "
                              "``validity_duration`` (seconds; 0: the mesh default).")
CertificateResponse.__doc__ = ("``IstioCertificateResponse``: ``cert_chain``, PEM, the "
                               "workload certificate first and the root last.")
