from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from podium.cli import main as cli_main
from podium.errors import NotFound
from podium.pki.ca import CertificateAuthority
from podium.pki.keys import generate_key, make_csr

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cadir(tmp_path: Path) -> Path:
    return tmp_path / "ca"


@pytest.fixture
def run(cadir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """``run("list", "--all") -> (exit code, stdout, stderr)`` against ``cadir``."""
    # Only this command's module: the tests must not depend on the other commands.
    monkeypatch.setattr(cli_main, "_COMMANDS", ("ca",))

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli_main.main(["ca", argv[0], "--cadir", str(cadir), *argv[1:]])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _submit(cadir: Path, *certnames: str) -> None:
    ca = CertificateAuthority.open(cadir)
    for certname in certnames:
        ca.submit_csr(certname, make_csr(certname, generate_key()))


def test_init_creates_the_ca_and_prints_where_and_its_fingerprint(run: Run, cadir: Path) -> None:
    code, out, _ = run("init", "--name", "Lab CA")
    assert code == 0
    ca = CertificateAuthority.open(cadir)
    assert f"in {cadir}" in out
    assert ca.fingerprint in out
    assert "Autosign is off" in out


def _token_file(tmp_path: Path, *tokens: str) -> str:
    path = tmp_path / f"tokens-{len(list(tmp_path.iterdir()))}"
    path.write_text("".join(f"{token}\n" for token in tokens))
    path.chmod(0o600)
    return str(path)


def test_init_as_json(run: Run, cadir: Path, tmp_path: Path) -> None:
    tokens = _token_file(tmp_path, "t1")
    code, out, _ = run(
        "init", "--autosign", "*.lab", "web*", "--autosign-token-file", tokens, "--format", "json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["cadir"] == str(cadir)
    assert data["fingerprint"] == CertificateAuthority.open(cadir).fingerprint
    assert data["autosign"] == {"patterns": ["*.lab", "web*"], "token_count": 1}
    assert "t1" not in out


def test_init_twice_fails_with_one_line(run: Run) -> None:
    run("init")
    code, out, err = run("init")
    assert code == 1
    assert out == ""
    assert err.startswith("podium ca: a certificate authority already exists")
    assert err.count("\n") == 1


def test_commands_without_a_ca_say_how_to_create_one(run: Run) -> None:
    code, _, err = run("list")
    assert code == 1
    assert "run `podium ca init`" in err


def test_the_cadir_defaults_to_the_environment(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PODIUM_CADIR", str(tmp_path / "from-env"))
    assert cli_main.main(["ca", "init"]) == 0
    assert (tmp_path / "from-env" / "ca_crt.pem").exists()


def test_list_says_when_nothing_is_pending(run: Run) -> None:
    run("init")
    assert run("list")[1] == "No certificate requests are pending.\n"


def test_list_shows_pending_requests_as_an_aligned_table(run: Run, cadir: Path) -> None:
    run("init")
    _submit(cadir, "web01.example.com", "db1")
    code, out, _ = run("list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["CERTNAME", "STATE", "FINGERPRINT", "(SHA-256)", "EXPIRES"]
    assert [row.split()[:2] for row in rows] == [
        ["db1", "requested"],
        ["web01.example.com", "requested"],
    ]
    assert {line.index("requested") for line in rows} == {header.index("STATE")}
    fingerprints = {
        info.certname: info.fingerprint for info in CertificateAuthority.open(cadir).list()
    }
    assert rows[0].split()[2] == fingerprints["db1"]


def test_sign_then_list_all(run: Run, cadir: Path) -> None:
    run("init")
    _submit(cadir, "web01", "web02")
    code, out, _ = run("sign", "web01")
    assert (code, out) == (0, "Signed the certificate of web01 (serial 2).\n")
    assert [row.split()[:2] for row in run("list")[1].splitlines()[1:]] == [["web02", "requested"]]
    rows = run("list", "--all")[1].splitlines()[1:]
    assert [row.split()[:2] for row in rows] == [["web01", "signed"], ["web02", "requested"]]
    assert rows[0].endswith("UTC")


def test_list_as_json(run: Run, cadir: Path) -> None:
    run("init")
    _submit(cadir, "web01", "web02")
    run("sign", "web01")
    data = json.loads(run("list", "--all", "--format", "json")[1])
    assert [(item["certname"], item["state"], item["serial"]) for item in data] == [
        ("web01", "signed", 2),
        ("web02", "requested", None),
    ]
    assert data[0]["not_after"].startswith("20")
    assert json.loads(run("list", "--format", "json")[1])[0]["certname"] == "web02"


def test_sign_all_signs_every_pending_request(run: Run, cadir: Path) -> None:
    run("init")
    _submit(cadir, "web01", "web02")
    code, out, _ = run("sign", "--all", "--format", "json")
    assert code == 0
    assert [(item["certname"], item["serial"]) for item in json.loads(out)] == [
        ("web01", 2),
        ("web02", 3),
    ]
    assert run("sign", "--all")[1] == "No certificate requests are pending.\n"


def test_sign_refuses_unknown_certnames_before_signing_any(run: Run, cadir: Path) -> None:
    run("init")
    _submit(cadir, "web01")
    code, _, err = run("sign", "web01", "ghost")
    assert code == 1
    assert err == "podium ca: no certificate request is pending for ghost\n"
    assert CertificateAuthority.open(cadir).certificate("web01") is None


@pytest.mark.parametrize("argv", [("sign",), ("sign", "web01", "--all")])
def test_sign_needs_certnames_or_all_but_not_both(run: Run, argv: tuple[str, ...]) -> None:
    run("init")
    code, _, err = run(*argv)
    assert code == 1
    assert "give the certnames to sign, or --all" in err


def test_revoke_prints_the_serials(run: Run, cadir: Path) -> None:
    run("init")
    _submit(cadir, "web01")
    run("sign", "web01")
    code, out, _ = run("revoke", "web01")
    assert (code, out) == (0, "Revoked the certificate of web01 (serial 2).\n")
    assert run("list", "--all")[1].splitlines()[1].split()[:2] == ["web01", "revoked"]
    data = json.loads(run("revoke", "web01", "--format", "json")[1])
    assert data == [{"certname": "web01", "serial": 2, "state": "revoked"}]


def test_revoke_refuses_a_name_without_a_certificate(run: Run, cadir: Path) -> None:
    run("init")
    _submit(cadir, "web01")
    code, _, err = run("revoke", "web01")
    assert code == 1
    assert err == "podium ca: no certificate was signed for web01\n"


def test_autosign_shows_and_sets_the_policy(run: Run, cadir: Path, tmp_path: Path) -> None:
    run("init")
    assert run("autosign")[1] == "Autosign is off: requests wait for `podium ca sign`.\n"
    tokens = _token_file(tmp_path, "secret-1", "secret-2")
    code, out, _ = run("autosign", "--pattern", "*.lab", "--token-file", tokens)
    assert code == 0
    assert out == "Autosign patterns: *.lab\nAutosign tokens: 2 enrollment tokens\n"
    assert "secret" not in out
    _submit(cadir, "web01.lab")
    assert CertificateAuthority.open(cadir).certificate("web01.lab") is not None


def test_autosign_keeps_what_is_not_given(run: Run, tmp_path: Path) -> None:
    run("init")
    run("autosign", "--pattern", "*.lab", "--token-file", _token_file(tmp_path, "secret"))
    run("autosign", "--pattern", "*.dev")
    data = json.loads(run("autosign", "--format", "json")[1])
    assert data == {"patterns": ["*.dev"], "token_count": 1}


def test_autosign_off_clears_the_policy(run: Run) -> None:
    run("init", "--autosign", "*")
    assert run("autosign", "--off")[1].startswith("Autosign is off")
    assert json.loads(run("autosign", "--format", "json")[1]) == {"patterns": [], "token_count": 0}
    code, _, err = run("autosign", "--off", "--pattern", "*")
    assert code == 1 and "--off cannot be combined" in err


# A revoked certname's new request


def _enroll_and_revoke(cadir: Path, certname: str) -> None:
    ca = CertificateAuthority.open(cadir)
    if ca.submit_csr(certname, make_csr(certname, generate_key())) == "requested":
        ca.sign(certname)
    ca.revoke(certname)
    ca.submit_csr(certname, make_csr(certname, generate_key()))


def test_list_says_why_a_revoked_certname_waits(run: Run, cadir: Path) -> None:
    run("init", "--autosign", "*")
    _enroll_and_revoke(cadir, "web01")
    code, out, _ = run("list")
    assert code == 0
    assert out.splitlines()[1].split()[:2] == ["web01", "requested"]
    assert "web01 waits for an operator: the certificate of web01 (serial 2) was revoked" in out
    data = json.loads(run("list", "--format", "json")[1])
    assert "was revoked" in data[0]["hold_reason"]


def test_sign_all_leaves_a_revoked_certname_for_signing_by_name(run: Run, cadir: Path) -> None:
    run("init")
    _enroll_and_revoke(cadir, "web01")
    _submit(cadir, "web02")

    code, out, err = run("sign", "--all")

    assert (code, out) == (0, "Signed the certificate of web02 (serial 3).\n")
    assert err.startswith("Not signed: web01 waits for an operator")
    code, out, _ = run("sign", "web01")
    assert (code, out) == (0, "Signed the certificate of web01 (serial 4).\n")


# Through a server's CA API, where this machine has no CA directory


class FakeCaApi:
    """The server's ``certificate_status`` endpoints over a real CA, recording calls."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self.calls: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        from podium.server.ca_api import status_view

        path = request.url.path.removeprefix("/puppet-ca/v1")
        self.calls.append((request.method, path))
        assert request.headers["X-Authentication"] == "api-token"
        name = path.rsplit("/", 1)[-1]
        if request.method == "GET" and path.startswith("/certificate_statuses/"):
            state = request.url.params.get("state")
            return httpx.Response(200, json=[status_view(s) for s in self.ca.statuses(state)])
        if request.method == "GET":
            try:
                return httpx.Response(200, json=status_view(self.ca.status(name)))
            except NotFound as exc:
                return httpx.Response(404, json=exc.to_dict())
        desired = json.loads(request.content)["desired_state"]
        if desired == "signed":
            self.ca.sign(name)
        else:
            self.ca.revoke(name)
        return httpx.Response(204)


@pytest.fixture
def remote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[Run, FakeCaApi]:
    """``run`` with no CA directory here, against :class:`FakeCaApi`."""
    from podium.cli import ca as cli_ca
    from podium.cli.client import ApiClient

    monkeypatch.setattr(cli_main, "_COMMANDS", ("ca",))
    monkeypatch.delenv("PODIUM_CADIR", raising=False)
    monkeypatch.setenv("PODIUM_DATADIR", str(tmp_path / "no-server-here"))
    monkeypatch.setenv("PODIUM_TOKEN", "api-token")
    server_ca = CertificateAuthority.init(tmp_path / "server-ca")
    api = FakeCaApi(server_ca)
    made: list[str | None] = []

    def client(args: Any) -> ApiClient:
        made.append(args.server_url)
        return ApiClient(
            args.server_url,
            server_ca.ca_cert_path,
            api="/puppet-ca/v1",
            transport=httpx.MockTransport(api),
        )

    monkeypatch.setattr(cli_ca, "_client", client)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli_main.main(["ca", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run, api


def test_list_sign_and_revoke_use_the_server_without_a_local_ca(
    remote: tuple[Run, FakeCaApi],
) -> None:
    run, api = remote
    for certname in ("web01", "web02"):
        api.ca.submit_csr(certname, make_csr(certname, generate_key()))

    code, out, _ = run("list")
    assert code == 0
    assert [row.split()[:2] for row in out.splitlines()[1:]] == [
        ["web01", "requested"],
        ["web02", "requested"],
    ]
    assert api.calls == [("GET", "/certificate_statuses/any")]

    assert run("sign", "web01") == (0, "Signed the certificate of web01 (serial 2).\n", "")
    assert ("PUT", "/certificate_status/web01") in api.calls
    assert api.ca.status("web01").state == "signed"

    assert run("revoke", "web01") == (0, "Revoked the certificate of web01 (serial 2).\n", "")
    assert api.ca.status("web01").state == "revoked"

    data = json.loads(run("list", "--all", "--format", "json")[1])
    assert [(i["certname"], i["state"], i["serial"]) for i in data] == [
        ("web01", "revoked", 2),
        ("web02", "requested", None),
    ]
    not_after = api.ca.list()[0].not_after
    assert not_after is not None and data[0]["not_after"] == not_after.isoformat()


def test_remote_sign_and_revoke_check_every_name_first(remote: tuple[Run, FakeCaApi]) -> None:
    run, api = remote
    api.ca.submit_csr("web01", make_csr("web01", generate_key()))

    code, _, err = run("sign", "web01", "ghost")
    assert (code, err) == (1, "podium ca: no certificate request is pending for ghost\n")
    code, _, err = run("revoke", "web01")
    assert (code, err) == (1, "podium ca: no certificate was signed for web01\n")
    assert [method for method, _ in api.calls if method == "PUT"] == []


def test_remote_sign_all_leaves_a_revoked_certname(remote: tuple[Run, FakeCaApi]) -> None:
    run, api = remote
    _enroll_and_revoke(api.ca.directory, "web01")
    api.ca.submit_csr("web02", make_csr("web02", generate_key()))

    code, out, err = run("sign", "--all")

    assert (code, out) == (0, "Signed the certificate of web02 (serial 3).\n")
    assert "Not signed: web01 waits for an operator" in err


def test_a_local_ca_directory_is_used_when_there_is_one(
    remote: tuple[Run, FakeCaApi], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, api = remote
    local = CertificateAuthority.init(tmp_path / "no-server-here" / "ca")
    _submit(local.directory, "here")
    api.ca.submit_csr("there", make_csr("there", generate_key()))

    assert run("list")[1].splitlines()[1].split()[0] == "here"
    assert api.calls == []
    assert run("list", "--server-url", "https://podium:8143")[1].splitlines()[1].startswith("there")
    code, _, err = run("list", "--server-url", "https://x", "--cadir", str(local.directory))
    assert code == 1 and "not both" in err


def test_without_a_local_ca_or_a_server_certificate_both_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_main, "_COMMANDS", ("ca",))
    monkeypatch.delenv("PODIUM_CADIR", raising=False)
    monkeypatch.delenv("PODIUM_CACERT", raising=False)
    monkeypatch.setenv("PODIUM_DATADIR", str(tmp_path / "nothing"))

    assert cli_main.main(["ca", "list"]) == 1

    err = capsys.readouterr().err
    assert f"this machine has no CA directory this user can read ({tmp_path}" in err
    assert "PODIUM_CACERT" in err
