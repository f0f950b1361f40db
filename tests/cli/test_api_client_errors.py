"""What ``ApiClient`` says when a request gets no usable answer, each failure made for
real on 127.0.0.1: TLS servers with the wrong certificate, plain HTTP where HTTPS is
expected, a closed port, a server that never answers, a 401."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from podium.cli.client import ApiClient
from podium.cli.main import main
from podium.errors import PodiumError, Unauthenticated
from podium.pki.ca import CertificateAuthority


class _Answer(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the server's ``status`` and ``body``; records headers."""

    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, _Server)
        server.seen.append(dict(self.headers))
        payload = json.dumps(server.body).encode()
        self.send_response(server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _HangUp(_Answer):
    """Reads the request and closes the connection without a word."""

    def do_GET(self) -> None:
        self.close_connection = True


class _Stall(_Answer):
    """Reads the request and answers only once the test is over."""

    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, _Server)
        server.release.wait()
        super().do_GET()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[_Answer], status: int, body: object) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.status, self.body = status, body
        self.seen: list[dict[str, str]] = []
        self.release = threading.Event()


@contextmanager
def serving(
    handler: type[_Answer] = _Answer,
    *,
    tls: tuple[Path, Path] | None = None,
    status: int = 200,
    body: object = None,
) -> Iterator[_Server]:
    """An HTTP server on 127.0.0.1 in a thread, over TLS with ``(cert, key)``."""
    server = _Server(handler, status, {} if body is None else body)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


