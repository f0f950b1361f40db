"""Certificates: how nodes, brokers and the server prove who they are.

- ``names``: what a certname may be (it becomes a file name).
- ``keys``: the agent's side of enrollment, a key and a CSR.
- ``ca``: the certificate authority directory: requests, signing, revocation, autosign;
  built on ``certs`` (pure builders and checks), ``index``, ``files`` and ``autosign``.
- ``tls``: SSL contexts for mutual TLS and the peer's identity.
- ``revocation``: the revoked serials from a CRL, and a watcher for its file.

Nothing is imported here, so that ``podium.pki.keys`` stays cheap for the agent.
"""