def url(server: _Server, scheme: str = "https") -> str:
    return f"{scheme}://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    """The CA the client trusts (its certificate is what --cacert names)."""
    return CertificateAuthority.init(tmp_path / "ca")


def certificate(
    ca: CertificateAuthority, tmp_path: Path, name: str, **names: list[str]
) -> tuple[Path, Path]:
    cert, key = ca.issue(name, **names)
    (tmp_path / f"{name}.pem").write_bytes(cert)
    (tmp_path / f"{name}.key").write_bytes(key)
    return tmp_path / f"{name}.pem", tmp_path / f"{name}.key"


@pytest.fixture
def good_cert(ca: CertificateAuthority, tmp_path: Path) -> tuple[Path, Path]:
    return certificate(ca, tmp_path, "server", ip_addresses=["127.0.0.1"])


def failure(base_url: str, ca: CertificateAuthority, timeout: float = 30.0) -> PodiumError:
    with (
        ApiClient(base_url, ca.ca_cert_path, "t0ken", timeout=timeout) as client,
        pytest.raises(PodiumError) as raised,
    ):
        client.call("GET", "/jobs")
    return raised.value


@pytest.mark.parametrize("served", ["another CA's certificate", "a self-signed certificate"])
def test_a_certificate_that_fails_verification_names_the_url_and_the_ca_to_give(
    served, ca, tmp_path
):
    other = CertificateAuthority.init(tmp_path / "other")
    if served == "another CA's certificate":
        tls = certificate(other, tmp_path, "server", ip_addresses=["127.0.0.1"])
        reason = "unable to get local issuer certificate"
    else:
        tls = (other.ca_cert_path, tmp_path / "other" / "ca_key.pem")
        reason = "self-signed certificate"
    with serving(tls=tls) as server:
        error = failure(url(server), ca)
    assert error.kind == "podium/tls-error"
    assert f"the certificate of the server at {url(server)} failed verification" in error.msg
    assert reason in error.msg
    assert "PODIUM_CACERT or --cacert must be the server's CA certificate" in error.msg
    assert "<datadir>/ca/ca_crt.pem" in error.msg
    assert str(ca.ca_cert_path) in error.msg
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert server.seen == []


def test_a_certificate_for_other_names_says_to_add_the_name_with_dns_alt_name(ca, tmp_path):
    tls = certificate(ca, tmp_path, "server", dns_names=["localhost"])
    with serving(tls=tls) as server:
        error = failure(url(server), ca)
    expected = f"the certificate of the server at {url(server)} is not valid for 127.0.0.1"
    assert expected in error.msg
    assert "mismatch" in error.msg
    assert "--dns-alt-name 127.0.0.1" in error.msg


def test_a_plain_http_server_on_a_url_given_as_https_says_it_speaks_plain_http(ca):
    with serving() as server:
        error = failure(url(server), ca)
    assert f"the server at {url(server)} answered in plain HTTP, not HTTPS" in error.msg
    assert "--server-url" in error.msg


def test_an_http_url_is_refused_before_any_request_and_says_to_use_https(ca, good_cert, capsys):
    with serving(tls=good_cert) as server:
        plain = url(server, "http")
        with pytest.raises(PodiumError) as raised:
            ApiClient(plain, ca.ca_cert_path, "t0ken")
        code = main(["job", "show", "--server-url", plain, "--cacert", str(ca.ca_cert_path)])
    assert f"use {url(server)}" in raised.value.msg
    assert "in the clear" in raised.value.msg
    assert code == 1
    assert f"podium job: the server URL {plain} is plain HTTP" in capsys.readouterr().err
    assert server.seen == []


def test_a_url_without_a_scheme_says_it_must_be_https(ca):
    with pytest.raises(PodiumError, match=r"must be an https:// URL, such as https://"):
        ApiClient("127.0.0.1:8143", ca.ca_cert_path)


def test_a_tls_server_that_hangs_up_without_answering_is_said_so(ca, good_cert):
    with serving(_HangUp, tls=good_cert) as server:
        error = failure(url(server), ca)
    assert "closed the connection without an HTTP answer" in error.msg
    assert isinstance(error.__cause__, httpx.RemoteProtocolError)


def test_a_closed_port_says_connection_refused(ca, capsys):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    code = main(
        ["job", "show", "--server-url", f"https://127.0.0.1:{port}", "--cacert",
         str(ca.ca_cert_path)]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert f"podium job: cannot reach the server at https://127.0.0.1:{port}: connection " in err
    assert f"refused, nothing listens on port {port} of 127.0.0.1" in err


def test_a_host_name_that_does_not_resolve_says_so(ca, monkeypatch):
    # A stand-in for the resolver, whose answer for an unknown name depends on the host.
    def no_such_name(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    error = failure("https://podium.invalid:8143", ca)
    assert error.msg.startswith(
        "cannot reach the server at https://podium.invalid:8143: the host name podium.invalid "
        "does not resolve (Name or service not known)"
    )


def test_a_port_that_never_starts_tls_says_the_connection_timed_out(ca):
    with socket.socket() as silent:  # the kernel accepts; nobody ever speaks TLS
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        error = failure(f"https://127.0.0.1:{port}", ca, timeout=0.2)
    assert f"cannot reach the server at https://127.0.0.1:{port}: no TLS connection" in error.msg
    assert f"port {port}" in error.msg


def test_a_server_that_never_answers_says_it_did_not_answer(ca, good_cert):
    with serving(_Stall, tls=good_cert) as server:
        error = failure(url(server), ca, timeout=0.2)
    assert f"the server at {url(server)} did not answer within 0.2 s" in error.msg


def test_a_401_without_a_token_says_where_tokens_come_from(ca, good_cert, tmp_path, monkeypatch):
    for name in ("PODIUM_TOKEN", "PODIUM_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    said = {"kind": "puppetlabs.rbac/user-unauthenticated", "msg": "this API needs a token"}
    with (
        serving(tls=good_cert, status=401, body=said) as server,
        ApiClient(url(server), ca.ca_cert_path) as client,
        pytest.raises(Unauthenticated) as raised,
    ):
        client.call("GET", "/jobs")
    assert raised.value.msg == (
        f"the server at {url(server)} needs you to log in: run `podium access login`, or "
        "give a token with --token, PODIUM_TOKEN or PODIUM_TOKEN_FILE"
    )
    assert "x-authentication" not in {k.lower() for k in server.seen[0]}


def test_a_401_for_a_wrong_token_says_to_give_the_right_one(ca, good_cert):
    said = {"kind": "puppetlabs.rbac/user-unauthenticated", "msg": "the token is not valid"}
    with (
        serving(tls=good_cert, status=401, body=said) as server,
        ApiClient(url(server), ca.ca_cert_path, "wrong") as client,
        pytest.raises(Unauthenticated) as raised,
    ):
        client.call("GET", "/jobs")
    assert raised.value.msg.startswith(
        f"the server at {url(server)} refused your token (the token is not valid): run "
        "`podium access login`, or give a token with --token, PODIUM_TOKEN or PODIUM_TOKEN_FILE"
    )
    assert raised.value.kind == "puppetlabs.rbac/user-unauthenticated"


def test_a_working_server_still_answers(ca, good_cert):
    with (
        serving(tls=good_cert, body={"items": []}) as server,
        ApiClient(url(server), ca.ca_cert_path, "t0ken") as client,
    ):
        assert client.call("GET", "/jobs") == {"items": []}
    assert server.seen[0]["X-Authentication"] == "t0ken"
